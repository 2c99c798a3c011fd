"""Standard-curve fitting and inversion against xPONENT, Bio-Plex Manager, drc and nCal."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from immunoprofile.cytokine.curves import (CurveFit, curve_from_params, fit_curve, from_bioplex,
                                           from_drc, from_ncal, to_bioplex, to_drc, to_ncal,
                                           weights_for)


@pytest.fixture(scope="module")
def oracles(reference_dir):
    return reference_dir / "cytokine" / "oracles"


@pytest.fixture(scope="module")
def xponent(oracles):
    coef = pd.read_csv(oracles / "xponent_drlumi_plate1_5PL_coefficients.csv").set_index("analyte")
    long = pd.read_csv(oracles / "xponent_drlumi_plate1_long.csv")
    return coef, long


def _standards(long: pd.DataFrame, analyte: str) -> pd.DataFrame:
    rows = long[(long.analyte == analyte) & long["sample"].str.startswith("Standard")]
    return rows


def _numeric_results(long: pd.DataFrame, analyte: str) -> pd.DataFrame:
    rows = long[long.analyte == analyte]
    return rows[rows.result_flag.isna() & rows.result_value.notna()]


# ---------------------------------------------------------------- xPONENT (drLumi plate 1)
def test_xponent_backcalculation_from_its_coefficients(xponent):
    coef, long = xponent
    worst, n = 0.0, 0
    for analyte, row in coef.iterrows():
        curve = curve_from_params(row.A, row.B, row.C, row.D, row.F)
        res = _numeric_results(long, analyte)
        ours = curve.inverse(res.net_mfi.to_numpy()) * res.dilution_factor.fillna(1).to_numpy()
        rel = np.abs(ours / res.result_value.to_numpy() - 1)
        worst, n = max(worst, float(rel.max())), n + len(res)
    assert n == 2580
    assert worst <= 1e-9


def test_xponent_out_of_curve_markers_match_side(xponent):
    coef, long = xponent
    for analyte, row in coef.iterrows():
        curve = curve_from_params(row.A, row.B, row.C, row.D, row.F)
        rows = long[(long.analyte == analyte) & long.result_flag.isin(["<", ">"])]
        side = curve.side(rows.net_mfi.to_numpy())
        expected = np.where(rows.result_flag == "<", -1, 1)
        np.testing.assert_array_equal(side, expected)
        inside = long[(long.analyte == analyte) & long.result_flag.isna()
                      & long.result_value.notna()]
        assert (curve.side(inside.net_mfi.to_numpy()) == 0).all()
        assert np.isnan(curve.inverse(rows.net_mfi.to_numpy())).all()


def test_xponent_refit_reproduces_results(xponent):
    coef, long = xponent
    within, worst = [], {}
    for analyte, row in coef.iterrows():
        std = _standards(long, analyte)
        fit = fit_curve(std.expected_conc, std.net_mfi, model="5pl", weights="1/y2")
        assert fit.converged, (analyte, fit.message)
        res = _numeric_results(long, analyte)
        ours = fit.inverse(res.net_mfi.to_numpy()) * res.dilution_factor.fillna(1).to_numpy()
        rel = float(np.max(np.abs(ours / res.result_value.to_numpy() - 1)))
        worst[analyte] = rel
        if rel <= 1e-5:
            within.append(analyte)
        # weighted R² with the weighted mean of y is what xPONENT prints
        if rel <= 1e-5:
            assert fit.r2_weighted == pytest.approx(row.R2_reported, abs=1e-7)
    assert len(within) >= 28, worst


def test_xponent_ifng_global_search_beats_vendor_optimum(xponent):
    coef, long = xponent
    row = coef.loc["IFNg"]
    std = _standards(long, "IFNg")
    x, y = std.expected_conc.to_numpy(), std.net_mfi.to_numpy()
    vendor = curve_from_params(row.A, row.B, row.C, row.D, row.F)
    vendor_cost = float(np.sum(weights_for(y, "1/y2") * (y - vendor.predict(x)) ** 2))
    fit = fit_curve(x, y, model="5pl", weights="1/y2", search="global")
    assert fit.converged
    assert fit.cost < vendor_cost * (1 - 1e-3)
    assert fit.r2_weighted > row.R2_reported


# ---------------------------------------------------------------- Bio-Plex Manager (LabKey)
def _num(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce")


def test_bioplex_obs_conc_from_printed_curves(oracles):
    long = pd.read_csv(oracles / "bioplex_labkey_long.csv")
    curves = pd.read_csv(oracles / "bioplex_labkey_curves.csv")
    checked = agree = 0
    medians = []
    for _, c in curves.iterrows():
        curve = from_bioplex(c.a, c.b, c.c, c.d, c.e)
        rows = long[(long.file == c.file) & (long.analyte == c.analyte)]
        obs, fi = _num(rows["Obs Conc"]), _num(rows["FI - Bkgd"])
        dil = _num(rows.Dilution).fillna(1.0)
        m = obs.notna() & fi.notna() & (obs > 0)
        obs, fi, dil = obs[m].to_numpy(), fi[m].to_numpy(), dil[m].to_numpy()
        # FI is printed to 0.1 and Obs Conc to 2 decimals: accept anything the rounding allows
        lo = curve.inverse(fi - 0.05) * dil
        hi = curve.inverse(fi + 0.05) * dil
        est = curve.inverse(fi) * dil
        band_lo = np.fmin(lo, hi) * (1 - 2e-3) - 0.0051
        band_hi = np.fmax(lo, hi) * (1 + 2e-3) + 0.0051
        agree += int(np.sum((obs >= band_lo) & (obs <= band_hi)))
        checked += len(obs)
        medians.append(np.nanmedian(np.abs(est / obs - 1)))
    assert checked > 2900
    assert agree >= checked - 2  # 04-17A32 ENV4: one FI printed on the asymptote
    assert np.median(medians) < 1e-3
    # the round trip through the converter is exact
    c = curves.iloc[0]
    assert to_bioplex(from_bioplex(c.a, c.b, c.c, c.d, c.e)) == pytest.approx(
        {"a": c.a, "b": c.b, "c": c.c, "d": c.d, "e": c.e})


def _pnlinco_refit_errors(long: pd.DataFrame, weights: str) -> list[float]:
    plate = long[long.file == "labkey_pnLINCO20070302A.xls"]
    errors: list[float] = []
    for analyte, rows in plate.groupby("analyte"):
        std = rows[rows.Type.str.startswith("S") & (_num(rows.Outlier).fillna(0) != 1)]
        x, y = _num(std["Exp Conc"]), _num(std["FI - Bkgd"])
        m = x.notna() & y.notna()
        # the rows are replicate means of FI - Bkgd (Bio-Plex averages duplicates)
        fit = fit_curve(x[m], y[m], model="4pl", weights=weights, power=1.8)
        assert fit.converged, analyte
        unk = rows[rows.Type.str.startswith("X")]
        obs, fi = _num(unk["Obs Conc"]), _num(unk["FI - Bkgd"])
        mm = obs.notna() & fi.notna()
        est = fit.inverse(fi[mm].to_numpy()) * _num(unk.Dilution)[mm].to_numpy()
        errors.extend(np.abs(est / obs[mm].to_numpy() - 1))
    return errors


def test_bioplex_4pl_power_law_refit(oracles):
    long = pd.read_csv(oracles / "bioplex_labkey_long.csv")
    power = _pnlinco_refit_errors(long, "power")  # Bio-Plex's power-law variance, 1/FI^1.8
    assert len(power) > 500
    assert np.median(power) <= 1e-3
    assert np.nanmax(power) < 0.05
    # the weighting is what makes the match: unweighted fits are clearly further off
    unweighted = _pnlinco_refit_errors(long, "none")
    assert np.median(unweighted) > 5 * np.median(power)


# ---------------------------------------------------------------- drc and nCal
def test_drc_ll4_ryegrass_ols(oracles):
    data = pd.read_csv(oracles / "drc_ryegrass_data.csv")
    assert (data.conc == 0).any()
    fit = fit_curve(data.conc, data.rootl, model="4pl", weights="none")
    drc = to_drc(fit)
    assert drc["b"] == pytest.approx(2.98222, rel=2e-5)
    assert drc["c"] == pytest.approx(0.48141, rel=2e-5)
    assert drc["d"] == pytest.approx(7.79296, rel=2e-5)
    assert drc["e"] == pytest.approx(3.05795, rel=2e-5)
    assert fit.cost == pytest.approx(5.400215, rel=1e-6)
    back = from_drc(**{k: drc[k] for k in "bcde"})
    np.testing.assert_allclose(back.predict(data.conc), fit.predict(data.conc), rtol=1e-12)


def test_ncal_5pl_inverse_checks(oracles):
    params = pd.read_csv(oracles / "nCal_p.eotaxin_params.csv", index_col=0)
    checks = pd.read_csv(oracles / "nCal_5PL_inverse_checks.csv")
    for _, row in checks.iterrows():
        p = params.loc[int(row.param_row)]
        curve = from_ncal(p.c, p.d, p.b, p.e, p.f)
        got = curve.inverse([row.y], below=0.0, above=np.inf)[0]
        if np.isfinite(row.expected_x):
            assert got == pytest.approx(row.expected_x, abs=5e-5)
        else:
            assert got == np.inf
        assert to_ncal(curve) == pytest.approx({"c": p.c, "d": p.d, "b": p.b, "e": p.e,
                                                "f": p.f})
    # default convention: outside the asymptotes is NaN, with the side reported
    p = params.loc[1]
    curve = from_ncal(p.c, p.d, p.b, p.e, p.f)
    assert np.isnan(curve.inverse([1.0, 11.0])).all()
    assert curve.side([1.0, 8.0, 11.0]).tolist() == [-1, 0, 1]


# ---------------------------------------------------------------- behaviour
def test_failed_fit_is_a_flag_not_an_exception():
    few = fit_curve([1, 2, 4], [10, 20, 40], model="5pl")
    assert not few.converged and "too few" in few.message
    flat = fit_curve([1, 2, 4, 8, 16, 32], [5.0] * 6, model="4pl")
    assert not flat.converged and "dynamic range" in flat.message
    assert np.isnan(flat.inverse([5.0])).all()
    empty = fit_curve([np.nan] * 6, [1, 2, 3, 4, 5, 6])
    assert not empty.converged


def test_noisy_and_falling_curves_converge():
    rng = np.random.default_rng(7)
    x = np.repeat(2000 / 3.0 ** np.arange(8), 2)
    truth = curve_from_params(20000, 15, 150, -1.3, 1)  # falling (competitive assay)
    y = truth.predict(x) * rng.lognormal(0, 0.05, x.size)
    fit = fit_curve(x, y, model="4pl", weights="1/y2")
    assert fit.converged and not fit.increasing and fit.D < 0
    mid = truth.predict(np.array([50.0]))
    assert fit.inverse(mid)[0] == pytest.approx(50.0, rel=0.15)
    five = fit_curve(x, y, model="5pl", weights="1/y", replicate_means=True)
    assert five.converged and five.n_points == 8


def test_replicate_means_and_to_dict():
    x = [100, 100, 10, 10, 1, 1, 0.1, 0.1, 0.01, 0.01]
    truth = curve_from_params(5, 20000, 30, -1.1, 0.8)
    y = truth.predict(np.array(x, dtype=float))
    fit = fit_curve(x, y, model="5pl", weights="1/y2", replicate_means=True)
    assert fit.n_points == 5 and fit.x_min == 0.01 and fit.x_max == 100
    d = fit.to_dict()
    assert set("ABCDF") <= set(d) and d["converged"] is True
    assert fit.r2_weighted == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(fit.predict(x), y, rtol=1e-6)


def test_unknown_options_raise():
    with pytest.raises(ValueError):
        fit_curve([1, 2], [1, 2], model="3pl")
    with pytest.raises(ValueError):
        fit_curve([1, 2], [1, 2], weights="1/x")
    with pytest.raises(ValueError):
        weights_for([1.0], "bogus")


def test_weights_zero_response_gets_weight_one():
    w = weights_for([0.0, 2.0, -4.0], "1/y2")
    np.testing.assert_allclose(w, [1.0, 0.25, 1 / 16])
    np.testing.assert_allclose(weights_for([0.0, 4.0], "power", 1.8), [1.0, 4.0 ** -1.8])


@settings(max_examples=150, deadline=None)
@given(A=st.floats(-50, 200), span=st.floats(50, 1e5), rising=st.booleans(),
       logC=st.floats(-3, 8), D=st.floats(0.3, 6), negD=st.booleans(), F=st.floats(0.15, 6),
       five=st.booleans(), u=st.floats(-4, 4))
def test_inverse_of_predict_is_identity(A, span, rising, logC, D, negD, F, five, u):
    B = A + span if rising else A - span
    C = math.exp(logC)
    curve = curve_from_params(A, B, C, -D if negD else D, F if five else 1.0)
    x = C * math.exp(u)
    y = curve.predict(np.array([x]))
    frac = (y[0] - A) / (B - A)
    assume(1e-7 < frac < 1 - 1e-7)  # numerically inside the asymptotes
    back = curve.inverse(y)[0]
    # conditioning: dx/x = dy / (y' x); allow a few ulps of y scaled by the local slope
    assert back == pytest.approx(x, rel=1e-6 + 1e-13 / min(frac, 1 - frac) / D)
    assert curve.side(y)[0] == 0
    assert isinstance(curve, CurveFit)
