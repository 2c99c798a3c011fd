"""Multiplex plate exports into one tidy well × analyte table.

Contract: ``read_plate(path) -> PlateData`` whatever the instrument software (Luminex xPONENT /
Intelliflex, Bio-Plex Manager, MSD, a generic CSV with a plate layout); the format is detected by
content, never by file name. ``PlateData.wells`` has one row per (plate, well, analyte) with the
columns in :data:`WELL_COLUMNS`; anything a user supplied that cannot be read raises
:class:`~immunoprofile.errors.InputError`.

The reader modules (``xponent``, ``beadlevel``, ``bioplex``, ``msd``, ``layout``) share the
helpers defined here and are imported lazily by :func:`read_plate`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ...errors import InputError

if TYPE_CHECKING:  # pandas is imported inside functions (keeps ``--help`` fast)
    import pandas as pd

__all__ = [
    "PlateData", "read_plate", "detect_format", "classify_sample", "parse_well", "WELL_COLUMNS",
    "FORMATS", "VENDOR_COLUMNS", "expand_plate_paths", "PLATE_SUFFIXES",
]

#: Columns of :attr:`PlateData.wells`, in this order.
WELL_COLUMNS: tuple[str, ...] = (
    "plate", "well", "sample", "sample_type", "analyte", "bead_region", "median_mfi", "net_mfi",
    "count", "dilution", "expected_conc", "unit",
)
#: Columns of :attr:`PlateData.vendor` (the software's own results).
VENDOR_COLUMNS: tuple[str, ...] = ("plate", "well", "analyte", "concentration", "flag", "raw")

#: Formats :func:`read_plate` knows (the value of ``PlateData.format``).
FORMATS: tuple[str, ...] = (
    "xponent", "intelliflex_flat", "beadlevel", "bioplex_xls", "bioplex_xlsx", "bioplex_xml",
    "msd_workbench", "msd_platereader", "generic",
)

SAMPLE_TYPES = ("background", "standard", "control", "unknown")

# A plate export larger than this is not a plate export (the largest real one is ~2 MB); refusing
# early keeps a mislabelled multi-GB file from being read into memory.
MAX_PLATE_BYTES = 256 * 1024 * 1024


@dataclass
class PlateData:
    """One plate export, read.

    Attributes
    ----------
    wells
        Tidy table, one row per well × analyte, columns :data:`WELL_COLUMNS`:
        ``plate, well`` (``"A1"``; Bio-Plex replicate-mean rows keep ``"A1,A2"``), ``sample``,
        ``sample_type`` ∈ {background, standard, control, unknown}, ``analyte``, ``bead_region``
        (nullable int), ``median_mfi``, ``net_mfi`` (the file's, else median minus the mean median
        of the background wells of that plate and analyte), ``count`` (beads), ``dilution``
        (default 1), ``expected_conc`` (standards/controls, else NaN), ``unit`` ("" if unknown).
    metadata
        JSON-friendly facts from the file header (software, instrument, batch, vendor curves, ...).
    warnings
        Human-readable warnings (one line each).
    repairs
        Every change made to the file's values: dicts ``plate, well, analyte, old, new, reason``.
    vendor
        The software's own results where exported (columns :data:`VENDOR_COLUMNS`; ``flag`` ∈
        ok, <, >, extrapolated, outlier, missing), else ``None``.
    path
        The file read.
    format
        One of :data:`FORMATS`.
    """

    wells: pd.DataFrame
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    repairs: list[dict[str, Any]] = field(default_factory=list)
    vendor: pd.DataFrame | None = None
    path: str = ""
    format: str = ""

    @property
    def analytes(self) -> list[str]:
        """Analytes in file order."""
        return list(dict.fromkeys(self.wells["analyte"]))

    @property
    def plates(self) -> list[str]:
        """Plate names in file order."""
        return list(dict.fromkeys(self.wells["plate"]))


# --------------------------------------------------------------------------------------------
# shared helpers for the reader modules

_WELL_RE = re.compile(r"^\s*([A-Pa-p])\s*0*(\d{1,2})\s*$")
# xPONENT "Location": "1(1,A1)" = acquisition order (plate number, well)
_LOCATION_RE = re.compile(r"^\s*\d+\s*\(\s*(\d+)\s*,\s*([A-Pa-p])\s*0*(\d{1,2})\s*\)\s*$")


def parse_well(text: str) -> str | None:
    """Normalise a well (``"a01"``, ``"A1"``, ``"1(1,A1)"``) to ``"A1"``; ``None`` if not a well."""
    if not isinstance(text, str):
        return None
    m = _LOCATION_RE.match(text) or _WELL_RE.match(text)
    if m is None:
        return None
    row, col = m.groups()[-2:]
    if not 1 <= int(col) <= 24:
        return None
    return f"{row.upper()}{int(col)}"


def well_sort_key(well: str) -> tuple[int, int, str]:
    """Plate order (row, then column); Bio-Plex ``"A1,A2"`` sorts by its first well."""
    first = str(well).split(",")[0].strip()
    m = _WELL_RE.match(first)
    if m is None:
        return (99, 99, str(well))
    return (ord(m.group(1).upper()) - ord("A"), int(m.group(2)), str(well))


_BACKGROUND_RE = re.compile(r"^\s*(background|blank|bkgd)|^\s*B\s*$", re.I)
_STANDARD_RE = re.compile(r"^\s*(standard|std)|^\s*S\s*\d+\s*$", re.I)
_CONTROL_RE = re.compile(r"^\s*(control|ctrl|qc)|^\s*C\s*\d+\s*$", re.I)


def classify_sample(name: str) -> str:
    """Sample type from a sample name or a Bio-Plex type code.

    ``Background*``/``Blank*``/``B`` → background; ``Standard*``/``Std*``/``S#`` → standard;
    ``Control*``/``Ctrl*``/``QC*``/``C#`` → control; anything else → unknown.
    """
    text = "" if name is None else str(name)
    if _BACKGROUND_RE.match(text):
        return "background"
    if _STANDARD_RE.match(text):
        return "standard"
    if _CONTROL_RE.match(text):
        return "control"
    return "unknown"


_NUMBER_CLEAN = str.maketrans("", "", " \u00a0")


def to_float(value: Any) -> float:
    """A cell to float; blanks, ``NaN``, ``Not Reported``, text and infinities → ``nan``."""
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return math.nan
    if isinstance(value, (int, float)):
        out = float(value)
    else:
        text = str(value).translate(_NUMBER_CLEAN)
        if not text:
            return math.nan
        try:
            out = float(text)
        except ValueError:
            return math.nan
    return out if math.isfinite(out) else math.nan


def read_text(path: str | os.PathLike[str]) -> str:
    """Read a text export (UTF-8 with or without BOM, else cp1252/latin-1) with a size limit."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if not p.is_file():
            raise InputError(path, "not a file")
        if size > MAX_PLATE_BYTES:
            raise InputError(path, f"file is {size} bytes; a plate export is at most "
                                   f"{MAX_PLATE_BYTES} bytes")
        raw = p.read_bytes()
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except OSError as exc:
        raise InputError(path, f"cannot read file ({exc.strerror or exc})") from None
    if b"\x00" in raw[:65536]:
        raise InputError(path, "binary content where a text export was expected")
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


