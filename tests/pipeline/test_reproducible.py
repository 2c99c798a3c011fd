"""Same inputs, same outputs: byte-identical CSV/Parquet, identical h5ad arrays, any --jobs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np

from trialdata import make_trial

def _run(config: Path, *args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "immunoprofile.cli", "run", str(config), "-q",
                           *args], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr


def _outputs(out: Path) -> dict[str, bytes]:
    files = sorted(out.rglob("*.csv")) + sorted(out.rglob("*.parquet")) + sorted(
        out.rglob("*.tsv"))
    return {str(p.relative_to(out)): p.read_bytes() for p in files
            if ".cache" not in p.parts}


def test_two_runs_and_jobs_1_vs_2_are_identical(tmp_path: Path) -> None:
    config = make_trial(tmp_path / "a", membership=True)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    _run(config, "--jobs", "1")
    _run(tmp_path / "b" / "config.yaml", "--jobs", "2", "--executor", "process")
    out_a, out_b = tmp_path / "a" / "out", tmp_path / "b" / "out"
    first = _outputs(out_a)
    assert "flow/populations.csv" in first and "flow/membership/S01_week0.parquet" in first
    assert first == _outputs(out_b)
    ha, hb = (ad.read_h5ad(o / "flow" / "flow.h5ad") for o in (out_a, out_b))
    np.testing.assert_array_equal(ha.X, hb.X)
    assert ha.obs.drop(columns=[]).equals(hb.obs) and ha.var.equals(hb.var)

    # a forced re-run of the same folder gives the same bytes again
    _run(config, "--force")
    assert _outputs(out_a) == first
    prov = json.loads((out_a / "flow" / "provenance.json").read_text())
    assert {i["name"] for i in prov["inputs"]} >= {"strategy.yaml", "s01_week0.fcs"}
    assert prov["parameters"]["compensation"] == "fcs"
