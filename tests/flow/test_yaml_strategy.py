"""YAML strategy format: the documented example, precise errors, safety, round trip, fuzzing."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from immunoprofile.errors import InputError
from immunoprofile.flow.gates import (
    FCS_SPILLOVER,
    UNCOMPENSATED,
    BooleanGate,
    EllipseGate,
    PolygonGate,
    QuadrantGate,
    RectangleGate,
    Strategy,
    validate_strategy,
)
from immunoprofile.flow.transforms import LinearTransform, LogicleTransform
from immunoprofile.flow.yaml_strategy import read_yaml_strategy, write_yaml_strategy

DOC = Path(__file__).resolve().parents[2] / "docs" / "strategy_yaml.md"
FUZZ_EXAMPLES = int(os.environ.get("IMMUNOPROFILE_FUZZ_EXAMPLES", 60))


def doc_example() -> str:
    """The first ```yaml block of docs/strategy_yaml.md (the documented, complete example)."""
    match = re.search(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert match, "docs/strategy_yaml.md has no ```yaml example"
    return match.group(1)


@pytest.fixture()
def example(tmp_path: Path) -> Path:
    path = tmp_path / "strategy.yaml"
    path.write_text(doc_example(), encoding="utf-8")
    return path


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


MINI = """\
format: immunoprofile-strategy/1
compensation: fcs
transforms:
  default: {type: logicle, T: 262144, W: 0.5, M: 4.5}
  FSC-A: {type: linear, T: 262144}
  SSC-A: {type: linear, T: 262144}
gates:
  - name: Cells
    type: polygon
    x: FSC-A
    y: SSC-A
    vertices: [[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]]
    children:
      - name: CD3+
        type: range
        channel: CD3
        min: 0.4
"""


def mini_with(tmp_path: Path, extra_gate: str) -> Path:
    return write(tmp_path, MINI + extra_gate)


# ----------------------------------------------------------------------------------------------
def test_documented_example_parses_into_the_model(example: Path) -> None:
    s = read_yaml_strategy(example)
    validate_strategy(s)
    assert isinstance(s, Strategy) and s.format == "yaml" and s.source == str(example)
    paths = set(s.paths().values())
    # every population the document shows, quadrants addressed as <parent>/<quadrant name>
    for expected in ["/Cells", "/Cells/Singlets", "/Cells/Singlets/Live",
                     "/Cells/Singlets/Live/CD3+", "/Cells/Singlets/Live/CD3+/CD4+CD8-",
                     "/Cells/Singlets/Live/CD3+/CD4-CD8+", "/Cells/Singlets/Live/CD3+/CD4+CD8+",
                     "/Cells/Singlets/Live/CD3+/CD4-CD8-", "/Cells/Singlets/Live/CD3+/Lymph blob"]:
        assert expected in paths, expected
    kinds = {type(g) for g in s.gates.values()}
    assert kinds == {PolygonGate, RectangleGate, QuadrantGate, EllipseGate, BooleanGate}
    cells = s.gates["Cells"]
    assert isinstance(cells, PolygonGate)
    assert cells.dims[0].channel == "FSC-A" and cells.dims[0].compensation == UNCOMPENSATED
    assert isinstance(s.transforms[cells.dims[0].transform], LinearTransform)
    live = s.gates["Cells::Singlets::Live"]
    assert isinstance(live, RectangleGate) and live.mins == (None,) and live.maxs == (0.35,)
    assert live.dims[0].channel == "Viability"  # marker name kept as written
    assert live.dims[0].compensation == FCS_SPILLOVER
    assert isinstance(s.transforms[live.dims[0].transform], LogicleTransform)
    # Time: none -> untransformed
    quad = next(g for g in s.gates.values() if isinstance(g, QuadrantGate))
    assert [d.values for d in quad.dividers] == [(0.45,), (0.45,)]
    by_name = {q.name: dict(q.positions) for q in quad.quadrants}
    x_id, y_id = (d.id for d in quad.dividers)
    assert by_name["CD4+CD8-"][x_id] > 0.45 and by_name["CD4+CD8-"][y_id] < 0.45
    assert by_name["CD4-CD8+"][x_id] < 0.45 and by_name["CD4-CD8+"][y_id] > 0.45
    boolean = next(g for g in s.gates.values() if isinstance(g, BooleanGate))
    assert boolean.op == "and"
    assert [c for _, c in boolean.operands] == [False, True]
    assert s.path_of(boolean.operands[0][0]) == "/Cells/Singlets/Live/CD3+/CD4+CD8-"