def head_bytes(path: str | os.PathLike[str], n: int = 8192) -> bytes:
    """The first ``n`` bytes of a file (InputError when missing or unreadable)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(n)
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, not a plate export") from None
    except OSError as exc:
        raise InputError(path, f"cannot read file ({exc.strerror or exc})") from None


def build_wells(records: list[dict[str, Any]], *, path: str | os.PathLike[str],
                warnings: list[str], metadata: dict[str, Any] | None = None) -> pd.DataFrame:
    """Records (dicts with any of :data:`WELL_COLUMNS`) → the sorted, typed wells table.

    Fills defaults (dilution 1, unit ""), derives ``sample_type`` from ``sample`` when missing and
    ``net_mfi`` (median minus the mean median of the plate's background wells) where the file gave
    none; ``metadata["net_mfi"]`` records whether net MFI is the file's (``"file"``), ours
    (``"derived"``, recomputed when a layout changes the backgrounds) or both (``"mixed"``).
    """
    import numpy as np
    import pandas as pd

    if not records:
        raise InputError(path, "no well data found (no wells with analyte values)")
    df = pd.DataFrame.from_records(records)
    for col in WELL_COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
    df = df.loc[:, list(WELL_COLUMNS)].copy()
    df["plate"] = df["plate"].astype(str)
    df["well"] = df["well"].astype(str)
    df["sample"] = df["sample"].fillna("").astype(str)
    df["analyte"] = df["analyte"].astype(str)
    df["sample_type"] = df["sample_type"].astype(object)
    missing_type = df["sample_type"].isna()
    if missing_type.any():
        df.loc[missing_type, "sample_type"] = df.loc[missing_type, "sample"].map(classify_sample)
    df["sample_type"] = df["sample_type"].astype(str)
    for col in ("median_mfi", "net_mfi", "count", "dilution", "expected_conc"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
        df.loc[~np.isfinite(df[col]), col] = np.nan
    df["dilution"] = df["dilution"].fillna(1.0)
    bad_dil = df["dilution"] <= 0
    if bad_dil.any():
        wells = ", ".join(sorted(set(df.loc[bad_dil, "well"]), key=well_sort_key)[:8])
        warnings.append(f"non-positive dilution factor in well(s) {wells}; using 1")
        df.loc[bad_dil, "dilution"] = 1.0
    region = pd.to_numeric(df["bead_region"], errors="coerce").astype(float)
    # bead regions are small integers (xMAP: 1-500); anything else is not a region
    region[~(np.isfinite(region) & (region >= 0) & (region <= 1e6))] = np.nan
    df["bead_region"] = region.round().astype("Int64")
    df["unit"] = df["unit"].fillna("").astype(str)
    had_net = int(df["net_mfi"].notna().sum())
    filled = fill_net_mfi(df, warnings)
    if metadata is not None:
        metadata["net_mfi"] = "file" if not filled else ("derived" if not had_net else "mixed")
    # deterministic order: plate (file order), well position, analyte (file order)
    plate_order = {p: i for i, p in enumerate(dict.fromkeys(df["plate"]))}
    analyte_order = {a: i for i, a in enumerate(dict.fromkeys(df["analyte"]))}
    keys = pd.DataFrame({
        "p": df["plate"].map(plate_order),
        "w": df["well"].map(lambda w: well_sort_key(w)[:2]),
        "ws": df["well"],
        "a": df["analyte"].map(analyte_order),
    })
    order = sorted(range(len(df)), key=lambda i: (keys["p"].iat[i], keys["w"].iat[i],
                                                   keys["ws"].iat[i], keys["a"].iat[i]))
    return df.iloc[order].reset_index(drop=True)


def fill_net_mfi(df: pd.DataFrame, warnings: list[str]) -> int:
    """Where ``net_mfi`` is missing: median minus the mean median of background wells (in place).

    A file that reports Net MFI keeps its values (xPONENT computes exactly this). Returns the
    number of values filled.
    """
    import numpy as np

    need = df["net_mfi"].isna() & df["median_mfi"].notna()
    if not need.any():
        return 0
    bg = df[df["sample_type"] == "background"]
    bg_mean = bg.groupby(["plate", "analyte"], sort=False)["median_mfi"].mean()
    keys = list(zip(df.loc[need, "plate"], df.loc[need, "analyte"]))
    means = np.array([bg_mean.get(k, np.nan) for k in keys], dtype=float)
    no_bg = ~np.isfinite(means)
    if no_bg.any():
        lacking = sorted({k[1] for k, flag in zip(keys, no_bg) if flag})
        warnings.append("no background wells for " + ", ".join(lacking[:10])
                        + (" …" if len(lacking) > 10 else "")
                        + "; net_mfi = median_mfi there")
        means[no_bg] = 0.0
    df.loc[need, "net_mfi"] = df.loc[need, "median_mfi"].to_numpy(dtype=float) - means
    return int(need.sum())


def refresh_derived_net_mfi(plate: PlateData) -> None:
    """Recompute net MFI we derived (not the file's) after backgrounds changed (e.g. a layout)."""
    if plate.metadata.get("net_mfi") != "derived":
        return
    plate.wells["net_mfi"] = float("nan")
    plate.warnings[:] = [w for w in plate.warnings if not w.startswith("no background wells for")]
    fill_net_mfi(plate.wells, plate.warnings)


def build_vendor(records: list[dict[str, Any]]) -> pd.DataFrame | None:
    """Vendor result records → the :data:`VENDOR_COLUMNS` frame (``None`` when there are none)."""
    import pandas as pd

    if not records:
        return None
    df = pd.DataFrame.from_records(records)
    for col in VENDOR_COLUMNS:
        if col not in df.columns:
            df[col] = None
    df = df.loc[:, list(VENDOR_COLUMNS)]
    df["concentration"] = pd.to_numeric(df["concentration"], errors="coerce").astype(float)
    df["raw"] = df["raw"].fillna("").astype(str)
    return df.reset_index(drop=True)


def parse_vendor_value(raw: Any) -> tuple[float, str]:
    """A printed vendor concentration → (value, flag).

    ``"< 0.1"`` → (0.1, "<"); ``"> 3450"``/``"OOR >"`` → (3450 / nan, ">"); ``"*3.42"`` →
    (3.42, "extrapolated"); ``"---"`` → outlier; blank/``NaN``/``***`` → missing.
    """
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        value = to_float(raw)
        return value, ("ok" if math.isfinite(value) else "missing")
    text = "" if raw is None else str(raw).strip()
    if not text or text.lower() in {"nan", "n/a", "***", "not reported", "none"}:
        return math.nan, "missing"
    if text.startswith("---"):
        return math.nan, "outlier"
    compact = text.replace("OOR", "").strip()
    if compact.startswith("<"):
        return to_float(compact[1:]), "<"
    if compact.startswith(">"):
        return to_float(compact[1:]), ">"
    if text.startswith("*"):
        return to_float(text.lstrip("*")), "extrapolated"
    value = to_float(text)
    return value, ("ok" if math.isfinite(value) else "missing")


# --------------------------------------------------------------------------------------------
# format detection and the single entry point

def _is_msd_header(line: str) -> bool:
    """A Discovery Workbench table header: ``[Plate Name,] Sample, Assay, Well, ... Signal``."""
    tokens = [t.strip().strip('"').strip().lower() for t in line.split(",")]
    return {"sample", "assay", "well"} <= set(tokens) and "signal" in tokens


def detect_format(path: str | os.PathLike[str]) -> str:
    """Recognise a plate export by its content.

    Returns
    -------
    str
        One of :data:`FORMATS`.

    Raises
    ------
    InputError
        If the file is missing, empty or not a plate export this package reads.
    """
    head = head_bytes(path)
    if not head.strip():
        raise InputError(path, "empty file")
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        return "bioplex_xls"
    if head.startswith(b"PK\x03\x04"):
        return "bioplex_xlsx"
    text = head.decode("utf-8-sig", errors="replace").lstrip("\ufeff \t\r\n")
    if text.startswith("<"):
        return "bioplex_xml"
    lines = [ln for ln in text.splitlines() if ln.strip()][:6]
    first = lines[0] if lines else ""
    upper_first = first.upper()
    if "PROGRAM" in upper_first and "XPONENT" in upper_first:
        return "xponent"
    if "DataType:" in text and ("Location" in text or "Sample" in text):
        return "xponent"
    if "WELL LOCATION" in upper_first and ("MEDIAN" in upper_first or "MODEL NAME" in upper_first):
        return "intelliflex_flat"
    if any(ln.replace('"', "").replace(" ", "").upper().startswith("EVENTNO,RID") for ln in lines):
        return "beadlevel"
    if "==========Data" in text or re.match(r"^\s*FileName\s*:", first):
        return "msd_platereader"
    if re.match(r'^\s*"?Plate_', first) or any(_is_msd_header(ln) for ln in lines[:3]):
        return "msd_workbench"
    tokens = {t.strip().strip('"').strip() for t in re.split(r"[,;\t]", first.lower())}
    if "well" in tokens and ("analyte" in tokens or tokens & {"mfi", "median", "median_mfi"}):
        return "generic"
    raise InputError(path, "not a recognised plate export (xPONENT, Intelliflex, Bio-Plex, MSD, "
                           "bead-level, or generic CSV with columns well, analyte, mfi)")


#: File endings of plate exports taken from a folder.
PLATE_SUFFIXES: tuple[str, ...] = (".csv", ".txt", ".xlsx", ".xls", ".xml", ".tsv")


def expand_plate_paths(items: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Plate inputs as given, folders replaced by their plate exports (sorted by name, hidden
    files and other endings skipped; not recursive). A path that does not exist is kept, so
    reading it reports it."""
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and not
                            p.name.startswith(".") and p.suffix.lower() in PLATE_SUFFIXES)
        else:
            files.append(path)
    return list(dict.fromkeys(files))


def read_plate(path: str | os.PathLike[str], *,
               layout: str | os.PathLike[str] | pd.DataFrame | None = None,
               standards: str | os.PathLike[str] | pd.DataFrame | None = None,
               repair: bool = True, format: str | None = None) -> PlateData:
    """Read a multiplex plate export into the tidy well × analyte table.

    Parameters
    ----------
    path
        The export (xPONENT/Intelliflex CSV, bead-level CSV, Bio-Plex .xls/.xlsx/.xml, MSD
        Workbench CSV or plate-reader text, generic CSV).
    layout
        Optional plate layout (path, or the frame from :func:`~.layout.read_layout`; columns
        ``well, sample, sample_type, dilution, expected_conc``, see :mod:`.layout`); it
        overrides the file's sample names, types, dilutions and expected concentrations well by
        well (required for MSD plate-reader text to know standards).
    standards
        Optional kit standards table (path or the frame from
        :func:`~.standards.read_standards`); it wins over the file's expected concentrations and
        every difference is warned about.
    repair
        Repair expected concentrations that lost their decimal point (see :mod:`.repair`);
        with ``False`` suspicious values are only warned about.
    format
        Force a format (one of :data:`FORMATS`) instead of detecting it by content.

    Returns
    -------
    PlateData

    Raises
    ------
    InputError
        For a missing, empty, unrecognised or malformed file (one line naming file and problem).
    """
    fmt = format or detect_format(path)
    if fmt not in FORMATS:
        raise InputError(path, f"unknown plate format {fmt!r}; expected one of "
                               f"{', '.join(FORMATS)}")
    if fmt in ("xponent", "intelliflex_flat"):
        from . import xponent
        plate = (xponent.read_xponent(path) if fmt == "xponent"
                 else xponent.read_intelliflex_flat(path))
    elif fmt == "beadlevel":
        from . import beadlevel
        plate = beadlevel.read_beadlevel(path)
    elif fmt.startswith("bioplex"):
        from . import bioplex
        plate = bioplex.read_bioplex(path, format=fmt)
    elif fmt.startswith("msd"):
        from . import msd
        plate = msd.read_msd(path, format=fmt)
    else:
        from . import layout as layout_mod
        plate = layout_mod.read_generic(path)
    if layout is not None:
        from . import layout as layout_mod
        table = layout_mod.read_layout(layout) if isinstance(layout, (str, os.PathLike)) \
            else layout
        layout_mod.apply_layout(plate, table)
    if standards is not None:
        from . import standards as standards_mod
        table = standards if not isinstance(standards, (str, os.PathLike)) else \
            standards_mod.read_standards(standards)
        standards_mod.apply_standards(plate, table)
    from . import repair as repair_mod
    repair_mod.check_expected(plate, repair=repair)
    plate.metadata = _json_safe(plate.metadata)
    return plate


def _json_safe(value: Any) -> Any:
    """Metadata as strict JSON (NaN/inf → None, tuples → lists): provenance is JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
