"""The vendor's answer beside ours, and the QC a lab is audited on (kit controls, standard
recovery and CV per level, plate acceptance), against the vendors' own printed numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from immunoprofile.cytokine.quantify import (PLATE_QC_COLUMNS, VENDOR_COMPARISON_COLUMNS,
                                             QuantifyOptions, quantify_plate, quantify_plates,
                                             write_cytokine_outputs)
from immunoprofile.cytokine.readers import read_plate
from immunoprofile.cytokine.readers.standards import read_standards

AUTO = QuantifyOptions(model="auto", weights="auto", replicate_means=None)


@pytest.fixture(scope="module")
def drlumi(reference_dir: Path):
    path = reference_dir / "cytokine" / "xponent" / \
        "drLumi_plate1_LX200_xPONENT3.1_analysisON_5PL.csv"
    return quantify_plate(read_plate(path), options=AUTO)


@pytest.fixture(scope="module")
def oracles(reference_dir: Path) -> Path:
    return reference_dir / "cytokine" / "oracles"


def test_xponent_vendor_comparison(drlumi) -> None:
    comp = drlumi.vendor_comparison
    assert list(comp.columns) == list(VENDOR_COMPARISON_COLUMNS)
    numeric = comp[comp.relative_difference.notna()]
    assert len(numeric) == 2580  # every numeric xPONENT Result; "<"/">" limits not compared
    assert numeric.relative_difference.abs().max() <= 1e-5
    assert not comp.loc[comp.vendor_flag.isin(["<", ">"]), "relative_difference"].notna().any()
    curves = drlumi.curves
    assert (curves.vendor_median_rel_diff <= 1e-5).all() and (curves.vendor_within_1pct == 1).all()
    assert not any("vendor's own results" in w for w in drlumi.warnings)


def test_xponent_standard_levels_match_printed_recovery(drlumi, oracles: Path) -> None:
    long = pd.read_csv(oracles / "xponent_drlumi_plate1_long.csv")
    std = long[long["sample"].str.startswith("Standard") & long.pct_recovery_reported.notna()]
    printed = std.groupby(["analyte", "expected_conc"]).pct_recovery_reported.mean()
    levels = drlumi.standard_levels.set_index(["analyte", "expected_conc"])
    both = levels.join(printed.rename("printed"), how="inner")
    assert len(both) >= 200
    # xPONENT's per-well % Recovery is printed to 2 decimals
    np.testing.assert_allclose(both.recovery, both.printed, atol=0.006)
    summaries = pd.read_csv(oracles / "xponent_drlumi_plate1_replicate_summaries.csv")
    cv = summaries[summaries["sample"] == "Standard1"].set_index("analyte").pct_cv_replicates
    top = levels.reset_index().query("standard == 'Standard1'").set_index("analyte").cv
    ours = top.loc[cv.index]
    single = ours.isna() & (cv == 0)  # one numeric replicate: xPONENT prints 0, we say n/a
    assert single.sum() <= 3
    np.testing.assert_allclose(ours[~single], cv[~single], rtol=1e-5, atol=1e-4)
    # the auditor's line in the curves table
    assert drlumi.curves.standard_levels.str.contains("Standard1 ").all()


def test_xponent_kit_controls_against_printed_recovery(drlumi, oracles: Path) -> None:
    """drLumi's Control Range is low = high = expected (no range set in xPONENT): each control is
    held to 80-120 % of its expected concentration; checked against xPONENT's % Recovery."""
    long = pd.read_csv(oracles / "xponent_drlumi_plate1_long.csv")
    ctl = long[long["sample"].str.startswith("Control")]
    # xPONENT's own % Recovery per control well; the replicate mean is the control's recovery,
    # and a replicate without one ("<"/">" result) cannot be verified: out
    recovery = ctl.groupby(["sample", "analyte"]).pct_recovery_reported.agg(
        lambda r: r.mean() if r.notna().all() else np.nan)
    want_out = ~recovery.between(80, 120)
    conc = drlumi.concentrations
    got = conc[conc.sample_type == "control"].groupby(["sample_id", "analyte"]).flag.apply(
        lambda f: f.str.contains("control_out_of_range").any())
    got.index.names = ["sample", "analyte"]
    assert len(got) == 90 and int(drlumi.curves.controls_checked.sum()) == 90
    pd.testing.assert_series_equal(got.sort_index(), want_out.loc[got.index].sort_index(),
                                   check_names=False)
    assert want_out.sum() == drlumi.curves.controls_out_of_range.sum() > 0
    qc = drlumi.plate_qc
    assert list(qc.columns) == list(PLATE_QC_COLUMNS)
    assert not qc.accepted.iat[0] and "out of range" in qc.reasons.iat[0]
    assert (drlumi.summary.plate_accepted == False).all()  # noqa: E712