def test_parents_come_before_children_and_operands_before_booleans(example: Path) -> None:
    s = read_yaml_strategy(example)
    order = list(s.gates)
    owner = s.quadrant_owner()
    for i, gate in enumerate(s.gates.values()):
        deps = [gate.parent] if gate.parent else []
        if isinstance(gate, BooleanGate):
            deps += [op for op, _ in gate.operands]
        for dep in deps:
            assert order.index(owner.get(dep, dep)) < i


def test_compensation_none_and_csv(tmp_path: Path, reference_dir: Path) -> None:
    s = read_yaml_strategy(write(tmp_path, MINI.replace("compensation: fcs", "compensation: none")))
    assert all(d.compensation == UNCOMPENSATED for g in s.gates.values() for d in g.dimensions)
    csv = reference_dir / "flow" / "flowjo_wsp" / "8_color_data_set" / "den_comp.csv"
    s = read_yaml_strategy(write(tmp_path, MINI.replace("compensation: fcs",
                                                        f"compensation: {csv}")))
    (comp_id,) = s.compensations
    assert len(s.compensations[comp_id].channels) == 8
    cd3 = s.gates["Cells::CD3+"].dims[0]
    assert cd3.compensation == comp_id
    assert s.gates["Cells"].dims[0].compensation == UNCOMPENSATED  # scatter never compensated
    with pytest.raises(InputError, match=r"compensation: matrix file 'nope.csv' not found"):
        read_yaml_strategy(write(tmp_path, MINI.replace("compensation: fcs",
                                                        "compensation: nope.csv")))


@pytest.mark.parametrize("snippet, message", [
    ("    childs: []\n", r"/Cells: unknown key 'childs' \(did you mean 'children'\?\)"),
    ("    vertice: []\n", r"/Cells: unknown key 'vertice' \(did you mean 'vertices'\?\)"),
])
def test_unknown_key_has_did_you_mean(tmp_path: Path, snippet: str, message: str) -> None:
    text = MINI.replace("    children:\n", snippet + "    children:\n", 1)
    with pytest.raises(InputError, match=message) as info:
        read_yaml_strategy(write(tmp_path, text))
    assert str(info.value).startswith(str(tmp_path / "s.yaml") + ": ")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("gate, message", [
    ("  - name: X\n    type: polygn\n    x: A\n    y: B\n    vertices: [[0,0],[1,0],[1,1]]\n",
     r"/X: unknown gate type 'polygn' \(did you mean 'polygon'\?\)"),
    ("  - name: X\n    type: polygon\n    x: A\n    y: B\n",
     r"/X: polygon gate needs 'vertices'"),
    ("  - name: X\n    type: polygon\n    x: A\n    y: B\n    vertices: [[0,0],[1,0]]\n",
     r"/X: vertices must be a list of at least 3"),
    ("  - name: X\n    type: polygon\n    x: A\n    y: B\n    vertices: [[0,0],[1,'a'],[1,1]]\n",
     r"/X: vertices\[1\] must be a number, got 'a'"),
    ("  - name: Cells\n    type: range\n    channel: A\n    min: 1\n",
     r"/Cells: duplicate gate name among siblings"),
    ("  - name: B\n    type: boolean\n    op: and\n    of: [/Cells/CD3-, /Cells]\n",
     r"/B: boolean operand '/Cells/CD3-' not found \(did you mean '/Cells/CD3\+'\?\)"),
    ("  - name: B\n    type: boolean\n    op: and\n    of: [Cels, Cells]\n",
     r"/B: boolean operand 'Cels' not found \(did you mean 'Cells'\?\)"),
    ("  - name: B\n    type: boolean\n    op: xor\n    of: [Cells, CD3+]\n",
     r"/B: op must be and, or or not, got 'xor'"),
    ("  - name: B\n    type: boolean\n    op: not\n    of: [Cells, CD3+]\n",
     r"/B: op 'not' takes exactly one operand"),
    ("  - name: R\n    type: range\n    channel: A\n    min: 2\n    max: 1\n",
     r"/R: min 2.0 must be below max 1.0 on 'A'"),
    ("  - name: R\n    type: range\n    channel: A\n    min: true\n",
     r"/R: min must be a number, got True"),
    ("  - name: R\n    type: range\n    channel: A\n",
     r"/R: range gate needs 'min' and/or 'max'"),
    ("  - name: E\n    type: ellipse\n    x: A\n    y: B\n    mean: [0, 0]\n"
     "    covariance: [[1, 2], [2, 1]]\n", r"/E: covariance must be positive definite"),
    ("  - name: Q\n    type: quadrant\n    x: A\n    y: B\n    at: [0, 0]\n"
     "    quadrants: {a: [+, x]}\n", r"/a: quadrant position must be \[x side, y side\]"),
    ("  - name: Q\n    type: quadrant\n    x: A\n    y: B\n    at: [0, 0]\n"
     "    quadrants: {a: [+, +], b: [+, +]}\n", r"/b: same quadrant"),
])
def test_errors_name_the_gate_path_and_the_problem(tmp_path: Path, gate: str, message: str
                                                   ) -> None:
    with pytest.raises(InputError, match=message):
        read_yaml_strategy(mini_with(tmp_path, gate))


