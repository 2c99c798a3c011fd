"""run_pipeline on a tiny generated trial: outputs, caching, failures, skipped stages."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from immunoprofile.errors import InputError
from immunoprofile.pipeline.config import load_config
from immunoprofile.pipeline.runner import RunSummary, run_pipeline


def _run(config: Path, **kwargs) -> RunSummary:
    return run_pipeline(load_config(config), **kwargs)


def test_run_gates_every_flow_sample_and_skips_disabled_stages(tiny_trial: Path) -> None:
    summary = _run(tiny_trial)
    assert summary.exit_code == 0 and summary.failures == []
    assert summary.n_flow == 6 and summary.n_flow_cached == 0
    status = {s.name: s.status for s in summary.stages}
    assert status["gate"] == "done"
    assert status["cytokines"] == status["compare"] == status["report"] == "skipped"
    out = tiny_trial.parent / "out"
    table = pd.read_csv(out / "flow" / "populations.csv")
    assert sorted(table["sample_id"].unique()) == [f"S0{s}_{v}" for s in (1, 2, 3)
                                                   for v in ("week0", "week4")]
    # the strategy's 6 populations under the root gate TimeQC (the tiny trial's config turns it on)
    assert table.groupby("sample_id").size().eq(7).all()
    root = table[table["population"] == "TimeQC"]
    assert len(root) == 6 and (root["parent"].isna() | (root["parent"] == "")).all()
    assert set(table.loc[table["population"] == "/Cells", "parent"]) == {"TimeQC"}
    # the simulated effect: CD4 share of CD3+ falls from ~60 % to ~40 % of CD3+ cells
    cd4 = table[table["population"] == "/Cells/CD3+/CD4+CD8-"].set_index("sample_id")
    for s in (1, 2, 3):
        assert cd4.loc[f"S0{s}_week0", "pct_parent"] > cd4.loc[f"S0{s}_week4", "pct_parent"] + 10
    # quadrants partition their parent
    cd3 = table[table["population"] == "/Cells/CD3+"].set_index("sample_id")["count"]
    quads = table[table["parent"] == "/Cells/CD3+"].groupby("sample_id")["count"].sum()
    pd.testing.assert_series_equal(quads.sort_index(), cd3.sort_index(), check_names=False)
    adata = ad.read_h5ad(out / "flow" / "flow.h5ad")
    assert adata.n_obs == 6 and (out / "flow" / "provenance.json").is_file()
    assert not (out / "failed.tsv").exists()


def test_rerun_uses_cache_and_gives_identical_bytes(tiny_trial: Path) -> None:
    out = tiny_trial.parent / "out" / "flow"
    _run(tiny_trial)
    first = (out / "populations.csv").read_bytes()
    first_x = ad.read_h5ad(out / "flow.h5ad").X.copy()
    again = _run(tiny_trial)
    assert again.n_flow_cached == 6
    assert (out / "populations.csv").read_bytes() == first
    np.testing.assert_array_equal(ad.read_h5ad(out / "flow.h5ad").X, first_x)
    # a changed file is the only one recomputed
    from trialdata import write_tiny_fcs

    write_tiny_fcs(tiny_trial.parent / "flow" / "s02_week4.fcs", seed=99)
    changed = _run(tiny_trial)
    assert changed.n_flow_cached == 5
    assert (out / "populations.csv").read_bytes() != first
    forced = _run(tiny_trial, force=True)
    assert forced.n_flow_cached == 0


def test_a_bad_file_fails_alone(tiny_trial: Path) -> None:
    bad = tiny_trial.parent / "flow" / "s03_week0.fcs"
    bad.write_bytes(bad.read_bytes()[:500])  # a truncated transfer
    summary = _run(tiny_trial)
    assert summary.exit_code == 1
    assert [f[0] for f in summary.failures] == [str(bad)]
    out = tiny_trial.parent / "out"
    failed = pd.read_csv(out / "failed.tsv", sep="\t")
    assert list(failed.columns) == ["input", "reason"] and failed["input"].tolist() == [str(bad)]
    assert "s03_week0.fcs" in failed["reason"][0]
    assert (out / "flow" / "failed.tsv").is_file()
    table = pd.read_csv(out / "flow" / "populations.csv")
    assert table["sample_id"].nunique() == 5 and "S03_week0" not in set(table["sample_id"])


def test_missing_strategy_is_an_input_error(tiny_trial: Path) -> None:
    (tiny_trial.parent / "strategy.yaml").unlink()
    with pytest.raises(InputError, match="strategy"):
        _run(tiny_trial)


def test_stale_temp_files_are_removed(tiny_trial: Path) -> None:
    out = tiny_trial.parent / "out" / "flow"
    out.mkdir(parents=True)
    stale = out / ".populations.csv.abc123.tmp"
    stale.write_text("half")
    _run(tiny_trial)
    assert not stale.exists()


def test_cytokine_assemble_compare_stages_on_the_example_plates(tmp_path: Path,
                                                                example_dir: Path) -> None:
    from immunoprofile.cytokine.quantify import QuantifyOptions, quantify_plate
    from immunoprofile.cytokine.readers import read_plate

    config = tmp_path / "c.yaml"
    config.write_text(f"""\
