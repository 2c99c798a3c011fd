"""The gating-strategy model that every strategy source parses into and the engine evaluates.

Contract: a :class:`Strategy` is plain data. Gating-ML 2.0, FlowJo workspaces and the YAML format
all produce one; :func:`immunoprofile.flow.engine.evaluate` turns ``(Strategy, FCSData)`` into
boolean masks. Nothing here touches events.

Vocabulary
----------
- *gate id*: unique key of a gate inside a strategy (Gating-ML ``gating:id``; for FlowJo a unique
  key built from the population path). Boolean operands and ``parent`` refer to gate ids.
- *name*: what a person calls the population; the population *path* is built from names,
  ``/Cells/Singlets/CD3pos``. A quadrant gate defines one population per quadrant: its path is
  ``<parent path>/<quadrant id>``, and children of a quadrant name the quadrant id as parent.
- *dimension*: one axis of a gate: a channel (``$PnN``) or a marker name (``$PnS``, YAML only;
  resolved against the file), the compensation it is read under, and the transform applied
  before comparing with the gate's coordinates. Gate coordinates are always in transformed units.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "UNCOMPENSATED", "FCS_SPILLOVER", "Dimension", "RatioDimension", "Gate", "RectangleGate",
    "PolygonGate", "EllipseGate", "QuadrantDivider", "Quadrant", "QuadrantGate", "BooleanGate",
    "DensityGate", "CutFit", "GateFit", "Strategy", "map_dimensions", "FLOWJO_COMP_PREFIX",
]

#: Prefix FlowJo gives a compensated channel (``Comp-FITC-A``): in its workspaces, its
#: Gating-ML export and the FCS files it exports with compensation applied.
FLOWJO_COMP_PREFIX = "Comp-"

#: ``Dimension.compensation`` value: use the raw channel.
UNCOMPENSATED = "uncompensated"
#: ``Dimension.compensation`` value: use the spillover stored in the FCS file (or the matrix the
#: user passed with ``--comp``, which replaces it).
FCS_SPILLOVER = "FCS"


@dataclass(frozen=True)
class Dimension:
    """One gate axis on an FCS channel.

    Parameters
    ----------
    channel
        ``$PnN`` channel name, or (YAML strategies) a marker name resolved against the file.
    compensation
        :data:`UNCOMPENSATED`, :data:`FCS_SPILLOVER`, or the id of a matrix in
        :attr:`Strategy.compensations`.
    transform
        Id of a transform in :attr:`Strategy.transforms`, or ``None`` (linear, untransformed).
    """

    channel: str
    compensation: str = UNCOMPENSATED
    transform: str | None = None


@dataclass(frozen=True)
class RatioDimension:
    """A Gating-ML ``fratio`` dimension: ``A * (x - B) / (y - C)`` of two channels.

    ``compensation`` applies to both channels before the ratio; ``transform`` to the ratio.
    """

    ratio_id: str
    numerator: str
    denominator: str
    A: float
    B: float
    C: float
    compensation: str = UNCOMPENSATED
    transform: str | None = None


AnyDimension = Dimension | RatioDimension


@dataclass(frozen=True)
class Gate:
    """Base of every gate: an id, the parent gate id (``None`` = all events) and a display name."""

    id: str
    parent: str | None
    name: str

    @property
    def dimensions(self) -> tuple[AnyDimension, ...]:  # pragma: no cover - overridden
        return ()


@dataclass(frozen=True)
class RectangleGate(Gate):
    """Axis-aligned box; ``None`` bounds are open. Range gates are 1-D rectangles.

    Gating-ML semantics: ``min <= x < max`` on every dimension. ``inverted`` (FlowJo
    ``eventsInside="0"``, also on polygons and ellipses): the parent's events outside the shape.
    """

    dims: tuple[AnyDimension, ...] = ()
    mins: tuple[float | None, ...] = ()
    maxs: tuple[float | None, ...] = ()
    inverted: bool = False

    @property
    def dimensions(self) -> tuple[AnyDimension, ...]:
        return self.dims


@dataclass(frozen=True)
class PolygonGate(Gate):
    """2-D polygon (possibly non-simple; even-odd rule), vertices in transformed units."""

    dims: tuple[AnyDimension, AnyDimension] = ()  # type: ignore[assignment]
    vertices: tuple[tuple[float, float], ...] = ()
    inverted: bool = False

    @property
    def dimensions(self) -> tuple[AnyDimension, ...]:
        return self.dims


@dataclass(frozen=True)
class EllipseGate(Gate):
    """n-D ellipsoid: ``(x - mean)ᵀ covariance⁻¹ (x - mean) <= distance_square``."""

    dims: tuple[AnyDimension, ...] = ()
    mean: tuple[float, ...] = ()
    covariance: tuple[tuple[float, ...], ...] = ()
    distance_square: float = 1.0
    inverted: bool = False

    @property
    def dimensions(self) -> tuple[AnyDimension, ...]:
        return self.dims


@dataclass(frozen=True)
class QuadrantDivider:
    """One divider of a quadrant gate: a dimension cut at ``values`` (sorted)."""

    id: str
    dimension: AnyDimension
    values: tuple[float, ...]


@dataclass(frozen=True)
class Quadrant:
    """One region of a quadrant gate.

    ``positions`` maps divider id -> a coordinate inside the region on that divider's dimension
    (Gating-ML ``gating:position location``); the region is the interval of the divider's values
    that contains it (``lower <= x < upper``).
    """

    id: str
    positions: tuple[tuple[str, float], ...]
    name: str | None = None


@dataclass(frozen=True)
class QuadrantGate(Gate):
    """A set of dividers and named quadrants; each quadrant is a population of its own."""

    dividers: tuple[QuadrantDivider, ...] = ()
    quadrants: tuple[Quadrant, ...] = ()

    @property
    def dimensions(self) -> tuple[AnyDimension, ...]:
        return tuple(d.dimension for d in self.dividers)


@dataclass(frozen=True)
class BooleanGate(Gate):
    """``and`` / ``or`` / ``not`` of other gates (ids, each optionally complemented).

    Operands are evaluated as full populations (their own parent chains); the result is then
    intersected with this gate's own parent.
    """

    op: Literal["and", "or", "not"] = "and"
    operands: tuple[tuple[str, bool], ...] = ()  # (gate or quadrant id, complement)


@dataclass(frozen=True)
class DensityGate(Gate):
    """2-D histogram-bin gate (FlowCal ``density2d``): events whose bin is in ``accepted``.

    Bins are ``x_edges[i] <= x < x_edges[i+1]`` (the last bin closed, as ``numpy.histogram2d``);
    ``accepted`` lists the ``(i, j)`` bins kept. Events outside the edges are outside the gate.
    """

    dims: tuple[AnyDimension, AnyDimension] = ()  # type: ignore[assignment]
    x_edges: tuple[float, ...] = ()
    y_edges: tuple[float, ...] = ()
    accepted: tuple[tuple[int, int], ...] = ()

    @property
    def dimensions(self) -> tuple[AnyDimension, ...]:
        return self.dims


@dataclass(frozen=True)
class CutFit:
    """How one interval coordinate of a gate is found from each sample's data.

    Parameters
    ----------
    target
        ``(dimension index, "min" | "max")`` of a rectangle/range gate, or
        ``(divider id, "value")`` of a quadrant gate.
    method
        ``"density_minimum"`` (openCyto mindensity), ``"tail"`` or ``"quantile"``.
    search
        ``(low, high)`` in transformed units: the cut must land inside, else the fallback is used.
    options
        Method options as ``(name, value)`` pairs (``adjust``, ``min_peak``, ``fraction``, ``q``).
    """

    target: tuple[int | str, str]
    method: str
    search: tuple[float, float] | None = None
    options: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class GateFit:
    """A data-driven gate: the gate in :attr:`Strategy.gates` holds the *fallback* coordinates;
    this says how to re-fit it on each sample's parent events (``flow.adaptive_gates``).

    Parameters
    ----------
    kind
        ``"cuts"`` (thresholds / quadrant dividers), ``"cluster"`` (Gaussian mixture ellipse),
        ``"singlets"`` (band around the FSC-A/FSC-H diagonal) or ``"density"`` (FlowCal
        density2d).
    cuts
        For ``"cuts"``: one :class:`CutFit` per fitted coordinate.
    options
        Kind options as ``(name, value)`` pairs (cluster: ``components``, ``reference``,
        ``probability``, ``seed``; singlets: ``width``; density: ``fraction``, ``sigma``).
    max_shift
        Flag a sample whose fitted position lies farther than this (transformed units) from the
        batch median; ``None`` = never.
    """

    kind: str
    cuts: tuple[CutFit, ...] = ()
    options: tuple[tuple[str, Any], ...] = ()
    max_shift: float | None = None

    def option(self, name: str, default: Any = None) -> Any:
        """One option's value (``default`` when absent)."""
        return dict(self.options).get(name, default)


