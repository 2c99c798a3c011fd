"""Small synthetic trials for the study tests: the tidy outputs of gate/cytokines and a manifest.

The generator is deliberately simple and its truth explicit: Th2 (% of CD4) falls by 40 % on
treatment and recovers, CD8 (% of CD3) does not move, IL-13 falls, IL-1RA (the drug) rises
many-fold, IL-6 does not move; S03 misses week 2, S08 drops out after week 8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from immunoprofile.study.design import DEFAULT_DESIGN

SUBJECTS = [f"S{i:02d}" for i in range(1, 9)]
VISITS = DEFAULT_DESIGN.visit_names
CYTO_VISITS = ["week0", "week2", "week4", "week8", "week12", "week16", "week24"]
POPULATIONS = [("/Cells", "root"), ("/Cells/CD3+", "/Cells"), ("/Cells/CD3+/CD4+", "/Cells/CD3+"),
               ("/Cells/CD3+/CD8+", "/Cells/CD3+"), ("/Cells/CD3+/CD4+/Th2", "/Cells/CD3+/CD4+")]


def _effect(visit: str, size: float) -> float:
    """Multiplicative effect: ramps in during treatment, gone after."""
    period = DEFAULT_DESIGN.period_for_visit(visit)
    if period == "treatment":
        day = DEFAULT_DESIGN.nominal_day(visit)
        return 1.0 + size * min(1.0, day / 28.0)
    return 1.0


def attended(subject: str, visit: str) -> bool:
    if subject == "S03" and visit == "week2":
        return False
    if subject == "S08" and VISITS.index(visit) > VISITS.index("week8"):
        return False
    return True


def make_trial(root: Path, *, seed: int = 7) -> dict[str, Path]:
    """Write manifest.csv, flow/populations.csv, cyto/concentrations.csv (+ curves), clinical.csv."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "flow").mkdir(exist_ok=True)
    (root / "cyto").mkdir(exist_ok=True)
    manifest, pops, conc, clinical = [], [], [], []
    for k, s in enumerate(SUBJECTS):
        th2_base = rng.uniform(4, 8)
        cd8_base = rng.uniform(25, 35)
        il13_base = rng.uniform(20, 60)
        il6_base = rng.uniform(2, 5)
        scorad0 = rng.uniform(50, 70)
        response = rng.uniform(0.1, 0.6)
        for v in VISITS:
            day = DEFAULT_DESIGN.nominal_day(v) + int(rng.integers(-1, 2)) * (v != "week0")
            if v == "week0":
                day = 0
            clinical.append({"subject_id": s, "visit": v,
                             "scorad": round(scorad0 * (1 - response * (DEFAULT_DESIGN.period_for_visit(v) == "treatment")), 1),
                             "doses_received": 60 + 3 * k if v == "week12" else (0 if VISITS.index(v) < 2 else 7),
                             "age": 12 + k, "sex": "F" if k % 2 else "M"})
            if not attended(s, v):
                continue
            sid = f"{s}_{v}"
            manifest.append({"sample_id": f"{sid}_flow", "subject_id": s, "visit": v, "study_day": day,
                             "period": "", "assay": "flow", "file": f"fcs/{sid}.fcs", "plate": "", "well": ""})
            th2 = th2_base * _effect(v, -0.4) * rng.lognormal(0, 0.05)
            cd8 = cd8_base * rng.lognormal(0, 0.05)
            pct = {"/Cells": 100.0, "/Cells/CD3+": 60.0 * rng.lognormal(0, 0.03),
                   "/Cells/CD3+/CD4+": 100 - cd8 - 5, "/Cells/CD3+/CD8+": cd8, "/Cells/CD3+/CD4+/Th2": th2}
            for pop, parent in POPULATIONS:
                pops.append({"sample_id": sid, "file": f"{sid}.fcs", "population": pop, "parent": parent,
                             "count": int(5000 * pct[pop] / 100), "pct_parent": pct[pop],
                             "pct_total": pct[pop] / 2, "mfi_CD4": 1000 * rng.lognormal(0, 0.1),
                             "gmean_CD4": 900.0})
            if v in CYTO_VISITS:
                cid = f"{sid}_serum"
                plate = "P1" if k < 4 else "P2"
                wells = [f"{'ABCDEFGH'[k]}{2 * CYTO_VISITS.index(v) + 1}",
                         f"{'ABCDEFGH'[k]}{2 * CYTO_VISITS.index(v) + 2}"]
                manifest.append({"sample_id": cid, "subject_id": s, "visit": v, "study_day": day,
                                 "period": "", "assay": "cytokine", "file": f"plates/{plate}.csv",
                                 "plate": plate, "well": ";".join(wells)})
                truth = {"IL-13": il13_base * _effect(v, -0.5), "IL-6": il6_base,
                         "IL-1RA": 200.0 * (30.0 if DEFAULT_DESIGN.period_for_visit(v) == "treatment" else 1.0),
                         "IL-4": 0.5}
                for well in wells:
                    for analyte, c in truth.items():
                        value = c * rng.lognormal(0, 0.06)
                        flag = "ok"
                        if analyte == "IL-4":
                            value, flag = (np.nan, "below_curve") if k % 2 else (0.4, "<LLOQ")
                        conc.append({"sample_id": cid, "plate": plate, "well": well, "analyte": analyte,
                                     "mfi": 100.0, "net_mfi": 90.0, "concentration": value, "unit": "pg/mL",
                                     "dilution": 2, "flag": flag, "sample_type": "unknown"})
    for plate in ("P1", "P2"):
        for analyte in ("IL-13", "IL-6", "IL-1RA", "IL-4"):
            conc.append({"sample_id": "Bridge", "plate": plate, "well": "H11", "analyte": analyte, "mfi": 50.0,
                         "net_mfi": 45.0, "concentration": 10.0, "unit": "pg/mL", "dilution": 2, "flag": "ok",
                         "sample_type": "control"})
            conc.append({"sample_id": "Standard1", "plate": plate, "well": "A12", "analyte": analyte,
                         "mfi": 5e4, "net_mfi": 5e4, "concentration": 1e4, "unit": "pg/mL", "dilution": 1,
                         "flag": "ok", "sample_type": "standard"})
    curves = pd.DataFrame([{"plate": p, "analyte": a, "model": "5pl", "A": 10.0, "B": 3e4, "C": 500.0,
                            "D": 1.1, "F": 0.9, "lloq": 1.0, "uloq": 1e4, "message": "ok"}
                           for p in ("P1", "P2") for a in ("IL-13", "IL-6", "IL-1RA", "IL-4")])
    paths = {"root": root, "manifest": root / "manifest.csv", "flow": root / "flow",
             "cyto": root / "cyto", "clinical": root / "clinical.csv"}
    pd.DataFrame(manifest).to_csv(paths["manifest"], index=False)
    pd.DataFrame(pops).to_csv(root / "flow" / "populations.csv", index=False)
    pd.DataFrame(conc).to_csv(root / "cyto" / "concentrations.csv", index=False)
    curves.to_csv(root / "cyto" / "standard_curves.csv", index=False)
    pd.DataFrame(clinical).to_csv(paths["clinical"], index=False)
    return paths


@pytest.fixture(scope="session")
def trial_factory():
    """:func:`make_trial` itself, for tests that need their own, modified copy."""
    return make_trial


@pytest.fixture(scope="session")
def trial(tmp_path_factory) -> dict[str, Path]:
    """A synthetic trial's inputs (written once per session)."""
    return make_trial(tmp_path_factory.mktemp("trial"))


@pytest.fixture(scope="session")
def study(trial):
    """The synthetic trial assembled (session-wide; tests must not modify it)."""
    from immunoprofile.study.matrix import assemble

    return assemble(trial["manifest"], design="example-trial", flow_dir=trial["flow"], cytokine_dir=trial["cyto"],
                    clinical=trial["clinical"])