schema_version: 1
inputs:
  manifest: {example_dir}/manifest.csv
  plates: [{example_dir}/plates]
  standards: {example_dir}/standards.csv
  clinical: {example_dir}/clinical.csv
design: {{protocol: example-trial}}
flow: {{enabled: false}}
compare: {{mixed: false}}
report: {{enabled: false}}
outputs: {{dir: out}}
executor: {{kind: serial}}
""")
    summary = _run(config)
    assert summary.exit_code == 0, summary.failures
    status = {s.name: s.status for s in summary.stages}
    assert status == {"gate": "skipped", "cytokines": "done", "assemble": "done",
                      "compare": "done", "report": "skipped"}
    out = tmp_path / "out"
    conc = pd.read_csv(out / "cytokines" / "concentrations.csv")
    # the runner's numbers are the library's numbers for the same plate and options
    direct = quantify_plate(read_plate(example_dir / "plates" / "plate1.csv",
                                       standards=example_dir / "standards.csv"),
                            options=QuantifyOptions()).concentrations
    mine = conc[conc["plate"] == direct["plate"].iloc[0]].reset_index(drop=True)
    np.testing.assert_allclose(mine["concentration"].to_numpy(float),
                               direct["concentration"].to_numpy(float), rtol=1e-12)
    study = ad.read_h5ad(out / "study" / "study.h5ad")
    assert study.n_obs > 0 and (study.var["feature_type"] == "concentration").any()
    assert len(pd.read_csv(out / "compare" / "comparisons.csv")) > 0

    # a re-run takes both plates from the cache and writes the same bytes
    names = ["concentrations.csv", "standard_curves.csv", "summary.csv"]
    before = {n: (out / "cytokines" / n).read_bytes() for n in names}
    x_before = ad.read_h5ad(out / "cytokines" / "cytokines.h5ad").X
    again = _run(config)
    assert again.n_plates == again.n_plates_cached == 2
    assert {n: (out / "cytokines" / n).read_bytes() for n in names} == before
    np.testing.assert_array_equal(ad.read_h5ad(out / "cytokines" / "cytokines.h5ad").X,
                                  x_before)
    assert _run(config, force=True).n_plates_cached == 0


def test_cache_sees_a_changed_matrix_named_by_the_strategy(tiny_trial: Path) -> None:
    from trialdata import CHANNELS, SPILL

    root = tiny_trial.parent
    matrix = root / "matrix.csv"
    header = ",".join(CHANNELS[2:5])
    matrix.write_text(header + "\n" + "\n".join(",".join(str(v) for v in row) for row in SPILL)
                      + "\n")
    strategy = root / "strategy.yaml"
    strategy.write_text(strategy.read_text().replace("compensation: fcs",
                                                     "compensation: matrix.csv"))
    first = _run(tiny_trial)
    assert first.exit_code == 0 and first.n_flow == 6
    assert _run(tiny_trial).n_flow_cached == 6
    bigger = SPILL.copy()
    bigger[0, 1] = 0.4
    matrix.write_text(header + "\n" + "\n".join(",".join(str(v) for v in row) for row in bigger)
                      + "\n")
    assert _run(tiny_trial).n_flow_cached == 0  # same strategy file, different matrix
