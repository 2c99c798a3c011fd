"""``immunoprofile.flow.gate_files`` in memory: many files -> one tidy table, one AnnData."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from immunoprofile.errors import InputError
from immunoprofile.executors import ExecutorSpec
from immunoprofile.flow import gate_files
from immunoprofile.flow.batch import gate_sample
from immunoprofile.flow.stage import pair_samples


def test_gate_files_in_memory_equals_per_file_gating(example_dir: Path) -> None:
    files = sorted((example_dir / "flow").glob("AD0[12]_week0_flow.fcs"))
    strategy = example_dir / "strategy.yaml"
    serial = gate_files(files, strategy)
    pool = gate_files(files, strategy, executor=ExecutorSpec("process", 2))
    assert serial.failures == [] and serial.written == {}
    pd.testing.assert_frame_equal(serial.table, pool.table)
    # the batch table is the per-file tables stacked (sample id = file stem, sorted)
    one = [gate_sample(f, strategy).stats for f in files]
    pd.testing.assert_frame_equal(serial.table, pd.concat(one, ignore_index=True)[
        list(serial.table.columns)])
    adata = serial.adata
    assert list(adata.obs_names) == [f.stem for f in files]
    feature = "/Cells/Singlets/Live/CD3+|pct_parent"
    rows = serial.table.set_index(["sample_id", "population"])["pct_parent"]
    np.testing.assert_allclose(adata[:, feature].X.ravel(),
                               [rows[(s, "/Cells/Singlets/Live/CD3+")] for s in adata.obs_names])
    assert adata.n_vars == len(serial.table["population"].unique()) * sum(
        c in ("count", "pct_parent", "pct_total") or c.startswith("mfi_")
        for c in serial.table.columns)


def test_a_missing_file_fails_alone_and_ids_come_from_the_mapping(example_dir: Path,
                                                                  tmp_path: Path) -> None:
    good = example_dir / "flow" / "AD01_week0_flow.fcs"
    result = gate_files([good, tmp_path / "absent.fcs"], example_dir / "strategy.yaml",
                        sample_ids={good.name: "P1"})
    assert [s.sample_id for s in result.samples] == ["P1"]
    (path, reason), = result.failures
    assert path.endswith("absent.fcs") and "not found" in reason


def test_pair_samples_is_the_one_join(tmp_path: Path) -> None:
    assert pair_samples([tmp_path / "b.fcs", tmp_path / "a.fcs"], {"b.fcs": "B"}) == [
        ("B", tmp_path / "b.fcs"), ("a", tmp_path / "a.fcs")]
    with pytest.raises(InputError, match="also the id of"):
        pair_samples([tmp_path / "x" / "a.fcs", tmp_path / "y" / "a.fcs"])
    with pytest.raises(InputError, match="strategy file not found"):
        gate_files([tmp_path / "a.fcs"], tmp_path / "absent.yaml")
