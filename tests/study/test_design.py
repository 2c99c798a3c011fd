"""Protocol windows: periods, visits, window deviations, round trip."""

from __future__ import annotations

import math

import pytest

from immunoprofile.study.design import DEFAULT_DESIGN, Period, StudyDesign, Visit


@pytest.mark.parametrize(("day", "period"), [
    (-56, "run-in"), (-60, "run-in"), (0, "run-in"), (1, "treatment"), (84, "treatment"),
    (85, "post-treatment"), (168, "post-treatment"), (175, "post-treatment"),
])
def test_period_for_day_follows_protocol_boundaries(day, period):
    assert DEFAULT_DESIGN.period_for_day(day) == period


def test_days_far_outside_every_period_have_none():
    assert DEFAULT_DESIGN.period_for_day(-100) is None
    assert DEFAULT_DESIGN.period_for_day(400) is None
    assert DEFAULT_DESIGN.period_for_day(math.nan) is None


def test_visit_window_keeps_end_of_treatment_sample_in_treatment():
    # week 12 drawn on day 86 is still the end-of-treatment sample
    assert DEFAULT_DESIGN.period_for_day(86) == "post-treatment"
    assert DEFAULT_DESIGN.period_for("week12", 86) == "treatment"
    # outside the visit window the day decides
    assert DEFAULT_DESIGN.period_for("week12", 100) == "post-treatment"
    assert DEFAULT_DESIGN.period_for("screening", None) == "run-in"


def test_nominal_days_and_order():
    assert DEFAULT_DESIGN.visit_names[:3] == ["screening", "week0", "week1"]
    assert DEFAULT_DESIGN.nominal_day("week12") == 84
    assert DEFAULT_DESIGN.nominal_day("week24") == 168
    assert DEFAULT_DESIGN.period_names == ["run-in", "treatment", "post-treatment"]
    assert [DEFAULT_DESIGN.period_for_visit(v) for v in DEFAULT_DESIGN.visit_names] == (
        ["run-in"] * 2 + ["treatment"] * 5 + ["post-treatment"] * 3)


def test_window_deviation_sign_and_size():
    assert DEFAULT_DESIGN.window_deviation("week4", 28) == 0
    assert DEFAULT_DESIGN.window_deviation("week4", 32) == 0
    assert DEFAULT_DESIGN.window_deviation("week4", 35) == 3
    assert DEFAULT_DESIGN.window_deviation("week4", 20) == -4


def test_screening_label_normalises_to_run_in():
    assert StudyDesign.normalise_period("Screening") == "run-in"
    assert StudyDesign.normalise_period("treatment") == "treatment"


def test_configurable_and_round_trips():
    design = StudyDesign(periods=(Period("run-in", -28, 0), Period("treatment", 1, 42)),
                         visits=(Visit("base", 0, 3, 0), Visit("end", 42, 2, 2)),
                         baseline_visit="base", end_of_treatment_visit="end", tolerance_days=0)
    assert design.period_for_day(43) is None
    assert design.period_for("end", 44) == "treatment"
    again = StudyDesign.from_dict(design.to_dict())
    assert again == design
    assert StudyDesign.from_dict(DEFAULT_DESIGN.to_dict()) == DEFAULT_DESIGN


def test_invalid_designs_are_refused():
    with pytest.raises(ValueError, match="overlap"):
        StudyDesign(periods=(Period("a", 0, 10), Period("b", 5, 20)))
    with pytest.raises(ValueError, match="not one of"):
        StudyDesign(baseline_visit="day0")
