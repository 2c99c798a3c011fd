"""Period comparisons against scipy / statsmodels computed directly on small hand-made data."""

from __future__ import annotations

import itertools

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats

from immunoprofile.study.compare import (
    COLUMNS,
    bh,
    compare_periods,
    paired_contrast,
    wilcoxon_min_p,
)

PERIODS = ["run-in", "treatment", "post-treatment"]
VISITS = {"run-in": "week0", "treatment": "week8", "post-treatment": "week16"}


def hand_made(values: dict[str, np.ndarray], *, ftypes: dict[str, str] | None = None,
              scorad: np.ndarray | None = None, drug: tuple[str, ...] = ()) -> ad.AnnData:
    """One visit per period per subject; ``values[feature]`` is subjects × 3 periods (transformed)."""
    n = next(iter(values.values())).shape[0]
    subjects = [f"S{i:02d}" for i in range(1, n + 1)]
    obs = pd.DataFrame({"subject_id": [s for s in subjects for _ in PERIODS],
                        "period": [p for _ in subjects for p in PERIODS],
                        "visit": [VISITS[p] for _ in subjects for p in PERIODS]})
    obs.index = obs["subject_id"] + "|" + obs["visit"]
    obs["subject_id"] = pd.Categorical(obs["subject_id"], categories=subjects)
    obs["period"] = pd.Categorical(obs["period"], categories=PERIODS, ordered=True)
    if scorad is not None:  # per visit: 50 in run-in and post-treatment, changed by scorad % on treatment
        obs["scorad"] = np.column_stack([np.full(n, 50.0), 50.0 * (1 + scorad / 100.0),
                                         np.full(n, 50.0)]).reshape(-1)
    ftypes = ftypes or {}
    var = pd.DataFrame(index=list(values))
    var["feature_type"] = [ftypes.get(f, "frequency") for f in values]
    var["assay"] = ["cytokine" if t == "concentration" else "flow" for t in var["feature_type"]]
    var["statistic"] = ["concentration" if t == "concentration" else "pct_parent" for t in var["feature_type"]]
    var["unit"] = ["pg/mL" if t == "concentration" else "%" for t in var["feature_type"]]
    var["drug_readout"] = [f in drug for f in values]
    X = np.column_stack([v.reshape(-1) for v in values.values()]).astype(float)
    adata = ad.AnnData(X=X.copy(), obs=obs, var=var)
    adata.layers["transformed"] = X
    adata.layers["raw"] = X.copy()
    return adata


def rows(table, feature, contrast):
    return table[(table["feature"] == feature) & (table["contrast"] == contrast)].iloc[0]


@pytest.fixture(scope="module")
def shift_data():
    rng = np.random.default_rng(1)
    base = rng.normal(0, 1, 8)
    shift = np.column_stack([base, base - 0.5 - rng.uniform(0, 0.3, 8), base + rng.normal(0, 0.05, 8)])
    null = np.column_stack([base, base + rng.normal(0, 0.3, 8), base + rng.normal(0, 0.3, 8)])
    conc = np.column_stack([base, base + 0.3 + rng.normal(0, 0.05, 8), base])
    scorad = rng.normal(-30, 10, 8)
    return {"shift": shift, "null": null, "conc": conc, "scorad": scorad}


@pytest.fixture(scope="module")
def shift_table(shift_data):
    d = shift_data
    adata = hand_made({"shift": d["shift"], "null": d["null"], "conc": d["conc"]},
                      ftypes={"conc": "concentration"}, scorad=d["scorad"])
    return compare_periods(adata)


