"""The gate engine: evaluate a whole gating :class:`~immunoprofile.flow.gates.Strategy` on one
FCS data set as boolean masks.

Contract: ``evaluate(strategy, fcs) -> GatingResult`` with one full-length boolean mask per
population (file event order), each child evaluated only on its parent's events. The sample's
compensation is resolved once (:func:`~immunoprofile.flow.compensation.sample_compensation`)
and stored on the result with the compensated columns the gates used, which the statistics
reuse. Strategies of row-local gates (rectangles, polygons, ellipses, quadrants, booleans) are
evaluated in blocks of rows that stay in cache: each channel a compensation's gates use is
compensated once per block, in float64 (gate boundaries are compared exactly), and a gate whose
values need no transform is evaluated on all of the block's rows and ANDed with a dense parent
instead of gathering the parent's rows. Values are transformed only on the events a gate looks
at, once; rectangle and quadrant bounds on monotone transforms are mapped to data space
instead, and polygons and ellipsoids on such axes transform only the events inside their
bounding box (tested in data space). Strategies with data-driven gates see the whole file at
once. Boundaries follow Gating-ML 2.0: rectangles ``min <= x < max``, polygons by the even-odd
rule, ellipsoids ``<= distance²`` inclusive, quadrants ``lower <= x < upper``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..errors import InputError
from .compensation import (
    Compensation,
    CompensationSpec,
    Spillover,
    compensated_channels,
    resolve_compensation,
    sample_compensation,
)
from .gates import (
    FCS_SPILLOVER,
    FLOWJO_COMP_PREFIX,
    UNCOMPENSATED,
    AnyDimension,
    BooleanGate,
    DensityGate,
    Dimension,
    EllipseGate,
    Gate,
    PolygonGate,
    QuadrantGate,
    RatioDimension,
    RectangleGate,
    Strategy,
    map_dimensions,
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
#: Rows gated together for row-local strategies: large enough that numpy's per-call overhead
#: stays small, small enough that a block's columns and masks stay in cache.
_GATE_BLOCK_ROWS = 1 << 15
#: In a row-local block, a parent holding more than 1/_DENSE of the rows is "dense".
_DENSE = 4


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
    compensation
        How this sample was compensated (what ``"FCS"`` dimensions used); the statistics use
        the same (:func:`~immunoprofile.flow.stats.population_stats`).
    compensated
        Channel -> its values under ``compensation`` (all events, the data's float dtype), for
        the channels the gates used: the statistics reuse them instead of compensating again.
    """

    masks: dict[str, NDArray[np.bool_]]
    counts: dict[str, int]
    paths: dict[str, str]
    parents: dict[str, str | None]
    n_events: int
    path: str | None = None
    warnings: list[str] = field(default_factory=list)
    fits: dict[str, Any] = field(default_factory=dict)
    compensation: Compensation | None = None
    compensated: dict[str, NDArray[np.floating]] = field(default_factory=dict, repr=False)

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
    # each vertex's "y at or above it" once (every vertex ends two edges); buffers reused
    above = [np.greater_equal(y, v) for v in ys]
    straddles = np.empty(x.shape, dtype=bool)
    hit = np.empty(x.shape, dtype=bool)
    x_cross = np.empty(x.shape, dtype=np.float64)
    for i in range(n):
        x1, y1, x2, y2 = xs[i], ys[i], xs[(i + 1) % n], ys[(i + 1) % n]
        if y1 == y2:
            continue  # horizontal edges never cross a horizontal ray
        np.not_equal(above[i], above[(i + 1) % n], out=straddles)  # (y1 <= y) != (y2 <= y)
        k = int(np.count_nonzero(straddles))
        if not k:
            continue
        if 4 * k < x.size:  # few events straddle the edge: the same arithmetic on those only
            rows = np.flatnonzero(straddles)
            cross = np.subtract(y[rows], y1)
            cross *= (x2 - x1) / (y2 - y1)
            cross += x1
            inside[rows[x[rows] < cross]] ^= True
            continue
        with np.errstate(invalid="ignore"):  # y = +-inf never straddles; its NaN is unused
            # x_cross = x1 + (y - y1) * ((x2 - x1) / (y2 - y1)), in place
            np.subtract(y, y1, out=x_cross)
            np.multiply(x_cross, (x2 - x1) / (y2 - y1), out=x_cross)
            np.add(x_cross, x1, out=x_cross)
            np.less(x, x_cross, out=hit)
        hit &= straddles
        inside ^= hit
    return inside


