"""Clinical table: validation, evaluability (>= 67 of 84 doses) and SCORAD response (>= 30 %)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from immunoprofile.errors import InputError
from immunoprofile.study.clinical import clinical_summary as _summary
from immunoprofile.study.clinical import read_clinical as _read
from immunoprofile.study.design import EXAMPLE_TRIAL_DESIGN
from immunoprofile.study.manifest import ManifestError

# the thresholds under test are the example trial's protocol, named (there is no default)


def read_clinical(path, **kw):
    return _read(path, design=EXAMPLE_TRIAL_DESIGN, **kw)


def clinical_summary(clin, **kw):
    return _summary(clin, design="example-trial", **kw)


def table(rows):
    return pd.DataFrame(rows, columns=["subject_id", "visit", "scorad", "doses_received", "age", "sex"])


def test_evaluability_and_response_thresholds():
    clin = read_clinical(table([
        ("S01", "week0", 60.0, 0, 20, "F"), ("S01", "week12", 42.0, 67, 20, "F"),   # -30 %, 67 doses
        ("S02", "week0", 60.0, 0, 25, "M"), ("S02", "week12", 42.6, 66, 25, "M"),   # -29 %, 66 doses
        ("S03", "week0", 50.0, 0, 30, "M"), ("S03", "week8", 30.0, 50, 30, "M"),    # no week12
    ]))
    s = clinical_summary(clin)
    assert bool(s.loc["S01", "evaluable"]) and not bool(s.loc["S02", "evaluable"])
    assert s.loc["S01", "scorad_pct_change"] == pytest.approx(-30.0)
    assert bool(s.loc["S01", "responder"]) and not bool(s.loc["S02", "responder"])
    assert math.isnan(s.loc["S03", "scorad_pct_change"]) and pd.isna(s.loc["S03", "responder"])
    assert s.loc["S03", "total_doses"] == 50 and not bool(s.loc["S03", "evaluable"])
    assert s.loc["S02", "sex"] == "M" and s.loc["S02", "age"] == 25


def test_per_visit_dose_counting_sums():
    clin = read_clinical(table([("S01", "week4", 50, 28, 20, "F"), ("S01", "week8", 50, 28, 20, "F"),
                                ("S01", "week12", 50, 20, 20, "F")]))
    assert clinical_summary(clin, doses="per_visit").loc["S01", "total_doses"] == 76
    assert clinical_summary(clin).loc["S01", "total_doses"] == 28


def test_all_problems_reported(tmp_path):
    path = tmp_path / "clinical.csv"
    path.write_text("subject_id,visit,scorad,doses_received,age,sex\n"
                    "S01,week0,abc,0,20,F\nS01,week99,50,0,20,F\nS01,week0,50,0,200,X\n")
    with pytest.raises(ManifestError) as info:
        read_clinical(path)
    cols = sorted((p.line, p.column) for p in info.value.problems)
    assert cols == [(2, "scorad"), (3, "visit"), (4, "age"), (4, "sex"), (4, "visit")]


def test_synthetic_trial_clinical(trial):
    s = clinical_summary(read_clinical(trial["clinical"]))
    assert len(s) == 8
    # doses at week 12 are 60 + 3k: subjects 1-3 fall short of 67
    assert list(s["evaluable"].astype(bool)) == [False] * 3 + [True] * 5


def test_no_design_is_an_input_error_not_the_example_protocol():
    clin = table([("S01", "week0", 60.0, 0, 20, "F")])
    with pytest.raises(InputError, match="no study design given"):
        _read(clin)
    with pytest.raises(InputError, match="no study design given"):
        _summary(read_clinical(clin))
