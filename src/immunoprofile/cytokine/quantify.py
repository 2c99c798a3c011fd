"""Quantification and QC of multiplex plates: standard curves in, flagged concentrations out.

Contract: ``quantify_plate(plate, *, options) -> PlateResult`` fits one curve per plate × analyte
on the Net MFI of the standard wells and back-calculates every well (``inverse(net_mfi) ×
dilution``) with QC flags; ``quantify_plates`` does it across plates with optional bridging-control
normalisation; ``write_cytokine_outputs`` writes ``concentrations.csv``, ``standard_curves.csv``,
``cytokines.h5ad``, ``provenance.json`` and ``failed.tsv``.

Flags (several joined with ``;`` in :data:`FLAGS` order, ``ok`` when none):
``failed_fit`` (no usable curve), ``below_curve``/``above_curve`` (Net MFI beyond the zero- or
infinite-concentration asymptote: not invertible, concentration NaN; xPONENT's ``<``/``>``),
``<LLOQ``/``>ULOQ`` (outside the limits of quantification), ``extrapolated`` (invertible but
outside the standards' concentration range), ``low_beads`` (bead count < ``min_beads``),
``high_cv`` (replicate CV > ``max_cv``), ``missing`` (no Net MFI in the export, e.g. a
Bio-Plex outlier ``---`` or an xPONENT ``NaN`` cell; an addition to the architecture's list, so a
missing value never reads ``ok``), ``control_out_of_range`` (every well of a kit control whose
replicate-mean concentration lies outside its range, or that cannot be quantified).

QC a lab is audited on: kit controls against their ranges (the kit sheet's ``control_low/high``
or the export's Control Range; a control with only an expected concentration, or a zero-width
range, is held to ``recovery_range`` of it); per standard level the recovery and replicate CV
(:attr:`PlateResult.standard_levels`, summarised per curve in ``standard_curves.csv``); plate
acceptance (:attr:`PlateResult.plate_qc`: every curve with standards converged with defined
LLOQ/ULOQ, every checked control in range). Where the export carries the software's own
results, :attr:`PlateResult.vendor_comparison` sets ours beside them (``vendor_comparison.csv``)
and the per-analyte agreement goes into ``standard_curves.csv``/``summary.csv``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import InputError
from ..schema import QC_FLAGS, SCHEMA_VERSION, decode_flags as _decode, encode_flags, flag_table
from ..schema import is_drug_readout
from .curves import CurveFit, fit_curve
# the options are one model (function, config and CLI), kept light for the command line
from .options import LLOQ_POLICIES, QuantifyOptions
from .._frames import is_text_column

if TYPE_CHECKING:
    from anndata import AnnData

    from .readers import PlateData

__all__ = [
    "QuantifyOptions", "PlateResult", "quantify_plate", "quantify_plates",
    "write_cytokine_outputs", "to_anndata", "FLAGS", "LLOQ_POLICIES", "CONCENTRATION_COLUMNS",
    "CURVE_COLUMNS", "SUMMARY_COLUMNS", "STANDARD_LEVEL_COLUMNS", "PLATE_QC_COLUMNS",
    "VENDOR_COMPARISON_COLUMNS", "VENDOR_DEFAULTS", "resolve_options", "flag_code", "decode_flags", "is_drug_readout",
]


#: Every flag, in the order they are joined (``ok`` = none of the others).
FLAGS: tuple[str, ...] = ("ok", *QC_FLAGS)  # bit i = FLAGS[i] (immunoprofile.schema)

#: Columns of :attr:`PlateResult.concentrations` (the first ten are the architecture's contract).
CONCENTRATION_COLUMNS: tuple[str, ...] = (
    "sample_id", "plate", "well", "analyte", "mfi", "net_mfi", "concentration", "unit",
    "dilution", "flag", "sample_type", "replicate", "count", "expected_conc", "recovery",
    "replicate_cv", "concentration_reported", "bridging_factor",
)
#: Columns of :attr:`PlateResult.curves`.
CURVE_COLUMNS: tuple[str, ...] = (
    "plate", "analyte", "unit", "model", "weights", "A", "B", "C", "D", "F", "r2_weighted",
    "cost", "lloq", "uloq", "n_standards_used", "standards_dropped", "converged", "message",
    "drug_readout", "replicate_means", "standard_levels", "levels_recovery_ok",
    "standard_cv_max", "controls_checked", "controls_out_of_range", "vendor_n",
    "vendor_median_rel_diff", "vendor_within_1pct",
)
#: Columns of :attr:`PlateResult.standard_levels` (one row per plate × analyte × standard level).
STANDARD_LEVEL_COLUMNS: tuple[str, ...] = (
    "plate", "analyte", "standard", "expected_conc", "n_wells", "n_used", "mean_concentration",
    "recovery", "cv", "recovery_ok", "cv_ok", "in_loq_range",
)
#: Columns of :attr:`PlateResult.plate_qc` (one row per plate).
PLATE_QC_COLUMNS: tuple[str, ...] = (
    "plate", "accepted", "n_analytes", "n_curves", "n_curves_converged", "n_without_standards",
    "n_loq_undefined", "n_controls_checked", "n_controls_out_of_range", "reasons",
)
#: Columns of :attr:`PlateResult.vendor_comparison` (``vendor_comparison.csv``).
VENDOR_COMPARISON_COLUMNS: tuple[str, ...] = (
    "plate", "well", "sample_id", "sample_type", "analyte", "concentration",
    "vendor_concentration", "relative_difference", "flag", "vendor_flag",
)
#: Columns of :attr:`PlateResult.summary` (one row per plate × sample × dilution × analyte).
SUMMARY_COLUMNS: tuple[str, ...] = (
    "sample_id", "plate", "sample_type", "analyte", "unit", "dilution", "n_replicates",
    "mean_net_mfi", "concentration", "concentration_reported", "cv", "flag", "lloq", "uloq",
    "bridging_factor", "vendor_concentration", "vendor_median_rel_diff", "plate_accepted",
)


#: What each instrument software fits by default (used for ``"auto"`` options):
#: xPONENT "Logistic 5P" weighted 1/y² on every standard well; Bio-Plex Manager power-law
#: variance (1/y^1.8) with the export's printed regression (4PL or 5PL) on its (already
#: replicate-averaged) rows; MSD Discovery Workbench 4PL weighted 1/y² on the calibrators'
#: replicate means (reproduces DW's Calc. Concentration, see tests/cytokine/test_msd_dw.py).
VENDOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "xponent": {"model": "5pl", "weights": "1/y2", "replicate_means": False},
    "bioplex": {"model": "5pl", "weights": "power", "replicate_means": False},
    "msd": {"model": "4pl", "weights": "1/y2", "replicate_means": True},
}
_FORMAT_VENDOR = {"xponent": "xponent", "intelliflex_flat": "xponent", "beadlevel": "xponent",
                  "generic": "xponent", "bioplex_xls": "bioplex", "bioplex_xlsx": "bioplex",
                  "bioplex_xml": "bioplex", "msd_workbench": "msd", "msd_platereader": "msd"}


def resolve_options(options: QuantifyOptions, plate: PlateData) -> QuantifyOptions:
    """``options`` with every ``"auto"`` (``replicate_means=None``) replaced by the default of
    the software that wrote ``plate`` (:data:`VENDOR_DEFAULTS`; unknown formats: xPONENT's).
    A Bio-Plex export's printed regression type (``Logistic - 4PL``) picks the model."""
    if options.model != "auto" and options.weights != "auto" and options.replicate_means is not None:
        return options
    vendor = _FORMAT_VENDOR.get(str(getattr(plate, "format", "") or ""), "xponent")
    defaults = dict(VENDOR_DEFAULTS[vendor])
    if vendor == "bioplex":
        printed = [str(c.get("model", "")) for c in
                   (getattr(plate, "metadata", {}) or {}).get("vendor_curves", {}).values()
                   if isinstance(c, dict)]
        if printed and all("4" in m and "5" not in m for m in printed if m) and any(printed):
            defaults["model"] = "4pl"
    changes: dict[str, Any] = {}
    if options.model == "auto":
        changes["model"] = defaults["model"]
    if options.weights == "auto":
        changes["weights"] = defaults["weights"]
    if options.replicate_means is None:
        changes["replicate_means"] = defaults["replicate_means"]
    return options.model_copy(update=changes)


@dataclass
class PlateResult:
    """The quantified plate(s) of one export.

    Attributes
    ----------
    concentrations
        One row per well × analyte, :data:`CONCENTRATION_COLUMNS`.
    curves
        One row per plate × analyte, :data:`CURVE_COLUMNS`.
    summary
        One row per plate × sample × dilution × analyte (replicate mean, CV, union of flags),
        :data:`SUMMARY_COLUMNS`.
    fits
        ``(plate, analyte) -> CurveFit``.
    path, format
        The export read (from :class:`PlateData`).
    warnings, repairs
        Carried over from the reader, plus quantification warnings.
    bridging
        Bridging factors (``plate, analyte, bridge_concentration, target, factor``) once
        :func:`quantify_plates` normalised, else ``None``.
    plate
        The :class:`PlateData` quantified (lets a runner that quantified plates one by one in
        workers re-run :func:`quantify_plates` for bridging).
    standard_levels
        Recovery and replicate CV per standard level, :data:`STANDARD_LEVEL_COLUMNS`.
    plate_qc
        Plate acceptance, one row per plate, :data:`PLATE_QC_COLUMNS`.
    vendor_comparison
        Ours beside the export's own results (:data:`VENDOR_COMPARISON_COLUMNS`), ``None``
        when the export carries none.
    """

    concentrations: pd.DataFrame
    curves: pd.DataFrame
    summary: pd.DataFrame
    fits: dict[tuple[str, str], CurveFit] = field(default_factory=dict)
    path: str = ""
    format: str = ""
    warnings: list[str] = field(default_factory=list)
    repairs: list[dict[str, Any]] = field(default_factory=list)
    bridging: pd.DataFrame | None = None
    plate: PlateData | None = field(default=None, repr=False)
    standard_levels: pd.DataFrame | None = None
    plate_qc: pd.DataFrame | None = None
    vendor_comparison: pd.DataFrame | None = None


# ---------------------------------------------------------------------------- flags
def flag_code(flags: str) -> int:
    """A ``;``-joined flag string as a bit mask (bit ``i`` = ``FLAGS[i]``; ``ok`` = 0): the
    codec of :mod:`immunoprofile.schema`."""
    return encode_flags(flags)


def decode_flags(code: int) -> str:
    """The inverse of :func:`flag_code`."""
    return _decode(code)


def _join_flags(sets: Iterable[set[str]]) -> list[str]:
    return [";".join(f for f in FLAGS[1:] if f in s) or "ok" for s in sets]


# ---------------------------------------------------------------------------- one plate
def quantify_plate(plate: PlateData, *, options: QuantifyOptions | None = None) -> PlateResult:
    """Fit standard curves and back-calculate every well of a plate export.

    Parameters
    ----------
    plate
        A :class:`~immunoprofile.cytokine.readers.PlateData` (its ``wells`` table is all that
        is used, plus ``path``, ``format``, ``warnings`` and ``repairs`` carried along).
    options
        Fitting and QC choices; defaults to :class:`QuantifyOptions()`.

    Returns
    -------
    PlateResult

    Raises
    ------
    InputError
        When the wells table lacks a required column. A curve that cannot be fitted is a
        ``failed_fit`` flag, never an exception.
    """
    options = resolve_options(options or QuantifyOptions(), plate)
    wells = plate.wells
    required = {"plate", "well", "sample", "sample_type", "analyte", "median_mfi", "net_mfi",
                "count", "dilution", "expected_conc", "unit"}
    missing = required - set(wells.columns)
    if missing:
        raise InputError(getattr(plate, "path", "") or None,
                         f"plate table lacks column(s) {', '.join(sorted(missing))}")
    warnings = list(getattr(plate, "warnings", []) or [])
    conc_parts, curve_rows, level_rows, fits = [], [], [], {}
    failed: dict[tuple[str, str], list[str]] = {}  # (plate, reason) -> analytes
    ranges = _control_ranges(getattr(plate, "metadata", {}) or {})
    for (plate_name, analyte), rows in wells.groupby(["plate", "analyte"], sort=False):
        rows_out, curve_row, fit, levels = _quantify_analyte(
            rows, str(plate_name), str(analyte), options,
            {k[0]: v for k, v in ranges.items() if k[1] == str(analyte)})
        conc_parts.append(rows_out)
        curve_rows.append(curve_row)
        level_rows += levels
        fits[(str(plate_name), str(analyte))] = fit
        if not fit.converged:
            failed.setdefault((str(plate_name), fit.message), []).append(str(analyte))
    for (plate_name, reason), analytes in failed.items():
        shown = ", ".join(analytes[:8]) + (" …" if len(analytes) > 8 else "")
        warnings.append(f"plate {plate_name}: standard curve failed for {len(analytes)} "
                        f"analyte(s) ({shown}): {reason}; results flagged failed_fit")
    concentrations = (pd.concat(conc_parts, ignore_index=True) if conc_parts
                      else pd.DataFrame(columns=list(CONCENTRATION_COLUMNS)))
    curves = pd.DataFrame(curve_rows, columns=list(CURVE_COLUMNS))
    result = PlateResult(concentrations=concentrations, curves=curves, summary=pd.DataFrame(),
                         fits=fits, path=str(getattr(plate, "path", "") or ""),
                         format=str(getattr(plate, "format", "") or ""), warnings=warnings,
                         repairs=list(getattr(plate, "repairs", []) or []), plate=plate)
    result.standard_levels = pd.DataFrame(level_rows, columns=list(STANDARD_LEVEL_COLUMNS))
    result.vendor_comparison = _vendor_comparison(plate, concentrations)
    _vendor_agreement(result, options)
    result.plate_qc = _plate_qc(result)
    result.summary = _summarise(result.concentrations, result.curves, result.vendor_comparison,
                                result.plate_qc)
    return result


def _quantify_analyte(rows: pd.DataFrame, plate_name: str, analyte: str,
                      options: QuantifyOptions,
                      ranges: Mapping[str, tuple[float, float]] | None = None
                      ) -> tuple[pd.DataFrame, dict[str, Any], CurveFit, list[dict[str, Any]]]:
    rows = rows.reset_index(drop=True)
    net = rows["net_mfi"].to_numpy(dtype=float)
    dilution = rows["dilution"].to_numpy(dtype=float)
    dilution = np.where(np.isfinite(dilution) & (dilution > 0), dilution, 1.0)
    count = rows["count"].to_numpy(dtype=float)
    expected = rows["expected_conc"].to_numpy(dtype=float)
    is_std = (rows["sample_type"] == "standard").to_numpy()
    units = [u for u in rows["unit"].astype(str) if u and u != "nan"]
    unit = units[0] if units else ""

    # which standard wells enter the fit (a zero calibrator too: it pins the bottom asymptote,
    # as Discovery Workbench fits it)
    usable = is_std & np.isfinite(expected) & (expected >= 0) & np.isfinite(net)
    if options.drop_low_bead_standards:
        usable &= ~(np.isfinite(count) & (count < options.min_beads))
    dropped = [str(w) for w in rows.loc[is_std & ~usable, "well"]]
    fit = fit_curve(expected[usable], net[usable], model=options.model, weights=options.weights,
                    power=options.power, replicate_means=options.replicate_means,
                    search=options.search)
    if not usable.any():
        why = ("no standard wells" if not is_std.any() else
               "standard wells carry no expected concentrations (an analysis-off export? "
               "give the kit standards table)")
        fit = replace(fit, message=why)

    if fit.converged:
        in_well = fit.inverse(net)  # assay (in-well) concentration
        side = fit.side(net)
        # within rounding of the infinite-concentration asymptote the inverse overflows
        overflow = (side == 0) & np.isinf(in_well)
        side = np.where(overflow, np.int8(1), side)
        in_well = np.where(overflow, np.nan, in_well)
    else:
        in_well = np.full(net.shape, np.nan)
        side = np.zeros(net.shape, dtype=np.int8)
    concentration = in_well * dilution
    # recovery of standards and of controls with a known concentration (xPONENT's % Recovery:
    # the diluted-back result over the expected concentration)
    with np.errstate(divide="ignore", invalid="ignore"):
        recovery = np.where(expected > 0, 100.0 * concentration / expected, np.nan)

    # replicate groups: same sample name, type and dilution on this plate
    group_keys = list(zip(rows["sample"].astype(str), rows["sample_type"].astype(str),
                          np.round(dilution, 9)))
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, key in enumerate(group_keys):
        groups.setdefault(key, []).append(i)
    replicate = np.zeros(len(rows), dtype=int)
    cv = np.full(len(rows), np.nan)
    for members in groups.values():
        replicate[members] = np.arange(1, len(members) + 1)
        cv[members] = _cv(concentration[members])

    lloq, uloq, loq_note = _limits(expected, in_well, is_std & usable, options)

    flags: list[set[str]] = [set() for _ in range(len(rows))]
    x_lo, x_hi = fit.x_min, fit.x_max
    for i in range(len(rows)):
        f = flags[i]
        if not fit.converged:
            f.add("failed_fit")
        elif not math.isfinite(net[i]):
            f.add("missing")
        elif side[i] == -1:
            f.add("below_curve")
        elif side[i] == 1:
            f.add("above_curve")
        else:
            c = in_well[i]
            if math.isfinite(lloq) and c < lloq:
                f.add("<LLOQ")
            if math.isfinite(uloq) and c > uloq:
                f.add(">ULOQ")
            if c < x_lo or c > x_hi:
                f.add("extrapolated")
        if math.isfinite(count[i]) and count[i] < options.min_beads:
            f.add("low_beads")
        if math.isfinite(cv[i]) and cv[i] > options.max_cv:
            f.add("high_cv")

    checked, out_of_range = (0, 0) if not usable.any() else _check_controls(
        rows, groups, concentration, expected, flags, fit.converged, ranges or {}, options)
    levels = _standard_levels(rows, expected, in_well, is_std, usable, lloq, uloq, options)
    for lv in levels:
        lv["plate"], lv["analyte"] = plate_name, analyte

    reported = concentration.copy()
    below = np.array([("<LLOQ" in f) or ("below_curve" in f) for f in flags], dtype=bool)
    if options.lloq_policy != "keep" and math.isfinite(lloq):
        sub = {"half": lloq / 2.0, "sqrt2": lloq / math.sqrt(2.0), "na": math.nan}
        reported = np.where(below, sub[options.lloq_policy] * dilution, reported)

    out = pd.DataFrame({
        "sample_id": rows["sample"].astype(str),
        "plate": plate_name,
        "well": rows["well"].astype(str),
        "analyte": analyte,
        "mfi": rows["median_mfi"].to_numpy(dtype=float),
        "net_mfi": net,
        "concentration": concentration,
        "unit": unit,
        "dilution": dilution,
        "flag": _join_flags(flags),
        "sample_type": rows["sample_type"].astype(str),
        "replicate": replicate,
        "count": count,
        "expected_conc": expected,
        "recovery": recovery,
        "replicate_cv": cv,
        "concentration_reported": reported,
        "bridging_factor": 1.0,
    })
    message = fit.message
    if fit.converged and loq_note:
        message = "; ".join(m for m in (message, loq_note) if m)
    curve_row = {
        "plate": plate_name, "analyte": analyte, "unit": unit, "model": options.model,
        "weights": options.weights if options.weights != "power"
        else f"power({options.power:g})",
        **fit.params, "r2_weighted": fit.r2_weighted, "cost": fit.cost,
        "lloq": lloq, "uloq": uloq, "n_standards_used": int(usable.sum()),
        "standards_dropped": ";".join(dropped), "converged": bool(fit.converged),
        "message": message, "drug_readout": is_drug_readout(analyte, options.drug_readouts),
        "replicate_means": bool(options.replicate_means),
        **_level_summary(levels),
        "controls_checked": checked, "controls_out_of_range": out_of_range,
        "vendor_n": 0, "vendor_median_rel_diff": math.nan, "vendor_within_1pct": math.nan,
    }
    return out, curve_row, fit, levels


def _control_ranges(metadata: Mapping[str, Any]) -> dict[tuple[str, str], tuple[float, float]]:
    """``(sample, analyte) -> (low, high)`` from ``metadata["control_ranges"]`` (the export's
    Control Range or the kit sheet's control_low/high; a missing bound is open)."""
    out: dict[tuple[str, str], tuple[float, float]] = {}
    for sample, per_analyte in (metadata.get("control_ranges") or {}).items():
        if not isinstance(per_analyte, Mapping):
            continue
        for analyte, bounds in per_analyte.items():
            try:
                lo, hi = (math.nan if b is None else float(b) for b in bounds)
            except (TypeError, ValueError):
                continue
            if math.isnan(lo) and math.isnan(hi):
                continue
            out[(str(sample), str(analyte))] = (-math.inf if math.isnan(lo) else lo,
                                                math.inf if math.isnan(hi) else hi)
    return out


def _check_controls(rows: pd.DataFrame, groups: Mapping[tuple[Any, ...], list[int]],
                    concentration: np.ndarray, expected: np.ndarray, flags: list[set[str]],
                    converged: bool, ranges: Mapping[str, tuple[float, float]],
                    options: QuantifyOptions) -> tuple[int, int]:
    """Flag ``control_out_of_range`` on every well of a kit control whose replicate-mean
    concentration lies outside its range (or that cannot be quantified). Without a range, or
    with a zero-width one (xPONENT writes low = high = expected when none was set), the range
    is ``recovery_range`` of the expected concentration. Returns (checked, out of range)."""
    checked = failed = 0
    lo_pct, hi_pct = options.recovery_range
    for (sample, kind, _), members in groups.items():
        if kind != "control":
            continue
        bounds = ranges.get(str(sample))
        if bounds is None or not bounds[0] < bounds[1]:
            known = expected[members]
            known = known[np.isfinite(known) & (known > 0)]
            if not known.size:
                continue  # neither a range nor an expected concentration: nothing to check
            bounds = (float(known[0]) * lo_pct / 100.0, float(known[0]) * hi_pct / 100.0)
        values = concentration[members]
        checked += 1
        inside = converged and bool(np.isfinite(values).all()) and \
            bounds[0] <= float(values.mean()) <= bounds[1]
        if not inside:
            failed += 1
            for i in members:
                flags[i].add("control_out_of_range")
    return checked, failed


def _standard_levels(rows: pd.DataFrame, expected: np.ndarray, in_well: np.ndarray,
                     is_std: np.ndarray, usable: np.ndarray, lloq: float, uloq: float,
                     options: QuantifyOptions) -> list[dict[str, Any]]:
    """Recovery (mean back-calculated / expected × 100) and replicate CV per standard level."""
    levels: dict[float, list[int]] = {}
    for i in np.flatnonzero(is_std & np.isfinite(expected)):
        levels.setdefault(float(expected[i]), []).append(int(i))
    lo, hi = options.recovery_range
    out = []
    for level in sorted(levels, reverse=True):
        members = levels[level]
        used = [i for i in members if usable[i]]
        values = in_well[used]
        finite = values[np.isfinite(values)]
        mean = float(finite.mean()) if finite.size else math.nan
        recovery = 100.0 * mean / level if level > 0 and math.isfinite(mean) else math.nan
        cv = _cv(values)
        out.append({
            "standard": str(rows["sample"].iat[members[0]]), "expected_conc": level,
            "n_wells": len(members), "n_used": len(used), "mean_concentration": mean,
            "recovery": recovery, "cv": cv,
            "recovery_ok": bool(lo <= recovery <= hi) if math.isfinite(recovery) else None,
            "cv_ok": not (math.isfinite(cv) and cv > options.max_cv),
            "in_loq_range": bool(math.isfinite(lloq) and lloq <= level <= uloq),
        })
    return out


def _level_summary(levels: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-level table as curve-table columns (one readable line for the auditor)."""
    rated = [lv for lv in levels if lv["recovery_ok"] is not None]
    cvs = [lv["cv"] for lv in levels if math.isfinite(lv["cv"])]
    text = "; ".join(
        f"{lv['standard']} {lv['expected_conc']:g}: "
        + (f"{lv['recovery']:.1f} %" if math.isfinite(lv["recovery"]) else "n/a")
        + (f", CV {lv['cv']:.1f} %" if math.isfinite(lv["cv"]) else "") for lv in levels)
    return {"standard_levels": text,
            "levels_recovery_ok": f"{sum(bool(lv['recovery_ok']) for lv in rated)}/{len(rated)}",
            "standard_cv_max": max(cvs) if cvs else math.nan}


def _cv(values: np.ndarray) -> float:
    """Replicate %CV (sd with ddof=1 / mean × 100), as xPONENT's "%CV Replicates"."""
    v = values[np.isfinite(values)]
    if v.size < 2:
        return math.nan
    mean = float(v.mean())
    if mean == 0:
        return math.nan
    return float(v.std(ddof=1) / abs(mean) * 100.0)


def _limits(expected: np.ndarray, in_well: np.ndarray, is_std: np.ndarray,
            options: QuantifyOptions) -> tuple[float, float, str]:
    """LLOQ and ULOQ: lowest/highest standard level with recovery in range and CV <= max_cv."""
    levels: dict[float, list[int]] = {}
    for i in np.flatnonzero(is_std & (expected > 0)):  # recovery of a zero level is undefined
        levels.setdefault(float(expected[i]), []).append(int(i))
    lo, hi = options.recovery_range
    passing = []
    for level, members in levels.items():
        values = in_well[members]
        if not np.isfinite(values).all():  # a replicate outside the curve: not quantifiable
            continue
        recovery = 100.0 * float(values.mean()) / level
        cv = _cv(values)
        if lo <= recovery <= hi and not (math.isfinite(cv) and cv > options.max_cv):
            passing.append(level)
    if not passing:
        note = "no standard level within the recovery and CV limits (LLOQ/ULOQ undefined)" \
            if levels else ""
        return math.nan, math.nan, note
    return min(passing), max(passing), ""


def _summarise(conc: pd.DataFrame, curves: pd.DataFrame, vendor: pd.DataFrame | None = None,
               plate_qc: pd.DataFrame | None = None) -> pd.DataFrame:
    """Replicate means, CVs and the union of flags per plate × sample × dilution × analyte,
    beside the vendor's replicate mean, the analyte's vendor agreement and plate acceptance."""
    if conc.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    keys = ["plate", "sample_id", "sample_type", "dilution", "analyte"]
    codes = conc["flag"].map({f: flag_code(f) for f in conc["flag"].unique()}).astype(np.int64)
    work = conc[keys + ["unit", "net_mfi", "concentration", "concentration_reported",
                        "bridging_factor"]].copy()
    work["vendor_concentration"] = math.nan
    if vendor is not None and not vendor.empty:
        comparable = vendor[np.isfinite(vendor["relative_difference"])]
        lookup = dict(zip(zip(comparable["plate"], comparable["well"], comparable["analyte"]),
                          comparable["vendor_concentration"]))
        work["vendor_concentration"] = [lookup.get(k, math.nan) for k in
                                        zip(conc["plate"], conc["well"], conc["analyte"])]
    for i, name in enumerate(FLAGS[1:], start=1):
        work[f"_bit{i}"] = (codes.to_numpy() >> i) & 1
    grouped = work.groupby(keys, sort=False, dropna=False)
    agg = grouped.agg(
        unit=("unit", "first"), n_replicates=("net_mfi", "size"),
        mean_net_mfi=("net_mfi", "mean"), concentration=("concentration", "mean"),
        concentration_reported=("concentration_reported", "mean"),
        _sd=("concentration", "std"), _n=("concentration", "count"),
        bridging_factor=("bridging_factor", "first"),
        vendor_concentration=("vendor_concentration", "mean"),
        **{f"_bit{i}": (f"_bit{i}", "max") for i in range(1, len(FLAGS))},
    ).reset_index()
    with np.errstate(divide="ignore", invalid="ignore"):
        cv = agg["_sd"] / agg["concentration"].abs() * 100.0
    agg["cv"] = cv.where((agg["_n"] >= 2) & (agg["concentration"] != 0))
    union = sum(agg[f"_bit{i}"].to_numpy(dtype=np.int64) << i for i in range(1, len(FLAGS)))
    agg["flag"] = [decode_flags(c) for c in union]
    limits = curves[["plate", "analyte", "lloq", "uloq", "vendor_median_rel_diff"]]
    agg = agg.merge(limits, on=["plate", "analyte"], how="left", sort=False)
    agg["lloq"] = agg["lloq"].astype(float) * agg["dilution"]
    agg["uloq"] = agg["uloq"].astype(float) * agg["dilution"]
    accepted = ({} if plate_qc is None else
                dict(zip(plate_qc["plate"].astype(str), plate_qc["accepted"].astype(bool))))
    agg["plate_accepted"] = [accepted.get(str(p)) for p in agg["plate"]]
    return agg.loc[:, list(SUMMARY_COLUMNS)]


# ---------------------------------------------------------------------------- vendor, QC
_VENDOR_LIMIT = re.compile(r"^\s*(?:OOR\s*)?[<>]")


def _vendor_comparison(plate: PlateData, conc: pd.DataFrame) -> pd.DataFrame | None:
    """Our concentration beside the export's own result, well by well (``None`` without any).

    ``relative_difference = ours / vendor - 1`` where both are numbers; a vendor value printed
    as a limit (xPONENT ``< 2.44``, Bio-Plex ``OOR >``) is not a result and is not compared.
    """
    vendor = getattr(plate, "vendor", None)
    if vendor is None or vendor.empty or conc.empty:
        return None
    v = vendor.drop_duplicates(["plate", "well", "analyte"]).rename(
        columns={"concentration": "vendor_concentration", "flag": "vendor_flag"})
    v = v.assign(plate=v["plate"].astype(str), well=v["well"].astype(str),
                 analyte=v["analyte"].astype(str))
    ours = conc[["plate", "well", "sample_id", "sample_type", "analyte", "concentration",
                 "flag"]]
    m = ours.merge(v[["plate", "well", "analyte", "vendor_concentration", "vendor_flag", "raw"]],
                   on=["plate", "well", "analyte"], how="inner", sort=False)
    if m.empty:
        return None
    ok = (np.isfinite(m["concentration"]) & np.isfinite(m["vendor_concentration"])
          & (m["vendor_concentration"] != 0) & ~m["raw"].astype(str).str.match(_VENDOR_LIMIT))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = m["concentration"] / m["vendor_concentration"] - 1.0
    m["relative_difference"] = rel.where(ok)
    return m.loc[:, list(VENDOR_COMPARISON_COLUMNS)].reset_index(drop=True)


def _vendor_agreement(result: PlateResult, options: QuantifyOptions) -> None:
    """Per plate × analyte agreement with the vendor into the curves table; a warning naming
    the settings that would explain a median difference above 1 %."""
    comp = result.vendor_comparison
    if comp is None:
        return
    rows = comp[(comp["sample_type"] != "background") & comp["relative_difference"].notna()]
    stats = rows.assign(a=rows["relative_difference"].abs()).groupby(
        ["plate", "analyte"], sort=False)["a"].agg(["size", "median",
                                                    lambda a: float((a <= 0.01).mean())])
    curves = result.curves
    far: dict[str, list[str]] = {}
    for i, (p, a) in enumerate(zip(curves["plate"], curves["analyte"])):
        if (p, a) not in stats.index:
            continue
        n, med, within = stats.loc[(p, a)]
        curves.at[i, "vendor_n"] = int(n)
        curves.at[i, "vendor_median_rel_diff"] = float(med)
        curves.at[i, "vendor_within_1pct"] = float(within)
        if med > 0.01:
            far.setdefault(str(p), []).append(f"{a} {100 * med:.2g} %")
    meta = getattr(result.plate, "metadata", {}) or {}
    printed = sorted({str(c.get("model")) for c in (meta.get("vendor_curves") or {}).values()
                      if isinstance(c, Mapping) and c.get("model")})
    weights = options.weights if options.weights != "power" else f"power({options.power:g})"
    net = {"file": "the export's net MFI", "derived": "ours: median minus the mean blank",
           "mixed": "the export's, ours where it gave none"}.get(str(meta.get("net_mfi")), "?")
    for p, items in far.items():
        result.warnings.append(
            f"plate {p}: {len(items)} analyte(s) differ from the vendor's own results by a "
            f"median above 1 % ({', '.join(items[:6])}{' …' if len(items) > 6 else ''}); "
            f"settings that would explain it: model (ours {options.model.upper()}"
            + (f"; the export printed {', '.join(printed)}" if printed else "")
            + f"), weights (ours {weights}), replicate means (ours "
            f"{'replicate means' if options.replicate_means else 'every well'}), background "
            f"handling ({net}); see vendor_comparison.csv")


def _plate_qc(result: PlateResult) -> pd.DataFrame:
    """Plate acceptance: every analyte with standards fitted (converged, LLOQ/ULOQ defined) and
    every checked kit control in range. Analytes without standard wells (an MSD BSA spot) are
    counted, not failed."""
    rows = []
    curves = result.curves
    for plate_name, c in curves.groupby("plate", sort=False):
        has_std = c["n_standards_used"].astype(int) > 0
        converged = c["converged"].astype(bool) & has_std
        loq_undefined = converged & ~(np.isfinite(c["lloq"].astype(float))
                                      & np.isfinite(c["uloq"].astype(float)))
        checked = int(c["controls_checked"].sum())
        out_of_range = int(c["controls_out_of_range"].sum())
        reasons = []
        if not has_std.any():
            reasons.append("no standard curve")
        if (has_std & ~converged).any():
            reasons.append("fit failed: " + ", ".join(c.loc[has_std & ~converged, "analyte"]))
        if loq_undefined.any():
            reasons.append("LLOQ/ULOQ undefined: " + ", ".join(c.loc[loq_undefined, "analyte"]))
        if out_of_range:
            bad = c.loc[c["controls_out_of_range"] > 0, "analyte"]
            reasons.append(f"{out_of_range} control result(s) out of range: "
                           + ", ".join(bad.astype(str)[:8]) + (" …" if len(bad) > 8 else ""))
        rows.append({"plate": str(plate_name), "accepted": not reasons,
                     "n_analytes": int(len(c)), "n_curves": int(has_std.sum()),
                     "n_curves_converged": int(converged.sum()),
                     "n_without_standards": int((~has_std).sum()),
                     "n_loq_undefined": int(loq_undefined.sum()),
                     "n_controls_checked": checked, "n_controls_out_of_range": out_of_range,
                     "reasons": "; ".join(reasons)})
    return pd.DataFrame(rows, columns=list(PLATE_QC_COLUMNS))


# ---------------------------------------------------------------------------- many plates
def quantify_plates(plates: Iterable[PlateData], options: QuantifyOptions | None = None
                    ) -> list[PlateResult]:
    """Quantify several plate exports, then optionally normalise them on a bridging control.

    With ``options.bridging``, for each analyte the bridging sample's replicate-mean reported
    concentration is found on every plate; its geometric mean across plates is the target and
    each plate's ``concentration_reported`` (wells and summary) is multiplied by
    ``target / bridge`` (``bridging_factor``). ``concentration`` stays the raw back-calculated
    value. A bridging value flagged ``failed_fit``, ``below_curve``, ``above_curve``, ``<LLOQ``
    or ``>ULOQ`` is not used; such a plate keeps factor 1 and gets a warning.

    Parameters
    ----------
    plates
        PlateData objects (one export each; an export may hold several plates).
    options
        As for :func:`quantify_plate`.

    Returns
    -------
    list of PlateResult
        In input order.
    """
    options = options or QuantifyOptions()
    results = [quantify_plate(p, options=options) for p in plates]
    if options.bridging:
        _normalise_bridging(results, str(options.bridging_sample))
    return results


_NOT_BRIDGEABLE = ("failed_fit", "below_curve", "above_curve", "<LLOQ", ">ULOQ")


def _normalise_bridging(results: list[PlateResult], sample: str) -> None:
    frames = [r.summary for r in results if not r.summary.empty]
    if not frames:
        return
    summary = pd.concat(frames, ignore_index=True)
    bridge = summary[summary["sample_id"].astype(str) == sample]
    # a bridging value outside the quantifiable range would add noise, not remove it
    unusable = bridge["flag"].astype(str).str.contains(
        "|".join(re.escape(f) for f in _NOT_BRIDGEABLE))
    if bridge.empty:
        for r in results:
            r.warnings.append(f"bridging sample {sample!r} not found on any plate; "
                              "no normalisation")
        return
    # one value per plate × analyte (mean over dilutions of the same bridging sample)
    values = bridge[~unusable].groupby(["plate", "analyte"],
                                       sort=False)["concentration_reported"].mean()
    records = []
    for analyte in dict.fromkeys(summary["analyte"]):
        plates = list(dict.fromkeys(summary.loc[summary["analyte"] == analyte, "plate"]))
        per_plate = {p: float(values.get((p, analyte), math.nan)) for p in plates}
        good = [v for v in per_plate.values() if math.isfinite(v) and v > 0]
        target = math.exp(float(np.mean(np.log(good)))) if good else math.nan
        for p, v in per_plate.items():
            ok = math.isfinite(v) and v > 0 and math.isfinite(target)
            records.append({"plate": p, "analyte": analyte, "bridge_concentration": v,
                            "target": target, "factor": target / v if ok else 1.0})
    factors = pd.DataFrame(records)
    lookup = {(r.plate, r.analyte): r.factor for r in factors.itertuples()}
    for r in results:
        for frame in (r.concentrations, r.summary):
            if frame.empty:
                continue
            f = np.array([lookup.get((p, a), 1.0) for p, a in
                          zip(frame["plate"], frame["analyte"])], dtype=float)
            frame["bridging_factor"] = f
            frame["concentration_reported"] = frame["concentration_reported"] * f
        mine = factors[factors["plate"].isin(set(r.concentrations.get("plate", [])))]
        r.bridging = mine.reset_index(drop=True)
        missing = mine[~(np.isfinite(mine["bridge_concentration"])
                         & (mine["bridge_concentration"] > 0))]
        for row in missing.itertuples():
            r.warnings.append(f"plate {row.plate}, {row.analyte}: no usable bridging value "
                              f"for {sample!r} (absent or outside LLOQ-ULOQ); factor 1")


# ---------------------------------------------------------------------------- outputs
def to_anndata(results: Sequence[PlateResult], *, options: QuantifyOptions | None = None
               ) -> AnnData:
    """The samples × analytes AnnData of quantified plates.

    ``obs`` = unknowns and controls (one row per plate × sample × dilution; columns
    ``sample_id, plate, sample_type, dilution``), ``var`` = analytes (``analyte, unit, lloq,
    uloq, drug_readout, feature_type="concentration", assay="cytokine"``; with several plates
    ``lloq`` is the highest and ``uloq`` the lowest plate value), ``X`` = replicate-mean
    ``concentration_reported`` (LLOQ policy and bridging applied), ``layers["raw"]`` = the
    replicate-mean back-calculated concentration, ``layers["cv"]`` = replicate CV (%),
    ``layers["flag"]`` = flags as an int32 bit mask (bit ``i`` = ``FLAGS[i]``, 0 = ok; the codec
    of :mod:`immunoprofile.schema`, decode with :func:`decode_flags`; the table is in
    ``uns["immunoprofile"]["flag_bits"]``).
    ``uns["immunoprofile"]["standard_curves"]`` holds the per-plate curves table.

    Parameters
    ----------
    results
        Quantified exports (from :func:`quantify_plates`).
    options
        The options used, stored in ``uns["immunoprofile"]["options"]``.

    Returns
    -------
    AnnData
        Writable to ``.h5ad`` and ``.zarr`` (no ``/`` in keys; obs names ``plate|sample``,
        with ``|x<dilution>`` appended only when a sample was run at several dilutions).
    """
    import anndata as ad

    summaries = [r.summary for r in results if not r.summary.empty]
    curves = pd.concat([r.curves for r in results], ignore_index=True) if results else \
        pd.DataFrame(columns=list(CURVE_COLUMNS))
    summary = (pd.concat(summaries, ignore_index=True) if summaries
               else pd.DataFrame(columns=list(SUMMARY_COLUMNS)))
    summary = summary[summary["sample_type"].isin(["unknown", "control"])].copy()
    analytes = list(dict.fromkeys(curves["analyte"].astype(str)))
    obs_keys = list(dict.fromkeys(zip(summary["plate"], summary["sample_id"],
                                      summary["sample_type"], summary["dilution"])))
    # readable, unique obs names: plate|sample, plus |x<dilution> only where needed
    counts: dict[tuple[str, str], int] = {}
    for p, s, _, _ in obs_keys:
        counts[(p, s)] = counts.get((p, s), 0) + 1
    names = [f"{p}|{s}" if counts[(p, s)] == 1 else f"{p}|{s}|x{d:g}"
             for p, s, _, d in obs_keys]
    n_obs, n_var = len(obs_keys), len(analytes)
    X = np.full((n_obs, n_var), np.nan)
    raw = np.full((n_obs, n_var), np.nan)
    cv = np.full((n_obs, n_var), np.nan)
    flag = np.zeros((n_obs, n_var), dtype=np.int32)
    row_of = {k: i for i, k in enumerate(obs_keys)}
    col_of = {a: j for j, a in enumerate(analytes)}
    missing_mask = np.ones((n_obs, n_var), dtype=bool)
    for rec in summary.itertuples(index=False):
        i = row_of[(rec.plate, rec.sample_id, rec.sample_type, rec.dilution)]
        j = col_of[str(rec.analyte)]
        X[i, j], raw[i, j], cv[i, j] = rec.concentration_reported, rec.concentration, rec.cv
        flag[i, j] = flag_code(rec.flag)
        missing_mask[i, j] = False
    obs = pd.DataFrame({
        "sample_id": [k[1] for k in obs_keys],
        "plate": pd.Categorical([str(k[0]) for k in obs_keys],
                                categories=list(dict.fromkeys(str(k[0]) for k in obs_keys))),
        "sample_type": pd.Categorical([k[2] for k in obs_keys],
                                      categories=["unknown", "control"]),
        "dilution": np.array([float(k[3]) for k in obs_keys], dtype=float),
    }, index=pd.Index(names, name="obs_name"))
    obs["sample_id"] = obs["sample_id"].astype(str)
    units, lloq, uloq, drug = [], [], [], []
    for a in analytes:
        c = curves[curves["analyte"].astype(str) == a]
        u = [x for x in c["unit"].astype(str) if x]
        units.append(u[0] if u else "")
        lloq.append(float(np.nanmax(c["lloq"])) if c["lloq"].notna().any() else math.nan)
        uloq.append(float(np.nanmin(c["uloq"])) if c["uloq"].notna().any() else math.nan)
        drug.append(bool(c["drug_readout"].any()))
    var = pd.DataFrame({
        "analyte": analytes, "unit": units, "lloq": lloq, "uloq": uloq, "drug_readout": drug,
        "feature_type": "concentration", "assay": "cytokine",
    }, index=pd.Index(analytes, name="var_name"))
    curves_uns = curves.copy()
    for col in curves_uns.columns:  # h5ad stores plain columns; bools/objects as str/float
        if is_text_column(curves_uns[col]):
            curves_uns[col] = curves_uns[col].astype(str)
    adata = ad.AnnData(X=X, obs=obs, var=var,
                       layers={"raw": raw, "cv": cv, "flag": flag})
    adata.uns["immunoprofile"] = {
        "schema_version": SCHEMA_VERSION,
        "assay": "cytokine",
        "flag_bits": flag_table(),
        "X": "replicate-mean concentration_reported (LLOQ policy and bridging applied)",
        "options": _uns_safe(options.to_dict()) if options else {},
        "standard_curves": curves_uns,
    }
    return adata


def _uns_safe(d: Mapping[str, Any]) -> dict[str, Any]:
    """Options as h5ad-storable values (None → "")."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if v is None:
            out[k] = ""
        elif isinstance(v, (list, tuple)):
            out[k] = np.asarray(v) if v else np.asarray([], dtype=str)
        else:
            out[k] = v
    return out


def write_cytokine_outputs(out_dir: str | os.PathLike[str], results: Sequence[PlateResult],
                           failures: Sequence[tuple[str, str]], *,
                           parameters: Mapping[str, Any] | None = None,
                           inputs: Iterable[str | os.PathLike[str]] = (),
                           options: QuantifyOptions | None = None,
                           command: str | None = None) -> dict[str, Path]:
    """Write the cytokine outputs of a batch (atomically).

    Parameters
    ----------
    out_dir
        Output folder (created).
    results
        Quantified exports.
    failures
        ``(input, reason)`` of exports that could not be read or quantified.
    parameters
        Recorded in provenance (defaults to ``options.to_dict()``).
    inputs
        Files that went in (hashed into provenance).
    options
        The options used (stored in the AnnData and provenance).
    command
        The command line, for provenance.

    Returns
    -------
    dict
        Output name → path: ``concentrations``, ``standard_curves``, ``summary``,
        ``standard_levels``, ``plate_qc``, ``h5ad``, ``provenance``, ``failed`` and, when an
        export carries the software's own results, ``vendor_comparison``.
    """
    from .._io import write_csv_atomic, write_h5ad_atomic, write_json_atomic
    from ..layout import CytokineOutputs
    from ..provenance import build_provenance

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    conc = pd.concat([r.concentrations for r in results], ignore_index=True) if results else \
        pd.DataFrame(columns=list(CONCENTRATION_COLUMNS))
    curves = pd.concat([r.curves for r in results], ignore_index=True) if results else \
        pd.DataFrame(columns=list(CURVE_COLUMNS))
    summary = pd.concat([r.summary for r in results], ignore_index=True) if results else \
        pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    layout = CytokineOutputs(out)
    paths = {name: getattr(layout, name) for name in (
        "concentrations", "standard_curves", "summary", "standard_levels", "plate_qc", "h5ad",
        "provenance", "failed")}
    write_csv_atomic(paths["concentrations"], conc.loc[:, list(CONCENTRATION_COLUMNS)])
    write_csv_atomic(paths["standard_curves"], curves.reindex(columns=list(CURVE_COLUMNS)))
    write_csv_atomic(paths["summary"], summary.reindex(columns=list(SUMMARY_COLUMNS)))
    extra_tables = {}
    for name, columns in (("standard_levels", STANDARD_LEVEL_COLUMNS),
                          ("plate_qc", PLATE_QC_COLUMNS),
                          ("vendor_comparison", VENDOR_COMPARISON_COLUMNS)):
        frames = [getattr(r, name) for r in results if getattr(r, name, None) is not None]
        extra_tables[name] = (pd.concat(frames, ignore_index=True) if frames else
                              pd.DataFrame(columns=list(columns))).reindex(columns=list(columns))
        if name == "vendor_comparison":
            if not frames:
                continue
            paths["vendor_comparison"] = layout.vendor_comparison
        write_csv_atomic(paths[name], extra_tables[name])
    write_h5ad_atomic(paths["h5ad"], to_anndata(results, options=options))
    failed = pd.DataFrame(list(failures), columns=["input", "reason"])
    write_csv_atomic(paths["failed"], failed, sep="\t")
    extra = {
        "plates": [{
            "path": r.path, "format": r.format,
            "plates": sorted(set(r.curves["plate"].astype(str))) if not r.curves.empty else [],
            "repairs": r.repairs, "warnings": r.warnings,
            "bridging": r.bridging.to_dict(orient="records") if r.bridging is not None else None,
        } for r in results],
        "failures": [{"input": str(i), "reason": str(m)} for i, m in failures],
        "flags": list(FLAGS),
        "plate_qc": extra_tables["plate_qc"].to_dict(orient="records"),
    }
    params = dict(parameters) if parameters is not None else (options.to_dict() if options
                                                              else {})
    existing = [p for p in inputs if Path(p).is_file()]
    write_json_atomic(paths["provenance"], build_provenance(
        inputs=existing, parameters=params, command=command, extra=extra))
    return paths
