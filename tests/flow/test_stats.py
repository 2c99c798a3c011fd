"""Tests of immunoprofile.flow.stats: FlowKit's counts/percentages and independent statistics."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from immunoprofile.errors import InputError
from immunoprofile.flow.compensation import Spillover
from immunoprofile.flow.fcs import FCSData, read_fcs
from immunoprofile.flow.stats import is_scatter_or_time, marker_columns, population_stats


@dataclass
class FakeResult:
    """Stand-in with the fields of engine.GatingResult that population_stats reads."""

    masks: dict[str, np.ndarray]
    paths: dict[str, str]
    parents: dict[str, str | None]
    counts: dict[str, int] = field(default_factory=dict)


def _fcs(events: np.ndarray, channels: list[str], markers: list[str],
         spillover: Spillover | None = None) -> FCSData:
    return FCSData(path="mem.fcs", version="FCS3.1", text={}, channels=channels, markers=markers,
                   events=np.ascontiguousarray(events), ranges=[262144.0] * len(channels),
                   datatype="F", spillover=spillover)


def _independent(values: np.ndarray) -> tuple[float, float, float]:
    """median, gmean of positives, rCV -- via pandas/scipy, not the code under test."""
    s = pd.Series(values.astype(np.float64))
    med = s.median()
    pos = s[s > 0]
    gm = sps.gmean(pos) if len(pos) else np.nan
    lo, hi = s.quantile(0.15865525393145708), s.quantile(0.8413447460685429)
    rcv = 100 * 0.5 * (hi - lo) / med if med > 0 else np.nan
    return med, gm, rcv


def test_stats_against_independent_computation() -> None:
    rng = np.random.default_rng(3)
    n = 5000
    ev = np.column_stack([rng.normal(50000, 1e4, n), rng.normal(2e4, 5e3, n),
                          rng.lognormal(6, 1, n) - 100, rng.lognormal(5, 0.5, n),
                          np.arange(n, dtype=float)]).astype(np.float32)
    fcs = _fcs(ev, ["FSC-A", "SSC-A", "FITC-A", "PE-A", "Time"], ["", "", "CD3", "", ""])
    cells = ev[:, 0] > 45000
    cd3 = cells & (ev[:, 2] > 300)
    empty = np.zeros(n, dtype=bool)
    result = FakeResult(
        masks={"cells": cells, "cd3": cd3, "none": empty, "under_none": empty},
        paths={"cells": "/Cells", "cd3": "/Cells/CD3+", "none": "/Cells/None",
               "under_none": "/Cells/None/Sub"},
        parents={"cells": None, "cd3": "cells", "none": "cells", "under_none": "none"})
    t = population_stats(result, fcs, sample_id="S1", spillover="none")
    assert list(t.columns[:6]) == ["sample_id", "population", "parent", "count", "pct_parent",
                                   "pct_total"]
    assert [c for c in t.columns if c.startswith("mfi_")] == ["mfi_CD3", "mfi_PE-A"]
    assert {"gmean_CD3", "rcv_CD3", "gmean_PE-A", "rcv_PE-A"} <= set(t.columns)
    assert t["population"].tolist() == ["/Cells", "/Cells/CD3+", "/Cells/None", "/Cells/None/Sub"]
    assert t["parent"].tolist() == ["", "/Cells", "/Cells", "/Cells/None"]
    row = t.set_index("population")
    assert row.loc["/Cells", "count"] == cells.sum()
    assert row.loc["/Cells/CD3+", "pct_parent"] == pytest.approx(100 * cd3.sum() / cells.sum())
    assert row.loc["/Cells/CD3+", "pct_total"] == pytest.approx(100 * cd3.sum() / n)
    assert row.loc["/Cells/None", "pct_parent"] == 0.0
    assert np.isnan(row.loc["/Cells/None/Sub", "pct_parent"])  # empty parent: undefined
    assert np.isnan(row.loc["/Cells/None", "mfi_CD3"])
    for pop, mask in (("/Cells", cells), ("/Cells/CD3+", cd3)):
        for col, label in ((2, "CD3"), (3, "PE-A")):
            med, gm, rcv = _independent(ev[mask, col])
            assert row.loc[pop, f"mfi_{label}"] == pytest.approx(med, rel=1e-6)
            assert row.loc[pop, f"gmean_{label}"] == pytest.approx(gm, rel=1e-5)
            assert row.loc[pop, f"rcv_{label}"] == pytest.approx(rcv, rel=1e-5)
    assert t["count"].dtype == np.int64


def test_stats_use_compensated_values() -> None:
    rng = np.random.default_rng(5)
    true = np.column_stack([rng.lognormal(7, 1, 2000), rng.lognormal(5, 1, 2000)])
    s = Spillover(("B1", "B2"), np.array([[1.0, 0.25], [0.05, 1.0]]))
    raw = true @ s.matrix
    fcs = _fcs(raw, ["B1", "B2"], ["CD4", "CD8"], spillover=s)
    everything = np.ones(2000, dtype=bool)
    res = FakeResult(masks={"all": everything}, paths={"all": "/All"}, parents={"all": None})
    comp = population_stats(res, fcs, sample_id="x")  # default: the file's spillover
    assert comp.loc[0, "mfi_CD8"] == pytest.approx(np.median(true[:, 1]), rel=1e-9)
    none = population_stats(res, fcs, sample_id="x", spillover="none")
    assert none.loc[0, "mfi_CD8"] == pytest.approx(np.median(raw[:, 1]), rel=1e-9)
    explicit = population_stats(res, fcs, sample_id="x", spillover=s)
    assert explicit.loc[0, "mfi_CD8"] == comp.loc[0, "mfi_CD8"]
    only = population_stats(res, fcs, sample_id="x", markers=["CD8"])
    assert [c for c in only.columns if c.startswith("mfi_")] == ["mfi_CD8"]


def test_gmean_and_rcv_edge_cases() -> None:
    ev = np.array([[-5.0, 0.0], [-1.0, 0.0], [-2.0, 0.0]])
    fcs = _fcs(ev, ["A", "B"], ["", ""])
    res = FakeResult(masks={"p": np.ones(3, dtype=bool)}, paths={"p": "/p"}, parents={"p": None})
    t = population_stats(res, fcs, sample_id="s", spillover=None)
    assert t.loc[0, "mfi_A"] == -2.0
    assert np.isnan(t.loc[0, "gmean_A"]) and np.isnan(t.loc[0, "rcv_A"])
    assert np.isnan(t.loc[0, "rcv_B"])


def test_bad_masks_are_refused() -> None:
    fcs = _fcs(np.zeros((4, 1)), ["A"], [""])
    res = FakeResult(masks={"p": np.ones(3, dtype=bool)}, paths={"p": "/p"}, parents={"p": None})
    with pytest.raises(InputError, match="expected 4 booleans"):
        population_stats(res, fcs, sample_id="s")
    res = FakeResult(masks={"p": np.ones(4, dtype=bool)}, paths={"p": "/p"}, parents={"p": "q"})
    with pytest.raises(InputError, match="unknown parent"):
        population_stats(res, fcs, sample_id="s")


def test_marker_columns_and_scatter() -> None:
    assert is_scatter_or_time("FSC-A") and is_scatter_or_time("SSC-H") and is_scatter_or_time("Time")
    assert is_scatter_or_time("FS Lin") and not is_scatter_or_time("FITC-A")
    fcs = _fcs(np.zeros((1, 4)), ["FSC-A", "PE-A", "PE-H", "APC-A"], ["", "CD4", "CD4", ""])
    assert marker_columns(fcs) == [(1, "CD4 [PE-A]"), (2, "CD4 [PE-H]"), (3, "APC-A")]
    assert marker_columns(fcs, ["APC-A", "FSC-A"]) == [(3, "APC-A"), (0, "FSC-A")]
    with pytest.raises(InputError, match="ambiguous"):
        marker_columns(fcs, ["CD4"])


GML = ["gml_parent_quadrant_rect_gate.xml", "gml_matrix_transform_logicle_rect1_gate.xml",
       "gml_parent_rect1_rect_par1_gate.xml", "gml_ellipse1_gate.xml"]


@pytest.mark.parametrize("gml", GML)
def test_counts_percentages_and_mfi_match_flowkit(reference_dir: Path, gml: str) -> None:
    """Real engine on the Gating-ML data: counts/percent equal FlowKit's report; MFI equals the
    median of FlowKit's own events under FlowKit's own membership."""
    import flowkit as fk

    from immunoprofile.flow.engine import evaluate
    from immunoprofile.flow.gatingml import read_gatingml

    base = reference_dir / "flow" / "gatingml2"
    fcs = read_fcs(base / "data1.fcs", dtype=np.float64)
    result = evaluate(read_gatingml(base / "gml" / gml), fcs)
    ours = population_stats(result, fcs, sample_id="data1", spillover="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        session = fk.Session(gating_strategy=str(base / "gml" / gml),
                             fcs_samples=str(base / "data1.fcs"))
        session.analyze_samples(use_mp=False)
        report = session.get_analysis_report()
        sid = report["sample_id"].iloc[0] if "sample_id" in report else report.iloc[0, 0]
        events = session.get_sample(sid).get_events(source="raw")
    labels = dict(marker_columns(fcs))
    assert len(report) == len(ours)
    for _, rep in report.iterrows():
        row = ours[ours["population"].str.rsplit("/", n=1).str[-1] == rep["gate_name"]]
        assert len(row) == 1, rep["gate_name"]
        row = row.iloc[0]
        assert row["count"] == rep["count"]
        assert row["pct_parent"] == pytest.approx(rep["relative_percent"], rel=1e-12)
        assert row["pct_total"] == pytest.approx(rep["absolute_percent"], rel=1e-12)
        mask = session.get_gate_membership(sid, rep["gate_name"], gate_path=rep["gate_path"])
        for col, label in labels.items():
            exp = np.median(events[mask, col]) if mask.any() else np.nan
            np.testing.assert_allclose(row[f"mfi_{label}"], exp, rtol=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=300),
       st.sampled_from([np.float32, np.float64]), st.sampled_from([1, 50_000]))
def test_percentiles_equal_numpy(values: list[float], dtype: type, select_min: int) -> None:
    """Both paths (sample-bracketed selection, forced on small arrays; plain partitions)."""
    from immunoprofile.flow import stats as mod

    x = np.array(values, dtype=dtype)
    qs = (15.865525393145708, 50.0, 84.13447460685429)
    expected = np.percentile(x.astype(np.float64), qs)  # we interpolate in float64
    saved = mod._SELECT_MIN
    mod._SELECT_MIN = select_min
    try:
        got = mod._percentiles(x.copy(), qs)
    finally:
        mod._SELECT_MIN = saved
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("kind", ["lognormal", "sorted", "reversed", "constant", "two_values",
                                  "ties", "organ_pipe", "sawtooth", "stride_trap"])
def test_percentiles_large_adversarial(kind: str) -> None:
    from immunoprofile.flow.stats import _percentiles

    rng = np.random.default_rng(11)
    n = 120_001
    x = {"lognormal": lambda: rng.lognormal(6, 1.5, n),
         "sorted": lambda: np.sort(rng.normal(size=n)),
         "reversed": lambda: np.sort(rng.normal(size=n))[::-1].copy(),
         "constant": lambda: np.full(n, 7.0),
         "two_values": lambda: np.where(rng.random(n) < 0.3, -1.0, 5.0),
         "ties": lambda: rng.integers(0, 5, n).astype(float),
         "organ_pipe": lambda: np.concatenate([np.arange(n // 2), np.arange(n - n // 2)[::-1]]) * 1.0,
         "sawtooth": lambda: (np.arange(n) % 4096).astype(float),
         # every sampled position (stride n // 4096) holds 0: the bracket misses, the exact
         # fallback must answer
         "stride_trap": lambda: np.where(np.arange(n) % (n // 4096) == 0, 0.0,
                                         rng.uniform(1, 2, n))}[kind]().astype(np.float32)
    qs = (15.865525393145708, 50.0, 84.13447460685429)
    np.testing.assert_allclose(_percentiles(x.copy(), qs),
                               np.percentile(x.astype(np.float64), qs), rtol=1e-12)


def test_percentiles_nan_propagates() -> None:
    from immunoprofile.flow.stats import _percentiles

    assert np.isnan(_percentiles(np.array([1.0, np.nan, 3.0]), (50.0,))).all()



def test_statistics_subset_equals_the_full_table():
    """Asking only for the MFI gives the same numbers, and only those columns."""
    import numpy as np

    from immunoprofile.errors import InputError
    from immunoprofile.flow.stats import population_stats

    rng = np.random.default_rng(3)
    events = rng.lognormal(5, 1, size=(5000, 3)).astype(np.float32)

    class FCS:
        n_events = 5000
        channels = ["FSC-A", "FL1-A", "FL2-A"]
        markers = ["", "CD3", "CD4"]
        path = "x.fcs"
        spillover = None

        def __init__(self):
            self.events = events

        def channel_index(self, name):
            return (self.channels + self.markers).index(name) % 3

    class Result:
        masks = {"a": events[:, 1] > 150, "b": (events[:, 1] > 150) & (events[:, 2] > 100)}
        paths = {"a": "/a", "b": "/a/b"}
        parents = {"a": None, "b": "a"}

    full = population_stats(Result(), FCS(), spillover=None, sample_id="s")
    only = population_stats(Result(), FCS(), spillover=None, sample_id="s",
                            statistics=("median",))
    assert [c for c in only.columns if "_" in c and c.split("_")[0] in ("mfi", "gmean", "rcv")] \
        == ["mfi_CD3", "mfi_CD4"]
    assert np.array_equal(only[["mfi_CD3", "mfi_CD4"]].to_numpy(),
                          full[["mfi_CD3", "mfi_CD4"]].to_numpy())
    assert np.allclose(full["mfi_CD3"], [np.median(events[Result.masks[k], 1]) for k in "ab"])
    with pytest.raises(InputError, match="unknown statistic"):
        population_stats(Result(), FCS(), spillover=None, sample_id="s", statistics=("mode",))


_RCV_QS = (15.865525393145708, 50.0, 84.13447460685429)


def _stats_of_masks(x: np.ndarray, masks: dict[str, np.ndarray]) -> pd.DataFrame:
    """population_stats of top-level populations ``masks`` over events ``x`` (channels FL1-A..
    with markers A, B, C...), indexed by population path."""
    labels = "ABCDEFGH"[:x.shape[1]]
    fcs = _fcs(x, [f"FL{i + 1}-A" for i in range(x.shape[1])], list(labels))
    res = FakeResult(masks=masks, paths={k: f"/{k}" for k in masks},
                     parents={k: None for k in masks})
    return population_stats(res, fcs, sample_id="s", spillover=None).set_index("population")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shared_ordering_is_exact_for_overlapping_populations(dtype: type) -> None:
    """Every population's median from the one shared ordering equals numpy's on that
    population alone, bit for bit (percentiles to the last bit of interpolation): nested, overlapping (boolean-like) and empty populations,
    ties, zeros of both signs, ±inf, and 20 populations (more patterns than 16 bits hold)."""
    rng = np.random.default_rng(21)
    n = 30_000
    x = np.column_stack([rng.lognormal(5, 1.5, n) - 60, rng.integers(-3, 4, n).astype(float),
                         rng.normal(0, 1, n)]).astype(dtype)
    x[::997, 1] = -0.0
    x[5, 2], x[7, 2] = np.inf, -np.inf
    masks = {f"p{i}": rng.random(n) < rng.uniform(0.05, 0.9) for i in range(18)}
    masks["nested"] = masks["p0"] & masks["p1"]
    masks["empty"] = np.zeros(n, dtype=bool)
    masks["one"] = np.zeros(n, dtype=bool)
    masks["one"][123] = True
    t = _stats_of_masks(x, masks)
    for pid, mask in masks.items():
        for j, label in enumerate("ABC"):
            v = x[mask, j].astype(np.float64)
            if not v.size:
                assert np.isnan(t.loc[f"/{pid}", f"mfi_{label}"])
                continue
            lo, med, hi = np.percentile(v, _RCV_QS)
            assert t.loc[f"/{pid}", f"mfi_{label}"] == med, (pid, label)
            rcv = 100 * 0.5 * (hi - lo) / med if med > 0 else np.nan
            # percentile positions are (k-1)*q/100 here, (k-1)*(q/100) in numpy: 1 ulp apart
            np.testing.assert_allclose(t.loc[f"/{pid}", f"rcv_{label}"], rcv, rtol=1e-13)
            pos = x[mask, j][x[mask, j] > 0]
            gm = np.exp(np.log(pos).mean(dtype=np.float64)) if pos.size else np.nan
            np.testing.assert_allclose(t.loc[f"/{pid}", f"gmean_{label}"], gm, rtol=1e-12)


def test_shared_ordering_equals_per_population_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-population fallback (too many membership patterns) gives the same table, and a
    NaN makes the order statistics of exactly the populations holding it NaN."""
    from immunoprofile.flow import stats as mod

    rng = np.random.default_rng(8)
    n = 8000
    x = rng.lognormal(4, 1, size=(n, 2)).astype(np.float32)
    x[17, 0] = np.nan
    fcs = _fcs(x, ["FL1-A", "FL2-A"], ["A", "B"])
    masks = {f"p{i}": rng.random(n) < 0.4 for i in range(6)}
    res = FakeResult(masks=masks, paths={k: f"/{k}" for k in masks},
                     parents={k: None for k in masks})
    shared = population_stats(res, fcs, sample_id="s", spillover=None)
    monkeypatch.setattr(mod, "_MAX_CLASSES", 0)
    fallback = population_stats(res, fcs, sample_id="s", spillover=None)
    num = [c for c in shared.columns if c.startswith(("mfi_", "rcv_"))]
    np.testing.assert_array_equal(shared[num].to_numpy(), fallback[num].to_numpy())
    np.testing.assert_allclose(shared["gmean_A"], fallback["gmean_A"], rtol=1e-12)
    holds_nan = [bool(m[17]) for m in masks.values()]
    assert list(shared["mfi_A"].isna()) == holds_nan
    assert not shared["mfi_B"].isna().any()


