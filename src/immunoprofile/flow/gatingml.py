"""Gating-ML 2.0 strategies: read an XML file into a :class:`~immunoprofile.flow.gates.Strategy`
and write a strategy back out.

Contract: :func:`read_gatingml` accepts every construct of the Gating-ML 2.0 compliance set
(rectangle/range, polygon, ellipsoid, quadrant and boolean gates; flin, flog, fasinh, hyperlog,
logicle and fratio transforms; spectrum matrices; ``parent_id``) and refuses anything else with an
:class:`~immunoprofile.errors.InputError` naming the file and the element. XML is parsed only
through :func:`immunoprofile._xml.parse_xml` (no entities, no external references).
:func:`write_gatingml` writes a file that validates against the ISAC Gating-ML 2.0 schema and
reads back into the same gates.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator

import numpy as np

from .._io import atomic_open
from .._xml import local_name, namespace_of, parse_xml
from ..errors import InputError
from .compensation import Spillover
from .gates import (
    FCS_SPILLOVER,
    FLOWJO_COMP_PREFIX,
    UNCOMPENSATED,
    AnyDimension,
    BooleanGate,
    Dimension,
    EllipseGate,
    Gate,
    PolygonGate,
    Quadrant,
    QuadrantDivider,
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
    LogTransform,
    Transform,
)

__all__ = ["read_gatingml", "write_gatingml", "GATING_NS", "TRANSFORMS_NS", "DATATYPE_NS"]


#: deepest parent/operand chain accepted (as in YAML strategies); real strategies are < 20 deep
_MAX_DEPTH = 64

GATING_NS = "http://www.isac-net.org/std/Gating-ML/v2.0/gating"
TRANSFORMS_NS = "http://www.isac-net.org/std/Gating-ML/v2.0/transformations"
DATATYPE_NS = "http://www.isac-net.org/std/Gating-ML/v2.0/datatypes"

_GATE_TAGS = ("RectangleGate", "PolygonGate", "EllipsoidGate", "QuadrantGate", "BooleanGate")
# Gating-ML transform element -> (class, attribute names in constructor order)
_TRANSFORM_TAGS: dict[str, tuple[type[Transform], tuple[str, ...]]] = {
    "flin": (LinearTransform, ("T", "A")),
    "flog": (LogTransform, ("T", "M")),
    "fasinh": (AsinhTransform, ("T", "M", "A")),
    "hyperlog": (HyperlogTransform, ("T", "W", "M", "A")),
    "logicle": (LogicleTransform, ("T", "W", "M", "A")),
}
_TRANSFORM_NAMES = {cls: tag for tag, (cls, _) in _TRANSFORM_TAGS.items()}
#: Namespace of our own additions inside ``custom_info`` (quadrant names).
EXTENSION_NS = "https://immunoprofile.invalid/gatingml-extension/1"
_NCNAME_BAD = re.compile(r"[^A-Za-z0-9._-]")
_NCNAME_START = re.compile(r"[A-Za-z_]")
# Elements that may appear anywhere and carry nothing we evaluate.
_IGNORED = {"custom_info", "description", "Gating-ML"}


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------

def _attr(element: ET.Element, name: str) -> str | None:
    """Attribute by local name, whatever namespace prefix the file used."""
    for key, value in element.attrib.items():
        if local_name(key) == name:
            return value
    return None


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if local_name(child.tag) == name]


class _Reader:
    """One parse of one file; every error names ``path`` and the offending element."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.transforms: dict[str, Transform] = {}
        self.ratios: dict[str, tuple[str, str, float, float, float]] = {}
        self.matrices: dict[str, Spillover] = {}
        self.fluorochromes: dict[str, dict[str, str]] = {}  # matrix id -> fluorochrome -> detector

    def fail(self, element: ET.Element | None, reason: str) -> InputError:
        where = ""
        if element is not None:
            ident = _attr(element, "id")
            where = f"<{local_name(element.tag)}{' id=' + repr(ident) if ident else ''}>: "
        return InputError(self.path, f"Gating-ML {where}{reason}")

    def number(self, element: ET.Element, name: str, *, required: bool = True) -> float | None:
        raw = _attr(element, name)
        if raw is None:
            if required:
                raise self.fail(element, f"missing attribute {name!r}")
            return None
        try:
            value = float(raw)
        except ValueError:
            raise self.fail(element, f"attribute {name}={raw!r} is not a number") from None
        if not np.isfinite(value):
            raise self.fail(element, f"attribute {name}={raw!r} is not finite")
        return value

    def ident(self, element: ET.Element) -> str:
        value = _attr(element, "id")
        if not value:
            raise self.fail(element, "missing gating:id / transforms:id")
        return value

    # ----- transforms and matrices -------------------------------------------------------------
    def read_transformation(self, element: ET.Element) -> None:
        tid = self.ident(element)
        if tid in self.transforms or tid in self.ratios:
            raise self.fail(element, f"duplicate transformation id {tid!r}")
        kids = [c for c in element if local_name(c.tag) not in _IGNORED]
        if len(kids) != 1:
            raise self.fail(element, "a transformation must hold exactly one transform element")
        kind = local_name(kids[0].tag)
        if kind == "fratio":
            dims = _children(kids[0], "fcs-dimension")
            names = [_attr(d, "name") for d in dims]
            if len(names) != 2 or not all(names):
                raise self.fail(element, "fratio needs exactly two named fcs-dimensions")
            a, b, c = (self.number(kids[0], p) for p in ("A", "B", "C"))
            self.ratios[tid] = (str(names[0]), str(names[1]), float(a), float(b), float(c))
            return
        if kind not in _TRANSFORM_TAGS:
            raise self.fail(element, f"unsupported transform <{kind}>")
        cls, params = _TRANSFORM_TAGS[kind]
        values = [self.number(kids[0], p) for p in params]
        try:
            self.transforms[tid] = cls(*values)
        except (ValueError, ArithmeticError) as exc:  # e.g. M=309 overflows sinh/exp
            raise self.fail(element, f"{kind}: {exc}") from None

    def read_matrix(self, element: ET.Element) -> None:
        mid = self.ident(element)
        if mid in self.matrices or mid in (FCS_SPILLOVER, UNCOMPENSATED):
            raise self.fail(element, f"duplicate or reserved spectrum matrix id {mid!r}")

        def names(tag: str) -> list[str]:
            holders = _children(element, tag)
            if len(holders) != 1:
                raise self.fail(element, f"needs one <{tag}>")
            out = [_attr(d, "name") for d in _children(holders[0], "fcs-dimension")]
            if not out or not all(out):
                raise self.fail(element, f"<{tag}> needs named fcs-dimensions")
            return [str(n) for n in out]

        fluoros, detectors = names("fluorochromes"), names("detectors")
        rows = [[self.number(c, "value") for c in _children(s, "coefficient")]
                for s in _children(element, "spectrum")]
        if len(fluoros) != len(detectors):
            raise self.fail(element, f"{len(fluoros)} fluorochromes but {len(detectors)} "
                                     "detectors: only square (compensation) matrices are supported")
        if len(rows) != len(fluoros) or any(len(r) != len(detectors) for r in rows):
            raise self.fail(element, "spectrum rows do not match fluorochromes × detectors")
        matrix = np.array(rows, dtype=np.float64)
        if (_attr(element, "matrix-inverted-already") or "false").strip().lower() == "true":
            try:
                matrix = np.linalg.inv(matrix)
            except np.linalg.LinAlgError:
                raise self.fail(element, "inverted matrix is singular") from None
        try:
            self.matrices[mid] = Spillover(tuple(detectors), matrix, source=self.path)
        except InputError as exc:
            raise self.fail(element, exc.reason) from None
        self.fluorochromes[mid] = dict(zip(fluoros, detectors, strict=True))

    # ----- dimensions --------------------------------------------------------------------------
    def compensation(self, element: ET.Element) -> str:
        ref = _attr(element, "compensation-ref")
        if ref is None or ref == UNCOMPENSATED:
            return UNCOMPENSATED
        if ref == FCS_SPILLOVER:
            return FCS_SPILLOVER
        if ref not in self.matrices:
            raise self.fail(element, f"compensation-ref {ref!r} names no spectrumMatrix")
        return ref

    def channel(self, name: str, compensation: str) -> str:
        # Compensated dimensions are named by fluorochrome; the engine works on detectors.
        return self.fluorochromes.get(compensation, {}).get(name, name)

    def dimension(self, element: ET.Element) -> AnyDimension:
        compensation = self.compensation(element)
        transform = _attr(element, "transformation-ref")
        if transform is not None and transform not in self.transforms:
            raise self.fail(element, f"transformation-ref {transform!r} names no transformation")
        fcs_dims = _children(element, "fcs-dimension")
        new_dims = _children(element, "new-dimension")
        if len(fcs_dims) + len(new_dims) != 1:
            raise self.fail(element, "a dimension needs exactly one fcs-dimension or new-dimension")
        if fcs_dims:
            name = _attr(fcs_dims[0], "name")
            if not name:
                raise self.fail(element, "fcs-dimension without data-type:name")
            if name.startswith(FLOWJO_COMP_PREFIX) and len(name) > len(FLOWJO_COMP_PREFIX):
                # FlowJo's Gating-ML export names a compensated parameter "Comp-<channel>"
                # (with or without a compensation-ref): <channel> under that compensation,
                # else under the file's own spillover.
                name = name[len(FLOWJO_COMP_PREFIX):]
                if compensation == UNCOMPENSATED:
                    compensation = FCS_SPILLOVER
            return Dimension(self.channel(name, compensation), compensation, transform)
        ratio = _attr(new_dims[0], "transformation-ref")
        if ratio not in self.ratios:
            raise self.fail(element, f"new-dimension refers to {ratio!r}, which is no fratio")
        num, den, a, b, c = self.ratios[ratio]
        return RatioDimension(ratio, self.channel(num, compensation),
                              self.channel(den, compensation), a, b, c, compensation, transform)

    def coordinates(self, element: ET.Element) -> tuple[float, ...]:
        return tuple(float(self.number(c, "value")) for c in _children(element, "coordinate"))

    # ----- gates -------------------------------------------------------------------------------
    def gate(self, element: ET.Element) -> Gate:
        kind = local_name(element.tag)
        gid = self.ident(element)
        parent = _attr(element, "parent_id")
        name = _attr(element, "name") or gid
        dims = tuple(self.dimension(d) for d in _children(element, "dimension"))
        if kind == "RectangleGate":
            if not dims:
                raise self.fail(element, "rectangle gate without dimensions")
            mins, maxs = [], []
            for d in _children(element, "dimension"):
                lo = self.number(d, "min", required=False)
                hi = self.number(d, "max", required=False)
                if lo is None and hi is None:
                    raise self.fail(element, "a rectangle dimension needs min and/or max")
                mins.append(lo)
                maxs.append(hi)
            return RectangleGate(gid, parent, name, dims=dims, mins=tuple(mins),
                                 maxs=tuple(maxs))
        if kind == "PolygonGate":
            vertices = tuple(self.coordinates(v) for v in _children(element, "vertex"))
            if len(dims) != 2 or len(vertices) < 3 or any(len(v) != 2 for v in vertices):
                raise self.fail(element, "a polygon needs 2 dimensions and >= 3 2-D vertices")
            return PolygonGate(gid, parent, name, dims=dims,  # type: ignore[arg-type]
                               vertices=vertices)  # type: ignore[arg-type]
        if kind == "EllipsoidGate":
            means = _children(element, "mean")
            covs = _children(element, "covarianceMatrix")
            dist = _children(element, "distanceSquare")
            if len(means) != 1 or len(covs) != 1 or len(dist) != 1:
                raise self.fail(element, "needs one mean, covarianceMatrix and distanceSquare")
            mean = self.coordinates(means[0])
            cov = tuple(tuple(float(self.number(e, "value")) for e in _children(r, "entry"))
                        for r in _children(covs[0], "row"))
            n = len(dims)
            if n < 2 or len(mean) != n or len(cov) != n or any(len(r) != n for r in cov):
                raise self.fail(element, "mean/covariance sizes do not match the dimensions")
            if abs(np.linalg.det(np.array(cov))) == 0:
                raise self.fail(element, "covariance matrix is singular")
            return EllipseGate(gid, parent, name, dims=dims, mean=mean, covariance=cov,
                               distance_square=float(self.number(dist[0], "value")))
        if kind == "QuadrantGate":
            return self.quadrant_gate(element, gid, parent, name)
        if kind == "BooleanGate":
            ops = [c for c in element if local_name(c.tag) in ("and", "or", "not")]
            if len(ops) != 1:
                raise self.fail(element, "a boolean gate needs exactly one of and/or/not")
            op = local_name(ops[0].tag)
            refs = _children(ops[0], "gateReference")
            operands = []
            for ref in refs:
                target = _attr(ref, "ref")
                if not target:
                    raise self.fail(element, "gateReference without gating:ref")
                complement = (_attr(ref, "use-as-complement") or "false").strip().lower()
                operands.append((target, complement == "true"))
            if (op == "not" and len(operands) != 1) or (op != "not" and len(operands) < 2):
                raise self.fail(element, f"wrong number of operands for <{op}>")
            return BooleanGate(gid, parent, name, op=op,  # type: ignore[arg-type]
                               operands=tuple(operands))
        raise self.fail(element, f"unsupported gate type <{kind}>")  # pragma: no cover

    def quadrant_gate(self, element: ET.Element, gid: str, parent: str | None,
                      name: str) -> QuadrantGate:
        dividers = []
        for d in _children(element, "divider"):
            did = self.ident(d)
            values = []
            for v in _children(d, "value"):
                try:
                    values.append(float((v.text or "").strip()))
                except ValueError:
                    raise self.fail(d, f"divider value {v.text!r} is not a number") from None
            if not values:
                raise self.fail(d, "divider without values")
            dividers.append(QuadrantDivider(did, self.dimension(d), tuple(sorted(values))))
        known = {d.id for d in dividers}
        # quadrant names written by write_gatingml (the schema has no name attribute there)
        names = {_attr(n, "ref"): _attr(n, "name") for info in _children(element, "custom_info")
                 for n in info if local_name(n.tag) == "quadrant-name"}
        quadrants = []
        for q in _children(element, "Quadrant"):
            qid = self.ident(q)
            positions = []
            for pos in _children(q, "position"):
                ref = _attr(pos, "divider_ref")
                if ref not in known:
                    raise self.fail(q, f"position refers to unknown divider {ref!r}")
                positions.append((str(ref), float(self.number(pos, "location"))))
            quadrants.append(Quadrant(qid, tuple(positions), _attr(q, "name") or names.get(qid)))
        if not dividers or not quadrants:
            raise self.fail(element, "a quadrant gate needs dividers and quadrants")
        return QuadrantGate(gid, parent, name, dividers=tuple(dividers),
                            quadrants=tuple(quadrants))


