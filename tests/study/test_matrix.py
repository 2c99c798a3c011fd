"""Study AnnData: joins, missingness with reasons, layers, uns, h5ad/zarr/scanpy round trips, CLI."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from immunoprofile._frames import layer_names
from immunoprofile.errors import InputError
from immunoprofile.schema import SCHEMA_VERSION
from immunoprofile.study.design import DEFAULT_DESIGN
from immunoprofile.study.matrix import (
    assemble,
    flag_labels,
    period_means,
    read_study,
    split_by_visit,
    to_tidy,
    write_study,
)

N_SUBJECTS = 8  # the synthetic trial of tests/study/conftest.py


def cell(adata, obs, var, layer="raw"):
    return float(adata[obs, var].layers[layer][0, 0])


def test_obs_grid_and_ordered_categoricals(study):
    assert study.n_obs == N_SUBJECTS * 10
    assert study.obs_names[0] == "S01|screening" and "S03|week2" in study.obs_names
    visit, period = study.obs["visit"], study.obs["period"]
    assert visit.cat.ordered and list(visit.cat.categories) == DEFAULT_DESIGN.visit_names
    assert period.cat.ordered and list(period.cat.categories) == ["run-in", "treatment", "post-treatment"]
    assert study.obs.loc["S01|week12", "period"] == "treatment"
    assert set(study.var["feature_type"]) == {"frequency", "mfi", "count", "concentration"}
    assert "/Cells/CD3+/CD4+/Th2|pct_parent" in study.var_names and "IL-13|pg/mL" in study.var_names
    il1ra = study.var.loc["IL-1RA|pg/mL"]
    assert bool(il1ra["drug_readout"]) and il1ra["analyte"] == "IL-1RA" and il1ra["unit"] == "pg/mL"
    th2 = study.var.loc["/Cells/CD3+/CD4+/Th2|pct_parent"]
    assert (th2["population"], th2["statistic"], th2["unit"]) == ("/Cells/CD3+/CD4+/Th2", "pct_parent", "%")
    assert study.var.loc["/Cells|mfi_CD4", "marker"] == "CD4"


def test_values_come_from_the_inputs(study, trial):
    pops = pd.read_csv(trial["flow"] / "populations.csv")
    row = pops[(pops["sample_id"] == "S02_week4") & (pops["population"] == "/Cells/CD3+/CD4+/Th2")]
    assert cell(study, "S02|week4", "/Cells/CD3+/CD4+/Th2|pct_parent") == pytest.approx(row["pct_parent"].item())
    assert np.array_equal(study.X, study.layers["raw"], equal_nan=True)
    conc = pd.read_csv(trial["cyto"] / "concentrations.csv")
    reps = conc[(conc["sample_id"] == "S05_week8_serum") & (conc["analyte"] == "IL-13")]["concentration"]
    assert len(reps) == 2
    assert cell(study, "S05|week8", "IL-13|pg/mL") == pytest.approx(reps.mean())


def test_missing_visits_stay_nan_with_reasons(study):
    th2 = "/Cells/CD3+/CD4+/Th2|pct_parent"
    labels = pd.DataFrame(flag_labels(study), index=study.obs_names, columns=study.var_names)
    reason = study.obs["missing_reason"].astype(str)
    assert np.isnan(cell(study, "S03|week2", th2))
    assert labels.loc["S03|week2", th2] == "missing: visit not attended"
    assert "flow: visit not attended" in reason["S03|week2"]
    assert np.isnan(cell(study, "S08|week16", th2))
    assert labels.loc["S08|week16", th2] == "missing: after dropout"
    assert labels.loc["S01|week1", "IL-13|pg/mL"] == "missing: assay not scheduled at this visit"
    assert reason["S01|week4"] == ""
    # every attended visit has its flow values: the file-stem join found them all
    attended = study.obs["flow_sample_id"].astype(str) != ""
    assert attended.sum() == 80 - 1 - 4
    assert not np.isnan(study[attended.to_numpy(), th2].X).any()


def test_flags_combined_and_cytokine_censoring(study):
    labels = pd.DataFrame(flag_labels(study), index=study.obs_names, columns=study.var_names)
    assert labels.loc["S02|week0", "IL-4|pg/mL"] == "below_curve"   # odd subjects: NaN + below_curve
    assert labels.loc["S01|week0", "IL-4|pg/mL"] == "<LLOQ"
    assert labels.loc["S01|week0", "IL-13|pg/mL"] == "ok"
    floor = study.var.loc["IL-4|pg/mL", "log_floor"]
    # one censoring level: the highest sample LLOQ among the plates (plate LLOQ 1 × dilution 2)
    assert floor == pytest.approx(1.0 * 2)
    assert study.var.loc["IL-4|pg/mL", "censor_level"] == pytest.approx(np.log10(2.0))
    assert np.isnan(cell(study, "S02|week0", "IL-4|pg/mL"))
    assert cell(study, "S01|week0", "IL-4|pg/mL") == pytest.approx(0.4)  # raw keeps the lab's number
    # both censored kinds are marked censored and tie at the censoring level on the analysis scale
    for obs in ("S02|week0", "S01|week0"):
        assert cell(study, obs, "IL-4|pg/mL", "censored") == 1
        assert cell(study, obs, "IL-4|pg/mL", "transformed") == pytest.approx(np.log10(floor))
    assert cell(study, "S01|week0", "IL-13|pg/mL", "censored") == 0
    bits = study.uns["immunoprofile"]["flag_bits"]  # the schema's bit mask, its table stored
    assert {"ok", "<LLOQ", "below_curve"} <= set(bits)
    assert cell(study, "S01|week0", "IL-4|pg/mL", "flag") == bits["<LLOQ"] == 1 << 4
    assert cell(study, "S01|week0", "IL-13|pg/mL", "flag") == 0


def test_transformed_layer_and_change_from_baseline(study):
    p = cell(study, "S04|week8", "/Cells/CD3+/CD4+/Th2|pct_parent") / 100
    assert cell(study, "S04|week8", "/Cells/CD3+/CD4+/Th2|pct_parent", "transformed") == pytest.approx(np.log(p / (1 - p)))
    m = cell(study, "S04|week8", "/Cells|mfi_CD4")
    assert cell(study, "S04|week8", "/Cells|mfi_CD4", "transformed") == pytest.approx(np.arcsinh(m / 150))
    c = cell(study, "S04|week8", "IL-13|pg/mL")
    assert cell(study, "S04|week8", "IL-13|pg/mL", "transformed") == pytest.approx(np.log10(c))
    n = cell(study, "S04|week8", "/Cells|count")
    assert cell(study, "S04|week8", "/Cells|count", "transformed") == pytest.approx(np.log10(n + 1))
    # 100 % stays finite
    assert np.isfinite(cell(study, "S04|week8", "/Cells|pct_parent", "transformed"))
    t = study.layers["transformed"]
    i, b = study.obs_names.get_loc("S04|week8"), study.obs_names.get_loc("S04|week0")
    assert np.allclose(study.layers["change_from_baseline"][i], t[i] - t[b], equal_nan=True)
    assert np.allclose(study.layers["change_from_baseline"][b][np.isfinite(t[b])], 0)


def test_clinical_columns(study):
    obs = study.obs
    assert obs.loc["S01|week12", "scorad"] < obs.loc["S01|week0", "scorad"]
    assert str(obs["evaluable"].dtype) == "boolean"
    assert not bool(obs.loc["S01|week0", "evaluable"]) and bool(obs.loc["S08|week0", "evaluable"])
    assert obs.loc["S01|week4", "scorad_pct_change"] == obs.loc["S01|week24", "scorad_pct_change"]


def test_uns_qc_curves_provenance(study):
    uns = study.uns["immunoprofile"]
    qc = uns["qc_samples"]
    assert set(qc["sample_id"]) == {"Bridge"}  # the bridging pool kept as QC; standards are not samples
    assert len(uns["standard_curves"]) == 8
    assert set(uns["gating"]["population"]) >= {"/Cells/CD3+/CD4+/Th2"}
    assert uns["sample_size"]["n_subjects"] == 8
    assert uns["sample_size"]["min_exact_wilcoxon_p"] == pytest.approx(0.0078125)
    import json
    prov = json.loads(uns["provenance_json"])
    assert {r["name"] for r in prov["inputs"]} >= {"manifest.csv", "populations.csv", "concentrations.csv"}

    def keys(d, where="uns"):
        for k, v in d.items():
            assert "/" not in k, f"{where}[{k}]"
            if isinstance(v, dict):
                keys(v, f"{where}[{k}]")
    keys(dict(study.uns))


def assert_same(a, b):
    assert list(a.obs_names) == list(b.obs_names) and list(a.var_names) == list(b.var_names)
    for layer in ("raw", "transformed", "flag", "change_from_baseline"):
        assert np.array_equal(np.asarray(a.layers[layer]), np.asarray(b.layers[layer]), equal_nan=True)
    for col in ("visit", "period"):
        assert b.obs[col].cat.ordered
        assert list(b.obs[col].cat.categories) == list(a.obs[col].cat.categories)
        assert list(b.obs[col].astype(str)) == list(a.obs[col].astype(str))
    assert str(b.obs["evaluable"].dtype) == "boolean"
    assert {k: int(v) for k, v in a.uns["immunoprofile"]["flag_bits"].items()} == \
        {k: int(v) for k, v in b.uns["immunoprofile"]["flag_bits"].items()}


def test_h5ad_round_trip_with_anndata_and_scanpy(study, tmp_path):
    import scanpy as sc

    path = write_study(study, tmp_path / "study.h5ad")
    back = ad.read_h5ad(path)
    assert_same(study, back)
    via_scanpy = sc.read_h5ad(path)
    assert_same(study, via_scanpy)
    sub = via_scanpy[:, via_scanpy.var["feature_type"] == "concentration"]
    assert sub.n_vars == 4
    assert read_study(path).n_obs == study.n_obs


def test_zarr_round_trip(study, tmp_path):
    path = write_study(study, tmp_path / "study.zarr", zarr=True)
    assert_same(study, read_study(path))
    small = ad.AnnData(np.ones((2, 1)))
    write_study(small, path, zarr=True)  # an existing store is replaced whole
    assert ad.read_zarr(path).shape == (2, 1)


def test_write_refuses_slash_in_uns_keys(study, tmp_path):
    bad = study.copy()
    bad.uns["immunoprofile"] = {**bad.uns["immunoprofile"], "a/b": 1}
    with pytest.raises(ValueError, match="a/b"):
        write_study(bad, tmp_path / "bad.h5ad")
    assert not (tmp_path / "bad.h5ad").exists()


def test_split_by_visit(study):
    parts = split_by_visit(study)
    assert list(parts) == DEFAULT_DESIGN.visit_names
    assert all(p.n_obs == 8 and p.n_vars == study.n_vars for p in parts.values())
    assert np.array_equal(parts["week4"].layers["raw"], study[study.obs["visit"] == "week4"].layers["raw"],
                          equal_nan=True)


def test_period_means(study):
    pm = period_means(study)
    assert pm.n_obs == 24 and pm.obs["period"].cat.ordered
    th2 = "/Cells/CD3+/CD4+/Th2|pct_parent"
    rows = [f"S03|{v}" for v in ("week1", "week2", "week4", "week8", "week12")]
    expected = np.nanmean([cell(study, r, th2, "transformed") for r in rows])  # week2 missing
    assert float(pm["S03|treatment", th2].X[0, 0]) == pytest.approx(expected)
    assert float(pm["S03|treatment", th2].layers["n_visits"][0, 0]) == 4
    assert np.isnan(pm["S08|post-treatment", th2].X[0, 0])


def test_tidy_and_parquet(study, tmp_path):
    tidy = to_tidy(study)
    assert len(tidy) == study.n_obs * study.n_vars
    row = tidy[(tidy["obs_name"] == "S03|week2") & (tidy["feature"] == "IL-13|pg/mL")].iloc[0]
    assert np.isnan(row["value"]) and row["flag"] == "missing: visit not attended"
    path = tmp_path / "study.parquet"
    tidy.to_parquet(path, index=False)
    back = pd.read_parquet(path)
    assert back["visit"].cat.ordered and list(back["visit"].cat.categories) == DEFAULT_DESIGN.visit_names


def test_sample_in_manifest_but_not_in_results(tmp_path, trial_factory):
    paths = trial_factory(tmp_path / "t")
    pops = pd.read_csv(paths["flow"] / "populations.csv")
    pops[pops["sample_id"] != "S02_week4"].to_csv(paths["flow"] / "populations.csv", index=False)
    clinical = pd.read_csv(paths["clinical"])
    clinical = clinical[clinical["subject_id"] != "S02"]  # a subject without clinical data
    adata = assemble(paths["manifest"], design="example-trial", flow_dir=paths["flow"], clinical=clinical)
    assert "flow: sample listed in the manifest" in str(adata.obs.loc["S02|week4", "missing_reason"])
    assert adata.uns["immunoprofile"]["assays"].tolist() == ["flow"]
    obs = adata.obs
    assert np.isnan(obs.loc["S02|week0", "scorad"]) and pd.isna(obs.loc["S02|week0", "evaluable"])
    assert pd.isna(obs.loc["S02|week0", "sex"]) and str(obs["sex"].dtype) == "category"
    back = ad.read_h5ad(write_study(adata, tmp_path / "s.h5ad"))
    assert pd.isna(back.obs.loc["S02|week0", "responder"]) and back.obs.loc["S01|week0", "sex"] == "M"


def test_log_floor_without_standard_curves(tmp_path, trial_factory):
    paths = trial_factory(tmp_path / "t")
    (paths["cyto"] / "standard_curves.csv").unlink()
    adata = assemble(paths["manifest"], design="example-trial", cytokine_dir=paths["cyto"])
    assert adata.var.loc["IL-4|pg/mL", "log_floor"] == pytest.approx(0.4 / 2)  # half the smallest value
    assert "standard_curves" not in adata.uns["immunoprofile"]


def test_well_mismatch_is_reported(tmp_path, trial_factory, caplog, monkeypatch):
    # a CLI test earlier in the session may have stopped propagation to the root logger
    monkeypatch.setattr(logging.getLogger("immunoprofile"), "propagate", True)
    paths = trial_factory(tmp_path / "t")
    manifest = pd.read_csv(paths["manifest"], keep_default_na=False)
    manifest.loc[manifest["sample_id"] == "S01_week0_serum", "well"] = "H12"
    manifest.to_csv(paths["manifest"], index=False)
    adata = assemble(paths["manifest"], design="example-trial", cytokine_dir=paths["cyto"])
    assert "S01_week0_serum" in caplog.text and "other wells" in caplog.text
    assert np.isfinite(cell(adata, "S01|week0", "IL-13|pg/mL"))  # joined by sample_id all the same


def test_read_study_refuses_other_files(tmp_path):
    path = tmp_path / "plain.h5ad"
    ad.AnnData(np.ones((2, 2))).write_h5ad(path)
    with pytest.raises(InputError, match="not an immunoprofile study"):
        read_study(path)
    (tmp_path / "junk.h5ad").write_text("not hdf5")
    with pytest.raises(InputError, match="cannot read"):
        read_study(tmp_path / "junk.h5ad")


def test_input_errors(trial, tmp_path):
    with pytest.raises(InputError, match="at least one"):
        assemble(trial["manifest"], design="example-trial")
    with pytest.raises(InputError, match="populations.csv"):
        assemble(trial["manifest"], design="example-trial", flow_dir=tmp_path)


def test_assemble_cli_end_to_end(trial, tmp_path):
    from immunoprofile.cli import cli

    out = tmp_path / "run" / "study.h5ad"
    result = CliRunner().invoke(cli, ["assemble", "--design", "example-trial", "--manifest", str(trial["manifest"]), "--flow",
                                      str(trial["flow"]), "--cytokines", str(trial["cyto"]), "--clinical",
                                      str(trial["clinical"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    run = out.parent
    assert (run / "period_means.h5ad").is_file() and (run / "study.parquet").is_file()
    assert (run / "provenance.json").is_file()
    assert sorted(p.stem for p in (run / "study_by_visit").glob("*.h5ad")) == sorted(DEFAULT_DESIGN.visit_names)
    assert read_study(out).n_obs == 80
    bad = CliRunner().invoke(cli, ["assemble", "--design", "example-trial", "--manifest", str(tmp_path / "none.csv"), "--flow",
                                   str(trial["flow"]), "--out", str(out)])
    assert bad.exit_code == 2 and "not found" in bad.output


def test_reads_the_schema_1_layout(tmp_path):
    """A study written by schema 1 (tests/study/data/study_schema1.h5ad, 8 subjects × 10 visits,
    5 frequencies + IL-13 + IL-4) must keep reading, decoding and comparing."""
    from pathlib import Path

    from immunoprofile.study.compare import compare_periods

    old = read_study(Path(__file__).parent / "data" / "study_schema1.h5ad")
    assert old.uns["immunoprofile"]["migrated_from"] == "1"  # migrated on read
    assert old.uns["immunoprofile"]["schema_version"] == SCHEMA_VERSION
    assert old.obs["visit"].cat.ordered and old.obs["period"].cat.ordered
    assert set(layer_names(old)) == {"raw", "transformed", "flag", "change_from_baseline"}
    labels = pd.DataFrame(flag_labels(old), index=old.obs_names, columns=old.var_names)
    assert labels.loc["S03|week2", "IL-13|pg/mL"] == "missing: visit not attended"
    assert labels.loc["S02|week0", "IL-4|pg/mL"] == "below_curve"
    table = compare_periods(old, mixed=False)
    th2 = table[(table["feature"] == "/Cells/CD3+/CD4+/Th2|pct_parent") & (table["population"] == "all")
                & (table["contrast"] == "run-in_vs_treatment")].iloc[0]
    assert th2["direction"] == "down" and th2["n"] == 8
    assert len(period_means(old)) == 24



def test_plate_samples_absent_from_the_manifest_are_qc_not_a_crash(tmp_path):
    """A flow-only manifest with cytokine outputs beside it: no cytokine features, no error."""
    from pathlib import Path

    import pandas as pd

    from immunoprofile.study import assemble

    root = Path(__file__).resolve().parents[2] / "example_data"
    manifest = pd.read_csv(root / "manifest.csv")
    flow = manifest[manifest["assay"] == "flow"].head(6)
    (tmp_path / "flow").mkdir()
    (tmp_path / "cyto").mkdir()
    flow.to_csv(tmp_path / "m.csv", index=False)
    pd.DataFrame({"sample_id": flow["sample_id"], "file": flow["file"].map(lambda f: Path(f).name),
                  "population": "/Cells", "parent": "", "count": 100, "pct_parent": 50.0,
                  "pct_total": 50.0}).to_csv(tmp_path / "flow" / "populations.csv", index=False)
    pd.DataFrame({"sample_id": ["Pool", "Pool"], "plate": "P1", "well": ["A1", "A2"],
                  "analyte": "IL-6", "mfi": 10.0, "net_mfi": 9.0, "concentration": 3.0,
                  "unit": "pg/mL", "dilution": 1, "flag": "ok", "sample_type": "unknown"}
                 ).to_csv(tmp_path / "cyto" / "concentrations.csv", index=False)
    adata = assemble(tmp_path / "m.csv", design="example-trial", flow_dir=tmp_path / "flow",
                     cytokine_dir=tmp_path / "cyto")
    assert set(adata.var["assay"]) == {"flow"}
    assert adata.n_vars >= 1
