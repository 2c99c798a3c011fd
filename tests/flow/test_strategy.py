"""load_strategy: dispatch by content to the Gating-ML, FlowJo and YAML readers."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from immunoprofile.errors import InputError
from immunoprofile.flow.gates import Strategy, validate_strategy
from immunoprofile.flow.strategy import detect_strategy_format, load_strategy

DOC = Path(__file__).resolve().parents[2] / "docs" / "strategy_yaml.md"


@pytest.fixture()
def yaml_file(tmp_path: Path) -> Path:
    text = re.search(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S).group(1)
    path = tmp_path / "strategy.txt"  # the extension does not matter, the content does
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_by_content(yaml_file: Path) -> None:
    assert detect_strategy_format(yaml_file) == "yaml"
    s = load_strategy(yaml_file)
    assert isinstance(s, Strategy) and s.format == "yaml"
    validate_strategy(s)


def test_gatingml_by_root_namespace(reference_dir: Path, tmp_path: Path) -> None:
    src = reference_dir / "flow" / "gatingml2" / "gml" / "gml_all_gates.xml"
    renamed = tmp_path / "whatever.yaml"  # misleading extension on purpose
    shutil.copy(src, renamed)
    assert detect_strategy_format(renamed) == "gatingml"
    s = load_strategy(renamed)
    assert s.format == "gatingml" and len(s.gates) > 20
    with pytest.raises(InputError, match=r"group/sample choose gates inside a FlowJo workspace; "
                                         r"this is a Gating-ML strategy"):
        load_strategy(src, group="All Samples")


def test_flowjo_by_root_element_with_group_and_sample(reference_dir: Path) -> None:
    wsp = reference_dir / "flow" / "flowjo_wsp" / "8_color_data_set" / "8_color_ICS.wsp"
    assert detect_strategy_format(wsp) == "flowjo"
    s = load_strategy(wsp)
    assert s.format == "flowjo" and s.meta["group"] == "All Samples" and len(s.gates) == 14
    assert len(load_strategy(wsp, group="Lyo Cells").gates) == 11
    one = load_strategy(wsp, sample="101_DEN084Y5_15_E05_010_clean.fcs")
    assert one.meta["sample"] == "101_DEN084Y5_15_E05_010_clean.fcs"
    with pytest.raises(InputError, match=r"no sample group 'nope' in the workspace; groups are"):
        load_strategy(wsp, group="nope")


def test_yaml_refuses_flowjo_options(yaml_file: Path) -> None:
    with pytest.raises(InputError, match=r"this is a YAML strategy"):
        load_strategy(yaml_file, sample="a.fcs")


@pytest.mark.parametrize("content, message", [
    (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
     r"XML root <svg> in namespace 'http://www.w3.org/2000/svg' is neither Gating-ML 2.0 nor a "
     r"FlowJo workspace"),
    (b'<Gating-ML xmlns="http://www.isac-net.org/std/Gating-ML/v1.5/gating"/>',
     r"only Gating-ML 2.0"),
    (b'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><Workspace>'
     b'&x;</Workspace>', r"refused unsafe XML"),
    (b"FCS3.1      \x00\x00binary", r"not a gating strategy \(binary content"),
    (b"<Workspace><unclosed></Workspace>", r"not well-formed XML"),
    (b"just some words\n", r"must be a YAML mapping"),
    (b"", r"must be a YAML mapping"),
])
def test_anything_else_is_an_input_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "s.xml"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        load_strategy(path)
    assert str(info.value).startswith(str(path))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"strategy file not found"):
        load_strategy(tmp_path / "absent.yaml")
