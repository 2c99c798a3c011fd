"""Batch gating outputs: populations.csv, flow.h5ad, provenance.json, failed.tsv."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from immunoprofile.errors import InputError
from immunoprofile.flow.batch import (SampleGating, expand_fcs_inputs, gate_anndata,
                                      sample_ids_from_manifest, write_gate_outputs)

POPS = ["/Cells", "/Cells/Singlets", "/Cells/Singlets/CD3+"]


def _stats(sid: str, counts: list[int], mfi: list[float]) -> pd.DataFrame:
    parents = [None, "/Cells", "/Cells/Singlets"]
    total = 1000
    pct_parent = [100.0 * counts[0] / total] + [100.0 * c / p for c, p in zip(counts[1:],
                                                                            counts[:-1])]
    return pd.DataFrame({"sample_id": sid, "population": POPS, "parent": parents,
                         "count": np.array(counts, dtype=np.int64), "pct_parent": pct_parent,
                         "pct_total": [100.0 * c / total for c in counts],
                         "mfi_CD4": mfi, "gmean_CD4": mfi, "rcv_CD4": [1.0, 2.0, 3.0]})


def _sample(sid: str, counts: list[int], mfi: list[float]) -> SampleGating:
    stats = _stats(sid, counts, mfi)
    stats.insert(1, "file", f"{sid}.fcs")
    return SampleGating(sid, f"{sid}.fcs", "0" * 64, stats,
                        {"$DATE": "05-MAR-2024", "$CYT": "FACSCanto II"}, 1000, [])


def test_write_gate_outputs_tables_and_anndata(tmp_path: Path) -> None:
    fcs = tmp_path / "S2.fcs"
    fcs.write_bytes(b"x")
    # given out of order: outputs are sorted by sample id
    samples = [_sample("S2", [800, 600, 300], [10.0, 20.0, 30.0]),
               _sample("S1", [900, 700, 350], [11.0, 21.0, np.nan])]
    written = write_gate_outputs(tmp_path / "out", samples, [("bad.fcs", "bad.fcs: truncated")],
                                 strategy=None, parameters={"compensation": "fcs"}, inputs=[fcs])
    assert set(written) == {"populations", "h5ad", "provenance", "failed"}
    table = pd.read_csv(tmp_path / "out" / "populations.csv")
    assert list(table.columns[:7]) == ["sample_id", "file", "population", "parent", "count",
                                       "pct_parent", "pct_total"]
    assert list(table["sample_id"]) == ["S1"] * 3 + ["S2"] * 3
    assert list(table["population"]) == POPS * 2

    adata = ad.read_h5ad(tmp_path / "out" / "flow.h5ad")
    assert list(adata.obs_names) == ["S1", "S2"]
    assert adata.obs.loc["S2", "$CYT"] == "FACSCanto II"
    assert "/Cells/Singlets/CD3+|pct_parent" in adata.var_names
    assert "/Cells/Singlets/CD3+|mfi_CD4" in adata.var_names
    row = adata.var.loc["/Cells/Singlets/CD3+|mfi_CD4"]
    assert (row["feature_type"], row["statistic"], row["marker"], row["population"]) == (
        "mfi", "mfi", "CD4", "/Cells/Singlets/CD3+")
    assert set(adata.var["feature_type"].cat.categories) == {"count", "frequency", "mfi"}
    assert adata.var["population"].cat.ordered
    assert list(adata.var["population"].cat.categories) == POPS
    # every X value equals the table's value for that sample/population/statistic
    for _, rec in table.iterrows():
        for col in ("count", "pct_parent", "pct_total", "mfi_CD4"):
            got = adata[rec["sample_id"], f"{rec['population']}|{col}"].X[0, 0]
            np.testing.assert_equal(got, rec[col])
    assert adata.X[1, list(adata.var_names).index("/Cells/Singlets|pct_parent")] == 75.0
    uns = adata.uns["immunoprofile"]
    assert all("/" not in k for k in uns)
    assert json.loads(uns["failed_json"]) == [["bad.fcs", "bad.fcs: truncated"]]

    prov = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert prov["parameters"] == {"compensation": "fcs"}
    assert prov["inputs"][0]["name"] == "S2.fcs" and len(prov["inputs"][0]["sha256"]) == 64
    with open(tmp_path / "out" / "failed.tsv", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    assert rows == [["input", "reason"], ["bad.fcs", "bad.fcs: truncated"]]
    assert not list((tmp_path / "out").glob(".*"))  # no temp files left

    # a re-run without failures removes the stale failed.tsv
    write_gate_outputs(tmp_path / "out", samples, [], strategy=None, parameters={})
    assert not (tmp_path / "out" / "failed.tsv").exists()


def test_anndata_empty_batch_is_valid() -> None:
    adata = gate_anndata([])
    assert adata.shape == (0, 0)


def test_expand_inputs_sorted_and_errors(tmp_path: Path) -> None:
    for name in ("b.fcs", "a.FCS", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in expand_fcs_inputs([tmp_path])] == ["a.FCS", "b.fcs"]
    with pytest.raises(InputError, match="no such file"):
        expand_fcs_inputs([tmp_path / "missing.fcs"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no .fcs files"):
        expand_fcs_inputs([empty])


def test_manifest_mapping(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("sample_id,assay,file\nP01_W0,flow,flow/P01_w0.fcs\n"
                    "P01_W0_cyto,cytokine,plates/p1.csv\n")
    assert sample_ids_from_manifest(path) == {"P01_w0.fcs": "P01_W0"}
    path.write_text("sample_id,file\nA,x.fcs\nB,x.fcs\n")
    with pytest.raises(InputError, match="two sample ids"):
        sample_ids_from_manifest(path)
    path.write_text("id,file\nA,x.fcs\n")
    with pytest.raises(InputError, match="lacks column"):
        sample_ids_from_manifest(path)


def test_gate_sample_matches_gatingml_compliance_truth(reference_dir: Path, tmp_path: Path) -> None:
    """Through the batch layer, every gate of the Gating-ML 2.0 compliance set gives the ISAC
    truth: membership event for event, and counts in the stats table."""
    from immunoprofile.flow.batch import gate_sample
    from immunoprofile.flow.strategy import load_strategy

    root = reference_dir / "flow" / "gatingml2"
    strategy = load_strategy(root / "gml" / "gml_all_gates.xml")
    member = tmp_path / "m.parquet"
    # data1.fcs has no $SPILLOVER: "FCS" dimensions read raw values, spectrum matrices still apply
    result = gate_sample(root / "data1.fcs", strategy, sample_id="data1", membership_path=member,
                         compensation="none")
    assert result.n_events == 13367 and result.sample_id == "data1" and result.file == "data1.fcs"
    assert len(result.sha256) == 64
    membership = pd.read_parquet(member)
    assert len(membership) == 13367
    counts = result.stats.set_index("population")["count"]
    checked = 0
    for pid, path in strategy.paths().items():
        truth_file = root / "truth" / ("Results_ParQuadRect.txt" if pid == "ParRectangle1"
                                       else f"Results_{pid}.txt")
        if not truth_file.is_file():
            continue
        truth = np.loadtxt(truth_file, dtype=int).astype(bool)
        np.testing.assert_array_equal(membership[path].to_numpy(), truth, err_msg=pid)
        assert counts[path] == truth.sum(), pid
        checked += 1
    assert checked >= 45


def test_gate_sample_missing_file_and_compensation_choices(tmp_path: Path) -> None:
    from immunoprofile.flow.batch import gate_sample
    from immunoprofile.flow.fcs_write import write_fcs
    from immunoprofile.flow.strategy import load_strategy

    rng = np.random.default_rng(1)
    true = np.where(rng.random((4000, 2)) < 0.5, rng.lognormal(9, 0.3, (4000, 2)),
                    rng.lognormal(4, 0.5, (4000, 2)))
    spill = np.array([[1.0, 0.3], [0.0, 1.0]])
    write_fcs(tmp_path / "t.fcs", (true @ spill).astype(np.float32), ["FL1-A", "FL2-A"],
              ["CD3", "CD4"], spillover=(["FL1-A", "FL2-A"], spill))
    (tmp_path / "s.yaml").write_text(
        "format: immunoprofile-strategy/1\ntransforms:\n  default: {type: logicle, T: 262144, "
        "W: 0.5, M: 4.5, A: 0}\ngates:\n  - {name: CD4+, type: range, channel: CD4, min: 0.5}\n")
    strategy = load_strategy(tmp_path / "s.yaml")
    comp = gate_sample(tmp_path / "t.fcs", strategy)
    raw = gate_sample(tmp_path / "t.fcs", strategy, compensation="none")
    assert comp.sample_id == "t"
    # without compensation CD3 spills into CD4: more CD4+ events than the truth
    truth_cd4 = int((true[:, 1] > 2000).sum())
    n_comp = int(comp.stats["count"].iloc[0])
    n_raw = int(raw.stats["count"].iloc[0])
    assert abs(n_comp - truth_cd4) < 0.01 * 4000 < n_raw - truth_cd4
    with pytest.raises(InputError, match="not found"):
        gate_sample(tmp_path / "nope.fcs", strategy)
    with pytest.raises(InputError, match="compensation matrix file not found"):
        gate_sample(tmp_path / "t.fcs", strategy, compensation=str(tmp_path / "nope.csv"))


def test_provenance_digests_come_from_the_gating_read(reference_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The FCS digest is taken from the bytes read for gating and reused by provenance (the file
    is not read again); inputs without a known digest are still hashed."""
    import hashlib

    from immunoprofile import provenance as prov_mod
    from immunoprofile.flow.batch import gate_sample, write_gate_outputs
    from immunoprofile.flow.strategy import load_strategy

    root = reference_dir / "flow" / "gatingml2"
    fcs_path = root / "data1.fcs"
    strategy_path = root / "gml" / "gml_rect1_gate.xml"
    sample = gate_sample(fcs_path, load_strategy(strategy_path), compensation="none")
    assert sample.sha256 == hashlib.sha256(fcs_path.read_bytes()).hexdigest()
    hashed: list[str] = []
    real = prov_mod.sha256_file
    monkeypatch.setattr(prov_mod, "sha256_file", lambda p, **k: hashed.append(Path(p).name)
                        or real(p, **k))
    write_gate_outputs(tmp_path / "out", [sample], [], strategy=None, parameters={},
                       inputs=[fcs_path, strategy_path])
    prov = json.loads((tmp_path / "out" / "provenance.json").read_text())
    digests = {r["name"]: r["sha256"] for r in prov["inputs"]}
    assert digests["data1.fcs"] == sample.sha256
    assert digests[strategy_path.name] == hashlib.sha256(strategy_path.read_bytes()).hexdigest()
    assert hashed == [strategy_path.name]
