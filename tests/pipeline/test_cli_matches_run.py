"""``immunoprofile gate``/``cytokines``/``assemble``/``compare``/``report`` and ``immunoprofile
run`` call the same stage functions (:func:`immunoprofile.flow.gate_files`,
:func:`immunoprofile.cytokine.quantify_files`, :func:`immunoprofile.study.stage.assemble_study`,
:func:`immunoprofile.study.compare_stage.compare_study`, :func:`immunoprofile.report.build_report`)
and write through one run-folder layout (:class:`immunoprofile.layout.RunLayout`), so on the same
inputs and options they write the same bytes: every table byte for byte, every h5ad array equal,
provenance different only in
``command``/``created`` (issue 13)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from immunoprofile._frames import layer_names
from immunoprofile.cli import cli
from immunoprofile.layout import RunLayout
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
design: {{protocol: example-trial}}
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
    res = CliRunner().invoke(cli, ["assemble", "--design", "example-trial", "--manifest", str(example_dir / "manifest.csv"),
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
        a, b = out / name, run_out / "study" / name
        assert b.is_file(), f"run wrote no {name}"
        if name.endswith(".h5ad"):
            _same_h5ad(a, b)
        elif name == "provenance.json":
            _same_provenance(a, b)
        else:  # unmatched.tsv, study.parquet: the very bytes
            assert a.read_bytes() == b.read_bytes(), name
    # the run wrote the views the command writes (it used to write study.h5ad alone)
    run_views = {p.relative_to(run_out / "study").as_posix()
                 for p in (run_out / "study" / "study_by_visit").glob("*")}
    assert run_views == by_visit
    study = ad.read_h5ad(run_out / "study" / "study.h5ad")
    assert study.n_vars > 0 and "unmatched" in study.uns["immunoprofile"]


def test_compare_and_report_commands_write_what_run_writes(example_dir: Path,
                                                           tmp_path: Path) -> None:
    """The whole chain: ``run`` with every stage against ``gate``, ``cytokines``, ``assemble``,
    ``compare`` and ``report`` run one by one into the run-folder layout (``--out RUN/<stage>``):
    the compare folder is byte-identical, and so are the report's figures, their tables and the
    MultiQC tables; the HTML differs only in the run folder it names."""
    flow = ", ".join(str(example_dir / "flow" / f) for f in FLOW)
    run_out, cli_out = tmp_path / "run", tmp_path / "cli"
    config = tmp_path / "config.yaml"
    config.write_text(f"""schema_version: 1
name: same either way
inputs:
  manifest: {example_dir / 'manifest.csv'}
  strategy: {example_dir / 'strategy_adaptive.yaml'}
  flow: [{flow}]
  plates: [{example_dir / 'plates'}]
  standards: {example_dir / 'standards.csv'}
  clinical: {example_dir / 'clinical.csv'}
design: {{protocol: example-trial}}
flow: {{compensation: fcs, time_qc: {{enabled: true}}}}
cytokine: {{model: 5pl, weights: 1/y2, lloq_policy: half}}
compare: {{mixed: false, min_subjects: 2}}
analysis: {{primary: [IL-13, Th2|pct_parent], populations: [all]}}
outputs: {{dir: {run_out}}}
executor: {{kind: serial}}
""")
    summary = run_pipeline(load_config(config))
    assert summary.exit_code == 0, summary.failures
    assert [s.status for s in summary.stages] == ["done"] * 5, summary.stages
    layout = summary.layout

    runner = CliRunner()

    def ok(*args: str) -> None:
        res = runner.invoke(cli, [*args, "-q"])
        assert res.exit_code == 0, res.output

    ok("gate", *(str(example_dir / "flow" / f) for f in FLOW),
       "--strategy", str(example_dir / "strategy_adaptive.yaml"), "--comp", "fcs",
       "--manifest", str(example_dir / "manifest.csv"), "--time-qc", "--out", str(cli_out / "flow"))
    ok("cytokines", str(example_dir / "plates"), "--standards", str(example_dir / "standards.csv"),
       "--model", "5pl", "--weights", "1/y2", "--lloq-policy", "half",
       "--out", str(cli_out / "cytokines"))
    # the assemble stage's own CLI-vs-run check lives with it; here its folder is the run's
    shutil.copytree(layout.study.dir, cli_out / "study")
    # compare: on the run's own study, so the provenance names the same input
    ok("compare", str(layout.study.h5ad), "--no-mixed", "--min-subjects", "2",
       "--primary", "IL-13", "--primary", "Th2|pct_parent", "--population", "all",
       "--out", str(cli_out / "compare"))
    n = _compare_folders(cli_out / "compare", layout.compare.dir, cli_only={"compare.log"})
    assert n == 4
    table = pd.read_csv(layout.compare.comparisons)
    assert set(table["population"]) == {"all"} and (table["role"] == "primary").any()

    ok("report", str(cli_out), "--title", "same either way")
    cli_report = RunLayout(cli_out).report
    figures = sorted(p.name for p in layout.report.plots.iterdir())
    assert sorted(p.name for p in cli_report.plots.iterdir()) == figures
    assert any(f.startswith("gating_") for f in figures) and "forest.png" in figures
    for name in figures:
        assert (cli_report.plots / name).read_bytes() == (layout.report.plots / name).read_bytes(), \
            name
    for table_path in ("flow_qc", "cytokine_qc"):
        assert getattr(cli_report, table_path).read_bytes() == \
            getattr(layout.report, table_path).read_bytes()
    page = layout.report.html.read_text(encoding="utf-8")
    cli_page = cli_report.html.read_text(encoding="utf-8")
    assert str(run_out.resolve()) in page
    assert cli_page.replace(str(cli_out.resolve()), str(run_out.resolve())) == page
