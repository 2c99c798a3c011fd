"""The trial protocol as data: periods, visits and their windows, dosing and response thresholds.

Contract: a :class:`StudyDesign` answers "which visit / period does this study day belong to?" and
"in what order do visits and periods come?"; every other study function takes one. There is no
default protocol: a design is given explicitly — a :class:`StudyDesign`, the name of a known
protocol (:data:`PROTOCOLS`: ``example-trial``, the bundled anakinra-in-atopic-dermatitis trial),
or a design file / mapping with the keys of a pipeline config's ``design:`` section — and
:func:`resolve_design` turns any of those into a :class:`StudyDesign` (``None`` is an
:class:`~immunoprofile.errors.InputError` saying how to give one).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["Period", "Visit", "StudyDesign", "EXAMPLE_TRIAL_DESIGN", "DEFAULT_DESIGN",
           "PROTOCOLS", "DesignSpec", "resolve_design", "design_from_mapping",
           "PERIOD_ALIASES"]

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


#: The bundled example trial's protocol (anakinra in atopic dermatitis: screening to week 24,
#: daily dosing for 84 days, evaluable with >= 67 doses, responder at >= 30 % SCORAD reduction).
EXAMPLE_TRIAL_DESIGN = StudyDesign()
#: Former name of :data:`EXAMPLE_TRIAL_DESIGN`; no function falls back to it any more.
DEFAULT_DESIGN = EXAMPLE_TRIAL_DESIGN

#: Protocols known by name (``design: {protocol: NAME}``, ``--design NAME``).
PROTOCOLS: dict[str, StudyDesign] = {"example-trial": EXAMPLE_TRIAL_DESIGN}

#: What :func:`resolve_design` takes.
DesignSpec = StudyDesign | str | os.PathLike[str] | Mapping[str, Any]

#: Without a named ``protocol`` to start from, a design states all of these (``tolerance_days``
#: may be left out: 14).
_REQUIRED = ("periods", "visits", "baseline_visit", "end_of_treatment_visit", "planned_doses",
             "min_doses", "responder_reduction_pct")
_KEYS = ("protocol", *_REQUIRED, "tolerance_days")

_HOW = ("name the protocol (design: {protocol: example-trial} in a pipeline config, "
        "--design example-trial, design='example-trial'), or give a design file with periods "
        "and visits")


def resolve_design(design: DesignSpec | None, *, what: str = "this step") -> StudyDesign:
    """The :class:`StudyDesign` a user named.

    Parameters
    ----------
    design
        A :class:`StudyDesign`; the name of a protocol in :data:`PROTOCOLS`; a YAML/JSON design
        file; or a mapping (:func:`design_from_mapping`).
    what
        What needs the design, for the message when none is given.

    Raises
    ------
    InputError
        When ``design`` is ``None`` (there is no default protocol), names no known protocol
        or file, or describes an inconsistent design.
    """
    if isinstance(design, StudyDesign):
        return design
    if design is None:
        raise InputError(None, f"no study design given for {what}: {_HOW}")
    if isinstance(design, Mapping):
        return design_from_mapping(design)
    text = os.fspath(design)
    if text in PROTOCOLS:
        return PROTOCOLS[text]
    path = Path(text)
    if not path.is_file():
        raise InputError(path, f"not a known protocol ({', '.join(PROTOCOLS)}) nor a design file")
    import yaml  # JSON is YAML too

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read design file ({' '.join(str(exc).split())})") from None
    if isinstance(data, Mapping) and isinstance(data.get("design"), Mapping):
        data = data["design"]  # a pipeline config: its design section
    if not isinstance(data, Mapping):
        raise InputError(path, "a design file holds a mapping (periods, visits, ...)")
    return design_from_mapping(data, source=path)


def design_from_mapping(data: Mapping[str, Any], *,
                        source: str | os.PathLike[str] | None = None) -> StudyDesign:
    """A design from the keys of a pipeline config's ``design:`` section.

    ``protocol`` (a name in :data:`PROTOCOLS`) is the starting point the other keys change;
    without it the mapping states every protocol fact: ``periods`` (``{name: [first day, last
    day]}``, in order), ``visits`` (``{name: {day, before, after}}``, in order),
    ``baseline_visit``, ``end_of_treatment_visit``, ``planned_doses``, ``min_doses`` and
    ``responder_reduction_pct`` (``tolerance_days`` may be left out).

    Raises
    ------
    InputError
        On an unknown key or protocol, a missing fact, or an inconsistent design.
    """
    given = {k: v for k, v in data.items() if v is not None}
    unknown = sorted(set(given) - set(_KEYS))
    if unknown:
        raise InputError(source, f"unknown design key(s) {', '.join(map(str, unknown))}; "
                                 f"allowed: {', '.join(_KEYS)}")
    protocol = given.pop("protocol", None)
    if protocol is not None and str(protocol) not in PROTOCOLS:
        raise InputError(source, f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    missing = [k for k in _REQUIRED if k not in given]
    if protocol is None and missing:
        raise InputError(source, f"design lacks {', '.join(missing)} (or name a protocol to "
                                 f"start from: {', '.join(PROTOCOLS)})")
    changes: dict[str, Any] = {}
    try:
        if "periods" in given:
            changes["periods"] = tuple(Period(str(n), int(a), int(b))
                                       for n, (a, b) in dict(given.pop("periods")).items())
        if "visits" in given:
            changes["visits"] = tuple(
                Visit(str(n), int(_get(w, "day")), int(_get(w, "before", 3)),
                      int(_get(w, "after", 3)))
                for n, w in dict(given.pop("visits")).items())
        names = {f.name for f in fields(StudyDesign)}
        changes.update({k: v for k, v in given.items() if k in names})
        base = PROTOCOLS[str(protocol)] if protocol is not None else None
        return base.with_changes(**changes) if base is not None else StudyDesign(**changes)
    except (TypeError, ValueError, KeyError) as exc:  # overlapping periods, unknown visit ...
        raise InputError(source, f"inconsistent design: {exc}") from None


def _get(window: Any, key: str, default: int | None = None) -> Any:
    value = window.get(key, default) if isinstance(window, Mapping) else getattr(window, key,
                                                                                  default)
    if value is None:
        raise KeyError(f"visit window lacks {key!r}")
    return value
