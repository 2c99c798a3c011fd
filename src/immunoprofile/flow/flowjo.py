"""FlowJo 10 workspaces (``.wsp``) into the :class:`~immunoprofile.flow.gates.Strategy` model.

Contract: :func:`read_flowjo_workspace` parses a workspace with the safe XML parser into a
:class:`FlowJoWorkspace` (groups, samples with keywords, per-sample transforms, compensation and
raw gate trees); :meth:`FlowJoWorkspace.strategy` turns one sample's (or one group's) gates into a
``Strategy`` whose gate ids are built from the population path and whose names are FlowJo's
population names. Anything we cannot represent faithfully is an :class:`InputError` naming the
element; FlowKit is never called at runtime (its ``wsp_utils`` parser was the map we followed).

FlowJo conventions handled here
-------------------------------
- Gate coordinates are stored on the *raw* (untransformed) scale, except ellipses, which are
  stored in FlowJo's 256 x 256 display space. Rectangles are compared on the raw scale (FlowJo's
  rectangle counts are exact there; a monotone transform would only add rounding at the edges);
  polygon vertices are mapped through the sample's transform of each axis, because FlowJo draws
  straight edges in the transformed display; ellipses become exact ellipses in transformed units
  (display coordinate / 256).
- A dimension named ``<prefix><channel><suffix>`` (``Comp-FITC-A``) of a sample with a
  ``transforms:spilloverMatrix`` is that channel compensated with that matrix. The matrix named
  ``Acquisition-defined`` is the file's own ``$SPILLOVER`` (:data:`FCS_SPILLOVER`, so ``--comp``
  can replace it); other matrices are kept in ``Strategy.compensations`` under their name.
- FlowJo quadrant gates are four sibling rectangle populations (``Q1: ...`` .. ``Q4: ...``) and stay
  so: each quadrant is its own population with its own children.
- ``AndNode``/``OrNode``/``NotNode`` reference their operands by population path ("Dependent").
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import xml.etree.ElementTree as ET

from .._xml import local_name, parse_xml
from ..errors import InputError
from .gates import (
    FCS_SPILLOVER,
    UNCOMPENSATED,
    BooleanGate,
    Dimension,
    EllipseGate,
    Gate,
    PolygonGate,
    RectangleGate,
    Strategy,
)

__all__ = [
    "FlowJoWorkspace", "FlowJoSample", "FlowJoMatrix", "FlowJoPopulation",
    "read_flowjo_workspace", "ID_SEPARATOR", "population_id", "order_gates", "sample_fcs_path",
]

#: Separator between population names in the gate ids we build (``Time::Singlets::CD3+``).
#: Not ``/``: gate ids end up as keys (AnnData ``uns``, zarr) where ``/`` is not allowed.
ID_SEPARATOR = "::"

#: The matrix name FlowJo gives to the spillover matrix read from the FCS file itself.
ACQUISITION_DEFINED = "Acquisition-defined"

_BOOLEAN_TAGS = {"AndNode": "and", "OrNode": "or", "NotNode": "not"}
_SHAPE_TAGS = {"RectangleGate", "PolygonGate", "EllipsoidGate"}


def population_id(names: Iterable[str]) -> str:
    """Gate id of the population reached by ``names`` from the root (``Time::Singlets``)."""
    return ID_SEPARATOR.join(names)


# ----------------------------------------------------------------------------------------------
# Parsed workspace data
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlowJoMatrix:
    """A ``transforms:spilloverMatrix`` of a sample (rows = spilling channel, FCS orientation)."""

    name: str
    prefix: str
    suffix: str
    channels: tuple[str, ...]
    matrix: tuple[tuple[float, ...], ...]

    @property
    def acquisition_defined(self) -> bool:
        """True for FlowJo's "Acquisition-defined" matrix, i.e. the file's own spillover."""
        return self.name == ACQUISITION_DEFINED


@dataclass(frozen=True)
class FlowJoPopulation:
    """One node of a FlowJo gate tree, as stored (raw coordinates, dimension names as written).

    ``kind`` is ``rectangle``, ``polygon``, ``ellipse`` or a boolean ``and``/``or``/``not``.
    ``params`` holds the geometry: ``mins``/``maxs`` (rectangle), ``vertices`` (polygon),
    ``foci``/``edge`` (ellipse, display space 0-256), ``dependents`` (boolean: paths).
    """

    name: str
    kind: str
    dims: tuple[str, ...]
    params: Mapping[str, Any]
    owning_group: str
    children: tuple[FlowJoPopulation, ...] = ()


@dataclass(frozen=True)
class FlowJoSample:
    """A sample of the workspace: its FlowJo id, name (the FCS file name), FCS keywords, the
    per-parameter transform elements, its compensation matrix and its gate tree."""

    id: str
    name: str
    uri: str | None
    keywords: Mapping[str, str]
    transforms: Mapping[str, tuple[str, Mapping[str, str]]]  # parameter -> (xml type, attributes)
    compensation: FlowJoMatrix | None
    populations: tuple[FlowJoPopulation, ...]

    @property
    def file_name(self) -> str:
        """The FCS file name: ``$FIL`` when present, else the sample name."""
        return self.keywords.get("$FIL") or self.name


@dataclass
class FlowJoWorkspace:
    """A parsed FlowJo workspace.

    Attributes
    ----------
    path
        The ``.wsp`` file.
    version
        FlowJo version that wrote it (``flowJoVersion``).
    groups
        Group name -> names of its samples (workspace order).
    samples
        FlowJo sample id -> :class:`FlowJoSample`.
    group_templates
        Group name -> the group's own template gate tree (may be empty).
    """

    path: str
    version: str
    groups: dict[str, tuple[str, ...]]
    samples: dict[str, FlowJoSample]
    group_templates: dict[str, tuple[FlowJoPopulation, ...]] = field(default_factory=dict)
    group_sample_ids: dict[str, tuple[str, ...]] = field(default_factory=dict)

    # ----- lookup --------------------------------------------------------------------------------
    def sample_names(self) -> list[str]:
        """Names of every sample, in workspace order."""
        return [s.name for s in self.samples.values()]

    def find_sample(self, sample: str) -> FlowJoSample:
        """A sample by FlowJo id, name, ``$FIL`` or file stem; InputError listing valid names."""
        key = str(sample)
        if key in self.samples:
            return self.samples[key]
        for candidates in (
            lambda s: s.name, lambda s: s.file_name,
            lambda s: Path(s.name).stem, lambda s: Path(s.file_name).stem,
        ):
            hits = [s for s in self.samples.values() if candidates(s) == key]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise InputError(self.path, f"sample {key!r} is ambiguous (FlowJo ids "
                                            f"{', '.join(h.id for h in hits)}); pass the id")
        raise InputError(self.path, f"no sample {key!r} in the workspace; samples are: "
                                    f"{_listing(self.sample_names())}")

    # ----- strategy ------------------------------------------------------------------------------
    def strategy(self, sample: str | None = None, group: str | None = "All Samples") -> Strategy:
        """The gating strategy of one sample, or the one shared by a sample group.

        Parameters
        ----------
        sample
            FlowJo sample id, sample name (FCS file name) or file stem. Its own gate tree,
            transforms and compensation are used (FlowJo keeps a full tree per sample).
        group
            With ``sample=None``: the group whose strategy is wanted. If every sample of the
            group carries the same gates, that tree is returned; otherwise the group's template
            gates (with the first group sample's transforms); otherwise an InputError.

        Returns
        -------
        Strategy
            ``format="flowjo"``; ``meta`` holds ``group``, ``sample`` and ``notes``.

        Raises
        ------
        InputError
            Unknown sample or group (the valid ones are listed), sample not in the group, a
            group whose samples differ without a template, or a construct we cannot represent.
        """
        if group is not None and group not in self.groups:
            raise InputError(self.path, f"no sample group {group!r} in the workspace; groups "
                                        f"are: {_listing(self.groups)}")
        if sample is not None:
            chosen = self.find_sample(sample)
            if group not in (None, "All Samples") and chosen.id not in self.group_sample_ids[group]:
                raise InputError(self.path, f"sample {chosen.name!r} is not in group {group!r}; "
                                            f"its samples are: {_listing(self.groups[group])}")
            return _build_strategy(self.path, chosen, chosen.populations,
                                   meta={"group": group, "sample": chosen.name})
        group = group or "All Samples"
        members = [self.samples[i] for i in self.group_sample_ids.get(group, ())]
        template = self.group_templates.get(group, ())
        if members:
            built = [_build_strategy(self.path, s, s.populations,
                                     meta={"group": group, "sample": s.name}) for s in members]
            first = built[0]
            if all(_same_strategy(first, other) for other in built[1:]):
                first.meta["sample"] = None
                first.meta["samples"] = [s.name for s in members]
                return first
            if not template:
                differing = [s.name for s, b in zip(members, built) if not _same_strategy(first, b)]
                raise InputError(self.path, f"the samples of group {group!r} have different gates "
                                            f"({members[0].name!r} differs from "
                                            f"{_listing(differing)}) and the group has no "
                                            "template gates; choose one with sample=")
        if not template:
            raise InputError(self.path, f"group {group!r} has no samples and no gates")
        donor = members[0] if members else next(iter(self.samples.values()), None)
        if donor is None:
            raise InputError(self.path, f"group {group!r}: the workspace has no sample to take "
                                        "transforms and compensation from")
        strategy = _build_strategy(self.path, donor, template,
                                   meta={"group": group, "sample": None})
        strategy.meta["notes"].append(
            f"group template gates with the transforms and compensation of sample {donor.name!r}")
        return strategy


#: deepest population nesting accepted (real workspaces are < 20 deep)
_MAX_DEPTH = 100


def _listing(names: Iterable[str]) -> str:
    names = list(names)
    return ", ".join(repr(n) for n in names) if names else "(none)"


def _same_strategy(a: Strategy, b: Strategy) -> bool:
    return (a.gates == b.gates and
            {k: repr(v) for k, v in a.transforms.items()} ==
            {k: repr(v) for k, v in b.transforms.items()} and
            set(a.compensations) == set(b.compensations) and
            all(repr(a.compensations[k]) == repr(b.compensations[k]) for k in a.compensations))


# ----------------------------------------------------------------------------------------------
# XML parsing
# ----------------------------------------------------------------------------------------------
def _attr(element: ET.Element, name: str) -> str | None:
    """Attribute by local name, whatever its namespace prefix (FlowJo mixes both)."""
    if name in element.attrib:
        return element.attrib[name]
    for key, value in element.attrib.items():
        if local_name(key) == name:
            return value
    return None


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in element if isinstance(c.tag, str) and local_name(c.tag) == name]


def _child(element: ET.Element, name: str) -> ET.Element | None:
    found = _children(element, name)
    return found[0] if found else None


class _Ctx:
    """Path of the file and a breadcrumb of where we are, for one-line error messages."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, where: str, reason: str) -> InputError:
        return InputError(self.path, f"{where}: {reason}")


def _float(ctx: _Ctx, where: str, text: str | None, what: str) -> float:
    if text is None:
        raise ctx.fail(where, f"missing {what}")
    try:
        value = float(text)
    except ValueError:
        raise ctx.fail(where, f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ctx.fail(where, f"{what} {text!r} is not finite")
    return value


def read_flowjo_workspace(path: str | os.PathLike[str]) -> FlowJoWorkspace:
    """Read a FlowJo 10 workspace file.

    Parameters
    ----------
    path
        The ``.wsp`` (XML) file. Parsed with :func:`immunoprofile._xml.parse_xml`, which refuses
        entity declarations and external references.

    Returns
    -------
    FlowJoWorkspace
        Groups, samples (keywords, transforms, compensation, gate trees); call
        :meth:`FlowJoWorkspace.strategy` for a :class:`Strategy`.

    Raises
    ------
    InputError
        Unreadable or unsafe XML, not a FlowJo workspace, or a malformed element (named).
    """
    path_str = os.fspath(path)
    ctx = _Ctx(path_str)
    root = parse_xml(path)
    if local_name(root.tag) != "Workspace":
        raise ctx.fail("root", f"not a FlowJo workspace (root element <{local_name(root.tag)}>, "
                               "expected <Workspace>)")
    sample_list = _child(root, "SampleList")
    if sample_list is None:
        raise ctx.fail("Workspace", "no <SampleList> element")

    samples: dict[str, FlowJoSample] = {}
    for index, sample_el in enumerate(_children(sample_list, "Sample")):
        sample = _parse_sample(ctx, sample_el, index)
        if sample.id in samples:
            raise ctx.fail(f"Sample {sample.name!r}", f"duplicate sampleID {sample.id!r}")
        samples[sample.id] = sample

    groups: dict[str, tuple[str, ...]] = {}
    group_ids: dict[str, tuple[str, ...]] = {}
    templates: dict[str, tuple[FlowJoPopulation, ...]] = {}
    groups_el = _child(root, "Groups")
    for group_node in (_children(groups_el, "GroupNode") if groups_el is not None else []):
        name = _attr(group_node, "name")
        if name is None:
            raise ctx.fail("GroupNode", "missing name attribute")
        where = f"GroupNode {name!r}"
        refs: list[str] = []
        group_el = _child(group_node, "Group")
        refs_el = _child(group_el, "SampleRefs") if group_el is not None else None
        for ref in (_children(refs_el, "SampleRef") if refs_el is not None else []):
            sid = _attr(ref, "sampleID")
            if sid is None or sid not in samples:
                raise ctx.fail(where, f"SampleRef to unknown sampleID {sid!r}")
            if sid not in refs:
                refs.append(sid)
        group_ids[name] = tuple(refs)
        groups[name] = tuple(samples[s].name for s in refs)
        sub = _child(group_node, "Subpopulations")
        templates[name] = _parse_subpopulations(ctx, sub, where) if sub is not None else ()
    if "All Samples" not in groups:
        # FlowJo always has it; synthesise it for hand-made workspaces.
        group_ids["All Samples"] = tuple(samples)
        groups["All Samples"] = tuple(s.name for s in samples.values())
        templates["All Samples"] = ()
    return FlowJoWorkspace(path=path_str, version=_attr(root, "flowJoVersion") or "",
                           groups=groups, samples=samples, group_templates=templates,
                           group_sample_ids=group_ids)


def _parse_sample(ctx: _Ctx, sample_el: ET.Element, index: int) -> FlowJoSample:
    node = _child(sample_el, "SampleNode")
    if node is None:
        raise ctx.fail(f"Sample #{index + 1}", "no <SampleNode> element")
    name = _attr(node, "name") or ""
    sid = _attr(node, "sampleID")
    dataset = _child(sample_el, "DataSet")
    if sid is None and dataset is not None:
        sid = _attr(dataset, "sampleID")
    if sid is None:
        raise ctx.fail(f"Sample {name!r}", "no sampleID")
    where = f"Sample {name!r}"
    uri = _attr(dataset, "uri") if dataset is not None else None

    keywords: dict[str, str] = {}
    keywords_el = _child(sample_el, "Keywords")
    for kw in (_children(keywords_el, "Keyword") if keywords_el is not None else []):
        key = _attr(kw, "name")
        if key is not None:
            keywords[key] = _attr(kw, "value") or ""

    transforms: dict[str, tuple[str, Mapping[str, str]]] = {}
    xforms_el = _child(sample_el, "Transformations")
    for xform in (list(xforms_el) if xforms_el is not None else []):
        if not isinstance(xform.tag, str):
            continue
        param = _child(xform, "parameter")
        pname = _attr(param, "name") if param is not None else None
        if pname is None:
            raise ctx.fail(where, f"transform <{local_name(xform.tag)}> names no parameter")
        transforms[pname] = (local_name(xform.tag),
                             {local_name(k): v for k, v in xform.attrib.items()})

    matrices = _children(sample_el, "spilloverMatrix")
    if len(matrices) > 1:
        raise ctx.fail(where, "more than one spilloverMatrix per sample is not supported")
    compensation = _parse_matrix(ctx, matrices[0], where) if matrices else None

    sub = _child(node, "Subpopulations")
    populations = _parse_subpopulations(ctx, sub, where) if sub is not None else ()
    return FlowJoSample(id=sid, name=name, uri=uri, keywords=keywords, transforms=transforms,
                        compensation=compensation, populations=populations)


def _parse_matrix(ctx: _Ctx, el: ET.Element, where: str) -> FlowJoMatrix:
    name = _attr(el, "name") or "matrix"
    where = f"{where} spilloverMatrix {name!r}"
    if _attr(el, "spectral") == "1":
        raise ctx.fail(where, "spectral (unmixing) matrices are not supported")
    params_el = _child(el, "parameters")
    channels = [(_attr(p, "name") or "") for p in
                (_children(params_el, "parameter") if params_el is not None else [])]
    if not channels or any(not c for c in channels):
        raise ctx.fail(where, "no or unnamed <parameter> elements")
    rows: dict[str, dict[str, float]] = {}
    for spill in _children(el, "spillover"):
        row_name = _attr(spill, "parameter") or ""
        rows[row_name] = {(_attr(co, "parameter") or ""): _float(ctx, where, _attr(co, "value"),
                                                                  "coefficient")
                          for co in _children(spill, "coefficient")}
    matrix: list[tuple[float, ...]] = []
    for row_name in channels:
        row = rows.get(row_name)
        if row is None or any(c not in row for c in channels):
            raise ctx.fail(where, f"incomplete spillover row for {row_name!r}")
        matrix.append(tuple(row[c] for c in channels))
    return FlowJoMatrix(name=name, prefix=_attr(el, "prefix") or "", suffix=_attr(el, "suffix")
                        or "", channels=tuple(channels), matrix=tuple(matrix))


def _parse_subpopulations(ctx: _Ctx, sub: ET.Element, where: str
                          ) -> tuple[FlowJoPopulation, ...]:
    # bounded recursion (3 frames per level here, more in the engine); a population name may
    # itself hold "/", so the limit is generous
    if where.count("/") > _MAX_DEPTH:
        raise ctx.fail(where, f"populations nested deeper than {_MAX_DEPTH} levels")
    out: list[FlowJoPopulation] = []
    seen: set[str] = set()
    for el in sub:
        if not isinstance(el.tag, str):
            continue
        tag = local_name(el.tag)
        if tag == "Population":
            pop = _parse_population(ctx, el, where)
        elif tag in _BOOLEAN_TAGS:
            pop = _parse_boolean(ctx, el, tag, where)
        else:
            continue  # Graph, statistics and other display-only nodes
        if pop.name in seen:
            raise ctx.fail(f"{where}/{pop.name}", "two sibling populations share this name")
        seen.add(pop.name)
        out.append(pop)
    return tuple(out)


def _sub_children(ctx: _Ctx, el: ET.Element, where: str) -> tuple[FlowJoPopulation, ...]:
    found: list[FlowJoPopulation] = []
    for sub in _children(el, "Subpopulations"):
        found.extend(_parse_subpopulations(ctx, sub, where))
    names = [p.name for p in found]
    if len(set(names)) != len(names):
        raise ctx.fail(where, "two sibling populations share a name")
    return tuple(found)


def _parse_population(ctx: _Ctx, el: ET.Element, parent_where: str) -> FlowJoPopulation:
    name = _attr(el, "name")
    if name is None or name == "":
        raise ctx.fail(parent_where, "a <Population> has no name")
    where = f"{parent_where}/{name}"
    gate_el = _child(el, "Gate")
    if gate_el is None:
        raise ctx.fail(where, "population has no <Gate> element")
    shapes = [c for c in gate_el if isinstance(c.tag, str)]
    if len(shapes) != 1:
        raise ctx.fail(where, f"<Gate> must hold exactly one gate element, found {len(shapes)}")
    shape = shapes[0]
    tag = local_name(shape.tag)
    if tag not in _SHAPE_TAGS:
        raise ctx.fail(where, f"gate element <{tag}> is not supported (supported: "
                              "RectangleGate, PolygonGate, EllipsoidGate, boolean nodes)")
    inside = _attr(shape, "eventsInside")
    if inside not in (None, "1"):
        raise ctx.fail(where, f"<{tag} eventsInside={inside!r}> (an inverted gate) is not "
                              "supported")
    dims: list[str] = []
    mins: list[float | None] = []
    maxs: list[float | None] = []
    for dim_el in _children(shape, "dimension"):
        fcs_dim = _child(dim_el, "fcs-dimension")
        dname = _attr(fcs_dim, "name") if fcs_dim is not None else None
        if not dname:
            raise ctx.fail(where, f"<{tag}> has a dimension without an fcs-dimension name")
        dims.append(dname)
        lo, hi = _attr(dim_el, "min"), _attr(dim_el, "max")
        mins.append(None if lo is None else _float(ctx, where, lo, f"min of {dname!r}"))
        maxs.append(None if hi is None else _float(ctx, where, hi, f"max of {dname!r}"))
    params: dict[str, Any]
    if tag == "RectangleGate":
        if not dims:
            raise ctx.fail(where, "<RectangleGate> without dimensions")
        params = {"mins": tuple(mins), "maxs": tuple(maxs)}
        kind = "rectangle"
    elif tag == "PolygonGate":
        if len(dims) != 2:
            raise ctx.fail(where, f"<PolygonGate> needs 2 dimensions, has {len(dims)}")
        vertices = tuple(_vertex(ctx, where, v, 2) for v in _children(shape, "vertex"))
        if len(vertices) < 3:
            raise ctx.fail(where, f"<PolygonGate> needs at least 3 vertices, has {len(vertices)}")
        params = {"vertices": vertices}
        kind = "polygon"
    else:
        if len(dims) != 2:
            raise ctx.fail(where, f"<EllipsoidGate> needs 2 dimensions, has {len(dims)}")
        foci_el, edge_el = _child(shape, "foci"), _child(shape, "edge")
        if foci_el is None or edge_el is None:
            raise ctx.fail(where, "<EllipsoidGate> needs <foci> and <edge>")
        foci = tuple(_vertex(ctx, where, v, 2) for v in _children(foci_el, "vertex"))
        edge = tuple(_vertex(ctx, where, v, 2) for v in _children(edge_el, "vertex"))
        if len(foci) != 2 or len(edge) != 4:
            raise ctx.fail(where, f"<EllipsoidGate> needs 2 foci and 4 edge points, has "
                                  f"{len(foci)} and {len(edge)}")
        params = {"foci": foci, "edge": edge}
        kind = "ellipse"
    return FlowJoPopulation(name=name, kind=kind, dims=tuple(dims), params=params,
                            owning_group=_attr(el, "owningGroup") or "",
                            children=_sub_children(ctx, el, where))


def _vertex(ctx: _Ctx, where: str, vertex_el: ET.Element, n: int) -> tuple[float, ...]:
    coords = tuple(_float(ctx, where, _attr(c, "value"), "vertex coordinate")
                   for c in _children(vertex_el, "coordinate"))
    if len(coords) != n:
        raise ctx.fail(where, f"a vertex has {len(coords)} coordinates, expected {n}")
    return coords


def _parse_boolean(ctx: _Ctx, el: ET.Element, tag: str, parent_where: str) -> FlowJoPopulation:
    name = _attr(el, "name")
    if name is None or name == "":
        raise ctx.fail(parent_where, f"a <{tag}> has no name")
    where = f"{parent_where}/{name}"
    deps_el = _child(el, "Dependents")
    deps = tuple((_attr(d, "name") or "") for d in
                 (_children(deps_el, "Dependent") if deps_el is not None else []))
    if not deps or any(not d for d in deps):
        raise ctx.fail(where, f"<{tag}> has no (or an unnamed) <Dependent>")
    op = _BOOLEAN_TAGS[tag]
    if op == "not" and len(deps) != 1:
        raise ctx.fail(where, f"<NotNode> needs exactly one Dependent, has {len(deps)}")
    if op != "not" and len(deps) < 2:
        raise ctx.fail(where, f"<{tag}> needs at least two Dependents, has {len(deps)}")
    return FlowJoPopulation(name=name, kind=op, dims=(), params={"dependents": deps},
                            owning_group=_attr(el, "owningGroup") or "",
                            children=_sub_children(ctx, el, where))


# ----------------------------------------------------------------------------------------------
# Conversion into the Strategy model
# ----------------------------------------------------------------------------------------------
def _make_transform(ctx: _Ctx, where: str, kind: str, attrs: Mapping[str, str]) -> Any:
    """A transform object from a FlowJo ``transforms:<kind>`` element's attributes."""
    from . import transforms as tr  # the transform classes are owned by flow/transforms.py

    def num(key: str) -> float:
        return _float(ctx, where, attrs.get(key), f"transforms:{kind} {key}")

    try:
        if kind == "linear":
            # FlowKit's reading: Gating-ML flin with T = maxRange, A = minRange.
            return tr.LinearTransform(num("maxRange"), num("minRange"))
        if kind == "log":
            # FlowJo: y = (log10(x) - log10(offset)) / decades  ==  flog with M = decades and
            # T = offset * 10**decades (below ``offset`` FlowJo clamps; flog goes negative).
            offset, decades = num("offset"), num("decades")
            return tr.LogTransform(offset * 10.0 ** decades, decades)
        if kind == "logicle":
            return tr.LogicleTransform(num("T"), num("W"), num("M"), num("A"))
        if kind == "fasinh":
            return tr.AsinhTransform(num("T"), num("M"), num("A"))
        if kind == "hyperlog":
            return tr.HyperlogTransform(num("T"), num("W"), num("M"), num("A"))
        if kind == "biex":
            length = int(num("length")) if "length" in attrs else 256
            return tr.FlowJoBiexTransform(num("neg"), num("width"), num("pos"), num("maxRange"),
                                          length=length)
    except (ValueError, ZeroDivisionError, OverflowError) as exc:
        raise ctx.fail(where, f"invalid transforms:{kind} parameters ({exc})") from None
    raise ctx.fail(where, f"FlowJo transform <transforms:{kind}> is not supported (supported: "
                          "linear, log, logicle, fasinh, hyperlog, biex)")


class _Converter:
    """Turns one sample's raw gate tree into Strategy gates (ids from population paths)."""

    def __init__(self, path: str, sample: FlowJoSample) -> None:
        self.ctx = _Ctx(path)
        self.sample = sample
        self.transforms: dict[str, Any] = {}
        self.compensations: dict[str, Any] = {}
        self.gates: list[Gate] = []
        self.notes: list[str] = []
        self.paths: dict[tuple[str, ...], str] = {}

    # dimensions -------------------------------------------------------------------------------
    def channel_of(self, dim_name: str, where: str) -> tuple[str, str]:
        """(channel, compensation) of a FlowJo dimension name such as ``Comp-FITC-A``."""
        matrix = self.sample.compensation
        if matrix is not None:
            pre, suf = matrix.prefix, matrix.suffix
            if dim_name.startswith(pre) and dim_name.endswith(suf) and \
                    len(dim_name) > len(pre) + len(suf):
                stripped = dim_name[len(pre):len(dim_name) - len(suf)]
                if stripped in matrix.channels and (pre or suf or dim_name in matrix.channels):
                    return stripped, self.matrix_id(matrix, where)
            return dim_name, UNCOMPENSATED
        if dim_name.startswith("Comp-"):
            # FlowJo names compensated parameters "Comp-<channel>"; without a stored matrix
            # the only one it can mean is the file's own.
            self.notes.append(f"{dim_name!r}: no spilloverMatrix stored; using the FCS file's "
                              "spillover")
            return dim_name[len("Comp-"):], FCS_SPILLOVER
        return dim_name, UNCOMPENSATED

    def matrix_id(self, matrix: FlowJoMatrix, where: str) -> str:
        if matrix.acquisition_defined:
            return FCS_SPILLOVER
        if matrix.name not in self.compensations:
            import numpy as np

            from .compensation import Spillover

            values = np.asarray(matrix.matrix, dtype=float)
            if not np.all(np.isfinite(values)):
                raise self.ctx.fail(where, f"spilloverMatrix {matrix.name!r} has non-finite "
                                           "values")
            try:
                self.compensations[matrix.name] = Spillover(matrix.channels, values)
            except InputError as exc:
                raise self.ctx.fail(where, f"spilloverMatrix {matrix.name!r}: {exc.reason}") \
                    from None
        return matrix.name

    def transform_of(self, dim_name: str, channel: str, where: str) -> str | None:
        stored = self.sample.transforms.get(dim_name) or self.sample.transforms.get(channel)
        if stored is None:
            return None
        key = dim_name if dim_name in self.sample.transforms else channel
        if key not in self.transforms:
            self.transforms[key] = _make_transform(self.ctx, f"{where} (parameter {key!r})",
                                                   *stored)
        return key

    def dimension(self, dim_name: str, where: str, *, transformed: bool) -> Dimension:
        channel, comp = self.channel_of(dim_name, where)
        xform = self.transform_of(dim_name, channel, where) if transformed else None
        return Dimension(channel=channel, compensation=comp, transform=xform)

    def forward(self, dim: Dimension, values: list[float], where: str) -> list[float]:
        """Raw coordinates -> transformed units of ``dim``."""
        if dim.transform is None:
            return values
        import numpy as np

        out = np.asarray(self.transforms[dim.transform].apply(np.asarray(values, dtype=float)),
                         dtype=float).ravel()
        if not np.all(np.isfinite(out)):
            raise self.ctx.fail(where, f"a coordinate on {dim.channel!r} has no finite value "
                                       f"under its transform {self.transforms[dim.transform]!r}")
        return [float(v) for v in out]

    # gates ------------------------------------------------------------------------------------
    def walk(self, pops: tuple[FlowJoPopulation, ...], parent: tuple[str, ...]) -> None:
        for pop in pops:
            names = (*parent, pop.name)
            gid = population_id(names)
            if gid in self.paths.values():
                # only possible when a name contains the separator ("a::b" next to a/b)
                raise self.ctx.fail("/" + "/".join(names), f"population id {gid!r} is not "
                                    f"unique (a name contains {ID_SEPARATOR!r})")
            self.paths[names] = gid
        for pop in pops:
            names = (*parent, pop.name)
            self.gates.append(self.convert(pop, names, population_id(parent) if parent else None))
            self.walk(pop.children, names)

    def convert(self, pop: FlowJoPopulation, names: tuple[str, ...], parent: str | None) -> Gate:
        gid = population_id(names)
        where = "/" + "/".join(names)
        if pop.kind == "rectangle":
            # Raw scale: FlowJo's rectangle counts are exact there (see module docstring).
            dims = tuple(self.dimension(d, where, transformed=False) for d in pop.dims)
            mins, maxs = pop.params["mins"], pop.params["maxs"]
            for d, lo, hi in zip(pop.dims, mins, maxs):
                if lo is not None and hi is not None and lo > hi:
                    raise self.ctx.fail(where, f"rectangle min {lo} > max {hi} on {d!r}")
            return RectangleGate(id=gid, parent=parent, name=pop.name, dims=dims,
                                 mins=tuple(mins), maxs=tuple(maxs))
        if pop.kind == "polygon":
            dx, dy = (self.dimension(d, where, transformed=True) for d in pop.dims)
            verts = pop.params["vertices"]
            xs = self.forward(dx, [v[0] for v in verts], where)
            ys = self.forward(dy, [v[1] for v in verts], where)
            return PolygonGate(id=gid, parent=parent, name=pop.name, dims=(dx, dy),
                               vertices=tuple(zip(xs, ys)))
        if pop.kind == "ellipse":
            dims = tuple(self.dimension(d, where, transformed=True) for d in pop.dims)
            mean, cov = _ellipse_from_flowjo(self.ctx, where, pop.params["foci"],
                                             pop.params["edge"])
            return EllipseGate(id=gid, parent=parent, name=pop.name, dims=dims, mean=mean,
                               covariance=cov, distance_square=1.0)
        operands = []
        for dep in pop.params["dependents"]:
            dep_names = tuple(part for part in dep.split("/") if part != "")
            target = self.paths.get(dep_names)
            if target is None:
                raise self.ctx.fail(where, f"boolean operand {dep!r} is not a population of "
                                           f"sample {self.sample.name!r}")
            operands.append((target, False))
        return BooleanGate(id=gid, parent=parent, name=pop.name, op=pop.kind,
                           operands=tuple(operands))


def _ellipse_from_flowjo(ctx: _Ctx, where: str, foci: tuple[tuple[float, ...], ...],
                         edge: tuple[tuple[float, ...], ...]
                         ) -> tuple[tuple[float, float], tuple[tuple[float, float], ...]]:
    """FlowJo ellipse (2 foci + 4 edge points in 256-bin display space) -> mean, covariance.

    Display space is linear in each axis' transformed units, so coordinate / 256 is our
    transformed unit. The semi-major axis comes from the focal property of the two major-axis
    edge points (|p - f1| + |p - f2| = 2a); FlowJo's stored minor-axis points are not reliable
    (FlowKit's observation), so b follows from a and the focal distance.
    """
    f1 = [c / 256.0 for c in foci[0]]
    f2 = [c / 256.0 for c in foci[1]]
    pts = [[c / 256.0 for c in p] for p in edge]
    center = ((f1[0] + f2[0]) / 2.0, (f1[1] + f2[1]) / 2.0)
    c = math.dist(f1, f2) / 2.0
    sums = [math.dist(p, f1) + math.dist(p, f2) for p in pts[:2]]
    a = sum(sums) / 4.0
    if not (a > 0 and a > c and math.isfinite(a)):
        raise ctx.fail(where, "degenerate EllipsoidGate (edge points inside the foci)")
    b2 = a * a - c * c
    theta = math.atan2(f2[1] - f1[1], f2[0] - f1[0]) if c > 0 else 0.0
    cos, sin = math.cos(theta), math.sin(theta)
    a2 = a * a
    cov = ((a2 * cos * cos + b2 * sin * sin, (a2 - b2) * cos * sin),
           ((a2 - b2) * cos * sin, a2 * sin * sin + b2 * cos * cos))
    return center, cov


def order_gates(gates: list[Gate]) -> dict[str, Gate]:
    """Gates in an order where parents and boolean operands come first (stable otherwise)."""
    by_id = {g.id: g for g in gates}
    owner: dict[str, str] = {}
    for g in gates:
        for q in getattr(g, "quadrants", ()):
            owner[q.id] = g.id
    done: dict[str, Gate] = {}
    visiting: set[str] = set()

    def deps(g: Gate) -> list[str]:
        out = [g.parent] if g.parent is not None else []
        if isinstance(g, BooleanGate):
            out.extend(op for op, _ in g.operands)
        return [owner.get(d, d) for d in out]

    def visit(g: Gate) -> None:
        if g.id in done:
            return
        if g.id in visiting:
            raise ValueError(f"gate {g.id!r} depends on itself (cycle through boolean operands)")
        visiting.add(g.id)
        for d in deps(g):
            if d in by_id:
                visit(by_id[d])
        visiting.discard(g.id)
        done[g.id] = g

    for g in gates:
        visit(g)
    return done


def _build_strategy(path: str, sample: FlowJoSample, pops: tuple[FlowJoPopulation, ...], *,
                    meta: dict[str, Any]) -> Strategy:
    conv = _Converter(path, sample)
    conv.walk(pops, ())
    try:
        gates = order_gates(conv.gates)
    except ValueError as exc:
        raise InputError(path, f"sample {sample.name!r}: {exc}") from None
    if sample.compensation is None:
        comp_note = "none"
    elif sample.compensation.acquisition_defined:
        comp_note = "fcs"
    else:
        comp_note = sample.compensation.name
    full_meta = {"group": meta.get("group"), "sample": meta.get("sample"),
                 "sample_id": sample.id, "compensation": comp_note, "notes": conv.notes}
    return Strategy(gates=gates, transforms=conv.transforms, compensations=conv.compensations,
                    source=path, format="flowjo", meta=full_meta)


def sample_fcs_path(workspace: FlowJoWorkspace, sample: FlowJoSample) -> Path | None:
    """Best guess at the sample's FCS file: the DataSet URI, else its name beside the .wsp."""
    candidates: list[Path] = []
    if sample.uri:
        parsed = urlparse(sample.uri)
        if parsed.scheme in ("", "file"):
            candidates.append(Path(unquote(parsed.path)))
    base = Path(workspace.path).resolve().parent
    candidates.append(base / sample.file_name)
    candidates.append(base / sample.name)
    for cand in candidates:
        full = cand if cand.is_absolute() else base / cand
        if full.is_file():
            return full
    return None

