"""Bio-Rad Bio-Plex Manager exports (.xls, .xlsx, BPM 6.x XML) → :class:`PlateData`.

Contract: ``read_bioplex(path, format=None)`` returns the tidy well × analyte table of a Bio-Plex
Manager export, or raises :class:`~immunoprofile.errors.InputError`.

* Excel reports (.xls through xlrd, .xlsx through openpyxl read-only/data-only, so no macro or
  formula is ever run): one sheet per analyte (``Hu IL-6 (19)`` — the bead region in brackets), a
  ``Key: value`` header, a table ``Analyte, Type, Well, [Outlier,] Description, FI, FI - Bkgd, Std
  Dev, %CV, Obs Conc, Exp Conc, ..., Dilution, [Bead Count,] ...`` and a footer with the printed
  regression (``Std. Curve: FI = a + (d - a) / ((1 + (Conc / c)^b))^e``). Rows of averaged
  replicates keep their well list (``"A1,A2"``). ``FI`` → median_mfi, ``FI - Bkgd`` → net_mfi,
  ``Type`` (B, S#, C#, X#) → sample_type, ``Description`` (else Type) → sample; ``Obs Conc`` →
  ``vendor``; the printed curve → ``metadata["vendor_curves"]`` in the xPONENT parameterisation
  y = A + (B − A)/(1 + (x/C)^D)^F (A = a, B = d, C = c, D = b, F = e).
* BPM XML (via :func:`immunoprofile._xml.parse_xml`): samples (Blank/Standard/Control/Unknown)
  with their member wells' per-analyte Reading (FI), expected concentrations (0 = not set) and
  dilution; bead counts from the per-well ``BeadRegion/RegionCount`` where the export has them;
  interpolator settings (regression, weighting) into ``metadata["vendor_curves"]``.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

from ..._xml import local_name, parse_xml
from ...errors import InputError
from . import (MAX_PLATE_BYTES, PlateData, build_vendor, build_wells, classify_sample,
               head_bytes, parse_vendor_value, to_float)

__all__ = ["read_bioplex", "parse_curve_equation"]

_REGION_RE = re.compile(r"\((\d+)\)\s*$")
_NUM = r"([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)"
_CURVE_RE = re.compile(
    r"FI\s*=\s*" + _NUM + r"\s*\+\s*\(\s*" + _NUM + r"\s*([-+])\s*" + _NUM + r"\s*\)\s*/\s*"
    r"\(+\s*1\s*\+\s*\(\s*Conc\s*/\s*" + _NUM + r"\s*\)\s*\^\s*" + _NUM + r"\s*\)+"
    r"(?:\s*\^\s*" + _NUM + r")?")
_TYPE_MAP = {"B": "background", "S": "standard", "C": "control", "X": "unknown"}


def parse_curve_equation(text: str) -> dict[str, float] | None:
    """Parse a printed Bio-Plex curve ``FI = a + (d - a) / ((1 + (Conc / c)^b))^e``.

    Returns
    -------
    dict or None
        ``{"A": a, "B": d, "C": c, "D": b, "F": e}`` (xPONENT naming; 4PL → F = 1), or ``None``
        when the text is not such an equation.
    """
    m = _CURVE_RE.search(text or "")
    if m is None:
        return None
    a, d, sign, a2, c, b, e = m.groups()
    a_val = float(a)
    # the printed "(d - a)" repeats a with its sign flipped: "(20147.9 + 8.49859)" for a = -8.49859
    a2_val = float(a2) if sign == "-" else -float(a2)
    if not math.isclose(a_val, a2_val, rel_tol=1e-6, abs_tol=1e-12):
        return None
    return {"A": a_val, "B": float(d), "C": float(c), "D": float(b),
            "F": float(e) if e is not None else 1.0}


def read_bioplex(path: str | os.PathLike[str], *, format: str | None = None) -> PlateData:
    """Read a Bio-Plex Manager export (.xls, .xlsx or XML; detected by content if not given).

    Parameters
    ----------
    path
        The export.
    format
        ``"bioplex_xls"``, ``"bioplex_xlsx"`` or ``"bioplex_xml"``.

    Returns
    -------
    PlateData
    """
    if format is None:
        head = head_bytes(path)
        format = ("bioplex_xls" if head.startswith(b"\xd0\xcf\x11\xe0") else
                  "bioplex_xlsx" if head.startswith(b"PK") else "bioplex_xml")
    _check_size(path)
    if format == "bioplex_xml":
        return _read_xml(path)
    sheets = _xls_sheets(path) if format == "bioplex_xls" else _xlsx_sheets(path)
    return _read_sheets(path, sheets, format)


def _check_size(path: str | os.PathLike[str]) -> None:
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise InputError(path, f"cannot read file ({exc.strerror or exc})") from None
    if size > MAX_PLATE_BYTES:
        raise InputError(path, f"file is {size} bytes; a plate export is at most {MAX_PLATE_BYTES}")


def _xls_sheets(path: str | os.PathLike[str]) -> list[tuple[str, list[list[Any]]]]:
    import xlrd
    from xlrd.compdoc import CompDocError

    try:
        # xlrd logs damage to stdout by default; we report it through InputError instead
        book = xlrd.open_workbook(os.fspath(path), on_demand=True, logfile=io.StringIO())
        try:
            out = []
            for i in range(book.nsheets):
                sheet = book.sheet_by_index(i)
                out.append((sheet.name, [sheet.row_values(r) for r in range(sheet.nrows)]))
        finally:
            book.release_resources()
    # xlrd reports a corrupt workbook through many exception types (its own, struct, index,
    # assertion, ...); all mean "this .xls cannot be read"
    # (RecursionError: a cyclic directory tree; BadZipFile: an .xlsx forced through xlrd)
    except (xlrd.XLRDError, CompDocError, zipfile.BadZipFile, struct.error, AssertionError,
            IndexError, KeyError, ValueError, TypeError, OverflowError, EOFError,
            UnicodeDecodeError, ZeroDivisionError, RecursionError) as exc:
        raise InputError(path, f"cannot read the .xls workbook ({type(exc).__name__}: "
                               f"{str(exc)[:120]})") from None
    return out


def _xlsx_sheets(path: str | os.PathLike[str]) -> list[tuple[str, list[list[Any]]]]:
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    # a zip can claim (or hold) far more than it weighs: refuse before decompressing anything
    try:
        with zipfile.ZipFile(os.fspath(path)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise InputError(path, f"cannot read the .xlsx workbook ({type(exc).__name__}: "
                               f"{str(exc)[:120]})") from None
    if unpacked > 4 * MAX_PLATE_BYTES:
        raise InputError(path, f".xlsx unpacks to {unpacked} bytes; refusing (a plate export is "
                               "far smaller)")
    try:
        book = openpyxl.load_workbook(os.fspath(path), read_only=True, data_only=True,
                                      keep_vba=False, keep_links=False)
        try:
            out = []
            for ws in book.worksheets:
                out.append((ws.title, [list(r) for r in ws.iter_rows(values_only=True)]))
        finally:
            book.close()
    except (InvalidFileException, zipfile.BadZipFile, zlib.error, KeyError, ValueError, TypeError,
            IndexError, AttributeError, EOFError, OSError, SyntaxError) as exc:
        # SyntaxError: openpyxl's XML parser reports malformed parts as ParseError (a SyntaxError)
        raise InputError(path, f"cannot read the .xlsx workbook ({type(exc).__name__}: "
                               f"{str(exc)[:120]})") from None
    return out


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _read_sheets(path: str | os.PathLike[str], sheets: list[tuple[str, list[list[Any]]]],
                 fmt: str) -> PlateData:
    records: list[dict[str, Any]] = []
    vendor: list[dict[str, Any]] = []
    warnings: list[str] = []
    curves: dict[str, dict[str, Any]] = {}
    header_meta: dict[str, str] = {}
    analytes_seen: list[str] = []
    for sheet_name, rows in sheets:
        start = None
        for i, row in enumerate(rows[:60]):
            cells = [_text(c).lower() for c in row]
            if "type" in cells and "well" in cells and "fi" in cells:
                start = i
                break
        if start is None:
            continue  # not an analyte sheet (e.g. "Project Template")
        meta = {}
        for row in rows[:start]:
            first = _text(row[0]) if row else ""
            if ":" in first:
                key, _, value = first.partition(":")
                meta[key.strip()] = value.strip()
        for k, v in meta.items():
            if k != "Analyte":
                header_meta.setdefault(k, v)
        cols = {_text(c).lower(): j for j, c in enumerate(rows[start]) if _text(c)}
        analyte = meta.get("Analyte") or sheet_name
        if analyte in analytes_seen:
            warnings.append(f"sheet {sheet_name!r}: analyte {analyte!r} appears twice; skipped")
            continue
        analytes_seen.append(analyte)
        m = _REGION_RE.search(analyte)
        region = float(m.group(1)) if m else math.nan
        plate = header_meta.get("Plate ID") or Path(path).stem

        def get(row: list[Any], name: str) -> Any:
            j = cols.get(name)
            return row[j] if j is not None and j < len(row) else None

        end = start + 1
        for row in rows[start + 1:]:
            if not any(_text(c) for c in row):
                break
            end += 1
            wtype = _text(get(row, "type"))
            well = re.sub(r"\s+", "", _text(get(row, "well")).upper())
            if not wtype or not well:
                continue
            desc = _text(get(row, "description"))
            stype = _TYPE_MAP.get(wtype[:1].upper(), None) if re.match(r"^[BSCX]\d*$", wtype,
                                                                        re.I) else None
            records.append({
                "plate": plate, "well": well, "sample": desc or wtype, "_desc": desc,
                "_sheet": sheet_name,
                "sample_type": stype or classify_sample(desc or wtype),
                "analyte": analyte, "bead_region": region,
                "median_mfi": to_float(get(row, "fi")), "net_mfi": to_float(get(row, "fi - bkgd")),
                "count": to_float(get(row, "bead count")),
                "dilution": to_float(get(row, "dilution")),
                "expected_conc": to_float(get(row, "exp conc")),
            })
            if "obs conc" in cols:
                raw = get(row, "obs conc")
                value, flag = parse_vendor_value(raw)
                vendor.append({"plate": plate, "well": well, "analyte": analyte,
                               "concentration": value, "flag": flag, "raw": _text(raw)})
        curve: dict[str, Any] = {}
        for row in rows[end:]:
            text = _text(row[0]) if row else ""
            if text.startswith("Regression Type:"):
                curve["model"] = text.split(":", 1)[1].strip()
            elif text.startswith("Std. Curve:"):
                curve["equation"] = text.split(":", 1)[1].strip()
                params = parse_curve_equation(text)
                if params:
                    curve.update(params)
                else:
                    warnings.append(f"{analyte}: printed standard curve not understood: "
                                    f"{text[:80]!r}")
            elif text.startswith("FitProb."):
                for part in text.split(","):
                    k, _, v = part.partition("=")
                    curve[k.strip().rstrip(".").lower()] = to_float(v)
        if curve:
            curves[analyte] = curve
    if not records:
        raise InputError(path, "no analyte sheet with a 'Type, Well, FI' table found (not a "
                               "Bio-Plex Manager report?)")
    conflicts = _one_id_per_well(records)
    if conflicts:
        warnings.append(
            f"the Description of {len(conflicts)} well(s) differs between analyte sheets; "
            "each well keeps the first sheet's (" + "; ".join(conflicts[:4])
            + (" …" if len(conflicts) > 4 else "") + ")")
    metadata: dict[str, Any] = {"software": "Bio-Plex Manager", "sheets": [s for s, _ in sheets],
                                "sample_types_from": "type column"}
    for key, name in (("File Name", "source_file"), ("Acquisition Date", "date"),
                      ("Reader Serial Number", "serial_number"), ("Plate ID", "batch"),
                      ("RP1 PMT (Volts)", "rp1_pmt_volts"), ("Standard Lot", "standard_lot")):
        if header_meta.get(key):
            metadata[name] = header_meta[key]
    if curves:
        metadata["vendor_curves"] = curves
    if any("," in r["well"] for r in records):
        metadata["replicates_averaged"] = True
    wells = build_wells(records, path=path, warnings=warnings, metadata=metadata)
    return PlateData(wells=wells, metadata=metadata, warnings=warnings,
                     vendor=build_vendor(vendor), path=os.fspath(path), format=fmt)


def _one_id_per_well(records: list[dict[str, Any]]) -> list[str]:
    """One sample id per well across all analyte sheets (in place): the first sheet's
    Description, else the first one any sheet gives, else the Type code. A 2007 workbook can
    carry the Description on one analyte's sheet only, so without this the same well would get
    ``8`` on one sheet and ``S4`` on another. Returns the wells whose sheets disagree."""
    first: dict[tuple[str, str], tuple[str, str]] = {}
    seen: dict[tuple[str, str], dict[str, str]] = {}
    for r in records:
        key = (r["plate"], r["well"])
        if r["_desc"]:
            first.setdefault(key, (r["_desc"], r["_sheet"]))
            seen.setdefault(key, {}).setdefault(r["_desc"], r["_sheet"])
    conflicts = [f"{w}: " + ", ".join(f"{d!r} on {sh!r}" for d, sh in descs.items())
                 for (_, w), descs in seen.items() if len(descs) > 1]
    for r in records:
        chosen = first.get((r["plate"], r["well"]))
        if chosen is not None:
            r["sample"] = chosen[0]
        del r["_desc"], r["_sheet"]
    return conflicts


# --------------------------------------------------------------------------------------------
# BPM XML

_GROUPS = {"blank": "background", "standard": "standard", "control": "control",
           "unknown": "unknown"}


def _child(elem: Any, name: str) -> Any:
    for c in elem:
        if local_name(c.tag) == name:
            return c
    return None


def _children(elem: Any, name: str) -> list[Any]:
    return [c for c in elem if local_name(c.tag) == name]


def _ctext(elem: Any, name: str) -> str:
    c = _child(elem, name) if elem is not None else None
    return (c.text or "").strip() if c is not None else ""


def _well_name(elem: Any) -> str | None:
    row = to_float(elem.get("RowNo"))
    col = to_float(elem.get("ColNo"))
    if not (math.isfinite(row) and math.isfinite(col)) or not (1 <= row <= 16 and 1 <= col <= 24):
        return None
    return f"{chr(ord('A') + int(row) - 1)}{int(col)}"


def _read_xml(path: str | os.PathLike[str]) -> PlateData:
    root = parse_xml(path)
    if local_name(root.tag) != "BioPlexManager":
        raise InputError(path, f"XML root is <{local_name(root.tag)}>, not a Bio-Plex Manager "
                               "export <BioPlexManager>")
    warnings: list[str] = []
    # per-well bead counts and medians from the raw acquisition section
    counts: dict[tuple[str, int], float] = {}
    plate_id = ""
    wells_elem = _child(root, "Wells")
    for w in (_children(wells_elem, "Well") if wells_elem is not None else []):
        name = _well_name(w)
        plate_id = plate_id or _ctext(w, "PlateID")
        regions = _child(w, "BeadRegions")
        if name is None or regions is None:
            continue
        for br in _children(regions, "BeadRegion"):
            rn = to_float(br.get("RegionNumber"))
            if math.isfinite(rn):
                counts[(name, int(rn))] = to_float(_ctext(br, "RegionCount"))
    plate = plate_id or _ctext(root, "NativeDocumentName") or Path(path).stem
    records: list[dict[str, Any]] = []
    vendor: list[dict[str, Any]] = []
    zero_expected = 0
    samples = _child(root, "Samples")
    for group in (list(samples) if samples is not None else []):
        for sample in group:
            kind = _GROUPS.get(local_name(sample.tag).lower())
            if kind is None:
                continue
            label = _ctext(sample, "Label")
            desc = _ctext(sample, "Description")
            dilution = to_float(_ctext(sample, "Dilution"))
            expected: dict[int, float] = {}
            analytes_elem = _child(sample, "Analytes")
            for an in (_children(analytes_elem, "Analyte") if analytes_elem is not None else []):
                rn = to_float(an.get("RegionNumber"))
                exp = to_float(_ctext(an, "ExpectedConc"))
                if math.isfinite(rn) and math.isfinite(exp):
                    if exp > 0:
                        expected[int(rn)] = exp
                    elif kind == "standard":
                        zero_expected += 1
            members = _child(sample, "MemberWells")
            for mw in (_children(members, "MemberWell") if members is not None else []):
                well = _well_name(mw)
                mwa = _child(mw, "MWAnalytes")
                if well is None or mwa is None:
                    continue
                for a in _children(mwa, "MWAnalyte"):
                    rn_f = to_float(a.get("RegionNumber"))
                    rn = int(rn_f) if math.isfinite(rn_f) else -1
                    name = _ctext(a, "AnalyteName") or f"R{rn}"
                    reading = _child(a, "Reading")
                    valid = reading is not None and reading.get("Valid", "true").lower() == "true"
                    records.append({
                        "plate": plate, "well": well, "sample": desc or label,
                        "sample_type": kind, "analyte": name,
                        "bead_region": rn if rn >= 0 else math.nan,
                        "median_mfi": to_float(reading.text) if valid else math.nan,
                        "count": counts.get((well, rn), math.nan),
                        "dilution": dilution, "expected_conc": expected.get(rn, math.nan),
                    })
                    obs = _child(a, "MWObsConc")
                    if obs is not None:
                        ok = obs.get("ReadingOK", "true").lower() == "true"
                        vendor.append({"plate": plate, "well": well, "analyte": name,
                                       "concentration": to_float(obs.text) if ok else math.nan,
                                       "flag": "ok" if ok else "missing",
                                       "raw": (obs.text or "").strip()})
    if not records:
        raise InputError(path, "Bio-Plex XML without sample member wells and readings")
    if zero_expected:
        warnings.append(f"{zero_expected} standard expected concentration(s) are 0 in the file "
                        "(not set in Bio-Plex Manager); supply them with a standards table")
    curves: dict[str, dict[str, Any]] = {}
    sc = _child(root, "StandardCurves")
    interps = _child(sc, "Interpolators") if sc is not None else None
    for ip in (_children(interps, "Interpolator") if interps is not None else []):
        name = _ctext(ip, "AnalyteName")
        weighting = _child(ip, "LogisticWeighting")
        rec = _child(ip, "RecoveryRange")
        curves[name or f"R{ip.get('RegionNumber')}"] = {
            "model": _ctext(ip, "Regression"),
            "valid": ip.get("IsValid", "").lower() == "true",
            "weighting": _ctext(weighting, "LogisticWeightingModel"),
            "weighting_A": to_float(_ctext(weighting, "LogisticWeightingCoefficientA")),
            "weighting_B": to_float(_ctext(weighting, "LogisticWeightingCoefficientB")),
            "recovery_range": [to_float(rec.get("Min")), to_float(rec.get("Max"))]
            if rec is not None else None,
            "units": _ctext(ip, "ConcentrationUnits"),
            "error": _ctext(ip, "EquationErr"),
        }
    units = {a: c["units"] for a, c in curves.items() if c.get("units")}
    for r in records:
        r["unit"] = units.get(r["analyte"], "")
    metadata: dict[str, Any] = {"software": "Bio-Plex Manager",
                                "sample_types_from": "type column",
                                "build": root.get("BioPlexManagerVersion", ""),
                                "batch": plate,
                                "n_wells_with_bead_data": len({k[0] for k in counts})}
    if curves:
        metadata["vendor_curves"] = curves
    wells = build_wells(records, path=path, warnings=warnings, metadata=metadata)
    return PlateData(wells=wells, metadata=metadata, warnings=warnings,
                     vendor=build_vendor(vendor), path=os.fspath(path), format="bioplex_xml")