def test_top_level_and_transform_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"top level: unknown key 'gate' \(did you mean 'gates'"):
        read_yaml_strategy(write(tmp_path, "gate: []\n"))
    with pytest.raises(InputError, match=r"must be a YAML mapping"):
        read_yaml_strategy(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(InputError, match=r"gates: must be a non-empty list"):
        read_yaml_strategy(write(tmp_path, "compensation: fcs\n"))
    with pytest.raises(InputError, match=r"transforms/default: unknown transform type 'logicl' "
                                         r"\(did you mean 'logicle'\?\)"):
        read_yaml_strategy(write(tmp_path, MINI.replace("type: logicle", "type: logicl")))
    with pytest.raises(InputError, match=r"transforms/default: logicle transform needs W"):
        read_yaml_strategy(write(tmp_path, MINI.replace(" W: 0.5,", "")))
    with pytest.raises(InputError, match=r"transforms/default: invalid logicle parameters"):
        read_yaml_strategy(write(tmp_path, MINI.replace("T: 262144, W", "T: -5, W")))
    with pytest.raises(InputError, match=r"format: unsupported"):
        read_yaml_strategy(write(tmp_path, MINI.replace("strategy/1", "strategy/9")))
    with pytest.raises(InputError, match=r"invalid YAML at line \d+: expected "):
        read_yaml_strategy(write(tmp_path, "gates:\n  - [unclosed\n"))
    with pytest.raises(InputError, match=r"file not found"):
        read_yaml_strategy(tmp_path / "absent.yaml")


def test_malicious_yaml_is_refused(tmp_path: Path) -> None:
    evil = "gates: !!python/object/apply:os.system ['echo pwned > /tmp/h3_pwned']\n"
    with pytest.raises(InputError, match=r"invalid YAML"):
        read_yaml_strategy(write(tmp_path, evil))
    assert not Path("/tmp/h3_pwned").exists()
    with pytest.raises(InputError, match=r"invalid YAML"):
        read_yaml_strategy(write(tmp_path, "a: !!python/name:os.system\n"))
    # an alias bomb stays small for safe_load but must not explode into millions of gates
    nested = "[{name: a, type: range, channel: A, min: 0}]"
    for i in range(24):
        nested = (f"[{{name: a, type: range, channel: A, min: 0, children: &n{i} {nested}}}, "
                  f"{{name: b, type: range, channel: A, min: 0, children: *n{i}}}]")
    doc = f"gates: {nested}\n"
    with pytest.raises(InputError, match=r"more than 10000 gates"):
        read_yaml_strategy(write(tmp_path, doc))


def test_write_then_read_round_trip(tmp_path: Path, example: Path) -> None:
    original = read_yaml_strategy(example)
    out = tmp_path / "again.yaml"
    write_yaml_strategy(original, out)
    again = read_yaml_strategy(out)
    assert again.paths() == original.paths() or \
        set(again.paths().values()) == set(original.paths().values())
    for gid, gate in original.gates.items():
        twin = again.gates[gid]
        assert type(twin) is type(gate) and twin.parent == gate.parent and twin.name == gate.name
        assert [getattr(d, "channel", None) for d in twin.dimensions] == \
            [getattr(d, "channel", None) for d in gate.dimensions]
        assert [d.compensation for d in twin.dimensions] == \
            [d.compensation for d in gate.dimensions]
        for da, db in zip(twin.dimensions, gate.dimensions):
            ta = again.transforms.get(da.transform) if da.transform else None
            tb = original.transforms.get(db.transform) if db.transform else None
            assert repr(ta) == repr(tb)
        for field in ("mins", "maxs", "vertices", "mean", "covariance", "operands"):
            if hasattr(gate, field):
                assert getattr(twin, field) == getattr(gate, field), (gid, field)
    assert yaml.safe_load(out.read_text())["format"] == "immunoprofile-strategy/1"


# ----------------------------------------------------------------------------------------------
# Fuzzing: only a Strategy or an InputError, never another exception.
def _outcome(path: Path) -> str:
    try:
        result = read_yaml_strategy(path)
    except InputError as exc:
        assert "\n" not in str(exc)
        return "error"
    assert isinstance(result, Strategy)
    validate_strategy(result)
    return "ok"


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_mutated_real_files(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
                                 ) -> None:
    base = doc_example().encode()
    kind = data.draw(st.sampled_from(["truncate", "delete", "insert", "replace", "random"]))
    if kind == "truncate":
        blob = base[: data.draw(st.integers(0, len(base)))]
    elif kind == "delete":
        i = data.draw(st.integers(0, len(base) - 1))
        blob = base[:i] + base[i + data.draw(st.integers(1, 40)):]
    elif kind == "insert":
        i = data.draw(st.integers(0, len(base)))
        blob = base[:i] + data.draw(st.binary(min_size=1, max_size=20)) + base[i:]
    elif kind == "replace":
        # swap one scalar token for a hostile value
        tokens = list(re.finditer(rb"[A-Za-z0-9_.+-]+", base))
        tok = tokens[data.draw(st.integers(0, len(tokens) - 1))]
        new = data.draw(st.sampled_from([b"null", b"[]", b"{}", b"-1e999", b".nan", b"true",
                                         b"!!binary aGk=", b"*x", b"&a x", b"'", b"0", b"1e308",
                                         b"[[0,0]]", b"not ", b"~", b"\"\"", b"- a"]))
        blob = base[:tok.start()] + new + base[tok.end():]
    else:
        blob = data.draw(st.binary(max_size=300))
    path = tmp_path_factory.mktemp("fuzz") / "s.yaml"
    path.write_bytes(blob)
    _outcome(path)


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                     st.sampled_from(["+", "-", "and", "not Cells", "/Cells", "polygon",
                                      "quadrant", "boolean", "range", "FSC-A", "none"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(
        ["name", "type", "x", "y", "children", "vertices", "min", "max", "bounds", "of", "op",
         "quadrants", "at", "mean", "covariance", "parent", "position", "T", "W", "M"]),
        inner, max_size=4)), max_leaves=12)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_structural_mutations(tmp_path_factory: pytest.TempPathFactory,
                                   data: st.DataObject) -> None:
    doc = yaml.safe_load(doc_example())
    # walk to a random node of the real document and replace it with a random value
    node: Any = doc
    for depth in range(8):
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        if not items:
            if isinstance(node, dict):
                node["name"] = data.draw(_values)
            else:
                node.append(data.draw(_values))
            break
        key, child = items[data.draw(st.integers(0, len(items) - 1))]
        if not isinstance(child, (dict, list)) or depth == 7 or data.draw(st.booleans()):
            node[key] = data.draw(_values)
            break
        node = child
    path = tmp_path_factory.mktemp("fuzz") / "s.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    _outcome(path)


