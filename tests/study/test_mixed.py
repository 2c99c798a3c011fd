"""The dense REML period model: degenerate fits are refused, never reported with a p.

Agreement with lmerTest is tested against the R fixtures (test_r_reference.py); here the
refusals and the optimiser's traps.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from immunoprofile.study import mixed
from immunoprofile.study.compare import mixed_model_contrasts
from immunoprofile.study.mixed import fit_period_lmm

PERIODS = ["run-in", "treatment", "post-treatment"]


def trial(seed: int = 3, cell_sd: float = 0.3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(8):
        u = rng.normal(0, 1)
        for p, visits, effect in (("run-in", 2, 0.0), ("treatment", 4, -0.5), ("post-treatment", 3, 0.0)):
            c = rng.normal(0, cell_sd)
            rows += [{"subject": f"S{s}", "period": p, "y": u + effect + c + rng.normal(0, 0.2)}
                     for _ in range(visits)]
    return pd.DataFrame(rows)


def test_fit_is_a_reml_minimum_with_finite_satterthwaite_df():
    d = trial()
    fit = fit_period_lmm(d["y"], d["subject"], d["period"], PERIODS)
    assert fit.status == "ok" and np.all(fit.theta > 0)
    c = fit.contrast("run-in", "treatment")
    assert c["status"] == "ok" and 2 < c["df"] < len(d) and 0 <= c["p"] <= 1
    assert c["ci_low"] < c["estimate"] < c["ci_high"]
    # the criterion is lowest at the optimum (any nearby theta is worse)
    crit = mixed._Criterion((d["y"].to_numpy() - d["y"].mean()) / d["y"].std(ddof=0),
                            *mixed._design(d["y"].to_numpy(), d["subject"].to_numpy(),
                                           d["period"].to_numpy(), PERIODS))
    best = crit.value(fit.theta)
    for step in ([0.01, 0], [-0.01, 0], [0, 0.01], [0, -0.01]):
        assert crit.value(fit.theta + np.array(step)) > best


def test_refusals_say_why():
    d = trial()
    one = d[d["subject"].isin(["S0", "S1"])]
    assert "too few subjects" in fit_period_lmm(one["y"], one["subject"], one["period"], PERIODS).reason
    flat = fit_period_lmm(np.ones(len(d)), d["subject"], d["period"], PERIODS)
    assert flat.status == "not estimable" and flat.reason == "no variation"
    out = mixed_model_contrasts(np.ones(len(d)), d["subject"].to_numpy(), d["period"].to_numpy(),
                                PERIODS, [("run-in", "treatment")])
    assert np.isnan(out[("run-in", "treatment")]["p"])
    fit = fit_period_lmm(d["y"], d["subject"], d["period"], PERIODS[:2] + ["missing"])
    assert fit.contrast("run-in", "missing")["status"] == "not estimable"


def test_optimiser_failure_is_not_estimable(monkeypatch):
    d = trial()
    monkeypatch.setattr(mixed, "_optimise", lambda crit: (np.array([1.0, 1.0]), 0.0,
                                                          ["optimiser did not converge (gradient 0.5)"]))
    fit = fit_period_lmm(d["y"], d["subject"], d["period"], PERIODS)
    c = fit.contrast("run-in", "treatment")
    assert fit.status == "not estimable" and np.isnan(c["p"]) and "did not converge" in c["reason"]


def test_non_minimum_is_refused(monkeypatch):
    # a stationary point that is not a minimum (theta far off the optimum): negative eigenvalue
    d = trial()
    monkeypatch.setattr(mixed, "_optimise", lambda crit: (np.array([0.0, 8.0]), crit.value(
        np.array([0.0, 8.0])), []))
    fit = fit_period_lmm(d["y"], d["subject"], d["period"], PERIODS)
    assert fit.status == "not estimable"
    assert "not a minimum" in fit.reason or "boundary optimum not verified" in fit.reason


def test_zero_variance_start_is_left_not_trapped():
    # theta = 0 is stationary in theta even when the variance should be positive (the gradient
    # has a factor theta): the optimiser must leave it and find the interior optimum
    d = trial(seed=11, cell_sd=0.6)
    X, A = mixed._design(d["y"].to_numpy(), d["subject"].to_numpy(), d["period"].to_numpy(), PERIODS)
    crit = mixed._Criterion((d["y"].to_numpy() - d["y"].mean()) / d["y"].std(ddof=0), X, A)
    assert crit.gradient(np.array([1.0, 0.0]))[1] == 0.0 and crit.slopes(np.array([1.0, 0.0]))[1] < 0
    theta, fun, problems = mixed._optimise(crit)
    assert not problems and theta[1] > 0.1 and fun < crit.value(np.array([theta[0], 0.0]))


def test_single_visit_per_period_is_not_separable():
    d = trial().groupby(["subject", "period"], as_index=False).first()
    fit = fit_period_lmm(d["y"], d["subject"], d["period"], PERIODS)
    assert fit.status == "not estimable" and "not separable" in fit.reason


@pytest.mark.parametrize("scale", [1e-6, 1e6])
def test_scale_invariant(scale):
    d = trial()
    a = fit_period_lmm(d["y"], d["subject"], d["period"], PERIODS).contrast("run-in", "treatment")
    b = fit_period_lmm(d["y"] * scale, d["subject"], d["period"], PERIODS).contrast("run-in", "treatment")
    assert b["p"] == pytest.approx(a["p"], rel=1e-6) and b["df"] == pytest.approx(a["df"], rel=1e-6)
    assert b["estimate"] == pytest.approx(a["estimate"] * scale, rel=1e-8)
