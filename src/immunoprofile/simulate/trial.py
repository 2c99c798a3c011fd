"""The example anakinra-in-atopic-dermatitis trial, simulated end to end from one seed.

Contract: :func:`simulate_trial` writes a complete, deterministic study folder (same seed → the
same bytes): one FCS 3.1 file per subject-visit, two xPONENT 4.2 cytokine plates, the kit standards
table, the clinical table, the sample manifest, the gating strategy (YAML and Gating-ML 2.0), the
truth behind every simulated number and a README. The design (visits, effects, who misses what) is
data at the top of this module.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
from pathlib import Path
from typing import Any

import numpy as np

from immunoprofile._io import write_csv_atomic, write_text_atomic
from immunoprofile.simulate import clinical as _clinical
from immunoprofile.simulate import flow as _flow
from immunoprofile.simulate import plates as _plates

__all__ = [
    "VISITS", "PERIOD_OF_VISIT", "EXPOSURE", "CYTOKINE_VISITS", "FLOW_EFFECTS",
    "CYTOKINE_EFFECTS", "STRATEGY_YAML", "STRATEGY_ADAPTIVE_YAML", "ACQUISITION_DRIFT",
    "acquisition_factor", "simulate_trial", "trial_design", "resolve_markers",
]

DEFAULT_SEED = 20261124

# (visit, nominal study day, earliest offset, latest offset). Day 0 = week-0 baseline (pre-dose);
# the windows keep every visit inside its period (run-in -56…0, treatment 1…84, post 85…168).
VISITS: tuple[tuple[str, int, int, int], ...] = (
    ("screening", -56, 0, 4), ("week0", 0, 0, 0), ("week1", 7, -1, 1), ("week2", 14, -2, 2),
    ("week4", 28, -2, 2), ("week8", 56, -3, 3), ("week12", 84, -3, 0), ("week16", 112, -3, 3),
    ("week20", 140, -3, 3), ("week24", 168, -3, 0),
)
PERIOD_OF_VISIT: dict[str, str] = {
    "screening": "run-in", "week0": "run-in", "week1": "treatment", "week2": "treatment",
    "week4": "treatment", "week8": "treatment", "week12": "treatment",
    "week16": "post-treatment", "week20": "post-treatment", "week24": "post-treatment",
}
# Fraction of the full pharmacodynamic effect at each visit: builds up over the first month of
# daily dosing, then wanes over the 12 weeks after the last dose.
EXPOSURE: dict[str, float] = {
    "screening": 0.0, "week0": 0.0, "week1": 0.45, "week2": 0.7, "week4": 0.9, "week8": 1.0,
    "week12": 1.0, "week16": 0.25, "week20": 0.08, "week24": 0.0,
}
# Serum is assayed at a subset of visits: 2 plates × 36 duplicate samples cannot hold all 75.
CYTOKINE_VISITS: tuple[str, ...] = ("screening", "week0", "week2", "week4", "week8", "week12",
                                    "week16", "week24")

# Fold change at full effect (multiplies the subject's baseline; scaled by the subject's
# responsiveness). Population names as in simulate.flow.POPULATIONS.
FLOW_EFFECTS: dict[str, float] = {"Th2": 0.60, "Treg": 1.25}
CYTOKINE_EFFECTS: dict[str, float] = {"IL-13": 0.45, "CCL17": 0.45}
IL1RA_DRUG_FOLD = 30.0      # anakinra is recombinant IL-1Ra: the bead measures the drug
IL1RA_ANALYTE = "IL-1RA"
NEGATIVE_CONTROLS = {"CD4-CD8+", "IL-4", "IL-6"}
# Per plate: (top MFI, EC50) multipliers of the 5PL curve (absorbed by each plate's own standards)
# and the true/labelled concentration of its standard series (plate2's standards were
# reconstituted 8 % too concentrated, so its results read ~7 % low; only the bridging pool
# shows it).
PLATE_SHIFTS = {"plate1": (1.0, 1.0), "plate2": (0.86, 1.12)}
STANDARD_BIAS = {"plate1": 1.0, "plate2": 1.08}
# Fluorescence gain of the cytometer per acquisition day: log-uniform in this range.
ACQUISITION_DRIFT: tuple[float, float] = (0.8, 1.25)

# Acquisition anomalies (issue 12) put into a few files: (subject, visit) -> kind. A clog is a
# 0.8 s gap then a burst of 500 junk events in 0.1 s; a drift lets every fluorescence signal sag
# linearly to 35 % over the last 40 % of the acquisition. Drawn from their own random streams
# (_ANOMALY_STREAM), so every other number of the trial is unchanged. They are applied after the
# per-day fluorescence gain (ACQUISITION_DRIFT), on the events the cytometer recorded.
ACQUISITION_ANOMALIES: dict[tuple[str, str], str] = {
    ("AD02", "week4"): "clog", ("AD06", "week12"): "clog", ("AD03", "week8"): "drift",
}
CLOG = {"at": 0.55, "gap_s": 0.8, "burst_events": 500, "burst_s": 0.1}
DRIFT = {"start": 0.6, "end_factor": 0.35}
# Single-stain compensation controls of the panel (one per fluorescence detector) and an
# unstained tube, from the panel's true spillover; events per tube.
CONTROL_EVENTS = 3000
_ANOMALY_STREAM, _CONTROL_STREAM = 1202, 1201


def _stream(seed: int, purpose: int, *keys: int) -> np.random.Generator:
    # Streams of features added later: seeded apart from the original _rng streams so that
    # turning them on changes nothing else.
    return np.random.default_rng(np.random.SeedSequence([seed, purpose, *keys]))


STRATEGY_YAML = """\
# Example gating strategy for the simulated anakinra trial, in the immunoprofile YAML format
# (docs/strategy_yaml.md). example_data/strategy.gatingml.xml is the same strategy as Gating-ML 2.0.
#
# Coordinates are in transformed units: for the fluorescence channels logicle "scale" units
# (about 0-1 over the instrument range; 0.11 is zero, 0.45 is about 1,000, 0.69 about 10,000), for
# the linear scatter axes value / 262144.
# Gates name channels by marker ($PnS, e.g. CD4) or by detector ($PnN, e.g. FSC-A); both are
# resolved per file, so the strategy fits any panel that labels its markers the same way.
format: immunoprofile-strategy/1
name: T-cell / Th2 / Treg panel (example trial)
compensation: fcs    # the $SPILLOVER stored in each FCS file (scatter, time never compensated)
transforms:
  default: {type: logicle, T: 262144, W: 0.5, M: 4.5, A: 0}   # every fluorescence channel
  FSC-A: {type: linear, T: 262144}
  FSC-H: {type: linear, T: 262144}
  SSC-A: {type: linear, T: 262144}
  Time: none