# ----------------------------------------------------------------------------------------------
# The example trial: its YAML and Gating-ML strategies are the same strategy.
def _counts_by_path(strategy: Strategy, fcs: object) -> dict[str, int]:
    from immunoprofile.flow.engine import evaluate

    result = evaluate(strategy, fcs)
    return {strategy.path_of(pid): int(n) for pid, n in result.counts.items()}


def test_example_trial_yaml_equals_its_gatingml(example_dir: Path, tmp_path: Path) -> None:
    from immunoprofile.flow.fcs import read_fcs
    from immunoprofile.flow.gatingml import read_gatingml

    from_yaml = read_yaml_strategy(example_dir / "strategy.yaml")
    from_gml = read_gatingml(example_dir / "strategy.gatingml.xml")
    assert set(from_yaml.paths().values()) == set(from_gml.paths().values())
    fcs = read_fcs(sorted((example_dir / "flow").glob("*.fcs"))[0])
    counts = _counts_by_path(from_yaml, fcs)
    assert counts == _counts_by_path(from_gml, fcs)
    assert counts["/Cells/Singlets/Live/CD3+/CD4+CD8-/Memory"] > 0
    # Gating-ML -> YAML (writer) -> Strategy gates the file identically
    write_yaml_strategy(from_gml, tmp_path / "converted.yaml")
    assert _counts_by_path(read_yaml_strategy(tmp_path / "converted.yaml"), fcs) == counts


