"""Data-driven gates (flow/adaptive_gates.py): FlowCal's density2d oracle, the fitting methods on
data with a known answer, YAML parsing (units, guardrails), outputs and replay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from immunoprofile.errors import InputError
from immunoprofile.flow import adaptive_gates as ag
from immunoprofile.flow.engine import evaluate
from immunoprofile.flow.fcs import read_fcs
from immunoprofile.flow.strategy import load_strategy

FLOWCAL = Path("flow") / "fcs_edge_cases" / "flowcal"


# --- FlowCal density2d: event for event --------------------------------------------------------

@pytest.fixture(scope="module")
def data003(reference_dir):
    path = reference_dir / FLOWCAL / "Data003.fcs"
    if not path.is_file():
        pytest.skip("FlowCal reference files absent")
    return read_fcs(path), np.load(reference_dir / FLOWCAL / "Data003_gate_density2d.npy")


def _same_events(fcs, mask, expected) -> None:
    # FlowCal's expected array is the gated events in file order, raw channel values. Compare
    # the channels both readers give raw: FSC, SSC, FSCW, FSCA (ours applies $PnE log
    # amplification to FL1-FL3 and $TIMESTEP to TIME, as the FCS standard says; FlowCal did not).
    raw = [fcs.channel_index(c) for c in ("FSC", "SSC", "FSCW", "FSCA")]
    assert int(mask.sum()) == expected.shape[0]
    np.testing.assert_array_equal(fcs.events[mask][:, raw].astype(np.uint32), expected[:, raw])


def test_density2d_reproduces_flowcal_mask_event_for_event(data003):
    """FlowCal's test: density2d(Data003, ['FSC', 'SSC'], gate_fraction=0.3) on its linear bins
    (1024 bins of one channel each, edges -0.5 ... 1023.5 from $PnR = 1024)."""
    fcs, expected = data003
    x = fcs.events[:, fcs.channel_index("FSC")].astype(float)
    y = fcs.events[:, fcs.channel_index("SSC")].astype(float)
    edges = np.linspace(-0.5, 1023.5, 1025)
    mask, bins = ag.density2d(x, y, edges, edges, fraction=0.3)
    assert int(mask.sum()) == expected.shape[0] == 7504
    _same_events(fcs, mask, expected)
    assert bins.shape == (1024, 1024)


def test_density_gate_through_yaml_and_engine_matches_flowcal(data003, tmp_path):
    fcs, expected = data003
    (tmp_path / "s.yaml").write_text(
        "compensation: none\ntransforms: {default: none}\ngates:\n"
        "  - {name: Dense, type: density, x: FSC, y: SSC, fraction: 0.3, bins: 1024,\n"
        "     sigma: 10, range: [[-0.5, 1023.5], [-0.5, 1023.5]]}\n")
    result = evaluate(load_strategy(tmp_path / "s.yaml"), fcs)
    _same_events(fcs, result.masks["Dense"], expected)
    record = result.fits["Dense"]
    assert not record.fallback and record.kind == "density"
    assert set(record.positions) == {"centre FSC", "centre SSC"}


# --- 1-D cuts ---------------------------------------------------------------------------------

def _bimodal(rng, n=20_000, split=0.7):
    k = int(n * split)
    return np.concatenate([rng.normal(0.2, 0.05, k), rng.normal(0.65, 0.06, n - k)])


def _true_valley(split=0.7):
    from scipy.stats import norm

    grid = np.linspace(0.2, 0.65, 20_001)
    dens = split * norm.pdf(grid, 0.2, 0.05) + (1 - split) * norm.pdf(grid, 0.65, 0.06)
    return grid[np.argmin(dens)]


def test_density_minimum_finds_the_valley_of_a_known_mixture():
    x = _bimodal(np.random.default_rng(1))
    cut, why = ag.density_minimum(x)
    assert why == ""
    # the smoothed density's valley: within 0.03 of the mixture's true minimum (~0.44)
    assert abs(cut - _true_valley()) < 0.03


def test_density_minimum_guardrails():
    rng = np.random.default_rng(2)
    cut, why = ag.density_minimum(rng.normal(0.3, 0.05, 5000))
    assert cut is None and "one peak" in why
    cut, why = ag.density_minimum(_bimodal(rng), search=(0.55, 0.6))
    assert cut is None and "search range" in why
    cut, why = ag.density_minimum(np.array([0.1, 0.2, np.nan]))
    assert cut is None and "events" in why


def test_tail_and_quantile_cuts():
    rng = np.random.default_rng(3)
    x = rng.normal(0.2, 0.05, 20_000)
    cut, why = ag.tail_cut(x, fraction=0.05)
    # a normal density falls to 5 % of its peak at mean + sqrt(2 ln 20) sd, widened by the KDE
    assert why == "" and 0.2 + 2.3 * 0.05 < cut < 0.2 + 2.7 * 0.05
    cut, why = ag.quantile_cut(x, q=0.9)
    assert cut == pytest.approx(np.quantile(x, 0.9))
    assert ag.quantile_cut(x, q=0.9, search=(0.5, 0.6))[0] is None


# --- cluster, singlets ------------------------------------------------------------------------

def test_cluster_takes_the_component_nearest_the_reference_and_is_deterministic():
    rng = np.random.default_rng(4)
    a = rng.multivariate_normal([0.2, 0.06], [[0.0007, 0], [0, 0.0002]], 4000)
    b = rng.multivariate_normal([0.35, 0.2], [[0.001, 0], [0, 0.001]], 1000)
    X = np.vstack([a, b])
    (mean, cov, dsq), why = ag.fit_cluster(X, reference=[0.21, 0.065], components=2,
                                           probability=0.95, seed=0)
    assert why == ""
    np.testing.assert_allclose(mean, [0.2, 0.06], atol=0.003)
    np.testing.assert_allclose(np.diag(cov), [0.0007, 0.0002], rtol=0.15)
    assert dsq == pytest.approx(5.991, abs=1e-3)   # chi-square(2) 95 %
    again = ag.fit_cluster(X, reference=[0.21, 0.065], components=2, seed=0)[0]
    np.testing.assert_array_equal(again[0], mean)
    assert ag.fit_cluster(X[:15], reference=[0.2, 0.06])[0] is None


def test_singlets_band_excludes_simulated_doublets():
    from immunoprofile.simulate import flow as sim

    sample = sim.simulate_flow_sample(np.random.default_rng(5), 20_000,
                                      sim.FlowParams(th2=0.05, treg=0.06))
    a = sample.events[:, sim.CHANNELS.index("FSC-A")] / 262144
    h = sample.events[:, sim.CHANNELS.index("FSC-H")] / 262144
    (median, low, high), why = ag.fit_singlets(a, h, width=4)
    assert why == "" and median == pytest.approx(0.87, abs=0.01)
    inside = (h >= low * a) & (h <= high * a)
    doublet = sample.labels == sim.DOUBLET
    assert inside[doublet].mean() < 0.02
    assert inside[~doublet & (a > 0.1)].mean() > 0.99


# --- YAML: units, fit specs, errors -----------------------------------------------------------

_HEAD = ("transforms:\n  default: {type: logicle, T: 262144, W: 0.5, M: 4.5, A: 0}\n"
         "  FSC-A: {type: linear, T: 262144}\n  FSC-H: {type: linear, T: 262144}\n")


def _strategy(tmp_path, gates: str, head: str = _HEAD):
    (tmp_path / "s.yaml").write_text(head + "gates:\n" + gates)
    return load_strategy(tmp_path / "s.yaml")


def test_data_units_are_the_transform_of_the_value(tmp_path):
    from immunoprofile.flow.transforms import LogicleTransform

    logicle = LogicleTransform(262144, 0.5, 4.5, 0)
    data = _strategy(tmp_path, "  - {name: P, type: range, channel: CD3, min: 1000, units: data}\n")
    scale = _strategy(tmp_path, f"  - {{name: P, type: range, channel: CD3, "
                                f"min: {float(logicle.apply(np.array([1000.0]))[0])!r}}}\n")
    assert data.gates["P"].mins[0] == pytest.approx(scale.gates["P"].mins[0], abs=1e-12)
    top = _strategy(tmp_path, "  - {name: Q, type: quadrant, x: FSC-A, y: CD4, at: [52428.8, 1000],"
                              " quadrants: {a: [+, +], b: [-, -]}}\n", head="units: data\n" + _HEAD)
    xs = [d.values[0] for d in top.gates["Q"].dividers]
    assert xs[0] == pytest.approx(0.2) and xs[1] == pytest.approx(data.gates["P"].mins[0])


@pytest.mark.parametrize("gate, message", [
    ("  - {name: T, type: threshold, channel: CD3, method: density_minimum}\n",
     r"/T threshold: a fitted coordinate needs 'fallback'"),
    ("  - {name: T, type: threshold, channel: CD3, method: valley, fallback: 0.4}\n",
     r"/T threshold: method must be one of density_minimum, tail, quantile"),
    ("  - {name: T, type: threshold, channel: CD3, method: tail, fallback: 0.7,"
     " search: [0.3, 0.6]}\n",
     r"/T threshold: fallback 0.7 \(= 1.181e\+04 in data units\) lies outside the search range"),
    ("  - {name: T, type: range, channel: CD3, min: 3000, max: 1000, units: data}\n",
     r"/T: min 0.5\d+ must be below max 0.45\d+ on 'CD3' \(in data units: 3000 and 1000\)"),
    ("  - {name: T, type: range, channel: CD3, min: {method: quantile, fallback: 0.4}}\n",
     r"/T min: method quantile needs 'q'"),
    ("  - {name: C, type: cluster, x: FSC-A, y: CD3, reference: [0.2, 0.4]}\n",
     r"/C: cluster gate needs fallback"),
    ("  - {name: S, type: singlets, x: FSC-A, y: FSC-H}\n", r"/S: singlets gate needs 'fallback'"),
    ("  - {name: D, type: density, x: FSC-A, y: FSC-H, fraction: 1.5}\n",
     r"/D: density gate needs fraction"),
    ("  - {name: R, type: range, channel: CD3, min: 0.2, units: volts}\n",
     r"/R: units: units must be 'transformed' or 'data'"),
])
def test_fit_spec_errors_name_the_gate_and_show_both_units(tmp_path, gate, message):
    with pytest.raises(InputError, match=message):
        _strategy(tmp_path, gate)


# --- through gate_sample / write_gate_outputs: positions, flags, replay ------------------------

def test_positions_flags_and_fitted_gatingml_replay(example_dir, tmp_path):
    from immunoprofile.flow.batch import gate_sample, write_gate_outputs

    strategy = load_strategy(example_dir / "strategy_adaptive.yaml")
    files = sorted((example_dir / "flow").glob("AD01_*.fcs"))[:4]
    samples = [gate_sample(f, strategy, fitted_gatingml_path=tmp_path / "fg" / f"{f.stem}.xml")
               for f in files]
    written = write_gate_outputs(tmp_path / "out", samples, [], strategy=strategy,
                                 parameters={})
    positions = pd.read_csv(written["gate_positions"], keep_default_na=False)
    assert set(positions.sample_id) == {f.stem for f in files}
    assert "/Cells/Singlets/Live/CD3+" in set(positions.population)
    cd3 = positions[positions.parameter == "CD3 min"]
    assert len(cd3) == 4 and not cd3.fallback.astype(str).eq("True").any()
    # value_data is the value in data units (logicle inverse)
    from immunoprofile.flow.transforms import LogicleTransform

    inv = LogicleTransform(262144, 0.5, 4.5, 0).inverse(cd3.value.astype(float).to_numpy())
    np.testing.assert_allclose(cd3.value_data.astype(float), inv, rtol=1e-9)
    import anndata

    adata = anndata.read_h5ad(written["h5ad"])
    assert "gate_positions_json" in adata.uns["immunoprofile"]
    assert "n_gate_flags" in adata.obs
    # replay: the sample's fitted gates as fixed Gating-ML give the same counts
    for f, sample in zip(files, samples):
        fixed = load_strategy(tmp_path / "fg" / f"{f.stem}.xml")
        assert not fixed.fits
        replay = evaluate(fixed, read_fcs(f))
        adaptive = evaluate(strategy, read_fcs(f))
        assert {replay.paths[k]: v for k, v in replay.counts.items()} == \
            {adaptive.paths[k]: v for k, v in adaptive.counts.items()}


def test_fallback_and_moved_samples_are_flagged():
    rows = []
    for sid, value, fallback in (("a", 0.40, False), ("b", 0.41, False), ("c", 0.42, False),
                                 ("d", 0.52, False), ("e", 0.45, True)):
        rec = ag.FitRecord(gate_id="G", kind="cuts", positions={"CD3 min": value},
                           data_values={"CD3 min": None}, fallback=fallback,
                           reason="the density has one peak" if fallback else "",
                           max_shift=0.05)
        rows += ag.position_rows({"G": rec}, {"G": "/G"}, sid)
    table = ag.flag_positions(pd.DataFrame(rows)).set_index("sample_id")
    assert table.loc["a", "batch_median"] == pytest.approx(0.415)   # fallbacks left out
    assert table.flag.to_dict() == {"a": "", "b": "", "c": "", "d": "moved", "e": "fallback"}


def test_one_peak_falls_back_to_the_stated_coordinate(tmp_path):
    from immunoprofile.flow.fcs_write import write_fcs

    rng = np.random.default_rng(6)
    events = np.column_stack([rng.normal(500, 50, 3000), rng.normal(500, 50, 3000)])
    write_fcs(tmp_path / "one.fcs", events.astype(np.float32), ["A", "B"], ["", ""])
    strategy = _strategy(tmp_path, "  - {name: T, type: threshold, channel: A, "
                                   "method: density_minimum, fallback: 0.5, max_shift: 0.1}\n",
                         head="compensation: none\ntransforms: {default: {type: linear, "
                              "T: 1000}}\n")
    result = evaluate(strategy, read_fcs(tmp_path / "one.fcs"))
    record = result.fits["T"]
    assert record.fallback and "one peak" in record.reason
    assert record.positions == {"A min": 0.5} and record.data_values["A min"] == pytest.approx(500)
    assert result.counts["T"] == int((events[:, 0].astype(np.float32) >= 500).sum())
