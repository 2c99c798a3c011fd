"""Kit standards tables: expected concentrations of standards and controls, per analyte.

Contract: ``read_standards(path) -> DataFrame`` reads a CSV/TSV with columns
``analyte, standard, expected_conc, unit`` and optional ``control_low, control_high`` (one row per
analyte × standard or control name, e.g. ``IL-6, Standard1, 5850, pg/mL``);
``apply_standards(plate, table)`` writes them onto a :class:`PlateData`: the table wins over the
file's expected concentrations, every difference is warned about, wells named like a table entry
become standards (or controls, when the entry has a control range).

Matching is by sample name (case and blanks ignored; ``Standard1``, ``Std 1``, ``S1`` and ``S01``
are the same standard, controls alike) and analyte (exact, else ignoring case and punctuation, so
``IL-1b`` matches ``IL1B`` and Bio-Plex's ``Hu IL-1b (32)``).
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from typing import TYPE_CHECKING, Any

from ...errors import InputError
from ...schema import analyte_key
from . import PlateData, classify_sample, read_text, to_float, well_sort_key

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["read_standards", "apply_standards", "describe_columns", "STANDARDS_COLUMNS"]

STANDARDS_COLUMNS = ("analyte", "standard", "expected_conc", "unit", "control_low", "control_high")
# header synonyms vendors' kit lot sheets and labs use, compared after _header_key (lower case,
# punctuation and "_" as blanks): "Expected Conc.", "expected_conc_pg_ml", "Range Low", "Std"...
_ALIASES = {
    "analyte": "analyte", "cytokine": "analyte", "bead": "analyte", "analyte name": "analyte",
    "target": "analyte", "assay": "analyte",
    "standard": "standard", "sample": "standard", "name": "standard", "reagent": "standard",
    "level": "standard", "std": "standard", "standard name": "standard",
    "sample name": "standard", "standard id": "standard", "calibrator": "standard",
    "expected conc": "expected_conc", "expected": "expected_conc", "concentration": "expected_conc",
    "expected concentration": "expected_conc", "exp conc": "expected_conc", "conc": "expected_conc",
    "exp concentration": "expected_conc", "nominal concentration": "expected_conc",
    "unit": "unit", "units": "unit", "concentration unit": "unit", "conc unit": "unit",
    "control low": "control_low", "low": "control_low", "control range low": "control_low",
    "range low": "control_low", "low range": "control_low", "lower limit": "control_low",
    "control high": "control_high", "high": "control_high", "control range high": "control_high",
    "range high": "control_high", "high range": "control_high", "upper limit": "control_high",
    "bead region": "bead_region", "region": "bead_region", "bead id": "bead_region",
    "beadid": "bead_region", "bead number": "bead_region",
}
_UNIT_IN_HEADER = re.compile(r"\b(fg|pg|ng|ug|µg|mg|iu|u)\s*[/_ ]\s*(ml|l|dl)\b", re.I)


def _header_key(header: str) -> tuple[str, str]:
    """A header cell → (alias key, unit named in it): ``Expected Conc. (pg/mL)`` →
    ``("expected conc", "pg/mL")``, ``expected_conc_pg_ml`` → ``("expected conc", "pg/mL")``."""
    text = header.strip().lower().replace("_", " ")
    unit = ""
    m = _UNIT_IN_HEADER.search(text)
    if m:
        unit = f"{m.group(1)}/{m.group(2)}".replace("ml", "mL").replace("dl", "dL")
        text = (text[:m.start()] + text[m.end():])
    key = " ".join(re.sub(r"[^0-9a-zµ]+", " ", text).split())
    return key, unit


_norm_analyte = analyte_key  # the loose analyte key of immunoprofile.schema


_STD_NAME = re.compile(r"^(?:standard|std|s|cal|calibrator)[\s_\-]*0*(\d+)$")
_CTRL_NAME = re.compile(r"^(?:control|ctrl|c)[\s_\-]*0*(\d+)$")


def _name_key(name: str) -> str:
    """Sample-name key: ``Standard1``, ``Std 1``, ``S01`` → ``standard:1`` (controls alike)."""
    text = str(name).strip().lower()
    m = _STD_NAME.match(text)
    if m:
        return f"standard:{int(m.group(1))}"
    m = _CTRL_NAME.match(text)
    if m:
        return f"control:{int(m.group(1))}"
    return text


def read_standards(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a kit standards table.

    Parameters
    ----------
    path
        CSV or TSV (delimiter detected) with a header row; columns ``analyte, standard,
        expected_conc, unit`` and optionally ``control_low, control_high`` and a bead region.
        The headers of vendors' kit lot sheets and labs are read (``Standard``/``Sample``/
        ``Std``, ``Expected Conc.``/``expected_conc_pg_ml`` (a unit in the header is the unit
        when there is no unit column), ``Units``/``Unit``, ``Range Low``/``Range High``,
        ``Bead Region``/``Region``); ``table.attrs["columns"]`` records which header fed which
        field (:func:`describe_columns`), other columns are listed as ignored.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`STANDARDS_COLUMNS`; ``expected_conc`` float (NaN allowed only for controls
        given as a range).

    Raises
    ------
    InputError
        Missing columns, non-numeric or non-positive concentrations, duplicate entries (all
        problems listed in one line).
    """
    import pandas as pd

    text = read_text(path)
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise InputError(path, "empty standards table")
    delimiter = "\t" if lines[0].count("\t") > lines[0].count(",") else \
        (";" if lines[0].count(";") > lines[0].count(",") else ",")
    try:
        rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter))
    except csv.Error as exc:
        raise InputError(path, f"malformed standards table ({exc})") from None
    idx: dict[str, int] = {}
    header_unit = ""
    ignored: list[str] = []
    for i, cell in enumerate(rows[0]):
        key, unit = _header_key(cell)
        name = _ALIASES.get(key, key.replace(" ", "_"))
        if name in (*STANDARDS_COLUMNS, "bead_region") and name not in idx:
            idx[name] = i
            if name == "expected_conc" and unit:
                header_unit = unit
        elif cell.strip():
            ignored.append(cell.strip())
    missing = [c for c in ("analyte", "standard", "expected_conc") if c not in idx]
    if missing:
        raise InputError(path, f"standards table lacks column(s) {', '.join(missing)} (need "
                               "analyte, standard, expected_conc[, unit, control_low, "
                               "control_high]; synonyms such as Standard/Sample/Std, Expected "
                               f"Conc., Units, Range Low/High are read; found {rows[0]})")
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    regions: dict[str, int] = {}
    for n, row in enumerate(rows[1:], start=2):
        def cell(col: str) -> str:
            i = idx.get(col)
            return row[i].strip() if i is not None and i < len(row) else ""
        analyte, standard = cell("analyte"), cell("standard")
        if not analyte or not standard:
            problems.append(f"line {n}: analyte and standard are required")
            continue
        rec = {"analyte": analyte, "standard": standard,
               "unit": cell("unit") or header_unit}
        for col in ("expected_conc", "control_low", "control_high"):
            raw = cell(col)
            value = to_float(raw)
            if raw and not math.isfinite(value):
                problems.append(f"line {n}: {col} {raw!r} is not a number")
            elif math.isfinite(value) and value < 0:
                problems.append(f"line {n}: {col} {raw!r} is negative")
            rec[col] = value
        if not math.isfinite(rec["expected_conc"]) and not (
                math.isfinite(rec["control_low"]) or math.isfinite(rec["control_high"])):
            problems.append(f"line {n}: no expected_conc for {standard}/{analyte}")
        key = (_norm_analyte(analyte), _name_key(standard))
        if key in seen:
            problems.append(f"line {n}: duplicate entry {standard}/{analyte}")
        seen.add(key)
        region = to_float(cell("bead_region"))
        if math.isfinite(region):
            regions.setdefault(analyte, int(region))
        records.append(rec)
    if problems:
        raise InputError(path, "; ".join(problems[:10]) + (" …" if len(problems) > 10 else ""))
    if not records:
        raise InputError(path, "standards table has a header but no rows")
    table = pd.DataFrame.from_records(records, columns=list(STANDARDS_COLUMNS))
    # which header fed which field (the command reports it), the bead regions for matching
    table.attrs["columns"] = {name: rows[0][i].strip() for name, i in idx.items()}
    if header_unit and "unit" not in idx:
        table.attrs["columns"]["unit"] = f"{rows[0][idx['expected_conc']].strip()} (header)"
    table.attrs["ignored_columns"] = ignored
    table.attrs["bead_regions"] = regions
    return table


