"""``immunoprofile gate``/``cytokines``/``assemble`` and ``immunoprofile run`` call the same stage
functions (:func:`immunoprofile.flow.gate_files`, :func:`immunoprofile.cytokine.quantify_files`,
:func:`immunoprofile.study.stage.assemble_study`), so on the same inputs and options they write
the same bytes: every table byte for byte, every h5ad array equal, provenance different only in
``command``/``created`` (issue 13)."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from immunoprofile._frames import layer_names
from immunoprofile.cli import cli
from immunoprofile.pipeline.config import load_config
from immunoprofile.pipeline.runner import run_pipeline

FLOW = ["AD01_week0_flow.fcs", "AD02_week0_flow.fcs", "AD03_week12_flow.fcs"]


def _config(tmp_path: Path, example: Path) -> Path:
    flow = ", ".join(str(example / "flow" / f) for f in FLOW)
    text = f"""schema_version: 1
inputs:
  manifest: {example / 'manifest.csv'}
  strategy: {example / 'strategy_adaptive.yaml'}
  flow: [{flow}]
  plates: [{example / 'plates' / 'plate1.csv'}]
  standards: {example / 'standards.csv'}
  clinical: {example / 'clinical.csv'}
flow:
  compensation: fcs
  time_qc: {{enabled: true}}
  membership: true
cytokine:
  model: 5pl
  weights: 1/y2
  replicate_means: false
  lloq_policy: half
assemble: {{enabled: true}}
compare: {{enabled: false}}
report: {{enabled: false}}
outputs:
  dir: {tmp_path / 'run'}
executor:
  kind: serial
"""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def _same_h5ad(a: Path, b: Path) -> None:
    x, y = ad.read_h5ad(a), ad.read_h5ad(b)
    np.testing.assert_array_equal(np.asarray(x.X), np.asarray(y.X))
    pd.testing.assert_frame_equal(x.obs, y.obs)
    pd.testing.assert_frame_equal(x.var, y.var)
    assert sorted(layer_names(x)) == sorted(layer_names(y))
    for name in x.layers:
        np.testing.assert_array_equal(np.asarray(x.layers[name]), np.asarray(y.layers[name]))
    ux, uy = dict(x.uns["immunoprofile"]), dict(y.uns["immunoprofile"])
    px, py = ux.pop("provenance_json", None), uy.pop("provenance_json", None)
    assert set(ux) == set(uy)
    for key in ux:
        if isinstance(ux[key], pd.DataFrame):
            pd.testing.assert_frame_equal(ux[key], uy[key])
        elif isinstance(ux[key], dict):
            assert json.dumps(ux[key], sort_keys=True, default=str) == \
                json.dumps(uy[key], sort_keys=True, default=str), key
        else:
            np.testing.assert_array_equal(ux[key], uy[key])
    if px is not None or py is not None:
        jx, jy = json.loads(px), json.loads(py)
        jx.pop("command"), jy.pop("command")
        assert jx == jy


def _same_provenance(a: Path, b: Path) -> None:
    x, y = json.loads(a.read_text()), json.loads(b.read_text())
    for record in (x, y):
        assert record.pop("command") and record.pop("created")
    assert x == y


def _compare_folders(cli_out: Path, run_out: Path, *, cli_only: set[str] = frozenset()) -> int:
    cli_files = {str(p.relative_to(cli_out)) for p in cli_out.rglob("*") if p.is_file()}
    run_files = {str(p.relative_to(run_out)) for p in run_out.rglob("*") if p.is_file()}
    assert cli_files - cli_only == run_files
    for name in sorted(run_files):
        a, b = cli_out / name, run_out / name
        if name.endswith(".h5ad"):
            _same_h5ad(a, b)
        elif name == "provenance.json":
            _same_provenance(a, b)
        else:  # CSV / TSV / Parquet / Gating-ML: the very bytes
            assert a.read_bytes() == b.read_bytes(), name
    return len(run_files)


@pytest.fixture(scope="module")
def run_out(example_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``immunoprofile run`` on 3 FCS files and 1 plate: gate, cytokines, assemble."""
    tmp_path = tmp_path_factory.mktemp("run")
    summary = run_pipeline(load_config(_config(tmp_path, example_dir)))
    assert summary.exit_code == 0, summary.failures
    assert summary.n_flow == 3 and summary.n_plates == 1
    return tmp_path / "run"