def _order(path: str, gates: list[Gate]) -> dict[str, Gate]:
    """Parents and boolean operands before the gates that use them (stable, file order)."""
    owner: dict[str, str] = {}
    for gate in gates:
        if isinstance(gate, QuadrantGate):
            for q in gate.quadrants:
                owner[q.id] = gate.id
    by_id = {g.id: g for g in gates}
    ordered: dict[str, Gate] = {}
    state: dict[str, int] = {}

    def visit(gid: str, chain: tuple[str, ...]) -> None:
        if state.get(gid) == 2:
            return
        if state.get(gid) == 1:
            raise InputError(path, f"Gating-ML gate references form a cycle: "
                                   f"{' -> '.join(chain + (gid,))}")
        if len(chain) > _MAX_DEPTH:  # bounded recursion here and in the engine
            raise InputError(path, f"Gating-ML gates nested deeper than {_MAX_DEPTH} levels "
                                   f"(at gate {gid!r})")
        state[gid] = 1
        gate = by_id[gid]
        deps = [gate.parent] if gate.parent is not None else []
        if isinstance(gate, BooleanGate):
            deps += [ref for ref, _ in gate.operands]
        for dep in deps:
            target = owner.get(dep, dep)
            if target not in by_id:
                raise InputError(path, f"Gating-ML gate {gid!r} refers to unknown gate {dep!r}")
            visit(target, chain + (gid,))
        state[gid] = 2
        ordered[gid] = gate

    for gate in gates:
        visit(gate.id, ())
    return ordered