def test_every_transform_type_reads_and_writes(tmp_path: Path) -> None:
    from immunoprofile.flow import transforms as tr

    text = """\
transforms:
  a: {type: linear, T: 1000, A: 10}
  b: {type: log, T: 100000, M: 5}
  c: {type: asinh, T: 262144, M: 4.5, A: 0.5}
  d: {type: hyperlog, T: 262144, W: 0.5, M: 4.5, A: 0}
  e: {type: logicle, T: 262144, W: 0.5, M: 4.5}
  f: {type: biex, negative: 0, width: -10, positive: 4.418540, max_value: 262144}
  g: none
gates:
  - name: R
    type: rectangle
    bounds: {a: [0, 1], b: [0, 1], c: [0, 1], d: [0, 1], e: [0, 1], f: [0, 1], g: [0, 10]}
"""
    s = read_yaml_strategy(write(tmp_path, text))
    dims = {d.channel: d for d in s.gates["R"].dimensions}
    expected = {"a": tr.LinearTransform, "b": tr.LogTransform, "c": tr.AsinhTransform,
                "d": tr.HyperlogTransform, "e": tr.LogicleTransform, "f": tr.FlowJoBiexTransform}
    for chan, cls in expected.items():
        assert type(s.transforms[dims[chan].transform]) is cls
    assert dims["g"].transform is None
    assert s.transforms[dims["c"].transform].A == 0.5
    write_yaml_strategy(s, tmp_path / "out.yaml")
    again = read_yaml_strategy(tmp_path / "out.yaml")
    for chan in expected:
        d = next(x for x in again.gates["R"].dimensions if x.channel == chan)
        assert repr(again.transforms[d.transform]) == repr(s.transforms[dims[chan].transform])


def test_boolean_cycle_and_self_reference(tmp_path: Path) -> None:
    cycle = ("  - {name: A, type: boolean, op: or, of: [B, Cells]}\n"
             "  - {name: B, type: boolean, op: or, of: [A, Cells]}\n")
    with pytest.raises(InputError, match=r"gates: gate 'A' depends on itself"):
        read_yaml_strategy(mini_with(tmp_path, cycle))
    with pytest.raises(InputError, match=r"/A: boolean gate refers to itself"):
        read_yaml_strategy(mini_with(tmp_path, "  - {name: A, type: boolean, op: or, "
                                               "of: [A, Cells]}\n"))
