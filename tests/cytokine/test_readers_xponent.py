"""xPONENT / Intelliflex readers against the real reference exports and the drLumi oracle."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from immunoprofile.cytokine.readers import (WELL_COLUMNS, PlateData, classify_sample,
                                            detect_format, parse_well, read_plate)
from immunoprofile.errors import InputError

DRLUMI = "drLumi_plate1_LX200_xPONENT3.1_analysisON_5PL.csv"
XPONENT_FILES = [
    "allotropy_FlexMAP3D_NaN_and_not_reported.csv",
    "allotropy_FlexMAP3D_XX055101_2025.csv",
    "allotropy_FlexMAP3D_xPONENT4.3.309.1_unquoted.csv",
    "allotropy_FlexMAP3D_xPONENT4.3_example02_quoted.csv",
    "allotropy_FlexMAP3D_xPONENT4.3_example02_saved_unquoted.csv",
    "allotropy_Intelliflex_xPONENTstyle_example01.csv",
    DRLUMI,
    "serolyzer_Intelliflex_xPONENTstyle_SEROPED_62plex_P10.csv",
    "serolyzer_LX200_xPONENT3.1_New_Batch_14.csv",
    "serolyzer_MAGPIX_xPONENT4.2_Chul_IgG3_1_quoted.csv",
    "serolyzer_MAGPIX_xPONENT4.2_Chul_TotalIgG_2_unquoted.csv",
    "serolyzer_MAGPIX_xPONENT4.2_CovidOISE_extendedDataTypes.csv",
]


@pytest.fixture(scope="module")
def xdir(reference_dir: Path) -> Path:
    return reference_dir / "cytokine" / "xponent"


@pytest.fixture(scope="module")
def drlumi(xdir: Path) -> PlateData:
    return read_plate(xdir / DRLUMI)


@pytest.fixture(scope="module")
def oracle(reference_dir: Path) -> pd.DataFrame:
    return pd.read_csv(reference_dir / "cytokine" / "oracles" / "xponent_drlumi_plate1_long.csv")


def _raw_block(path: Path, datatype: str) -> tuple[list[str], dict[str, list[str]]]:
    """Independent minimal parse of one per-well block: (header, {location: row})."""
    text = path.read_text(encoding="utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    start = next(i for i, r in enumerate(rows) if r[:2] == ["DataType:", datatype])
    header = rows[start + 1]
    out = {}
    for r in rows[start + 2:]:
        if not r or not re.match(r"^\d+\(", r[0]):
            break
        out[r[0]] = r
    return header, out


# ---------------------------------------------------------------------------- every file reads

@pytest.mark.parametrize("name", XPONENT_FILES)
def test_every_xponent_file_reads_into_the_tidy_table(xdir: Path, name: str) -> None:
    path = xdir / name
    assert detect_format(path) == "xponent"
    plate = read_plate(path)
    header, rows = _raw_block(path, "Median")
    analytes = [h for h in header[2:] if h and h != "Total Events"]
    wells = {re.search(r",\s*([A-P]\d+)\)", loc).group(1) for loc in rows}
    assert list(plate.wells.columns) == list(WELL_COLUMNS)
    assert len(plate.wells) == len(wells) * len(analytes)
    assert plate.analytes == analytes
    assert set(plate.wells["well"]) == wells
    assert set(plate.wells["sample_type"]) <= {"background", "standard", "control", "unknown"}
    assert (plate.wells["dilution"] > 0).all()
    json.dumps(plate.metadata, allow_nan=False)  # provenance-ready: strict JSON
    # the first well's medians are the file's
    loc, first = next(iter(rows.items()))
    well = re.search(r",\s*([A-P]\d+)\)", loc).group(1)
    got = plate.wells[plate.wells["well"] == well].set_index("analyte")["median_mfi"]
    for a, raw in zip(header[2:], first[2:]):
        if a in analytes:
            want = float(raw) if raw not in ("", "NaN") else math.nan
            assert got[a] == pytest.approx(want, nan_ok=True)


def test_quoted_and_excel_resaved_example02_give_identical_tables(xdir: Path) -> None:
    quoted = read_plate(xdir / "allotropy_FlexMAP3D_xPONENT4.3_example02_quoted.csv")
    saved = read_plate(xdir / "allotropy_FlexMAP3D_xPONENT4.3_example02_saved_unquoted.csv")
    # upstream spelled two (anonymised) analyte names differently in the re-saved copy
    # ("juliet"/"juliett", "sienna"/"sierra"); everything else must be identical
    renamed = dict(zip(saved.analytes, quoted.analytes))
    assert {k: v for k, v in renamed.items() if k != v} == {"juliett": "juliet", "sierra": "sienna"}
    saved_wells = saved.wells.assign(analyte=saved.wells["analyte"].map(renamed))
    pd.testing.assert_frame_equal(quoted.wells, saved_wells)
    assert len(quoted.wells) == 96 * 21
    # analysis off: no vendor results, regions and dilutions still read
    assert quoted.vendor is None
    assert quoted.wells["bead_region"].notna().all()


# ---------------------------------------------------------------------------- drLumi oracle

def test_drlumi_matches_oracle_values(drlumi: PlateData, oracle: pd.DataFrame) -> None:
    merged = oracle.merge(drlumi.wells, on=["well", "analyte"], how="outer",
                          suffixes=("_o", ""), indicator=True)
    assert (merged["_merge"] == "both").all()
    assert len(merged) == 96 * 30
    np.testing.assert_array_equal(merged["median_mfi"], merged["median_mfi_o"])
    np.testing.assert_array_equal(merged["net_mfi"], merged["net_mfi_o"])
    np.testing.assert_array_equal(merged["count"], merged["bead_count"])
    np.testing.assert_array_equal(merged["dilution"], merged["dilution_factor"].fillna(1.0))
    assert (merged["sample"] == merged["sample_o"]).all()


def test_drlumi_expected_conc_equals_oracle_corrected_values(drlumi: PlateData,
                                                            oracle: pd.DataFrame) -> None:
    std = oracle[oracle["expected_conc"].notna()]
    merged = std.merge(drlumi.wells, on=["well", "analyte"], suffixes=("_o", ""))
    assert len(merged) == len(std) == 17 * 30  # Standard1 in duplicate + Standard2..16
    np.testing.assert_allclose(merged["expected_conc"], merged["expected_conc_o"], rtol=1e-12)
    assert (merged["sample_type"] == "standard").all()


def test_drlumi_sample_types_units_regions(drlumi: PlateData, reference_dir: Path) -> None:
    w = drlumi.wells
    coef = pd.read_csv(reference_dir / "cytokine" / "oracles"
                       / "xponent_drlumi_plate1_5PL_coefficients.csv")
    regions = w.drop_duplicates("analyte").set_index("analyte")["bead_region"]
    units = w.drop_duplicates("analyte").set_index("analyte")["unit"]
    for row in coef.itertuples():
        assert regions[row.analyte] == row.bead_region
        assert units[row.analyte] == row.units
    types = w.drop_duplicates("well").set_index("well")["sample_type"]
    assert types["A1"] == "background" and types["H12"] == "background"
    assert types["B1"] == "control" and types["A2"] == "standard" and types["C1"] == "unknown"
    # Control expected concentrations come from the Control Expected Concentration block
    c1 = w[(w["well"] == "B1") & (w["analyte"] == "FGF")]
    assert c1["expected_conc"].iat[0] == 1150.0
    assert drlumi.metadata["control_ranges"]["Control1"]["FGF"] == [1150.0, 1150.0]
    assert drlumi.metadata["software"] == "xPONENT"
    assert drlumi.metadata["build"] == "3.1.871.0"


def test_drlumi_vendor_results_and_curves(drlumi: PlateData, oracle: pd.DataFrame,
                                          reference_dir: Path) -> None:
    v = drlumi.vendor
    assert v is not None and len(v) == 96 * 30
    merged = oracle.merge(v, on=["well", "analyte"])
    # the oracle's result_flag is '<', '>', '' or 'NaN' (pandas reads the last two as NaN)
    want_flag = np.where(merged["result_flag"] == "<", "<",
                         np.where(merged["result_flag"] == ">", ">",
                                  np.where(merged["result_value"].isna(), "missing", "ok")))
    assert (merged["flag"] == want_flag).all()
    np.testing.assert_allclose(merged["concentration"], merged["result_value"], rtol=1e-15,
                               equal_nan=True)
    assert (v["flag"] == "ok").sum() == 2580
    coef = pd.read_csv(reference_dir / "cytokine" / "oracles"
                       / "xponent_drlumi_plate1_5PL_coefficients.csv")
    curves = drlumi.metadata["vendor_curves"]
    for row in coef.itertuples():
        c = curves[row.analyte]
        assert c["model"] == "Logistic 5P"
        for p in "ABCDF":
            assert c[p] == getattr(row, p)
        assert c["r2"] == row.R2_reported


def test_drlumi_decimal_defect_repaired_and_reported(drlumi: PlateData) -> None:
    assert drlumi.repairs, "the drLumi decimal-point loss must be detected"
    fgf = [r for r in drlumi.repairs if r["analyte"] == "FGF"]
    assert {"well": "H6", "old": 215625.0, "new": 215.625} in [
        {k: r[k] for k in ("well", "old", "new")} for r in fgf]
    assert all(r["old"] == pytest.approx(1000 * r["new"]) for r in drlumi.repairs)
    assert any("H6" in w and "repaired" in w for w in drlumi.warnings)


def test_drlumi_no_repair_keeps_file_values(xdir: Path) -> None:
    plate = read_plate(xdir / DRLUMI, repair=False)
    assert plate.repairs == []
    fgf = plate.wells[(plate.wells["well"] == "H6") & (plate.wells["analyte"] == "FGF")]
    assert fgf["expected_conc"].iat[0] == 215625.0
    assert any("H6" in w and "repair disabled" in w for w in plate.warnings)


# ---------------------------------------------------------------------------- variants

def test_nan_and_blank_cells_become_nan(xdir: Path) -> None:
    plate = read_plate(xdir / "allotropy_FlexMAP3D_NaN_and_not_reported.csv")
    a1 = plate.wells[plate.wells["well"] == "A1"].set_index("analyte")
    assert math.isnan(a1.loc["analyte1", "median_mfi"])
    assert math.isnan(a1.loc["analyte3", "median_mfi"])  # blank cell
    assert a1.loc["analyte3", "net_mfi"] == 2.0            # file's Net MFI kept
    assert a1.loc["analyte1", "count"] == 0.0
    assert list(a1["bead_region"]) == [19, 27, 44]


def test_net_mfi_computed_from_background_when_file_has_none(xdir: Path) -> None:
    path = xdir / "serolyzer_Intelliflex_xPONENTstyle_SEROPED_62plex_P10.csv"
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")  # UTF-8 BOM
    plate = read_plate(path)
    header, rows = _raw_block(path, "Median")
    analyte = header[2]
    col = 2
    bg = [float(r[col]) for r in rows.values() if r[1].lower().startswith("background")]
    assert bg
    mean_bg = sum(bg) / len(bg)
    std_loc = next(loc for loc, r in rows.items() if r[1] == "Standard1")
    well = re.search(r",\s*([A-P]\d+)\)", std_loc).group(1)
    got = plate.wells[(plate.wells["well"] == well) & (plate.wells["analyte"] == analyte)]
    assert got["net_mfi"].iat[0] == pytest.approx(float(rows[std_loc][col]) - mean_bg, rel=1e-12)
    assert got["sample_type"].iat[0] == "standard"


def test_intelliflex_flat_v22(xdir: Path) -> None:
    path = xdir / "allotropy_Intelliflex_v2.2_flat.csv"
    assert detect_format(path) == "intelliflex_flat"
    plate = read_plate(path)
    raw = pd.read_csv(path)
    raw = raw[raw["WELL LOCATION"].notna()]
    n_regions = sum(1 for c in raw.columns if re.match(r"R\d+: RP1 MEDIAN$", c))
    assert len(plate.wells) == len(raw) * n_regions
    b1 = raw[raw["WELL LOCATION"] == "B1"].iloc[0]
    got = plate.wells[(plate.wells["well"] == "B1") & (plate.wells["bead_region"] == 25)].iloc[0]
    assert got["analyte"] == b1["R25: RP1 ANALYTE NAME"]
    assert got["median_mfi"] == b1["R25: RP1 MEDIAN"]
    assert got["net_mfi"] == b1["R25: RP1 NET MEDIAN"]
    assert got["count"] == b1["R25: RP1 COUNT"]
    assert got["dilution"] == b1["DILUTION"]
    assert got["sample"] == b1["SAMPLE ID"]


# ---------------------------------------------------------------------------- helpers and errors

@pytest.mark.parametrize("text,want", [("1(1,A1)", "A1"), ("96(1,H12)", "H12"), ("a01", "A1"),
                                       (" B 7 ", "B7"), ("2(1,p24)", "P24"), ("Z1", None),
                                       ("A25", None), ("", None), ("1,A1", None)])
def test_parse_well(text: str, want: str | None) -> None:
    assert parse_well(text) == want


@pytest.mark.parametrize("name,want", [
    ("Background0", "background"), ("Blank", "background"), ("B", "background"),
    ("Standard1", "standard"), ("S7", "standard"), ("std 3", "standard"),
    ("Control2", "control"), ("C1", "control"), ("Unknown1", "unknown"),
    ("B_sid_13_CSP", "unknown"), ("Donor14_1", "unknown"), ("X12", "unknown")])
def test_classify_sample(name: str, want: str) -> None:
    assert classify_sample(name) == want


def test_truncated_export_is_an_input_error(tmp_path: Path, xdir: Path) -> None:
    text = (xdir / DRLUMI).read_text()
    cut = tmp_path / "cut.csv"
    cut.write_text(text[: text.index("DataType:,Median")])
    with pytest.raises(InputError, match="cut.csv.*Median"):
        read_plate(cut)


def test_unrecognised_and_missing_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.csv"
    junk.write_text("hello,world\n1,2\n")
    with pytest.raises(InputError, match="not a recognised plate export"):
        read_plate(junk)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_plate(empty)
    with pytest.raises(InputError, match="not found"):
        read_plate(tmp_path / "absent.csv")


# ---------------------------------------------------------------------------- the example trial

@pytest.mark.parametrize("plate_name", ["plate1", "plate2"])
def test_example_trial_plates_read_with_the_kit_table(example_dir: Path, plate_name: str) -> None:
    path = example_dir / "plates" / f"{plate_name}.csv"
    manifest = pd.read_csv(example_dir / "manifest.csv")
    manifest = manifest[(manifest["assay"] == "cytokine") & (manifest["plate"] == plate_name)]
    kit = pd.read_csv(example_dir / "standards.csv")
    plate = read_plate(path, standards=example_dir / "standards.csv")
    assert plate.plates == [plate_name]  # the manifest's plate id
    w = plate.wells
    header, rows = _raw_block(path, "Median")
    analytes = [h for h in header[2:] if h and h != "Total Events"]
    assert plate.analytes == analytes and len(w) == len(rows) * len(analytes)
    # every manifest sample sits in its listed wells
    by_well = w.drop_duplicates("well").set_index("well")["sample"]
    for row in manifest.itertuples():
        for well in row.well.split(";"):
            assert by_well[well] == row.sample_id
            assert (w.loc[w["well"] == well, "sample_type"] == "unknown").all()
    # standards carry the kit's expected concentrations, nothing needed repair
    std = w[w["sample_type"] == "standard"].merge(
        kit, left_on=["analyte", "sample"], right_on=["analyte", "standard"], how="left")
    assert len(std) and (std["expected_conc_x"] == std["expected_conc_y"]).all()
    assert plate.repairs == []
    assert not any("without an expected" in x for x in plate.warnings)
    assert set(w["sample_type"]) == {"background", "standard", "control", "unknown"}
    assert plate.metadata["net_mfi"] == "file"


def test_unquoted_locations_split_by_a_resave_still_read(tmp_path: Path, xdir: Path) -> None:
    src = xdir / "allotropy_FlexMAP3D_xPONENT4.3_example02_saved_unquoted.csv"
    text = re.sub(r'"(\d+\(\d+,[A-P]\d+\))"', r"\1", src.read_text())
    assert '"1(1,A1)"' not in text and "\n1(1,A1)," in text
    broken = tmp_path / "unquoted_locations.csv"
    broken.write_text(text)
    want = read_plate(src).wells
    got = read_plate(broken).wells
    pd.testing.assert_frame_equal(got, want)


@pytest.mark.parametrize("raw,value,flag", [
    ("< 0.10528564453125", 0.10528564453125, "<"), ("> 3450", 3450.0, ">"),
    ("OOR <", math.nan, "<"), ("OOR >", math.nan, ">"), ("*3.42", 3.42, "extrapolated"),
    ("***", math.nan, "missing"), ("---", math.nan, "outlier"), ("NaN", math.nan, "missing"),
    ("Not Reported", math.nan, "missing"), ("", math.nan, "missing"), ("12.5", 12.5, "ok"),
    (7.0, 7.0, "ok"), ("inf", math.nan, "missing")])
def test_parse_vendor_value(raw: object, value: float, flag: str) -> None:
    from immunoprofile.cytokine.readers import parse_vendor_value
    got_value, got_flag = parse_vendor_value(raw)
    assert got_flag == flag
    assert got_value == pytest.approx(value, nan_ok=True)


def test_importing_the_readers_stays_light() -> None:
    # the CLI imports readers lazily, but the modules themselves must not pull pandas/xlrd in
    import subprocess
    import sys
    code = ("import sys, immunoprofile.cytokine\n"
            "from immunoprofile.cytokine.readers import bioplex, msd, layout, xponent, repair\n"
            "print(sorted(m for m in ('pandas', 'numpy', 'xlrd', 'openpyxl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("row", "ABCDEFGHIJKLMNOP")
def test_parse_well_every_position(row: str) -> None:
    for col in range(1, 25):
        want = f"{row}{col}"
        assert parse_well(f"{col * 16}(2,{row}{col})") == want
        assert parse_well(f"{row.lower()}{col:02d}") == want


def test_semicolon_decimal_comma_resave_reads_identically(tmp_path: Path, xdir: Path) -> None:
    # Excel in a decimal-comma locale saves ';'-separated with "1234,5"
    src = xdir / "allotropy_FlexMAP3D_xPONENT4.3_example02_quoted.csv"
    rows = list(csv.reader(io.StringIO(src.read_text())))
    number = re.compile(r"^-?\d+\.\d+$")
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";")
    for row in rows:
        writer.writerow([c.replace(".", ",") if number.match(c) else c for c in row])
    assert ";" in out.getvalue() and "10921,5" in out.getvalue()
    resaved = tmp_path / "semicolon.csv"
    resaved.write_text(out.getvalue())
    pd.testing.assert_frame_equal(read_plate(resaved).wells, read_plate(src).wells)
