"""Gating-ML 2.0: the ISAC compliance set event for event, round-trips, and refusals."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import numpy as np
import pytest

from immunoprofile.errors import InputError
from immunoprofile.flow.compensation import Spillover
from immunoprofile.flow.engine import GatingResult, evaluate
from immunoprofile.flow.fcs import read_fcs
from immunoprofile.flow.gates import (
    BooleanGate,
    Dimension,
    Quadrant,
    QuadrantDivider,
    QuadrantGate,
    RatioDimension,
    RectangleGate,
    Strategy,
)
from immunoprofile.flow.gatingml import read_gatingml, write_gatingml
from immunoprofile.flow.transforms import FlowJoBiexTransform, LogicleTransform

_REFERENCE = Path(os.environ.get("IMMUNOPROFILE_REFERENCE",
                                 Path(__file__).resolve().parents[2].parent / "shared"
                                 / "reference"))
_GML = _REFERENCE / "flow" / "gatingml2"
_GATE_ID = re.compile(r'<gating:(?:RectangleGate|PolygonGate|EllipsoidGate|BooleanGate|Quadrant)'
                      r'\s+gating:id="([^"]+)"')


def _truth_name(population_id: str) -> str:
    # the one documented exception to "Results_<gate id>.txt"
    return "ParQuadRect" if population_id == "ParRectangle1" else population_id


def _compliance_cases() -> list[tuple[str, str]]:
    """(gml file, population id) for every gate result with a truth file: one test each.

    Ids are found with a plain regex over the XML text, independently of our reader, so a gate
    the reader silently dropped still gets a (failing) test.
    """
    if not (_GML / "gml").is_dir():
        return [("missing", "missing")]  # the test then skips through reference_dir
    cases = []
    for gml in sorted((_GML / "gml").glob("*.xml")):
        for pid in _GATE_ID.findall(gml.read_text(encoding="utf-8")):
            if (_GML / "truth" / f"Results_{_truth_name(pid)}.txt").is_file():
                cases.append((gml.name, pid))
    return cases


CASES = _compliance_cases()


@pytest.fixture(scope="module")
def data1(reference_dir):
    # our own reader: $P1G = 3.67 must be applied for Range1 and friends to match
    return read_fcs(reference_dir / "flow" / "gatingml2" / "data1.fcs")


@functools.lru_cache(maxsize=None)
def _truth(name: str) -> np.ndarray:
    return np.loadtxt(_GML / "truth" / f"Results_{name}.txt", dtype=np.int8).astype(bool)


@pytest.fixture(scope="module")
def results(data1):
    cache: dict[str, GatingResult] = {}

    def get(gml_name: str) -> GatingResult:
        if gml_name not in cache:
            strategy = read_gatingml(_GML / "gml" / gml_name)
            # data1.fcs has no $SPILLOVER; the compliance set treats "FCS" as uncompensated
            cache[gml_name] = evaluate(strategy, data1, missing_spillover="uncompensated")
        return cache[gml_name]

    return get


def test_compliance_set_is_complete():
    if CASES == [("missing", "missing")]:
        pytest.skip(f"reference data folder not found at {_REFERENCE}")
    assert len(CASES) >= 132
    assert len({pid for _, pid in CASES}) >= 49


@pytest.mark.parametrize("gml_name,population_id", CASES,
                         ids=[f"{g.removeprefix('gml_').removesuffix('.xml')}:{p}"
                              for g, p in CASES])
def test_compliance_gate_matches_truth(reference_dir, results, gml_name, population_id):
    result = results(gml_name)
    assert population_id in result.masks, f"{population_id} not evaluated"
    truth = _truth(_truth_name(population_id))
    mask = result.masks[population_id]
    assert mask.shape == truth.shape
    mismatched = np.flatnonzero(mask != truth)
    assert mismatched.size == 0, (f"{mismatched.size} events differ "
                                  f"(first {mismatched[:5].tolist()})")
    assert result.counts[population_id] == int(truth.sum())


def test_all_gates_file_structure(reference_dir):
    strategy = read_gatingml(reference_dir / "flow/gatingml2/gml/gml_all_gates.xml")
    gate = strategy.gates["ScaleRect1"]
    assert isinstance(gate, RectangleGate)
    # compensated dimensions are named by fluorochrome (PE) and resolved to detectors (FL2-H)
    assert gate.dims[0] == Dimension("FL2-H", "MySpill", "Logicle_10000_0.5_4.5_0")
    assert strategy.transforms["Logicle_10000_0.5_4.5_0"] == LogicleTransform(10000, 0.5, 4.5, 0)
    spill = strategy.compensations["MySpill"]
    assert spill.channels == ("FL1-H", "FL2-H", "FL3-H")
    assert spill.matrix[1, 0] == pytest.approx(0.11)
    ratio = strategy.gates["RatRange1a"].dims[0]
    assert isinstance(ratio, RatioDimension)
    assert (ratio.numerator, ratio.denominator, ratio.C) == ("FL2-H", "FL2-A", -1.0)
    result = evaluate(strategy, read_fcs(reference_dir / "flow/gatingml2/data1.fcs"),
                      missing_spillover="uncompensated")
    assert result.paths == strategy.paths()
    assert result.parents == {pid: strategy.parent_of(pid) for pid in strategy.population_ids()}
    assert result.paths["ScalePar1"] == "/ScaleRect1/ScalePar1"
    quad = strategy.gates["Quadrant1"]
    assert isinstance(quad, QuadrantGate) and len(quad.quadrants) == 4
    # parents and boolean operands come before the gates using them
    order = list(strategy.gates)
    for gid, g in strategy.gates.items():
        if isinstance(g, BooleanGate):
            for ref, _ in g.operands:
                assert order.index(strategy.quadrant_owner().get(ref, ref)) < order.index(gid)


def test_read_write_read_round_trip_gives_identical_masks(reference_dir, data1, tmp_path):
    for gml in sorted((reference_dir / "flow/gatingml2/gml").glob("*.xml")):
        first = read_gatingml(gml)
        out = tmp_path / gml.name
        write_gatingml(first, out)
        second = read_gatingml(out)
        assert list(second.gates) == list(first.gates), gml.name
        assert second.transforms == first.transforms
        a = evaluate(first, data1, missing_spillover="uncompensated")
        b = evaluate(second, data1, missing_spillover="uncompensated")
        assert a.masks.keys() == b.masks.keys()
        for pid in a.masks:
            assert np.array_equal(a.masks[pid], b.masks[pid]), (gml.name, pid)


@pytest.mark.parametrize("dim,message", [
    (Dimension("FL1-H", compensation="Acquisition"), "compensation 'Acquisition'"),
    (Dimension("FL1-H", transform="missing"), "transform 'missing'"),
])
def test_write_refuses_dangling_references(tmp_path, dim, message):
    strategy = Strategy(gates={"g": RectangleGate("g", None, "g", dims=(dim,), mins=(0.1,),
                                                  maxs=(None,))}, source="s.wsp")
    with pytest.raises(InputError, match=re.escape(message)):
        write_gatingml(strategy, tmp_path / "out.xml")


def test_write_refuses_flowjo_biex(tmp_path):
    strategy = Strategy(
        gates={"g": RectangleGate("g", None, "g", dims=(Dimension("FL1-H", transform="b"),),
                                  mins=(0.1,), maxs=(None,))},
        transforms={"b": FlowJoBiexTransform(0, -10)})
    with pytest.raises(InputError, match="no Gating-ML 2.0 equivalent"):
        write_gatingml(strategy, tmp_path / "out.xml")
    assert not (tmp_path / "out.xml").exists()


_HEAD = ('<gating:Gating-ML xmlns:gating="http://www.isac-net.org/std/Gating-ML/v2.0/gating" '
         'xmlns:transforms="http://www.isac-net.org/std/Gating-ML/v2.0/transformations" '
         'xmlns:data-type="http://www.isac-net.org/std/Gating-ML/v2.0/datatypes">')
_RANGE = ('<gating:RectangleGate gating:id="R" {extra}><gating:dimension '
          'gating:compensation-ref="{comp}" gating:min="1" {tref}>'
          '<data-type:fcs-dimension data-type:name="FL1-H"/></gating:dimension>'
          '</gating:RectangleGate>')


def _write(tmp_path: Path, body: str, prolog: str = "") -> Path:
    path = tmp_path / "strategy.xml"
    path.write_text(f'<?xml version="1.0"?>{prolog}{_HEAD}{body}</gating:Gating-ML>',
                    encoding="utf-8")
    return path


def test_billion_laughs_is_refused(tmp_path):
    prolog = ('<!DOCTYPE lolz [<!ENTITY lol "lol">'
              '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
              '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>')
    body = _RANGE.format(extra='gating:name="&lol3;"', comp="uncompensated", tref="")
    path = _write(tmp_path, body, prolog)
    with pytest.raises(InputError, match="unsafe XML") as info:
        read_gatingml(path)
    assert str(path) in str(info.value)


def test_external_entity_is_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret", encoding="utf-8")
    prolog = f'<!DOCTYPE x [<!ENTITY xxe SYSTEM "file://{secret}">]>'
    body = _RANGE.format(extra='gating:name="&xxe;"', comp="uncompensated", tref="")
    with pytest.raises(InputError, match="unsafe XML"):
        read_gatingml(_write(tmp_path, body, prolog))


@pytest.mark.parametrize("body,message", [
    ('<gating:CurlyGate gating:id="C"/>', "unsupported gate type <CurlyGate>"),
    ('<transforms:transformation transforms:id="t"><transforms:tanh transforms:T="1"/>'
     '</transforms:transformation>', "unsupported transform <tanh>"),
    (_RANGE.format(extra="", comp="NoSuchMatrix", tref=""), "names no spectrumMatrix"),
    (_RANGE.format(extra="", comp="uncompensated", tref='gating:transformation-ref="zz"'),
     "names no transformation"),
    (_RANGE.format(extra='gating:parent_id="ghost"', comp="uncompensated", tref=""),
     "unknown gate 'ghost'"),
    (_RANGE.format(extra="", comp="uncompensated", tref="")
     + _RANGE.format(extra="", comp="uncompensated", tref=""), "duplicate gate id 'R'"),
    ('<gating:BooleanGate gating:id="B"><gating:and><gating:gateReference gating:ref="B"/>'
     '<gating:gateReference gating:ref="B"/></gating:and></gating:BooleanGate>', "cycle"),
    ("", "defines no gates"),
])
def test_malformed_strategies_name_file_and_element(tmp_path, body, message):
    path = _write(tmp_path, body)
    with pytest.raises(InputError, match=re.escape(message)) as info:
        read_gatingml(path)
    assert str(info.value).startswith(str(path))
    assert "\n" not in str(info.value)


def test_non_gatingml_xml_is_refused(tmp_path):
    path = tmp_path / "x.xml"
    path.write_text("<Workspace/>", encoding="utf-8")
    with pytest.raises(InputError, match="not a Gating-ML file"):
        read_gatingml(path)
    path.write_text('<gating:Gating-ML xmlns:gating="http://www.isac-net.org/std/Gating-ML/'
                    'v1.5/gating"/>', encoding="utf-8")
    with pytest.raises(InputError, match="not Gating-ML 2.0"):
        read_gatingml(path)


def test_vendor_custom_info_is_ignored(tmp_path):
    body = ('<data-type:custom_info><gating:RectangleGate gating:id="Hidden"/>'
            '<gating:FancyGate/></data-type:custom_info>'
            + _RANGE.format(extra="", comp="uncompensated", tref=""))
    strategy = read_gatingml(_write(tmp_path, body))
    assert list(strategy.gates) == ["R"]


def test_matrix_inverted_already_is_honoured(tmp_path):
    matrix = np.array([[1.0, 0.1], [0.2, 1.0]])
    inverse = np.linalg.inv(matrix)
    cell = '<transforms:coefficient transforms:value="{!r}"/>'
    coefficients = "".join(
        "<transforms:spectrum>" + "".join(cell.format(float(v)) for v in row)
        + "</transforms:spectrum>" for row in inverse)
    dims = ('<data-type:fcs-dimension data-type:name="FL1-H"/>'
            '<data-type:fcs-dimension data-type:name="FL2-H"/>')
    body = (f'<transforms:spectrumMatrix transforms:id="M" '
            f'transforms:matrix-inverted-already="true"><transforms:fluorochromes>{dims}'
            f'</transforms:fluorochromes><transforms:detectors>{dims}</transforms:detectors>'
            f'{coefficients}</transforms:spectrumMatrix>'
            + _RANGE.format(extra="", comp="M", tref=""))
    strategy = read_gatingml(_write(tmp_path, body))
    spill = strategy.compensations["M"]
    assert isinstance(spill, Spillover)
    np.testing.assert_allclose(spill.matrix, matrix, rtol=1e-12)


def _isac_schema():
    pytest.importorskip("lxml")
    resources = pytest.importorskip("flowkit._resources")  # FlowKit ships the ISAC XSDs
    return resources.gml_schema


def test_written_files_are_valid_gatingml_2(reference_dir, tmp_path):
    from lxml import etree

    schema = _isac_schema()
    for gml in sorted((reference_dir / "flow/gatingml2/gml").glob("*.xml")):
        out = tmp_path / gml.name
        write_gatingml(read_gatingml(gml), out)
        assert schema.validate(etree.parse(str(out))), (gml.name, str(schema.error_log))


def test_non_xml_ids_and_quadrant_names_survive_a_round_trip(tmp_path):
    from lxml import etree

    d1, d2 = Dimension("A", transform="lin"), Dimension("B")
    strategy = Strategy(
        gates={
            "/Cells": RectangleGate("/Cells", None, "Cells", dims=(d1,), mins=(0.2,),
                                    maxs=(None,)),
            "/Cells/Q": QuadrantGate("/Cells/Q", "/Cells", "Q", dividers=(
                QuadrantDivider("1 div", d2, (5.0,)),), quadrants=(
                Quadrant("/Cells/Q/B+", (("1 div", 9.0),), "B+"),
                Quadrant("/Cells/Q/B-", (("1 div", 0.0),), "B-"))),
            "/Cells/Q/B+/not": BooleanGate("/Cells/Q/B+/not", "/Cells/Q/B+", "not", op="not",
                                           operands=(("/Cells/Q/B-", False),)),
        },
        transforms={"lin": LogicleTransform(1000, 0.5, 4.5, 0)})
    out = tmp_path / "odd.xml"
    write_gatingml(strategy, out)
    assert _isac_schema().validate(etree.parse(str(out)))
    again = read_gatingml(out)
    assert list(again.paths().values()) == list(strategy.paths().values())
    rng = np.random.default_rng(5)
    fcs = _fcs_from(rng.uniform(-50, 1000, (3000, 2)).astype(np.float32))
    first, second = evaluate(strategy, fcs), evaluate(again, fcs)
    by_path_1 = {first.paths[k]: m for k, m in first.masks.items()}
    by_path_2 = {second.paths[k]: m for k, m in second.masks.items()}
    assert by_path_1.keys() == by_path_2.keys()
    for path, mask in by_path_1.items():
        assert np.array_equal(mask, by_path_2[path]), path
    assert 0 < first.counts["/Cells/Q/B+"] < first.counts["/Cells"]


def _fcs_from(events):
    from immunoprofile.flow.fcs import FCSData

    return FCSData(path="mem.fcs", version="FCS3.1", text={}, channels=["A", "B"],
                   markers=["", ""], events=events, ranges=[1024.0, 1024.0], datatype="F",
                   spillover=None)


def test_flowjo_export_comp_prefix_is_the_compensated_channel(reference_dir, tmp_path):
    """FlowJo's Gating-ML export names dimensions ``Comp-<channel>``: that channel under the
    compensation-ref, or the file's own spillover when none is given."""
    from immunoprofile.flow.engine import evaluate
    from immunoprofile.flow.fcs import read_fcs

    fcs = read_fcs(reference_dir / "flow" / "fcs_edge_cases" / "flowkit" / "100715.fcs")
    rect = ('<gating:RectangleGate gating:id="R"><gating:dimension {comp} gating:min="1000" '
            'gating:max="5000"><data-type:fcs-dimension data-type:name="{name}"/>'
            '</gating:dimension></gating:RectangleGate>')
    masks = {}
    for label, comp, name in [("fcs", 'gating:compensation-ref="FCS"', "B515-A"),
                              ("flowjo", "", "Comp-B515-A"),
                              ("flowjo-ref", 'gating:compensation-ref="FCS"', "Comp-B515-A"),
                              ("raw", 'gating:compensation-ref="uncompensated"', "B515-A")]:
        strategy = read_gatingml(_write(tmp_path, rect.format(comp=comp, name=name)))
        dim = strategy.gates["R"].dims[0]
        assert dim.channel == "B515-A"
        masks[label] = evaluate(strategy, fcs).masks["R"]
    np.testing.assert_array_equal(masks["flowjo"], masks["fcs"])
    np.testing.assert_array_equal(masks["flowjo-ref"], masks["fcs"])
    assert (masks["raw"] != masks["fcs"]).sum() > 50  # compensation matters on this channel (98)


