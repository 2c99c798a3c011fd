"""Sample identity and kit sheets as labs have them: one id per well across a workbook's sheets,
the type column before any name rule, kit lot sheets with vendor/lab headers, folders."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from immunoprofile.cli import cli
from immunoprofile.cytokine.readers import expand_plate_paths, read_plate
from immunoprofile.cytokine.readers.bioplex import _xls_sheets
from immunoprofile.cytokine.readers.standards import describe_columns, read_standards


def test_bioplex_2007_one_id_per_well(reference_dir: Path) -> None:
    path = reference_dir / "cytokine" / "bioplex" / "labkey_BPM2007_WithIndices.xls"
    plate = read_plate(path)
    w = plate.wells
    assert w.groupby(["plate", "well"])["sample"].nunique().max() == 1
    # the IL-1b sheet gives Description "8" for standard S4 (A2,B2); the IL-4 sheet none
    sheets = dict(_xls_sheets(path))
    il4_rows = [r for r in sheets["IL-4 (9)"] if len(r) > 4 and r[2] == "A2,B2"]
    assert il4_rows and il4_rows[0][4] == ""
    assert set(w.loc[w.well == "A2,B2", "sample"]) == {"8"}
    # wells whose sheets name them differently are reported, not silently merged
    warning = [m for m in plate.warnings if "differs between analyte sheets" in m]
    assert len(warning) == 1 and "C5,D5" in warning[0] and "9016-01" in warning[0]
    assert (w.loc[w.well == "A2,B2", "sample_type"] == "standard").all()  # Type S4


def _generic(tmp_path: Path, with_type: bool) -> Path:
    rows = ["well,sample," + ("sample_type," if with_type else "") + "analyte,mfi"]
    for well, name, kind in (("A1", "Background0", "background"), ("A2", "Standard1", "standard"),
                             ("A3", "S1", "unknown")):
        rows.append(f"{well},{name}," + (f"{kind}," if with_type else "") + "IL-6,100")
    path = tmp_path / ("typed.csv" if with_type else "names.csv")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_type_column_wins_over_name_rule(tmp_path: Path) -> None:
    kit = tmp_path / "kit.csv"
    kit.write_text("analyte,standard,expected_conc\nIL-6,Standard1,1000\n")
    typed = read_plate(_generic(tmp_path, True), standards=kit).wells.set_index("well")
    assert typed.loc["A3", "sample_type"] == "unknown"  # a sample literally named S1
    assert pd.isna(typed.loc["A3", "expected_conc"])
    assert typed.loc["A2", "expected_conc"] == 1000
    plate = read_plate(_generic(tmp_path, True), standards=kit)
    assert any("keep the type the file gives" in m and "A3 S1" in m for m in plate.warnings)
    # without any type information the name is all there is: S1 = standard 1
    names = read_plate(_generic(tmp_path, False), standards=kit).wells.set_index("well")
    assert names.loc["A3", "sample_type"] == "standard"
    # a layout's type wins too
    layout = tmp_path / "layout.csv"
    layout.write_text("well,sample,sample_type\nA3,S1,unknown\n")
    laid = read_plate(_generic(tmp_path, False), layout=layout, standards=kit).wells
    assert laid.set_index("well").loc["A3", "sample_type"] == "unknown"


def test_kit_lot_sheet_headers(tmp_path: Path, reference_dir: Path) -> None:
    sheet = tmp_path / "lot.csv"
    sheet.write_text("Lot,Analyte,Std,Expected Conc. (pg/mL),Range Low,Range High,Bead Region\n"
                     "L1,Interleukin six,S1,40000,,,19\n"
                     "L1,Interleukin six,C1,500,400,600,19\n")
    table = read_standards(sheet)
    assert table.unit.tolist() == ["pg/mL", "pg/mL"]
    assert table.control_low.tolist()[1] == 400 and table.control_high.tolist()[1] == 600
    line = describe_columns(table)
    assert "standard <- 'Std'" in line and "control_low <- 'Range Low'" in line
    assert "expected_conc <- 'Expected Conc. (pg/mL)'" in line and "ignored: 'Lot'" in line
    # no name in common: matched by its bead region (19) to Bio-Plex's "Hu IL-6 (19)"
    plate = read_plate(reference_dir / "cytokine" / "bioplex" / "labkey_10JAN07_plate_1.xls",
                       standards=table)
    il6 = plate.wells[plate.wells.analyte == "Hu IL-6 (19)"]
    assert (il6.loc[il6["sample"] == "S1", "expected_conc"] == 40000).all()
    assert plate.metadata["standards_table"]["values_matched"] > 0
    other = tmp_path / "other.csv"
    other.write_text("Standard,Sample,Analyte,expected_conc_pg_ml,Unit\nx,Standard1,IL-6,5\n")
    t2 = read_standards(other)
    assert t2.standard.tolist() == ["x"] and t2.attrs["ignored_columns"] == ["Sample"]
    assert t2.unit.tolist() == ["pg/mL"]  # the empty Unit cell: the unit named in the header


def test_cytokines_accepts_folders(example_dir: Path, tmp_path: Path) -> None:
    folder = example_dir / "plates"
    assert expand_plate_paths([folder]) == sorted(folder.glob("*.csv"))
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["cytokines", str(folder), "--standards",
                                   str(example_dir / "standards.csv"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "standards table columns: analyte <- 'analyte'" in res.output
    curves = pd.read_csv(out / "standard_curves.csv")
    assert set(curves.plate) == {"plate1", "plate2"}
    qc = pd.read_csv(out / "plate_qc.csv")
    assert qc.n_controls_checked.tolist() == [20, 20]
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(cli, ["cytokines", str(empty), "--out", str(tmp_path / "o2")])
    assert res.exit_code == 2 and "no plate exports" in res.output
