"""Bio-Plex Manager readers (.xls, .xlsx, XML) against the LabKey oracle tables."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from immunoprofile.cytokine.readers import detect_format, read_plate
from immunoprofile.cytokine.readers.bioplex import parse_curve_equation
from immunoprofile.errors import InputError

XLS_FILES = [
    "labkey_01-11A12-IgA-Biotin.xls", "labkey_02-14A22-IgA-Biotin.xls",
    "labkey_03-31A82-IgA-Biotin.xls", "labkey_04-17A32-IgA-Biotin.xls",
    "labkey_10JAN07_plate_1.xls", "labkey_plate_1_IgA-Biot__Standard2_.xls",
    "labkey_pnLINCO20070302A.xls",
]


@pytest.fixture(scope="module")
def bdir(reference_dir: Path) -> Path:
    return reference_dir / "cytokine" / "bioplex"


@pytest.fixture(scope="module")
def oracle_long(reference_dir: Path) -> pd.DataFrame:
    return pd.read_csv(reference_dir / "cytokine" / "oracles" / "bioplex_labkey_long.csv",
                       dtype={"FI": str, "FI - Bkgd": str, "Obs Conc": str})


@pytest.fixture(scope="module")
def oracle_curves(reference_dir: Path) -> pd.DataFrame:
    return pd.read_csv(reference_dir / "cytokine" / "oracles" / "bioplex_labkey_curves.csv")


def _num(series: pd.Series) -> np.ndarray:
    return pd.to_numeric(series, errors="coerce").to_numpy(float)


@pytest.mark.parametrize("name", XLS_FILES)
def test_xls_matches_oracle_rows(bdir: Path, oracle_long: pd.DataFrame, name: str) -> None:
    assert detect_format(bdir / name) == "bioplex_xls"
    plate = read_plate(bdir / name)
    want = oracle_long[oracle_long["file"] == name]
    assert len(plate.wells) == len(want)
    assert set(plate.analytes) == set(want["analyte"])
    m = want.merge(plate.wells, left_on=["analyte", "Well"], right_on=["analyte", "well"],
                   how="left", validate="one_to_one")
    assert m["well"].notna().all()
    np.testing.assert_array_equal(m["median_mfi"], _num(m["FI"]))
    np.testing.assert_array_equal(m["net_mfi"], _num(m["FI - Bkgd"]))
    np.testing.assert_array_equal(m["expected_conc"], _num(m["Exp Conc"]))
    np.testing.assert_array_equal(m["count"], _num(m["Bead Count"]))
    np.testing.assert_array_equal(m["dilution"], _num(m["Dilution"]))
    type_of = {"B": "background", "S": "standard", "C": "control", "X": "unknown"}
    assert (m["sample_type"] == m["Type"].str[0].map(type_of)).all()
    # the software's Obs Conc: printed numbers, '*'-extrapolated, OOR </>, ***/---
    v = want.merge(plate.vendor, left_on=["analyte", "Well"], right_on=["analyte", "well"])
    assert len(v) == len(want)
    raw = v["Obs Conc"].fillna("")
    plain = pd.to_numeric(raw, errors="coerce")
    np.testing.assert_allclose(v.loc[plain.notna(), "concentration"], plain[plain.notna()],
                               rtol=1e-12)
    assert (v.loc[plain.notna(), "flag"] == "ok").all()
    assert (v.loc[raw.str.startswith("*") & ~raw.str.startswith("***"), "flag"]
            == "extrapolated").all()
    assert (v.loc[raw.str.contains("OOR <"), "flag"] == "<").all()
    assert (v.loc[raw.str.contains("OOR >"), "flag"] == ">").all()


def test_printed_curves_match_oracle(bdir: Path, oracle_curves: pd.DataFrame) -> None:
    for name in XLS_FILES:
        plate = read_plate(bdir / name)
        curves = plate.metadata["vendor_curves"]
        want = oracle_curves[oracle_curves["file"] == name]
        assert len(want) == len(curves)
        for row in want.itertuples():
            c = curves[row.analyte]
            assert (c["A"], c["B"], c["C"], c["D"], c["F"]) == (row.a, row.d, row.c, row.b, row.e)
            assert c["model"] == row.regression.split(":", 1)[1].strip()


def test_xlsx_equals_xls(bdir: Path) -> None:
    xls = read_plate(bdir / "labkey_pnLINCO20070302A.xls")
    xlsx = read_plate(bdir / "labkey_pnLINCO20070302A.xlsx")
    assert xlsx.format == "bioplex_xlsx" and xls.format == "bioplex_xls"
    cols = ["well", "sample", "sample_type", "analyte", "bead_region", "dilution"]
    pd.testing.assert_frame_equal(xls.wells[cols], xlsx.wells[cols])
    for col in ("median_mfi", "net_mfi", "expected_conc"):
        np.testing.assert_allclose(xls.wells[col], xlsx.wells[col], rtol=1e-9, equal_nan=True)
    assert xls.metadata["vendor_curves"] == xlsx.metadata["vendor_curves"]


def test_replicate_mean_rows_keep_their_well_list(bdir: Path) -> None:
    plate = read_plate(bdir / "labkey_10JAN07_plate_1.xls")
    assert plate.metadata["replicates_averaged"] is True
    il1b = plate.wells[plate.wells["analyte"] == "Hu IL-1b (32)"]
    assert il1b["well"].iat[0] == "A1,A2"  # S1 first in plate order
    assert il1b["bead_region"].iat[0] == 32
    # S1 and S2 were designated outliers ("---"): no FI, but the expected concentration stays
    s1 = il1b[il1b["sample"] == "S1"].iloc[0]
    assert math.isnan(s1["median_mfi"]) and s1["expected_conc"] == 37947.0


def test_bpm_xml(bdir: Path) -> None:
    path = bdir / "allotropy_BioPlexManager6.2_example01.xml"
    assert detect_format(path) == "bioplex_xml"
    plate = read_plate(path)
    # independent parse: every member well's readings
    root = ET.parse(path).getroot()
    readings = {}
    for mw in root.iter("MemberWell"):
        well = f"{chr(64 + int(mw.get('RowNo')))}{int(mw.get('ColNo'))}"
        for a in mw.iter("MWAnalyte"):
            readings[(well, a.findtext("AnalyteName"))] = float(a.findtext("Reading"))
    assert len(plate.wells) == len(readings) == 96 * 15
    got = {(r.well, r.analyte): r.median_mfi for r in plate.wells.itertuples()}
    assert got == readings
    # bead counts only where the export has the per-well bead data (8 wells)
    counted = plate.wells[plate.wells["count"].notna()]
    assert counted["well"].nunique() == 8
    curve = plate.metadata["vendor_curves"]["alpha"]
    assert curve["weighting"] == "Power Law Variance" and curve["weighting_B"] == 1.8
    assert curve["recovery_range"] == [70.0, 130.0]
    assert plate.wells["expected_conc"].isna().all()  # all zero = not set
    assert any("are 0 in the file" in w for w in plate.warnings)
    # net MFI = reading minus mean of the blank wells
    bg = plate.wells[(plate.wells["sample_type"] == "background")
                     & (plate.wells["analyte"] == "alpha")]["median_mfi"].mean()
    row = plate.wells[(plate.wells["analyte"] == "alpha")].iloc[0]
    assert row["net_mfi"] == pytest.approx(row["median_mfi"] - bg)


def test_xml_with_entities_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "evil.xml"
    bad.write_text('<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY x "boom">]>\n'
                   "<BioPlexManager>&x;</BioPlexManager>")
    with pytest.raises(InputError, match="evil.xml"):
        read_plate(bad)


def test_other_xml_root_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.xml"
    other.write_text("<Gating-ML/>")
    with pytest.raises(InputError, match="not a Bio-Plex"):
        read_plate(other)


def test_corrupt_workbooks_are_input_errors(tmp_path: Path, bdir: Path) -> None:
    xls = tmp_path / "bad.xls"
    xls.write_bytes((bdir / "labkey_03-31A82-IgA-Biotin.xls").read_bytes()[:5000])
    with pytest.raises(InputError, match="bad.xls"):
        read_plate(xls)
    xlsx = tmp_path / "bad.xlsx"
    xlsx.write_bytes(b"PK\x03\x04" + b"\x00" * 200)
    with pytest.raises(InputError, match="bad.xlsx"):
        read_plate(xlsx)


@pytest.mark.parametrize("text,want", [
    ("Std. Curve: FI = -8.49859 + (20147.9 + 8.49859) / ((1 + (Conc / 409.762)^-0.738017))^1.4408",
     {"A": -8.49859, "B": 20147.9, "C": 409.762, "D": -0.738017, "F": 1.4408}),
    ("Std. Curve: FI = 36.9094 + (16123.9 - 36.9094) / (1 + (Conc / 247.786)^-1.05775)",
     {"A": 36.9094, "B": 16123.9, "C": 247.786, "D": -1.05775, "F": 1.0}),
    ("Std. Curve: FI = 1 + (2 - 3) / (1 + (Conc / 4)^5)", None),  # inconsistent a
    ("FitProb. = 0.3347", None),
])
def test_parse_curve_equation(text: str, want: dict | None) -> None:
    assert parse_curve_equation(text) == want