gates:
  # Lymphocytes by size (FSC) and granularity (SSC): excludes debris (low FSC) and monocytes
  # (high SSC). Wide in FSC so that doublets reach the Singlets gate below.
  - name: Cells
    type: polygon
    x: FSC-A
    y: SSC-A
    vertices: [[0.13, 0.015], [0.55, 0.015], [0.55, 0.14], [0.13, 0.14]]
    children:
      # A single cell has FSC-H ~ 0.87 x FSC-A; two cells passing together have twice the area but
      # not twice the height, so doublets fall below the lower edge (FSC-H = 0.70 x FSC-A).
      - name: Singlets
        type: polygon
        x: FSC-A
        y: FSC-H
        vertices: [[0.05, 0.035], [0.60, 0.42], [0.60, 0.63], [0.05, 0.0525]]
        children:
          # Dead cells take up the amine-reactive viability dye and are bright.
          - name: Live
            type: range
            channel: Viability
            max: 0.5
            children:
              - name: CD3+
                type: range
                channel: CD3
                min: 0.45
                children:
                  # One population per quadrant, named by the quadrant (the gate itself is not a
                  # population): /Cells/Singlets/Live/CD3+/CD4+CD8- etc.
                  - name: CD4 CD8
                    type: quadrant
                    x: CD4
                    y: CD8
                    at: [0.45, 0.45]
                    quadrants:
                      CD4+CD8-:          # long form: this quadrant has children
                        position: [+, -]
                        children:
                          - name: Th2
                            type: range
                            channel: CRTH2     # CD294, expressed by Th2 cells
                            min: 0.43
                          - name: Treg           # CD25+ CD127lo
                            type: rectangle
                            bounds: {CD25: [0.45, null], CD127: [null, 0.43]}
                          - name: CD45RA CCR7
                            type: quadrant
                            x: CD45RA
                            y: CCR7
                            at: [0.45, 0.43]
                            quadrants:
                              Naive: [+, +]    # CD45RA+ CCR7+
                              CM: [-, +]       # central memory
                              EM: [-, -]       # effector memory
                              TEMRA: [+, -]    # effector memory re-expressing CD45RA
                      CD4-CD8+: [-, +]
                      CD4+CD8+: [+, +]
                      CD4-CD8-: [-, -]
  # Memory CD4 T cells: every CD4 single-positive cell that is not naive (a boolean gate).
  - name: Memory
    type: boolean
    op: and
    of: [/Cells/Singlets/Live/CD3+/CD4+CD8-, not /Cells/Singlets/Live/CD3+/CD4+CD8-/Naive]
    parent: /Cells/Singlets/Live/CD3+/CD4+CD8-
"""

STRATEGY_ADAPTIVE_YAML = """\
# Example data-driven gating strategy for the simulated anakinra trial (docs/strategy_yaml.md).
# The same populations as strategy.yaml, with the fluorescence cuts placed on each sample's own
# events: each cut is strategy.yaml's coordinate carried along with a landmark population
# (method: landmark; the cut is scaled by where that population's centre sits today relative to
# `reference`, where it sat on the data the cut was drawn on), so a day's detector gain moves the
# cut with the populations. The singlet band is fitted per sample too. Fitted positions per
# sample go to gate_positions.csv (a landmark / reference is that day's gain); a fit that fails
# uses the stated fallback and is flagged.
#
# The lymphocyte scatter gate stays fixed: scatter does not drift in this trial, and a per-file
# Gaussian-mixture ellipse (type: cluster) moved every downstream % by ~0.1 pp (issue 16).
#
# Coordinates are in data units (units: data): scatter in instrument channels (0-262144),
# fluorescence in compensated intensity (logicle 0.45 is about 960).
format: immunoprofile-strategy/1
name: T-cell / Th2 / Treg panel, data-driven gates (example trial)
compensation: fcs
units: data
transforms:
  default: {type: logicle, T: 262144, W: 0.5, M: 4.5, A: 0}
  FSC-A: {type: linear, T: 262144}
  FSC-H: {type: linear, T: 262144}
  SSC-A: {type: linear, T: 262144}
  Time: none
