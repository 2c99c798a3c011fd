"""Transforms against flowutils (FlowKit's C reference code) and FlowJo's own biex table."""

from __future__ import annotations

import numpy as np
import pytest



def flowutils_transforms():
    """flowutils' transforms (FlowKit's C reference code): an oracle library, see tests/conftest.py."""
    import flowutils.transforms

    return flowutils.transforms


from immunoprofile.flow.transforms import (  # noqa: E402
    AsinhTransform,
    FlowJoBiexTransform,
    HyperlogTransform,
    LinearTransform,
    LogicleTransform,
    LogTransform,
)

BIEX_TABLE = ("flow/flowjo_wsp/flowjo_xforms/"
              "tr_biex_l256_w-7.943282_n1.000000_m4.418540_r262144.000029.csv")

# Parameter sets of the Gating-ML compliance files plus typical cytometer settings.
BIEXP_PARAMS = [
    (262144, 0.5, 4.5, 0.0),
    (262144, 1.0, 4.5, 1.0),
    (1000, 0.5, 4.5, 0.5),
    (1023, 0.5, 4.5, 0.0),
    (10000, 2.0, 4.0, 0.0),
    (262144, 0.25, 4.0, 0.25),
]


@pytest.fixture(scope="module")
def data_values() -> np.ndarray:
    rng = np.random.default_rng(20261124)
    return np.concatenate([
        rng.normal(0, 300, 20000),                 # the crowded region around data zero
        10 ** rng.uniform(-6, 8, 20000),           # 14 decades of positives
        -(10 ** rng.uniform(-6, 6, 10000)),        # and of negatives
        [0.0, 1e-300, -1e-300, 1e12, -1e7, 262144.0],
    ])


@pytest.mark.parametrize("params", BIEXP_PARAMS)
def test_logicle_matches_flowutils(params, data_values):
    T, W, M, A = params
    ours = LogicleTransform(T, W, M, A).apply(data_values)
    ref = flowutils_transforms().logicle(data_values, None, t=T, m=M, w=W, a=A)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("params", BIEXP_PARAMS)
def test_hyperlog_matches_flowutils(params, data_values):
    T, W, M, A = params
    ours = HyperlogTransform(T, W, M, A).apply(data_values)
    ref = flowutils_transforms().hyperlog(data_values, None, t=T, m=M, w=W, a=A)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls,ref_inverse", [
    (LogicleTransform, "logicle_inverse"), (HyperlogTransform, "hyperlog_inverse")])
