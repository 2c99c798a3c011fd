"""The sample manifest: which tube or well belongs to which subject, visit, study day and period.

Contract: :func:`read_manifest` returns one clean row per sample (``sample_id, subject_id, visit,
study_day, period, assay, file, plate, well``) or raises :class:`ManifestError` listing EVERY problem
of the file at once (line, column, bad value, allowed values), never just the first one.

Plate samples may be listed one row per sample (replicate wells joined by ``;``: ``E3;E4``) or one
row per well as plate maps are written (rows sharing ``sample_id`` and everything but ``well``):
both give the same sample row with all its wells.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from .design import DesignSpec, resolve_design

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["ManifestProblem", "ManifestError", "read_manifest", "validate_manifest",
           "REQUIRED_COLUMNS", "ASSAYS"]

log = logging.getLogger(__name__)

REQUIRED_COLUMNS: tuple[str, ...] = ("sample_id", "subject_id", "visit", "study_day", "assay", "file")
OPTIONAL_COLUMNS: tuple[str, ...] = ("period", "plate", "well")
ASSAYS: tuple[str, ...] = ("flow", "cytokine")
#: Problems a manifest error lists line by line (then a count).
MAX_LISTED = 20
_WELL = re.compile(r"^[A-Pa-p](0?[1-9]|1[0-9]|2[0-4])$")  # 96- and 384-well plates


@dataclass(frozen=True)
class ManifestProblem:
    """One problem in a manifest: where it is, what was found, what was expected."""

    line: int
    column: str
    value: str
    reason: str
    allowed: str = ""

    def __str__(self) -> str:
        text = f"line {self.line}, column {self.column!r}: {self.reason} (got {self.value!r})"
        return f"{text}; allowed: {self.allowed}" if self.allowed else text


class ManifestError(InputError):
    """A manifest with one or more problems; ``.problems`` lists all of them.

    The message stays one line (``InputError`` contract): the file, the number of problems and
    the first of them as ``line N, column 'c': reason (got 'v'); allowed: …``;
    :attr:`detail_lines` lists them one per line (the first 20, then a count) for the CLI.
    """

    def __init__(self, path: str | os.PathLike[str] | None, problems: Iterable[ManifestProblem]) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        first = str(self.problems[0]) if self.problems else ""
        more = f" (all {n} listed below)" if n > 1 else ""
        super().__init__(path, f"{n} problem{'s' if n != 1 else ''} in the manifest: {first}{more}")

    @property
    def detail_lines(self) -> list[str]:
        """One line per problem, the first :data:`MAX_LISTED`, then how many more (CLI output)."""
        if len(self.problems) <= 1:
            return []
        lines = [str(p) for p in self.problems[:MAX_LISTED]]
        if len(self.problems) > MAX_LISTED:
            lines.append(f"... and {len(self.problems) - MAX_LISTED} more problem(s)")
        return lines

    def __reduce__(self):  # keep .problems across process pools
        return (type(self), (self.path, self.problems))


def read_manifest(path: str | os.PathLike[str], *, design: DesignSpec | None = None,
                  check_files: bool = False) -> pd.DataFrame:
    """Read and validate a sample manifest CSV.

    Parameters
    ----------
    path
        CSV with at least ``sample_id, subject_id, visit, study_day, assay, file`` and, for plate
        assays, ``plate, well`` (replicate wells joined by ``;``). ``period`` is optional: derived
        from the visit window / study day when missing or blank, checked when given
        (``screening`` is accepted as a run-in label).
    design
        The protocol (visits, windows, periods): a StudyDesign, a protocol name or a design file;
        required (``None`` is an InputError).
    check_files
        Also require each ``file`` to exist (relative paths are resolved against the manifest's
        folder).

    Returns
    -------
    DataFrame
        One row per sample, sorted by subject, visit (protocol order), assay; ``study_day`` as
        float, ``period`` filled in, ``window_deviation_days`` (0 inside the visit window) and
        ``line`` (the CSV line the row came from).

    Raises
    ------
    ManifestError
        With every problem found (an :class:`~immunoprofile.errors.InputError`).
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "manifest file not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                            skipinitialspace=True, comment=None)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not a readable CSV manifest: {exc}") from exc
    return validate_manifest(frame, design=design, path=path, check_files=check_files)