def test_consistent_shift_gives_the_exact_wilcoxon_floor(shift_table, shift_data):
    r = rows(shift_table, "shift", "run-in_vs_treatment")
    assert r["n"] == 8 and r["wilcoxon_method"] == "exact"
    assert r["p_wilcoxon"] == pytest.approx(0.0078125, abs=1e-12)
    assert r["p_min_wilcoxon"] == pytest.approx(2 / 2 ** 8)
    assert r["direction"] == "down"
    first, second = shift_data["shift"][:, 0], shift_data["shift"][:, 1]
    t = stats.ttest_rel(second, first)
    ci = t.confidence_interval(0.95)
    assert r["p_ttest"] == pytest.approx(t.pvalue, rel=1e-10)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert r["estimate"] == pytest.approx(np.mean(second - first))
    assert r["median_diff"] == pytest.approx(np.median(second - first))
    assert list(shift_table.columns[:len(COLUMNS)]) == list(COLUMNS)


def test_null_feature_is_not_found(shift_table, shift_data):
    r = rows(shift_table, "null", "run-in_vs_treatment")
    d = shift_data["null"][:, 1] - shift_data["null"][:, 0]
    assert r["p_wilcoxon"] == pytest.approx(stats.wilcoxon(d, method="exact").pvalue)
    assert r["p_wilcoxon"] > 0.05


def test_friedman_is_exact_within_subject_permutation(shift_table, shift_data):
    x = shift_data["shift"]
    r = rows(shift_table, "shift", "friedman")
    assert r["n"] == 8 and r["friedman_method"] == "exact"
    # independent oracle: scipy enumerates all (3!)^8 within-subject permutations of the statistic
    stat = lambda *cols, axis: stats.friedmanchisquare(*cols, axis=axis).statistic  # noqa: E731
    ref = stats.permutation_test(tuple(x.T), stat, permutation_type="samples", vectorized=True,
                                 n_resamples=np.inf, alternative="greater")
    assert r["p_friedman"] == pytest.approx(ref.pvalue, rel=1e-9)
    # the chi-square approximation the old code used is a different (larger here) number
    assert abs(r["p_friedman"] - stats.friedmanchisquare(*x.T).pvalue) > 1e-4


def test_bh_within_family_and_contrast(shift_table):
    flow = shift_table[(shift_table["family"] == "flow") & (shift_table["contrast"] == "run-in_vs_treatment")]
    assert set(flow["feature"]) == {"shift", "null"}
    expected = stats.false_discovery_control(flow["p_wilcoxon"].to_numpy(), method="bh")
    assert np.allclose(flow["q"], expected)
    cyto = rows(shift_table, "conc", "run-in_vs_treatment")
    assert cyto["family"] == "cytokine" and cyto["q"] == pytest.approx(cyto["p_wilcoxon"])  # m = 1
    assert np.allclose(bh([0.01, np.nan, 0.04]), [0.02, np.nan, 0.04], equal_nan=True)


def test_fold_change_back_transformed_for_log_features(shift_table, shift_data):
    r = rows(shift_table, "conc", "run-in_vs_treatment")
    d = shift_data["conc"][:, 1] - shift_data["conc"][:, 0]
    assert r["fold_change"] == pytest.approx(10 ** d.mean())
    ci = stats.ttest_1samp(d, 0).confidence_interval(0.95)
    assert (r["fc_ci_low"], r["fc_ci_high"]) == pytest.approx((10 ** ci.low, 10 ** ci.high))
    assert np.isnan(rows(shift_table, "shift", "run-in_vs_treatment")["fold_change"])


def test_spearman_against_scorad_change_is_exact(shift_table, shift_data):
    r = rows(shift_table, "shift", "run-in_vs_treatment")
    d = shift_data["shift"][:, 1] - shift_data["shift"][:, 0]
    change = shift_data["scorad"]  # SCORAD % change of the period means (hand_made's construction)
    sp = stats.spearmanr(d, change)
    # independent oracle: scipy enumerates all 8! pairings of d against the fixed SCORAD change
    ref = stats.permutation_test((d,), lambda a: stats.spearmanr(a, change).statistic,
                                 permutation_type="pairings", n_resamples=np.inf)
    assert r["spearman_rho"] == pytest.approx(sp.statistic)
    assert r["p_spearman"] == pytest.approx(ref.pvalue, rel=1e-9) and r["spearman_method"] == "exact"
    assert np.isnan(rows(shift_table, "shift", "treatment_vs_post-treatment")["spearman_rho"])
    fam = shift_table[(shift_table["family"] == "flow") & shift_table["p_spearman"].notna()]
    assert np.allclose(fam["q_spearman"], bh(fam["p_spearman"].to_numpy()))