@pytest.mark.parametrize("params", BIEXP_PARAMS[:3])
def test_biexponential_inverse_matches_flowutils_and_round_trips(cls, ref_inverse, params):
    T, W, M, A = params
    transform = cls(T, W, M, A)
    scale = np.linspace(-0.3, 1.3, 4001)
    ref = getattr(flowutils_transforms(), ref_inverse)(scale, None, t=T, m=M, w=W, a=A)
    data = transform.inverse(scale)
    np.testing.assert_allclose(data, ref, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(transform.apply(data), scale, rtol=0, atol=1e-12)


def test_logicle_top_of_scale_and_zero():
    transform = LogicleTransform(262144, 0.5, 4.5, 0)
    assert transform.apply(np.array([262144.0]))[0] == pytest.approx(1.0, abs=1e-14)
    assert transform.apply(np.array([0.0]))[0] == pytest.approx(0.5 / 4.5, abs=1e-15)
    assert np.isnan(transform.apply(np.array([np.nan]))[0])
    # shape preserved, float32 input accepted
    assert transform.apply(np.zeros((3, 2), dtype=np.float32)).shape == (3, 2)


def test_simple_transforms_match_flowutils(data_values):
    positives = np.abs(data_values) + 1.0
    np.testing.assert_allclose(
        LogTransform(262144, 4.5).apply(positives),
        flowutils_transforms().log(positives, None, t=262144, m=4.5), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(
        AsinhTransform(262144, 4.0, 1.0).apply(data_values),
        flowutils_transforms().asinh(data_values, None, t=262144, m=4.0, a=1.0), rtol=1e-13,
        atol=1e-14)
    np.testing.assert_allclose(LinearTransform(1000, 100).apply(np.array([-100.0, 1000.0])),
                               [0.0, 1.0])
    for transform in (LinearTransform(1000, 100), LogTransform(1000, 4),
                      AsinhTransform(1000, 4, 1)):
        scale = np.linspace(0.05, 1.0, 50)
        np.testing.assert_allclose(transform.apply(transform.inverse(scale)), scale,
                                   rtol=1e-12)


def test_flowjo_biex_matches_flowjo_table(reference_dir):
    table = np.loadtxt(reference_dir / BIEX_TABLE, delimiter=",", skiprows=1)
    transform = FlowJoBiexTransform(negative=1.0, width=-7.943282, positive=4.418540,
                                    max_value=262144.000029, length=256)
    ours = transform.lookup_table()
    assert ours.shape == (4096,)
    np.testing.assert_array_equal(table[:, 0], np.arange(4096))
    # FlowJo prints six significant digits: 0.01 % is far above that rounding
    np.testing.assert_allclose(ours, table[:, 1], rtol=1e-4, atol=1e-4)
    # data at FlowJo's channel values land on those channels (scale = channel / 4096)
    channels = transform.apply(table[::64, 1])
    np.testing.assert_allclose(channels * 4096, table[::64, 0], atol=0.05)


def test_equality_hash_repr_and_params():
    a = LogicleTransform(262144, 0.5, 4.5, 0)
    b = LogicleTransform(262144.0, 0.5, 4.5, 0.0)
    assert a == b and hash(a) == hash(b)
    assert a != HyperlogTransform(262144, 0.5, 4.5, 0)
    assert a != LogicleTransform(262144, 1.0, 4.5, 0)
    assert a.params == {"T": 262144.0, "W": 0.5, "M": 4.5, "A": 0.0}
    assert "LogicleTransform(" in repr(a) and "W=0.5" in repr(a)
    assert FlowJoBiexTransform(1, -10).params["width"] == -10.0
    # strategies travel to worker processes: transforms survive pickling (table rebuilt)
    import pickle

    biex = FlowJoBiexTransform(1, -10)
    biex.apply(np.array([1.0]))
    clone = pickle.loads(pickle.dumps(biex))
    assert clone == biex and len(pickle.dumps(biex)) < 1000
    np.testing.assert_array_equal(clone.apply(np.array([-50.0, 3e4])),
                                  biex.apply(np.array([-50.0, 3e4])))


@pytest.mark.parametrize("bad", [
    lambda: LogicleTransform(-1, 0.5, 4.5, 0),
    lambda: LogicleTransform(262144, 3, 4.5, 0),
    lambda: HyperlogTransform(262144, 0, 4.5, 0),
    lambda: LogTransform(262144, 0),
    lambda: FlowJoBiexTransform(0, 10),
])
def test_invalid_parameters_are_refused(bad):
    with pytest.raises(ValueError):
        bad()


hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


@st.composite
def _biexp_params(draw):
    T = draw(st.sampled_from([1000.0, 1024.0, 10000.0, 262144.0, 4194304.0]))
    M = draw(st.floats(2.0, 7.0))
    W = draw(st.floats(0.05, M / 2 * 0.9))
    A = draw(st.floats(-W * 0.9, max(-W * 0.9, (M - 2 * W) * 0.9)))
    return T, W, M, A


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(params=_biexp_params(),
                  x=st.lists(st.floats(-1e6, 1e8, allow_nan=False), min_size=1, max_size=50))
def test_property_logicle_and_hyperlog_equal_flowutils(params, x):
    T, W, M, A = params
    data = np.array(x)
    for cls, ref in ((LogicleTransform, flowutils_transforms().logicle),
                     (HyperlogTransform, flowutils_transforms().hyperlog)):
        ours = cls(T, W, M, A).apply(data)
        theirs = ref(data, None, t=T, m=M, w=W, a=A)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
        # strictly increasing: sorting the data sorts the scale values
        order = np.argsort(data, kind="stable")
        assert np.all(np.diff(ours[order]) >= 0)


@pytest.mark.parametrize("cls", [LogicleTransform, HyperlogTransform])
def test_infinities_and_huge_values(cls):
    transform = cls(262144, 0.5, 4.5, 0)
    data = np.array([np.inf, -np.inf, 1e200, -1e200, 1e300, np.nan])
    with np.errstate(all="raise"):
        out = transform.apply(data)
    assert out[0] == np.inf and out[1] == -np.inf and np.isnan(out[5])
    # far beyond the top the scale is the log asymptote ln(x / a) / b, reflected for negatives
    assert out[2] == pytest.approx(np.log(1e200 / transform.a) / transform.b, rel=1e-12)
    assert out[3] == pytest.approx(2 * transform.x1 - out[2], rel=1e-12)
    assert out[2] < out[4] < np.inf
