"""Detection and repair of expected concentrations that lost their decimal point (Excel locale)."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from immunoprofile.cytokine.readers import read_plate
from immunoprofile.cytokine.readers.repair import find_decimal_loss

DRLUMI = "drLumi_plate1_LX200_xPONENT3.1_analysisON_5PL.csv"
EXAMPLES = int(os.environ.get("IMMUNOPROFILE_FUZZ_EXAMPLES", 60))


def _file_expected(path: Path) -> dict[tuple[str, str], float]:
    """Independent parse of the raw 'Standard Expected Concentration' block."""
    rows = list(csv.reader(io.StringIO(path.read_text())))
    block = ["DataType:", "Standard Expected Concentration"]
    start = next(i for i, r in enumerate(rows) if r[:2] == block)
    analytes = [a for a in rows[start + 1][1:] if a]
    out = {}
    for r in rows[start + 2:]:
        if not r[0].startswith("Standard"):
            break
        for a, v in zip(analytes, r[1:]):
            out[(r[0], a)] = float(v)
    return out


def test_drlumi_every_defect_found_and_repaired_to_the_oracle(reference_dir: Path) -> None:
    path = reference_dir / "cytokine" / "xponent" / DRLUMI
    oracle = pd.read_csv(reference_dir / "cytokine" / "oracles" / "xponent_drlumi_plate1_long.csv")
    std = oracle[oracle["expected_conc"].notna()]
    file_values = _file_expected(path)
    defects = {(r.well, r.analyte): (file_values[(r.sample, r.analyte)], r.expected_conc)
               for r in std.itertuples() if file_values[(r.sample, r.analyte)] != r.expected_conc}
    assert defects and all(old == pytest.approx(1000 * new) for old, new in defects.values())
    plate = read_plate(path)
    got = {(r["well"], r["analyte"]): (r["old"], r["new"]) for r in plate.repairs}
    assert got == defects  # every defect, nothing else, the oracle's corrected value
    assert len(plate.repairs) == len(defects)
    warn = next(w for w in plate.warnings if "decimal point lost" in w)
    for well in {w for w, _ in defects}:
        assert well in warn


def test_drlumi_repair_false_keeps_values_and_warns(reference_dir: Path) -> None:
    path = reference_dir / "cytokine" / "xponent" / DRLUMI
    plate = read_plate(path, repair=False)
    file_values = _file_expected(path)
    std = plate.wells[plate.wells["sample_type"] == "standard"]
    for r in std.itertuples():
        assert r.expected_conc == file_values[(r.sample, r.analyte)]
    assert plate.repairs == []
    assert any("kept as in the file" in w for w in plate.warnings)


def test_clean_and_irregular_series_are_not_flagged() -> None:
    assert find_decimal_loss({k: 3450 / 2 ** (k - 1) for k in range(1, 9)}) == ({}, False)
    # 4-fold then 3-fold steps: not a constant ratio but nowhere near 1000x
    irregular = {1: 10000, 2: 2500, 3: 625, 4: 208.333, 5: 69.444, 6: 23.148}
    assert find_decimal_loss(irregular)[0] == {}
    # a 10x slip is not the Excel defect
    slip = {k: 1000 / 3 ** (k - 1) for k in range(1, 8)}
    slip[4] *= 10
    assert find_decimal_loss(slip)[0] == {}


def test_ambiguous_cases_are_flagged_but_not_repaired() -> None:
    series = {k: 3450 / 2 ** (k - 1) for k in range(1, 9)}
    series[5] = 215625.5  # not an integer: not a lost decimal point of a 3-decimal value
    suspects, unambiguous = find_decimal_loss(series)
    assert set(suspects) == {5} and not unambiguous
    short = {1: 1000.0, 2: 500.0, 3: 250000.0}  # too few points to trust the series
    assert find_decimal_loss(short) == ({}, False)


def test_ambiguous_plate_warns_without_repair(tmp_path: Path) -> None:
    rows = ["well,analyte,mfi,sample,expected_conc"]
    values = [3450 / 2 ** (k - 1) for k in range(1, 9)]
    values[4] = 215625.5
    for k, v in enumerate(values, start=1):
        rows.append(f"A{k},IL-6,{1000 - k},Standard{k},{v!r}")
    rows.append("H12,IL-6,5,Background0,")
    path = tmp_path / "plate.csv"
    path.write_text("\n".join(rows) + "\n")
    plate = read_plate(path)
    assert plate.repairs == []
    assert any("ambiguous" in w and "standard 5" in w for w in plate.warnings)
    assert plate.wells.loc[plate.wells["well"] == "A5", "expected_conc"].iat[0] == 215625.5


@settings(max_examples=EXAMPLES, deadline=None)
@given(start=st.integers(min_value=2_000, max_value=90_000),
       ratio=st.sampled_from([2.0, 2.5, 3.0, 4.0, 5.0]),
       n=st.integers(min_value=6, max_value=12),
       data=st.data())
def test_property_lost_decimal_points_are_recovered(start: int, ratio: float, n: int,
                                                    data: st.DataObject) -> None:
    # keep every value >= 1 so that printing with three decimals keeps the series geometric
    n = min(n, 1 + int(math.log(start) / math.log(ratio)))
    if n < 5:
        return
    true = {k: round(start / ratio ** (k - 1), 3) for k in range(1, n + 1)}
    # the defect hits values printed with exactly three decimals
    eligible = [k for k, v in true.items() if round(v * 1000) % 10 != 0]
    if not eligible:
        return
    hit = data.draw(st.sets(st.sampled_from(eligible), min_size=1,
                            max_size=max(1, min(len(eligible), n // 3))))
    mangled = {k: (float(round(v * 1000)) if k in hit else v) for k, v in true.items()}
    suspects, unambiguous = find_decimal_loss(mangled)
    assert set(suspects) == hit
    assert unambiguous
    for k in hit:
        assert suspects[k] == pytest.approx(true[k], rel=1e-12)
