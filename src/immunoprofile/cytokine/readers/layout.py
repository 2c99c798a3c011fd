"""Generic plate CSV and plate layout files: any reader's output, described in two small tables.

Contract: ``read_generic(path) -> PlateData`` reads a long CSV of MFIs; ``read_layout(path) ->
DataFrame`` reads a plate layout; ``apply_layout(plate, layout)`` writes the layout onto any
:class:`PlateData` (it wins over the file's sample names, types, dilutions and expected
concentrations). Bad files raise :class:`~immunoprofile.errors.InputError` listing every problem.

Generic plate CSV (comma, semicolon or tab separated; header names case-insensitive)::

    well,analyte,mfi[,count][,net_mfi][,sample][,sample_type][,dilution][,expected_conc]
        [,unit][,plate][,bead_region]
    A1,IL-6,23.5,88
    A2,IL-6,15012,102

``mfi`` may also be called ``median``, ``median_mfi``, ``fi`` or ``signal``. One row per well ×
analyte; wells as ``A1``/``A01``. Without ``sample_type`` it is derived from ``sample``
(Background/Blank, Standard*/S#, Control*/C#, else unknown).

Plate layout (same conventions)::

    well,sample[,sample_type][,dilution][,expected_conc][,analyte][,plate]
    A1,Background0,background
    A2,Standard1,standard,1,10000
    B5,P01-W0,unknown,2

``sample_type`` ∈ background, standard, control, unknown (derived from ``sample`` when blank);
``dilution`` > 0 (default: keep the file's); ``expected_conc`` applies to every analyte of the
well unless the row names an ``analyte`` (multiplex kits: prefer a standards table, see
:mod:`.standards`); ``plate`` restricts a row to one plate of a multi-plate file.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import InputError
from . import (SAMPLE_TYPES, PlateData, build_wells, classify_sample, parse_well, read_text,
               refresh_derived_net_mfi, to_float, well_sort_key)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["read_generic", "read_layout", "apply_layout", "LAYOUT_COLUMNS"]

LAYOUT_COLUMNS = ("well", "sample", "sample_type", "dilution", "expected_conc", "analyte", "plate")
_GENERIC_ALIASES = {
    "mfi": "median_mfi", "median": "median_mfi", "median_mfi": "median_mfi", "fi": "median_mfi",
    "signal": "median_mfi", "net_mfi": "net_mfi", "net mfi": "net_mfi", "count": "count",
    "bead_count": "count", "bead count": "count", "well": "well", "location": "well",
    "analyte": "analyte", "sample": "sample", "sample_type": "sample_type", "type": "sample_type",
    "dilution": "dilution", "expected_conc": "expected_conc", "unit": "unit", "units": "unit",
    "plate": "plate", "bead_region": "bead_region", "region": "bead_region",
}


def _table(path: str | os.PathLike[str], what: str) -> tuple[list[str], list[list[str]]]:
    text = read_text(path)
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise InputError(path, f"empty {what}")
    first = lines[0]
    delimiter = max((",", ";", "\t"), key=first.count)
    try:
        rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter))
    except csv.Error as exc:
        raise InputError(path, f"malformed {what} ({exc})") from None
    header = [h.strip().lower() for h in rows[0]]
    return header, [[c.strip() for c in r] for r in rows[1:]]


def read_generic(path: str | os.PathLike[str]) -> PlateData:
    """Read a generic long CSV of well × analyte MFIs (format in the module docstring).

    Returns
    -------
    PlateData
        ``format="generic"``.
    """
    header, rows = _table(path, "plate CSV")
    cols: dict[str, int] = {}
    for i, h in enumerate(header):
        name = _GENERIC_ALIASES.get(h)
        if name and name not in cols:
            cols[name] = i
    missing = [c for c in ("well", "analyte", "median_mfi") if c not in cols]
    if missing:
        raise InputError(path, "generic plate CSV needs columns well, analyte, mfi; missing "
                               + ", ".join("mfi" if m == "median_mfi" else m for m in missing))
    problems: list[str] = []
    records: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    default_plate = Path(path).stem
    for n, row in enumerate(rows, start=2):
        def get(name: str, row: list[str] = row) -> str:
            i = cols.get(name)
            return row[i] if i is not None and i < len(row) else ""
        well = parse_well(get("well"))
        if well is None:
            problems.append(f"line {n}: {get('well')!r} is not a well")
            continue
        analyte = get("analyte")
        if not analyte:
            problems.append(f"line {n}: no analyte")
            continue
        stype = get("sample_type").lower() or None
        if stype is not None and stype not in SAMPLE_TYPES:
            problems.append(f"line {n}: sample_type {stype!r} not one of {', '.join(SAMPLE_TYPES)}")
            continue
        plate = get("plate") or default_plate
        key = (plate, well, analyte)
        if key in seen:
            problems.append(f"line {n}: duplicate {well}/{analyte}")
            continue
        seen.add(key)
        records.append({
            "plate": plate, "well": well, "sample": get("sample"), "sample_type": stype,
            "analyte": analyte, "bead_region": to_float(get("bead_region")),
            "median_mfi": to_float(get("median_mfi")), "net_mfi": to_float(get("net_mfi")),
            "count": to_float(get("count")), "dilution": to_float(get("dilution")),
            "expected_conc": to_float(get("expected_conc")), "unit": get("unit"),
        })
    if problems:
        raise InputError(path, "; ".join(problems[:8]) + (" …" if len(problems) > 8 else ""))
    warnings: list[str] = []
    metadata: dict[str, Any] = {"software": "generic CSV",
                                "sample_types_from": "type column" if "sample_type" in cols
                                else "names"}
    wells = build_wells(records, path=path, warnings=warnings, metadata=metadata)
    return PlateData(wells=wells, metadata=metadata, warnings=warnings, path=os.fspath(path),
                     format="generic")


def read_layout(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a plate layout (format in the module docstring).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`LAYOUT_COLUMNS` (``sample_type`` filled from the sample name where blank;
        ``dilution``/``expected_conc`` NaN where not given; ``analyte``/``plate`` "" = all).

    Raises
    ------
    InputError
        Missing ``well``/``sample`` columns, bad wells, unknown sample types, non-positive
        dilutions, negative concentrations, duplicate rows (all listed).
    """
    import pandas as pd

    header, rows = _table(path, "plate layout")
    aliases = {"type": "sample_type", "location": "well", "name": "sample",
               "sample_id": "sample", "expected": "expected_conc", "dilution_factor": "dilution"}
    header = [aliases.get(h, h) for h in header]
    if "well" not in header or "sample" not in header:
        raise InputError(path, "plate layout needs columns well and sample (optional: "
                               "sample_type, dilution, expected_conc, analyte, plate)")
    idx = {c: header.index(c) for c in LAYOUT_COLUMNS if c in header}
    problems: list[str] = []
    records: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for n, row in enumerate(rows, start=2):
        def get(name: str, row: list[str] = row) -> str:
            i = idx.get(name)
            return row[i] if i is not None and i < len(row) else ""
        well = parse_well(get("well"))
        if well is None:
            problems.append(f"line {n}: {get('well')!r} is not a well")
            continue
        sample = get("sample")
        stype = get("sample_type").lower() or classify_sample(sample)
        if stype not in SAMPLE_TYPES:
            problems.append(f"line {n}: sample_type {stype!r} not one of {', '.join(SAMPLE_TYPES)}")
        dil_raw, exp_raw = get("dilution"), get("expected_conc")
        dilution, expected = to_float(dil_raw), to_float(exp_raw)
        if dil_raw and not (math.isfinite(dilution) and dilution > 0):
            problems.append(f"line {n}: dilution {dil_raw!r} must be a number > 0")
        if exp_raw and not (math.isfinite(expected) and expected >= 0):
            problems.append(f"line {n}: expected_conc {exp_raw!r} must be a number >= 0")
        key = (get("plate"), well, get("analyte"))
        if key in seen:
            problems.append(f"line {n}: well {well} listed twice")
        seen.add(key)
        records.append({"well": well, "sample": sample, "sample_type": stype,
                        "dilution": dilution, "expected_conc": expected,
                        "analyte": get("analyte"), "plate": get("plate")})
    if problems:
        raise InputError(path, "; ".join(problems[:8]) + (" …" if len(problems) > 8 else ""))
    if not records:
        raise InputError(path, "plate layout has a header but no wells")
    return pd.DataFrame.from_records(records, columns=list(LAYOUT_COLUMNS))