def _walk(element: ET.Element) -> Iterator[ET.Element]:
    """Every descendant in document order, skipping ``custom_info`` (vendor extensions)."""
    # an explicit stack: a hostile file nested thousands deep must not exhaust the recursion limit
    stack = [iter(element)]
    while stack:
        child = next(stack[-1], None)
        if child is None:
            stack.pop()
            continue
        if local_name(child.tag) == "custom_info":
            continue
        yield child
        stack.append(iter(child))


def read_gatingml(path: str | os.PathLike[str]) -> Strategy:
    """Read a Gating-ML 2.0 file.

    Parameters
    ----------
    path
        The XML file.

    Returns
    -------
    Strategy
        Gates (parents and boolean operands first), transforms by id, spectrum matrices as
        :class:`~immunoprofile.flow.compensation.Spillover` over detector channels. Dimensions
        under a spectrum matrix are named by the matching detector.

    Raises
    ------
    InputError
        Unsafe or malformed XML, unknown gate/transform types, dangling references, duplicate
        ids — naming the file and the element.
    """
    p = os.fspath(path)
    root = parse_xml(p)
    if local_name(root.tag) != "Gating-ML":
        raise InputError(p, f"not a Gating-ML file (root element <{local_name(root.tag)}>)")
    if namespace_of(root.tag) != GATING_NS:
        raise InputError(p, f"not Gating-ML 2.0: root namespace is "
                            f"{namespace_of(root.tag) or 'missing'!r}, expected {GATING_NS}")
    reader = _Reader(p)
    gate_elements: list[ET.Element] = []
    for element in _walk(root):
        tag, ns = local_name(element.tag), namespace_of(element.tag)
        if ns == TRANSFORMS_NS and tag == "transformation":
            reader.read_transformation(element)
        elif ns == TRANSFORMS_NS and tag == "spectrumMatrix":
            reader.read_matrix(element)
        elif ns == GATING_NS and tag in _GATE_TAGS:
            gate_elements.append(element)
        elif ns == GATING_NS and tag.endswith("Gate"):
            raise reader.fail(element, f"unsupported gate type <{tag}>")
    gates: list[Gate] = []
    seen: set[str] = set()
    for element in gate_elements:
        gate = reader.gate(element)
        ids = [gate.id] + ([q.id for q in gate.quadrants] if isinstance(gate, QuadrantGate) else [])
        for ident in ids:
            if ident in seen:
                raise reader.fail(element, f"duplicate gate id {ident!r}")
            seen.add(ident)
        gates.append(gate)
    if not gates:
        raise InputError(p, "Gating-ML file defines no gates")
    return Strategy(gates=_order(p, gates), transforms=dict(reader.transforms),
                    compensations=dict(reader.matrices), source=p, format="gatingml",
                    meta={"ratios": dict(reader.ratios)})


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------

