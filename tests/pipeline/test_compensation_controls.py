"""Pipelines computing compensation from single-stain controls, one set per acquisition day."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from immunoprofile.flow.compensation import read_compensation_csv
from immunoprofile.flow.fcs_write import write_fcs
from immunoprofile.pipeline.config import load_config
from immunoprofile.pipeline.runner import run_pipeline
from immunoprofile.simulate import flow as sim

EXAMPLE = Path(__file__).resolve().parents[2] / "example_data"


def _controls(folder: Path, seed: int) -> None:
    folder.mkdir(parents=True)
    for k, channel in enumerate([None, *sim.FLUOR_CHANNELS]):
        rng = np.random.default_rng([seed, k])
        name = "Unstained.fcs" if channel is None else f"Comp_{channel[:-2]}.fcs"
        write_fcs(folder / name, sim.simulate_control(rng, 1500, channel), sim.CHANNELS,
                  sim.MARKERS, text={"$TIMESTEP": "0.01"})


def test_each_sample_gets_its_days_matrix(tmp_path: Path) -> None:
    _controls(tmp_path / "day1", 1)
    _controls(tmp_path / "day2", 2)
    rows = []
    dates = {"A_v1": "10-JAN-2025", "A_v2": "20-JUN-2025", "A_v0": "01-DEC-2024"}
    for i, (sid, date) in enumerate(dates.items()):
        sample = sim.simulate_flow_sample(np.random.default_rng(i), 3000,
                                          sim.FlowParams(th2=0.06, treg=0.06))
        sim.write_flow_sample(tmp_path / f"{sid}.fcs", sample, text={"$DATE": date})
        rows.append({"sample_id": sid, "subject_id": f"S{i}", "visit": "week0", "study_day": 0,
                     "period": "run-in", "assay": "flow", "file": f"{sid}.fcs"})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    (tmp_path / "config.yaml").write_text(f"""\
schema_version: 1
inputs: {{manifest: manifest.csv, strategy: {EXAMPLE / 'strategy.yaml'}}}
design: {{protocol: example-trial}}
flow:
  compensation: controls
  compensation_controls:
    - {{date: 2025-01-02, controls: [day1], unstained: day1/Unstained.fcs}}
    - {{name: june, date: 2025-06-01, controls: [day2], unstained: day2/Unstained.fcs}}
assemble: {{enabled: false}}
compare: {{enabled: false}}
report: {{enabled: false}}
outputs: {{dir: out}}
executor: {{kind: serial}}
""")
    summary = run_pipeline(load_config(tmp_path / "config.yaml"))
    out = tmp_path / "out" / "flow"
    # A_v0 was acquired before either set of controls: it fails, named, the rest go on
    assert summary.exit_code == 1
    assert [Path(f).name for f, _ in summary.failures] == ["A_v0.fcs"]
    assert "no compensation controls acquired on or before" in summary.failures[0][1]
    for name in ("2025-01-02", "june"):
        matrix = read_compensation_csv(out / "compensation" / name / "spillover.csv")
        assert np.abs(matrix.matrix - sim.SPILLOVER_MATRIX).max() < 0.006
        assert (out / "compensation" / name / "compensation_controls.png").is_file()
    prov = json.loads((out / "provenance.json").read_text())
    by_file = prov["parameters"]["compensation_by_file"]
    assert Path(by_file["A_v1.fcs"]).parent.name == "2025-01-02"
    assert Path(by_file["A_v2.fcs"]).parent.name == "june"
    pops = pd.read_csv(out / "populations.csv")
    assert set(pops["sample_id"]) == {"A_v1", "A_v2"}
