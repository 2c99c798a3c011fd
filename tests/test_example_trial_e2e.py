"""The main job end to end: `immunoprofile run` on the bundled example trial, in a subprocess,
then its report opened in headless Chromium (issue 6's browser test on the real trial)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from _browser import open_in_chromium

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_DIR = PROJECT_ROOT / "example_data"

#: A report a collaborator can e-mail: stated in the README and checked here.
MAX_REPORT_BYTES = 8_000_000


@pytest.fixture(scope="module")
def example_run(tmp_path_factory) -> Path:
    """Run the example trial config once (outputs redirected to a temporary folder)."""
    out = tmp_path_factory.mktemp("example_run")
    text = (PROJECT_ROOT / "pipelines" / "example_trial.yaml").read_text()
    text = text.replace("../example_data", str(EXAMPLE_DIR)).replace("../demo_output", str(out))
    config = out / "example_trial.yaml"
    config.write_text(text)
    done = subprocess.run([sys.executable, "-m", "immunoprofile.cli", "run", str(config), "-q"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_run_writes_every_stage(example_run):
    for name in ("flow/populations.csv", "flow/flow.h5ad", "flow/provenance.json",
                 "cytokines/concentrations.csv", "cytokines/standard_curves.csv",
                 "cytokines/cytokines.h5ad", "study.h5ad", "comparisons.csv", "report.html",
                 "run.log", "flow_qc_mqc.tsv", "cytokine_qc_mqc.tsv"):
        assert (example_run / name).is_file(), name
    populations = pd.read_csv(example_run / "flow" / "populations.csv")
    manifest = pd.read_csv(EXAMPLE_DIR / "manifest.csv")
    assert populations["sample_id"].nunique() == (manifest["assay"] == "flow").sum()
    provenance = json.loads((example_run / "flow" / "provenance.json").read_text())
    assert all(len(i["sha256"]) == 64 for i in provenance["inputs"])
    # no temporary files left behind by the atomic writers
    assert not [p for p in example_run.rglob("*.tmp")]


@pytest.mark.browser
def test_example_report_in_chromium(example_run, tmp_path):
    report = example_run / "report.html"
    size = report.stat().st_size
    assert size < MAX_REPORT_BYTES, f"report is {size / 1e6:.1f} MB"
    shot = tmp_path / "example_report.png"
    images_ok, console_errors, page_errors, facts = open_in_chromium(report, shot)
    assert images_ok, "an image did not load"
    assert console_errors == [] and page_errors == []
    assert facts["firstHeading"] == "Summary"
    manifest = pd.read_csv(EXAMPLE_DIR / "manifest.csv")
    n_flow = int((manifest["assay"] == "flow").sum())
    # per-sample QC rows + per-plate rows in the summary; one gating figure per sample,
    # two plates of curves, two trajectory grids and the forest plot
    assert facts["summaryRows"] >= n_flow + 2
    assert facts["images"] == n_flow + 2 + 3
    assert shot.stat().st_size > 20_000
