"""Meso Scale Discovery exports → :class:`PlateData`.

Contract: ``read_msd(path, format=None)`` reads a Discovery Workbench CSV export or MESO plate
reader raw text (96 or 384 wells) into the tidy well × analyte table, or raises
:class:`~immunoprofile.errors.InputError`.

* Workbench CSV: a ``Plate_<barcode>`` line, then a table ``Sample, Assay, Well, Spot, ...,
  Dilution, Concentration, Signal, Adjusted Signal, ..., Calc. Concentration`` (one row per well ×
  assay; a further ``Plate_`` line starts the next plate), or the multi-plate "Experiment Data
  Table" (``Plate Name, Sample, Assay, Well, Spot, ...``: the plate on every row). The plate id
  is the barcode (``Plate_`` removed). Assay → analyte (its Spot → ``metadata["spots"]``),
  Signal → median_mfi, Adjusted Signal → net_mfi (blanks have none: there it is Signal minus
  the blank mean), Concentration → expected_conc, Calc. Concentration and Detection Range →
  ``vendor``. Sample types by DW's names (:func:`classify_msd_sample`: ``CAL1``, ``Calibrator
  1``, ``S001`` are calibrators; a zero calibrator is a standard at concentration 0). ECL
  assays have no beads, so ``count`` is NaN.
* Plate-reader text: per plate a ``Key : value`` header (``Plate #``, ``Barcode1``, ``Type``, ...)
  and a ``==========Data====`` matrix (row letter, one ECL signal per column). The file carries no
  sample names: supply a plate layout (``read_plate(..., layout=...)``) to mark standards,
  controls and backgrounds. With several spots per well the k-th block of rows is spot k.
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
from . import PlateData, build_vendor, build_wells, parse_well, read_text, to_float

__all__ = ["read_msd", "read_msd_workbench", "read_msd_platereader", "classify_msd_sample"]


def read_msd(path: str | os.PathLike[str], *, format: str | None = None) -> PlateData:
    """Read an MSD export (``format`` ``"msd_workbench"`` or ``"msd_platereader"``; detected when
    ``None``).

    Returns
    -------
    PlateData
    """
    if format is None:
        from . import detect_format
        format = detect_format(path)
    if format == "msd_platereader":
        return read_msd_platereader(path)
    return read_msd_workbench(path)


def _range_flag(text: str) -> str:
    low = text.lower()
    if low.startswith("above"):
        return ">"
    if low.startswith("below"):
        return "<"
    return "ok"


# Discovery Workbench names: calibrators CAL1 / Calibrator 1 / S001 / Standard 1, controls
# C001 / "... Control ..." / "... Cont 1", blanks, unknowns U001 or any other name
_MSD_BLANK = re.compile(r"^\s*(blank|background|bkgd|diluent|buffer)\b|^\s*B\d{3}\s*$", re.I)
_MSD_STANDARD = re.compile(
    r"^\s*(cal(ibrator)?|standard|std)[\s_\-#]*\d+\s*$|^\s*cal\s*$|^\s*S\d{3}\s*$", re.I)
_MSD_CONTROL = re.compile(r"^\s*C\d{3}\s*$|\bcont(rol)?\b|\bctrl\b|^\s*qc", re.I)


def classify_msd_sample(name: str, expected: float = math.nan) -> str:
    """Sample type of a Discovery Workbench sample name.

    ``CAL1``/``Calibrator 1``/``S001``/``Standard 1`` → standard; ``Blank*``/``B001`` →
    background; ``C001`` or a name containing ``Control``/``Cont``/``Ctrl``/``QC`` → control;
    any other name with a known concentration (``Concentration`` column) → control (DW reports
    its % Recovery; a kit control such as ``MSD 1.1``); otherwise unknown.
    """
    text = "" if name is None else str(name)
    if _MSD_BLANK.match(text):
        return "background"
    if _MSD_STANDARD.match(text):
        return "standard"
    if _MSD_CONTROL.search(text):
        return "control"
    if math.isfinite(expected):
        return "control"
    return "unknown"


def _plate_id(text: str) -> str:
    """``Plate_1LK05A1071`` → ``1LK05A1071`` (the barcode); other names as they are."""
    text = text.strip()
    return text[len("Plate_"):] if text.startswith("Plate_") and len(text) > 6 else text


def read_msd_workbench(path: str | os.PathLike[str]) -> PlateData:
    """Read a Discovery Workbench CSV export (one or many plates, 96 or 384 wells).

    Two layouts: per-plate blocks (a ``Plate_<barcode>`` line, then ``Sample, Assay, Well, ...``)
    and the "Experiment Data Table" (an optional ``# <experiment>: Experiment Data Table``
    line, then ``Plate Name, Sample, Assay, Well, Spot, ...``, the plate on every row). The plate
    id is the barcode (``Plate_`` removed). Every Assay is an analyte; its spot goes to
    ``metadata["spots"]``.

    Returns
    -------
    PlateData
        ``format="msd_workbench"``.
    """
    text = read_text(path)
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise InputError(path, f"malformed CSV ({exc})") from None
    plate = Path(path).stem
    header: dict[str, int] | None = None
    records: list[dict[str, Any]] = []
    vendor: list[dict[str, Any]] = []
    warnings: list[str] = []
    spots: dict[str, str] = {}
    experiment = ""
    seen: set[tuple[str, str, str]] = set()
    duplicates: list[str] = []
    for row in rows:
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if cells[0].startswith("#"):
            # "# Experiment_2020-09-01-085942: Experiment Data Table"
            experiment = experiment or cells[0].lstrip("# ").split(":")[0].strip()
            continue
        if cells[0].startswith("Plate_") and not any(cells[1:]):
            plate = _plate_id(cells[0]) or plate
            header = None
            continue
        if header is None:
            lowered = [c.lower() for c in cells]
            if "well" in lowered and ("signal" in lowered or "assay" in lowered):
                header = {c: i for i, c in enumerate(lowered) if c}
            continue

        def get(name: str, cells: list[str] = cells) -> str:
            i = header.get(name)
            return cells[i] if i is not None and i < len(cells) else ""

        well = parse_well(get("well"))
        if well is None:
            continue
        row_plate = _plate_id(get("plate name")) if "plate name" in header else plate
        row_plate = row_plate or plate
        sample = get("sample")
        spot = get("spot")
        assay = get("assay") or f"spot {spot or 1}"
        if spot:
            spots.setdefault(assay, spot)
        key = (row_plate, well, assay)
        if key in seen:
            duplicates.append(f"{row_plate} {well} {assay}")
            continue
        seen.add(key)
        expected = to_float(get("concentration"))
        records.append({
            "plate": row_plate, "well": well, "sample": sample,
            "analyte": assay, "median_mfi": to_float(get("signal")),
            "net_mfi": to_float(get("adjusted signal")), "count": math.nan,
            "dilution": to_float(get("dilution")), "expected_conc": expected,
        })
        if "calc. concentration" in header:
            raw = get("calc. concentration")
            value = to_float(raw)
            flag = _range_flag(get("detection range")) if math.isfinite(value) else "missing"
            vendor.append({"plate": row_plate, "well": well, "analyte": assay,
                           "concentration": value, "flag": flag, "raw": raw})
    if not records:
        raise InputError(path, "MSD Workbench export without a 'Sample, Assay, Well, ... Signal' "
                               "table")
    # one type per sample: a kit control has a known concentration on some spots only
    known = {(r["plate"], r["sample"]) for r in records if math.isfinite(r["expected_conc"])}
    for r in records:
        r["sample_type"] = classify_msd_sample(
            r["sample"], 1.0 if (r["plate"], r["sample"]) in known else math.nan)
    if duplicates:
        warnings.append(f"{len(duplicates)} repeated plate/well/assay row(s) ignored (first kept):"
                        f" {', '.join(duplicates[:5])}" + (" …" if len(duplicates) > 5 else ""))
    metadata: dict[str, Any] = {"software": "MSD Discovery Workbench",
                                "sample_types_from": "names"}
    if experiment:
        metadata["experiment"] = experiment
    if spots:
        metadata["spots"] = spots
    wells = build_wells(records, path=path, warnings=warnings, metadata=metadata)
    return PlateData(wells=wells, metadata=metadata,
                     warnings=warnings, vendor=build_vendor(vendor), path=os.fspath(path),
                     format="msd_workbench")


_KEY_RE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9 .#/]*?)\s*:\s*(.*)$")


def read_msd_platereader(path: str | os.PathLike[str]) -> PlateData:
    """Read MESO plate-reader raw text (one or more plates, 96 or 384 wells).

    Returns
    -------
    PlateData
        ``format="msd_platereader"``; analytes ``spot 1`` ... ; samples empty (unknown) until a
        layout is applied.
    """
    text = read_text(path)
    lines = text.splitlines()
    records: list[dict[str, Any]] = []
    warnings: list[str] = []
    plates_meta: list[dict[str, str]] = []
    meta: dict[str, str] = {}
    i = 0
    n = len(lines)
    while i < n:
        line = lines[i]
        if line.startswith("=========="):
            section = line.strip("= \t").lower()
            i += 1
            if section != "data":
                continue
            # column header: the numbers 1..N
            while i < n and not lines[i].strip():
                i += 1
            if i >= n:
                break
            tokens = lines[i].split()
            i += 1
            if not tokens or not all(t.isascii() and t.isdigit() and len(t) < 3 for t in tokens):
                raise InputError(path, f"line {i}: data block without a column header 1..N")
            cols = [int(t) for t in tokens]
            if max(cols) > 24 or len(set(cols)) != len(cols):
                raise InputError(path, f"line {i}: data block column header is not 1..N (<= 24)")
            plate_no = meta.get("Plate #", str(len(plates_meta) + 1))
            barcode = meta.get("Barcode1", "").strip("<>*") or f"plate{plate_no}"
            seen: dict[str, int] = {}
            while i < n and lines[i].strip() and not lines[i].startswith("=========="):
                parts = lines[i].split("\t")
                label = parts[0].strip()
                if not re.fullmatch(r"[A-Pa-p]", label):
                    break
                spot = seen.get(label.upper(), 0) + 1
                seen[label.upper()] = spot
                values = [p.strip() for p in parts[1:]]
                values = values[:len(cols)]
                for col, raw in zip(cols, values):
                    if raw == "":
                        continue
                    records.append({
                        "plate": barcode, "well": f"{label.upper()}{col}", "sample": "",
                        "analyte": f"spot {spot}", "median_mfi": to_float(raw),
                        "count": math.nan,
                    })
                i += 1
            plates_meta.append(dict(meta, plate=barcode))
            meta = {}
            continue
        m = _KEY_RE.match(line)
        if m and m.group(1) in ("FileName", "Stack ID", "Plate #", "Barcode1", "Type",
                                "Read Time", "Version", "Serial #", "Model", "Spots Per Well",
                                "Det Param", "Wells Per Row", "Wells Per Col"):
            if m.group(1) == "Plate #" and "Plate #" in meta:
                meta = {}
            meta[m.group(1)] = " ".join(m.group(2).split())
        i += 1
    if not records:
        raise InputError(path, "MSD plate-reader text without a '==========Data' signal matrix")
    metadata: dict[str, Any] = {"software": "MESO plate reader", "plates": plates_meta}
    wells = build_wells(records, path=path, warnings=warnings, metadata=metadata)
    if plates_meta:
        metadata["build"] = plates_meta[0].get("Version", "")
        metadata["instrument"] = plates_meta[0].get("Model", "")
    warnings.append("MSD plate-reader text has no sample names; apply a plate layout to mark "
                    "standards, controls and backgrounds")
    return PlateData(wells=wells, metadata=metadata, warnings=warnings, path=os.fspath(path),
                     format="msd_platereader")