def test_example_trial_kit_controls(example_dir: Path, tmp_path: Path) -> None:
    standards = read_standards(example_dir / "standards.csv")
    plates = [read_plate(p, standards=standards)
              for p in sorted((example_dir / "plates").glob("*.csv"))]
    results = quantify_plates(plates, AUTO)
    for r in results:
        assert r.curves.controls_checked.sum() == 20  # Control1/2 x 10 analytes, kit ranges
        conc = r.concentrations[r.concentrations.sample_type == "control"]
        ranges = standards.set_index(["standard", "analyte"])
        means = conc.groupby(["sample_id", "analyte"]).concentration.mean()
        lo = ranges.loc[means.index, "control_low"].to_numpy()
        hi = ranges.loc[means.index, "control_high"].to_numpy()
        inside = (means.to_numpy() >= lo) & (means.to_numpy() <= hi)
        flagged = conc.groupby(["sample_id", "analyte"]).flag.apply(
            lambda f: f.str.contains("control_out_of_range").any())
        np.testing.assert_array_equal(flagged.loc[means.index].to_numpy(), ~inside)
    # a kit sheet with a range the control misses: flagged, plate rejected
    narrow = standards.copy()
    sel = (narrow.standard == "Control1") & (narrow.analyte == "IL-6")
    narrow.loc[sel, ["control_low", "control_high"]] = [1e6, 2e6]
    plate = read_plate(sorted((example_dir / "plates").glob("*.csv"))[0], standards=narrow)
    r = quantify_plate(plate, options=AUTO)
    bad = r.concentrations[(r.concentrations.sample_id == "Control1")
                           & (r.concentrations.analyte == "IL-6")]
    assert bad.flag.str.contains("control_out_of_range").all()
    assert not r.plate_qc.accepted.iat[0] and "IL-6" in r.plate_qc.reasons.iat[0]
    paths = write_cytokine_outputs(tmp_path / "out", [r], [], options=AUTO)
    assert "vendor_comparison" not in paths  # a simulated export carries no vendor results
    assert pd.read_csv(paths["plate_qc"]).accepted.tolist() == [False]
    assert pd.read_csv(paths["summary"]).plate_accepted.eq(False).all()


def test_bioplex_vendor_comparison_and_warning(reference_dir: Path, tmp_path: Path) -> None:
    bdir = reference_dir / "cytokine" / "bioplex"
    linco = quantify_plate(read_plate(bdir / "labkey_pnLINCO20070302A.xls"), options=AUTO)
    # auto = Bio-Plex's default: power-law variance, the printed regression (4PL here)
    assert (linco.curves.model == "4pl").all() and (linco.curves.weights == "power(1.8)").all()
    comp = linco.vendor_comparison
    rel = comp.loc[(comp.sample_type != "standard") & (comp.vendor_flag == "ok"),
                   "relative_difference"].abs()
    assert rel.notna().sum() > 500 and rel.median() <= 1e-3
    five = quantify_plate(read_plate(bdir / "labkey_10JAN07_plate_1.xls"), options=AUTO)
    warning = [w for w in five.warnings if "vendor's own results" in w]
    assert len(warning) == 1
    for setting in ("model (ours 5PL", "weights (ours power(1.8))", "replicate means",
                    "background handling"):
        assert setting in warning[0]
    far = five.curves[five.curves.vendor_median_rel_diff > 0.01]
    assert len(far) and all(a in warning[0] for a in far.analyte[:6])
    paths = write_cytokine_outputs(tmp_path / "o", [linco, five], [], options=AUTO)
    table = pd.read_csv(paths["vendor_comparison"])
    assert list(table.columns) == list(VENDOR_COMPARISON_COLUMNS)
    assert len(table) == len(comp) + len(five.vendor_comparison)
    summary = pd.read_csv(paths["summary"])
    assert summary.vendor_concentration.notna().any()
    assert summary.vendor_median_rel_diff.notna().any()
