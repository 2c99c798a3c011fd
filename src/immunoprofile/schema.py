"""What every ``.h5ad`` and table of immunoprofile shares: one vocabulary, one flag codec, one version.

Contract: the three AnnData files (``flow.h5ad`` from ``gate``, ``cytokines.h5ad`` from
``cytokines``, ``study.h5ad`` and its views from ``assemble``) and the tidy tables are written
with the names defined here and stamp ``uns["immunoprofile"]["schema_version"] =``
:data:`SCHEMA_VERSION`; files of an older schema are brought up to date on read by
:func:`migrate` (:func:`immunoprofile.study.read_study` calls it). ``tests/test_schema.py`` pins
all of it: changing a name or a bit here changes the stored format.

Flag codec (schema 2; one encoding in every file)
    ``layers["flag"]`` is an ``int32`` **bit mask**, 0 = ``ok``. Bits 1-10 are the cytokine
    QC flags (:data:`QC_FLAGS`: bit ``i`` = ``QC_FLAGS[i - 1]``, the order
    ``concentrations.csv`` joins them in); bits 16-20 are the study's reasons for a missing value
    (:data:`MISSING_FLAGS`, at most one per cell, never combined with QC flags); bits 24-30 hold
    flags of a study's input tables outside this vocabulary (an analyst's own table), named in the
    file's own table. Every file stores its table name -> bit value as
    ``uns["immunoprofile"]["flag_bits"]``; decode with :func:`decode_flags`. Schema 1 stored the
    study's flags as integer codes (0-5 missing reasons, observed combinations numbered from 10,
    table ``flag_codes``): :func:`migrate` re-encodes them.

Feature naming
    Flow features are ``<population path>|<statistic column>`` (``/Cells/CD3+|pct_parent``,
    ``/Cells|mfi_CD4``), cytokine features ``<analyte>|<unit>`` (``IL-13|pg/mL``; ``conc``
    without a unit): :func:`flow_feature`, :func:`cytokine_feature`. ``var["statistic"]`` is the
    statistic column's prefix: ``pct_parent``, ``pct_total``, ``count``, ``mfi`` (the median
    fluorescence; schema 1's study called it ``median``), ``gmean``, ``rcv``, ``concentration``;
    :func:`flow_column` maps a column to ``(feature_type, statistic, marker)``;
    :func:`feature_labels` gives the reader's label of every feature.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

__all__ = [
    "SCHEMA_VERSION", "QC_FLAGS", "MISSING_FLAGS", "FLAG_BITS", "flag_table", "encode_flags",
    "decode_flags", "decode_flag_array", "canonical_flags", "FEATURE_TYPES", "STATISTICS",
    "UNITS", "STUDY_VAR_COLUMNS", "STUDY_LAYERS", "CYTOKINE_LAYERS", "flow_column",
    "flow_feature", "cytokine_feature", "feature_labels", "DEFAULT_DRUG_READOUTS", "analyte_key",
    "is_drug_readout", "layer_names", "migrate", "SCHEMA1_FLAG_CODES",
]

#: Version of the shared layout, in ``uns["immunoprofile"]["schema_version"]`` of every file.
SCHEMA_VERSION = "2"

# ---------------------------------------------------------------------------------------- flags
#: Cytokine QC flags, bit 1 upward (their order is the order ``;``-joined flags are written in).
QC_FLAGS: tuple[str, ...] = ("failed_fit", "below_curve", "above_curve", "<LLOQ", ">ULOQ",
                             "extrapolated", "low_beads", "high_cv", "missing",
                             "control_out_of_range")
#: Why a study value is missing, bit 16 upward.
MISSING_FLAGS: tuple[str, ...] = (
    "missing: visit not attended",
    "missing: after dropout",
    "missing: assay not scheduled at this visit",
    "missing: sample listed in the manifest but absent from the results",
    "missing: value not available for this sample",
)
_MISSING_FIRST_BIT = 16
_EXTRA_BITS = range(24, 31)  # int32: bit 31 is the sign
#: Flag name -> bit index (``ok`` is no bit).
FLAG_BITS: dict[str, int] = {
    **{name: i for i, name in enumerate(QC_FLAGS, start=1)},
    **{name: i for i, name in enumerate(MISSING_FLAGS, start=_MISSING_FIRST_BIT)},
}
#: Schema 1's fixed study codes (observed flag combinations were numbered from 10).
SCHEMA1_FLAG_CODES: dict[int, str] = {0: "ok", **dict(enumerate(MISSING_FLAGS, start=1))}


def _tokens(text: object) -> list[str]:
    return [t.strip() for t in str(text).split(";") if t.strip() and t.strip() != "ok"]


def flag_table(extra: Iterable[str] = ()) -> dict[str, int]:
    """Flag name -> bit value (``ok`` -> 0) for a file: the fixed vocabulary, plus ``extra``
    flag names (outside it) on bits 24-30 in sorted order.

    Raises
    ------
    ValueError
        When ``extra`` holds more names than bits 24-30 can carry.
    """
    unknown = sorted({t for t in extra if t not in FLAG_BITS and t != "ok"})
    if len(unknown) > len(_EXTRA_BITS):
        raise ValueError(f"{len(unknown)} flags outside the vocabulary ({', '.join(unknown[:10])}"
                         f"{' …' if len(unknown) > 10 else ''}); at most {len(_EXTRA_BITS)} fit")
    table = {"ok": 0, **{name: 1 << bit for name, bit in FLAG_BITS.items()}}
    table.update({name: 1 << bit for name, bit in zip(unknown, _EXTRA_BITS)})
    return table


def encode_flags(text: object, table: Mapping[str, int] | None = None) -> int:
    """A ``;``-joined flag string as a bit mask (``ok``/empty -> 0).

    Raises
    ------
    KeyError
        For a flag neither in the vocabulary nor in ``table``.
    """
    table = table or _DEFAULT_TABLE
    code = 0
    for name in _tokens(text):
        code |= int(table[name])
    return code


def decode_flags(code: int, table: Mapping[str, int] | None = None) -> str:
    """The inverse of :func:`encode_flags`: names of the set bits in bit order, ``ok`` when none."""
    table = table or _DEFAULT_TABLE
    value = int(code)
    names = [name for name, bit in sorted(table.items(), key=lambda kv: int(kv[1]))
             if int(bit) and value & int(bit)]
    return ";".join(names) if names else "ok"


def canonical_flags(flags: Iterable[str]) -> str:
    """Flag names (each possibly ``;``-joined) as one string in bit order (extras sorted last)."""
    tokens = {t for f in flags for t in _tokens(f)}
    known = sorted((t for t in tokens if t in FLAG_BITS), key=FLAG_BITS.__getitem__)
    return ";".join(known + sorted(tokens - set(known))) or "ok"


def decode_flag_array(codes: Any, table: Mapping[str, int]) -> np.ndarray:
    """A flag layer decoded to strings (same shape), each distinct code decoded once."""
    import numpy as np

    arr = np.asarray(codes).astype(np.int64)
    uniq, inverse = np.unique(arr, return_inverse=True)
    names = np.array([decode_flags(c, table) for c in uniq], dtype=object)
    return names[inverse].reshape(arr.shape)


_DEFAULT_TABLE = flag_table()

# ----------------------------------------------------------------------------------- vocabulary
#: ``var["feature_type"]`` values.
FEATURE_TYPES: tuple[str, ...] = ("frequency", "count", "mfi", "concentration")
#: ``var["statistic"]`` values (the statistic column's prefix for flow features).
STATISTICS: tuple[str, ...] = ("pct_parent", "pct_total", "count", "mfi", "gmean", "rcv",
                               "concentration")
#: ``var["unit"]`` of flow features by feature type (cytokines carry the export's unit).
UNITS: dict[str, str] = {"frequency": "%", "mfi": "MFI", "count": "events"}
#: ``var`` columns of ``study.h5ad`` (``log_floor``/``censor_level``: the cytokine censoring
#: level in concentration units / on the transformed scale, NaN for flow features).
STUDY_VAR_COLUMNS: tuple[str, ...] = ("feature_type", "assay", "population", "parent", "marker",
                                      "analyte", "statistic", "unit", "drug_readout",
                                      "log_floor", "censor_level")
#: Layers of ``study.h5ad`` (``back_calculated`` only with cytokines).
STUDY_LAYERS: tuple[str, ...] = ("raw", "transformed", "flag", "change_from_baseline",
                                 "censored", "back_calculated")
#: Layers of ``cytokines.h5ad``.
CYTOKINE_LAYERS: tuple[str, ...] = ("raw", "cv", "flag")

_FLOW_PREFIXES = {"mfi": "mfi", "gmean": "gmean", "rcv": "rcv"}


def flow_column(column: str) -> tuple[str, str, str] | None:
    """``(feature_type, statistic, marker)`` of a flow statistic column, ``None`` for others.

    ``pct_parent`` -> ``("frequency", "pct_parent", "")``, ``count`` -> ``("count", "count",
    "")``, ``mfi_CD4`` -> ``("mfi", "mfi", "CD4")``, ``gmean_CD4`` / ``rcv_CD4`` likewise.
    """
    if column in ("pct_parent", "pct_total"):
        return "frequency", column, ""
    if column == "count":
        return "count", "count", ""
    prefix, _, marker = column.partition("_")
    if prefix in _FLOW_PREFIXES and marker:
        return "mfi", _FLOW_PREFIXES[prefix], marker
    return None


def flow_feature(population: Any, column: Any) -> Any:
    """The feature id of a flow statistic: ``/Cells/CD3+|pct_parent`` (strings, or string
    Series element-wise)."""
    return population + "|" + column


def cytokine_feature(analyte: Any, unit: Any) -> Any:
    """The feature id of a cytokine: ``IL-13|pg/mL``, ``IL-13|conc`` without a unit (strings,
    or string Series element-wise)."""
    if hasattr(unit, "where"):
        return analyte + "|" + unit.where(unit != "", "conc")
    return analyte + "|" + (unit or "conc")


def feature_labels(var: pd.DataFrame) -> dict[str, str]:
    """Feature id -> the label a reader expects: ``Th2 % of CD4+CD8-``, ``Th2 % of all
    events``, ``Th2 count``, ``Th2 MFI CD4``, ``IL-13 (pg/mL)``."""
    import numpy as np
    import pandas as pd

    def leaf(path: Any) -> str:
        text = "" if path is None or (isinstance(path, float) and np.isnan(path)) else str(path)
        return text.rstrip("/").rsplit("/", 1)[-1] if text and text != "nan" else ""

    # "median": schema 1's study name of the MFI statistic (a var frame read without migrate)
    names = {"mfi": "MFI", "median": "MFI", "gmean": "geo. mean", "rcv": "rCV"}
    labels = {}
    for name, row in var.iterrows():
        get = (lambda k: row[k] if k in row.index and pd.notna(row[k]) else "")
        statistic, population = str(get("statistic")), leaf(get("population"))
        parent, marker, unit = leaf(get("parent")), str(get("marker")), str(get("unit"))
        if get("feature_type") == "concentration" or (get("analyte") and not population):
            label = f"{get('analyte') or name} ({unit})" if unit else str(get("analyte") or name)
        elif statistic == "pct_parent" and population:
            label = f"{population} % of {parent or 'all events'}"
        elif statistic == "pct_total" and population:
            label = f"{population} % of all events"
        elif statistic == "count" and population:
            label = f"{population} count"
        elif population and statistic.split("_")[0] in names:
            label = f"{population} {names[statistic.split('_')[0]]} {marker}".strip()
        else:
            label = leaf(str(name).split("|")[0]) or str(name)
        labels[str(name)] = label
    return labels


# ------------------------------------------------------------------------------- drug readouts
#: Anakinra is recombinant IL-1Ra: an IL-1RA bead measures the drug, not the disease.
DEFAULT_DRUG_READOUTS: tuple[str, ...] = ("IL-1RA",)


def analyte_key(name: str) -> str:
    """Loose analyte key: ``Hu IL-6 (19)`` (Bio-Plex: species prefix, bead region) -> ``il6``."""
    text = re.sub(r"\(\s*\d+\s*\)\s*$", "", str(name).strip().lower())
    text = re.sub(r"^(?:hu|human)\s+", "", text)
    return re.sub(r"[^0-9a-z]", "", text)


def is_drug_readout(analyte: str, readouts: Sequence[str]) -> bool:
    """Whether ``analyte`` names one of ``readouts`` (by :func:`analyte_key`: ``IL-1RA`` matches
    ``IL1RA``, ``IL-1ra``, ``Hu IL-1RA (25)``)."""
    key = analyte_key(analyte)
    return any(key == analyte_key(r) for r in readouts)


# -------------------------------------------------------------------------------------- layers
def layer_names(adata: Any) -> list[str]:
    """Names of an AnnData's layers.

    anndata >= 0.13 also lists ``X`` among ``adata.layers``, under the key ``None``; every
    listing of layers (key checks, messages, comparisons) must leave it out.
    """
    return [key for key in adata.layers if key is not None]


# ------------------------------------------------------------------------------------ migration
def migrate(adata: Any) -> Any:
    """Bring an immunoprofile AnnData of an older schema up to :data:`SCHEMA_VERSION`, in place.

    Schema 1 -> 2: a study's flag layer is re-encoded from integer codes (``flag_codes``) to the
    bit mask (``flag_bits``) and ``var["statistic"]`` ``median`` becomes ``mfi``; a
    ``cytokines.h5ad`` (already a bit mask on the same bits) or ``flow.h5ad`` only gets its
    table / version. ``uns["immunoprofile"]["migrated_from"]`` records the stored version.

    Returns
    -------
    AnnData
        ``adata`` itself.

    Raises
    ------
    ValueError
        For a version newer than this one, or a flag table that cannot be decoded.
    """
    import numpy as np

    meta = adata.uns.get("immunoprofile")
    if not isinstance(meta, Mapping):
        raise ValueError("no uns['immunoprofile']: not an immunoprofile file")
    version = str(meta.get("schema_version", "1"))
    if version == SCHEMA_VERSION:
        return adata
    if version != "1":
        raise ValueError(f"schema version {version!r}; this immunoprofile reads 1 to "
                         f"{SCHEMA_VERSION}")
    if "flag_codes" in meta:  # a schema-1 study: integer codes -> the bit mask
        codes = meta["flag_codes"]
        lookup = dict(zip(np.asarray(codes["code"]).astype(int).tolist(),
                          np.asarray(codes["label"]).astype(str).tolist()))
        table = flag_table(t for label in lookup.values() for t in _tokens(label))
        bits = {code: encode_flags(label, table) for code, label in lookup.items()}
        old = np.asarray(adata.layers["flag"]).astype(np.int64)
        unknown = sorted(set(np.unique(old).tolist()) - set(bits))
        if unknown:
            raise ValueError(f"flag code(s) {unknown[:5]} not in the file's flag_codes table")
        uniq, inverse = np.unique(old, return_inverse=True)
        new = np.array([bits[int(c)] for c in uniq], dtype=np.int32)[inverse].reshape(old.shape)
        adata.layers["flag"] = new
        del meta["flag_codes"]
        meta["flag_bits"] = table
    elif "flag_bits" in meta:  # cytokines.h5ad: same bits; the shared table
        meta["flag_bits"] = {**flag_table(), **dict(meta["flag_bits"])}
    if "statistic" in adata.var.columns:
        _rename_values(adata.var, "statistic", {"median": "mfi"})
    meta["migrated_from"] = version
    meta["schema_version"] = SCHEMA_VERSION
    return adata


def _rename_values(frame: pd.DataFrame, column: str, renames: Mapping[str, str]) -> None:
    import pandas as pd

    values = frame[column]
    if isinstance(values.dtype, pd.CategoricalDtype):
        text = values.astype(object).map(lambda v: renames.get(v, v) if isinstance(v, str) else v)
        if values.cat.ordered:
            cats = list(dict.fromkeys(renames.get(c, c) for c in values.cat.categories))
        else:
            cats = sorted({renames.get(c, c) for c in values.cat.categories})
        frame[column] = pd.Categorical(text, categories=cats, ordered=values.cat.ordered)
    else:
        frame[column] = values.map(lambda v: renames.get(v, v) if isinstance(v, str) else v)