def test_block_grouping_and_fenced_selection_equal_numpy() -> None:
    """At most 16 populations over several 32k-row blocks (the block-by-block grouping and
    gather), continuous values and heavy ties (fences tie, the bracket falls back): every
    median equals numpy's on the population alone, bit for bit."""
    rng = np.random.default_rng(1414)
    n = 100_003
    x = np.column_stack([rng.normal(100, 400, n), rng.integers(0, 5, n).astype(float),
                         np.where(rng.random(n) < 0.6, 7.0, rng.normal(7, 1, n))]
                        ).astype(np.float32)
    masks = {f"p{i}": rng.random(n) < rng.uniform(0.02, 0.95) for i in range(9)}
    masks["nested"] = masks["p0"] & masks["p1"] & ~masks["p2"]
    masks["late"] = np.arange(n) > 90_000  # only in the last blocks
    masks["few"] = np.zeros(n, dtype=bool)
    masks["few"][[3, 40_000, 99_999]] = True
    t = _stats_of_masks(x, masks)
    for pid, mask in masks.items():
        for j, label in enumerate("ABC"):
            lo, med, hi = np.percentile(x[mask, j].astype(np.float64), _RCV_QS)
            assert t.loc[f"/{pid}", f"mfi_{label}"] == med, (pid, label)
            rcv = 100 * 0.5 * (hi - lo) / med if med > 0 else np.nan
            np.testing.assert_allclose(t.loc[f"/{pid}", f"rcv_{label}"], rcv, rtol=1e-13)