gates:
  - name: Cells
    type: polygon
    x: FSC-A
    y: SSC-A
    vertices: [[34079, 3932], [144179, 3932], [144179, 36700], [34079, 36700]]
    children:
      # Single cells: FSC-H / FSC-A within 4 robust SDs of its median; doublets fall below.
      - name: Singlets
        type: singlets
        x: FSC-A
        y: FSC-H
        width: 4
        max_shift: 0.03
        fallback: [[13107, 9175], [157286, 110100], [157286, 165150], [13107, 13762]]
        children:
          # landmark: the live cells' (dye-negative) peak
          - name: Live
            type: threshold
            channel: Viability
            side: below
            method: landmark
            landmark: [80, 700]
            reference: 225
            fallback: 1560
            max_shift: 0.05
            children:
              # landmark: the T cells' CD3 peak
              - name: CD3+
                type: threshold
                channel: CD3
                method: landmark
                landmark: [3000, 30000]
                reference: 9000
                fallback: 960
                max_shift: 0.05
                children:
                  - name: CD4 CD8
                    type: quadrant
                    x: CD4
                    y: CD8
                    at: [{method: landmark, landmark: [4000, 40000], reference: 11000, fallback: 960},
                         {method: landmark, landmark: [5000, 50000], reference: 14000, fallback: 960}]
                    max_shift: 0.05
                    quadrants:
                      CD4+CD8-:
                        position: [+, -]
                        children:
                          - name: Th2
                            type: threshold
                            channel: CRTH2
                            method: landmark
                            landmark: [2000, 20000]
                            reference: 4150
                            fallback: 792
                            max_shift: 0.05
                          - name: Treg
                            type: rectangle
                            max_shift: 0.05
                            bounds:
                              CD25: [{method: landmark, landmark: [1500, 20000], reference: 3330, fallback: 960}, null]
                              CD127: [null, {method: landmark, landmark: [1200, 10000], reference: 2800, fallback: 792}]
                          - name: CD45RA CCR7
                            type: quadrant
                            x: CD45RA
                            y: CCR7
                            at: [{method: landmark, landmark: [3500, 30000], reference: 8500, fallback: 960},
                                 {method: landmark, landmark: [1500, 12000], reference: 3190, fallback: 792}]
                            max_shift: 0.05
                            quadrants:
                              Naive: [+, +]
                              CM: [-, +]
                              EM: [-, -]
                              TEMRA: [+, -]
                      CD4-CD8+: [-, +]
                      CD4+CD8+: [+, +]
                      CD4-CD8-: [-, -]
  - name: Memory
    type: boolean
    op: and
    of: [/Cells/Singlets/Live/CD3+/CD4+CD8-, not /Cells/Singlets/Live/CD3+/CD4+CD8-/Naive]
    parent: /Cells/Singlets/Live/CD3+/CD4+CD8-
