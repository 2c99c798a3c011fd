"""The clinical table: SCORAD per subject and visit, dosing, demographics, and what follows from them.

Contract: :func:`read_clinical` returns the validated per-visit table; :func:`clinical_summary`
derives one row per subject (evaluable = doses ≥ ``design.min_doses``; SCORAD percent change from
the baseline visit to the end-of-treatment visit; responder = reduction ≥ 30 %).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..errors import InputError
from .design import DesignSpec, resolve_design
from .manifest import ManifestError, ManifestProblem

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["read_clinical", "clinical_summary", "CLINICAL_COLUMNS", "SUBJECT_COLUMNS"]

CLINICAL_COLUMNS: tuple[str, ...] = ("subject_id", "visit", "scorad")
SUBJECT_COLUMNS: tuple[str, ...] = (
    "age", "sex", "total_doses", "evaluable", "scorad_baseline", "scorad_end_of_treatment",
    "scorad_pct_change", "responder",
)


def read_clinical(path: str | os.PathLike[str] | pd.DataFrame, *,
                  design: DesignSpec | None = None) -> pd.DataFrame:
    """Read and validate the clinical table (all problems reported at once).

    Parameters
    ----------
    path
        CSV (or a DataFrame) with ``subject_id, visit, scorad`` and optionally
        ``doses_received`` (cumulative doses taken by that visit), ``age``, ``sex``.
    design
        Protocol whose visit labels are allowed (required:
        :func:`~immunoprofile.study.design.resolve_design`).

    Returns
    -------
    DataFrame
        ``subject_id, visit, scorad, doses_received, age, sex`` (+ any extra columns), numeric
        columns as float, sorted by subject and protocol visit order.

    Raises
    ------
    ManifestError
        Listing every bad line (an ``InputError``).
    """
    import pandas as pd

    design = resolve_design(design, what="the clinical table")
    if isinstance(path, pd.DataFrame):
        frame, where = path.copy().astype(object), None
    else:
        where = Path(path)
        if not where.is_file():
            raise InputError(where, "clinical table not found")
        try:
            frame = pd.read_csv(where, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                                skipinitialspace=True)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise InputError(where, f"not a readable CSV clinical table: {exc}") from exc
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in CLINICAL_COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(where, [ManifestProblem(1, ",".join(missing), ",".join(frame.columns),
                                                    "required column(s) missing",
                                                    ", ".join(CLINICAL_COLUMNS))])
    for col in ("doses_received", "age", "sex"):
        if col not in frame.columns:
            frame[col] = ""
    frame = frame.reset_index(drop=True)
    problems: list[ManifestProblem] = []
    visits = design.visit_names

    def number(line: int, col: str, value: object, *, lo: float, hi: float) -> float:
        text = "" if value is None or (isinstance(value, float) and value != value) else str(value).strip()
        if text == "" or text.upper() in {"NA", "NAN"}:
            return float("nan")
        try:
            x = float(text)
        except ValueError:
            problems.append(ManifestProblem(line, col, text, "not a number"))
            return float("nan")
        if not lo <= x <= hi:
            problems.append(ManifestProblem(line, col, text, "out of range", f"{lo:g}…{hi:g}"))
            return float("nan")
        return x

    rows = []
    seen: dict[tuple[str, str], int] = {}
    for i, row in frame.iterrows():
        line = int(i) + 2
        subject, visit = str(row["subject_id"]).strip(), str(row["visit"]).strip()
        if not subject:
            problems.append(ManifestProblem(line, "subject_id", subject, "empty value"))
        if visit not in visits:
            problems.append(ManifestProblem(line, "visit", visit, "unknown visit", ", ".join(visits)))
        if (subject, visit) in seen:
            problems.append(ManifestProblem(line, "visit", visit,
                                            f"duplicate of line {seen[(subject, visit)]}"))
        seen.setdefault((subject, visit), line)
        sex = str(row["sex"]).strip().upper()
        if sex not in {"", "M", "F", "NA"}:
            problems.append(ManifestProblem(line, "sex", sex, "unknown sex code", "M, F, empty"))
        rows.append({
            **{c: row[c] for c in frame.columns},
            "subject_id": subject, "visit": visit,
            # SCORAD ranges 0-103 by construction (A/5 + 7B/2 + C).
            "scorad": number(line, "scorad", row["scorad"], lo=0, hi=103),
            "doses_received": number(line, "doses_received", row["doses_received"], lo=0, hi=10_000),
            "age": number(line, "age", row["age"], lo=0, hi=120),
            "sex": sex if sex in {"M", "F"} else "",
        })
    if problems:
        raise ManifestError(where, problems)
    if not rows:  # a header alone (found by fuzzing: KeyError further down)
        raise InputError(where, "the clinical table has no data rows")
    out = pd.DataFrame(rows)
    order = {v: k for k, v in enumerate(visits)}
    return (out.assign(_v=out["visit"].map(order)).sort_values(["subject_id", "_v"], kind="stable")
               .drop(columns="_v").reset_index(drop=True))


def clinical_summary(clinical: pd.DataFrame, *, design: DesignSpec | None = None,
                     doses: Literal["cumulative", "per_visit"] = "cumulative") -> pd.DataFrame:
    """One row per subject: demographics, dosing, evaluability, SCORAD change and response.

    Parameters
    ----------
    clinical
        The table from :func:`read_clinical`.
    design
        Supplies the baseline and end-of-treatment visits, ``min_doses`` and the responder
        threshold (required: :func:`~immunoprofile.study.design.resolve_design`).
    doses
        ``"cumulative"``: ``doses_received`` counts all doses taken by that visit (total = the
        largest value); ``"per_visit"``: doses since the previous visit (total = the sum).

    Returns
    -------
    DataFrame
        Indexed by ``subject_id`` with :data:`SUBJECT_COLUMNS`. ``evaluable`` and ``responder`` are
        nullable booleans (``<NA>`` when dosing or SCORAD is unknown). ``scorad_pct_change`` is
        ``100 · (end − baseline) / baseline`` (negative = improvement); responder means a reduction
        of at least ``design.responder_reduction_pct``.
    """
    import numpy as np
    import pandas as pd

    design = resolve_design(design, what="the clinical summary")
    records = []
    for subject, g in clinical.groupby("subject_id", sort=True):
        by_visit = g.set_index("visit")
        dose_values = pd.to_numeric(g["doses_received"], errors="coerce").dropna()
        if dose_values.empty:
            total = np.nan
        else:
            total = float(dose_values.max() if doses == "cumulative" else dose_values.sum())
        base = by_visit["scorad"].get(design.baseline_visit, np.nan)
        eot = by_visit["scorad"].get(design.end_of_treatment_visit, np.nan)
        base, eot = float(base), float(eot)
        change = 100.0 * (eot - base) / base if base == base and eot == eot and base > 0 else np.nan
        ages = pd.to_numeric(g["age"], errors="coerce").dropna()
        sexes = [s for s in g["sex"] if s]
        records.append({
            "subject_id": subject,
            "age": float(ages.iloc[0]) if len(ages) else np.nan,
            "sex": sexes[0] if sexes else "",
            "total_doses": total,
            "evaluable": pd.NA if total != total else bool(total >= design.min_doses),
            "scorad_baseline": base,
            "scorad_end_of_treatment": eot,
            "scorad_pct_change": change,
            "responder": pd.NA if change != change else bool(-change >= design.responder_reduction_pct),
        })
    out = pd.DataFrame.from_records(records, columns=["subject_id", *SUBJECT_COLUMNS]).set_index("subject_id")
    out["evaluable"] = out["evaluable"].astype("boolean")
    out["responder"] = out["responder"].astype("boolean")
    return out
