"""Generic plate CSV and plate layout files."""

from __future__ import annotations

from pathlib import Path

import pytest

from immunoprofile.cytokine.readers import detect_format, read_plate
from immunoprofile.cytokine.readers.layout import read_layout
from immunoprofile.errors import InputError

GENERIC = """well,analyte,mfi,count,sample
A1,IL-6,20,80,Background0
A2,IL-6,24,81,Background0
B1,IL-6,15000,90,Standard1
B2,IL-6,5000,95,Standard2
C1,IL-6,300,70,P01
A1,IL-13,10,77,Background0
A2,IL-13,12,75,Background0
B1,IL-13,9000,90,Standard1
B2,IL-13,3000,88,Standard2
C1,IL-13,50,60,P01
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_generic_csv_reads_and_derives_net_mfi(tmp_path: Path) -> None:
    path = _write(tmp_path, "plate7.csv", GENERIC)
    assert detect_format(path) == "generic"
    plate = read_plate(path)
    w = plate.wells.set_index(["well", "analyte"])
    assert len(w) == 10
    assert plate.plates == ["plate7"]
    assert w.loc[("C1", "IL-6"), "net_mfi"] == 300 - (20 + 24) / 2
    assert w.loc[("C1", "IL-13"), "net_mfi"] == 50 - (10 + 12) / 2
    assert w.loc[("B1", "IL-6"), "sample_type"] == "standard"
    assert w.loc[("A2", "IL-13"), "sample_type"] == "background"
    assert w.loc[("C1", "IL-6"), "count"] == 70
    assert plate.metadata["net_mfi"] == "derived"
    # plate order: A1, A2, B1, B2, C1 and analytes in file order
    assert list(plate.wells["well"][::2]) == ["A1", "A2", "B1", "B2", "C1"]
    assert plate.analytes == ["IL-6", "IL-13"]


def test_generic_csv_semicolon_and_aliases(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.csv", "Well;Analyte;Median;Bead Count\nA01;IL-4;12.5;40\n")
    plate = read_plate(path)
    row = plate.wells.iloc[0]
    got = (row["well"], row["analyte"], row["median_mfi"], row["count"])
    assert got == ("A1", "IL-4", 12.5, 40)


@pytest.mark.parametrize("text,match", [
    ("well,analyte,mfi\nZ9,IL-6,3\n", "not a well"),
    ("well,analyte,mfi\nA1,IL-6,3\nA1,IL-6,4\n", "duplicate"),
    ("well,mfi\nA1,3\n", None),  # no analyte column: not recognised as any format
    ("well,analyte,mfi,sample_type\nA1,IL-6,3,sample\n", "sample_type"),
])
def test_generic_csv_errors(tmp_path: Path, text: str, match: str | None) -> None:
    path = _write(tmp_path, "bad.csv", text)
    with pytest.raises(InputError, match=match or "bad.csv"):
        read_plate(path, format="generic")


def test_layout_overrides_file_and_recomputes_background(tmp_path: Path) -> None:
    plate_path = _write(tmp_path, "plate.csv", GENERIC)
    layout = _write(tmp_path, "layout.csv",
                    "well,sample,sample_type,dilution,expected_conc\n"
                    "A1,Blank,background,,\n"
                    "A2,QC-low,control,,\n"        # no longer a background
                    "B1,Std1,standard,,1000\n"
                    "B2,Std2,,,250\n"               # type from the name
                    "C1,P01-W4,unknown,4,\n"
                    "H12,Nothing,unknown,,\n")
    plate = read_plate(plate_path, layout=layout)
    w = plate.wells.set_index(["well", "analyte"])
    assert w.loc[("A2", "IL-6"), "sample_type"] == "control"
    assert w.loc[("B2", "IL-6"), "sample_type"] == "standard"
    assert w.loc[("B1", "IL-13"), "expected_conc"] == 1000
    assert w.loc[("C1", "IL-6"), "dilution"] == 4
    assert w.loc[("C1", "IL-6"), "sample"] == "P01-W4"
    # only A1 is a background now
    assert w.loc[("C1", "IL-6"), "net_mfi"] == 300 - 20
    assert any("H12" in x for x in plate.warnings)


def test_layout_per_analyte_expected(tmp_path: Path) -> None:
    plate_path = _write(tmp_path, "plate.csv", GENERIC)
    layout = _write(tmp_path, "layout.tsv",
                    "well\tsample\tanalyte\texpected_conc\n"
                    "B1\tStandard1\t\t100\n"
                    "B1\tStandard1\tIL-13\t70\n")
    plate = read_plate(plate_path, layout=layout)
    w = plate.wells.set_index(["well", "analyte"])
    assert w.loc[("B1", "IL-6"), "expected_conc"] == 100
    assert w.loc[("B1", "IL-13"), "expected_conc"] == 70


@pytest.mark.parametrize("text,match", [
    ("well,name_missing\nA1,x\n", "well and sample"),
    ("well,sample\nQ1,x\n", "not a well"),
    ("well,sample,dilution\nA1,x,0\n", "dilution"),
    ("well,sample,expected_conc\nA1,x,-3\n", "expected_conc"),
    ("well,sample,sample_type\nA1,x,patient\n", "sample_type"),
    ("well,sample\nA1,x\nA01,y\n", "twice"),
    ("well,sample\n", "no wells"),
])
def test_layout_errors(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        read_layout(_write(tmp_path, "layout.csv", text))


def test_layout_errors_are_listed_together(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        read_layout(_write(tmp_path, "layout.csv", "well,sample,dilution\nQ1,x,\nA1,y,-1\n"))
    assert "line 2" in str(info.value) and "line 3" in str(info.value)


def test_absurd_numbers_do_not_crash(tmp_path: Path) -> None:
    # found by fuzzing: a bead region of 1e300 could not be cast to an integer
    path = _write(tmp_path, "p.csv", "well,analyte,mfi,bead_region,count,dilution\n"
                                     "A1,IL-6,1e308,1e300,inf,-2\nA2,IL-6,nan,12.0,5,0\n"
                                     "A3,IL-6,3,-4,1,1e-300\n")
    plate = read_plate(path)
    w = plate.wells.set_index("well")
    assert w["bead_region"].isna().tolist() == [True, False, True]
    assert w.loc["A2", "bead_region"] == 12
    assert (w["dilution"] > 0).all() and w.loc["A1", "dilution"] == 1.0
    assert any("non-positive dilution" in x for x in plate.warnings)


def test_layout_as_a_frame(tmp_path: Path) -> None:
    plate_path = _write(tmp_path, "plate.csv", GENERIC)
    layout = read_layout(_write(tmp_path, "layout.csv", "well,sample\nC1,P02-W8\n"))
    plate = read_plate(plate_path, layout=layout)
    assert set(plate.wells.loc[plate.wells["well"] == "C1", "sample"]) == {"P02-W8"}