"""


@dataclasses.dataclass(frozen=True)
class SubjectDesign:
    """Everything drawn once per subject."""

    subject_id: str
    index: int
    age: int
    sex: str
    response: float            # pharmacodynamic responsiveness (1 = typical)
    pk: float                  # drug exposure factor (IL-1RA readout)
    enrolled: _dt.date         # calendar date of day 0
    visits: tuple[tuple[str, int], ...]   # attended (visit, study day)
    missed_doses: int
    stop_day: int | None
    th2: float
    treg: float
    cd8: float
    t_of_lymph: float
    cytokines: dict[str, float]


def _rng(seed: int, *keys: int) -> np.random.Generator:
    # One independent stream per (purpose, subject, visit): adding subjects or events leaves the
    # other files' streams untouched.
    return np.random.default_rng([seed, *keys])


def trial_design(*, seed: int = DEFAULT_SEED, n_subjects: int = 8) -> list[SubjectDesign]:
    """Draw the subjects of the trial (deterministic in ``seed``).

    One subject misses week 4 and one drops out after week 8 (stops dosing at day 52, not
    evaluable: fewer than 67 doses); another misses 9 doses but stays evaluable.

    Parameters
    ----------
    seed
        Master seed.
    n_subjects
        Number of subjects (``AD01`` ...).

    Returns
    -------
    list of SubjectDesign
        One per subject: demographics, responsiveness, attended visits and study days, dosing,
        baseline cell frequencies and serum cytokine levels.
    """
    # AD05 misses week 4 and AD07 drops out; smaller trials use their last subjects instead, and a
    # one-subject trial has neither.
    dropout_idx = min(6, n_subjects - 1) if n_subjects > 1 else -1
    missing_idx = min(4, n_subjects - 1) if n_subjects > 1 else -1
    if dropout_idx == missing_idx and n_subjects > 1:
        missing_idx = n_subjects - 2
    subjects = []
    for i in range(n_subjects):
        rng = _rng(seed, 1, i)
        sid = f"AD{i + 1:02d}"
        visits: list[tuple[str, int]] = []
        for name, nominal, lo, hi in VISITS:
            day = nominal + int(rng.integers(lo, hi + 1))
            if i == missing_idx and name == "week4":
                continue
            if i == dropout_idx and nominal > 56:
                continue
            visits.append((name, day))
        stop_day = 52 if i == dropout_idx else None
        missed = int(rng.integers(0, 4)) + (9 if i == 2 else 0)
        cyto = {a.name: a.serum_median * float(np.exp(a.serum_sdlog * rng.standard_normal()))
                for a in _plates.ANALYTES}
        subjects.append(SubjectDesign(
            subject_id=sid, index=i, age=int(rng.integers(10, 31)),
            sex=str(rng.choice(["F", "M"])),
            response=float(np.clip(np.exp(0.35 * rng.standard_normal()), 0.4, 1.7)),
            pk=float(np.exp(0.35 * rng.standard_normal())),
            enrolled=_dt.date(2025, 3, 3) + _dt.timedelta(days=int(rng.integers(0, 90))),
            visits=tuple(visits), missed_doses=missed, stop_day=stop_day,
            th2=0.065 * float(np.exp(0.25 * rng.standard_normal())),
            treg=0.060 * float(np.exp(0.15 * rng.standard_normal())),
            cd8=float(np.clip(0.30 * np.exp(0.15 * rng.standard_normal()), 0.15, 0.45)),
            t_of_lymph=float(np.clip(0.70 + 0.05 * rng.standard_normal(), 0.55, 0.82)),
            cytokines=cyto,
        ))
    return subjects


def _flow_params(subject: SubjectDesign, visit: str, rng: np.random.Generator) -> _flow.FlowParams:
    effect = EXPOSURE[visit] * subject.response
    cd8 = subject.cd8 * float(np.exp(0.03 * rng.standard_normal()))
    dp = 0.015
    return _flow.FlowParams(
        th2=subject.th2 * FLOW_EFFECTS["Th2"] ** effect
        * float(np.exp(0.06 * rng.standard_normal())),
        treg=subject.treg * FLOW_EFFECTS["Treg"] ** effect
        * float(np.exp(0.05 * rng.standard_normal())),
        cd8=cd8, dp=dp, cd4=1.0 - cd8 - dp - 0.05,
        t_of_lymph=float(np.clip(subject.t_of_lymph + 0.01 * rng.standard_normal(), 0.5, 0.85)),
        dead=float(np.clip(0.06 + 0.015 * rng.standard_normal(), 0.02, 0.12)),
        debris=float(np.clip(0.07 + 0.015 * rng.standard_normal(), 0.03, 0.12)),
        stain=float(np.exp(0.05 * rng.standard_normal())),
    )


def _serum(subject: SubjectDesign, visit: str, rng: np.random.Generator) -> dict[str, float]:
    effect = EXPOSURE[visit] * subject.response
    out = {}
    for analyte in _plates.ANALYTES:
        conc = subject.cytokines[analyte.name] * float(np.exp(0.12 * rng.standard_normal()))
        conc *= CYTOKINE_EFFECTS.get(analyte.name, 1.0) ** effect
        if analyte.name == IL1RA_ANALYTE and PERIOD_OF_VISIT[visit] == "treatment":
            # Trough drug level on top of endogenous IL-1Ra while dosing daily.
            conc += subject.cytokines[analyte.name] * IL1RA_DRUG_FOLD * subject.pk
        out[analyte.name] = float(f"{conc:.6g}")
    return out


def _fcs_date(day: _dt.date) -> str:
    months = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    return f"{day.day:02d}-{months[day.month - 1]}-{day.year}"


def acquisition_factor(seed: int, day: _dt.date,
                       drift: tuple[float, float] | None = ACQUISITION_DRIFT) -> float:
    """Fluorescence gain of the cytometer on one acquisition day (1 without drift).

    Log-uniform in ``drift``, from its own stream per calendar day (so the rest of the
    simulated data does not change with it): laser power and PMT settings vary from day to day
    and scale every fluorescence detector alike (scatter and the spillover are unchanged).
    """
    if drift is None:
        return 1.0
    rng = _rng(seed, 6, day.toordinal())
    lo, hi = np.log(drift[0]), np.log(drift[1])
    return float(np.exp(rng.uniform(lo, hi)))


def simulate_trial(out_dir: str | os.PathLike[str], *, seed: int = DEFAULT_SEED,
                   n_events: int = 8000, n_subjects: int = 8,
                   acquisition_drift: tuple[float, float] | None = ACQUISITION_DRIFT,
                   controls: bool = True, anomalies: bool = True) -> Path:
    """Write the example trial into ``out_dir``.

    Parameters
    ----------
    out_dir
        Destination folder (created; existing files of the same names are replaced).
    seed
        Master seed; the same seed (and sizes) gives byte-identical files.
    n_events
        Events per FCS file.
    n_subjects
        Number of subjects (at most 8 fit the two plates at the cytokine visits).
    acquisition_drift
        ``(low, high)`` range of the per-acquisition-day fluorescence gain
        (:func:`acquisition_factor`, written to ``truth/acquisition.csv``); ``None`` = none.
    controls
        Also write ``controls/``: single-stain compensation controls and an unstained tube.
    anomalies
        Put the clogs and the drift of :data:`ACQUISITION_ANOMALIES` into their files (truth in
        ``truth/time_anomalies.csv``). Both options draw from their own random streams: with them
        off, every other file is byte-identical to a run with them on.

    Returns
    -------
    Path
        ``out_dir``.
    """
    import pandas as pd

    if n_events < 1:
        raise ValueError("n_events must be positive")
    if not 1 <= n_subjects <= 8:
        raise ValueError("n_subjects must be between 1 and 8 (two plates hold 8 subjects)")
    out = Path(out_dir)
    (out / "flow").mkdir(parents=True, exist_ok=True)
    (out / "plates").mkdir(parents=True, exist_ok=True)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    subjects = trial_design(seed=seed, n_subjects=n_subjects)
    visit_index = {v[0]: k for k, v in enumerate(VISITS)}

    manifest: list[dict] = []
    flow_truth: list[dict] = []
    acquisition: list[dict] = []
    anomaly_truth: list[dict] = []
    serum: dict[str, dict[str, float]] = {}
    cyto_truth: list[dict] = []
    clinical_rows: list[dict] = []
    plate_of_subject = {s.subject_id: "plate1" if s.index < (n_subjects + 1) // 2 else "plate2"
                        for s in subjects}

    for subject in subjects:
        for visit, day in subject.visits:
            v = visit_index[visit]
            # --- flow ----------------------------------------------------------------------------
            rng = _rng(seed, 2, subject.index, v)
            params = _flow_params(subject, visit, rng)
            sample = _flow.simulate_flow_sample(rng, n_events, params)
            sample_id = f"{subject.subject_id}_{visit}_flow"
            acquired = subject.enrolled + _dt.timedelta(days=day)
            date = _fcs_date(acquired)
            gain = acquisition_factor(seed, acquired, acquisition_drift)
            if gain != 1.0:
                _flow.apply_gain(sample, gain)
            acquisition.append({"sample_id": sample_id, "date": acquired.isoformat(),
                                "fluorescence_factor": round(gain, 6)})

            kind = ACQUISITION_ANOMALIES.get((subject.subject_id, visit)) if anomalies else None
            written = sample
            if kind is not None:
                events, rows = _anomaly(kind, sample.events,
                                        _stream(seed, _ANOMALY_STREAM, subject.index, v))
                written = dataclasses.replace(sample, events=events)
                anomaly_truth += [{"sample_id": sample_id, **r} for r in rows]
            _flow.write_flow_sample(out / "flow" / f"{sample_id}.fcs", written, text={
                "$DATE": date, "$FIL": f"{sample_id}.fcs", "$SRC": subject.subject_id,
                "$SMNO": sample_id, "$PROJ": "Anakinra in atopic dermatitis (simulated)",
                "VISIT": visit, "STUDY_DAY": str(day)})
            manifest.append({"sample_id": sample_id, "subject_id": subject.subject_id,
                             "visit": visit, "study_day": day, "period": PERIOD_OF_VISIT[visit],
                             "assay": "flow", "file": f"flow/{sample_id}.fcs", "plate": "",
                             "well": ""})
            expected = _flow.expected_fractions(params)
            for pop, (count, parent_count) in _flow.population_truth(sample).items():
                path, parent = _flow.POPULATIONS[pop]
                flow_truth.append({
                    "sample_id": sample_id, "subject_id": subject.subject_id, "visit": visit,
                    "population": path, "name": pop, "parent": parent,
                    "true_pct_parent": round(100 * expected[pop], 4),
                    "count": count, "parent_count": parent_count,
                    "realized_pct_parent": round(100 * count / parent_count, 4)
                    if parent_count else float("nan")})
            # --- serum ---------------------------------------------------------------------------
            if visit in CYTOKINE_VISITS:
                serum_id = f"{subject.subject_id}_{visit}_serum"
                serum[serum_id] = _serum(subject, visit, _rng(seed, 3, subject.index, v))
                manifest.append({"sample_id": serum_id, "subject_id": subject.subject_id,
                                 "visit": visit, "study_day": day,
                                 "period": PERIOD_OF_VISIT[visit], "assay": "cytokine",
                                 "file": f"plates/{plate_of_subject[subject.subject_id]}.csv",
                                 "plate": plate_of_subject[subject.subject_id], "well": ""})
                for analyte, conc in serum[serum_id].items():
                    cyto_truth.append({"sample_id": serum_id, "subject_id": subject.subject_id,
                                       "visit": visit, "analyte": analyte,
                                       "concentration": conc, "unit": "pg/mL"})
        clinical_rows += _clinical.simulate_clinical(
            _rng(seed, 4, subject.index), subject_id=subject.subject_id, age=subject.age,
            sex=subject.sex, visits=subject.visits, exposure=EXPOSURE,
            response=float(np.clip(0.5 * subject.response - 0.05, 0.05, 0.8)),
            missed_doses=subject.missed_doses, stop_day=subject.stop_day)

    # --- plates ------------------------------------------------------------------------------
    bridge = _plates.bridge_concentrations()
    for a, conc in bridge.items():
        cyto_truth.append({"sample_id": _plates.BRIDGE_NAME, "subject_id": "", "visit": "",
                           "analyte": a, "concentration": float(f"{conc:.6g}"), "unit": "pg/mL"})
    wells_of: dict[str, list[str]] = {}
    for p, plate in enumerate(sorted(set(plate_of_subject.values()))):
        names = [m["sample_id"] for m in manifest
                 if m["assay"] == "cytokine" and m["plate"] == plate]
        layout = _plates.plate_layout(names)
        top, ec = PLATE_SHIFTS[plate]
        sim = _plates.simulate_plate(
            _rng(seed, 5, p), plate, layout, {**serum, _plates.BRIDGE_NAME: bridge},
            top_factor=top, ec_factor=ec, standard_bias=STANDARD_BIAS[plate],
            date=f"6/{10 + 7 * p}/2025",
            start_time=f"10:{14 + p:02d} AM")
        _plates.write_xponent_csv(out / "plates" / f"{plate}.csv", sim,
                                  batch=plate)  # readers take the batch name as plate id
        for well in layout:
            wells_of.setdefault(well.sample, []).append(well.well)
    for row in manifest:
        if row["assay"] == "cytokine":
            row["well"] = ";".join(wells_of[row["sample_id"]])

    # --- tables ------------------------------------------------------------------------------
    order = {v[0]: k for k, v in enumerate(VISITS)}
    man = pd.DataFrame(manifest)
    man = man.assign(_v=man["visit"].map(order)).sort_values(
        ["assay", "subject_id", "_v"], kind="stable").drop(columns="_v")
    write_csv_atomic(out / "manifest.csv", man)
    write_csv_atomic(out / "standards.csv", pd.DataFrame(_plates.standards_table()))
    write_csv_atomic(out / "clinical.csv", pd.DataFrame(clinical_rows))
    write_csv_atomic(out / "truth" / "flow_truth.csv", pd.DataFrame(flow_truth))
    if anomalies:
        write_csv_atomic(out / "truth" / "time_anomalies.csv", pd.DataFrame(
            anomaly_truth, columns=["sample_id", "kind", "first_event", "last_event",
                                        "n_events", "t_start_s", "t_end_s", "note"]))
    if controls:
        _write_controls(out / "controls", seed)
    write_csv_atomic(out / "truth" / "cytokine_truth.csv", pd.DataFrame(cyto_truth))
    write_csv_atomic(out / "truth" / "effects.csv", pd.DataFrame(_effects_rows()))
    if acquisition_drift is not None:
        write_csv_atomic(out / "truth" / "acquisition.csv", pd.DataFrame(acquisition))
    write_csv_atomic(out / "truth" / "plates.csv", pd.DataFrame([{
        "plate": plate, "file": f"plates/{plate}.csv", "top_mfi_factor": PLATE_SHIFTS[plate][0],
        "ec50_factor": PLATE_SHIFTS[plate][1], "standard_bias": STANDARD_BIAS[plate],
        "expected_result_factor": round(1.0 / STANDARD_BIAS[plate], 4),
        "subjects": ";".join(s.subject_id for s in subjects
                             if plate_of_subject[s.subject_id] == plate)}
        for plate in sorted(set(plate_of_subject.values()))]))
    write_csv_atomic(out / "truth" / "subjects.csv", pd.DataFrame([{
        "subject_id": s.subject_id, "age": s.age, "sex": s.sex, "response": round(s.response, 4),
        "pk": round(s.pk, 4), "attended_visits": ";".join(v for v, _ in s.visits),
        "stop_day": "" if s.stop_day is None else s.stop_day, "missed_doses": s.missed_doses,
        "plate": plate_of_subject[s.subject_id]} for s in subjects]))
    write_text_atomic(out / "strategy.yaml", STRATEGY_YAML)
    write_text_atomic(out / "strategy_adaptive.yaml", STRATEGY_ADAPTIVE_YAML)
    first_fcs = out / next(m["file"] for m in manifest if m["assay"] == "flow")
    _write_gatingml(out, first_fcs)
    write_text_atomic(out / "README.md", _readme(seed=seed, n_events=n_events,
                                                 n_subjects=n_subjects, subjects=subjects)
                      + (_README_ACQUISITION if controls or anomalies else ""))
    return out


def _anomaly(kind: str, events: np.ndarray, rng: np.random.Generator
             ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Put one acquisition anomaly into a tube's events; its truth rows (0-based event
    indices in file order, times in seconds)."""
    step = 0.01  # $TIMESTEP of the simulated files
    if kind == "clog":
        out, clog = _flow.add_clog(rng, events, **CLOG)
        idx = np.flatnonzero(clog)
        t = out[:, _flow.CHANNELS.index("Time")] * step
        gap_start = float(t[idx[0] - 1])
        return out, [
            {"kind": "clog_gap", "first_event": "", "last_event": "", "n_events": 0,
             "t_start_s": round(gap_start, 4), "t_end_s": round(float(t[idx[0]]), 4),
             "note": f"no events for {CLOG['gap_s']} s"},
            {"kind": "clog_burst", "first_event": int(idx[0]), "last_event": int(idx[-1]),
             "n_events": int(idx.size), "t_start_s": round(float(t[idx[0]]), 4),
             "t_end_s": round(float(t[idx[-1]]), 4),
             "note": "junk released by the clog (dim, small); not cells of the sample"}]
    out, factor = _flow.add_drift(events, **DRIFT)
    t = out[:, _flow.CHANNELS.index("Time")] * step
    rows = []
    for label, below in (("drift", 1.0), ("drift_below_0.6", 0.6)):
        idx = np.flatnonzero(factor < below)
        rows.append({"kind": label, "first_event": int(idx[0]), "last_event": int(idx[-1]),
                     "n_events": int(idx.size), "t_start_s": round(float(t[idx[0]]), 4),
                     "t_end_s": round(float(t[idx[-1]]), 4),
                     "note": f"fluorescence x {float(factor[idx[0]]):.3g} falling linearly to "
                             f"x {DRIFT['end_factor']} at the end"})
    return out, rows


