"""Simulated clinical course: SCORAD per visit and cumulative anakinra doses.

Contract: :func:`simulate_clinical` returns one row per attended subject-visit with
``subject_id, visit, study_day, scorad, doses_received`` (cumulative doses taken by that visit;
84 scheduled, one daily from day 1 to day 84), ``age, sex``; SCORAD falls with the subject's drug
responsiveness during treatment and partly rebounds after.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["SCHEDULED_DOSES", "simulate_clinical"]

SCHEDULED_DOSES = 84


def simulate_clinical(rng: np.random.Generator, *, subject_id: str, age: int, sex: str,
                      visits: Sequence[tuple[str, int]], exposure: Mapping[str, float],
                      response: float, missed_doses: int, stop_day: int | None) -> list[dict]:
    """Clinical rows of one subject.

    Parameters
    ----------
    rng
        Seeded generator.
    subject_id, age, sex
        Demographics.
    visits
        ``(visit, study_day)`` of the visits the subject attended.
    exposure
        Visit -> drug effect level 0-1 (the trial's shared effect time course).
    response
        Fractional SCORAD reduction at full effect (e.g. 0.45 for a responder).
    missed_doses
        Doses skipped over the treatment period (spread uniformly).
    stop_day
        Last dosing day for a subject who stopped early (``None`` = completed).
    """
    baseline = float(rng.uniform(52, 78))  # severe AD: SCORAD > 50
    last_day = SCHEDULED_DOSES if stop_day is None else stop_day
    rows = []
    for visit, day in visits:
        effect = exposure.get(visit, 0.0) * response
        scorad = baseline * (1 - effect) * float(np.exp(0.05 * rng.standard_normal()))
        taken_days = int(np.clip(min(day, last_day), 0, SCHEDULED_DOSES))
        missed = int(round(missed_doses * taken_days / SCHEDULED_DOSES))
        rows.append({"subject_id": subject_id, "visit": visit, "study_day": day,
                     "scorad": round(min(scorad, 103.0), 1),
                     "doses_received": taken_days - missed, "age": age, "sex": sex})
    return rows