class _Plan:
    """What the blocks of one call share: resolved matrices (compensation name -> matrix), the
    quadrant owners, and the channels each compensation's gates use."""

    def __init__(self, strategy: Strategy, fcs: FCSData,
                 matrices: dict[str, Spillover | None]) -> None:
        self.strategy = strategy
        self.fcs = fcs
        self.matrices = matrices
        self.owner = strategy.quadrant_owner()
        self.row_local = False  # set by ``evaluate`` for strategies gated block by block
        self._channels: dict[str, list[str]] = {}
        self._names: dict[str, str] = {}
        #: (dimension, thresholds) -> the thresholds in data space (monotone transforms)
        self.data_cuts: dict[tuple[AnyDimension, tuple[float, ...]], list[float]] = {}
        #: gate id -> decided without transforming any value
        self.untransformed: dict[str, bool] = {}
        #: compensation -> scratch buffers its blocks reuse
        self.buffers: dict[str, dict[str, NDArray[Any]]] = {}

    def channel(self, name: str) -> str:
        """The ``$PnN`` a dimension's channel or marker name resolves to in this file."""
        if name not in self._names:
            self._names[name] = self.fcs.channels[self.fcs.channel_index(name)]
        return self._names[name]

    def channels(self, compensation: str) -> list[str]:
        """``$PnN`` of every channel a gate dimension uses under ``compensation``."""
        if compensation not in self._channels:
            needed: list[str] = []
            for gate in self.strategy.iter_gates():
                for dim in gate.dimensions:
                    if dim.compensation != compensation:
                        continue
                    names = ((dim.numerator, dim.denominator) if isinstance(dim, RatioDimension)
                             else (dim.channel,))
                    for name in names:
                        channel = self.channel(name)
                        if channel not in needed:
                            needed.append(channel)
            self._channels[compensation] = needed
        return self._channels[compensation]


