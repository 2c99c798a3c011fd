"""Bead-level exports reproduce the plate's Median and Count (drLumi wells A1 and A2)."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest

from immunoprofile.cytokine.readers import detect_format, read_plate
from immunoprofile.cytokine.readers.beadlevel import read_beadlevel
from immunoprofile.errors import InputError

DRLUMI = "drLumi_plate1_LX200_xPONENT3.1_analysisON_5PL.csv"


@pytest.mark.parametrize("well", ["A1", "A2"])
def test_beadlevel_reproduces_plate_median_and_count(reference_dir: Path, well: str) -> None:
    xdir = reference_dir / "cytokine" / "xponent"
    path = xdir / f"drLumi_beadlevel_plate_P1_{well}.csv"
    assert detect_format(path) == "beadlevel"
    plate = read_plate(xdir / DRLUMI)
    regions = dict(zip(plate.wells["bead_region"].astype(int), plate.wells["analyte"]))
    beads = read_beadlevel(path, regions=regions)
    assert beads.wells["well"].unique().tolist() == [well]
    assert set(beads.analytes) == set(plate.analytes)  # all 30 regions present
    want = plate.wells[plate.wells["well"] == well].set_index("analyte")
    got = beads.wells.set_index("analyte")
    assert (got["median_mfi"] == want.loc[got.index, "median_mfi"]).all()
    assert (got["count"] == want.loc[got.index, "count"]).all()
    assert (got["bead_region"] == want.loc[got.index, "bead_region"]).all()


def test_beadlevel_without_region_names(reference_dir: Path) -> None:
    path = reference_dir / "cytokine" / "xponent" / "drLumi_beadlevel_plate_P1_A2.csv"
    plate = read_plate(path)
    assert plate.format == "beadlevel" and plate.plates == ["plate_P1"]
    with open(path) as handle:
        rows = list(csv.reader(handle))[2:]
    rp1 = [float(r[4]) for r in rows if r[1] == "12"]
    row = plate.wells[plate.wells["analyte"] == "R12"].iloc[0]
    assert row["median_mfi"] == statistics.median(rp1) and row["count"] == len(rp1)
    assert plate.metadata["n_unclassified"] == sum(1 for r in rows if r[1] == "0")


def test_beadlevel_without_classified_beads(tmp_path: Path) -> None:
    bad = tmp_path / "plate_X_B3.csv"
    bad.write_text("EventNo,RID,DBL,DD,RP1\n0,0,0,1,5\n1,0,0,1,7\n")
    with pytest.raises(InputError, match="RID > 0"):
        read_plate(bad)


def test_beadlevel_rows_with_impossible_regions_are_skipped(tmp_path: Path) -> None:
    # found by fuzzing: RID 1e300 overflowed the int64 region array
    path = tmp_path / "plate_X_C4.csv"
    path.write_text("EventNo,RID,DBL,DD,RP1\n0,1e300,0,1,5\n1,3,0,1,7\n2,3,0,1,9\n3,-1,0,1,2\n"
                    "4,2.5,0,1,4\n")
    plate = read_plate(path)
    assert plate.wells[["well", "analyte", "median_mfi", "count"]].values.tolist() == [
        ["C4", "R3", 8.0, 2.0]]
    assert any("3 event row(s)" in w for w in plate.warnings)
