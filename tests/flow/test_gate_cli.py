"""`immunoprofile gate` end to end: outputs, membership, failures (exit 1), bad options (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from immunoprofile.cli import cli

STRATEGY = """\
format: immunoprofile-strategy/1
compensation: fcs
transforms:
  default: {type: logicle, T: 262144, W: 0.5, M: 4.5, A: 0}
  FSC-A: {type: linear, T: 262144}
gates:
  - name: Cells
    type: range
    channel: FSC-A
    min: 0.2
    children:
      - name: CD4+
        type: range
        channel: CD4
        min: 0.55
"""


def _write(folder: Path, name: str, seed: int, n: int = 2000) -> Path:
    from immunoprofile.flow.fcs_write import write_fcs

    rng = np.random.default_rng(seed)
    fsc = rng.uniform(0, 262_143, n)
    cd4 = np.where(rng.random(n) < 0.4, rng.lognormal(np.log(20_000), 0.3, n),
                   rng.lognormal(np.log(100), 0.5, n))
    cd8 = rng.lognormal(np.log(300), 0.5, n)
    events = np.column_stack([fsc, cd4, cd8]).astype(np.float32)
    return write_fcs(folder / name, events, ["FSC-A", "FL1-A", "FL2-A"], ["", "CD4", "CD8"],
                     text={"$DATE": "24-NOV-2026", "$CYT": "Simulated"},
                     spillover=(["FL1-A", "FL2-A"], np.array([[1.0, 0.1], [0.05, 1.0]])))


@pytest.fixture
def batch(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "fcs"
    folder.mkdir()
    for i in range(3):
        _write(folder, f"tube{i}.fcs", seed=i)
    (tmp_path / "strategy.yaml").write_text(STRATEGY)
    return folder, tmp_path / "strategy.yaml"


def test_gate_folder_writes_all_outputs(batch, tmp_path: Path) -> None:
    folder, strategy = batch
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["gate", str(folder), "--strategy", str(strategy),
                                      "--out", str(out), "--membership", "-q"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["flow.h5ad", "membership",
                                                     "populations.csv", "provenance.json"]
    table = pd.read_csv(out / "populations.csv")
    assert table["sample_id"].tolist() == ["tube0"] * 2 + ["tube1"] * 2 + ["tube2"] * 2
    assert table["population"].tolist()[:2] == ["/Cells", "/Cells/CD4+"]
    assert "mfi_CD4" in table.columns
    # the membership columns agree with the counts, event for event in file order
    for sid, rows in table.groupby("sample_id"):
        member = pd.read_parquet(out / "membership" / f"{sid}.parquet")
        assert list(member.columns) == ["/Cells", "/Cells/CD4+"]
        assert len(member) == 2000 and all(member.dtypes == bool)
        assert member.sum().tolist() == rows["count"].tolist()
        assert not (member["/Cells/CD4+"] & ~member["/Cells"]).any()
    # independent check of the first gate: linear FSC-A scale ≥ 0.2 means FSC-A ≥ 0.2 * 262144
    from immunoprofile.flow.fcs import read_fcs

    fsc = read_fcs(folder / "tube1.fcs").events[:, 0]
    cells = table[(table.sample_id == "tube1") & (table.population == "/Cells")]["count"].item()
    assert cells == int((fsc >= 0.2 * 262144).sum())
    adata = ad.read_h5ad(out / "flow.h5ad")
    assert list(adata.obs_names) == ["tube0", "tube1", "tube2"]
    assert adata.obs["$CYT"].tolist() == ["Simulated"] * 3


def test_bad_file_goes_to_failed_tsv_and_exit_1(batch, tmp_path: Path) -> None:
    folder, strategy = batch
    (folder / "broken.fcs").write_bytes(b"FCS3.1    not really")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["gate", str(folder), "--strategy", str(strategy),
                                      "--out", str(out), "-q"])
    assert result.exit_code == 1
    failed = (out / "failed.tsv").read_text().splitlines()
    assert failed[0] == "input\treason" and len(failed) == 2
    assert failed[1].startswith(str(folder / "broken.fcs") + "\t")
    assert pd.read_csv(out / "populations.csv")["sample_id"].nunique() == 3


def test_manifest_maps_sample_ids_and_jobs_2_matches(batch, tmp_path: Path) -> None:
    folder, strategy = batch
    manifest = tmp_path / "m.csv"
    manifest.write_text("sample_id,file\nP1_W0,tube0.fcs\nP1_W4,x/tube1.fcs\n")
    outs = []
    for jobs in ("1", "2"):
        out = tmp_path / f"out{jobs}"
        result = CliRunner().invoke(cli, ["gate", str(folder), "--strategy", str(strategy),
                                          "--out", str(out), "--manifest", str(manifest),
                                          "--jobs", jobs, "-q"])
        assert result.exit_code == 0, result.output
        outs.append((out / "populations.csv").read_bytes())
    assert outs[0] == outs[1]
    ids = pd.read_csv(tmp_path / "out1" / "populations.csv")["sample_id"].unique().tolist()
    assert ids == ["P1_W0", "P1_W4", "tube2"]


@pytest.mark.parametrize("args, message", [
    (["--strategy", "{tmp}/nope.yaml"], "strategy file not found"),
    (["--strategy", "{strategy}", "--comp", "{tmp}/nope.csv"], "compensation matrix file not"),
    (["--strategy", "{bad_strategy}"], "bad.yaml"),
])
def test_bad_strategy_or_options_exit_2_one_line(batch, tmp_path: Path, args, message) -> None:
    folder, strategy = batch
    bad = tmp_path / "bad.yaml"
    bad.write_text("gates: [{name: A, type: blob}]\n")
    args = [a.format(tmp=tmp_path, strategy=strategy, bad_strategy=bad) for a in args]
    proc = subprocess.run([sys.executable, "-m", "immunoprofile.cli", "gate", str(folder), *args,
                           "--out", str(tmp_path / "o")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_duplicate_sample_ids_exit_2(batch, tmp_path: Path) -> None:
    folder, strategy = batch
    other = tmp_path / "other"
    other.mkdir()
    _write(other, "tube0.fcs", seed=7)
    result = CliRunner().invoke(cli, ["gate", str(folder), str(other / "tube0.fcs"),
                                      "--strategy", str(strategy), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2


def _versions(reference_dir: Path) -> Path:
    d = reference_dir / "flow" / "flowjo_versions"
    if not d.is_dir():
        pytest.skip("reference folder flow/flowjo_versions is absent")
    return d


def test_mac_flowjo_workspace_gates_every_file_with_its_own_sample(reference_dir: Path,
                                                                  tmp_path: Path) -> None:
    """FlowJo 8.5.3 (Mac): populations nested without <Subpopulations> used to give zero gates
    and "gated 16/16"; now every file has its own sample's 10 or 24 populations."""
    d = _versions(reference_dir)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["gate", str(d / "fcs"), "--strategy",
                                      str(d / "workspaces" / "advanced-v8.5.3.xml"),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "gated 16/16" in result.output
    table = pd.read_csv(out / "populations.csv")
    expected = pd.read_csv(d / "counts" / "advanced-v8.5.3.tsv", sep="\t")
    assert len(table) == len(expected) == 164
    assert (table["workspace_sample"] == table["file"]).all()
    assert set(zip(table["file"], table["population"])) == set(zip(expected["fil"],
                                                                   expected["path"]))


def test_file_matching_no_workspace_sample_fails_alone(reference_dir: Path,
                                                       tmp_path: Path) -> None:
    d = _versions(reference_dir)
    folder = tmp_path / "mix"
    folder.mkdir()
    for src in (d / "fcs" / "931115-B01- Sample 01.fcs",
                reference_dir / "flow" / "gatingml2" / "data1.fcs"):
        (folder / src.name).write_bytes(src.read_bytes())
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["gate", str(folder), "--strategy",
                                      str(d / "workspaces" / "advanced-v7.6.5.wsp"),
                                      "--out", str(out)])
    assert result.exit_code == 1
    failed = pd.read_csv(out / "failed.tsv", sep="\t")
    assert len(failed) == 1 and "data1.fcs: matches no sample of workspace" in failed["reason"][0]
    table = pd.read_csv(out / "populations.csv")
    assert set(table["file"]) == {"931115-B01- Sample 01.fcs"} and len(table) == 6


def test_strategy_without_gates_exit_2(batch, tmp_path: Path) -> None:
    folder, _ = batch
    empty = tmp_path / "empty.xml"
    empty.write_text('<?xml version="1.0"?><gating:Gating-ML xmlns:gating='
                     '"http://www.isac-net.org/std/Gating-ML/v2.0/gating"/>')
    proc = subprocess.run([sys.executable, "-m", "immunoprofile.cli", "gate", str(folder),
                           "--strategy", str(empty), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "defines no gates" in lines[0]
    assert not (tmp_path / "o").exists()
