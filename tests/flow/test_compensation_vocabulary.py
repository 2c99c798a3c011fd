"""One compensation vocabulary (issue 13 item 2) and the engine's block-wise evaluation (issue 14
item 2): the gates and the statistics use the same, once-resolved compensation, and gating block
by block gives the masks and compensated values the whole file gives."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from immunoprofile.errors import InputError
from immunoprofile.flow import engine
from immunoprofile.flow.batch import gate_sample
from immunoprofile.flow.compensation import (
    Compensation,
    Spillover,
    compensate,
    compensated_channels,
    sample_compensation,
)
from immunoprofile.flow.engine import evaluate
from immunoprofile.flow.fcs import FCSData, read_fcs
from immunoprofile.flow.gates import (
    FCS_SPILLOVER,
    BooleanGate,
    Dimension,
    EllipseGate,
    PolygonGate,
    Quadrant,
    QuadrantDivider,
    QuadrantGate,
    RectangleGate,
    Strategy,
)
from immunoprofile.flow.stats import population_stats
from immunoprofile.flow.strategy import load_strategy
from immunoprofile.flow.transforms import LogicleTransform

ROOT = Path(__file__).resolve().parents[2]
AD01 = ROOT / "example_data" / "flow" / "AD01_week0_flow.fcs"
STRATEGY = ROOT / "example_data" / "strategy.yaml"


def test_readme_notebook_sequence_gives_the_compensated_mfis_of_gate_sample() -> None:
    """README: read_fcs -> load_strategy -> evaluate -> population_stats. It used to report
    uncompensated MFIs (the stats read None as "uncompensated") while gating compensated."""
    fcs = read_fcs(AD01)
    result = evaluate(load_strategy(STRATEGY), fcs)
    table = population_stats(result, fcs, sample_id="AD01_week0")
    batch = gate_sample(AD01, STRATEGY, sample_id="AD01_week0").stats
    stat_cols = [c for c in table.columns if c.startswith(("mfi_", "gmean_", "rcv_"))]
    assert stat_cols and "mfi_Viability" in stat_cols
    assert table["population"].tolist() == batch["population"].tolist()
    np.testing.assert_array_equal(table[stat_cols].to_numpy(), batch[stat_cols].to_numpy())
    # and those are the compensated values: an uncompensated summary of the same masks differs
    assert result.compensation.origin == "file"
    assert result.compensation.spillover == fcs.spillover
    plain = SimpleNamespace(masks=result.masks, paths=result.paths, parents=result.parents)
    raw = population_stats(plain, fcs, sample_id="AD01_week0", spillover="none")
    comp = population_stats(plain, fcs, sample_id="AD01_week0", spillover="file")
    np.testing.assert_array_equal(table[stat_cols].to_numpy(), comp[stat_cols].to_numpy())
    assert (raw["mfi_Viability"] > 1.5 * table["mfi_Viability"]).all()


def test_statistics_refuse_a_compensation_other_than_the_gating_one() -> None:
    fcs = read_fcs(AD01)
    result = evaluate(load_strategy(STRATEGY), fcs)
    with pytest.raises(InputError, match="gated with 'file'"):
        population_stats(result, fcs, sample_id="s", spillover="none")
    # the same matrix, said another way, is fine
    same = population_stats(result, fcs, sample_id="s", spillover=fcs.spillover)
    default = population_stats(result, fcs, sample_id="s")
    np.testing.assert_array_equal(same.filter(like="mfi_").to_numpy(),
                                  default.filter(like="mfi_").to_numpy())
    # gated uncompensated: the statistics follow
    none = evaluate(load_strategy(STRATEGY), fcs, spillover="none")
    assert none.compensation == Compensation("none", None) and none.compensated
    for ch, values in none.compensated.items():  # "compensated" under "none": the raw values
        np.testing.assert_array_equal(values, fcs.events[:, fcs.channel_index(ch)])
    raw = population_stats(none, fcs, sample_id="s")
    ids = list(none.masks)
    cd3 = ids.index(next(p for p in ids if none.paths[p].endswith("/CD3+")))
    mask = none.masks[ids[cd3]]
    col = fcs.channel_index("Viability")
    assert raw.loc[cd3, "mfi_Viability"] == pytest.approx(np.median(fcs.events[mask, col]),
                                                         rel=1e-7)


def test_one_vocabulary_and_no_ambiguous_none() -> None:
    fcs = read_fcs(AD01)
    assert sample_compensation("fcs", fcs) == sample_compensation("file", fcs)
    assert sample_compensation("file", fcs).spillover == fcs.spillover
    assert sample_compensation("none", fcs) == Compensation("none", None)
    given = sample_compensation(fcs.spillover, fcs)
    assert given.origin == "matrix" and given.spillover == fcs.spillover
    assert sample_compensation(given, fcs) is given
    with pytest.raises(InputError, match="None is ambiguous"):
        sample_compensation(None, fcs)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="compensation must be"):
        sample_compensation(3, fcs)  # type: ignore[arg-type]


# ----- block-wise evaluation --------------------------------------------------------------------

CH = ["FSC-A", "SSC-A", "F1", "F2", "F3", "F4"]


def _data(n: int) -> FCSData:
    rng = np.random.default_rng(14)
    true = np.column_stack([rng.normal(60000, 25000, n), rng.normal(30000, 15000, n),
                            *(np.where(rng.random(n) < 0.5, rng.lognormal(7.5, 0.7, n),
                                       rng.normal(0, 120, n)) for _ in range(4))])
    spill = Spillover(("F1", "F2", "F3", "F4"),
                      np.array([[1, .2, .03, 0], [.1, 1, .15, .02], [0, .05, 1, .2],
                                [.01, 0, .1, 1.0]]))
    raw = true.copy()
    raw[:, 2:] = true[:, 2:] @ spill.matrix
    events = raw.astype(np.float32)
    events[7, 3] = np.inf  # a saturated value: its row is compensated exactly, not as 0 * inf
    events[11, 4] = np.nan
    return FCSData(path="mem.fcs", version="FCS3.1", text={}, channels=list(CH),
                   markers=["", "", "A", "B", "C", "D"], events=events,
                   ranges=[262144.0] * len(CH), datatype="F", spillover=spill)


def _strategy() -> Strategy:
    def fl(c: str) -> Dimension:
        return Dimension(c, FCS_SPILLOVER, "lg")

    gates = {
        "cells": PolygonGate("cells", None, "Cells", dims=(Dimension("FSC-A"), Dimension("SSC-A")),
                             vertices=((20000.0, 5000.0), (120000.0, 8000.0),
                                       (110000.0, 60000.0), (30000.0, 55000.0))),
        "pos": RectangleGate("pos", "cells", "F1+", dims=(fl("F1"),), mins=(0.45,), maxs=(None,)),
        "q": QuadrantGate("q", "pos", "F2vF3",
                          dividers=(QuadrantDivider("d2", fl("F2"), (0.45,)),
                                    QuadrantDivider("d3", fl("F3"), (0.45,))),
                          quadrants=(Quadrant("pp", (("d2", 1.0), ("d3", 1.0)), "++"),
                                     Quadrant("pn", (("d2", 1.0), ("d3", 0.0)), "+-"),
                                     Quadrant("np", (("d2", 0.0), ("d3", 1.0)), "-+"),
                                     Quadrant("nn", (("d2", 0.0), ("d3", 0.0)), "--"))),
        "ell": EllipseGate("ell", "pn", "ell", dims=(fl("F4"), fl("F2")), mean=(0.6, 0.65),
                           covariance=((0.01, 0.0), (0.0, 0.01)), distance_square=4.0),
        "tri": PolygonGate("tri", "cells", "tri", dims=(fl("F3"), fl("F4")),
                           vertices=((0.3, 0.3), (0.9, 0.35), (0.5, 0.9))),
        "out": RectangleGate("out", "pos", "out", dims=(Dimension("SSC-A"),), mins=(20000.0,),
                             maxs=(40000.0,), inverted=True),
        "either": BooleanGate("either", "cells", "either", op="or",
                              operands=(("ell", False), ("tri", False))),
        "neither": BooleanGate("neither", None, "neither", op="and",
                               operands=(("ell", True), ("pp", True))),
    }
    return Strategy(gates=gates, transforms={"lg": LogicleTransform(262144, 0.5, 4.5, 0)})


def test_blocks_give_the_masks_and_columns_of_the_whole_file(monkeypatch) -> None:
    fcs, strategy = _data(50_000), _strategy()
    monkeypatch.setattr(engine, "_GATE_BLOCK_ROWS", 4096)  # 13 blocks, the last one short
    blocks = evaluate(strategy, fcs)
    monkeypatch.setattr(engine, "_row_local", lambda s: False)  # one pass, parents gathered
    whole = evaluate(strategy, fcs)
    assert list(blocks.masks) == list(whole.masks)
    for pid in whole.masks:
        np.testing.assert_array_equal(blocks.masks[pid], whole.masks[pid], err_msg=pid)
        assert 0 < whole.counts[pid] < fcs.n_events, pid
    assert blocks.counts == whole.counts
    # the compensated columns the statistics reuse: the float64 compensation of every event
    expected = compensate(fcs.events.astype(np.float64), CH, fcs.spillover,
                          columns=["F1", "F2", "F3", "F4"])
    assert sorted(blocks.compensated) == ["F1", "F2", "F3", "F4"]
    for k, ch in enumerate(["F1", "F2", "F3", "F4"]):
        for res in (blocks, whole):
            assert res.compensated[ch].dtype == np.float32
            np.testing.assert_array_equal(res.compensated[ch], expected[:, k].astype(np.float32))
    # and the statistics from them equal those of columns compensated afresh
    plain = SimpleNamespace(masks=blocks.masks, paths=blocks.paths, parents=blocks.parents)
    ours = population_stats(blocks, fcs, sample_id="s")
    fresh = population_stats(plain, fcs, sample_id="s", spillover="file")
    num = [c for c in ours.columns if c.startswith(("mfi_", "gmean_", "rcv_"))]
    np.testing.assert_array_equal(ours[num].to_numpy(), fresh[num].to_numpy())


def test_compensation_kernel_equals_compensate_with_non_finite_rows() -> None:
    fcs = _data(3000)
    cols = [0, 2, 3, 4, 5]
    got = compensated_channels(fcs.events, CH, fcs.spillover, cols)
    want = compensate(fcs.events.astype(np.float64), CH, fcs.spillover, columns=cols)
    assert got.shape == (len(cols), 3000) and got.flags.c_contiguous
    np.testing.assert_allclose(got, want.T, rtol=1e-13, atol=1e-9)
    # the row with inf: only the channels it spills into are non-finite; the NaN row likewise
    assert np.isinf(got[2, 7]) and np.isfinite(got[0, 7])
    assert np.isfinite(got[1:, 11]).sum() == np.isfinite(want[11, 1:]).sum()
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want.T))
    raw = compensated_channels(fcs.events, CH, None, [1, 3])
    np.testing.assert_array_equal(raw, fcs.events[:, [1, 3]].T.astype(np.float64))


def test_time_qc_root_keeps_the_gating_compensation() -> None:
    """The TimeQC root result (gated on the kept events) carries the compensation: its
    statistics over all events are those of the same masks under the same compensation."""
    import dataclasses

    from immunoprofile.flow.timeqc import apply_root_gate, time_qc

    fcs = read_fcs(AD01)
    qc = time_qc(fcs)
    kept = dataclasses.replace(fcs, events=np.ascontiguousarray(fcs.events[qc.keep]))
    for spec in ("none", "file"):
        result = apply_root_gate(evaluate(load_strategy(STRATEGY), kept, spillover=spec), qc.keep)
        assert result.compensation.origin == spec
        ours = population_stats(result, fcs, sample_id="s")
        plain = SimpleNamespace(masks=result.masks, paths=result.paths, parents=result.parents)
        same = population_stats(plain, fcs, sample_id="s", spillover=spec)
        num = [c for c in ours.columns if c.startswith(("mfi_", "gmean_", "rcv_"))]
        np.testing.assert_array_equal(ours[num].to_numpy(), same[num].to_numpy())
