"""Manifest validation: every problem at once, derived and checked periods, QC plate samples."""

from __future__ import annotations

import os

import copy
import logging

import pandas as pd
import pytest

from immunoprofile.errors import InputError
from immunoprofile.study.manifest import ManifestError, read_manifest

HEADER = "sample_id,subject_id,visit,study_day,period,assay,file,plate,well\n"


def write(tmp_path, body: str, header: str = HEADER):
    path = tmp_path / "manifest.csv"
    path.write_text(header + body, encoding="utf-8")
    return path


def test_good_manifest_derives_period_and_sorts(tmp_path):
    path = write(tmp_path, (
        "b,S01,week4,29,,flow,b.fcs,,\n"
        "a,S01,screening,-58,screening,flow,a.fcs,,\n"
        "c,S01,week12,86,,cytokine,p1.csv,P1,a1; A2\n"
        "d,S02,week16,113,post-treatment,flow,d.fcs,,\n"))
    m = read_manifest(path, design="example-trial")
    assert list(m["sample_id"]) == ["a", "b", "c", "d"]
    assert list(m["period"]) == ["run-in", "treatment", "treatment", "post-treatment"]
    assert m.loc[m["sample_id"] == "c", "well"].item() == "A1;A2"
    assert m["study_day"].dtype == float
    assert list(m["line"]) == [3, 2, 4, 5]


def test_every_problem_reported_at_once(tmp_path):
    path = write(tmp_path, (
        "a,S01,wk4,28,,flow,a.fcs,,\n"            # bad visit
        "b,S01,week8,fifty,,flow,b.fcs,,\n"       # bad day
        "c,S01,week12,84,post-treatment,flow,c.fcs,,\n"  # period disagrees
        "d,S02,week0,0,,elisa,d.csv,,\n"          # bad assay
        "e,S02,week2,14,,cytokine,p.csv,,Z99\n"   # no plate, bad well
        "e,S02,week4,28,,cytokine,p.csv,P1,B1\n"  # duplicate id
        "f,S03,week0,500,,flow,f.fcs,,\n"))       # outside every period
    with pytest.raises(ManifestError) as info:
        read_manifest(path, design="example-trial")
    err = info.value
    assert isinstance(err, InputError)
    where = {(p.line, p.column) for p in err.problems}
    assert {(2, "visit"), (3, "study_day"), (4, "period"), (5, "assay"), (6, "plate"),
            (6, "well"), (7, "sample_id"), (8, "study_day")} <= where
    text = str(err)
    assert "\n" not in text and str(path) in text
    assert "week0" in text and "got 'wk4'" in text  # allowed values and the bad value
    bad_visit = next(p for p in err.problems if p.column == "visit")
    assert "screening" in bad_visit.allowed
    again = copy.deepcopy(err)  # goes through __reduce__, as a process pool would
    assert len(again.problems) == len(err.problems)


def test_missing_columns_and_missing_file(tmp_path):
    path = write(tmp_path, "a,S01\n", header="sample_id,subject_id\n")
    with pytest.raises(ManifestError, match="visit") as info:
        read_manifest(path, design="example-trial")
    assert info.value.problems[0].line == 1
    with pytest.raises(InputError, match="not found"):
        read_manifest(tmp_path / "nope.csv", design="example-trial")


def test_out_of_window_visit_is_kept_and_measured(tmp_path, caplog, monkeypatch):
    # a CLI test earlier in the session may have stopped propagation to the root logger
    monkeypatch.setattr(logging.getLogger("immunoprofile"), "propagate", True)
    path = write(tmp_path, "a,S01,week4,40,,flow,a.fcs,,\n")
    m = read_manifest(path, design="example-trial")
    assert m["window_deviation_days"].item() == 8
    assert m["period"].item() == "treatment"
    assert "outside its window" in caplog.text


def test_check_files(tmp_path):
    (tmp_path / "a.fcs").write_bytes(b"")
    path = write(tmp_path, "a,S01,week0,0,,flow,a.fcs,,\nb,S01,week1,7,,flow,missing.fcs,,\n")
    with pytest.raises(ManifestError, match="file not found") as info:
        read_manifest(path, design="example-trial", check_files=True)
    assert [p.line for p in info.value.problems] == [3]


def test_same_subject_visit_assay_twice_is_a_problem(tmp_path):
    path = write(tmp_path, "a,S01,week0,0,,flow,a.fcs,,\nb,S01,week0,-1,,flow,b.fcs,,\n")
    with pytest.raises(ManifestError, match="already has a flow sample"):
        read_manifest(path, design="example-trial")


def test_extra_columns_survive(tmp_path):
    path = tmp_path / "m.csv"
    pd.DataFrame({"sample_id": ["a"], "subject_id": ["S01"], "visit": ["week0"], "study_day": [0],
                  "assay": ["flow"], "file": ["a.fcs"], "tube": ["T1"]}).to_csv(path, index=False)
    m = read_manifest(path, design="example-trial")
    assert m["tube"].item() == "T1" and m["period"].item() == "run-in"


def test_synthetic_trial_manifest_reads(trial):
    m = read_manifest(trial["manifest"], design="example-trial")
    assert set(m["assay"]) == {"flow", "cytokine"}
    assert m.groupby("subject_id")["visit"].nunique().max() == 10


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_cell = st.one_of(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=",\"\r\n"),
                          max_size=8),
                  st.sampled_from(["week0", "week4", "screening", "flow", "cytokine", "0", "-56", "84",
                                   "run-in", "treatment", "A1", "P1", ""]))


@settings(max_examples=int(os.environ.get("IMMUNOPROFILE_FUZZ_EXAMPLES", 40)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(_cell, min_size=9, max_size=9), min_size=1, max_size=6))
def test_fuzz_any_table_either_reads_or_raises_manifest_error(tmp_path, rows):
    path = tmp_path / "fuzz.csv"
    path.write_text(HEADER + "".join(",".join(r) + "\n" for r in rows), encoding="utf-8")
    try:
        m = read_manifest(path, design="example-trial")
    except InputError as exc:  # ManifestError or an unreadable CSV: one line, names the file
        assert "\n" not in str(exc) and str(path) in str(exc)
    else:
        assert set(m["period"]) <= {"run-in", "treatment", "post-treatment"}
        assert len(m) == len(rows)


def test_no_design_is_an_input_error_not_the_example_protocol(trial):
    """There is no default protocol (issue 13): the manifest and the assembly need a design."""
    from immunoprofile.errors import InputError
    from immunoprofile.study import assemble

    with pytest.raises(InputError, match="no study design given for the manifest"):
        read_manifest(trial["manifest"])
    with pytest.raises(InputError, match="no study design given for the assembly"):
        assemble(trial["manifest"], flow_dir=trial["flow"])