def brute_force_signed_rank_p(d: np.ndarray) -> float:
    """Exact two-sided p of the signed-rank statistic by enumerating all sign flips (midranks)."""
    d = d[d != 0]
    ranks = stats.rankdata(np.abs(d))
    observed = ranks[d > 0].sum()
    centre = ranks.sum() / 2
    flips = [sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=len(d))]
    flips = np.array(flips)
    return float(np.mean(np.abs(flips - centre) >= abs(observed - centre) - 1e-12))


def test_ties_use_the_exact_permutation_distribution():
    d = np.array([-1.0, -1.0, -2.0, -2.0, 3.0, -3.0, -4.0, -0.5])
    res = paired_contrast(np.zeros(8), d)
    assert res["wilcoxon_method"] == "exact-permutation" and "tied" in res["note"]
    assert res["p_wilcoxon"] == pytest.approx(brute_force_signed_rank_p(d))


def test_zeros_are_dropped_and_counted():
    d = np.array([0.0, -0.3, -0.5, -0.7, -0.9, -1.1, -1.3, 0.2])
    res = paired_contrast(np.zeros(8), d)
    assert "1 zero difference(s) dropped" in res["note"] and res["n"] == 8
    assert res["p_wilcoxon"] == pytest.approx(stats.wilcoxon(d[d != 0], method="exact").pvalue)
    assert res["p_min_wilcoxon"] == pytest.approx(wilcoxon_min_p(7))
    same = paired_contrast(np.ones(5), np.ones(5))
    assert same["p_wilcoxon"] == 1.0 and "all paired differences are zero" in same["note"]
    # 0/0: no t-test p and no CI (R's t.test refuses constant differences too)
    assert np.isnan(same["p_ttest"]) and np.isnan(same["ci_low"]) and np.isnan(same["ci_high"])


def test_missing_visits_and_too_few_subjects():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (8, 3))
    x[2, 1] = np.nan            # S03 has no treatment value
    sparse = np.full((8, 3), np.nan)
    sparse[:2] = rng.normal(0, 1, (2, 3))  # only two subjects measured at all
    table = compare_periods(hand_made({"x": x, "sparse": sparse}), mixed=False)
    assert rows(table, "x", "run-in_vs_treatment")["n"] == 7
    assert rows(table, "x", "run-in_vs_post-treatment")["n"] == 8
    assert rows(table, "x", "friedman")["n"] == 7
    r = rows(table, "sparse", "run-in_vs_treatment")
    assert r["n"] == 2 and np.isnan(r["p_wilcoxon"]) and "too few subjects" in r["note"]
    assert "too few subjects" in rows(table, "sparse", "friedman")["note"]


def test_mixed_model_needs_replicate_visits_per_period():
    # one visit per subject and period: the subject:period variance cannot be told from the
    # residual, so the contrast is refused with the reason instead of getting a p
    rng = np.random.default_rng(5)
    subj = rng.normal(0, 1, 8)
    x = np.column_stack([subj, subj - 0.4, subj - 0.1]) + rng.normal(0, 0.2, (8, 3))
    r = rows(compare_periods(hand_made({"x": x})), "x", "run-in_vs_treatment")
    assert np.isnan(r["p_mixed"]) and r["mixed_status"] == "not estimable"
    assert "not separable from the residual" in r["note"]


def test_options_mapping_as_a_pipeline_config_passes_it():
    x = np.random.default_rng(9).normal(0, 1, (8, 3))
    adata = hand_made({"x": x})
    via_options = compare_periods(adata, options={"mixed": False, "min_subjects": 9})
    assert "too few subjects" in rows(via_options, "x", "run-in_vs_treatment")["note"]
    assert via_options["p_mixed"].isna().all()
    from immunoprofile.errors import InputError
    with pytest.raises(InputError, match="unknown compare option"):
        compare_periods(adata, options={"alpah": 0.1})