def test_gate_and_cytokines_commands_write_what_run_writes(example_dir: Path, run_out: Path,
                                                           tmp_path: Path) -> None:

    runner = CliRunner()
    gate_out = tmp_path / "cli_flow"
    res = runner.invoke(cli, ["gate", *(str(example_dir / "flow" / f) for f in FLOW),
                              "--strategy", str(example_dir / "strategy_adaptive.yaml"),
                              "--comp", "fcs", "--manifest", str(example_dir / "manifest.csv"),
                              "--time-qc", "--membership", "--out", str(gate_out), "-q"])
    assert res.exit_code == 0, res.output
    n = _compare_folders(gate_out, run_out / "flow")
    assert n >= 3 + 3 + 5  # membership, fitted gates, populations/time_qc/positions/h5ad/prov
    ids = set(pd.read_csv(gate_out / "populations.csv").sample_id)
    assert ids == {f[:-4] for f in FLOW}

    cyto_out = tmp_path / "cli_cytokines"
    res = runner.invoke(cli, ["cytokines", str(example_dir / "plates" / "plate1.csv"),
                              "--standards", str(example_dir / "standards.csv"),
                              "--model", "5pl", "--weights", "1/y2", "--each-well",
                              "--lloq-policy", "half", "--out", str(cyto_out), "-q"])
    assert res.exit_code == 0, res.output
    n = _compare_folders(cyto_out, run_out / "cytokines", cli_only={"cytokines.log"})
    assert n >= 8


#: What the assemble stage writes beside study.h5ad (the run folder also holds the other stages).
ASSEMBLE_OUTPUTS = {"study.h5ad", "study.parquet", "period_means.h5ad", "unmatched.tsv",
                    "provenance.json"}


def test_assemble_command_writes_what_run_writes(example_dir: Path, run_out: Path,
                                                 tmp_path: Path) -> None:
    out = tmp_path / "cli_study"
    res = CliRunner().invoke(cli, ["assemble", "--manifest", str(example_dir / "manifest.csv"),
                                   "--flow", str(run_out / "flow"),
                                   "--cytokines", str(run_out / "cytokines"),
                                   "--clinical", str(example_dir / "clinical.csv"),
                                   "--out", str(out / "study.h5ad"), "-q"])
    assert res.exit_code == 0, res.output
    cli_files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    by_visit = {f for f in cli_files if f.startswith("study_by_visit/")}
    assert cli_files - by_visit - {"assemble.log"} == ASSEMBLE_OUTPUTS  # the log: with -v only
    assert len(by_visit) >= 2  # the 3 FCS files are week0 and week12 samples
    for name in sorted(cli_files - {"assemble.log"}):
        a, b = out / name, run_out / name
        assert b.is_file(), f"run wrote no {name}"
        if name.endswith(".h5ad"):
            _same_h5ad(a, b)
        elif name == "provenance.json":
            _same_provenance(a, b)
        else:  # unmatched.tsv, study.parquet: the very bytes
            assert a.read_bytes() == b.read_bytes(), name
    # the run wrote the views the command writes (it used to write study.h5ad alone)
    run_views = {p.relative_to(run_out).as_posix() for p in (run_out / "study_by_visit").glob("*")}
    assert run_views == by_visit
    study = ad.read_h5ad(run_out / "study.h5ad")
    assert study.n_vars > 0 and "unmatched" in study.uns["immunoprofile"]