class _Evaluation:
    """State of evaluating a strategy on one block of rows: dimension caches, masks so far.

    The :class:`_Plan` is shared by the blocks of one call, so every matrix is resolved once
    per sample.
    """

    def __init__(self, strategy: Strategy, fcs: FCSData, rows: slice, plan: _Plan) -> None:
        self.strategy = strategy
        self.fcs = fcs
        self.events = fcs.events[rows]
        self.n = rows.stop - rows.start
        self.plan = plan
        self.matrices = plan.matrices
        self.groups: dict[str, _CompGroup] = {}
        self.transformed: dict[AnyDimension, tuple[NDArray[np.float64], NDArray[np.bool_]]] = {}
        self.masks: dict[str, NDArray[np.bool_]] = {}
        self.indices: dict[str, NDArray[np.intp]] = {}
        self.counts: dict[str, int] = {}
        self.owner = plan.owner
        self.fits: dict[str, Any] = {}

    # ----- compensation ------------------------------------------------------------------------
    def matrix_for(self, compensation: str) -> Spillover | None:
        if compensation not in self.matrices:
            if compensation == UNCOMPENSATED:
                spill = None
            else:
                spec = self.strategy.compensations.get(compensation)
                if spec is None:
                    raise InputError(self.strategy.source,
                                     f"gates use compensation {compensation!r}, which the "
                                     "strategy does not define")
                spill = resolve_compensation(spec, self.fcs)
            self.matrices[compensation] = spill
        return self.matrices[compensation]

    # ----- dimensions --------------------------------------------------------------------------
    # A compensation's channels are computed for the whole block at their first use (one
    # product over contiguous rows; cheaper than gathering a parent's rows); transformed values
    # only for the rows a gate looks at, cached with a "done" mask, so every value is
    # compensated and transformed at most once per call.
    def _group(self, compensation: str) -> _CompGroup:
        group = self.groups.get(compensation)
        if group is None:
            spill = self.matrix_for(compensation)
            needed = self.plan.channels(compensation)
            # row-local blocks reuse one set of buffers per compensation (see ``scratch``)
            buffers = (self.plan.buffers.setdefault(compensation, {}) if self.plan.row_local
                       else None)
            group = self.groups[compensation] = _CompGroup(self.events, self.fcs, spill, needed,
                                                           buffers)
        return group

    def channel_values(self, compensation: str, name: str,
                       idx: NDArray[np.intp] | None) -> NDArray[np.float64]:
        group = self._group(compensation)
        column = group.values[self.plan.channel(name)]
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
        if not done.any():  # first use: no rows to skip, no re-gather of what was just computed
            with np.errstate(divide="ignore", invalid="ignore"):
                values = transform.apply(self.untransformed(dim, idx))
            if idx is None:
                column[:] = values
                done[:] = True
            else:
                column[idx] = values
                done[idx] = True
            return values
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
        key = (dim, tuple(float(t) for t in thresholds))
        data = self.plan.data_cuts.get(key)
        if data is None:  # once per call, not per block
            with np.errstate(all="ignore"):  # far-off bounds map to +-inf
                inv = transform.inverse(np.asarray(key[1], dtype=np.float64))
            data = self.plan.data_cuts[key] = [float(t) for t in np.atleast_1d(inv)]
        return self.untransformed(dim, idx), data

    # ----- populations -------------------------------------------------------------------------
    def parent_indices(self, parent: str | None, gate: Gate | None = None
                       ) -> NDArray[np.intp] | None:
        """Rows a child of ``parent`` is evaluated on; ``None`` = all rows (no parent, or, for
        a ``gate`` that transforms no value, a dense parent in a row-local block: the child is
        then ANDed with it, see ``_full``)."""
        if parent is None:
            return None
        mask = self.population(parent)
        if gate is not None and self.plan.row_local and self._untransformed(gate):
            if parent not in self.counts:
                self.counts[parent] = int(np.count_nonzero(mask))
            # a gate on all of a block's rows then ANDed with the parent is cheaper than
            # gathering a dense parent's rows and scattering the result back
            if self.counts[parent] * _DENSE > self.n:
                return None
        if parent not in self.indices:
            self.indices[parent] = np.flatnonzero(mask)
        return self.indices[parent]

    def _untransformed(self, gate: Gate) -> bool:
        """Whether ``gate`` is decided without transforming any value (values are only
        transformed on the parent's events)."""
        known = self.plan.untransformed.get(gate.id)
        if known is None:
            cut = isinstance(gate, (RectangleGate, QuadrantGate))
            known = isinstance(gate, BooleanGate) or all(
                (t := self.transform_of(dim)) is None or (cut and _monotone_everywhere(t))
                for dim in gate.dimensions)
            self.plan.untransformed[gate.id] = known
        return known

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
        fitted = gate.id in self.strategy.fits
        idx = self.parent_indices(gate.parent, None if fitted else gate)
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
                self.masks[quadrant] = self._full(sub, idx, gate.parent)
            return
        if isinstance(gate, RectangleGate):
            sub = self._rectangle(gate, idx)
        elif isinstance(gate, (PolygonGate, EllipseGate)):
            sub = self._shape(gate, idx)
        elif isinstance(gate, DensityGate):
            from .adaptive_gates import density_members

            sub = density_members(self.values(gate.dims[0], idx), self.values(gate.dims[1], idx),
                                  gate)
        else:
            raise InputError(self.strategy.source,
                             f"gate {gate.id!r}: unsupported gate type {type(gate).__name__}")
        if getattr(gate, "inverted", False):  # FlowJo eventsInside="0": the outside
            sub = ~sub
        self.masks[gate.id] = self._full(sub, idx, gate.parent)

    def _full(self, sub: NDArray[np.bool_], idx: NDArray[np.intp] | None,
              parent: str | None) -> NDArray[np.bool_]:
        """The gate's mask over the block from its result on the rows ``idx``."""
        if idx is None:
            return sub if parent is None else np.logical_and(sub, self.masks[parent], out=sub)
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
        elif gate.parent is not None:
            result = result & self.masks[gate.parent]
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

    def _shape(self, gate: PolygonGate | EllipseGate,
               idx: NDArray[np.intp] | None) -> NDArray[np.bool_]:
        """A polygon or ellipsoid on the rows ``idx``; on transformed axes, only the events in
        the shape's bounding box (tested in data space, see :meth:`_box_rows`) are transformed."""
        def decide(rows: NDArray[np.intp] | None) -> NDArray[np.bool_]:
            cols = [self.values(d, rows) for d in gate.dims]
            if isinstance(gate, PolygonGate):
                return points_in_polygon(cols[0], cols[1], gate.vertices)
            return _ellipsoid(cols, gate)

        inside = self._box_rows(gate, idx)
        if inside is None:
            return decide(idx)
        sub = np.zeros(self.n if idx is None else idx.size, dtype=bool)
        sub[inside] = decide(inside if idx is None else idx[inside])
        return sub

    def _box_rows(self, gate: PolygonGate | EllipseGate,
                  idx: NDArray[np.intp] | None) -> NDArray[np.intp] | None:
        """Positions in ``idx`` of the events inside the gate's bounding box, or ``None`` when
        that would not save work (no transformed axis, or most events inside).

        The box's bounds are mapped to data space through the (strictly increasing)
        transforms, widened by 1e-9 in transformed units so that rounding in the transform
        and its inverse cannot exclude an event the shape holds: an event outside the widened
        box is outside the shape, so the decision on every event is unchanged.
        """
        box = _bounding_box(gate)
        if box is None:
            return None
        tests = []
        for dim, (lo, hi) in zip(gate.dims, box, strict=True):
            transform = self.transform_of(dim)
            if transform is None or not _monotone_everywhere(transform):
                continue  # untransformed axes: points_in_polygon has its own box test
            key = (dim, ("box", lo, hi))
            bounds = self.plan.data_cuts.get(key)
            if bounds is None:
                pad = 1e-9 * (1.0 + max(abs(lo), abs(hi)))
                with np.errstate(all="ignore"):
                    inv = transform.inverse(np.array([lo - pad, hi + pad], dtype=np.float64))
                bounds = self.plan.data_cuts[key] = [float(v) for v in inv]
            tests.append((dim, bounds))
        if not tests or any(not (b[0] <= b[1]) for _, b in tests):
            return None
        keep = None
        for dim, (lo, hi) in tests:
            col = self.untransformed(dim, idx)
            ok = (col >= lo) & (col <= hi)  # NaN fails: outside, as the shapes have it
            keep = ok if keep is None else np.logical_and(keep, ok, out=keep)
        assert keep is not None
        inside = np.flatnonzero(keep)
        if inside.size * 2 > keep.size:
            return None
        return inside

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
    """Compensated float64 values of the channels the gates use under one compensation."""

    def __init__(self, events: NDArray[Any], fcs: FCSData, spill: Spillover | None,
                 needed: list[str], buffers: dict[str, NDArray[Any]] | None = None) -> None:
        self.spill = spill
        cols = [fcs.channel_index(c) for c in needed]
        n = events.shape[0]
        if n <= _BLOCK_ROWS:  # a block of a row-local strategy: one product
            # float64 before compensating: gate boundaries are compared exactly
            out = compensated_channels(events, fcs.channels, spill, cols, buffers=buffers)
        else:
            out = np.empty((len(needed), n), dtype=np.float64)
            scratch: dict[str, NDArray[Any]] = {}  # each block's result is copied out at once
            for start in range(0, n, _BLOCK_ROWS):
                rows = slice(start, min(start + _BLOCK_ROWS, n))
                out[:, rows] = compensated_channels(events[rows], fcs.channels, spill, cols,
                                                    buffers=scratch)
        self.values = dict(zip(needed, out))


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