def test_drug_readouts_are_pharmacokinetic():
    x = np.column_stack([np.zeros(8), np.full(8, 1.5) + np.arange(8) / 100, np.zeros(8)])
    table = compare_periods(hand_made({"IL-1RA|pg/mL": x}, ftypes={"IL-1RA|pg/mL": "concentration"},
                                      drug=("IL-1RA|pg/mL",)), mixed=False)
    r = rows(table, "IL-1RA|pg/mL", "run-in_vs_treatment")
    assert r["family"] == "pharmacokinetic" and "pharmacokinetic" in r["note"] and r["direction"] == "up"


def test_compare_cli_end_to_end(study, tmp_path):
    from immunoprofile.cli import cli
    from immunoprofile.study.matrix import write_study

    path = write_study(study, tmp_path / "study.h5ad")
    result = CliRunner().invoke(cli, ["compare", str(path), "--out", str(tmp_path / "cmp"), "--no-mixed"])
    assert result.exit_code == 0, result.output
    assert "cannot go below 0.007812" in result.output
    table = pd.read_csv(tmp_path / "cmp" / "comparisons.csv")
    for col in ("feature", "family", "contrast", "n", "estimate", "ci_low", "ci_high", "fold_change",
                "p_wilcoxon", "p_ttest", "p_mixed", "q", "direction"):
        assert col in table.columns
    assert list(table["population"].unique()) == ["evaluable", "all"]
    th2 = rows(table[table["population"] == "all"], "/Cells/CD3+/CD4+/Th2|pct_parent", "run-in_vs_treatment")
    assert th2["direction"] == "down" and th2["p_wilcoxon"] == pytest.approx(0.0078125, rel=1e-4)
    ev = rows(table[table["population"] == "evaluable"], "/Cells/CD3+/CD4+/Th2|pct_parent",
              "run-in_vs_treatment")
    excluded = [s for s in study.obs.drop_duplicates("subject_id").query("evaluable != True")["subject_id"]]
    assert excluded and ev["n"] == 8 - len(excluded)
    assert all(s in ev["excluded_subjects"] and s in ev["note"] for s in excluded)
    assert (tmp_path / "cmp" / "analysis_plan.json").is_file()
    assert (tmp_path / "cmp" / "provenance.json").is_file()
    bad = CliRunner().invoke(cli, ["compare", str(tmp_path / "missing.h5ad"), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2


def test_estimands_choose_the_visits_of_a_period(study):
    th2 = "/Cells/CD3+/CD4+/Th2|pct_parent"
    plateau = {"treatment": ["week4", "week8", "week12"]}
    table = compare_periods(study, mixed=False, populations=["all"], estimands=plateau)
    plan = table.attrs["plan"]
    assert plan["estimands"]["treatment"]["visits"] == ["week4", "week8", "week12"]
    assert plan["estimands"]["run-in"]["visits"] == ["screening", "week0"]
    j = list(study.var_names).index(th2)
    t = np.asarray(study.layers["transformed"])[:, j]
    obs = study.obs
    d = []
    for s in obs["subject_id"].cat.categories:
        mine = (obs["subject_id"] == s).to_numpy()
        run = t[mine & obs["visit"].isin(["screening", "week0"]).to_numpy()]
        trt = t[mine & obs["visit"].isin(plateau["treatment"]).to_numpy()]
        if np.isfinite(run).any() and np.isfinite(trt).any():
            d.append(np.nanmean(trt) - np.nanmean(run))
    r = rows(table, th2, "run-in_vs_treatment")
    assert r["estimate"] == pytest.approx(np.mean(d)) and r["n"] == len(d)
    from immunoprofile.errors import InputError
    with pytest.raises(InputError, match="not treatment visits"):
        compare_periods(study, mixed=False, estimands={"treatment": ["week16"]})
