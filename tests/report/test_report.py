"""The HTML report from a run directory: summary first, plots embedded, numbers beside."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from immunoprofile.errors import InputError
from immunoprofile.report import build_report
from immunoprofile.report.qc import plate_qc, robust_outliers


def test_report_is_self_contained_with_summary_first(synthetic_run):
    summary = build_report(synthetic_run, gating=False)
    page = summary.path.read_text()
    assert summary.path == synthetic_run / "report.html"
    # Summary comes before every detail section.
    assert page.index('id="summary"') < page.index('id="curves"') < page.index('id="results"')
    # No network access needed: no external src/href other than data URIs and anchors.
    external = re.findall(r'(?:src|href)="(?!data:|#)([^"]+)"', page)
    assert external == []
    images = re.findall(r'<img [^>]*src="data:image/png;base64,', page)
    assert len(images) == 4  # curves P1, two trajectory grids, forest plot
    assert "bad.fcs: data segment truncated" in page
    assert (synthetic_run / "plots" / "curves_P1.png").stat().st_size > 1000
    assert (synthetic_run / "plots" / "forest.tsv").is_file()
    mqc = pd.read_csv(synthetic_run / "flow_qc_mqc.tsv", sep="\t")
    assert list(mqc["sample_id"]) == [f"S{i:02d}" for i in range(10)]
    assert mqc.set_index("sample_id").at["S09", "flag"] == "outlier"
    assert (synthetic_run / "cytokine_qc_mqc.tsv").is_file()


def test_outlier_is_found_by_robust_z(synthetic_run):
    pops = pd.read_csv(synthetic_run / "flow" / "populations.csv")
    out = robust_outliers(pops)
    assert set(out["sample_id"]) == {"S09"}
    assert "/Cells/Singlets/Live" in set(out["population"])


def test_plate_qc_counts_flags(synthetic_run):
    curves = pd.read_csv(synthetic_run / "cytokines" / "standard_curves.csv")
    conc = pd.read_csv(synthetic_run / "cytokines" / "concentrations.csv")
    row = plate_qc(curves, conc).iloc[0]
    assert row["analytes"] == 2 and row["standards dropped"] == 1 and row["failed fits"] == 0
    assert row["low-bead wells"] == 1  # well B2 on both analytes
    assert row["% out of range"] == pytest.approx(100 * 2 / 12, abs=0.05)


def test_empty_run_dir_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no immunoprofile outputs"):
        build_report(tmp_path)


def test_labels_read_as_people_speak_and_samples_sort_in_protocol_order():
    import numpy as np
    import pandas as pd

    from immunoprofile.report.build import _natural, _protocol_order, feature_labels

    var = pd.DataFrame({
        "feature_type": ["frequency", "frequency", "count", "mfi", "concentration"],
        "population": ["/Cells/CD3+/CD4+CD8-/Th2", "/Cells", "/Cells/CD3+", "/Cells/CD3+", ""],
        "parent": ["/Cells/CD3+/CD4+CD8-", "nan", "/Cells", "/Cells", ""],
        "statistic": ["pct_parent", "pct_parent", "count", "median", "concentration"],
        "marker": ["", "", "", "CD4", ""], "analyte": ["", "", "", "", "IL-13"],
        "unit": ["%", "%", "events", "MFI", "pg/mL"]},
        index=["/Cells/CD3+/CD4+CD8-/Th2|pct_parent", "/Cells|pct_parent", "/Cells/CD3+|count",
               "/Cells/CD3+|mfi_CD4", "IL-13|pg/mL"])
    assert list(feature_labels(var).values()) == [
        "Th2 % of CD4+CD8-", "Cells % of all events", "CD3+ count", "CD3+ MFI CD4",
        "IL-13 (pg/mL)"]
    ids = ["AD01_week12", "AD01_week2", "AD10_week0", "AD02_week0", "AD01_screening"]
    assert sorted(ids, key=_natural) == ["AD01_screening", "AD01_week2", "AD01_week12",
                                         "AD02_week0", "AD10_week0"]

    class Study:  # the study's obs gives the protocol: screening (day -14) comes first
        obs = pd.DataFrame({"flow_sample_id": ids, "subject_id": ["AD01", "AD01", "AD10",
                                                                  "AD02", "AD01"],
                            "study_day": [84, 14, 0, 0, -14]})

    key = _protocol_order(Study())
    assert sorted(ids + ["unknown"], key=key) == ["AD01_screening", "AD01_week2", "AD01_week12",
                                                  "AD02_week0", "AD10_week0", "unknown"]
    assert not np.isnan(key("AD01_week2")[2])


def test_stage_folders_are_read_where_the_layout_puts_them(synthetic_run, tmp_path):
    """No search by file name: a comparisons table elsewhere is not found unless named
    (``--compare DIR``); a named folder without its file is an error naming the path."""
    from click.testing import CliRunner

    from immunoprofile.cli import cli

    moved = tmp_path / "elsewhere" / "deep"
    moved.parent.mkdir()
    (synthetic_run / "compare").rename(moved)
    res = CliRunner().invoke(cli, ["report", str(synthetic_run), "--no-gating", "-q"])
    assert res.exit_code == 0, res.output
    assert not (synthetic_run / "plots" / "forest.png").exists()
    res = CliRunner().invoke(cli, ["report", str(synthetic_run), "--compare", str(moved),
                                   "--no-gating", "-q"])
    assert res.exit_code == 0, res.output
    assert (synthetic_run / "plots" / "forest.png").is_file()
    res = CliRunner().invoke(cli, ["report", str(synthetic_run), "--compare",
                                   str(tmp_path / "elsewhere"), "-q"])
    assert res.exit_code == 2
    assert str(tmp_path / "elsewhere" / "comparisons.csv") in res.output


def test_missing_run_folder_names_every_expected_path(tmp_path):
    with pytest.raises(InputError) as err:
        build_report(tmp_path)
    for rel in ("flow/populations.csv", "cytokines/concentrations.csv", "study/study.h5ad",
                "compare/comparisons.csv"):
        assert rel in str(err.value)


def test_stage_outputs_written_into_the_run_folder_itself_still_read(synthetic_run):
    """What users did before stage folders (``compare study.h5ad --out RUN``, runs with
    study.h5ad at the root): a stage's main file directly in RUN marks RUN as its folder."""
    (synthetic_run / "compare" / "comparisons.csv").rename(synthetic_run / "comparisons.csv")
    (synthetic_run / "study" / "study.h5ad").rename(synthetic_run / "study.h5ad")
    summary = build_report(synthetic_run, gating=False)
    assert (synthetic_run / "plots" / "forest.png").is_file()
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', summary.path.read_text())) == 4
