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
                 "cytokines/cytokines.h5ad", "study/study.h5ad", "compare/comparisons.csv",
                 "compare/analysis_plan.json", "compare/provenance.json", "report.html",
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
    # two plates of curves, two trajectory grids and the forest plot, and one acquisition-
    # over-time figure per file that lost events to time QC (the simulated clogs and drift)
    anomalous = pd.read_csv(EXAMPLE_DIR / "truth" / "time_anomalies.csv")["sample_id"].nunique()
    assert facts["summaryRows"] >= n_flow + 2
    assert facts["images"] == n_flow + 2 + 3 + anomalous
    assert shot.stat().st_size > 20_000


def test_run_computes_compensation_and_removes_bad_stretches(example_run):
    """Issue 12 in the demo: the matrix comes from the simulated controls (close to the true
    spillover) and time QC removes the clogs (their files flagged nowhere else)."""
    import numpy as np

    from immunoprofile.flow.compensation import read_compensation_csv
    from immunoprofile.simulate.flow import SPILLOVER_MATRIX

    matrix = read_compensation_csv(example_run / "flow" / "compensation" / "example" /
                                   "spillover.csv")
    assert np.abs(matrix.matrix - SPILLOVER_MATRIX).max() <= 0.005
    populations = pd.read_csv(example_run / "flow" / "populations.csv")
    root = populations[populations["population"] == "TimeQC"].set_index("sample_id")
    assert len(root) == populations["sample_id"].nunique()
    truth = pd.read_csv(EXAMPLE_DIR / "truth" / "time_anomalies.csv")
    burst = truth[truth.kind == "clog_burst"].set_index("sample_id")["n_events"]
    for sid, n in burst.items():
        assert root.loc[sid, "pct_removed_time_qc"] >= 100 * 0.95 * n / (6000 + n)
    clean = root.drop(index=list(truth["sample_id"].unique()))
    assert (clean["pct_removed_time_qc"] == 0).all()
    html = (example_run / "report.html").read_text()
    assert 'id="time-qc"' in html and "AD02_week4_flow" in html
