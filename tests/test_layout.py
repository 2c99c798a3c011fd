"""The run-folder layout is one description (immunoprofile.layout) that the stages write through
and the report reads through: pinned here, so a renamed file is a deliberate change."""

from __future__ import annotations

from pathlib import Path

import pytest

from immunoprofile.layout import MAIN_FILES, RunLayout


def test_run_folder_layout_is_pinned(tmp_path: Path) -> None:
    run = RunLayout(tmp_path)
    rel = {name: str(path.relative_to(tmp_path)) for name, path in {
        "populations": run.flow.populations, "flow_h5ad": run.flow.h5ad,
        "time_qc": run.flow.time_qc, "compensation": run.flow.compensation,
        "flow_provenance": run.flow.provenance, "flow_failed": run.flow.failed,
        "concentrations": run.cytokines.concentrations, "curves": run.cytokines.standard_curves,
        "plate_qc": run.cytokines.plate_qc, "cytokines_h5ad": run.cytokines.h5ad,
        "study": run.study.h5ad, "unmatched": run.study.unmatched,
        "comparisons": run.compare.comparisons, "plan": run.compare.analysis_plan,
        "compare_provenance": run.compare.provenance, "report": run.report.html,
        "plots": run.report.plots, "failed": run.failed, "log": run.log}.items()}
    assert rel == {
        "populations": "flow/populations.csv", "flow_h5ad": "flow/flow.h5ad",
        "time_qc": "flow/time_qc.csv", "compensation": "flow/compensation",
        "flow_provenance": "flow/provenance.json", "flow_failed": "flow/failed.tsv",
        "concentrations": "cytokines/concentrations.csv",
        "curves": "cytokines/standard_curves.csv", "plate_qc": "cytokines/plate_qc.csv",
        "cytokines_h5ad": "cytokines/cytokines.h5ad", "study": "study/study.h5ad",
        "unmatched": "study/unmatched.tsv", "comparisons": "compare/comparisons.csv",
        "plan": "compare/analysis_plan.json", "compare_provenance": "compare/provenance.json",
        "report": "report.html", "plots": "plots", "failed": "failed.tsv", "log": "run.log"}
    assert {s: str(run.main_output(s).relative_to(tmp_path)) for s in MAIN_FILES} == {
        "flow": "flow/populations.csv", "cytokines": "cytokines/concentrations.csv",
        "study": "study/study.h5ad", "compare": "compare/comparisons.csv"}


def test_a_stage_output_folder_is_its_own_stage_folder(tmp_path: Path) -> None:
    """``immunoprofile report DIR`` on what ``immunoprofile gate --out DIR`` wrote; a stage
    folder given explicitly wins; anything else is ``DIR/<stage>``, never searched for."""
    (tmp_path / "populations.csv").write_text("sample_id\n")
    (tmp_path / "deep" / "compare").mkdir(parents=True)
    (tmp_path / "deep" / "compare" / "comparisons.csv").write_text("feature\n")
    layout = RunLayout.of_folder(tmp_path, study_dir=tmp_path / "elsewhere")
    assert layout.flow.dir == tmp_path
    assert layout.cytokines.dir == tmp_path / "cytokines"
    assert layout.study.h5ad == tmp_path / "elsewhere" / "study.h5ad"
    assert layout.compare.dir == tmp_path / "compare"  # not deep/compare
    with pytest.raises(TypeError, match="plots_dir"):
        RunLayout.of_folder(tmp_path, plots_dir=tmp_path)
