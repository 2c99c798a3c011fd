"""Spillover matrices from single-stain controls (issue 12).

Oracles: the real LSR II controls in ``../shared/reference/flow/compensation_controls/`` with the
two matrices others computed from these very files (FACSDiva's ``SPILL`` keyword and
CytoExploreR's ``spillover_compute`` CSV), and simulated controls with a known spillover.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from immunoprofile.cli import cli
from immunoprofile.errors import InputError
from immunoprofile.flow.compensation import read_compensation_csv, parse_spillover
from immunoprofile.flow.fcs import read_fcs
from immunoprofile.flow.fcs_write import write_fcs
from immunoprofile.flow.spillover_estimation import (estimate_spillover, read_channel_map,
                                                     robust_line, scatter_gate)
from immunoprofile.simulate import flow as sim

GATE = Path(__file__).parent / "data" / "compensation_scatter_gate.yaml"


@pytest.fixture(scope="module")
def controls(reference_dir: Path) -> Path:
    return reference_dir / "flow" / "compensation_controls"


def _distances(estimate, controls: Path) -> np.ndarray:
    """Per off-diagonal entry of the stained rows: distance to the nearer of the two oracles."""
    cer = read_compensation_csv(controls / "CytoExploreR_Compensation-Spillover-Matrix.csv")
    diva = read_fcs(controls / "Compensation-PE.fcs").spillover
    assert estimate.detectors == cer.channels == diva.channels
    out = []
    for summary in estimate.controls:
        p = estimate.detectors.index(summary.channel)
        for j in range(len(estimate.detectors)):
            if j != p:
                est = estimate.spillover.matrix[p, j]
                out.append(min(abs(est - cer.matrix[p, j]), abs(est - diva.matrix[p, j])))
    return np.array(out)


def _stained(controls: Path) -> list[Path]:
    return sorted(p for p in controls.glob("*.fcs") if "Unstained" not in p.name)


def test_reference_controls_match_facsdiva_or_cytoexplorer(controls: Path) -> None:
    est = estimate_spillover(_stained(controls), unstained=controls / "Compensation-Unstained.fcs",
                             channels=controls / "Compensation-Channels.csv")
    assert len(est.controls) == 6
    d = _distances(est, controls)
    assert d.size == 60
    assert np.median(d) <= 0.005, np.median(d)
    assert d.max() <= 0.04, d.max()
    # rows without a control stay identity rows (as CytoExploreR writes them)
    stained = {s.channel for s in est.controls}
    for i, ch in enumerate(est.detectors):
        if ch not in stained:
            assert np.array_equal(est.spillover.matrix[i], np.eye(len(est.detectors))[i])
    # after compensation with the matrix, no control leaks into another detector
    assert max(s.max_residual for s in est.controls) < 0.01


def test_reference_channels_found_without_the_map(controls: Path) -> None:
    mapping = read_channel_map(controls / "Compensation-Channels.csv")
    est = estimate_spillover(_stained(controls), unstained=controls / "Compensation-Unstained.fcs")
    for s in est.controls:
        assert s.channel == mapping[Path(s.file).name], (s.file, s.channel_source)
    assert {s.channel_source for s in est.controls} == {"keyword", "data"}


def test_reference_controls_with_the_users_scatter_gate(controls: Path) -> None:
    # CytoExploreR's own Cells / Single Cells polygons of these files, as a YAML strategy
    est = estimate_spillover(sorted(controls.glob("*.fcs")),
                             unstained=controls / "Compensation-Unstained.fcs",
                             channels=controls / "Compensation-Channels.csv", gate=GATE)
    d = _distances(est, controls)
    assert np.median(d) <= 0.005 and d.max() <= 0.04, (np.median(d), d.max())
    assert all(s.n_gated < s.n_events / 2 for s in est.controls)


def test_median_method_is_cytoexplorers_estimate(controls: Path) -> None:
    est = estimate_spillover(_stained(controls), unstained=controls / "Compensation-Unstained.fcs",
                             channels=controls / "Compensation-Channels.csv", method="median")
    assert est.method == "median"
    pe = est.detectors.index("PE-A")
    # the largest coefficient (PE -> PE-Texas Red, 0.523 / 0.530 by the oracles) within 2 %
    assert abs(est.spillover.matrix[pe, est.detectors.index("PE-Texas Red-A")] - 0.53) < 0.02


def _simulated_controls(folder: Path, n: int = 3000, seed: int = 7) -> list[Path]:
    files = []
    for k, channel in enumerate([None, *sim.FLUOR_CHANNELS]):
        rng = np.random.default_rng(np.random.SeedSequence([seed, k]))
        name = "Unstained.fcs" if channel is None else f"Comp_{channel[:-2]}.fcs"
        files.append(write_fcs(folder / name, sim.simulate_control(rng, n, channel),
                               sim.CHANNELS, sim.MARKERS, text={"$TIMESTEP": "0.01"}))
    return files


def test_simulated_controls_recover_the_true_spillover(tmp_path: Path) -> None:
    files = _simulated_controls(tmp_path)
    est = estimate_spillover(files[1:], unstained=files[0])
    assert est.detectors == sim.FLUOR_CHANNELS
    assert {s.channel_source for s in est.controls} == {"keyword"}
    err = np.abs(est.spillover.matrix - sim.SPILLOVER_MATRIX)
    assert err.max() <= 0.005, err.max()


def test_robust_line_ignores_outliers() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(1000, 50_000, 2000)
    y = 40 + 0.123 * x + rng.normal(0, 30, x.size)
    y[:100] += 20_000  # 5 % of wild events
    intercept, slope = robust_line(x, y)
    assert abs(slope - 0.123) < 1e-3 and abs(intercept - 40) < 30


def test_scatter_gate_excludes_debris_and_doublets() -> None:
    rng = np.random.default_rng(3)
    sample = sim.simulate_flow_sample(rng, 6000, sim.FlowParams(th2=0.06, treg=0.06))
    fcs = type("F", (), {})()
    fcs.channels, fcs.n_events, fcs.events = list(sim.CHANNELS), 6000, sample.events
    mask, warnings = scatter_gate(fcs)
    assert not warnings
    lymph = np.isin(sample.labels, [sim.T_CELL, sim.NON_T_LYMPH, sim.BASOPHIL])
    assert mask[lymph].mean() > 0.6
    assert mask[sample.labels == sim.DEBRIS].mean() < 0.05
    assert mask[sample.labels == sim.DOUBLET].mean() < 0.2


def test_duplicate_channel_and_missing_positives_are_input_errors(tmp_path: Path) -> None:
    files = _simulated_controls(tmp_path, n=1500)
    with pytest.raises(InputError, match="both stain"):
        estimate_spillover([files[1], files[1]], unstained=files[0],
                           channels={files[1].name: "BV421-A"})
    with pytest.raises(InputError, match="is BV605-A the stained channel"):
        # the BV421 control mapped to the wrong detector
        estimate_spillover([files[1]], unstained=files[0], channels={files[1].name: "BV605-A"})
    with pytest.raises(InputError, match="positive events in BV421-A"):
        # the unstained tube offered as a BV421 control has no positive population
        estimate_spillover([files[0]], unstained=files[0].with_name("Comp_BV510.fcs"),
                           channels={files[0].name: "BV421-A"})


def test_cli_writes_flowjo_csv_keyword_figure_and_gate_uses_it(tmp_path: Path) -> None:
    folder = tmp_path / "controls"
    folder.mkdir()
    files = _simulated_controls(folder, n=2000)
    out = tmp_path / "comp"
    res = CliRunner().invoke(cli, ["compensate", str(folder), "--unstained", str(files[0]),
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    for name in ("spillover.csv", "spillover.txt", "controls.csv", "provenance.json",
                 "compensation_controls.png"):
        assert (out / name).is_file(), name
    header, first = (out / "spillover.csv").read_text().splitlines()[:2]
    assert header.split(",") == list(sim.FLUOR_CHANNELS)
    assert first.split(",")[0] == sim.FLUOR_CHANNELS[0] and len(first.split(",")) == 10
    from_csv = read_compensation_csv(out / "spillover.csv")
    from_keyword = parse_spillover((out / "spillover.txt").read_text())
    assert from_csv.channels == from_keyword.channels == sim.FLUOR_CHANNELS
    assert np.allclose(from_csv.matrix, from_keyword.matrix, atol=1e-6)
    assert np.abs(from_csv.matrix - sim.SPILLOVER_MATRIX).max() < 0.006
    # --comp takes the matrix as is
    strategy = tmp_path / "s.yaml"
    strategy.write_text("format: immunoprofile-strategy/1\ncompensation: fcs\ntransforms:\n"
                        "  default: {type: logicle, T: 262144, W: 0.5, M: 4.5, A: 0}\n"
                        "gates:\n  - name: BV421+\n    type: range\n    channel: BV421-A\n"
                        "    min: 0.5\n")
    res = CliRunner().invoke(cli, ["gate", str(files[1]), "--strategy", str(strategy),
                                   "--comp", str(out / "spillover.csv"), "--out",
                                   str(tmp_path / "g")])
    assert res.exit_code == 0, res.output


def test_cli_bad_input_exits_2(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["compensate", str(tmp_path / "nope.fcs"), "--unstained",
                                   str(tmp_path / "u.fcs"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert not (tmp_path / "o").exists()
