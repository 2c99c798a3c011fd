"""The gate engine: evaluate a whole gating :class:`~immunoprofile.flow.gates.Strategy` on one
FCS data set as boolean masks.

Contract: ``evaluate(strategy, fcs) -> GatingResult`` with one full-length boolean mask per
population (file event order), each child evaluated only on its parent's events. Only the
channels the gates use are compensated (in cache-sized blocks) and only the events a gate looks
at are transformed, each value once per call; rectangle and quadrant bounds on monotone
transforms are mapped to data space instead. Boundaries follow Gating-ML 2.0: rectangles
``min <= x < max``, polygons by the even-odd rule, ellipsoids ``<= distance²`` inclusive,
quadrants ``lower <= x < upper``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..errors import InputError
from .compensation import Spillover, compensate, resolve_compensation
from .gates import (
    FCS_SPILLOVER,
    UNCOMPENSATED,
    AnyDimension,
    BooleanGate,
    DensityGate,
    EllipseGate,
    Gate,
    PolygonGate,
    QuadrantGate,
    RatioDimension,
    RectangleGate,
    Strategy,
)

from .transforms import (
    AsinhTransform,
    HyperlogTransform,
    LinearTransform,
    LogicleTransform,
    Transform,
)
if TYPE_CHECKING:  # pragma: no cover
    from .fcs import FCSData

__all__ = ["GatingResult", "evaluate", "dimension_values", "points_in_polygon"]

#: Rows per block when compensating/transforming: 32k rows x a dozen float64 columns stays in L2.
_BLOCK_ROWS = 1 << 15


@dataclass
class GatingResult:
    """Masks and counts of every population of one strategy on one data set.

    Attributes
    ----------
    masks
        Population id -> boolean array over all events (file order).
    counts
        Population id -> number of events.
    paths
        Population id -> full population path (``/Cells/Singlets/CD3pos``).
    parents
        Population id -> parent population id (``None`` = all events).
    n_events
        Events in the data set.
    path
        The FCS file evaluated.
    warnings
        Anything the caller should know (e.g. "FCS" compensation without a file spillover).
    fits
        Gate id -> :class:`~immunoprofile.flow.adaptive_gates.FitRecord` of every data-driven
        gate (its fitted form on this data set, whether it fell back).
    """

    masks: dict[str, NDArray[np.bool_]]
    counts: dict[str, int]
    paths: dict[str, str]
    parents: dict[str, str | None]
    n_events: int
    path: str | None = None
    warnings: list[str] = field(default_factory=list)
    fits: dict[str, Any] = field(default_factory=dict)

    def population_ids(self) -> list[str]:
        """Population ids, parents before children (strategy order)."""
        return list(self.masks)


def points_in_polygon(x: NDArray[np.float64], y: NDArray[np.float64],
                      vertices: Sequence[tuple[float, float]]) -> NDArray[np.bool_]:
    """Even-odd (crossing number) test of points against a possibly non-simple polygon.

    A horizontal ray to the right of each point is crossed by an edge when the edge straddles
    the point's ``y`` half-open (``y1 <= y < y2`` in either direction) and the crossing lies at
    ``x`` or beyond; points on left/bottom edges count inside, right/top outside, as in the
    Gating-ML reference results. NaN coordinates are outside.
    """
    # float64 throughout: with float32 input numpy 2 would compare in float32
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    xs = [float(v[0]) for v in vertices]
    ys = [float(v[1]) for v in vertices]
    in_box = (x >= min(xs)) & (x <= max(xs)) & (y >= min(ys)) & (y <= max(ys))
    n_box = int(np.count_nonzero(in_box))
    if n_box > x.size // 2:
        return _crossings(x, y, xs, ys)
    # small polygon: only events inside its bounding box can be inside it
    inside = np.zeros(x.shape, dtype=bool)
    rows = np.flatnonzero(in_box)
    inside[rows] = _crossings(x[rows], y[rows], xs, ys)
    return inside


def _crossings(x: NDArray[np.float64], y: NDArray[np.float64], xs: list[float],
               ys: list[float]) -> NDArray[np.bool_]:
    inside = np.zeros(x.shape, dtype=bool)
    n = len(xs)
    for i in range(n):
        x1, y1, x2, y2 = xs[i], ys[i], xs[(i + 1) % n], ys[(i + 1) % n]
        if y1 == y2:
            continue  # horizontal edges never cross a horizontal ray
        straddles = (y1 <= y) != (y2 <= y)
        if not straddles.any():
            continue
        with np.errstate(invalid="ignore"):  # y = +-inf never straddles; its NaN is unused
            x_cross = x1 + (y - y1) * ((x2 - x1) / (y2 - y1))
        inside ^= straddles & (x < x_cross)
    return inside


class _Evaluation:
    """State of one ``evaluate`` call: resolved spillovers, dimension cache, masks so far."""

    def __init__(self, strategy: Strategy, fcs: FCSData, spillover: Spillover | str | None,
                 missing_spillover: str) -> None:
        self.strategy = strategy
        self.fcs = fcs
        self.path = getattr(fcs, "path", None)
        self.n = fcs.n_events
        self.warnings: list[str] = []
        self.missing_spillover = missing_spillover
        self.spillover_spec = spillover
        self._file_spill: Spillover | None | bool = False  # False = not resolved yet
        self.groups: dict[str, _CompGroup] = {}
        self.transformed: dict[AnyDimension, tuple[NDArray[np.float64], NDArray[np.bool_]]] = {}
        self.masks: dict[str, NDArray[np.bool_]] = {}
        self.indices: dict[str, NDArray[np.intp] | None] = {}
        self.owner = strategy.quadrant_owner()
        self.fits: dict[str, Any] = {}

    # ----- compensation ------------------------------------------------------------------------
    def matrix_for(self, compensation: str) -> Spillover | None:
        if compensation == UNCOMPENSATED:
            return None
        if compensation == FCS_SPILLOVER:
            return self.file_spillover()
        spill = self.strategy.compensations.get(compensation)
        if spill is None:
            raise InputError(self.strategy.source,
                             f"gates use compensation {compensation!r}, which the strategy does "
                             "not define")
        return resolve_compensation(spill, self.fcs)

    def file_spillover(self) -> Spillover | None:
        if self._file_spill is False:
            spec = self.spillover_spec
            if isinstance(spec, str) and spec.strip().lower() == "none":
                self._file_spill = None
            else:
                spill = resolve_compensation("fcs" if spec is None else spec, self.fcs)
                if spill is None:
                    if self.missing_spillover == "error":
                        raise InputError(self.path, "the gating strategy needs the file's "
                                                    "spillover (compensation 'FCS') but the file "
                                                    "has no $SPILLOVER/$SPILL keyword; pass a "
                                                    "compensation matrix or 'none'")
                    self.warnings.append("compensation 'FCS' requested but the file has no "
                                         "spillover: events used uncompensated")
                self._file_spill = spill
        return self._file_spill  # type: ignore[return-value]

    # ----- dimensions --------------------------------------------------------------------------
    # Values are computed lazily, only for the rows a gate looks at (its parent's events), and
    # cached per (compensation, channel) and per dimension with a "done" mask, so every value
    # is compensated and transformed at most once per call.
    def _group(self, compensation: str) -> _CompGroup:
        group = self.groups.get(compensation)
        if group is None:
            spill = self.matrix_for(compensation)
            needed: list[str] = []
            for gate in self.strategy.iter_gates():
                for dim in gate.dimensions:
                    if dim.compensation != compensation:
                        continue
                    names = ((dim.numerator, dim.denominator) if isinstance(dim, RatioDimension)
                             else (dim.channel,))
                    for name in names:
                        channel = self.fcs.channels[self.fcs.channel_index(name)]
                        if channel not in needed:
                            needed.append(channel)
            source = list(needed)
            if spill is not None:
                source += [c for c in spill.channels if c not in source]
            group = _CompGroup(spill, needed, source,
                               [self.fcs.channel_index(c) for c in source], self.n)
            self.groups[compensation] = group
        return group

    def channel_values(self, compensation: str, name: str,
                       idx: NDArray[np.intp] | None) -> NDArray[np.float64]:
        group = self._group(compensation)
        missing = _missing(group.done, idx)
        if missing.size > self.n // 4 and not group.done.any():
            # first use on most events: compensating all rows by slices is cheaper than
            # gathering the rows (compensation costs little; gathers cost memory bandwidth)
            missing = np.arange(self.n)
        events = self.fcs.events
        cols = np.asarray(group.cols, dtype=np.intp)
        contiguous = missing.size == self.n
        for start in range(0, missing.size, _BLOCK_ROWS):
            if contiguous:
                rows: NDArray[np.intp] | slice = slice(start, min(start + _BLOCK_ROWS, self.n))
                raw = events[rows, cols]
            else:
                rows = missing[start:start + _BLOCK_ROWS]
                raw = events[rows[:, None], cols]
            # float64 before compensating: gate boundaries are compared exactly
            block = raw.astype(np.float64)
            if group.spill is not None:
                block = compensate(block, group.source, group.spill, columns=group.needed)
            for k, channel in enumerate(group.needed):
                group.values[channel][rows] = block[:, k]
        group.done[missing] = True
        column = group.values[self.fcs.channels[self.fcs.channel_index(name)]]
        return column if idx is None else column[idx]

    def untransformed(self, dim: AnyDimension,
                      idx: NDArray[np.intp] | None) -> NDArray[np.float64]:
        if isinstance(dim, RatioDimension):
            num = self.channel_values(dim.compensation, dim.numerator, idx)
            den = self.channel_values(dim.compensation, dim.denominator, idx)
            with np.errstate(divide="ignore", invalid="ignore"):
                return dim.A * ((num - dim.B) / (den - dim.C))
        return self.channel_values(dim.compensation, dim.channel, idx)

    def transform_of(self, dim: AnyDimension) -> Transform | None:
        if dim.transform is None:
            return None
        transform = self.strategy.transforms.get(dim.transform)
        if transform is None:
            raise InputError(self.strategy.source, f"gates use transform {dim.transform!r}, "
                                                   "which the strategy does not define")
        return transform

    def values(self, dim: AnyDimension, idx: NDArray[np.intp] | None) -> NDArray[np.float64]:
        """Transformed values of ``dim`` at rows ``idx`` (all rows for ``None``)."""
        transform = self.transform_of(dim)
        if transform is None:
            return self.untransformed(dim, idx)
        entry = self.transformed.get(dim)
        if entry is None:
            entry = self.transformed[dim] = (np.empty(self.n), np.zeros(self.n, dtype=bool))
        column, done = entry
        missing = _missing(done, idx)
        if missing.size:
            with np.errstate(divide="ignore", invalid="ignore"):
                column[missing] = transform.apply(self.untransformed(dim, missing))
            done[missing] = True
        return column if idx is None else column[idx]

    def cut(self, dim: AnyDimension, idx: NDArray[np.intp] | None,
            thresholds: Sequence[float]) -> tuple[NDArray[np.float64], list[float]]:
        """Values and thresholds to compare for interval gates (rectangles, quadrants).

        For strictly increasing transforms defined on all reals, ``T(x) >= t`` is
        ``x >= T⁻¹(t)``: the thresholds go to data space and the events need no transform.
        """
        transform = self.transform_of(dim)
        if transform is None or not _monotone_everywhere(transform):
            return self.values(dim, idx), [float(t) for t in thresholds]
        with np.errstate(all="ignore"):  # far-off bounds map to +-inf
            data = transform.inverse(np.asarray(thresholds, dtype=np.float64))
        return self.untransformed(dim, idx), [float(t) for t in np.atleast_1d(data)]

    # ----- populations -------------------------------------------------------------------------
    def parent_indices(self, parent: str | None) -> NDArray[np.intp] | None:
        if parent is None:
            return None
        if parent not in self.indices:
            self.indices[parent] = np.flatnonzero(self.population(parent))
        return self.indices[parent]

    def population(self, pid: str) -> NDArray[np.bool_]:
        if pid in self.masks:
            return self.masks[pid]
        owner = self.owner.get(pid)
        gate = self.strategy.gates.get(owner or pid)
        if gate is None:
            raise InputError(self.strategy.source, f"no gate or quadrant with id {pid!r}")
        self.evaluate_gate(gate)
        return self.masks[pid]

    def evaluate_gate(self, gate: Gate) -> None:
        idx = self.parent_indices(gate.parent)
        fit = self.strategy.fits.get(gate.id)
        if fit is not None:
            # data-driven gate: placed on this sample's parent events, then evaluated as fixed
            from .adaptive_gates import fit_gate

            dims = gate.dimensions
            gate, record = fit_gate(gate, fit, [self.values(d, idx) for d in dims],
                                    [self.transform_of(d) for d in dims])
            self.fits[gate.id] = record
        if isinstance(gate, BooleanGate):
            self.masks[gate.id] = self._boolean(gate, idx)
            return
        if isinstance(gate, QuadrantGate):
            for quadrant, sub in self._quadrants(gate, idx):
                self.masks[quadrant] = self._full(sub, idx)
            return
        if isinstance(gate, RectangleGate):
            sub = self._rectangle(gate, idx)
        elif isinstance(gate, PolygonGate):
            cols = [self.values(d, idx) for d in gate.dims]
            sub = points_in_polygon(cols[0], cols[1], gate.vertices)
        elif isinstance(gate, EllipseGate):
            sub = _ellipsoid([self.values(d, idx) for d in gate.dims], gate)
        elif isinstance(gate, DensityGate):
            from .adaptive_gates import density_members

            sub = density_members(self.values(gate.dims[0], idx), self.values(gate.dims[1], idx),
                                  gate)
        else:
            raise InputError(self.strategy.source,
                             f"gate {gate.id!r}: unsupported gate type {type(gate).__name__}")
        if getattr(gate, "inverted", False):  # FlowJo eventsInside="0": the outside
            sub = ~sub
        self.masks[gate.id] = self._full(sub, idx)

    def _full(self, sub: NDArray[np.bool_], idx: NDArray[np.intp] | None) -> NDArray[np.bool_]:
        if idx is None:
            return sub
        mask = np.zeros(self.n, dtype=bool)
        mask[idx[sub]] = True
        return mask

    def _boolean(self, gate: BooleanGate, idx: NDArray[np.intp] | None) -> NDArray[np.bool_]:
        # Operands are whole populations (their own parent chains), complemented on request;
        # the result is then restricted to this gate's own parent.
        operands = []
        for ref, complement in gate.operands:
            mask = self.population(ref)
            operands.append(~mask if complement else mask)
        if gate.op == "not":
            result = ~operands[0]
        elif gate.op == "and":
            result = np.logical_and.reduce(operands)
        else:
            result = np.logical_or.reduce(operands)
        if idx is not None:
            restricted = np.zeros(self.n, dtype=bool)
            restricted[idx] = result[idx]
            result = restricted
        return result

    def _quadrants(self, gate: QuadrantGate, idx: NDArray[np.intp] | None):
        size = self.n if idx is None else idx.size
        cuts = {}
        for divider in gate.dividers:
            values = np.asarray(divider.values, dtype=np.float64)
            cuts[divider.id] = (values, *self.cut(divider.dimension, idx, values))
        for quadrant in gate.quadrants:
            sub = np.ones(size, dtype=bool)
            for divider_id, location in quadrant.positions:
                values, col, data_cuts = cuts[divider_id]
                # the interval of the divider's values that holds the quadrant's location
                k = int(np.searchsorted(values, location, side="right"))
                if k > 0:
                    sub &= col >= data_cuts[k - 1]
                if k < values.size:
                    sub &= col < data_cuts[k]
            yield quadrant.id, sub

    def _rectangle(self, gate: RectangleGate, idx: NDArray[np.intp] | None) -> NDArray[np.bool_]:
        sub = np.ones(self.n if idx is None else idx.size, dtype=bool)
        for dim, lo, hi in zip(gate.dims, gate.mins, gate.maxs, strict=True):
            bounds = [b for b in (lo, hi) if b is not None]
            col, cuts = self.cut(dim, idx, bounds)
            if lo is not None:
                sub &= col >= cuts[0]
            if hi is not None:
                sub &= col < cuts[-1]
        return sub


class _CompGroup:
    """Compensated values of the channels used under one compensation, filled lazily."""

    def __init__(self, spill: Spillover | None, needed: list[str], source: list[str],
                 cols: list[int], n: int) -> None:
        self.spill = spill
        self.needed = needed
        self.source = source
        self.cols = cols
        self.values = {c: np.empty(n, dtype=np.float64) for c in needed}
        self.done = np.zeros(n, dtype=bool)


def _missing(done: NDArray[np.bool_], idx: NDArray[np.intp] | None) -> NDArray[np.intp]:
    """Rows of ``idx`` (all rows for ``None``) whose values are not computed yet."""
    if idx is None:
        return np.flatnonzero(~done)
    return idx[~done[idx]]


def _monotone_everywhere(transform: Transform) -> bool:
    # strictly increasing and finite on all reals (log is not: NaN/-inf below zero; the FlowJo
    # biex table is clamped outside its range)
    if isinstance(transform, LinearTransform):
        return transform.T + transform.A > 0
    return type(transform) in (AsinhTransform, LogicleTransform, HyperlogTransform)


def _ellipsoid(cols: list[NDArray[np.float64]], gate: EllipseGate) -> NDArray[np.bool_]:
    inverse = np.linalg.inv(np.asarray(gate.covariance, dtype=np.float64))
    centred = [col - m for col, m in zip(cols, gate.mean, strict=True)]
    total = np.zeros(cols[0].shape, dtype=np.float64)
    # ±inf events give inf - inf = NaN here: NaN <= d is False, i.e. outside, as intended
    with np.errstate(invalid="ignore"):
        for i, ci in enumerate(centred):
            for j, cj in enumerate(centred):
                total += inverse[i, j] * ci * cj
    return total <= gate.distance_square


def _hierarchy(strategy: Strategy, order: list[str]
               ) -> tuple[dict[str, str | None], dict[str, str]]:
    """Parents and paths of every population, in one pass (same as ``Strategy.paths``, which
    re-derives the quadrant owners per call and is quadratic in the number of gates)."""
    names: dict[str, str] = {}
    parents: dict[str, str | None] = {}
    for gate in strategy.iter_gates():
        if isinstance(gate, QuadrantGate):
            for quadrant in gate.quadrants:
                names[quadrant.id] = quadrant.name or quadrant.id
                parents[quadrant.id] = gate.parent
        else:
            names[gate.id] = gate.name
            parents[gate.id] = gate.parent
    paths: dict[str, str] = {}

    def path(pid: str, seen: tuple[str, ...]) -> str:
        if pid in paths:
            return paths[pid]
        if pid in seen:
            raise ValueError(f"gate hierarchy has a cycle at {pid!r}")
        if pid not in names:
            raise InputError(strategy.source, f"parent {pid!r} is not a gate or quadrant")
        parent = parents[pid]
        prefix = "" if parent is None else path(parent, seen + (pid,))
        paths[pid] = f"{prefix}/{names[pid]}"
        return paths[pid]

    for pid in order:
        path(pid, ())
    return {pid: parents[pid] for pid in order}, {pid: paths[pid] for pid in order}


def evaluate(strategy: Strategy, fcs: FCSData, *, spillover: Spillover | str | os.PathLike[str]
             | None = None,
             missing_spillover: Literal["error", "uncompensated"] = "error") -> GatingResult:
    """Evaluate every gate of ``strategy`` on ``fcs``.

    Parameters
    ----------
    strategy
        The gating hierarchy (Gating-ML, FlowJo or YAML).
    fcs
        The data set (:func:`~immunoprofile.flow.fcs.read_fcs`).
    spillover
        Replaces the file's spillover for ``"FCS"`` dimensions: a
        :class:`~immunoprofile.flow.compensation.Spillover`, a matrix CSV path, ``"fcs"``
        (the file's own, the default) or ``"none"`` (no compensation).
    missing_spillover
        What ``"FCS"`` dimensions do when the file has no spillover: ``"error"`` (default, an
        :class:`InputError` naming the file) or ``"uncompensated"`` (use raw values with a
        warning, as the Gating-ML 2.0 compliance set expects).

    Returns
    -------
    GatingResult
        Masks, counts, paths and parents of every population, parents first.

    Raises
    ------
    InputError
        A gate names a channel the file lacks, a matrix does not fit the file, or compensation
        is required but absent.
    """
    if missing_spillover not in ("error", "uncompensated"):
        raise ValueError(f"missing_spillover must be 'error' or 'uncompensated', "
                         f"got {missing_spillover!r}")
    run = _Evaluation(strategy, fcs, spillover, missing_spillover)
    order = strategy.population_ids()
    for pid in order:
        run.population(pid)
    masks = {pid: run.masks[pid] for pid in order}
    parents, paths = _hierarchy(strategy, order)
    return GatingResult(
        masks=masks,
        counts={pid: int(np.count_nonzero(m)) for pid, m in masks.items()},
        paths=paths,
        parents=parents,
        n_events=fcs.n_events,
        path=run.path,
        warnings=run.warnings,
        fits=run.fits,
    )


def dimension_values(strategy: Strategy, fcs: FCSData, dims: Sequence[AnyDimension], *,
                     spillover: Spillover | str | os.PathLike[str] | None = None,
                     missing_spillover: Literal["error", "uncompensated"] = "error"
                     ) -> list[NDArray[np.float64]]:
    """Every event's value on each of ``dims``, in the units gate coordinates use.

    The same computation :func:`evaluate` does (compensation as the dimension names it, then its
    transform), for plotting events against gates. Each channel is compensated once however
    many dimensions share it.

    Parameters
    ----------
    strategy
        Supplies the transforms and matrices the dimensions refer to.
    fcs
        The data set.
    dims
        Gate dimensions (``gate.dimensions``).
    spillover, missing_spillover
        As for :func:`evaluate`.

    Returns
    -------
    list of numpy.ndarray
        One float64 array of ``fcs.n_events`` values per dimension, in ``dims`` order.
    """
    run = _Evaluation(strategy, fcs, spillover, missing_spillover)
    return [run.values(dim, None) for dim in dims]