def _write_controls(folder: Path, seed: int) -> None:
    """Single-stain controls (``Comp_<dye>.fcs``), ``Unstained.fcs`` and ``channels.csv``."""
    import pandas as pd

    from immunoprofile.flow.fcs_write import write_fcs

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, channel in enumerate([None, *_flow.FLUOR_CHANNELS]):
        dye = "Unstained" if channel is None else channel.removesuffix("-A")
        name = "Unstained.fcs" if channel is None else f"Comp_{dye}.fcs"
        events = _flow.simulate_control(_stream(seed, _CONTROL_STREAM, k), CONTROL_EVENTS,
                                        channel)
        write_fcs(folder / name, events, _flow.CHANNELS, _flow.MARKERS, text={
            "$CYT": "Simulated LSRFortessa (immunoprofile.simulate)", "$TIMESTEP": "0.01",
            "$DATE": "03-MAR-2025", "TUBE NAME": f"{dye} single stain" if channel else dye,
            "$SRC": "Compensation controls"})
        rows.append({"name": name, "channel": channel or "Unstained"})
    write_csv_atomic(folder / "channels.csv", pd.DataFrame(rows))


_README_ACQUISITION = """
## Compensation controls and acquisition anomalies

- `controls/`: one single-stain compensation control per fluorescence detector
  (`Comp_BV421.fcs` ... `Comp_APC-H7.fcs`, the dye on about half of the cells) and
  `Unstained.fcs`, 3,000 events each, drawn through the panel's true spillover
  (`immunoprofile.simulate.flow.SPILLOVER_MATRIX`, the same as the files' `$SPILLOVER`);
  `channels.csv` names each control's stained detector (as CytoExploreR's
  `Compensation-Channels.csv`). `make demo` computes the matrix from them
  (`flow.compensation: controls`).
- Clogs in `AD02_week4_flow.fcs` and `AD06_week12_flow.fcs`: no events for 0.8 s, then 500 junk
  events (dim, small) in 0.1 s; drift in `AD03_week8_flow.fcs`: every fluorescence signal sags
  linearly to 35 % over the last 40 % of the acquisition. `truth/time_anomalies.csv` gives, per file,
  the event range (0-based, file order) and times of each (`clog_gap`, `clog_burst`, `drift`,
  `drift_below_0.6`). The burst events are not cells of the sample: `truth/flow_truth.csv`
  counts the tube's own events only.
"""


