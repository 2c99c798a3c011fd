"""A real dask.distributed LocalCluster on loopback gives the same results as a serial run."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from immunoprofile.pipeline.config import load_config
from immunoprofile.pipeline.runner import run_pipeline

from trialdata import make_trial


@pytest.mark.timeout(180)
def test_local_cluster_equals_serial(tmp_path: Path) -> None:
    from dask.distributed import LocalCluster

    serial_cfg = make_trial(tmp_path / "serial", n_subjects=2)
    dask_cfg = make_trial(tmp_path / "dask", n_subjects=2, kind="dask", jobs=2)
    bad = tmp_path / "dask" / "flow" / "s02_week4.fcs"
    (tmp_path / "serial" / "flow" / "s02_week4.fcs").write_bytes(bad.read_bytes()[:300])
    bad.write_bytes(bad.read_bytes()[:300])

    serial = run_pipeline(load_config(serial_cfg))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        distributed = run_pipeline(load_config(dask_cfg), address=cluster.scheduler_address)
    assert distributed.n_flow == serial.n_flow == 3
    # the failure travels back from the worker as a one-line reason, like in the serial run
    assert [r.replace("/dask/", "/") for _, r in distributed.failures] == [
        r.replace("/serial/", "/") for _, r in serial.failures]
    a = (tmp_path / "serial" / "out" / "flow" / "populations.csv").read_bytes()
    b = (tmp_path / "dask" / "out" / "flow" / "populations.csv").read_bytes()
    assert a == b
    xa = ad.read_h5ad(tmp_path / "serial" / "out" / "flow" / "flow.h5ad")
    xb = ad.read_h5ad(tmp_path / "dask" / "out" / "flow" / "flow.h5ad")
    np.testing.assert_array_equal(xa.X, xb.X)
    assert xa.var.equals(xb.var)