def validate_manifest(frame: pd.DataFrame, *, design: DesignSpec | None = None,
                      path: str | os.PathLike[str] | None = None,
                      check_files: bool = False) -> pd.DataFrame:
    """Validate a manifest already in a DataFrame (all-string or typed); see :func:`read_manifest`.

    Line numbers assume row ``i`` of ``frame`` came from CSV line ``i + 2`` (after the header).
    """
    import pandas as pd

    design = resolve_design(design, what="the manifest")
    problems: list[ManifestProblem] = []
    frame = frame.copy()
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        problems.append(ManifestProblem(1, ",".join(missing), ",".join(map(str, frame.columns)),
                                        "required column(s) missing from the header",
                                        ", ".join(REQUIRED_COLUMNS)))
        raise ManifestError(path, problems)
    for col in OPTIONAL_COLUMNS:
        if col not in frame.columns:
            frame[col] = ""
    frame = frame.reset_index(drop=True)
    for col in frame.columns:
        frame[col] = frame[col].map(lambda v: "" if v is None or (isinstance(v, float) and v != v)
                                    else str(v).strip())

    visits = design.visit_names
    periods = design.period_names
    base = Path(path).parent if path is not None else Path.cwd()
    out_rows = []
    seen_ids: dict[tuple[str, str], int] = {}
    wells_by_line: dict[int, list[str]] = {}  # replicate wells given on later rows
    seen_visit: dict[tuple[str, str, str], int] = {}
    for i, row in frame.iterrows():
        line = int(i) + 2
        bad = len(problems)
        sample_id, subject, visit = row["sample_id"], row["subject_id"], row["visit"]
        assay = row["assay"].lower()
        for col in ("sample_id", "subject_id", "file"):
            if not row[col]:
                problems.append(ManifestProblem(line, col, row[col], "empty value"))
        if visit not in visits:
            problems.append(ManifestProblem(line, "visit", visit, "unknown visit", ", ".join(visits)))
        if assay not in ASSAYS:
            problems.append(ManifestProblem(line, "assay", row["assay"], "unknown assay", ", ".join(ASSAYS)))
        day: float = float("nan")
        try:
            day = float(row["study_day"])
            if not math.isfinite(day) or day != int(day):
                raise ValueError
        except ValueError:
            problems.append(ManifestProblem(line, "study_day", row["study_day"],
                                            "not a whole number of days"))
            day = float("nan")
        deviation = 0
        if visit in visits and day == day:
            deviation = design.window_deviation(visit, day)
            if deviation:
                v = design.visit(visit)
                # Out-of-window visits are protocol deviations, not data errors: keep, report.
                log.warning("%s line %d: %s on day %d is %+d day(s) outside its window %d…%d",
                            path, line, visit, day, deviation, v.nominal_day - v.before,
                            v.nominal_day + v.after)
        derived = design.period_for(visit if visit in visits else None, day if day == day else None)
        if day == day and derived is None:
            problems.append(ManifestProblem(
                line, "study_day", row["study_day"], "outside every protocol period",
                "; ".join(f"{p.name} {p.start}…{p.end}" for p in design.periods)))
        given = row["period"]
        period = derived
        if given:
            norm = design.normalise_period(given)
            if norm not in periods:
                problems.append(ManifestProblem(line, "period", given, "unknown period",
                                                ", ".join([*periods, "screening"])))
            elif derived is not None and norm != derived:
                problems.append(ManifestProblem(
                    line, "period", given,
                    f"disagrees with visit {visit!r} / study day {row['study_day']} (→ {derived})",
                    derived))
            else:
                period = norm
        if assay == "cytokine":
            if not row["plate"]:
                problems.append(ManifestProblem(line, "plate", "", "plate assays need a plate"))
            wells = [w.strip() for w in row["well"].split(";") if w.strip()]
            if not wells:
                problems.append(ManifestProblem(line, "well", row["well"],
                                                "plate assays need a well (replicates joined by ';')",
                                                "A1…H12 (or P24)"))
            for w in wells:
                if not _WELL.match(w):
                    problems.append(ManifestProblem(line, "well", w, "not a well name", "A1…H12 (or P24)"))
        if check_files and row["file"]:
            target = Path(row["file"])
            target = target if target.is_absolute() else base / target
            if not target.exists():
                problems.append(ManifestProblem(line, "file", row["file"], "file not found"))
        key = (sample_id, assay)
        if sample_id and key in seen_ids:
            first_line = seen_ids[key]
            other = frame.loc[first_line - 2]
            differ = [c for c in ("subject_id", "visit", "study_day", "period", "file", "plate")
                      if row[c] != other[c]]
            if assay == "cytokine" and not differ:
                # one row per well (plate-map style): a replicate well of the sample listed before
                wells_by_line.setdefault(first_line, []).extend(
                    w.strip().upper() for w in row["well"].split(";") if w.strip())
                continue
            reason = (f"duplicate of line {first_line} for assay {assay!r}" if not differ else
                      f"same sample as line {first_line} but different {', '.join(differ)}")
            problems.append(ManifestProblem(line, "sample_id", sample_id, reason))
        seen_ids.setdefault(key, line)
        vkey = (subject, visit, assay)
        if subject and visit in visits and vkey in seen_visit:
            problems.append(ManifestProblem(
                line, "visit", visit,
                f"subject {subject!r} already has a {assay} sample at this visit (line {seen_visit[vkey]})"))
        seen_visit.setdefault(vkey, line)
        if len(problems) == bad:
            out_rows.append({
                "sample_id": sample_id, "subject_id": subject, "visit": visit, "study_day": day,
                "period": period, "assay": assay, "file": row["file"], "plate": row["plate"],
                "well": ";".join(w.strip().upper() for w in row["well"].split(";") if w.strip()),
                "window_deviation_days": deviation, "line": line,
            })
    for rec in out_rows:
        extra = wells_by_line.get(rec["line"])
        if extra:
            wells = rec["well"].split(";") if rec["well"] else []
            dup = sorted({w for w in extra if w in wells or extra.count(w) > 1})
            if dup:
                problems.append(ManifestProblem(rec["line"], "well", ";".join(dup),
                                                f"well(s) listed twice for sample {rec['sample_id']!r}"))
            rec["well"] = ";".join(dict.fromkeys([*wells, *extra]))
    if problems:
        raise ManifestError(path, problems)
    if not out_rows:
        raise InputError(path, "the manifest lists no samples")
    extra = [c for c in frame.columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    out = pd.DataFrame(out_rows)
    for col in extra:  # keep the lab's own columns (e.g. notes) untouched
        out[col] = frame.loc[out["line"] - 2, col].to_numpy()
    order = {v: k for k, v in enumerate(visits)}
    out = (out.assign(_v=out["visit"].map(order))
              .sort_values(["subject_id", "_v", "assay", "sample_id"], kind="stable")
              .drop(columns="_v").reset_index(drop=True))
    return out
