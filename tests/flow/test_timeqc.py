"""Acquisition QC over time (issue 12): simulated clogs and drift with their truth, clean files,
files without Time, and PeacoQC's own example file with real anomalies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from immunoprofile.flow.batch import gate_sample, write_gate_outputs
from immunoprofile.flow.fcs import read_fcs
from immunoprofile.flow.fcs_write import write_fcs
from immunoprofile.flow.timeqc import TimeQCOptions, time_qc
from immunoprofile.simulate import flow as sim

STRATEGY = """\
format: immunoprofile-strategy/1
compensation: fcs
transforms:
  default: {type: logicle, T: 262144, W: 0.5, M: 4.5, A: 0}
  FSC-A: {type: linear, T: 262144}
  SSC-A: {type: linear, T: 262144}
gates:
  - name: Cells
    type: rectangle
    bounds: {FSC-A: [0.13, 0.55], SSC-A: [0.015, 0.14]}
    children:
      - name: CD3+
        type: range
        channel: CD3
        min: 0.45
"""


def _tube(tmp_path: Path, name: str, events: np.ndarray) -> Path:
    return write_fcs(tmp_path / name, events, sim.CHANNELS, sim.MARKERS,
                     text={"$TIMESTEP": "0.01"},
                     spillover=(sim.FLUOR_CHANNELS, sim.SPILLOVER_MATRIX))


def _sample(seed: int, n: int = 6000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return sim.simulate_flow_sample(rng, n, sim.FlowParams(th2=0.06, treg=0.06)).events


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_clog_events_removed_good_events_kept(tmp_path: Path, seed: int) -> None:
    events, clog = sim.add_clog(np.random.default_rng(100 + seed), _sample(seed),
                                at=0.3 + 0.15 * seed)
    result = time_qc(read_fcs(_tube(tmp_path, "clog.fcs", events)))
    assert result.applied
    removed = ~result.keep
    assert removed[clog].mean() >= 0.95, removed[clog].mean()
    assert removed[~clog].mean() <= 0.02, removed[~clog].mean()
    assert result.removed_stretches


def test_drift_removes_the_sagging_stretch(tmp_path: Path) -> None:
    events, factor = sim.add_drift(_sample(5), start=0.6, end_factor=0.45)
    result = time_qc(read_fcs(_tube(tmp_path, "drift.fcs", events)))
    removed = ~result.keep
    # a sag below 0.6 of the level is found; events before the drift stay
    assert removed[factor < 0.6].mean() >= 0.9, removed[factor < 0.6].mean()
    assert removed[factor == 1.0].mean() <= 0.02
    assert any("level" in b["reason"] for b in result.signal_bins if b["flagged"])


@pytest.mark.parametrize("seed", range(10, 16))
def test_clean_files_lose_nothing(tmp_path: Path, seed: int) -> None:
    result = time_qc(read_fcs(_tube(tmp_path, "clean.fcs", _sample(seed))))
    assert result.applied and result.n_removed == 0, result.removed_stretches


def test_file_without_time_passes_with_a_warning(tmp_path: Path) -> None:
    events = _sample(4)[:, :-1]
    path = write_fcs(tmp_path / "notime.fcs", events, sim.CHANNELS[:-1], sim.MARKERS[:-1],
                     spillover=(sim.FLUOR_CHANNELS, sim.SPILLOVER_MATRIX))
    result = time_qc(read_fcs(path))
    assert not result.applied and result.keep.all()
    assert "no Time channel" in result.warnings[0]
    (tmp_path / "s.yaml").write_text(STRATEGY)
    gated = gate_sample(path, tmp_path / "s.yaml", time_qc=True)
    assert any("no Time channel" in w for w in gated.warnings)
    assert gated.stats.iloc[0]["count"] == 6000 and gated.stats.iloc[0]["population"] == "TimeQC"


def test_gate_sample_puts_every_population_under_timeqc(tmp_path: Path) -> None:
    events, clog = sim.add_clog(np.random.default_rng(7), _sample(7))
    path = _tube(tmp_path, "clog.fcs", events)
    (tmp_path / "s.yaml").write_text(STRATEGY)
    plain = gate_sample(path, tmp_path / "s.yaml")
    qc = gate_sample(path, tmp_path / "s.yaml", time_qc=TimeQCOptions())
    assert "TimeQC" not in set(plain.stats["population"])
    assert "pct_removed_time_qc" not in plain.stats.columns
    table = qc.stats.set_index("population")
    assert list(table.index) == ["TimeQC", "/Cells", "/Cells/CD3+"]
    assert table.loc["/Cells", "parent"] == "TimeQC"
    kept = int(table.loc["TimeQC", "count"])
    expected = time_qc(read_fcs(path))
    assert kept == int(expected.keep.sum())
    assert table["pct_removed_time_qc"].nunique() == 1
    assert abs(table["pct_removed_time_qc"].iloc[0] - expected.pct_removed) < 1e-3
    assert abs(table.loc["/Cells", "pct_parent"] - 100 * table.loc["/Cells", "count"] / kept) \
        < 1e-9
    # the clog's junk events no longer reach /Cells
    assert table.loc["/Cells", "count"] < plain.stats.set_index("population").loc["/Cells",
                                                                                    "count"]
    out = write_gate_outputs(tmp_path / "out", [qc], [], strategy=None, parameters={})
    traces = out["time_qc"].read_text().splitlines()
    assert traces[0].startswith("sample_id,kind,t_start,t_end,count,rate,flagged,removed")


def test_peacoqc_example_file_loses_its_bad_start(reference_dir: Path) -> None:
    fcs = read_fcs(reference_dir / "flow" / "fcs_instruments" / "peacoqc_111.fcs")
    result = time_qc(fcs)
    assert result.applied
    # the first ~1000 events are dim in every G-laser detector (acquisition starting up)
    start, end = result.removed_stretches[0]
    t = fcs.events[:, fcs.channel_index("Time")]
    assert start == pytest.approx(float(t.min()))
    assert 2 <= end <= 15
    assert 3 <= result.pct_removed <= 20


def _traces_as_one_table(samples: list, path: Path) -> bytes:
    """time_qc.csv as the batch writer wrote it before traces were streamed: one table."""
    from immunoprofile._io import write_csv_atomic
    from immunoprofile.flow.batch import time_qc_frame

    write_csv_atomic(path, time_qc_frame(samples))
    return path.read_bytes()


def test_streamed_time_qc_csv_is_the_one_table_bytes(tmp_path: Path) -> None:
    """gate_files writes each sample's traces as it is gated and drops them from memory; the
    streamed time_qc.csv equals the table of all traces written at once, byte for byte."""
    from immunoprofile.flow.stage import gate_files

    (tmp_path / "s.yaml").write_text(STRATEGY)
    events, _ = sim.add_clog(np.random.default_rng(7), _sample(7))
    files = [_tube(tmp_path, "a_clog.fcs", events), _tube(tmp_path, "b_clean.fcs", _sample(8)),
             _tube(tmp_path, "c_drift.fcs", sim.add_drift(_sample(9))[0])]
    result = gate_files(files, tmp_path / "s.yaml", time_qc=True, out_dir=tmp_path / "out")
    assert all(s.time_qc_trace is None for s in result.samples)  # not kept in memory
    assert not list((tmp_path / "out").glob(".*.tmp"))  # the chunk files are gone
    in_memory = [gate_sample(f, tmp_path / "s.yaml", time_qc=True, sample_id=f.stem)
                 for f in files]
    expected = _traces_as_one_table(in_memory, tmp_path / "expected.csv")
    assert (tmp_path / "out" / "time_qc.csv").read_bytes() == expected
    assert expected.count(b"\n") > 3 * 20


def test_trace_chunks_of_different_layouts_fall_back_to_one_table(tmp_path: Path) -> None:
    """Chunks whose columns or dtypes differ (another panel, no signal bins) cannot simply be
    concatenated: they are read back exactly and written as one table, the same bytes."""
    import dataclasses

    import pandas as pd

    from immunoprofile._frames import is_text_column
    from immunoprofile.flow.batch import _trace_rows, _write_time_qc, write_trace_chunk

    (tmp_path / "s.yaml").write_text(STRATEGY)
    events, _ = sim.add_clog(np.random.default_rng(3), _sample(3))
    full = gate_sample(_tube(tmp_path, "clog.fcs", events), tmp_path / "s.yaml", time_qc=True,
                       sample_id="A")
    trace = full.time_qc_trace
    level = next(c for c in trace.columns if c.startswith("level_"))
    other = dataclasses.replace(full, sample_id="B",
                                time_qc_trace=trace.drop(columns=[level]).assign(
                                    reason=lambda t: t["reason"].where(t["kind"] == "rate")))
    rate_only = dataclasses.replace(full, sample_id="C", time_qc_trace=trace[
        trace["kind"] == "rate"].dropna(axis=1, how="all").assign(count=lambda t: t["count"]))
    samples = [full, other, rate_only]
    expected = _traces_as_one_table(samples, tmp_path / "expected.csv")
    chunked = [write_trace_chunk(s, tmp_path / f"{s.sample_id}.chunk") for s in samples]
    assert len({(c.time_qc_trace.columns, c.time_qc_trace.dtypes) for c in chunked}) == 3
    for s, c in zip(samples, chunked):  # each chunk reads back as the table it came from
        rows = _trace_rows(s.time_qc_trace, s.sample_id).reset_index(drop=True)
        for k in [k for k in rows.columns if is_text_column(rows[k])]:
            rows[k] = rows[k].where(rows[k] != "", np.nan)  # CSV writes "" and missing alike
        pd.testing.assert_frame_equal(c.time_qc_trace.frame(), rows, check_exact=True)
    _write_time_qc(tmp_path / "time_qc.csv", chunked)
    assert (tmp_path / "time_qc.csv").read_bytes() == expected
    # one layout: the streamed path gives the same bytes as the table
    same = [write_trace_chunk(dataclasses.replace(full, sample_id=s), tmp_path / f"{s}.c")
            for s in ("X", "Y")]
    _write_time_qc(tmp_path / "same.csv", same)
    assert (tmp_path / "same.csv").read_bytes() == _traces_as_one_table(
        [dataclasses.replace(full, sample_id=s) for s in ("X", "Y")], tmp_path / "e2.csv")


def test_fast_csv_body_is_pandas_to_csv() -> None:
    """The trace chunk formatter writes exactly what pandas' to_csv writes (floats of every
    magnitude, missing values, bools, ints, text needing quotes), or declines."""
    import pandas as pd

    from immunoprofile.flow.batch import _csv_body

    rng = np.random.default_rng(5)
    n = 4000
    floats = rng.normal(size=n) * 10.0 ** rng.integers(-20, 20, n)
    floats[::7] = np.nan
    floats[:8] = [0.0, -0.0, 1e16, 1e15, 1e-4, 1e-5, np.inf, 5e-324]
    text = np.array(["", "level FSC-A; spread PE-A", 'say "hi"', "a,b", "two\nlines", None,
                     np.nan, "…"], dtype=object)[rng.integers(0, 8, n)]
    frame = pd.DataFrame({"kind": np.where(rng.random(n) < 0.5, "rate", "signal"),
                          "t": np.round(rng.uniform(0, 1e3, n), 3), "x": floats,
                          "count": rng.integers(-5, 10**9, n), "flag": rng.random(n) < 0.3,
                          "reason": text})
    expected = frame.to_csv(index=False, header=False, lineterminator="\n")
    assert _csv_body(frame) == expected
    assert _csv_body(frame.assign(when=pd.Timestamp("2024-01-01"))) is None  # not ours: pandas