def _effects_rows() -> list[dict]:
    rows = []

    def add(feature: str, assay: str, kind: str, up_or_down: str, fold: float, note: str,
            population: str = "", analyte: str = "") -> None:
        back = {"down": "up", "up": "down", "none": "none"}[up_or_down]
        rows.append({"feature": feature, "assay": assay, "population": population,
                     "analyte": analyte, "statistic": kind,
                     "runin_vs_treatment": up_or_down, "treatment_vs_posttreatment": back,
                     "negative_control": feature in NEGATIVE_CONTROLS,
                     "fold_at_full_effect": fold, "note": note})

    pops = _flow.POPULATIONS
    add("Th2", "flow", "pct_parent", "down", FLOW_EFFECTS["Th2"],
        "CRTH2+ % of CD4 T cells falls ~40 % by week 12, recovers after", pops["Th2"][0])
    add("Treg", "flow", "pct_parent", "up", FLOW_EFFECTS["Treg"],
        "CD25+CD127lo % of CD4 T cells rises modestly on drug", pops["Treg"][0])
    add("CD4-CD8+", "flow", "pct_parent", "none", 1.0,
        "CD8 % of CD3 T cells: negative control, no effect simulated", pops["CD4-CD8+"][0])
    add("CD4+CD8-", "flow", "pct_parent", "none", 1.0, "CD4 % of CD3 T cells: no effect simulated",
        pops["CD4+CD8-"][0])
    add("CD3+", "flow", "pct_parent", "none", 1.0, "T cells % of live lymphocytes: no effect",
        pops["CD3+"][0])
    for analyte in _plates.ANALYTES:
        name = analyte.name
        if name == IL1RA_ANALYTE:
            add(name, "cytokine", "concentration", "up", 1 + IL1RA_DRUG_FOLD,
                "anakinra is recombinant IL-1Ra: the bead measures the drug (PK readout)",
                analyte=name)
        elif name in CYTOKINE_EFFECTS:
            add(name, "cytokine", "concentration", "down", CYTOKINE_EFFECTS[name],
                "falls during treatment, recovers after", analyte=name)
        else:
            note = "negative control, no effect simulated" if name in NEGATIVE_CONTROLS else \
                "no effect simulated"
            if name in ("IL-4", "IL-5"):
                note += "; mostly below LLOQ"
            add(name, "cytokine", "concentration", "none", 1.0, note, analyte=name)
    add("SCORAD", "clinical", "scorad", "down", 0.55,
        "falls with each subject's responsiveness; >= 30 % in responders", )
    return rows