def _g(name: str) -> str:
    return f"{{{GATING_NS}}}{name}"


def _t(name: str) -> str:
    return f"{{{TRANSFORMS_NS}}}{name}"


def _d(name: str) -> str:
    return f"{{{DATATYPE_NS}}}{name}"


def _x(name: str) -> str:
    return f"{{{EXTENSION_NS}}}{name}"


def _num(value: float) -> str:
    return repr(float(value))


def _sub(parent: ET.Element, tag: str, attrib: dict[str, str] | None = None) -> ET.Element:
    return ET.SubElement(parent, tag, attrib or {})


class _Ids:
    """Document-unique XML ``ID`` values (NCNames) for every id we write.

    Valid, unique ids are kept as they are (so Gating-ML files round-trip unchanged); FlowJo or
    YAML ids such as ``/Cells/CD4+`` are made valid; the readable name stays in ``gating:name``.
    """

    def __init__(self) -> None:
        self._map: dict[tuple[str, str], str] = {}
        self._used: set[str] = set()

    def __call__(self, kind: str, original: str) -> str:
        key = (kind, original)
        if key not in self._map:
            base = _NCNAME_BAD.sub("_", original) or "id"
            if not _NCNAME_START.match(base):
                base = "_" + base
            candidate, k = base, 1
            while candidate in self._used:
                k += 1
                candidate = f"{base}_{k}"
            self._used.add(candidate)
            self._map[key] = candidate
        return self._map[key]