def apply_layout(plate: PlateData, layout: pd.DataFrame) -> None:
    """Write a layout onto a plate (in place); the layout wins over the file.

    Sample names and types always come from the layout for the wells it lists; dilution and
    expected concentration only where the layout gives them. Net MFI we derived is recomputed
    with the new backgrounds. Wells on one side only are warned about.
    """
    df = plate.wells
    wells_on_plate = set(df["well"])
    listed: set[str] = set()
    changed_types = 0
    # general rows first, then analyte-specific rows override them
    ordered = sorted(layout.to_dict("records"), key=lambda r: bool(r["analyte"]))
    for rec in ordered:
        mask = df["well"] == rec["well"]
        if rec["plate"]:
            mask &= df["plate"] == rec["plate"]
        if rec["analyte"]:
            mask &= df["analyte"] == rec["analyte"]
        if not mask.any():
            continue
        listed.add(rec["well"])
        changed_types += int((df.loc[mask, "sample_type"] != rec["sample_type"]).sum())
        df.loc[mask, "sample"] = rec["sample"]
        df.loc[mask, "sample_type"] = rec["sample_type"]
        if math.isfinite(rec["dilution"]):
            df.loc[mask, "dilution"] = rec["dilution"]
        if math.isfinite(rec["expected_conc"]):
            df.loc[mask, "expected_conc"] = rec["expected_conc"]
    not_on_plate = sorted(set(layout["well"]) - wells_on_plate, key=well_sort_key)
    if not_on_plate:
        plate.warnings.append(f"layout well(s) not on the plate: {', '.join(not_on_plate[:12])}"
                              + (" …" if len(not_on_plate) > 12 else ""))
    unlisted = sorted(wells_on_plate - listed, key=well_sort_key)
    if unlisted:
        plate.warnings.append(f"{len(unlisted)} plate well(s) not in the layout keep the file's "
                              f"names: {', '.join(unlisted[:12])}"
                              + (" …" if len(unlisted) > 12 else ""))
    # the layout answers the plate reader's "no sample names" warning
    plate.warnings[:] = [w for w in plate.warnings
                         if not w.startswith("MSD plate-reader text has no")]
    refresh_derived_net_mfi(plate)
    plate.metadata["layout"] = {"wells": len(listed), "sample_types_changed": changed_types}
    if listed:
        plate.metadata["sample_types_from"] = "layout"
