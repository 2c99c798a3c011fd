"""Kill `immunoprofile run` mid-batch (SIGKILL): no half-written outputs; a re-run completes
with the cache intact and gives results identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from trialdata import make_trial

N_SUBJECTS, VISITS = 6, ("week0", "week4", "week12")  # 18 files


def _cmd(config: Path) -> list[str]:
    return [sys.executable, "-m", "immunoprofile.cli", "run", str(config), "-q", "--jobs", "1"]


def _entries(cache: Path) -> list[Path]:
    return list(cache.glob("flow/*/*/meta.json")) if cache.is_dir() else []


def _assert_complete_or_absent(out: Path) -> None:
    """Every visible file reads completely; temporary files are hidden ``.*.tmp`` only."""
    for path in out.rglob("*"):
        if not path.is_file() or path.name.startswith("."):
            assert path.is_dir() or path.name.endswith(".tmp"), path
            continue
        if path.suffix == ".parquet":
            pd.read_parquet(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix in (".csv", ".tsv"):
            pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
        elif path.suffix == ".h5ad":
            ad.read_h5ad(path)


@pytest.mark.timeout(240)
def test_killed_run_resumes_to_identical_results(tmp_path: Path) -> None:
    config = make_trial(tmp_path / "killed", n_subjects=N_SUBJECTS, visits=VISITS,
                        n_events=60_000, membership=True)
    shutil.copytree(tmp_path / "killed", tmp_path / "clean")
    total = N_SUBJECTS * len(VISITS)
    cache = tmp_path / "killed" / "out" / ".cache"

    proc = subprocess.Popen(_cmd(config), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(_entries(cache)) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    alive = proc.poll() is None
    done_at_kill = len(_entries(cache))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert alive, f"run ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    assert 3 <= done_at_kill < total

    out = tmp_path / "killed" / "out"
    _assert_complete_or_absent(out)
    assert not (out / "flow" / "populations.csv").exists()  # batch outputs come at the end

    resumed = subprocess.run(_cmd(config), capture_output=True, text=True, timeout=200)
    assert resumed.returncode == 0, resumed.stderr
    # the re-run took what the killed run had finished from the cache
    log = (out / "run.log").read_text()
    reused = [int(m) for m in re.findall(rf"gate: {total} FCS file\(s\), (\d+) from the cache",
                                         log)]
    assert reused[0] == 0 and done_at_kill <= reused[-1] < total  # run.log is appended to
    clean = subprocess.run(_cmd(tmp_path / "clean" / "config.yaml"), capture_output=True,
                           text=True, timeout=200)
    assert clean.returncode == 0, clean.stderr

    ref = tmp_path / "clean" / "out"
    _assert_complete_or_absent(out)
    assert not list(out.rglob(".*.tmp"))  # the re-run cleaned up after the killed one
    assert len(_entries(cache)) == total
    for rel in ["flow/populations.csv", *(f"flow/membership/S0{s}_{v}.parquet"
                                          for s in range(1, N_SUBJECTS + 1) for v in VISITS)]:
        assert (out / rel).read_bytes() == (ref / rel).read_bytes(), rel
    a, b = ad.read_h5ad(out / "flow" / "flow.h5ad"), ad.read_h5ad(ref / "flow" / "flow.h5ad")
    np.testing.assert_array_equal(a.X, b.X)
    assert a.obs.equals(b.obs) and a.var.equals(b.var)
