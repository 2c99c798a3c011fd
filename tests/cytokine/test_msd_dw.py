"""A real MSD Discovery Workbench "Experiment Data Table" (3 plates x 384 wells, 4 spots) against
Discovery Workbench's own Calc. Concentration (read here independently with pandas)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from immunoprofile.cli import cli
from immunoprofile.cytokine.quantify import QuantifyOptions, quantify_plate, resolve_options
from immunoprofile.cytokine.readers import detect_format, read_plate
from immunoprofile.cytokine.readers.msd import classify_msd_sample

NAME = "labkey_MSD_DW_3plate_SARS2_serology.csv"
BARCODES = ["1LK05A1071", "1LK05AB112", "1LK05AG072"]


@pytest.fixture(scope="module")
def dw_path(reference_dir: Path) -> Path:
    return reference_dir / "cytokine" / "msd" / NAME


@pytest.fixture(scope="module")
def dw_table(dw_path: Path) -> pd.DataFrame:
    """The export as DW wrote it (independent of our reader)."""
    df = pd.read_csv(dw_path, skiprows=1)
    df["plate"] = df["Plate Name"].str.removeprefix("Plate_")
    df["well"] = df["Well"].str[0] + df["Well"].str[1:].astype(int).astype(str)
    return df


@pytest.fixture(scope="module")
def dw_plate(dw_path: Path):
    return read_plate(dw_path)


def test_reads_all_three_plates(dw_path: Path, dw_plate, dw_table: pd.DataFrame) -> None:
    assert detect_format(dw_path) == "msd_workbench"
    assert dw_plate.plates == BARCODES
    assert len(dw_plate.wells) == len(dw_table) == 4536
    for barcode in BARCODES:  # 384-well plates: rows A-P, columns 1-24
        wells = set(dw_plate.wells.loc[dw_plate.wells.plate == barcode, "well"])
        assert len(wells) == 384 and {"P24", "A1", "I1"} <= wells
    assert dw_plate.metadata["spots"] == {"SARS-COV2 S-2P": "1", "SARS-COV2 N-protein": "2",
                                          "SARS-COV2 RBD": "3", "BSA": "4"}
    m = dw_table.merge(dw_plate.wells, left_on=["plate", "well", "Assay"],
                       right_on=["plate", "well", "analyte"], validate="one_to_one")
    np.testing.assert_array_equal(m["median_mfi"], m["Signal"].astype(float))
    np.testing.assert_array_equal(m["expected_conc"].fillna(-1), m["Concentration"].fillna(-1))
    np.testing.assert_array_equal(m["dilution"], m["Dilution"].fillna(1.0))
    kinds = m.groupby("Sample")["sample_type"].unique().map(list).to_dict()
    assert all(kinds[f"CAL{i}"] == ["standard"] for i in range(1, 9))
    assert kinds["Blank (Diluent)"] == ["background"]
    # kit controls: known concentration (MSD 1.x) or a control name (VIP 4plex Cont n)
    assert kinds["MSD 1.2"] == ["control"] and kinds["VIP 4plex Cont 3"] == ["control"]
    assert kinds["Sample 7"] == ["unknown"]
    assert len(dw_plate.vendor) == 4536


@pytest.mark.parametrize("name,kind", [
    ("CAL1", "standard"), ("Calibrator 1", "standard"), ("S001", "standard"),
    ("Standard 3", "standard"), ("Blank (Diluent)", "background"), ("C001", "control"),
    ("Control 2", "control"), ("U001", "unknown"), ("Sample 1", "unknown"),
    ("S1 patient", "unknown")])
def test_calibrator_naming(name: str, kind: str) -> None:
    assert classify_msd_sample(name) == kind


def test_discovery_workbench_defaults(dw_plate) -> None:
    opts = resolve_options(QuantifyOptions(model="auto", weights="auto", replicate_means=None),
                           dw_plate)
    assert (opts.model, opts.weights, opts.replicate_means) == ("4pl", "1/y2", True)
    # explicit choices are kept
    opts = resolve_options(QuantifyOptions(model="5pl", weights="auto", replicate_means=False),
                           dw_plate)
    assert (opts.model, opts.weights, opts.replicate_means) == ("5pl", "1/y2", False)


def _agreement(conc: pd.DataFrame, dw_table: pd.DataFrame) -> pd.DataFrame:
    m = dw_table.merge(conc, left_on=["plate", "well", "Assay"],
                       right_on=["plate", "well", "analyte"], validate="one_to_one")
    s = m[m["Sample"].str.fullmatch(r"Sample \d+") & m["Calc. Concentration"].notna()]
    rel = (s["concentration"] / s["Calc. Concentration"] - 1).abs()
    return pd.DataFrame({"assay": s["Assay"], "rel": rel}).groupby("assay")["rel"].agg(
        n="size", median="median", within_1pct=lambda r: float((r <= 0.01).mean()))


def test_cli_reproduces_dw_calc_concentration(dw_path: Path, dw_table: pd.DataFrame,
                                              tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["cytokines", str(dw_path), "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    conc = pd.read_csv(out / "concentrations.csv")
    stats = _agreement(conc, dw_table)
    assert stats.loc["SARS-COV2 S-2P", "n"] == 423
    assert stats.loc["SARS-COV2 RBD", "n"] == 765
    assert stats.loc["SARS-COV2 N-protein", "n"] == 841
    assert (stats["median"] <= 1e-3).all(), stats
    assert (stats["within_1pct"] >= 0.95).all(), stats
    assert stats.loc["SARS-COV2 S-2P", "median"] <= 1e-4  # identical optimum on S-2P
    curves = pd.read_csv(out / "standard_curves.csv")
    fitted = curves[curves.analyte != "BSA"]
    assert (fitted.model == "4pl").all() and (fitted.weights == "1/y2").all()
    assert fitted.replicate_means.all() and fitted.converged.all()
    assert (fitted.n_standards_used == 24).all()  # CAL1-8 in triplicate, CAL8 = 0 included
    # the BSA spot carries no calibrators: an honest failed fit, not a silent zero
    assert not curves.loc[curves.analyte == "BSA", "converged"].any()
    # DW's answer beside ours, and per plate QC in the report (BSA panel without a curve)
    comp = pd.read_csv(out / "vendor_comparison.csv")
    assert len(comp) == 4536 and set(comp.plate) == set(BARCODES)
    qc = pd.read_csv(out / "plate_qc.csv")
    assert qc.plate.tolist() == BARCODES and (qc.n_without_standards == 1).all()
    res = CliRunner().invoke(cli, ["report", str(out), "-q"])
    assert res.exit_code == 0, res.output
    page = (out / "report.html").read_text()
    assert "vendor Δ % (median)" in page and "accepted" in page and "1LK05AG072" in page


def test_each_well_fit_is_further_from_dw(dw_plate, dw_table: pd.DataFrame) -> None:
    """DW fits replicate means: fitting every calibrator well agrees much worse (a check that
    the replicate-mean choice is what reproduces DW, not any 4PL)."""
    each = quantify_plate(dw_plate, options=QuantifyOptions(model="4pl", weights="1/y2",
                                                            replicate_means=False))
    stats = _agreement(each.concentrations, dw_table)
    assert (stats["median"] > 3e-3).all()
    assert not math.isnan(stats["median"].max())
