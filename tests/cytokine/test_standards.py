"""Kit standards tables: reading, and the table winning over the file's expected values."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from immunoprofile.cytokine.readers import read_plate
from immunoprofile.cytokine.readers.standards import read_standards
from immunoprofile.errors import InputError

DRLUMI = "drLumi_plate1_LX200_xPONENT3.1_analysisON_5PL.csv"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_read_standards_columns_and_aliases(tmp_path: Path) -> None:
    path = _write(tmp_path, "kit.csv", "Analyte,Reagent,Expected,Units,Low,High\n"
                                       "IL-6,Standard1,5850,pg/mL,,\n"
                                       "IL-6,Control1,1950,pg/mL,1500,2400\n")
    table = read_standards(path)
    assert list(table.columns) == ["analyte", "standard", "expected_conc", "unit",
                                   "control_low", "control_high"]
    assert table.loc[1, "control_high"] == 2400 and math.isnan(table.loc[0, "control_low"])


@pytest.mark.parametrize("text,match", [
    ("analyte,standard\nIL-6,S1\n", "expected_conc"),
    ("analyte,standard,expected_conc\nIL-6,S1,abc\n", "not a number"),
    ("analyte,standard,expected_conc\nIL-6,S1,-1\n", "negative"),
    ("analyte,standard,expected_conc\nIL-6,S1,1\nil-6,s1,2\n", "duplicate"),
    ("analyte,standard,expected_conc\n", "no rows"),
    ("", "empty"),
])
def test_read_standards_errors(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        read_standards(_write(tmp_path, "kit.csv", text))


def test_table_wins_over_file_and_differences_are_warned(tmp_path: Path,
                                                        reference_dir: Path) -> None:
    path = reference_dir / "cytokine" / "xponent" / DRLUMI
    # the kit's true FGF series (2-fold from 3450) and a deliberately different IL6 Standard1
    rows = [f"FGF,Standard{k},{3450 / 2 ** (k - 1)!r},pg/mL" for k in range(1, 17)]
    rows.append("IL-6,Standard1,6000,ng/mL")  # IL-6 matches the plate's "IL6" loosely
    table = _write(tmp_path, "kit.csv", "analyte,standard,expected_conc,unit\n" + "\n".join(rows))
    plate = read_plate(path, standards=table)
    w = plate.wells
    fgf = w[(w["analyte"] == "FGF") & (w["sample_type"] == "standard")]
    for name, value in zip(fgf["sample"], fgf["expected_conc"]):
        assert value == 3450 / 2 ** (int(name.removeprefix("Standard")) - 1)
    il6 = w[(w["analyte"] == "IL6") & (w["sample"] == "Standard1")]
    assert (il6["expected_conc"] == 6000).all() and len(il6) == 2
    assert (w.loc[w["analyte"] == "IL6", "unit"] == "ng/mL").all()
    warn = next(x for x in plate.warnings if x.startswith("standards table differs"))
    # FGF Standard5 lost its decimal point in the file (H6); IL6 Standard1 is in A2 and H4
    assert "H6 Standard5/FGF: file 215625, table 215.625" in warn
    assert "3 value(s)" in warn
    assert plate.metadata["standards_table"]["differences"] == 3
    # the table already fixed FGF: the repair pass finds nothing there, but still elsewhere
    assert not any(r["analyte"] == "FGF" for r in plate.repairs)
    assert any(r["analyte"] == "IL1B" for r in plate.repairs)


def test_table_supplies_expected_conc_when_the_file_has_none(tmp_path: Path,
                                                             reference_dir: Path) -> None:
    path = reference_dir / "cytokine" / "xponent" / \
        "serolyzer_Intelliflex_xPONENTstyle_SEROPED_62plex_P10.csv"
    plate0 = read_plate(path)
    analyte = plate0.analytes[0]
    assert plate0.wells["expected_conc"].isna().all()
    kit = _write(tmp_path, "kit.csv", "analyte,standard,expected_conc,unit\n"
                 + "\n".join(f"{analyte},Standard{k},{100 / 4 ** (k - 1)},AU/mL"
                             for k in range(1, 8)))
    plate = read_plate(path, standards=kit)
    w = plate.wells
    std = w[(w["analyte"] == analyte) & (w["sample_type"] == "standard")]
    named = std[std["sample"].str.fullmatch(r"Standard[1-7]")]
    assert len(named) and named["expected_conc"].notna().all()
    assert (plate.wells.loc[plate.wells["analyte"] == analyte, "unit"] == "AU/mL").all()


def test_table_accepts_a_dataframe_and_warns_unknown_analytes(reference_dir: Path) -> None:
    path = reference_dir / "cytokine" / "xponent" / DRLUMI
    table = pd.DataFrame({"analyte": ["IL-99"], "standard": ["Standard1"], "expected_conc": [1.0],
                          "unit": [""], "control_low": [math.nan], "control_high": [math.nan]})
    plate = read_plate(path, standards=table)
    assert any("IL-99" in w and "not on the plate" in w for w in plate.warnings)


def test_table_names_match_bioplex_type_codes(tmp_path: Path, reference_dir: Path) -> None:
    # 10JAN07 names its standards by type code only (S1, S2, ...); a kit table says Standard1...
    path = reference_dir / "cytokine" / "bioplex" / "labkey_10JAN07_plate_1.xls"
    plate0 = read_plate(path)
    il6 = plate0.wells[(plate0.wells["analyte"] == "Hu IL-6 (19)")
                       & (plate0.wells["sample_type"] == "standard")]
    file_values = dict(zip(il6["sample"], il6["expected_conc"]))
    assert set(file_values) == {f"S{k}" for k in range(1, 9)}
    rows = [f"IL-6,Standard{k},{2 * file_values[f'S{k}']!r},pg/mL" for k in range(1, 9)]
    kit = _write(tmp_path, "kit.csv", "analyte,standard,expected_conc,unit\n" + "\n".join(rows))
    plate = read_plate(path, standards=kit)
    got = plate.wells[(plate.wells["analyte"] == "Hu IL-6 (19)")
                      & (plate.wells["sample_type"] == "standard")]
    for name, value in zip(got["sample"], got["expected_conc"]):
        assert value == 2 * file_values[name]
    assert plate.metadata["standards_table"]["differences"] == 8
