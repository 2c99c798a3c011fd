"""The h5py-only ``.h5ad`` writer against anndata's own: ``anndata.read_h5ad`` reads the same
object back from both (anndata is the oracle for its format)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from immunoprofile._h5ad import write_h5ad


def _parts() -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame, dict]:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(5, 7))
    X[1, 2] = np.nan
    obs = pd.DataFrame({
        "file": [f"s{i}.fcs" for i in range(5)],                   # unique: stays strings
        "$CYT": ["Fortessa", "Fortessa", "Aria", "Fortessa", "Aria"],  # repeats: categorical
        "visit": ["week12", "week2", "week2", "week0", "week12"],   # natural-sorted categories
        "n_events": np.arange(5, dtype=np.int64) * 1000,
        "ok": [True, False, True, True, False],
    }, index=pd.Index([f"S{i}" for i in range(5)]))
    var = pd.DataFrame({
        "population": pd.Categorical(list("aabbccd"), categories=list("dcba"), ordered=True),
        "marker": ["", "CD4", "", "CD4", "CD8", "", ""],
        "score": np.linspace(0, 1, 7),
    }, index=pd.Index([f"f{j}" for j in range(7)]))
    uns = {"immunoprofile": {"schema_version": "1", "json": '{"a": [1, 2]}',
                             "order": np.array(["x", "y/z"], dtype=object),
                             "n": 3, "values": np.arange(3.0), "nested": {"flag": True}}}
    return X, obs, var, uns


def test_same_object_as_anndata_writes(tmp_path: Path) -> None:
    X, obs, var, uns = _parts()
    write_h5ad(tmp_path / "ours.h5ad", X=X, obs=obs, var=var, uns=uns)
    ad.AnnData(X=X, obs=obs.copy(), var=var.copy(), uns=uns).write_h5ad(tmp_path / "theirs.h5ad")
    ours, theirs = (ad.read_h5ad(tmp_path / f"{n}.h5ad") for n in ("ours", "theirs"))
    np.testing.assert_array_equal(ours.X, theirs.X)
    assert ours.X.dtype == theirs.X.dtype
    pd.testing.assert_frame_equal(ours.obs, theirs.obs)
    pd.testing.assert_frame_equal(ours.var, theirs.var)
    assert isinstance(ours.obs["$CYT"].dtype, pd.CategoricalDtype)
    assert list(ours.obs["visit"].cat.categories) == ["week0", "week2", "week12"]
    assert ours.uns.keys() == theirs.uns.keys()
    for key, value in theirs.uns["immunoprofile"].items():
        got = ours.uns["immunoprofile"][key]
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(got, value)
        else:
            assert got == value, key


def test_unsupported_data_is_a_type_error(tmp_path: Path) -> None:
    X, obs, var, uns = _parts()
    with pytest.raises(TypeError):
        write_h5ad(tmp_path / "x.h5ad", X=X, obs=obs, var=var, uns={"bad": object()})
    with pytest.raises(TypeError):
        write_h5ad(tmp_path / "x.h5ad", X=X[:, :3], obs=obs, var=var, uns={})


def test_gate_outputs_h5ad_equals_anndata_written(tmp_path: Path) -> None:
    """``write_gate_outputs`` (h5py writer) and ``gate_anndata(...).write_h5ad`` agree."""
    from immunoprofile.flow.batch import SampleGating, gate_anndata, write_gate_outputs

    def stats(sid: str, k: float) -> pd.DataFrame:
        return pd.DataFrame({"sample_id": sid, "population": ["/A", "/A/B"], "parent": ["", "/A"],
                             "count": np.array([10, 4], dtype=np.int64),
                             "pct_parent": [10.0, 40.0 * k], "pct_total": [10.0, 4.0 * k],
                             "mfi_CD4": [1.5, np.nan], "gmean_CD4": [1.0, 2.0]})

    samples = [SampleGating(sample_id=f"S{i}", file=f"s{i}.fcs", sha256="0" * 64,
                            stats=stats(f"S{i}", i + 1), keywords={"$CYT": "Aria", "$DATE": str(i)},
                            n_events=100, warnings=["w"] if i else [])
               for i in range(3)]
    written = write_gate_outputs(tmp_path / "out", samples, [("bad.fcs", "truncated")],
                                 strategy=None, parameters={"x": 1})
    ours = ad.read_h5ad(written["h5ad"])
    gate_anndata(samples, strategy=None, failures=[("bad.fcs", "truncated")]).write_h5ad(
        tmp_path / "theirs.h5ad")
    theirs = ad.read_h5ad(tmp_path / "theirs.h5ad")
    np.testing.assert_array_equal(ours.X, theirs.X)
    pd.testing.assert_frame_equal(ours.obs, theirs.obs)
    pd.testing.assert_frame_equal(ours.var, theirs.var)
    mine, ref = ours.uns["immunoprofile"], theirs.uns["immunoprofile"]
    assert set(mine) == set(ref) | {"provenance_json"}
    for key in ref:
        np.testing.assert_array_equal(mine[key], ref[key])
