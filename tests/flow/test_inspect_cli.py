"""Tests of ``immunoprofile inspect`` through click's CliRunner and a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from immunoprofile.cli import cli

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _exe() -> list[str]:
    exe = Path(sys.executable).parent / "immunoprofile"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "immunoprofile.cli"]


def test_inspect_plain(reference_dir: Path) -> None:
    path = reference_dir / "flow" / "fcs_edge_cases" / "flowkit" / "test_comp_example.fcs"
    res = CliRunner().invoke(cli, ["inspect", str(path)])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "FCS3.0" in out and "events: 10703" in out and "channels: 18" in out
    assert "PacBlu-A" in out and "CD4" in out  # channel and its marker
    assert "spillover: SPILL, 14 channels" in out
    assert "$CYT" in out and "LSRII" in out and "$DATE" in out
    assert "warning: HEADER $ENDDATA 773934 is one byte past the data end" in out


def test_inspect_json(reference_dir: Path) -> None:
    path = reference_dir / "flow" / "fcs_edge_cases" / "flowkit" / "multi_dataset_fcs" / "coulter.lmd"
    res = CliRunner().invoke(cli, ["inspect", str(path), "--json", "--dataset", "1"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["n_datasets"] == 2 and data["dataset"] == 1
    assert data["n_events"] == 18110 and data["n_channels"] == 8
    assert [c["name"] for c in data["channels"]][:2] == ["FS", "SS"]
    assert data["spillover"] is None
    first = json.loads(CliRunner().invoke(cli, ["inspect", str(path), "--json"]).output)
    assert first["version"] == "FCS2.0" and first["keywords"]["$CYT"] == "Cytomics FC 500"
    assert any("off-by-one" in w for w in first["warnings"])


def test_inspect_rich_on_terminal(reference_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("TTY_INTERACTIVE", "1")
    path = reference_dir / "flow" / "gatingml2" / "data1.fcs"
    res = CliRunner().invoke(cli, ["inspect", str(path)])
    assert res.exit_code == 0, res.output
    assert "13,367 events" in res.output  # the rich layout, not the plain one
    assert "FL1-H" in res.output and "CD4 FITC" in res.output and "3.67" in res.output


def test_inspect_unreadable_file_cli_runner(tmp_path: Path) -> None:
    bad = tmp_path / "broken.fcs"
    bad.write_bytes(b"FCS3.1    " + b"      58    9999       0       0       0       0" + b"/$PAR/")
    res = CliRunner().invoke(cli, ["inspect", str(bad)])
    assert res.exit_code == 2
    assert "outside the file" in res.output


def test_inspect_subprocess_broken_file(tmp_path: Path, reference_dir: Path) -> None:
    raw = (reference_dir / "flow" / "gatingml2" / "data1.fcs").read_bytes()
    bad = tmp_path / "broken.fcs"
    bad.write_bytes(raw[:-5000])  # a truncated transfer
    proc = subprocess.run(_exe() + ["inspect", str(bad)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(bad) in lines[0] and "data segment truncated" in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