def test_comp_prefix_on_a_file_flowjo_exported_compensated(reference_dir, tmp_path):
    """A file FlowJo exported with compensation applied names its columns ``Comp-<channel>``
    and carries no spillover: the export's ``Comp-B515-A`` gate uses that column as written
    and keeps the events the original file keeps under its own spillover; a file with
    neither column is still refused."""
    from immunoprofile.errors import InputError
    from immunoprofile.flow.compensation import compensate
    from immunoprofile.flow.engine import evaluate
    from immunoprofile.flow.fcs import read_fcs
    from immunoprofile.flow.fcs_write import write_fcs

    original = read_fcs(reference_dir / "flow" / "fcs_edge_cases" / "flowkit" / "100715.fcs")
    spill = original.spillover
    assert spill is not None and "B515-A" in spill.channels
    exported_names = [f"Comp-{c}" if c in spill.channels else c for c in original.channels]
    values = compensate(original.events, original.channels, spill)
    exported = read_fcs(write_fcs(tmp_path / "exported.fcs", values, exported_names))
    assert exported.spillover is None
    rect = ('<gating:RectangleGate gating:id="R"><gating:dimension gating:min="1000" '
            'gating:max="5000"><data-type:fcs-dimension data-type:name="Comp-B515-A"/>'
            '</gating:dimension></gating:RectangleGate>')
    strategy = read_gatingml(_write(tmp_path, rect))
    want = evaluate(strategy, original).masks["R"]
    got = evaluate(strategy, exported)
    # float32 storage of the compensated values moves at most the events on the bounds
    assert (got.masks["R"] != want).sum() <= 2 and got.counts["R"] > 1000
    assert any("'Comp-B515-A'" in w and "as written" in w for w in got.warnings)
    neither = read_fcs(write_fcs(tmp_path / "neither.fcs", values,
                                 [c.replace("B515-A", "X") for c in original.channels]))
    with pytest.raises(InputError, match="spillover"):
        evaluate(strategy, neither)
