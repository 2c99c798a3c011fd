"""Luminex xPONENT / Intelliflex CSV exports → :class:`PlateData`.

Contract: ``read_xponent(path)`` reads every xPONENT-style export (3.1, 4.2, 4.3; LX200, MAGPIX,
FlexMAP 3D, Intelliflex; quoted, unquoted, Excel re-saved with comma-padded rows or with ``;``
and decimal commas, UTF-8 BOM, ``NaN``/``Not Reported`` cells, extra DataTypes) and
``read_intelliflex_flat(path)`` the flat Intelliflex 2.2 CSV (one row per well, ``R25: RP1 MEDIAN``
columns); both return the tidy well × analyte table or raise
:class:`~immunoprofile.errors.InputError`.

The xPONENT file is a header of ``key,value`` rows, then ``Results`` and blocks that each start
with ``DataType:,<name>``. Per-well blocks (Median, Net MFI, Count, Result, Dilution Factor, ...)
have a ``Location,Sample,<analytes>...`` header and rows keyed by ``1(1,A1)`` (acquisition
order, (plate, well)); analyte-level blocks (Units, Per Bead Count, Analysis Types, Analysis
Coefficients, R^2) have ``Analyte:``/``BeadID:`` rows; the expected-concentration blocks have
``Reagent,<analytes>`` and one row per standard/control name.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from pathlib import Path
from typing import Any

from ...errors import InputError
from . import (PlateData, build_vendor, build_wells, parse_vendor_value, parse_well, read_text,
               to_float)

__all__ = ["read_xponent", "read_intelliflex_flat", "split_blocks"]

_LOCATION_RE = re.compile(r"^\s*\d+\s*\(\s*(\d+)\s*,")
_SPLIT_HEAD = re.compile(r"^\s*\d+\s*\(\s*\d+\s*$")
_SPLIT_TAIL = re.compile(r"^\s*[A-Pa-p]\s*\d{1,2}\s*\)\s*$")
_SKIP_COLUMNS = {"total events", ""}
# header keys copied into metadata under a stable name
_HEADER_KEYS = {
    "build": "build", "date": "date", "sn": "serial_number", "batch": "batch",
    "operator": "operator", "protocolname": "protocol", "protocolversion": "protocol_version",
    "protocoldevelopingcompany": "protocol_company", "batchstarttime": "batch_start",
    "batchstoptime": "batch_stop", "batchdescription": "batch_description",
    "samplevolume": "sample_volume", "ddgate": "dd_gate", "sampletimeout": "sample_timeout",
}


_DECIMAL_COMMA = re.compile(r"^[-+]?\d+,\d+(?:[eE][-+]?\d+)?$")


def _delimiter(text: str) -> str:
    """``;`` for an Excel re-save in a decimal-comma locale (``Program;xPONENT``), else ``,``."""
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    return ";" if first.count(";") > first.count(",") else ","


def _rows(text: str, path: str | os.PathLike[str]) -> list[list[str]]:
    """CSV rows with surrounding blanks trimmed from cells and trailing empty cells dropped.

    Dropping the trailing empties makes the quoted export and its Excel re-save (which pads every
    row with commas to the widest row) read identically. A semicolon-separated re-save (a
    decimal-comma locale) has its decimal commas turned back into points.
    """
    delimiter = _delimiter(text)
    try:
        raw_rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as exc:
        raise InputError(path, f"malformed CSV ({exc})") from None
    rows = []
    for row in raw_rows:
        cells = [c.strip() for c in row]
        if delimiter == ";":
            cells = [c.replace(",", ".") if _DECIMAL_COMMA.match(c) else c for c in cells]
        while cells and cells[-1] == "":
            cells.pop()
        rows.append(cells)
    return rows


Rows = list[list[str]]


def split_blocks(rows: Rows) -> tuple[Rows, list[tuple[str, Rows]]]:
    """Split xPONENT rows into the header rows and ``(DataType name, rows)`` blocks.

    A block runs from its ``DataType:`` row to the next ``DataType:`` row, the CRC trailer, or the
    first blank row after it has content.
    """
    header: list[list[str]] = []
    blocks: list[tuple[str, list[list[str]]]] = []
    current: list[list[str]] | None = None
    for row in rows:
        first = row[0] if row else ""
        if first.lower() == "datatype:":
            current = []
            blocks.append((row[1] if len(row) > 1 else "", current))
            continue
        if first.startswith("-- CRC --"):
            current = None
            continue
        if current is None:
            if blocks:  # between blocks: ignore stray rows
                continue
            header.append(row)
            continue
        if not row:
            if current:
                current = None
            continue
        current.append(row)
    return header, blocks


def _header_metadata(header: list[list[str]]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for row in header:
        if not row or not row[0]:
            continue
        key = row[0].rstrip(":").strip()
        lowkey = key.lower().replace(" ", "")
        if lowkey == "program" and len(row) > 1:
            meta.setdefault("software", row[1])
            if len(row) > 3 and row[3]:
                meta.setdefault("instrument", row[3])
        elif lowkey in _HEADER_KEYS and len(row) > 1:
            value = " ".join(c for c in row[1:] if c)
            meta.setdefault(_HEADER_KEYS[lowkey], value)
        elif lowkey == "protocolanalysis":
            meta.setdefault("analysis", " ".join(c for c in row[1:] if c))
        elif lowkey == "samples" and len(row) > 1:
            meta.setdefault("n_samples", row[1])
    return meta


def _per_well(block: list[list[str]], path: str | os.PathLike[str],
              warnings: list[str], name: str
              ) -> tuple[list[str], dict[tuple[str, str], tuple[str, list[str]]]]:
    """A ``Location,Sample,<columns>`` block → (columns, {(plate_no, well): (sample, cells)})."""
    if not block:
        return [], {}
    head = block[0]
    columns = head[2:] if len(head) > 2 else []
    out: dict[tuple[str, str], tuple[str, list[str]]] = {}
    duplicates: list[str] = []
    for row in block[1:]:
        if not row:
            continue
        if len(row) > 1 and _SPLIT_HEAD.match(row[0]) and _SPLIT_TAIL.match(row[1]):
            # an unquoted re-save splits "1(1,A1)" into "1(1" and "A1)"
            row = [f"{row[0]},{row[1]}", *row[2:]]
        well = parse_well(row[0])
        if well is None:
            continue
        m = _LOCATION_RE.match(row[0])
        plate_no = m.group(1) if m else "1"
        cells = row[2:] + [""] * max(0, len(columns) - len(row[2:]))
        key = (plate_no, well)
        if key in out:
            duplicates.append(well)
        out[key] = (row[1] if len(row) > 1 else "", cells)
    if duplicates:
        warnings.append(f"DataType {name!r}: well(s) {', '.join(duplicates[:8])} listed more than "
                        "once; the last row is used")
    return columns, out


def _by_name(block: list[list[str]]) -> tuple[list[str], dict[str, list[str]]]:
    """A ``Reagent,<analytes>`` (or ``Analyte:,...``) block → (analytes, {row name: cells})."""
    if not block:
        return [], {}
    analytes = block[0][1:]
    rows: dict[str, list[str]] = {}
    for row in block[1:]:
        if row and row[0]:
            rows.setdefault(row[0].rstrip(":").strip(), row[1:])
    return analytes, rows


def _cell(cells: list[str], i: int) -> str:
    return cells[i] if i < len(cells) else ""


def read_xponent(path: str | os.PathLike[str]) -> PlateData:
    """Read an xPONENT-style CSV export (any version; Intelliflex xPONENT-style too).

    Parameters
    ----------
    path
        The export.

    Returns
    -------
    PlateData
        ``format="xponent"``; ``vendor`` holds the Result block when analysis was on;
        ``metadata["vendor_curves"]`` the Analysis Types/Coefficients/R^2 per analyte.

    Raises
    ------
    InputError
        If the file has no Median block or no wells.
    """
    text = read_text(path)
    rows = _rows(text, path)
    header, blocks = split_blocks(rows)
    warnings: list[str] = []
    metadata = _header_metadata(header)
    by_type: dict[str, list[list[str]]] = {}
    for name, block in blocks:
        key = name.strip().lower()
        if key in by_type and block:
            warnings.append(f"DataType {name!r} appears more than once; the first is used")
            continue
        by_type.setdefault(key, block)
    metadata["datatypes"] = [name for name, _ in blocks]
    if "median" not in by_type:
        raise InputError(path, "no 'DataType: Median' block found (truncated or not an xPONENT "
                               "export)")

    columns, median = _per_well(by_type["median"], path, warnings, "Median")
    analytes = [c for c in columns if c.lower() not in _SKIP_COLUMNS]
    if not analytes or not median:
        raise InputError(path, "the Median block has no analytes or no wells")
    if len(set(analytes)) != len(analytes):
        raise InputError(path, "duplicate analyte names in the Median block header")
    col_index = {c: i for i, c in enumerate(columns)}

    def block_values(name: str) -> dict[tuple[str, str], dict[str, str]]:
        cols, data = _per_well(by_type.get(name, []), path, warnings, name)
        index = {c: i for i, c in enumerate(cols)}
        return {key: {a: _cell(cells, index[a]) for a in analytes if a in index}
                for key, (_, cells) in data.items()}

    net = block_values("net mfi")
    count = block_values("count")
    result = block_values("result")
    _, dil_data = _per_well(by_type.get("dilution factor", []), path, warnings,
                            "Dilution Factor")
    dilution = {key: to_float(_cell(cells, 0)) for key, (_, cells) in dil_data.items()}

    # analyte-level facts
    regions: dict[str, float] = {}
    units: dict[str, str] = {}
    for name in ("units", "per bead count"):
        ana, named = _by_name(by_type.get(name, []))
        for row_name, cells in named.items():
            low = row_name.lower()
            for a, v in zip(ana, cells):
                if low == "beadid" and a:
                    regions.setdefault(a, to_float(v))
                elif low == "units" and a and v:
                    units.setdefault(a, v)
                elif low == "per bead" and a and v:
                    metadata.setdefault("per_bead_count", {})[a] = to_float(v)
    expected: dict[str, dict[str, float]] = {}
    for name in ("standard expected concentration", "control expected concentration"):
        ana, named = _by_name(by_type.get(name, []))
        for row_name, cells in named.items():
            expected[row_name.lower()] = {a: to_float(v) for a, v in zip(ana, cells) if a}
    control_ranges: dict[str, dict[str, list[float]]] = {}
    for name, pos in (("control range - low", 0), ("control range - high", 1)):
        ana, named = _by_name(by_type.get(name, []))
        for row_name, cells in named.items():
            for a, v in zip(ana, cells):
                if a:
                    rng = control_ranges.setdefault(row_name, {}).setdefault(
                        a, [math.nan, math.nan])
                    rng[pos] = to_float(v)
    if control_ranges:
        metadata["control_ranges"] = control_ranges
    curves = _vendor_curves(by_type)
    if curves:
        metadata["vendor_curves"] = curves
    instrument_msgs = [" ".join(r) for r in by_type.get("warnings/errors", [])[1:] if r]
    if instrument_msgs:
        metadata["instrument_messages"] = instrument_msgs

    plate_numbers = sorted({k[0] for k in median}, key=lambda s: (len(s), s))
    base = metadata.get("batch") or Path(path).stem
    plate_name = {p: base if len(plate_numbers) == 1 else f"{base}_{p}" for p in plate_numbers}

    records: list[dict[str, Any]] = []
    vendor: list[dict[str, Any]] = []
    for key, (sample, cells) in median.items():
        plate = plate_name[key[0]]
        well = key[1]
        exp = expected.get(sample.strip().lower(), {})
        for a in analytes:
            records.append({
                "plate": plate, "well": well, "sample": sample, "analyte": a,
                "bead_region": regions.get(a, math.nan),
                "median_mfi": to_float(_cell(cells, col_index[a])),
                "net_mfi": to_float(net.get(key, {}).get(a)),
                "count": to_float(count.get(key, {}).get(a)),
                "dilution": dilution.get(key, math.nan),
                "expected_conc": exp.get(a, math.nan),
                "unit": units.get(a, ""),
            })
            if key in result and a in result[key]:
                raw = result[key][a]
                value, flag = parse_vendor_value(raw)
                vendor.append({"plate": plate, "well": well, "analyte": a,
                               "concentration": value, "flag": flag, "raw": raw})
    wells = build_wells(records, path=path, warnings=warnings, metadata=metadata)
    return PlateData(wells=wells, metadata=metadata, warnings=warnings,
                     vendor=build_vendor(vendor), path=os.fspath(path), format="xponent")


def _vendor_curves(by_type: dict[str, list[list[str]]]) -> dict[str, dict[str, Any]]:
    """Analysis Types / Coefficients / R^2 blocks → {analyte: {model, A, B, ..., r2}}."""
    curves: dict[str, dict[str, Any]] = {}
    ana, named = _by_name(by_type.get("analysis types", []))
    for row_name, cells in named.items():
        if row_name.lower() == "analysistype":
            for a, v in zip(ana, cells):
                if a and v and v.lower() != "none":
                    curves.setdefault(a, {})["model"] = v
    ana, named = _by_name(by_type.get("analysis coefficients", []))
    for row_name, cells in named.items():
        m = re.match(r"coefficient\s+(\w+)$", row_name, re.I)
        if m:
            for a, v in zip(ana, cells):
                if a:
                    curves.setdefault(a, {})[m.group(1).upper()] = to_float(v)
    ana, named = _by_name(by_type.get("r^2", []))
    for row_name, cells in named.items():
        if row_name.lower() == "value":
            for a, v in zip(ana, cells):
                if a:
                    curves.setdefault(a, {})["r2"] = to_float(v)
    return {a: c for a, c in curves.items() if len(c) > 1 or "model" in c}


# --------------------------------------------------------------------------------------------
# Intelliflex 2.2 flat CSV

_FLAT_COL_RE = re.compile(r"^R(\d+):\s*(\w+)\s+(.+)$")


def read_intelliflex_flat(path: str | os.PathLike[str]) -> PlateData:
    """Read the flat Intelliflex 2.2 CSV (one row per well, ``R<region>: RP1 <statistic>`` columns).

    Analyte names come from the ``ANALYTE NAME`` columns (else ``R<region>``); ``MEDIAN`` →
    median_mfi, ``NET MEDIAN`` → net_mfi, ``COUNT`` → count, ``DILUTION`` → dilution,
    ``WELL TYPE`` (``B``/``S``/``C``/``U`` + number) → sample type.
    """
    text = read_text(path)
    rows = [r for r in _rows(text, path) if r]
    if len(rows) < 2:
        raise InputError(path, "flat Intelliflex CSV without data rows")
    head = [h.strip().upper() for h in rows[0]]
    index = {h: i for i, h in enumerate(head) if h}
    if "WELL LOCATION" not in index:
        raise InputError(path, "flat Intelliflex CSV without a 'WELL LOCATION' column")
    regions: dict[str, dict[str, int]] = {}
    for i, h in enumerate(head):
        m = _FLAT_COL_RE.match(h)
        if m:
            regions.setdefault(m.group(1), {})[m.group(3).strip()] = i
    if not regions:
        raise InputError(path, "flat Intelliflex CSV without 'R<region>: RP1 MEDIAN' columns")

    def get(row: list[str], col: int | None) -> str:
        return row[col] if col is not None and col < len(row) else ""

    names: dict[str, str] = {}
    for region, cols in regions.items():
        for row in rows[1:]:
            name = get(row, cols.get("ANALYTE NAME"))
            if name and name.lower() != "nan":
                names[region] = name
                break
        names.setdefault(region, f"R{region}")
    if len(set(names.values())) != len(names):
        names = {r: f"{n} (R{r})" for r, n in names.items()}
    warnings: list[str] = []
    plate_col = index.get("PLATE NAME")
    records: list[dict[str, Any]] = []
    for row in rows[1:]:
        well = parse_well(get(row, index["WELL LOCATION"]))
        if well is None:
            continue
        sample = get(row, index.get("SAMPLE ID"))
        wtype = get(row, index.get("WELL TYPE"))
        stype = _flat_type(wtype) if wtype else None
        plate = get(row, plate_col) or Path(path).stem
        for region, cols in regions.items():
            records.append({
                "plate": plate, "well": well, "sample": sample or wtype,
                "sample_type": stype, "analyte": names[region], "bead_region": to_float(region),
                "median_mfi": to_float(get(row, cols.get("MEDIAN"))),
                "net_mfi": to_float(get(row, cols.get("NET MEDIAN"))),
                "count": to_float(get(row, cols.get("COUNT"))),
                "dilution": to_float(get(row, index.get("DILUTION"))),
            })
    meta = {"software": "Intelliflex", "format_variant": "flat v2.2"}
    for key, name in (("SOFTWARE VERSION", "build"), ("SERIAL NUMBER", "serial_number"),
                      ("MODEL NAME", "instrument"), ("PLATE NAME", "batch")):
        if key in index:
            meta[name] = get(rows[1], index[key])
    wells = build_wells(records, path=path, warnings=warnings, metadata=meta)
    return PlateData(wells=wells, metadata=meta, warnings=warnings, path=os.fspath(path),
                     format="intelliflex_flat")


def _flat_type(code: str) -> str:
    c = code.strip().upper()[:1]
    return {"B": "background", "S": "standard", "C": "control"}.get(c, "unknown")
