"""FCS files whose float data hold NaN/±inf gate deterministically (issue 7).

Decision (engine + transforms): non-finite event values are never an error and never a crash.
Transforms map NaN to NaN and ±inf to ±inf (their limits), so an interval gate compares the same
whether its bounds go to data space or the events are transformed. Hence a NaN value is outside
every gate that looks at it (all comparisons are false); +inf is inside a range open above, like
any huge value, and outside every polygon and ellipse.
"""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from _fuzzkit import EXAMPLE_DIR, FUZZ
from hypothesis import given
from hypothesis import strategies as st

from immunoprofile.flow.batch import gate_sample
from immunoprofile.flow.engine import evaluate
from immunoprofile.flow.fcs import read_fcs
from immunoprofile.flow.fcs_write import write_fcs
from immunoprofile.flow.gates import BooleanGate, Dimension, PolygonGate, RectangleGate, Strategy
from immunoprofile.flow.strategy import load_strategy
from immunoprofile.flow.transforms import (AsinhTransform, FlowJoBiexTransform,
                                           HyperlogTransform, LinearTransform, LogicleTransform,
                                           LogTransform)

_WORK = Path(tempfile.mkdtemp(prefix="nonfinite_"))
STRATEGIES = [EXAMPLE_DIR / "strategy.yaml", EXAMPLE_DIR / "strategy.gatingml.xml"]
TRANSFORMS = [LinearTransform(262144.0, 0.0), LogTransform(262144.0, 4.5),
              AsinhTransform(262144.0, 4.0, 0.0), HyperlogTransform(262144.0, 0.5, 4.5, 0.0),
              LogicleTransform(262144.0, 0.5, 4.5, 0.0),
              FlowJoBiexTransform(-10, -100, 4.5, 262144)]


@cache
def _source():
    return read_fcs(sorted((EXAMPLE_DIR / "flow").glob("*.fcs"))[0])


@cache
def _strategy(i: int) -> Strategy:
    return load_strategy(STRATEGIES[i])


@pytest.mark.parametrize("transform", TRANSFORMS, ids=lambda t: type(t).__name__)
def test_transforms_take_non_finite_values(transform) -> None:
    x = np.array([np.nan, np.inf, -np.inf, 1e300, -1e300, 1e30, 0.0, 1.0, -1.0])
    with np.errstate(all="ignore"):
        y = transform.apply(x)
    assert y.shape == x.shape and np.isnan(y[0])
    finite_in = np.isfinite(x)
    # a finite value never becomes NaN where the transform is defined for it
    defined = finite_in & ((x > 0) | (type(transform) is not LogTransform))
    assert not np.isnan(y[defined]).any(), y
    # monotone (non-decreasing) over the values the transform is defined for, inf included
    order = np.argsort(x[1:])
    ys = y[1:][order]
    ys = ys[~np.isnan(ys)]
    assert (np.diff(ys) >= 0).all(), y


@FUZZ
@given(strategy_index=st.integers(0, len(STRATEGIES) - 1),
       cells=st.lists(st.tuples(st.integers(0, 299), st.integers(0, 12),
                                st.sampled_from([np.nan, np.inf, -np.inf, 3.4e38, -3.4e38])),
                      min_size=1, max_size=40))
def test_fuzz_non_finite_events_gate_cleanly(strategy_index: int,
                                             cells: list[tuple[int, int, float]]) -> None:
    src = _source()
    events = np.array(src.events[:300], dtype=np.float32)
    for row, col, value in cells:
        events[row, col % events.shape[1]] = value
    path = _WORK / "nonfinite.fcs"
    write_fcs(path, events, src.channels, src.markers, spillover=src.spillover)
    strategy = _strategy(strategy_index)
    fcs = read_fcs(path)
    result = evaluate(strategy, fcs)
    # rows holding NaN in a channel a (non-boolean) gate uses are outside that gate
    nan_rows = {row for row, col, value in cells if np.isnan(value)}
    for gate in strategy.gates.values():
        if isinstance(gate, BooleanGate) or gate.id not in result.masks:
            continue
        used = {fcs.channel_index(d.channel) for d in gate.dimensions if isinstance(d, Dimension)}
        for row in nan_rows:
            if np.isnan(fcs.events[row, sorted(used)]).any():
                assert not result.masks[gate.id][row], (gate.id, row)
    assert evaluate(strategy, fcs).counts == result.counts  # deterministic
    sample = gate_sample(path, strategy)  # statistics too: no exception
    assert len(sample.stats) == len(result.counts)


def test_polygon_and_range_on_logicle_with_inf() -> None:
    # the engine path that transforms events (polygon) and the one that maps bounds (range)
    src = _source()
    events = np.array(src.events[:50], dtype=np.float32)
    cd3 = src.channel_index("CD3")
    events[:3, cd3] = [np.inf, -np.inf, np.nan]
    path = _WORK / "inf.fcs"
    write_fcs(path, events, src.channels, src.markers, spillover=src.spillover)
    dim = Dimension(channel=src.channels[cd3], transform="lg")
    strategy = Strategy(
        gates={"poly": PolygonGate(id="poly", parent=None, name="poly", dims=(dim, dim),
                                   vertices=((-1.0, -1.0), (5.0, -1.0), (5.0, 5.0),
                                             (-1.0, 5.0))),
               "open": RectangleGate(id="open", parent=None, name="open", dims=(dim,),
                                     mins=(0.2,), maxs=(None,))},
        transforms={"lg": LogicleTransform(262144.0, 0.5, 4.5, 0.0)})
    result = evaluate(strategy, read_fcs(path))
    assert result.masks["poly"][:3].tolist() == [False, False, False]
    assert result.masks["open"][:3].tolist() == [True, False, False]
