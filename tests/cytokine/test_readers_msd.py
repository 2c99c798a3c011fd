"""MSD readers: Discovery Workbench CSV and MESO plate-reader raw text (96 and 384 wells)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest

from immunoprofile.cytokine.readers import detect_format, read_plate
from immunoprofile.errors import InputError


@pytest.fixture(scope="module")
def mdir(reference_dir: Path) -> Path:
    return reference_dir / "cytokine" / "msd"


def _matrices(path: Path) -> list[dict[str, float]]:
    """Independent parse: every ==========Data block as {well: value}."""
    out, block, cols = [], None, None
    for line in path.read_text().splitlines():
        if line.startswith("==========Data"):
            block, cols = {}, None
            out.append(block)
            continue
        if line.startswith("=========="):
            block = None
            continue
        if block is None:
            continue
        parts = [p.strip() for p in line.split("\t")]
        if cols is None:
            cols = [p for p in parts if p]
            continue
        if len(parts[0]) == 1 and parts[0].isalpha():
            for c, v in zip(cols, parts[1:]):
                if v:
                    block[f"{parts[0]}{c}"] = float(v)
    return out


@pytest.mark.parametrize("name,n_plates,n_wells", [
    ("allotropy_msd_methodical_mind_plate_reader_test_1.txt", 2, 96),
    ("allotropy_msd_methodical_mind_384_wells.txt", 1, 384)])
def test_plate_reader_text(mdir: Path, name: str, n_plates: int, n_wells: int) -> None:
    path = mdir / name
    assert detect_format(path) == "msd_platereader"
    plate = read_plate(path)
    want = _matrices(path)
    assert len(want) == n_plates
    assert len(plate.plates) == n_plates
    assert len(plate.wells) == n_plates * n_wells
    for plate_name, block in zip(plate.plates, want):
        got = plate.wells[plate.wells["plate"] == plate_name].set_index("well")["median_mfi"]
        assert len(block) == n_wells
        assert got.to_dict() == block
    assert plate.wells["count"].isna().all()
    assert any("layout" in w for w in plate.warnings)


def test_plate_reader_barcodes_as_plate_names(mdir: Path) -> None:
    plate = read_plate(mdir / "allotropy_msd_methodical_mind_plate_reader_test_1.txt")
    assert plate.plates == ["22M0TALA85N", "22M0TAQA86T"]
    assert plate.metadata["instrument"] == "HTS"


@pytest.mark.parametrize("name", ["allotropy_msd_workbench_test_1.csv",
                                  "allotropy_msd_workbench_test_2_SYNTHETIC.csv"])
def test_workbench_csv(mdir: Path, name: str) -> None:
    path = mdir / name
    assert detect_format(path) == "msd_workbench"
    plate = read_plate(path)
    first, _, rest = path.read_text().partition("\n")
    barcode = first.split(",")[0].removeprefix("Plate_")
    raw = list(csv.DictReader(io.StringIO(rest)))
    assert len(plate.wells) == len(raw)
    assert plate.plates == [barcode]
    for r in raw:
        well = r["Well"][0] + str(int(r["Well"][1:]))
        got = plate.wells[(plate.wells["well"] == well) & (plate.wells["analyte"] == r["Assay"])]
        assert len(got) == 1
        got = got.iloc[0]
        assert got["median_mfi"] == float(r["Signal"])
        assert got["net_mfi"] == float(r["Adjusted Signal"])
        conc = float(r["Concentration"]) if r["Concentration"] else math.nan
        assert got["expected_conc"] == pytest.approx(conc, nan_ok=True)
        assert got["sample_type"] == ("standard" if r["Sample"].startswith("S") else "unknown")
    v = plate.vendor
    assert v is not None and len(v) == len(raw)
    calc = np.array([float(r["Calc. Concentration"]) for r in raw])
    np.testing.assert_allclose(np.sort(v["concentration"].dropna()), np.sort(calc[~np.isnan(calc)]))


def test_workbench_detection_range_flags(mdir: Path) -> None:
    plate = read_plate(mdir / "allotropy_msd_workbench_test_1.csv")
    v = plate.vendor.set_index(["well", "analyte"])
    assert v.loc[("A2", "Spike (FL.1.5.1)"), "flag"] == ">"      # Above Detection Range
    assert v.loc[("A1", "Spike (Wuhan)"), "flag"] == "missing"   # NaN result


def test_platereader_without_data_block(tmp_path: Path) -> None:
    bad = tmp_path / "reader.txt"
    bad.write_text("FileName :\tx.txt\nPlate #  :\t1\n==========Data=====\n")
    with pytest.raises(InputError, match="reader.txt"):
        read_plate(bad)


@pytest.mark.parametrize("header", ["\t1\t\u00b2\t3", "\t1\t2\t99", "\t1\t1\t2", "\tA\tB"])
def test_platereader_bad_column_header(tmp_path: Path, header: str) -> None:
    # found by fuzzing: a non-ASCII digit passed str.isdigit() and shifted the columns
    bad = tmp_path / "reader.txt"
    bad.write_text(f"Plate #  :\t1\n==========Data=====\n{header}\nA\t5\t6\t7\n")
    with pytest.raises(InputError, match="column header"):
        read_plate(bad, format="msd_platereader")
