"""Hostile structure in FlowJo workspaces (issue 7): deep nesting is refused, never a
RecursionError; the byte-level fuzzing of the reader lives in tests/flow/test_flowjo.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from _fuzzkit import REFERENCE_DIR

from immunoprofile.errors import InputError
from immunoprofile.flow.engine import evaluate
from immunoprofile.flow.fcs import read_fcs
from immunoprofile.flow.flowjo import read_flowjo_workspace
from immunoprofile.flow.strategy import load_strategy

SIMPLE = REFERENCE_DIR / "flow" / "flowjo_wsp" / "simple_line_example"


def _nested(tmp_path: Path, depth: int) -> Path:
    """The reference workspace with its sample's ``poly1`` nested ``depth`` levels deep."""
    lines = (SIMPLE / "simple_poly_and_rect.wsp").read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines)
                 if 'Population name="poly1"' in line and 'count="-1"' in line)
    end = next(i for i in range(start, len(lines)) if "</Population>" in lines[i])
    head = "".join(lines[start:end])
    deep = ("".join(head.replace('name="poly1"', f'name="p{k}"') + "<Subpopulations>"
                    for k in range(depth)) + "</Subpopulations></Population>" * depth)
    path = tmp_path / f"deep{depth}.wsp"
    path.write_text("".join(lines[:start]) + deep + "".join(lines[end + 1:]))
    return path


@pytest.mark.skipif(not SIMPLE.is_dir(), reason="reference data not present")
def test_deep_but_sane_nesting_gates(tmp_path: Path) -> None:
    ws = read_flowjo_workspace(_nested(tmp_path, 60))
    strategy = ws.strategy(sample=next(iter(ws.samples)))
    result = evaluate(strategy, read_fcs(SIMPLE / "data_set_simple_line_100.fcs"))
    counts = [result.counts[pid] for pid in strategy.gates if pid != "rect1"]
    assert len(counts) >= 60
    # the same polygon nested in itself: every level keeps exactly the events of the first
    assert len(set(counts[:60])) == 1


@pytest.mark.skipif(not SIMPLE.is_dir(), reason="reference data not present")
@pytest.mark.parametrize("depth", [150, 3000])
def test_absurd_nesting_is_an_input_error(tmp_path: Path, depth: int) -> None:
    path = _nested(tmp_path, depth)
    for read in (read_flowjo_workspace, load_strategy):
        with pytest.raises(InputError, match="nested deeper") as info:
            ws = read(path)
            if hasattr(ws, "strategy"):
                ws.strategy(sample=next(iter(ws.samples)))
        assert path.name in str(info.value) and "\n" not in str(info.value)