def _write_dimension(parent: ET.Element, tag: str, dim: AnyDimension, ids: _Ids,
                     extra: dict[str, str] | None = None) -> ET.Element:
    compensation = dim.compensation
    if compensation not in (FCS_SPILLOVER, UNCOMPENSATED):
        compensation = ids("matrix", compensation)
    attrib = dict(extra or {})
    attrib[_g("compensation-ref")] = compensation
    if dim.transform is not None:
        attrib[_g("transformation-ref")] = ids("transform", dim.transform)
    element = _sub(parent, _g(tag), attrib)
    if isinstance(dim, RatioDimension):
        _sub(element, _d("new-dimension"),
             {_d("transformation-ref"): ids("transform", dim.ratio_id)})
    else:
        _sub(element, _d("fcs-dimension"), {_d("name"): dim.channel})
    return element


def _coordinates(parent: ET.Element, values: Iterable[float]) -> None:
    for value in values:
        _sub(parent, _g("coordinate"), {_d("value"): _num(value)})


def _gate_element(root: ET.Element, gate: Gate, ids: _Ids) -> None:
    gid = ids("gate", gate.id)
    attrib = {_g("id"): gid}
    if gate.parent is not None:
        attrib[_g("parent_id")] = ids("gate", gate.parent)
    if gate.name and gate.name != gid:
        attrib[_g("name")] = gate.name
    if isinstance(gate, RectangleGate):
        element = _sub(root, _g("RectangleGate"), attrib)
        for dim, lo, hi in zip(gate.dims, gate.mins, gate.maxs, strict=True):
            bounds = {}
            if lo is not None:
                bounds[_g("min")] = _num(lo)
            if hi is not None:
                bounds[_g("max")] = _num(hi)
            _write_dimension(element, "dimension", dim, ids, bounds)
    elif isinstance(gate, PolygonGate):
        element = _sub(root, _g("PolygonGate"), attrib)
        for dim in gate.dims:
            _write_dimension(element, "dimension", dim, ids)
        for vertex in gate.vertices:
            _coordinates(_sub(element, _g("vertex")), vertex)
    elif isinstance(gate, EllipseGate):
        element = _sub(root, _g("EllipsoidGate"), attrib)
        for dim in gate.dims:
            _write_dimension(element, "dimension", dim, ids)
        _coordinates(_sub(element, _g("mean")), gate.mean)
        cov = _sub(element, _g("covarianceMatrix"))
        for row in gate.covariance:
            row_element = _sub(cov, _g("row"))
            for value in row:
                _sub(row_element, _g("entry"), {_d("value"): _num(value)})
        _sub(element, _g("distanceSquare"), {_d("value"): _num(gate.distance_square)})
    elif isinstance(gate, QuadrantGate):
        element = _sub(root, _g("QuadrantGate"), attrib)
        named = [q for q in gate.quadrants if q.name]
        if named:
            # the schema allows no name on a Quadrant: keep names in the gate's custom_info
            info = _sub(element, _d("custom_info"))
            for quadrant in named:
                _sub(info, _x("quadrant-name"), {"ref": ids("gate", quadrant.id),
                                                 "name": str(quadrant.name)})
        for divider in gate.dividers:
            div = _write_dimension(element, "divider", divider.dimension, ids,
                                   {_g("id"): ids(f"divider:{gate.id}", divider.id)})
            for value in divider.values:
                _sub(div, _g("value")).text = _num(value)
        for quadrant in gate.quadrants:
            q = _sub(element, _g("Quadrant"), {_g("id"): ids("gate", quadrant.id)})
            for divider_id, location in quadrant.positions:
                _sub(q, _g("position"), {_g("divider_ref"): ids(f"divider:{gate.id}", divider_id),
                                         _g("location"): _num(location)})
    elif isinstance(gate, BooleanGate):
        element = _sub(root, _g("BooleanGate"), attrib)
        op = _sub(element, _g(gate.op))
        for ref, complement in gate.operands:
            ref_attrib = {_g("ref"): ids("gate", ref)}
            if complement:
                ref_attrib[_g("use-as-complement")] = "true"
            _sub(op, _g("gateReference"), ref_attrib)
    else:
        raise InputError(None, f"gate {gate.id!r}: {type(gate).__name__} cannot be written as "
                               "Gating-ML")