def _bounding_box(gate: PolygonGate | EllipseGate) -> list[tuple[float, float]] | None:
    """Per dimension, the interval (gate coordinates) holding the whole shape; ``None`` when
    the shape's parameters do not give one (non-finite, or a covariance without a positive
    diagonal)."""
    if isinstance(gate, PolygonGate):
        if not gate.vertices:
            return None
        box = [(min(v[k] for v in gate.vertices), max(v[k] for v in gate.vertices))
               for k in range(2)]
    else:
        cov = np.asarray(gate.covariance, dtype=np.float64)
        if cov.shape != (len(gate.mean),) * 2 or not gate.distance_square >= 0:
            return None
        # the extent of (x-m)ᵀ C⁻¹ (x-m) <= d² along axis i is sqrt(d² C_ii)
        box = [(float(m) - math.sqrt(gate.distance_square * c), float(m)
                + math.sqrt(gate.distance_square * c)) if c > 0 else (math.nan, math.nan)
               for m, c in zip(gate.mean, np.diag(cov), strict=True)]
    if not all(math.isfinite(lo) and math.isfinite(hi) for lo, hi in box):
        return None
    return [(float(lo), float(hi)) for lo, hi in box]


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


def _row_local(strategy: Strategy) -> bool:
    """Whether every gate decides each event from that event's own values (no fitted or
    density gates, nothing this engine does not know), so blocks of rows gate independently."""
    local = (RectangleGate, PolygonGate, EllipseGate, QuadrantGate, BooleanGate)
    return not strategy.fits and all(type(g) in local for g in strategy.iter_gates())