def describe_columns(table: pd.DataFrame) -> str:
    """One line saying which of the sheet's columns :func:`read_standards` took."""
    cols = table.attrs.get("columns") or {}
    taken = ", ".join(f"{field} <- {header!r}" for field, header in cols.items())
    ignored = table.attrs.get("ignored_columns") or []
    return f"standards table columns: {taken}" + (
        f"; ignored: {', '.join(repr(c) for c in ignored)}" if ignored else "")


def apply_standards(plate: PlateData, table: pd.DataFrame) -> None:
    """Write a standards table onto a plate (in place); the table wins over the file.

    Parameters
    ----------
    plate
        The plate; ``wells.expected_conc``, ``unit``, ``sample_type``, ``warnings`` and
        ``metadata["control_ranges"]``/``metadata["standards_table"]`` are updated.
    table
        From :func:`read_standards`.
    """
    df = plate.wells
    plate_analytes = list(dict.fromkeys(df["analyte"]))
    exact = {a: a for a in plate_analytes}
    loose = {}
    for a in plate_analytes:
        loose.setdefault(_norm_analyte(a), a)
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    unmatched: list[str] = []
    # a kit sheet's bead region matches the plate's when the names differ ("IL-6" vs "Hu IL-6")
    by_region: dict[int, str] = {}
    if "bead_region" in df.columns:
        for a, r in zip(df["analyte"], df["bead_region"]):
            if r is not None and not (isinstance(r, float) and math.isnan(r)) and str(r) != "<NA>":
                by_region.setdefault(int(r), a)
    sheet_regions = table.attrs.get("bead_regions") or {}
    for rec in table.to_dict("records"):
        a = exact.get(rec["analyte"]) or loose.get(_norm_analyte(rec["analyte"])) or \
            by_region.get(sheet_regions.get(rec["analyte"], -1))
        if a is None:
            unmatched.append(str(rec["analyte"]))
            continue
        entries[(a, _name_key(rec["standard"]))] = rec
    if unmatched:
        names = sorted(set(unmatched))
        plate.warnings.append("standards table analyte(s) not on the plate: "
                              + ", ".join(names[:10]) + (" …" if len(names) > 10 else ""))
    differences: list[str] = []
    matched = 0
    ranges = plate.metadata.setdefault("control_ranges", {})
    keys = df["sample"].map(_name_key)
    # a type the export's type column (Bio-Plex B/S/C/X, a generic sample_type) or a layout gave
    # wins over a name that looks like a kit entry: an unknown literally named "S1" stays one
    typed = plate.metadata.get("sample_types_from") in ("type column", "layout")
    kept: list[str] = []
    for i in range(len(df)):
        rec = entries.get((df.at[i, "analyte"], keys.iat[i]))
        if rec is None:
            continue
        if typed and df.at[i, "sample_type"] not in ("standard", "control"):
            kept.append(f"{df.at[i, 'well']} {df.at[i, 'sample']}")
            continue
        matched += 1
        new = rec["expected_conc"]
        old = df.at[i, "expected_conc"]
        if math.isfinite(new):
            if math.isfinite(old) and not math.isclose(old, new, rel_tol=1e-6):
                differences.append(f"{df.at[i, 'well']} {df.at[i, 'sample']}/"
                                   f"{df.at[i, 'analyte']}: file {old:g}, table {new:g}")
            df.at[i, "expected_conc"] = new
        if rec["unit"]:
            df.at[i, "unit"] = rec["unit"]
        is_control = math.isfinite(rec["control_low"]) or math.isfinite(rec["control_high"])
        if df.at[i, "sample_type"] not in ("standard", "control"):
            kind = classify_sample(df.at[i, "sample"])
            df.at[i, "sample_type"] = kind if kind in ("standard", "control") else \
                ("control" if is_control else "standard")
        if is_control:
            ranges.setdefault(df.at[i, "sample"], {})[df.at[i, "analyte"]] = [
                rec["control_low"], rec["control_high"]]
    if not ranges:
        plate.metadata.pop("control_ranges", None)
    if kept:
        names = list(dict.fromkeys(kept))
        plate.warnings.append(
            f"{len(names)} well(s) named like a standards-table entry keep the type the "
            f"{'layout' if plate.metadata.get('sample_types_from') == 'layout' else 'file'} "
            "gives them (not a standard/control): " + ", ".join(names[:6])
            + (" …" if len(names) > 6 else ""))
    # the analyte's unit is one per plate: spread the table's unit to the unknowns too
    units = {a: rec["unit"] for (a, _), rec in entries.items() if rec["unit"]}
    for a, unit in units.items():
        df.loc[df["analyte"] == a, "unit"] = unit
    if differences:
        differences.sort(key=lambda s: well_sort_key(s.split(" ")[0]))
        plate.warnings.append(
            f"standards table differs from the file's expected concentrations for "
            f"{len(differences)} value(s); the table is used: " + "; ".join(differences[:6])
            + (" …" if len(differences) > 6 else ""))
    std_missing = df.loc[(df["sample_type"] == "standard") & df["expected_conc"].isna(), "sample"]
    if len(std_missing):
        names = sorted(set(std_missing))
        plate.warnings.append("standard well(s) without an expected concentration in the file or "
                              "table: " + ", ".join(names[:10])
                              + (" …" if len(names) > 10 else ""))
    plate.metadata["standards_table"] = {"entries": int(len(table)), "values_matched": matched,
                                         "differences": len(differences),
                                         "columns": dict(table.attrs.get("columns") or {})}
