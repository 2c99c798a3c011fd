"""Luminex bead-level (per-event) exports of one well → :class:`PlateData`.

Contract: ``read_beadlevel(path, regions=None)`` summarises a bead-event CSV (``EventNo, RID, DBL,
DD, RP1, CL1, CL2, ...``; optional first line ``SampleID: ... Batch Name: ...``) into one row per
bead region: ``median_mfi`` = median of RP1 over that region's events, ``count`` = number of
events (region 0 = unclassified, dropped). ``regions`` maps region → analyte name (e.g. from the
plate export's BeadID row); otherwise analytes are named ``R<region>``. This reproduces xPONENT's
Median and Count of the same well exactly.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...errors import InputError
from . import PlateData, build_wells, parse_well, read_text, to_float

__all__ = ["read_beadlevel"]

_WELL_IN_NAME = re.compile(r"(?:^|[_\-\s])([A-Pa-p]\d{1,2})$")


def read_beadlevel(path: str | os.PathLike[str], *,
                   regions: Mapping[int, str] | None = None) -> PlateData:
    """Summarise a bead-level export into median RP1 and bead count per region.

    Parameters
    ----------
    path
        The bead-event CSV of one well.
    regions
        Bead region → analyte name; regions not listed are named ``R<region>``.

    Returns
    -------
    PlateData
        ``format="beadlevel"``, one well (from the ``SampleID``/file name, e.g. ``..._A1.csv``).
    """
    import numpy as np

    text = read_text(path)
    lines = text.splitlines()
    start = None
    for i, line in enumerate(lines[:20]):
        if line.replace('"', "").replace(" ", "").upper().startswith("EVENTNO,RID"):
            start = i
            break
    if start is None:
        raise InputError(path, "bead-level export without an 'EventNo,RID,...' header")
    preamble = " ".join(lines[:start]).replace('"', " ")
    try:
        reader = list(csv.reader(io.StringIO("\n".join(lines[start:]))))
    except csv.Error as exc:
        raise InputError(path, f"malformed CSV ({exc})") from None
    header = [h.strip().upper() for h in reader[0]]
    if "RP1" not in header:
        raise InputError(path, "bead-level export without an RP1 column")
    i_rid, i_rp1 = header.index("RID"), header.index("RP1")
    rid_list: list[float] = []
    rp1_list: list[float] = []
    skipped = 0
    for row in reader[1:]:
        if not row or all(not c.strip() for c in row):
            continue
        rid = to_float(row[i_rid]) if i_rid < len(row) else math.nan
        rp1 = to_float(row[i_rp1]) if i_rp1 < len(row) else math.nan
        # a region id is a small non-negative integer (xMAP: 0 = unclassified, 1-500)
        if not (math.isfinite(rid) and math.isfinite(rp1)) or not 0 <= rid <= 1e6 \
                or rid != int(rid):
            skipped += 1
            continue
        rid_list.append(rid)
        rp1_list.append(rp1)
    rid_arr = np.asarray(rid_list, dtype=np.int64)
    rp1_arr = np.asarray(rp1_list, dtype=float)
    warnings: list[str] = []
    if skipped:
        warnings.append(f"{skipped} event row(s) without a numeric RID/RP1 were skipped")
    m = re.search(r"SampleID:\s*(.*?)\s*(?:Batch Name:|$)", preamble)
    sample = m.group(1).strip() if m else ""
    m = re.search(r"Batch Name:\s*(\S+)", preamble)
    plate = m.group(1) if m else Path(path).stem
    wm = _WELL_IN_NAME.search(Path(path).stem)
    well = parse_well(wm.group(1)) if wm else None
    if well is None:
        well = parse_well(sample) or Path(path).stem
    names = dict(regions or {})
    records: list[dict[str, Any]] = []
    for region in np.unique(rid_arr[rid_arr > 0]):
        values = rp1_arr[rid_arr == region]
        records.append({
            "plate": plate, "well": well, "sample": sample, "analyte":
            names.get(int(region), f"R{int(region)}"), "bead_region": int(region),
            "median_mfi": float(np.median(values)), "count": float(values.size),
        })
    if not records:
        raise InputError(path, "bead-level export without classified bead events (RID > 0)")
    meta: dict[str, Any] = {"n_events": int(rid_arr.size),
                            "n_unclassified": int((rid_arr == 0).sum())}
    wells = build_wells(records, path=path, warnings=warnings, metadata=meta)
    return PlateData(wells=wells, metadata=meta, warnings=warnings, path=os.fspath(path),
                     format="beadlevel")
