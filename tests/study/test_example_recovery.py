"""The bundled example trial end to end: raw FCS files and plate exports → gate → cytokines →
assemble → compare, checked against the simulation's truth (example_data/truth/effects.csv).

Criteria (what n = 8 paired subjects can show):

* every simulated mover is found in the right direction for run-in → treatment with an exact
  Wilcoxon p < 0.05 (the floor is 2/2^8 = 0.0078) and a Friedman p < 0.05;
* treatment → post-treatment (n = 7: one subject dropped out) the direction is right for every
  mover, and p < 0.05 for the large effects (fold ≥ 1.5 either way; the modest Treg rise that
  wanes slowly after the last dose is not expected to reach it);
* the negative controls are not found moving: exact Wilcoxon p ≥ 0.05 in every contrast, and no
  feature simulated as flat has q < 0.05 in any contrast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from immunoprofile.study.compare import DEFAULT_FAMILIES, compare_periods

PRIMARY = ["Th2|pct_parent", "Treg|pct_parent", "IL-13", "CCL17"]
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONTRASTS = {"runin_vs_treatment": "run-in_vs_treatment",
             "treatment_vs_posttreatment": "treatment_vs_post-treatment"}


@pytest.fixture(scope="module")
def example_run(tmp_path_factory, example_dir):
    # The bundled trial exactly as `make demo` runs it (pipelines/example_trial.yaml, through the
    # pipeline runner): files acquired with a 0.8-1.25 fluorescence gain per acquisition day
    # (truth/acquisition.csv), the day's matrix computed from the simulated single-stain controls,
    # time QC as the root gate, the data-driven strategy (each fluorescence cut carried along with
    # a landmark population; issue 16), bridged plates. Only compare and report are left to the
    # tests, which compare with their own families.
    from immunoprofile.pipeline.config import load_config
    from immunoprofile.pipeline.runner import run_pipeline
    from immunoprofile.study.matrix import read_study

    out = tmp_path_factory.mktemp("example")
    text = (PROJECT_ROOT / "pipelines" / "example_trial.yaml").read_text()
    text = text.replace("../example_data", str(example_dir)).replace("../demo_output", str(out))
    (out / "example_trial.yaml").write_text(text)
    config = load_config(out / "example_trial.yaml")
    config = config.model_copy(update={
        "compare": config.compare.model_copy(update={"enabled": False}),
        "report": config.report.model_copy(update={"enabled": False})})
    summary = run_pipeline(config, jobs=1)
    assert summary.exit_code == 0, summary.failures
    adata = read_study(out / "study" / "study.h5ad")
    families = {k: v for k, v in DEFAULT_FAMILIES.items() if k != "flow_mfi"}  # MFIs: not in the truth
    table = compare_periods(adata, families=families, primary=PRIMARY,
                            primary_contrasts=[("run-in", "treatment"), ("treatment", "post-treatment")])
    effects = pd.read_csv(example_dir / "truth" / "effects.csv")
    return adata, table, effects


def feature_name(adata, effect) -> str:
    var = adata.var
    if effect["assay"] == "flow":
        hit = var[(var["population"] == effect["population"]) & (var["statistic"] == effect["statistic"])]
    else:
        hit = var[(var["analyte"] == effect["analyte"]) & (var["feature_type"] == "concentration")]
    assert len(hit) == 1, f"{effect['feature']} not (uniquely) in the study: {len(hit)}"
    return str(hit.index[0])


def row(table, feature, contrast, population="all"):
    sub = table[(table["feature"] == feature) & (table["contrast"] == contrast)
                & (table["population"] == population)]
    assert len(sub) == 1
    return sub.iloc[0]


def measured(effects):
    return effects[effects["assay"].isin(["flow", "cytokine"])]


def test_study_shape_and_missingness(example_run):
    adata, _, _ = example_run
    assert adata.n_obs == 80  # 8 subjects × 10 visits, missing ones kept
    reason = adata.obs["missing_reason"].astype(str)
    assert "flow: visit not attended" in reason["AD05|week4"]
    assert "flow: after dropout" in reason["AD07|week16"]
    assert not bool(adata.obs.loc["AD07|week0", "evaluable"])
    assert adata.var.loc["IL-1RA|pg/mL", "drug_readout"]
    uns = adata.uns["immunoprofile"]
    assert "Th2" in uns["gating_strategy_json"]  # the strategy the gate step used
    assert len(uns["standard_curves"]) == 20  # 2 plates × 10 analytes
    assert {"BridgePool", "Control1", "Control2"} <= set(uns["qc_samples"]["sample_id"])


def test_movers_found_in_the_right_direction(example_run):
    adata, table, effects = example_run
    movers = measured(effects)[lambda e: e["runin_vs_treatment"] != "none"]
    assert len(movers) >= 5
    for effect in movers.to_dict("records"):
        name = feature_name(adata, effect)
        for truth_col, contrast in CONTRASTS.items():
            r = row(table, name, contrast)
            assert r["direction"] == effect[truth_col], (name, contrast, r["direction"])
        first = row(table, name, "run-in_vs_treatment")
        assert first["p_wilcoxon"] < 0.05 and first["n"] == 8, (name, first["p_wilcoxon"])
        assert row(table, name, "friedman")["p_friedman"] < 0.05, name
        fold = float(effect["fold_at_full_effect"])
        if fold >= 1.5 or fold <= 1 / 1.5:
            second = row(table, name, "treatment_vs_post-treatment")
            assert second["p_wilcoxon"] < 0.05 and second["n"] == 7, (name, second["p_wilcoxon"])


def test_negative_controls_not_found(example_run):
    adata, table, effects = example_run
    flat = measured(effects)[lambda e: e["runin_vs_treatment"] == "none"]
    controls = flat[flat["negative_control"].astype(str) == "True"]
    assert len(controls) >= 3
    for effect in controls.to_dict("records"):
        name = feature_name(adata, effect)
        for contrast in ("run-in_vs_treatment", "treatment_vs_post-treatment", "run-in_vs_post-treatment"):
            p = row(table, name, contrast)["p_wilcoxon"]
            assert np.isnan(p) or p >= 0.05, (name, contrast, p)
    for effect in flat.to_dict("records"):
        name = feature_name(adata, effect)
        q = table.loc[table["feature"] == name, "q"]
        assert not (q < 0.05).any(), (name, q.min())


def test_evaluable_population_excludes_the_dropout_and_says_so(example_run):
    _, table, _ = example_run
    ev = table[(table["population"] == "evaluable") & (table["contrast"] != "friedman")]
    assert len(ev) and ev["excluded_subjects"].str.startswith("AD07 (50 of 84 doses").all()
    assert ev.loc[ev["n"] > 0, "note"].str.contains("excludes AD07").all()
    th2 = "/Cells/Singlets/Live/CD3+/CD4+CD8-/Th2|pct_parent"
    assert row(table, th2, "run-in_vs_treatment", "evaluable")["n"] == 7
    assert row(table, th2, "run-in_vs_treatment", "all")["n"] == 8


def test_primary_hierarchy_and_qc_gates(example_run):
    _, table, _ = example_run
    primary = table[table["role"] == "primary"]
    cd4 = "/Cells/Singlets/Live/CD3+/CD4+CD8-"
    assert set(primary["feature"]) == {f"{cd4}/Th2|pct_parent", f"{cd4}/Treg|pct_parent",
                                       "IL-13|pg/mL", "CCL17|pg/mL"}
    assert primary["q"].isna().all()  # not in the exploratory BH families
    for population in ("evaluable", "all"):
        sub = primary[primary["population"] == population]
        fr = sub[sub["contrast"] == "friedman"]
        assert (fr["p_adjusted"] < 0.05).all()  # every primary feature passes the Friedman gate
        first = sub[sub["contrast"] == "run-in_vs_treatment"]
        assert (first["p_adjusted"] >= first["p_ttest"]).all()
        assert (first["significant"] == (first["p_adjusted"] <= 0.05)).all()
        # the large simulated effects survive the hierarchy (the modest Treg rise need not)
        big = first[~first["feature"].str.contains("Treg")]
        assert big["significant"].all(), big[["feature", "p_ttest", "p_adjusted"]]
        assert sub.loc[sub["contrast"] == "run-in_vs_post-treatment", "p_adjusted"].isna().all()
    qc = table[table["role"] == "qc"]
    assert set(qc["feature"].str.split("|").str[0].str.rsplit("/", n=1).str[-1]) == {"TimeQC", "Cells", "Singlets", "Live"}
    assert qc["q"].isna().all() and not qc["significant"].any()
    th2 = "/Cells/Singlets/Live/CD3+/CD4+CD8-/Th2|pct_parent"
    assert row(table, th2, "friedman")["p_friedman"] == pytest.approx(0.000322, abs=5e-6)  # exact


def test_mixed_model_never_reports_a_degenerate_fit(example_run):
    _, table, _ = example_run
    rows = table[table["contrast"] != "friedman"]
    assert set(rows["mixed_status"]) <= {"ok", "boundary", "not estimable"}
    bad = rows[rows["mixed_status"] == "not estimable"]
    assert bad["p_mixed"].isna().all() and bad["note"].str.contains("mixed model").all()
    good = rows[rows["mixed_status"].isin(["ok", "boundary"])]
    assert good["p_mixed"].notna().all() and (good["mixed_df"] < 60).mean() > 0.3


def test_drug_is_pharmacokinetic_and_fold_change_large(example_run):
    _, table, _ = example_run
    r = row(table, "IL-1RA|pg/mL", "run-in_vs_treatment")
    assert r["family"] == "pharmacokinetic" and "pharmacokinetic" in r["note"]
    assert r["fold_change"] > 10 and r["fc_ci_low"] > 5  # simulated ~30-fold (exposure varies)
    assert row(table, "IL-13|pg/mL", "run-in_vs_treatment")["fold_change"] < 0.8


def test_biomarker_change_tracks_scorad_change(example_run):
    # The simulation scales each subject's biomarker effects and SCORAD fall by one drawn
    # responsiveness: falls in Th2, IL-13 and CCL17 go with falls in SCORAD (positive rho).
    _, table, _ = example_run
    for name in ("/Cells/Singlets/Live/CD3+/CD4+CD8-/Th2|pct_parent", "IL-13|pg/mL", "CCL17|pg/mL"):
        r = row(table, name, "run-in_vs_treatment")
        assert r["n_spearman"] == 8  # change = period means: AD07 has run-in and treatment SCORAD
        assert r["spearman_rho"] > 0.5, (name, r["spearman_rho"])


def test_r_reference_input_is_this_study(example_run):
    # the R fixture (tests/study/data/r_reference) was computed from exactly this study matrix
    from pathlib import Path

    from study_long_format import long_from_study

    adata, _, _ = example_run
    ours = long_from_study(adata, PRIMARY)
    ref = pd.read_csv(Path(__file__).parent / "data" / "r_reference" / "example_trial_long.csv")
    assert list(ours[["subject", "visit", "feature"]].itertuples(index=False)) == \
        list(ref[["subject", "visit", "feature"]].itertuples(index=False))
    assert np.allclose(ours["y"].to_numpy(dtype=float), ref["y"].to_numpy(dtype=float), rtol=0, atol=1e-9)
    assert (ours["censored"].to_numpy() == ref["censored"].to_numpy()).all()
    assert (ours["role"].to_numpy() == ref["role"].to_numpy()).all()
