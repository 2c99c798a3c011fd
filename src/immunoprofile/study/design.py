"""The trial protocol as data: periods, visits and their windows, dosing and response thresholds.

Contract: a :class:`StudyDesign` answers "which visit / period does this study day belong to?" and
"in what order do visits and periods come?"; every other study function takes one (``design=None``
means :data:`DEFAULT_DESIGN`, the anakinra-in-atopic-dermatitis protocol).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["Period", "Visit", "StudyDesign", "DEFAULT_DESIGN", "PERIOD_ALIASES"]

# Labels people write for a period that mean one of ours ("screening belongs to the run-in").
PERIOD_ALIASES: dict[str, str] = {
    "screening": "run-in",
    "run_in": "run-in",
    "runin": "run-in",
    "baseline": "run-in",
    "on-treatment": "treatment",
    "on_treatment": "treatment",
    "post_treatment": "post-treatment",
    "posttreatment": "post-treatment",
    "follow-up": "post-treatment",
    "followup": "post-treatment",
}


@dataclass(frozen=True)
class Period:
    """A protocol period: study days ``start`` … ``end`` inclusive (day 0 = first-dose day)."""

    name: str
    start: int
    end: int

    def contains(self, day: float) -> bool:
        """Whether ``day`` lies inside the period (inclusive)."""
        return self.start <= day <= self.end


@dataclass(frozen=True)
class Visit:
    """A protocol visit: its nominal study day and the tolerated window ``nominal - before`` … ``nominal + after``."""

    name: str
    nominal_day: int
    before: int = 3
    after: int = 3

    def in_window(self, day: float) -> bool:
        """Whether ``day`` lies within the visit window."""
        return self.nominal_day - self.before <= day <= self.nominal_day + self.after


def _default_visits() -> tuple[Visit, ...]:
    # Screening is scheduled loosely (about 8 weeks before baseline); week 0 is the pre-dose
    # baseline, so its window cannot extend past day 0 into dosing.
    return (
        Visit("screening", -56, 14, 14),
        Visit("week0", 0, 7, 0),
        Visit("week1", 7, 2, 2),
        Visit("week2", 14, 3, 3),
        Visit("week4", 28, 4, 4),
        Visit("week8", 56, 5, 5),
        Visit("week12", 84, 5, 5),
        Visit("week16", 112, 7, 7),
        Visit("week20", 140, 7, 7),
        Visit("week24", 168, 7, 7),
    )


def _default_periods() -> tuple[Period, ...]:
    return (Period("run-in", -56, 0), Period("treatment", 1, 84), Period("post-treatment", 85, 168))


@dataclass(frozen=True)
class StudyDesign:
    """Protocol periods and visits plus the dosing / response rules of the trial.

    Parameters
    ----------
    periods
        Periods in protocol order (non-overlapping day ranges).
    visits
        Visits in protocol order, each with its nominal day and window.
    baseline_visit
        The pre-dose reference for ``change_from_baseline`` and SCORAD change.
    end_of_treatment_visit
        The visit at which the SCORAD response is judged.
    planned_doses
        Doses planned over the treatment period (daily for 84 days).
    min_doses
        Doses needed to be evaluable (67 of 84, i.e. 80 %).
    responder_reduction_pct
        SCORAD reduction from baseline (percent) that makes a responder.
    tolerance_days
        How far outside the first/last period a study day may lie and still count as that period
        (screening is often scheduled a little before day -56, follow-up a little after day 168).
    """

    periods: tuple[Period, ...] = field(default_factory=_default_periods)
    visits: tuple[Visit, ...] = field(default_factory=_default_visits)
    baseline_visit: str = "week0"
    end_of_treatment_visit: str = "week12"
    planned_doses: int = 84
    min_doses: int = 67
    responder_reduction_pct: float = 30.0
    tolerance_days: int = 14

    def __post_init__(self) -> None:
        names = [v.name for v in self.visits]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate visit names in design: {names}")
        for a, b in zip(self.periods, self.periods[1:]):
            if a.end >= b.start:
                raise ValueError(f"periods {a.name!r} and {b.name!r} overlap")
        for label in (self.baseline_visit, self.end_of_treatment_visit):
            if label not in names:
                raise ValueError(f"visit {label!r} is not one of the design's visits {names}")

    # --- orderings -------------------------------------------------------------------------
    @property
    def visit_names(self) -> list[str]:
        """Visit labels in protocol order."""
        return [v.name for v in self.visits]

    @property
    def period_names(self) -> list[str]:
        """Period labels in protocol order."""
        return [p.name for p in self.periods]

    def visit(self, name: str) -> Visit:
        """The :class:`Visit` called ``name`` (``KeyError`` when unknown)."""
        for v in self.visits:
            if v.name == name:
                return v
        raise KeyError(name)

    def nominal_day(self, visit: str) -> int:
        """Nominal study day of ``visit``."""
        return self.visit(visit).nominal_day

    # --- classification --------------------------------------------------------------------
    def period_for_day(self, day: float) -> str | None:
        """The period a study day belongs to, or ``None`` when it lies outside every period.

        Days up to ``tolerance_days`` before the first period or after the last one are given
        to that period (screening / late follow-up visits).
        """
        if day is None or (isinstance(day, float) and math.isnan(day)):
            return None
        for period in self.periods:
            if period.contains(day):
                return period.name
        first, last = self.periods[0], self.periods[-1]
        if first.start - self.tolerance_days <= day < first.start:
            return first.name
        if last.end < day <= last.end + self.tolerance_days:
            return last.name
        return None

    def period_for_visit(self, visit: str) -> str | None:
        """The period of a visit's nominal day."""
        return self.period_for_day(self.nominal_day(visit))

    def period_for(self, visit: str | None, day: float | None) -> str | None:
        """Period of a sample: by its visit when the day is inside that visit's window, else by day.

        A week-12 sample drawn on day 86 is still the end-of-treatment sample: visit windows exist
        so that a few days' scheduling jitter never moves a sample across a period boundary.
        """
        known = visit is not None and visit in self.visit_names
        has_day = day is not None and not (isinstance(day, float) and math.isnan(day))
        if known and (not has_day or self.visit(visit).in_window(day)):
            return self.period_for_visit(visit)
        return self.period_for_day(day) if has_day else None

    def window_deviation(self, visit: str, day: float) -> int:
        """Days outside ``visit``'s window (0 when inside; negative = early, positive = late)."""
        v = self.visit(visit)
        if day < v.nominal_day - v.before:
            return int(math.floor(day - (v.nominal_day - v.before)))
        if day > v.nominal_day + v.after:
            return int(math.ceil(day - (v.nominal_day + v.after)))
        return 0

    @staticmethod
    def normalise_period(label: str) -> str:
        """Map a period label to our spelling (``"screening"`` → ``"run-in"``); unknown labels pass through."""
        key = label.strip().lower()
        return PERIOD_ALIASES.get(key, key)

    # --- (de)serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/uns-safe description (no nested lists of dicts)."""
        return {
            "period_names": self.period_names,
            "period_start": [p.start for p in self.periods],
            "period_end": [p.end for p in self.periods],
            "visit_names": self.visit_names,
            "visit_nominal_day": [v.nominal_day for v in self.visits],
            "visit_before": [v.before for v in self.visits],
            "visit_after": [v.after for v in self.visits],
            "baseline_visit": self.baseline_visit,
            "end_of_treatment_visit": self.end_of_treatment_visit,
            "planned_doses": self.planned_doses,
            "min_doses": self.min_doses,
            "responder_reduction_pct": self.responder_reduction_pct,
            "tolerance_days": self.tolerance_days,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudyDesign:
        """Inverse of :meth:`to_dict` (missing keys keep their defaults)."""
        kwargs: dict[str, Any] = {}
        if "period_names" in data:
            kwargs["periods"] = tuple(
                Period(str(n), int(s), int(e))
                for n, s, e in zip(data["period_names"], data["period_start"], data["period_end"]))
        if "visit_names" in data:
            kwargs["visits"] = tuple(
                Visit(str(n), int(d), int(b), int(a))
                for n, d, b, a in zip(data["visit_names"], data["visit_nominal_day"],
                                      data["visit_before"], data["visit_after"]))
        for key in ("baseline_visit", "end_of_treatment_visit"):
            if key in data:
                kwargs[key] = str(data[key])
        for key in ("planned_doses", "min_doses", "tolerance_days"):
            if key in data:
                kwargs[key] = int(data[key])
        if "responder_reduction_pct" in data:
            kwargs["responder_reduction_pct"] = float(data["responder_reduction_pct"])
        return cls(**kwargs)

    def with_changes(self, **changes: Any) -> StudyDesign:
        """A copy with some fields replaced."""
        return replace(self, **changes)


DEFAULT_DESIGN = StudyDesign()