def _literal_compensated(dim: AnyDimension, fcs: FCSData) -> AnyDimension:
    """``dim`` on the file's own ``Comp-<channel>`` column when the file has that column and
    not ``<channel>``: FlowJo exported it already compensated, so it is used as written."""
    if not isinstance(dim, Dimension) or dim.compensation == UNCOMPENSATED:
        return dim
    literal = FLOWJO_COMP_PREFIX + dim.channel
    if dim.channel in fcs.channels or dim.channel in fcs.markers or \
            literal not in fcs.channels:
        return dim
    return Dimension(literal, UNCOMPENSATED, dim.transform)


def _on_literal_channels(strategy: Strategy, fcs: FCSData) -> tuple[Strategy, list[str]]:
    """``strategy`` with every compensated dimension whose channel the file holds only as an
    exported ``Comp-<channel>`` moved onto that column, and one warning per such channel.
    The same strategy object when nothing moves (the common case: no copy is made)."""
    moved: dict[str, str] = {}
    for gate in strategy.iter_gates():
        for dim in gate.dimensions:
            new = _literal_compensated(dim, fcs)
            if new is not dim:
                assert isinstance(dim, Dimension) and isinstance(new, Dimension)
                moved[dim.channel] = new.channel
    if not moved:
        return strategy, []
    warnings = [f"channel {channel!r} is not in the file; its exported compensated column "
                f"{literal!r} is used as written" for channel, literal in moved.items()]
    return map_dimensions(strategy, lambda dim: _literal_compensated(dim, fcs)), warnings


def _matrices(strategy: Strategy, fcs: FCSData, spillover: CompensationSpec | None,
              missing_spillover: str) -> tuple[Compensation, dict[str, Spillover | None],
                                               list[str]]:
    """The sample's compensation (resolved once) and the warnings it gives."""
    if missing_spillover not in ("error", "uncompensated"):
        raise ValueError(f"missing_spillover must be 'error' or 'uncompensated', "
                         f"got {missing_spillover!r}")
    comp = sample_compensation("file" if spillover is None else spillover, fcs)
    warnings: list[str] = []
    uses_file = any(dim.compensation == FCS_SPILLOVER for gate in strategy.iter_gates()
                    for dim in gate.dimensions)
    if comp.missing and uses_file:
        if missing_spillover == "error":
            raise InputError(getattr(fcs, "path", None),
                             "the gating strategy needs the file's spillover (compensation "
                             "'FCS') but the file has no $SPILLOVER/$SPILL keyword; pass a "
                             "compensation matrix or 'none'")
        warnings.append("compensation 'FCS' requested but the file has no spillover: events "
                        "used uncompensated")
    return comp, {FCS_SPILLOVER: comp.spillover, UNCOMPENSATED: None}, warnings