@dataclass
class Strategy:
    """A whole gating hierarchy plus what its dimensions refer to.

    Parameters
    ----------
    gates
        Gate id -> gate, in an order where every parent comes before its children.
    transforms
        Transform id -> transform object from :mod:`immunoprofile.flow.transforms`.
    compensations
        Matrix id -> :class:`immunoprofile.flow.compensation.Spillover` (Gating-ML spectrum
        matrices, FlowJo matrices). :data:`FCS_SPILLOVER` is resolved per file.
    source
        Where the strategy came from (path), for provenance.
    format
        ``"gatingml"``, ``"flowjo"`` or ``"yaml"``.
    meta
        Free-form extras (FlowJo sample group, YAML description ...).
    fits
        Gate id -> :class:`GateFit` for data-driven gates (YAML only); the gate itself holds the
        fallback coordinates.
    """

    gates: dict[str, Gate]
    transforms: dict[str, Any] = field(default_factory=dict)
    compensations: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    format: str = "unknown"
    meta: dict[str, Any] = field(default_factory=dict)
    fits: dict[str, GateFit] = field(default_factory=dict)

    # ----- hierarchy helpers ------------------------------------------------------------------
    def quadrant_owner(self) -> dict[str, str]:
        """Quadrant id -> id of the quadrant gate that defines it."""
        return {q.id: g.id for g in self.gates.values() if isinstance(g, QuadrantGate)
                for q in g.quadrants}

    def population_ids(self) -> list[str]:
        """Every population (gate ids, with each quadrant gate replaced by its quadrant ids),
        parents before children."""
        out: list[str] = []
        for gate in self.gates.values():
            if isinstance(gate, QuadrantGate):
                out.extend(q.id for q in gate.quadrants)
            else:
                out.append(gate.id)
        return out

    def parent_of(self, population_id: str) -> str | None:
        """Parent population id of a gate or quadrant id (``None`` = all events)."""
        owner = self.quadrant_owner().get(population_id)
        gate = self.gates[owner if owner else population_id]
        return gate.parent

    def name_of(self, population_id: str) -> str:
        """Display name of a gate or quadrant id."""
        owner = self.quadrant_owner().get(population_id)
        if owner:
            quadrant = next(q for q in self.gates[owner].quadrants if q.id == population_id)
            return quadrant.name or quadrant.id
        return self.gates[population_id].name

    def path_of(self, population_id: str) -> str:
        """Full population path, e.g. ``/Cells/Singlets/CD3pos``."""
        parts: list[str] = []
        current: str | None = population_id
        seen: set[str] = set()
        while current is not None:
            if current in seen:
                raise ValueError(f"gate hierarchy has a cycle at {current!r}")
            seen.add(current)
            parts.append(self.name_of(current))
            current = self.parent_of(current)
        return "/" + "/".join(reversed(parts))

    def paths(self) -> dict[str, str]:
        """Population id -> path, parents before children."""
        return {pid: self.path_of(pid) for pid in self.population_ids()}

    def channels_used(self) -> set[str]:
        """Every channel (or marker name, for YAML) any gate dimension refers to."""
        used: set[str] = set()
        for gate in self.gates.values():
            for dim in gate.dimensions:
                if isinstance(dim, RatioDimension):
                    used.update((dim.numerator, dim.denominator))
                else:
                    used.add(dim.channel)
        return used

    def iter_gates(self) -> Iterator[Gate]:
        """Gates in parents-first order."""
        return iter(self.gates.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (for provenance and ``uns``)."""
        return {
            "source": self.source,
            "format": self.format,
            "populations": self.paths(),
            "gates": {gid: _gate_summary(g) for gid, g in self.gates.items()},
            "transforms": {tid: repr(t) for tid, t in self.transforms.items()},
            "compensations": sorted(self.compensations),
            "meta": {k: v for k, v in self.meta.items() if isinstance(v, (str, int, float, bool))},
            **({"fits": {gid: _fit_summary(f) for gid, f in self.fits.items()}}
               if self.fits else {}),
        }


def _gate_summary(gate: Gate) -> dict[str, Any]:
    summary: dict[str, Any] = {"type": type(gate).__name__, "parent": gate.parent,
                               "name": gate.name}
    summary["dimensions"] = [getattr(d, "channel", getattr(d, "ratio_id", "")) for d in
                             gate.dimensions]
    return summary


def _fit_summary(fit: GateFit) -> dict[str, Any]:
    return {"kind": fit.kind, "max_shift": fit.max_shift,
            "options": {k: v for k, v in fit.options},
            "cuts": [{"target": list(c.target), "method": c.method,
                      "search": list(c.search) if c.search else None,
                      "options": dict(c.options)} for c in fit.cuts]}


def validate_strategy(strategy: Strategy) -> None:
    """Raise ``ValueError`` if parents are missing/out of order or boolean operands dangle."""
    known: set[str] = set()
    owner = strategy.quadrant_owner()
    all_ids = set(strategy.gates) | set(owner)
    for gate in strategy.gates.values():
        if gate.parent is not None and gate.parent not in known:
            raise ValueError(f"gate {gate.id!r}: parent {gate.parent!r} is not defined before it")
        if isinstance(gate, BooleanGate):
            for operand, _ in gate.operands:
                if operand not in all_ids:
                    raise ValueError(f"boolean gate {gate.id!r}: unknown operand {operand!r}")
        known.add(gate.id)
        if isinstance(gate, QuadrantGate):
            known.update(q.id for q in gate.quadrants)


def map_dimensions(strategy: Strategy,
                   fn: Callable[[AnyDimension], AnyDimension]) -> Strategy:
    """``strategy`` with every gate dimension (quadrant dividers included) replaced by
    ``fn(dimension)``; gates without dimensions (booleans) are kept as they are.

    Parameters
    ----------
    strategy
        The strategy to rewrite (not modified).
    fn
        Maps one dimension to its replacement (return it unchanged to keep it).

    Returns
    -------
    Strategy
        A copy with the new gates; transforms, compensations, fits and meta are shared.
    """
    gates: dict[str, Gate] = {}
    for gid, gate in strategy.gates.items():
        if isinstance(gate, QuadrantGate):
            dividers = tuple(dataclasses.replace(d, dimension=fn(d.dimension))
                             for d in gate.dividers)
            gates[gid] = dataclasses.replace(gate, dividers=dividers)
        elif hasattr(gate, "dims"):
            gates[gid] = dataclasses.replace(gate, dims=tuple(fn(d) for d in gate.dims))
        else:
            gates[gid] = gate
    return dataclasses.replace(strategy, gates=gates)
