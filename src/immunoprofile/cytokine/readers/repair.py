"""Detect (and repair) expected concentrations that lost their decimal point.

Contract: ``check_expected(plate, repair=True)`` looks at every standard series (plate × analyte,
standards ordered by the number in their name) and finds values exactly 1000× off the series: a
three-decimal value such as ``215.625`` that Excel, in a locale where ``.`` groups thousands,
re-saved as ``215625``. It warns naming the wells, and with ``repair=True`` divides by 1000 where
the series is unambiguous, appending ``{plate, well, analyte, old, new, reason}`` to
``plate.repairs``. ``repair=False`` leaves the file's values untouched (warning only).

The series model is log10(expected) linear in the standard number (a constant dilution ratio),
fitted robustly (median neighbour step, median intercept) so a few bad points cannot drag it.
"""

from __future__ import annotations

import math
import re
from typing import Any

from . import PlateData, well_sort_key

__all__ = ["check_expected", "find_decimal_loss", "TOLERANCE_LOG10"]

#: How far (in log10) a point may sit from the fitted series and still count as on it (~12 %).
TOLERANCE_LOG10 = 0.05
_MIN_POINTS = 4
_NUMBER_RE = re.compile(r"(?<!\d)(\d{1,6})\s*$")  # standard numbers are small


def _series_fit(ks: list[float], ys: list[float]) -> tuple[float, float]:
    """Robust (slope, intercept) of log10(value) against standard number.

    The slope is the median step between neighbouring standards, ignoring steps of more than
    1.5 decades (a ±3-decade jump is the defect, not the dilution ratio); the intercept is the
    median of ``y - slope * k``. Both survive a third of the points being 1000x off, even when
    those are neighbours (where Theil–Sen would not).
    """
    steps = [(ys[i + 1] - ys[i]) / (ks[i + 1] - ks[i]) for i in range(len(ks) - 1)
             if ks[i + 1] != ks[i]]
    plausible = [d for d in steps if abs(d) < 1.5]
    slope = _median(plausible) if plausible else 0.0
    return slope, _median([y - slope * k for k, y in zip(ks, ys)])


def _median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def find_decimal_loss(series: dict[int, float]) -> tuple[dict[int, float], bool]:
    """Standards of one series that are exactly 1000× off a constant-ratio dilution series.

    Parameters
    ----------
    series
        Standard number → expected concentration (positive, finite).

    Returns
    -------
    suspects
        Standard number → corrected value (``old / 1000``) for each suspicious point.
    unambiguous
        ``True`` when the repair is safe: at least four points are on the series, every
        remaining point fits it within :data:`TOLERANCE_LOG10`, every suspect is an integer
        (a three-decimal value that lost its point) and lands on the series once divided by 1000.
    """
    pts = sorted((k, v) for k, v in series.items() if v > 0 and math.isfinite(v))
    if len(pts) < _MIN_POINTS:
        return {}, False
    ks = [float(k) for k, _ in pts]
    ys = [math.log10(v) for _, v in pts]
    slope, icpt = _series_fit(ks, ys)
    suspects = {k: v / 1000.0 for (k, v), kf, y in zip(pts, ks, ys)
                if abs(y - (icpt + slope * kf) - 3.0) < 3 * TOLERANCE_LOG10}
    if not suspects:
        return {}, False
    good = [(kf, y) for (k, _), kf, y in zip(pts, ks, ys) if k not in suspects]
    if len(good) < _MIN_POINTS - 1 or slope == 0:
        return suspects, False
    s2, i2 = _series_fit([g[0] for g in good], [g[1] for g in good])
    clean = all(abs(y - (i2 + s2 * k)) < TOLERANCE_LOG10 for k, y in good)
    fixed = all(abs(math.log10(new) - (i2 + s2 * k)) < TOLERANCE_LOG10
                for k, new in suspects.items())
    integers = all(float(series[k]).is_integer() for k in suspects)
    return suspects, bool(clean and fixed and integers)


def _standard_number(name: str) -> int | None:
    m = _NUMBER_RE.search(str(name))
    return int(m.group(1)) if m else None


def check_expected(plate: PlateData, *, repair: bool = True) -> list[dict[str, Any]]:
    """Warn about (and by default repair) decimal-point-loss in expected standard concentrations.

    Parameters
    ----------
    plate
        A plate just read; modified in place (``wells.expected_conc``, ``warnings``, ``repairs``).
    repair
        Divide the suspicious values by 1000 when the series is unambiguous.

    Returns
    -------
    list of dict
        The repairs made (also appended to ``plate.repairs``).
    """
    import numpy as np

    df = plate.wells
    is_std = (df["sample_type"] == "standard") & np.isfinite(df["expected_conc"].to_numpy(float)) \
        & (df["expected_conc"] > 0)
    if not is_std.any():
        return []
    made: list[dict[str, Any]] = []
    flagged_wells: dict[tuple[str, bool], set[str]] = {}
    for (plate_name, analyte), grp in df[is_std].groupby(["plate", "analyte"], sort=False):
        series: dict[int, float] = {}
        consistent = True
        for name, value in zip(grp["sample"], grp["expected_conc"]):
            k = _standard_number(name)
            if k is None:
                consistent = False
                break
            if k in series and series[k] != value:
                consistent = False
                break
            series[k] = float(value)
        if not consistent:
            continue
        suspects, unambiguous = find_decimal_loss(series)
        if not suspects:
            continue
        fix = repair and unambiguous
        for idx, name, old in zip(grp.index, grp["sample"], grp["expected_conc"]):
            k = _standard_number(name)
            if k not in suspects:
                continue
            flagged_wells.setdefault((plate_name, fix), set()).add(df.at[idx, "well"])
            if not fix:
                continue
            new = suspects[k]
            df.at[idx, "expected_conc"] = new
            made.append({"plate": plate_name, "well": df.at[idx, "well"], "analyte": analyte,
                         "old": float(old), "new": float(new),
                         "reason": f"{name}: expected concentration exactly 1000x the standard "
                                   "series (decimal point lost, e.g. Excel locale re-save)"})
        if suspects and not unambiguous:
            plate.warnings.append(
                f"plate {plate_name}, {analyte}: expected concentration(s) of "
                + ", ".join(f"standard {k}" for k in sorted(suspects))
                + " look 1000x too high but the series is ambiguous; not repaired")
    for (plate_name, fixed), wells in flagged_wells.items():
        listed = ", ".join(sorted(wells, key=well_sort_key))
        n = sum(1 for r in made if r["plate"] == plate_name) if fixed else None
        if fixed:
            plate.warnings.append(
                f"plate {plate_name}: {n} expected standard concentration(s) were exactly 1000x "
                f"their dilution series (decimal point lost) in wells {listed}; repaired "
                "(see repairs; use --no-repair to keep the file's values)")
        elif not repair:
            plate.warnings.append(
                f"plate {plate_name}: expected standard concentrations exactly 1000x their "
                f"dilution series (decimal point lost) in wells {listed}; kept as in the file "
                "(repair disabled)")
    plate.repairs.extend(made)
    return made