def resolve_markers(strategy: Any, fcs_path: str | os.PathLike[str]) -> Any:
    """Return ``strategy`` with every marker-named dimension replaced by its ``$PnN`` channel.

    Gating-ML names detectors, not markers; the mapping is read from one FCS file of the panel.
    """
    from immunoprofile.flow.fcs import read_fcs_metadata
    from immunoprofile.flow.gates import Dimension, map_dimensions

    meta = read_fcs_metadata(fcs_path)

    def fix(dim: Any) -> Any:
        if isinstance(dim, Dimension):
            return dataclasses.replace(dim, channel=meta.channels[meta.channel_index(dim.channel)])
        return dim

    return map_dimensions(strategy, fix)


def _write_gatingml(out: Path, fcs_path: Path) -> None:
    """Write strategy.gatingml.xml: the YAML strategy with markers resolved to channels."""
    from immunoprofile.flow.gatingml import write_gatingml
    from immunoprofile.flow.yaml_strategy import read_yaml_strategy

    strategy = resolve_markers(read_yaml_strategy(out / "strategy.yaml"), fcs_path)
    write_gatingml(strategy, out / "strategy.gatingml.xml")


def _readme(*, seed: int, n_events: int, n_subjects: int, subjects: list[SubjectDesign]) -> str:
    missing = [(s.subject_id, v[0]) for s in subjects for v in VISITS
               if v[0] not in {x for x, _ in s.visits} and v[1] <= 56]
    dropouts = [s.subject_id for s in subjects if s.stop_day is not None]
    plates = ", ".join(CYTOKINE_VISITS)
    lines = [
        "# Example trial: anakinra in severe atopic dermatitis (simulated)",
        "",
        "Everything here is generated, deterministically, by",
        "",
        "```",
        f"python -m immunoprofile.simulate example_data --seed {seed} --events {n_events}"
        + ("" if n_subjects == 8 else f" --subjects {n_subjects}"),
        "```",
        "",
        "(same seed and sizes give byte-identical files with the same numpy version). `make demo` "
        "runs the whole analysis on it (`pipelines/example_trial.yaml`). It is a small, realistic "
        "stand-in for the",
        f"trial: {n_subjects} subjects aged 10-30 with severe AD, an 8-week run-in, daily anakinra",
        "3 mg/kg for 12 weeks, 12 weeks of follow-up. Visits: screening (~day -56), week0 (day 0, the",
        "pre-dose baseline), week1, week2, week4, week8, week12 (day 84), week16, week20, week24",
        "(day 168). Periods: run-in (screening, week0), treatment (week1-week12), post-treatment",
        "(week16-week24). Study days carry a small jitter inside the visit windows.",
        "",
        f"Missing data by design: {', '.join(f'{s} misses {v}' for s, v in missing) or 'none'};",
        f"{', '.join(dropouts) or 'nobody'} drops out after week8 (no later files; stopped dosing at",
        "day 52, so not evaluable: fewer than 67 of 84 doses).",
        "",
        "## Files",
        "",
        "| path | what |",
        "|---|---|",
        f"| `flow/<subject>_<visit>_flow.fcs` | FCS 3.1, float32, {n_events} events, 13 channels "
        "(FSC-A, FSC-H, SSC-A, 9 fluorescence detectors named by fluorochrome with the marker in "
        "`$PnS`, Time). Stored **uncompensated** with the panel's `$SPILLOVER`. `$DATE` is the visit "
        "date; `$SRC` the subject, `$SMNO` the sample id. |",
        "| `plates/plate1.csv`, `plates/plate2.csv` | Luminex MAGPIX xPONENT 4.2 CSV exports, "
        "analysis off (Median, Net MFI, Count, Avg Net MFI, Units, Per Bead Count, Dilution Factor "
        "blocks). Each plate: 2 background wells (`Background0`), `Standard1`..`Standard8` "
        "(4-fold series) in duplicate, kit controls `Control1`/`Control2` in duplicate, the bridging "
        "pool `BridgePool` (same serum on both plates) in duplicate, then serum samples in duplicate "
        "(dilution factor 2). Subjects AD01-AD04 on plate1, AD05-AD08 on plate2. The export's "
        "`Batch` name is the plate id (`plate1`), as in the manifest's `plate` column. |",
        "| `standards.csv` | Kit standards table (`analyte, standard, expected_conc, unit, "
        "control_low, control_high`): the expected concentrations of the standards and the "
        "acceptance ranges of the controls, which analysis-off exports do not carry. |",
        "| `manifest.csv` | `sample_id, subject_id, visit, study_day, period, assay (flow or "
        "cytokine), file (relative to this folder), plate, well` (replicate wells joined by `;`). "
        "The plate export's `Sample` column is the manifest `sample_id`; kit controls and "
        "`BridgePool` are on the plates but not in the manifest (QC samples). |",
        "| `clinical.csv` | `subject_id, visit, study_day, scorad, doses_received, age, sex`; "
        "`doses_received` is **cumulative** (doses taken from day 1 up to that visit; 84 "
        "scheduled). |",
        "| `strategy.yaml` | The gating strategy in the readable YAML format (commented; the "
        "documentation example). |",
        "| `strategy.gatingml.xml` | The same strategy as Gating-ML 2.0 (written by "
        "`immunoprofile.flow.gatingml.write_gatingml`), markers resolved to detector names "
        "(CD4 -> BV605-A) from the first FCS file; gives identical counts on every file. |",
        "| `strategy_adaptive.yaml` | The same populations with data-driven gates (a singlet band "
        "fitted per file; every fluorescence cut carried along with a landmark population, so "
        "it follows the day's detector gain), coordinates in data units. `make demo` uses it. |",
        "| `truth/` | What the simulation put in (below). |",
        "",
        f"Cytokines were measured at a subset of visits ({plates}): two 96-well plates hold 36 "
        "duplicate samples each, not all 75 subject-visits.",
        "",
        "## Truth",
        "",
        "- `truth/flow_truth.csv`: per flow sample and population (`population` = the gate path the "
        "example strategy produces, e.g. `/Cells/Singlets/Live/CD3+/CD4+CD8-/Th2`), "
        "`true_pct_parent` (the simulated biological frequency), and `count`, `parent_count`, "
        "`realized_pct_parent` counted from each event's true class in that file (what a perfect "
        "gate would report; sampling noise included). The strategy's gates recover "
        "`realized_pct_parent` within about 1 percentage point.",
        "- `truth/cytokine_truth.csv`: true serum concentration (pg/mL, undiluted) per sample and "
        "analyte, and for the bridging pool.",
        "- `truth/effects.csv`: per feature the direction simulated for run-in -> treatment and "
        "treatment -> post-treatment (`up`, `down`, `none`), the negative controls "
        "(`negative_control`), and the fold change at full effect.",
        "- `truth/plates.csv`: per plate the curve shifts (absorbed by the plate's own standards) "
        "and `standard_bias`, the true/labelled concentration of its standard series: plate2's "
        "standards are 8 % too concentrated, so its results read ~7 % low "
        "(`expected_result_factor`) until normalised with the bridging pool.",
        "- `truth/subjects.csv`: per subject the drawn responsiveness, drug exposure (PK) factor, "
        "attended visits, plate, missed doses.",
        "- `truth/acquisition.csv`: per flow file the acquisition date and `fluorescence_factor`, "
        "the cytometer's fluorescence gain that day (log-uniform 0.8-1.25, the same for every "
        "fluorescence detector; scatter and spillover unchanged). The event truth above does not "
        "depend on it; fixed gate coordinates see the populations move, data-driven gates follow "
        "them.",
        "",
        "Effects (scaled by each subject's responsiveness; they build up over the first month of "
        "dosing and wane after the last dose):",
        "",
        "- Th2 (CRTH2+) % of CD4 T cells falls ~40 % by week 12 and recovers; Treg (CD25+CD127lo) "
        "% of CD4 rises ~25 %; CD8 % of CD3 does not move (negative control).",
        "- IL-1RA rises ~30-fold during treatment: anakinra *is* recombinant IL-1Ra, so the bead "
        "measures the drug (a PK readout, not a biomarker). IL-13 and CCL17 fall ~55 % and "
        "recover. IL-4 and IL-6 do not move (negative controls); IL-4 and IL-5 are mostly below "
        "the LLOQ. IL-1b, IL-5, IL-31, TNF-a, IFN-g do not move.",
        "- SCORAD falls by >= 30 % at week 12 in the more responsive subjects, partly rebounds.",
        "- The effect wanes after the last dose (25 % of it left at week16, 8 % at week20, none at "
        "week24), so the post-treatment period keeps a small residual of each effect.",
        "",
        "Realism: debris, doublets (FSC-A > FSC-H), dead cells bright for the viability dye, "
        "monocytes (CD4 dim), basophils (CRTH2+ but CD3-), log-normal intensities, spillover and "
        "photon/electronic noise in the detectors. Plates: 5PL curves with per-plate shifts "
        "(plate2 has a ~14 % lower top and ~12 % higher EC50), ~6 % CV, bead counts 40-125 with a "
        "few low-bead wells (< 35).",
        "",
    ]
    return "\n".join(lines)
