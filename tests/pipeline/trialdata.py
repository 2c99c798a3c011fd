"""Helpers for pipeline tests: a tiny trial of small generated FCS 3.1 files and a config.

(A module of its own, not ``conftest``: several test folders have a ``conftest.py``.)
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

STRATEGY = """\
format: immunoprofile-strategy/1
name: tiny T-cell panel
compensation: fcs
transforms:
  default: {type: logicle, T: 262144, W: 0.5, M: 4.5, A: 0}
  FSC-A: {type: linear, T: 262144}
  SSC-A: {type: linear, T: 262144}
gates:
  - name: Cells
    type: rectangle
    bounds: {FSC-A: [0.1, 0.9], SSC-A: [0.02, 0.6]}
    children:
      - name: CD3+
        type: range
        channel: CD3
        min: 0.55
        children:
          - name: CD4 CD8
            type: quadrant
            x: CD4
            y: CD8
            at: [0.55, 0.55]
            quadrants:
              CD4+CD8-: ["+", "-"]
              CD4-CD8+: ["-", "+"]
              CD4+CD8+: ["+", "+"]
              CD4-CD8-: ["-", "-"]
"""

CHANNELS = ["FSC-A", "SSC-A", "FL1-A", "FL2-A", "FL3-A", "Time"]
MARKERS = ["", "", "CD3", "CD4", "CD8", ""]
SPILL = np.array([[1.0, 0.12, 0.02], [0.05, 1.0, 0.15], [0.0, 0.03, 1.0]])


def make_events(rng: np.random.Generator, n: int, cd4_share: float) -> np.ndarray:
    """Lymphocyte-like events: ~70 % CD3+, CD4/CD8 split by ``cd4_share``, then spillover added."""
    fsc = rng.normal(90_000, 20_000, n).clip(1, 262_143)
    ssc = rng.normal(40_000, 15_000, n).clip(1, 262_143)
    cd3pos = rng.random(n) < 0.7
    cd4pos = cd3pos & (rng.random(n) < cd4_share)
    cd8pos = cd3pos & ~cd4pos & (rng.random(n) < 0.8)
    lo, hi = rng.lognormal(np.log(150), 0.6, (n, 3)), rng.lognormal(np.log(15_000), 0.4, (n, 3))
    true = np.where(np.column_stack([cd3pos, cd4pos, cd8pos]), hi, lo)
    observed = true @ SPILL  # what the instrument records: spillover not yet removed
    time = np.sort(rng.uniform(0, 1000, n))
    return np.column_stack([fsc, ssc, observed, time]).astype(np.float32)


def write_tiny_fcs(path: Path, seed: int, n: int = 3000, cd4_share: float = 0.6) -> Path:
    from immunoprofile.flow.fcs_write import write_fcs

    rng = np.random.default_rng(seed)
    return write_fcs(path, make_events(rng, n, cd4_share), CHANNELS, MARKERS,
                     text={"$DATE": "24-NOV-2026", "$CYT": "Simulated", "$FIL": path.name},
                     spillover=(CHANNELS[2:5], SPILL))


def make_trial(root: Path, *, n_subjects: int = 3, visits: tuple[str, ...] = ("week0", "week4"),
               n_events: int = 3000, jobs: int = 1, kind: str = "serial",
               membership: bool = False, extra: str = "") -> Path:
    """A trial folder with FCS files, a manifest, a strategy and a config; returns the config.

    The config turns time QC on (off unless a config names it) and, with ``membership``, the
    per-event membership files."""
    days = {"screening": -56, "week0": 0, "week1": 7, "week2": 14, "week4": 28, "week8": 56,
            "week12": 84, "week16": 112, "week20": 140, "week24": 168}
    (root / "flow").mkdir(parents=True, exist_ok=True)
    (root / "strategy.yaml").write_text(STRATEGY, encoding="utf-8")
    rows = ["sample_id,subject_id,visit,study_day,assay,file"]
    seed = 0
    for s in range(1, n_subjects + 1):
        for visit in visits:
            seed += 1
            sid = f"S{s:02d}_{visit}"
            name = f"s{s:02d}_{visit}.fcs"
            share = 0.6 - 0.2 * (visit not in ("screening", "week0"))
            write_tiny_fcs(root / "flow" / name, seed, n_events, share)
            rows.append(f"{sid},S{s:02d},{visit},{days[visit]},flow,flow/{name}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    config = root / "config.yaml"
    config.write_text(textwrap.dedent(f"""\
        schema_version: 1
        name: tiny trial
        inputs:
          manifest: manifest.csv
          strategy: strategy.yaml
        design: {{protocol: example-trial}}
        flow: {{time_qc: {{enabled: true}}{", membership: true" if membership else ""}}}
        cytokine: {{enabled: false}}
        compare: {{enabled: false}}
        report: {{enabled: false}}
        outputs: {{dir: out}}
        executor: {{kind: {kind}, jobs: {jobs}}}
        """) + extra, encoding="utf-8")
    return config