def _check_writable(strategy: Strategy) -> None:
    for tid, transform in strategy.transforms.items():
        if type(transform) not in _TRANSFORM_NAMES:
            raise InputError(strategy.source, f"transform {tid!r} ({type(transform).__name__}) "
                                              "has no Gating-ML 2.0 equivalent")
    for mid, matrix in strategy.compensations.items():
        if not isinstance(matrix, Spillover):
            raise InputError(strategy.source, f"compensation {mid!r} is not a Spillover matrix")
    for gate in strategy.gates.values():
        for dim in gate.dimensions:
            if (dim.compensation not in (FCS_SPILLOVER, UNCOMPENSATED)
                    and dim.compensation not in strategy.compensations):
                raise InputError(strategy.source, f"gate {gate.id!r} uses compensation "
                                                  f"{dim.compensation!r}, which is not defined")
            if dim.transform is not None and dim.transform not in strategy.transforms:
                raise InputError(strategy.source, f"gate {gate.id!r} uses transform "
                                                  f"{dim.transform!r}, which is not defined")


def write_gatingml(strategy: Strategy, path: str | os.PathLike[str]) -> None:
    """Write a strategy as Gating-ML 2.0 (atomically), valid against the ISAC schema.

    Parameters
    ----------
    strategy
        Any strategy whose transforms are Gating-ML transforms (not FlowJo biex) and whose
        compensations are spillover matrices.
    path
        Destination file.

    Raises
    ------
    InputError
        When the strategy uses something Gating-ML 2.0 cannot express.

    Notes
    -----
    Spectrum matrices are written with fluorochromes equal to detectors, so compensated
    dimensions keep their detector names; ratio dimensions get their ``fratio`` back. Ids that
    are not XML names (e.g. FlowJo population paths) are rewritten to valid ones; quadrant names
    go into the quadrant gate's ``custom_info``.
    """
    _check_writable(strategy)
    ET.register_namespace("gating", GATING_NS)
    ET.register_namespace("transforms", TRANSFORMS_NS)
    ET.register_namespace("data-type", DATATYPE_NS)
    ET.register_namespace("immunoprofile", EXTENSION_NS)
    ids = _Ids()
    root = ET.Element(_g("Gating-ML"))
    for mid, spill in strategy.compensations.items():
        matrix = _sub(root, _t("spectrumMatrix"), {_t("id"): ids("matrix", mid)})
        for holder in ("fluorochromes", "detectors"):
            element = _sub(matrix, _t(holder))
            for channel in spill.channels:
                _sub(element, _d("fcs-dimension"), {_d("name"): channel})
        for row in np.asarray(spill.matrix):
            spectrum = _sub(matrix, _t("spectrum"))
            for value in row:
                _sub(spectrum, _t("coefficient"), {_t("value"): _num(value)})
    for tid, transform in strategy.transforms.items():
        element = _sub(root, _t("transformation"), {_t("id"): ids("transform", tid)})
        params = {_t(k): _num(v) for k, v in transform.params.items()}
        _sub(element, _t(_TRANSFORM_NAMES[type(transform)]), params)
    ratios: dict[str, RatioDimension] = {}
    for gate in strategy.gates.values():
        for dim in gate.dimensions:
            if isinstance(dim, RatioDimension):
                previous = ratios.setdefault(dim.ratio_id, dim)
                if (previous.numerator, previous.denominator, previous.A, previous.B,
                        previous.C) != (dim.numerator, dim.denominator, dim.A, dim.B, dim.C):
                    raise InputError(strategy.source, f"ratio id {dim.ratio_id!r} is used with "
                                                      "different definitions")
    for rid, dim in ratios.items():
        if rid in strategy.transforms:
            raise InputError(strategy.source, f"ratio id {rid!r} clashes with a transform id")
        element = _sub(root, _t("transformation"), {_t("id"): ids("transform", rid)})
        ratio = _sub(element, _t("fratio"), {_t("A"): _num(dim.A), _t("B"): _num(dim.B),
                                             _t("C"): _num(dim.C)})
        for channel in (dim.numerator, dim.denominator):
            _sub(ratio, _d("fcs-dimension"), {_d("name"): channel})
    for gate in strategy.gates.values():
        _gate_element(root, gate, ids)
    ET.indent(root)
    with atomic_open(path, "wb") as handle:
        ET.ElementTree(root).write(handle, encoding="UTF-8", xml_declaration=True)
