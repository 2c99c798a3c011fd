"""``immunoprofile plot``: any population of any file, the strategy's (fitted) gates drawn."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from immunoprofile.errors import InputError
from immunoprofile.flow.fcs import read_fcs
from immunoprofile.flow.strategy import load_strategy
from immunoprofile.report import explore_plot


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "immunoprofile.cli", "plot", *args],
                          capture_output=True, text=True)


def test_plot_draws_fitted_gates_of_the_population(example_dir, tmp_path, monkeypatch):
    files = [example_dir / "flow" / "AD01_week0_flow.fcs", example_dir / "flow" /
             "AD02_week2_flow.fcs"]
    strategy = load_strategy(example_dir / "strategy_adaptive.yaml")
    drawn = []
    original = explore_plot._draw_gate

    def spy(ax, gate, shown, counts, parent_count):
        drawn.append((gate.id, gate.mins if hasattr(gate, "mins") else None))
        return original(ax, gate, shown, counts, parent_count)

    monkeypatch.setattr(explore_plot, "_draw_gate", spy)
    fig = explore_plot.population_figure(files, "CD3", strategy=strategy, parent="Live")
    assert len(fig.axes) >= 2
    # the CD3+ threshold drawn on each file where it was fitted there (files drift apart)
    cuts = [m[0] for gid, m in drawn if gid.endswith("CD3+")]
    assert len(cuts) == 2 and cuts[0] != cuts[1]
    from immunoprofile.flow.engine import evaluate

    fitted = [evaluate(strategy, read_fcs(f)).fits["Cells::Singlets::Live::CD3+"] for f in files]
    assert cuts == [r.positions["CD3 min"] for r in fitted]


def test_plot_command_writes_png_and_refuses_bad_input(example_dir, tmp_path):
    fcs = str(example_dir / "flow" / "AD01_week0_flow.fcs")
    strategy = str(example_dir / "strategy.yaml")
    done = _cli(fcs, "--x", "CD4", "--y", "CD8", "--parent", "/Cells/Singlets/Live/CD3+",
                "--strategy", strategy, "--out", str(tmp_path / "a.png"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    done = _cli(fcs, fcs.replace("AD01_week0", "AD01_week1"), "--grid", "--x", "CD3",
                "--transform", "asinh", "--out", str(tmp_path / "b.png"))
    assert done.returncode == 0, done.stderr
    bad = _cli(fcs, "--x", "CD3", "--parent", "Nope", "--strategy", strategy,
               "--out", str(tmp_path / "c.png"))
    assert bad.returncode == 2 and "'Nope' is not a population" in bad.stderr
    assert not (tmp_path / "c.png").exists()
    two = _cli(fcs, fcs, "--x", "CD3", "--out", str(tmp_path / "d.png"))
    assert two.returncode == 2 and "--grid" in two.stderr
    missing = _cli(fcs, "--x", "NoSuchMarker", "--out", str(tmp_path / "e.png"))
    assert missing.returncode == 2 and "NoSuchMarker" in missing.stderr


def test_axis_is_the_strategys_own_unless_overridden(example_dir):
    fcs = read_fcs(example_dir / "flow" / "AD01_week0_flow.fcs")
    strategy = load_strategy(example_dir / "strategy.yaml")
    _, dim, own = explore_plot.axis_dimension(strategy, fcs, "CD3", None)
    assert own and dim.channel == "CD3" and dim.transform == "default"
    s2, dim2, own2 = explore_plot.axis_dimension(strategy, fcs, "FITC-A", "linear")
    assert not own2 and dim2.compensation == "FCS"
    assert np.isclose(s2.transforms[dim2.transform].apply(np.array([262144.0]))[0], 1.0)
    with pytest.raises(InputError):
        explore_plot.axis_dimension(None, fcs, "NoSuchMarker", None)