def evaluate(strategy: Strategy, fcs: FCSData, *,
             spillover: CompensationSpec | Compensation | None = "file",
             missing_spillover: Literal["error", "uncompensated"] = "error") -> GatingResult:
    """Evaluate every gate of ``strategy`` on ``fcs``.

    Strategies whose gates are all row-local (rectangles, polygons, ellipses, quadrants,
    booleans) are evaluated block by block of rows, so every intermediate stays in cache and
    no full-length float64 copy is kept; data-driven gates see the whole file at once.

    A compensated dimension on a channel the file lacks, where the file has a
    ``Comp-<channel>`` column instead (FlowJo's export of compensated data), uses that column
    as written, with a warning on the result.

    Parameters
    ----------
    strategy
        The gating hierarchy (Gating-ML, FlowJo or YAML).
    fcs
        The data set (:func:`~immunoprofile.flow.fcs.read_fcs`).
    spillover
        How ``"FCS"`` dimensions are compensated (a
        :data:`~immunoprofile.flow.compensation.CompensationSpec`): ``"file"`` (the file's own
        matrix, the default; ``"fcs"`` and ``None`` say the same), ``"none"``, a
        :class:`~immunoprofile.flow.compensation.Spillover` or a matrix CSV path. Stored on
        the result as ``compensation``.
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
    strategy, moved = _on_literal_channels(strategy, fcs)
    comp, matrices, warnings = _matrices(strategy, fcs, spillover, missing_spillover)
    warnings = moved + warnings
    plan = _Plan(strategy, fcs, matrices)
    order = strategy.population_ids()
    n = fcs.n_events
    plan.row_local = _row_local(strategy)
    step = _GATE_BLOCK_ROWS if plan.row_local else max(n, 1)
    # one 2-D allocation each (rows are the per-population masks / per-channel columns): a
    # large array is backed by huge pages where the system offers them, so writing it costs a
    # few hundred page faults instead of one per 4 KiB
    masks = dict(zip(order, np.empty((len(order), n), dtype=bool)))
    dtype = fcs.events.dtype if fcs.events.dtype.kind == "f" else np.dtype(np.float64)
    compensated: dict[str, NDArray[np.floating]] = {}
    fits: dict[str, Any] = {}
    for start in range(0, max(n, 1), step):
        rows = slice(start, min(start + step, n))
        run = _Evaluation(strategy, fcs, rows, plan)
        for pid in order:
            masks[pid][rows] = run.population(pid)
        fits = run.fits
        group = run.groups.get(FCS_SPILLOVER)
        if group is not None and not compensated:
            compensated = dict(zip(group.values, np.empty((len(group.values), n), dtype=dtype)))
        for channel, values in (group.values.items() if group is not None else ()):
            compensated[channel][rows] = values
    parents, paths = _hierarchy(strategy, order)
    return GatingResult(
        masks=masks,
        counts={pid: int(np.count_nonzero(m)) for pid, m in masks.items()},
        paths=paths,
        parents=parents,
        n_events=n,
        path=getattr(fcs, "path", None),
        warnings=warnings,
        fits=fits,
        compensation=comp,
        compensated=compensated,
    )


def dimension_values(strategy: Strategy, fcs: FCSData, dims: Sequence[AnyDimension], *,
                     spillover: CompensationSpec | Compensation | None = "file",
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
    strategy, _ = _on_literal_channels(strategy, fcs)
    dims = [_literal_compensated(dim, fcs) for dim in dims]
    _, matrices, _ = _matrices(strategy, fcs, spillover, missing_spillover)
    run = _Evaluation(strategy, fcs, slice(0, fcs.n_events), _Plan(strategy, fcs, matrices))
    return [run.values(dim, None) for dim in dims]
