"""The gate engine on small hand-made data (boundary rules, hierarchy, compensation) and against
FlowKit on a simulated compensated, logicle-transformed file."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from immunoprofile.errors import InputError
from immunoprofile.flow.compensation import Spillover
from immunoprofile.flow.engine import evaluate, points_in_polygon
from immunoprofile.flow.fcs import FCSData, read_fcs
from immunoprofile.flow.fcs_write import write_fcs
from immunoprofile.flow.gates import (
    FCS_SPILLOVER,
    BooleanGate,
    Dimension,
    EllipseGate,
    PolygonGate,
    Quadrant,
    QuadrantDivider,
    QuadrantGate,
    RatioDimension,
    RectangleGate,
    Strategy,
)
from immunoprofile.flow.gatingml import write_gatingml
from immunoprofile.flow.transforms import AsinhTransform, LinearTransform, LogicleTransform


def _fcs(events, channels=("A", "B", "C"), markers=None, spillover=None, path="mem.fcs"):
    events = np.asarray(events, dtype=np.float32)
    return FCSData(path=path, version="FCS3.1", text={}, channels=list(channels),
                   markers=list(markers or [""] * len(channels)), events=events,
                   ranges=[262144.0] * len(channels), datatype="F", spillover=spillover)


def _rect(gid, parent=None, *, dims, mins, maxs):
    return RectangleGate(gid, parent, gid, dims=tuple(dims), mins=tuple(mins), maxs=tuple(maxs))


A, B, C = Dimension("A"), Dimension("B"), Dimension("C")


def test_rectangle_min_inclusive_max_exclusive_and_open_bounds():
    fcs = _fcs([[1, 0, 0], [2, 0, 0], [3, 0, 0], [np.nan, 0, 0]])
    strategy = Strategy(gates={
        "closed": _rect("closed", dims=[A], mins=[1], maxs=[3]),
        "open_top": _rect("open_top", dims=[A], mins=[2], maxs=[None]),
        "open_bottom": _rect("open_bottom", dims=[A], mins=[None], maxs=[2]),
    })
    result = evaluate(strategy, fcs)
    assert result.masks["closed"].tolist() == [True, True, False, False]
    assert result.masks["open_top"].tolist() == [False, True, True, False]
    assert result.masks["open_bottom"].tolist() == [True, False, False, False]
    assert result.counts == {"closed": 2, "open_top": 2, "open_bottom": 1}
    assert result.n_events == 4 and result.paths["closed"] == "/closed"


def test_polygon_edges_and_even_odd_rule():
    square = [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)]
    x = np.array([0.0, 10.0, 5.0, 5.0, 5.0, -1.0, np.nan])
    y = np.array([5.0, 5.0, 0.0, 10.0, 5.0, 5.0, 5.0])
    # left and bottom edges inside, right and top outside, NaN outside
    assert points_in_polygon(x, y, square).tolist() == [True, False, True, False, True, False,
                                                       False]
    # a pentagram: its tips are inside, its central pentagon is outside under even-odd
    angles = np.pi / 2 + np.arange(5) * 4 * np.pi / 5
    star = [(float(np.cos(a)), float(np.sin(a))) for a in angles]
    tip = np.array([0.0, 0.9])
    centre = np.array([0.0, 0.0])
    far = np.array([2.0, 2.0])
    inside = points_in_polygon(np.array([tip[0], centre[0], far[0]]),
                               np.array([tip[1], centre[1], far[1]]), star)
    assert inside.tolist() == [True, False, False]
    # a small polygon among many far events (bounding-box shortcut) gives the same answer
    rng = np.random.default_rng(2)
    px, py = rng.uniform(-20, 20, 5000), rng.uniform(-20, 20, 5000)
    full = points_in_polygon(px, py, star)
    near = np.abs(px) <= 1.5
    np.testing.assert_array_equal(full[near], points_in_polygon(px[near], py[near], star))
    assert 0 < full.sum() < 100


def test_polygon_matches_matplotlib_away_from_edges():
    mpl_path = pytest.importorskip("matplotlib.path")
    rng = np.random.default_rng(7)
    vertices = [(0.1, 0.1), (0.9, 0.2), (0.6, 0.5), (0.95, 0.9), (0.2, 0.7), (0.4, 0.45)]
    points = rng.uniform(0, 1, (20000, 2))
    ours = points_in_polygon(points[:, 0], points[:, 1], vertices)
    theirs = mpl_path.Path(vertices).contains_points(points)  # simple polygon: same interior
    assert np.count_nonzero(ours != theirs) <= 2  # only points within rounding of an edge
    assert 2000 < ours.sum() < 18000


def test_ellipse_boundary_inclusive_and_3d_ellipsoid():
    fcs = _fcs([[1.0, 0.0, 0.0], [1.001, 0.0, 0.0], [0.0, 2.0, 0.0], [0.5, 0.5, 0.5]])
    strategy = Strategy(gates={
        "e2": EllipseGate("e2", None, "e2", dims=(A, B), mean=(0.0, 0.0),
                          covariance=((1.0, 0.0), (0.0, 4.0)), distance_square=1.0),
        "e3": EllipseGate("e3", None, "e3", dims=(A, B, C), mean=(0.0, 0.0, 0.0),
                          covariance=((1.0, 0, 0), (0, 1.0, 0), (0, 0, 1.0)),
                          distance_square=0.75),
    })
    result = evaluate(strategy, fcs)
    assert result.masks["e2"].tolist() == [True, False, True, True]
    assert result.masks["e3"].tolist() == [False, False, False, True]


def test_quadrants_by_interval_with_unconstrained_dividers():
    fcs = _fcs([[5, 5, 0], [15, 5, 0], [25, 25, 0], [10, 30, 0], [20, 1, 0]])
    gate = QuadrantGate(
        "Q", None, "Q",
        dividers=(QuadrantDivider("dA", A, (10.0, 20.0)), QuadrantDivider("dB", B, (10.0,))),
        quadrants=(Quadrant("low", (("dA", 0.0), ("dB", 0.0))),
                   Quadrant("mid", (("dA", 15.0),)),            # any B
                   Quadrant("high_up", (("dA", 99.0), ("dB", 99.0)), name="High+")))
    strategy = Strategy(gates={"Q": gate})
    result = evaluate(strategy, fcs)
    assert result.masks["low"].tolist() == [True, False, False, False, False]
    assert result.masks["mid"].tolist() == [False, True, False, True, False]
    assert result.masks["high_up"].tolist() == [False, False, True, False, False]
    assert result.paths["high_up"] == "/High+"
    assert list(result.masks) == ["low", "mid", "high_up"]


def test_children_only_see_parent_events_and_booleans_use_full_populations():
    rng = np.random.default_rng(1)
    events = rng.uniform(0, 100, (5000, 3))
    fcs = _fcs(events)
    strategy = Strategy(gates={
        "P": _rect("P", dims=[A], mins=[50], maxs=[None]),
        "child": _rect("child", "P", dims=[B], mins=[None], maxs=[30]),
        "other": _rect("other", dims=[C], mins=[80], maxs=[None]),
        "not_other_in_P": BooleanGate("not_other_in_P", "P", "nop", op="not",
                                      operands=(("other", False),)),
        "and_c": BooleanGate("and_c", None, "and_c", op="and",
                             operands=(("child", False), ("other", True))),
        "or": BooleanGate("or", None, "or", op="or", operands=(("child", False),
                                                               ("other", False))),
    })
    result = evaluate(strategy, fcs)
    ev = fcs.events.astype(np.float64)
    p = ev[:, 0] >= 50
    child = p & (ev[:, 1] < 30)
    other = ev[:, 2] >= 80
    np.testing.assert_array_equal(result.masks["P"], p)
    np.testing.assert_array_equal(result.masks["child"], child)
    np.testing.assert_array_equal(result.masks["not_other_in_P"], p & ~other)
    np.testing.assert_array_equal(result.masks["and_c"], child & ~other)
    np.testing.assert_array_equal(result.masks["or"], child | other)
    assert result.paths["child"] == "/P/child"
    assert result.parents == {"P": None, "child": "P", "other": None, "not_other_in_P": "P",
                              "and_c": None, "or": None}


class _CountingTransform(LinearTransform):
    calls: list[int] = []

    def apply(self, x):
        type(self).calls.append(len(x))
        return super().apply(x)


def test_each_value_transformed_once_only_on_parent_events_and_marker_names_resolve():
    _CountingTransform.calls = []
    events = np.arange(30, dtype=float).reshape(10, 3)
    fcs = _fcs(events, markers=["CD3", "CD4", ""])
    dim = Dimension("CD4", transform="lin")  # marker name, resolved to channel B
    strategy = Strategy(
        gates={
            # interval gates compare in data space: no transform needed at all
            "r": _rect("r", dims=[A], mins=[None], maxs=[15.0]),
            "e": EllipseGate("e", "r", "e", dims=(dim, A), mean=(0.0, 0.0),
                             covariance=((1.0, 0.0), (0.0, 400.0)), distance_square=4.0),
            "p": PolygonGate("p", "e", "p", dims=(dim, C),
                             vertices=((-1.0, -1.0), (0.2, -1.0), (0.2, 100.0), (-1.0, 100.0))),
            "r2": _rect("r2", "r", dims=[dim], mins=[0.0], maxs=[0.1]),
        },
        transforms={"lin": _CountingTransform(100.0, 0.0)})
    result = evaluate(strategy, fcs)
    a, b, c = events[:, 0], events[:, 1] / 100.0, events[:, 2]
    r = a < 15
    e = r & (b ** 2 + a ** 2 / 400.0 <= 4.0)
    np.testing.assert_array_equal(result.masks["r"], r)
    np.testing.assert_array_equal(result.masks["e"], e)
    np.testing.assert_array_equal(result.masks["p"], e & (b < 0.2))
    np.testing.assert_array_equal(result.masks["r2"], r & (b < 0.1))
    # the ellipse needed CD4 on r's 5 events; the polygon reused them
    assert _CountingTransform.calls == [int(r.sum())]


def test_interval_gates_on_logicle_equal_comparing_transformed_values():
    # thresholds are mapped to data space; the answer must equal transforming every event
    rng = np.random.default_rng(9)
    events = np.column_stack([rng.normal(0, 500, 20000), rng.lognormal(6, 2, 20000),
                              rng.normal(100, 3000, 20000)])
    fcs = _fcs(events)
    logicle = LogicleTransform(262144, 0.5, 4.5, 0)
    dims = [Dimension(c, transform="L") for c in ("A", "B", "C")]
    strategy = Strategy(
        gates={"r": _rect("r", dims=dims, mins=[0.1, 0.3, -5.0], maxs=[0.4, 2.0e6, 0.6]),
               "q": QuadrantGate("q", None, "q", dividers=(
                   QuadrantDivider("d", dims[0], (0.05, 0.15)),),
                   quadrants=(Quadrant("mid", (("d", 0.1),)),))},
        transforms={"L": logicle})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a far-off bound (2e6) must not leak overflow warnings
        result = evaluate(strategy, fcs)
    y = logicle.apply(fcs.events.astype(np.float64))
    expected = ((y[:, 0] >= 0.1) & (y[:, 0] < 0.4) & (y[:, 1] >= 0.3) & (y[:, 2] < 0.6))
    np.testing.assert_array_equal(result.masks["r"], expected)
    np.testing.assert_array_equal(result.masks["mid"], (y[:, 0] >= 0.05) & (y[:, 0] < 0.15))
    assert 1000 < expected.sum() < 19000


def test_shapes_on_transformed_axes_equal_transforming_every_event():
    # only events in a shape's bounding box (tested in data space) are transformed; the
    # decision on every event must equal transforming all of them, including events placed
    # on the box's edges, on vertices and at the ellipse's extremes
    rng = np.random.default_rng(14)
    logicle = LogicleTransform(262144, 0.5, 4.5, 0)
    asinh = AsinhTransform(262144, 4.5, 0)
    n = 60000
    scale = np.column_stack([rng.uniform(-0.1, 1.1, n), rng.uniform(-0.1, 1.1, n)])
    vertices = ((0.30, 0.25), (0.55, 0.20), (0.62, 0.48), (0.41, 0.60), (0.28, 0.44))
    mean, cov, d2 = (0.70, 0.35), ((0.004, -0.001), (-0.001, 0.006)), 4.0
    half = [np.sqrt(d2 * cov[0][0]), np.sqrt(d2 * cov[1][1])]
    special = [v for v in vertices] + [
        (mean[0] - half[0], mean[1]), (mean[0] + half[0], mean[1]),
        (mean[0], mean[1] - half[1]), (mean[0], mean[1] + half[1]),
        (0.30, 0.40), (0.62, 0.30), (0.45, 0.20), (0.45, 0.60)]
    scale[:len(special)] = special
    events = np.column_stack([logicle.inverse(scale[:, 0]), asinh.inverse(scale[:, 1])])
    events[len(special)] = [np.nan, 1.0]
    events[len(special) + 1] = [np.inf, -np.inf]
    fcs = _fcs(np.column_stack([events, rng.normal(0, 1, n)]))
    dims = (Dimension("A", transform="L"), Dimension("B", transform="S"))
    gates = {"poly": PolygonGate("poly", None, "poly", dims=dims, vertices=vertices),
             "out": PolygonGate("out", None, "out", dims=dims, vertices=vertices, inverted=True),
             "ell": EllipseGate("ell", None, "ell", dims=dims, mean=mean, covariance=cov,
                                distance_square=d2),
             "big": PolygonGate("big", None, "big", dims=dims,
                                vertices=((-0.2, -0.2), (1.2, -0.2), (1.2, 1.2)))}
    result = evaluate(Strategy(gates=gates, transforms={"L": logicle, "S": asinh}), fcs)
    ev = fcs.events.astype(np.float64)
    x, y = logicle.apply(ev[:, 0]), asinh.apply(ev[:, 1])
    poly = points_in_polygon(x, y, vertices)
    inv = np.linalg.inv(np.asarray(cov))
    cx, cy = x - mean[0], y - mean[1]
    with np.errstate(invalid="ignore"):
        ell = (inv[0, 0] * cx * cx + inv[0, 1] * cx * cy + inv[1, 0] * cy * cx
               + inv[1, 1] * cy * cy) <= d2
    np.testing.assert_array_equal(result.masks["poly"], poly)
    np.testing.assert_array_equal(result.masks["out"], ~poly)
    np.testing.assert_array_equal(result.masks["ell"], ell)
    np.testing.assert_array_equal(result.masks["big"],
                                  points_in_polygon(x, y, gates["big"].vertices))
    assert 1000 < poly.sum() < 10000 and 500 < ell.sum() < 5000


def test_unknown_channel_names_the_file():
    strategy = Strategy(gates={"g": _rect("g", dims=[Dimension("CD99")], mins=[0],
                                          maxs=[None])})
    with pytest.raises(InputError, match="mem.fcs: no channel or marker named 'CD99'"):
        evaluate(strategy, _fcs(np.zeros((3, 3))))


def _spill():
    return Spillover(("A", "B"), np.array([[1.0, 0.2], [0.1, 1.0]]))


def test_fcs_compensation_file_override_none_and_missing():
    rng = np.random.default_rng(3)
    true = rng.uniform(0, 1000, (2000, 3))
    spill = _spill()
    raw = true.copy()
    raw[:, :2] = true[:, :2] @ spill.matrix
    fcs = _fcs(raw, spillover=spill)
    dim = Dimension("B", FCS_SPILLOVER)
    strategy = Strategy(gates={"g": _rect("g", dims=[dim], mins=[500], maxs=[None])})
    comp_b = fcs.events.astype(np.float64)[:, :2] @ np.linalg.inv(spill.matrix)
    expected = comp_b[:, 1] >= 500
    np.testing.assert_array_equal(evaluate(strategy, fcs).masks["g"], expected)
    # "none" disables compensation; a matrix passed in replaces the file's
    raw_b = fcs.events[:, 1] >= 500
    np.testing.assert_array_equal(evaluate(strategy, fcs, spillover="none").masks["g"], raw_b)
    other = Spillover(("A", "B"), np.array([[1.0, 0.5], [0.0, 1.0]]))
    comp_other = fcs.events.astype(np.float64)[:, :2] @ np.linalg.inv(other.matrix)
    np.testing.assert_array_equal(evaluate(strategy, fcs, spillover=other).masks["g"],
                                  comp_other[:, 1] >= 500)
    assert (comp_other[:, 1] >= 500).sum() != expected.sum()
    # no spillover in the file: an error naming the file, or raw values with a warning
    bare = _fcs(raw, path="bare.fcs")
    with pytest.raises(InputError, match="bare.fcs: .*no \\$SPILLOVER"):
        evaluate(strategy, bare)
    result = evaluate(strategy, bare, missing_spillover="uncompensated")
    np.testing.assert_array_equal(result.masks["g"], raw_b)
    assert result.warnings and "uncompensated" in result.warnings[0]


def test_strategy_matrix_and_ratio_dimension():
    spill = _spill()
    fcs = _fcs([[100.0, 50.0, 1.0], [10.0, 200.0, 2.0], [300.0, 0.0, 3.0]])
    ratio = RatioDimension("r", "A", "B", 2.0, 0.0, -1.0, compensation="M")
    strategy = Strategy(gates={"g": _rect("g", dims=[ratio], mins=[1.0], maxs=[None])},
                        compensations={"M": spill})
    comp = fcs.events.astype(np.float64)[:, :2] @ np.linalg.inv(spill.matrix)
    values = 2.0 * comp[:, 0] / (comp[:, 1] + 1.0)
    np.testing.assert_array_equal(evaluate(strategy, fcs).masks["g"], values >= 1.0)


def test_missing_matrix_or_transform_is_an_input_error():
    fcs = _fcs(np.ones((2, 3)))
    bad_comp = Strategy(gates={"g": _rect("g", dims=[Dimension("A", "nope")], mins=[0],
                                          maxs=[None])}, source="s.xml")
    with pytest.raises(InputError, match="s.xml: .*'nope'"):
        evaluate(bad_comp, fcs)
    bad_tr = Strategy(gates={"g": _rect("g", dims=[Dimension("A", transform="t")], mins=[0],
                                        maxs=[None])}, source="s.xml")
    with pytest.raises(InputError, match="transform 't'"):
        evaluate(bad_tr, fcs)


def test_counts_match_flowkit_on_compensated_logicle_data(tmp_path):
    fk = pytest.importorskip("flowkit")
    rng = np.random.default_rng(11)
    n = 20000
    channels = ["FSC-A", "SSC-A", "FL1-A", "FL2-A", "FL3-A"]
    true = np.column_stack([
        rng.normal(80000, 20000, n), rng.normal(50000, 15000, n),
        np.where(rng.random(n) < 0.4, rng.lognormal(8, 1, n), rng.normal(0, 100, n)),
        np.where(rng.random(n) < 0.3, rng.lognormal(7, 1, n), rng.normal(0, 100, n)),
        np.where(rng.random(n) < 0.5, rng.lognormal(9, 0.7, n), rng.normal(0, 100, n)),
    ])
    spill = Spillover(("FL1-A", "FL2-A", "FL3-A"),
                      np.array([[1.0, 0.15, 0.02], [0.05, 1.0, 0.2], [0.0, 0.08, 1.0]]))
    raw = true.copy()
    raw[:, 2:] = true[:, 2:] @ spill.matrix
    fcs_path = write_fcs(tmp_path / "sim.fcs", raw, channels, spillover=spill)
    logicle = "logicle"
    d = {c: Dimension(c, FCS_SPILLOVER, logicle) for c in channels[2:]}
    fsc, ssc = Dimension("FSC-A"), Dimension("SSC-A")
    strategy = Strategy(
        gates={
            "Cells": PolygonGate("Cells", None, "Cells", dims=(fsc, ssc),
                                 vertices=((30000.0, 10000.0), (140000.0, 20000.0),
                                           (130000.0, 100000.0), (40000.0, 80000.0))),
            "FL1pos": _rect("FL1pos", "Cells", dims=[d["FL1-A"]], mins=[0.55], maxs=[None]),
            "Ell": EllipseGate("Ell", "Cells", "Ell", dims=(d["FL2-A"], d["FL3-A"]),
                               mean=(0.5, 0.6), covariance=((0.01, 0.002), (0.002, 0.02)),
                               distance_square=2.0),
            "Q": QuadrantGate("Q", "FL1pos", "Q",
                              dividers=(QuadrantDivider("q2", d["FL2-A"], (0.45,)),
                                        QuadrantDivider("q3", d["FL3-A"], (0.5,))),
                              quadrants=(Quadrant("Qpp", (("q2", 1.0), ("q3", 1.0))),
                                         Quadrant("Qnn", (("q2", 0.0), ("q3", 0.0))))),
            "Both": BooleanGate("Both", "Cells", "Both", op="and",
                                operands=(("FL1pos", False), ("Ell", True))),
        },
        transforms={logicle: LogicleTransform(262144, 0.5, 4.5, 0)})
    gml = tmp_path / "strategy.xml"
    write_gatingml(strategy, gml)
    ours = evaluate(strategy, read_fcs(fcs_path))

    session = fk.Session(gating_strategy=str(gml), fcs_samples=[str(fcs_path)])
    session.analyze_samples(use_mp=False)
    report = session.get_analysis_report()
    theirs = dict(zip(report["gate_name"], report["count"], strict=True))
    assert set(theirs) == set(ours.counts), (theirs, ours.counts)
    assert {k: int(v) for k, v in theirs.items()} == ours.counts
    assert all(ours.counts[k] > 50 for k in ("Cells", "FL1pos", "Ell", "Qpp", "Both")), ours.counts


def test_dimension_values_are_what_the_gates_see():
    """dimension_values (used to draw events under gates) reproduces the engine's masks."""
    from pathlib import Path

    from immunoprofile.flow.engine import dimension_values, evaluate
    from immunoprofile.flow.fcs import read_fcs
    from immunoprofile.flow.gates import RectangleGate
    from immunoprofile.flow.strategy import load_strategy

    root = Path(__file__).resolve().parents[2] / "example_data"
    strategy = load_strategy(root / "strategy.yaml")
    fcs = read_fcs(sorted((root / "flow").glob("*.fcs"))[0])
    result = evaluate(strategy, fcs)
    rectangles = [g for g in strategy.iter_gates() if isinstance(g, RectangleGate)]
    assert rectangles
    for gate in rectangles:
        values = dimension_values(strategy, fcs, gate.dims)
        inside = np.ones(fcs.n_events, dtype=bool) if gate.parent is None else \
            result.masks[gate.parent].copy()
        for v, lo, hi in zip(values, gate.mins, gate.maxs):
            inside &= (v >= lo if lo is not None else True) & (v < hi if hi is not None else True)
        assert np.array_equal(inside, result.masks[gate.id]), gate.id
