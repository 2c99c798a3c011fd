"""Study matrices: flow statistics and cytokine concentrations joined with the manifest into AnnData.

Contract: :func:`assemble` returns ONE AnnData per study with obs = every subject × protocol visit
(``"S01|week4"``; missing visits stay as NaN rows with a recorded reason, never dropped or imputed),
var = features, ``X`` = the primary value and layers ``raw``, ``transformed``, ``flag`` (the bit
mask of :mod:`immunoprofile.schema`, table in ``uns["immunoprofile"]["flag_bits"]``; decode with
:func:`~immunoprofile.study.views.flag_labels`), ``censored`` (1 = left-censored below
the LLOQ), ``back_calculated`` (cytokines: the raw back-calculated concentration, before bridging
and the LLOQ policy) and ``change_from_baseline``. Nothing is dropped silently: every result
without a manifest row and every manifest row without a result is in
``uns["immunoprofile"]["unmatched"]`` (``unmatched.tsv``). Everything
else here (:func:`split_by_visit`, :func:`period_means`, :func:`to_tidy`, :func:`write_study`) reads
or writes that object; the names they share with the other files are in :mod:`immunoprofile.schema`.

Layer conventions (also stored in ``uns["immunoprofile"]["transforms"]``):

* frequencies (percent): ``logit(p / 100)`` with ``p`` clipped to [0.01 %, 99.99 %] so 0 % and
  100 % stay finite;
* MFI: ``asinh(x / 150)`` (150 is the usual cofactor for conventional fluorescence);
* counts: ``log10(x + 1)``;
* concentrations: ``log10(x)`` of the reported value (``concentration_reported``: the LLOQ
  policy and bridging normalisation applied). Results below the LLOQ are left-censored, not
  numbers: one censoring level per analyte (``var["log_floor"]``, concentration units; on the
  transformed scale ``var["censor_level"]``) = the highest sample LLOQ (plate LLOQ from
  ``standard_curves.csv`` × dilution × bridging factor) among the plates holding its study
  samples; every value below it or flagged below the curve/LLOQ without a number is censored
  (layer ``censored``) and holds log10(level) in the transformed layer, so rank tests see them tied
  below every quantified value; parametric methods treat them as censored (``study.compare``).
  Without a known LLOQ the level is half the smallest positive value. Values above the curve with
  no number are set to twice the largest observed value. ``raw`` keeps the reported number (or
  NaN), the ``flag`` layer says which.
* ``change_from_baseline`` = transformed − transformed at the baseline visit (week 0) of the same
  subject.
"""


from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._frames import is_text_column
from ..errors import InputError
from ..provenance import build_provenance
from ..schema import (
    DEFAULT_DRUG_READOUTS,
    FLAG_BITS,
    SCHEMA1_FLAG_CODES,
    SCHEMA_VERSION,
    UNITS,
    cytokine_feature,
    encode_flags,
    flag_table,
    flow_column,
    flow_feature,
    is_drug_readout,
)
from .clinical import clinical_summary, read_clinical
from .design import DesignSpec, resolve_design
from .inputs import (
    CytokineResults,
    FlowResults,
    load_cytokine_results,
    load_flow_results,
    require_columns,
)
from .io import read_study, write_study
from .manifest import read_manifest, validate_manifest
from .transforms import FREQUENCY_CLIP_PCT, MFI_COFACTOR, censor_levels, combine_flags, transform
from .views import flag_labels, period_means, split_by_visit, to_tidy

if TYPE_CHECKING:  # pragma: no cover
    import anndata as ad
    import pandas as pd

__all__ = [
    "assemble", "split_by_visit", "period_means", "to_tidy", "write_study", "read_study",
    "flag_labels", "FLAG_MISSING", "SCHEMA_VERSION", "DEFAULT_DRUG_READOUTS", "MFI_COFACTOR",
    "FREQUENCY_CLIP_PCT",
]

log = logging.getLogger(__name__)


#: Why a value is missing, numbered 1-5 (0 = not missing): the reason of a cell; the flag layer
#: stores reason ``k`` as bit ``15 + k`` (:data:`immunoprofile.schema.MISSING_FLAGS`).
FLAG_MISSING: dict[int, str] = SCHEMA1_FLAG_CODES
_QC_TYPES = {"standard", "background", "control"}


# --------------------------------------------------------------------------------------------
# joins
# --------------------------------------------------------------------------------------------
def _stem(value: object) -> str:
    text = str(value)
    name = text.replace("\\", "/").rsplit("/", 1)[-1]
    return name[:-4] if name.lower().endswith(".fcs") else name


def _flow_features(pops: pd.DataFrame, ids: dict[str, str], statistics: tuple[str, ...],
                   path: Path | str) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Long flow table (manifest sample_id, feature, value) and the var rows of the features."""
    import pandas as pd

    # Join on sample_id; fall back to the file stem (gate without --manifest names samples by stem).
    stem_to_id = {_stem(f): s for f, s in ids.items()}
    known = set(ids.values())
    key = pops["sample_id"].astype(str)
    mapped = key.where(key.isin(known))
    if "file" in pops.columns:
        mapped = mapped.fillna(pops["file"].map(_stem).map(stem_to_id))
    mapped = mapped.fillna(key.map(stem_to_id))
    unmatched = sorted(set(key[mapped.isna()]))
    pops = pops.assign(_sid=mapped).dropna(subset=["_sid"])

    stat_cols: list[tuple[str, str, str, str]] = []  # column, feature_type, statistic, marker
    for col in pops.columns:
        kind = flow_column(str(col))
        if kind is not None and kind[1] in statistics:
            stat_cols.append((col, *kind))
    if not stat_cols:
        raise InputError(path, f"none of the requested statistics {statistics} are columns here")
    populations = list(dict.fromkeys(pops["population"].astype(str)))  # file order = strategy order
    parents = pops.drop_duplicates("population").set_index("population")["parent"] \
        if "parent" in pops.columns else pd.Series(dtype=str)
    long_parts, var_rows = [], []
    for col, ftype, stat, marker in stat_cols:
        values = pd.to_numeric(pops[col], errors="coerce")
        if values.notna().sum() == 0:
            continue  # e.g. an MFI column for a marker that only exists in other files
        names = flow_feature(pops["population"].astype(str), col)
        long_parts.append(pd.DataFrame({"sample_id": pops["_sid"].to_numpy(),
                                        "feature": names.to_numpy(),
                                        "value": values.to_numpy(dtype=float)}))
        for pop in populations:
            var_rows.append({
                "feature": flow_feature(pop, col), "feature_type": ftype, "assay": "flow",
                "population": pop, "parent": str(parents.get(pop, "")) if len(parents) else "",
                "marker": marker, "analyte": "", "statistic": stat, "unit": UNITS[ftype],
                "drug_readout": False, "_order": (populations.index(pop), len(var_rows)),
            })
    long = pd.concat(long_parts, ignore_index=True) if long_parts else \
        pd.DataFrame(columns=["sample_id", "feature", "value"])
    var = pd.DataFrame(var_rows)
    # Population in strategy order, then statistic in a fixed order.
    var = var.sort_values("_order", key=lambda s: s.map(lambda t: t[0]), kind="stable") \
        .drop(columns="_order").drop_duplicates("feature")
    present = set(long["feature"])
    var = var[var["feature"].isin(present)]
    return long, var, unmatched



def _same_file(manifest_file: str, base: Path, export: str) -> bool:
    """Whether a manifest ``file`` names the export at ``export`` (same resolved path or name)."""
    given = Path(manifest_file.replace("\\", "/"))
    target = given if given.is_absolute() else base / given
    try:
        if target.resolve() == Path(export).resolve():
            return True
    except OSError:
        pass
    return given.name == Path(export).name


def _join_plate_results(conc: pd.DataFrame, manifest_cyto: pd.DataFrame, plate_files: dict[str, list[str]],
                        base: Path) -> tuple[pd.Series, list[dict[str, Any]], list[str]]:
    """Manifest sample of every result row (by file + plate + well, then plate + well, then id).

    Returns
    -------
    tuple
        (manifest sample_id per result row, "" when none; unmatched manifest rows; warnings).
    """
    import pandas as pd

    plates = sorted(set(conc["plate"]))
    files_of = {p: plate_files.get(p, []) for p in plates}
    key = pd.Series(list(zip(conc["plate"], conc["well"].astype(str).str.upper())), index=conc.index)
    by_well: dict[tuple[str, str], list[Any]] = {}
    for idx, k in key.items():
        by_well.setdefault(k, []).append(idx)
    joined = pd.Series("", index=conc.index, dtype=object)
    unmatched: list[dict[str, Any]] = []
    notes: list[str] = []
    how_counts: dict[str, int] = {}
    renamed: list[str] = []
    for rec in manifest_cyto.itertuples(index=False):
        wells = [w for w in str(rec.well).split(";") if w]
        in_file = [p for p in plates if any(_same_file(str(rec.file), base, f) for f in files_of[p])]
        plate, how = None, ""
        if in_file:
            named = [p for p in in_file if p == rec.plate] or \
                [p for p in in_file if p.lower() == str(rec.plate).lower()]
            if named:
                plate, how = named[0], "file + plate + well"
            elif len(in_file) == 1:
                plate, how = in_file[0], "file + well"
        if plate is None:
            named = [p for p in plates if p == rec.plate] or \
                [p for p in plates if p.lower() == str(rec.plate).lower()]
            if len(named) == 1:
                plate, how = named[0], "plate + well"
        rows: list[Any] = []
        if plate is not None:
            rows = [i for w in wells for i in by_well.get((plate, w), [])]
        if not rows:  # last resort: the export's sample name is the manifest's sample_id
            hit = conc.index[(conc["sample_id"] == rec.sample_id) & (joined == "")]
            if len(hit) and conc.loc[hit, "plate"].nunique() == 1:
                rows, how = list(hit), "sample_id"
                notes.append(f"{rec.sample_id} sits in other wells than the manifest lists "
                             f"({rec.well} on {rec.plate}; results in "
                             f"{';'.join(sorted(set(conc.loc[hit, 'well'])))} on "
                             f"{conc.loc[hit, 'plate'].iloc[0]}): joined by its sample name")
        if not rows:
            why = (f"no result in well(s) {rec.well} of plate {plate!r}" if plate is not None else
                   f"no results for file {rec.file!r} / plate {rec.plate!r} (results have plate(s) "
                   f"{', '.join(plates) or 'none'} from {', '.join(sorted({Path(f).name for p in plates for f in files_of[p]})) or 'unknown files'})")
            unmatched.append({"side": "manifest", "assay": "cytokine", "sample_id": rec.sample_id,
                              "file": rec.file, "plate": rec.plate, "well": rec.well,
                              "line": getattr(rec, "line", ""), "reason": why})
            continue
        taken = [i for i in rows if joined[i] and joined[i] != rec.sample_id]
        if taken:
            notes.append(f"wells of {rec.sample_id} already joined to {joined[taken[0]]}")
        joined[rows] = rec.sample_id
        how_counts[how] = how_counts.get(how, 0) + 1
        names = set(conc.loc[rows, "sample_id"])
        if names != {rec.sample_id}:
            renamed.append(f"{rec.sample_id} (export: {', '.join(sorted(names))})")
    if renamed:
        notes.append(f"{len(renamed)} sample(s) joined by plate and well carry another name in the "
                     f"export: {', '.join(renamed[:5])}{' …' if len(renamed) > 5 else ''}")
    if how_counts:
        log.info("cytokine results joined to the manifest by %s",
                 ", ".join(f"{how} ({n})" for how, n in sorted(how_counts.items())))
    return joined, unmatched, notes


def _cytokine_features(conc: pd.DataFrame, manifest_cyto: pd.DataFrame, value_column: str,
                       drug_readouts: tuple[str, ...], path: Path | str, *,
                       plate_files: dict[str, list[str]] | None = None, base: Path | None = None,
                       bridging_sample: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[dict[str, Any]]]:
    """Replicate-mean long table, var rows, QC rows (plate samples not in the manifest), unmatched."""
    import pandas as pd

    if value_column not in conc.columns:
        raise InputError(path, f"no column {value_column!r}")
    conc = conc.copy()
    conc["sample_id"] = conc["sample_id"].astype(str)
    conc["analyte"] = conc["analyte"].astype(str)
    conc["value"] = pd.to_numeric(conc[value_column], errors="coerce")
    conc["back_calculated"] = pd.to_numeric(conc["concentration"], errors="coerce") \
        if "concentration" in conc.columns else conc["value"]
    for col, default in (("flag", "ok"), ("unit", ""), ("plate", ""), ("well", ""),
                         ("sample_type", "unknown")):
        if col not in conc.columns:
            conc[col] = default
        conc[col] = conc[col].fillna(default).astype(str)
    conc["dilution"] = pd.to_numeric(conc["dilution"], errors="coerce").fillna(1.0) \
        if "dilution" in conc.columns else 1.0
    # the factor applies only to concentration_reported; the raw value is on the plate's own scale
    conc["bridging_factor"] = pd.to_numeric(conc["bridging_factor"], errors="coerce").fillna(1.0) \
        if "bridging_factor" in conc.columns and value_column == "concentration_reported" else 1.0
    samples = ~conc["sample_type"].isin(_QC_TYPES)
    joined, unmatched, notes = _join_plate_results(conc[samples], manifest_cyto, plate_files or {},
                                                   base or Path.cwd())
    conc["_sid"] = ""
    conc.loc[joined.index, "_sid"] = joined
    for note in notes:
        log.warning("%s: %s", path, note)
    n_results = int(samples.sum())
    if len(manifest_cyto) and n_results and not (conc["_sid"] != "").any():
        res_plates = ", ".join(sorted(set(conc.loc[samples, "plate"]))) or "none"
        res_files = ", ".join(sorted({Path(f).name for fs in (plate_files or {}).values() for f in fs})) \
            or "unknown"
        man_plates = ", ".join(sorted(set(manifest_cyto["plate"].astype(str))))
        man_files = ", ".join(sorted(set(manifest_cyto["file"].astype(str))))
        raise InputError(path, f"none of the {n_results} cytokine sample results joined a manifest row: "
                               f"results come from plate(s) {res_plates} (file(s) {res_files}), "
                               f"e.g. sample {conc.loc[samples, 'sample_id'].iloc[0]!r}; the manifest "
                               f"lists plate(s) {man_plates} in file(s) {man_files}, e.g. sample "
                               f"{manifest_cyto['sample_id'].iloc[0]!r}")
    data = conc[conc["_sid"] != ""]
    left = conc[samples & (conc["_sid"] == "")]
    for (sid, plate), g in left.groupby(["sample_id", "plate"], sort=True):
        unmatched.append({"side": "results", "assay": "cytokine", "sample_id": sid, "file": "",
                          "plate": plate, "well": ";".join(sorted(set(g["well"]))), "line": "",
                          "reason": f"the bridging control {sid!r} (a QC sample, not in the manifest)"
                          if sid == bridging_sample else
                          "result joins no manifest row (a QC sample, or a sample missing from the "
                          "manifest)"})
    qc = conc[conc["_sid"] == ""]
    qc = qc[~qc["sample_type"].isin(["standard", "background"])]
    grouped = data.groupby(["_sid", "analyte"], sort=True)
    long = grouped.agg(value=("value", "mean"), back_calculated=("back_calculated", "mean"),
                       flag=("flag", combine_flags), n_replicates=("value", "size"),
                       n_values=("value", "count"), unit=("unit", "first"),
                       plate=("plate", "first"), dilution=("dilution", "first"),
                       bridging_factor=("bridging_factor", "first")).reset_index()
    long = long.rename(columns={"_sid": "sample_id"})
    long["feature"] = cytokine_feature(long["analyte"], long["unit"])
    var = (long.drop_duplicates("feature")[["feature", "analyte", "unit"]]
               .sort_values("feature", kind="stable"))
    var = var.assign(feature_type="concentration", assay="cytokine", population="", parent="",
                     marker="", statistic="concentration",
                     drug_readout=var["analyte"].map(lambda a: is_drug_readout(a, drug_readouts))
                     .astype(bool))
    qc_cols = [c for c in ("sample_id", "plate", "well", "sample_type", "analyte", "value", "flag")
               if c in qc.columns]
    qc = qc[qc_cols].rename(columns={"value": "concentration"}).sort_values(
        [c for c in ("sample_id", "plate", "well", "analyte") if c in qc_cols], kind="stable")
    return long, var, qc.reset_index(drop=True), unmatched




# --------------------------------------------------------------------------------------------
# assemble
# --------------------------------------------------------------------------------------------
def assemble(
    manifest: str | os.PathLike[str] | pd.DataFrame,
    *,
    flow: pd.DataFrame | FlowResults | None = None,
    cytokines: pd.DataFrame | CytokineResults | None = None,
    standard_curves: pd.DataFrame | None = None,
    clinical: str | os.PathLike[str] | pd.DataFrame | None = None,
    design: DesignSpec | None = None,
    flow_statistics: tuple[str, ...] = ("pct_parent", "pct_total", "count", "mfi"),
    cytokine_value: str = "concentration_reported",
    drug_readouts: tuple[str, ...] = DEFAULT_DRUG_READOUTS,
    doses: str = "cumulative",
    flow_dir: str | os.PathLike[str] | None = None,
    cytokine_dir: str | os.PathLike[str] | None = None,
) -> ad.AnnData:
    """Join flow statistics, cytokine concentrations, the manifest and the clinical table.

    Parameters
    ----------
    manifest
        Path to the manifest CSV (validated by :func:`~immunoprofile.study.manifest.read_manifest`)
        or an already validated DataFrame.
    flow
        Flow statistics in memory: the tidy ``populations.csv`` table (one row per sample ×
        population with ``sample_id``, ``population`` and statistic columns), or the
        :class:`~immunoprofile.study.inputs.FlowResults` of
        :func:`~immunoprofile.study.inputs.load_flow_results`. Rows are matched to manifest flow
        samples by ``sample_id``, else by the FCS file stem.
    cytokines
        Cytokine results in memory: the ``concentrations.csv`` table, or the
        :class:`~immunoprofile.study.inputs.CytokineResults` of
        :func:`~immunoprofile.study.inputs.load_cytokine_results` (which also carries the curves
        and the plate → file map of the provenance). Results join manifest rows by the
        manifest's ``file`` (+ ``plate`` name for multi-plate files) and ``well``, falling back to
        the ``plate`` column and well, then to the export's sample name. Replicate wells of a
        sample are averaged and their flags combined; plate samples absent from the manifest (kit
        controls, bridging pools) are kept as QC in ``uns["immunoprofile"]["qc_samples"]``.
        Every result that joins no manifest row and every manifest row without a result is listed
        in ``uns["immunoprofile"]["unmatched"]`` (``unmatched.tsv``) and warned about; when no
        cytokine result joins at all, an ``InputError`` names both sides' identifiers.
    standard_curves
        The per-plate curves table (``plate, analyte, lloq``) for a bare ``cytokines`` table: it
        sets each analyte's censoring level. Overrides the curves of a ``CytokineResults``.
    clinical
        Clinical CSV or DataFrame (``subject_id, visit, scorad, doses_received, age, sex``).
    design
        Protocol: a StudyDesign, a protocol name (``"example-trial"``) or a design file; required
        (``None`` is an :class:`~immunoprofile.errors.InputError`, never a silent default).
    flow_statistics
        Which flow statistics become features: any of ``pct_parent``, ``pct_total``, ``count``,
        ``mfi`` (medians), ``gmean``, ``rcv``.
    cytokine_value
        Which column of ``concentrations.csv`` is the value: ``concentration_reported`` (default:
        after the LLOQ policy and the bridging normalisation; the raw back-calculated result stays
        as layer ``back_calculated``) or ``concentration`` (raw, no bridging).
    drug_readouts
        Analytes that measure the drug (pharmacokinetic, not biomarker): ``var["drug_readout"]``.
    doses
        How ``doses_received`` counts (see :func:`~immunoprofile.study.clinical.clinical_summary`).
    flow_dir, cytokine_dir
        Output folders of ``immunoprofile gate`` / ``immunoprofile cytokines``: shorthand for
        ``flow=load_flow_results(flow_dir)`` / ``cytokines=load_cytokine_results(cytokine_dir)``.

    Returns
    -------
    AnnData
        See the module docstring for layers; ``obs``: ``subject_id`` (categorical), ``visit`` and
        ``period`` (ordered categoricals), ``study_day``, ``flow_sample_id``,
        ``cytokine_sample_id``, ``missing_reason`` and the clinical columns; ``var``:
        ``feature_type, assay, population, parent, marker, analyte, statistic, unit,
        drug_readout, log_floor``.
    """
    import anndata as ad
    import numpy as np
    import pandas as pd

    design = resolve_design(design, what="the assembly")
    inputs: list[Path] = []
    if isinstance(manifest, pd.DataFrame):
        man = manifest if "period" in manifest.columns and "line" in manifest.columns \
            else validate_manifest(manifest, design=design)
    else:
        inputs.append(Path(manifest))
        man = read_manifest(manifest, design=design)
    flow_in = _flow_input(flow, flow_dir)
    cyto_in = _cytokine_input(cytokines, cytokine_dir, standard_curves)
    if flow_in is None and cyto_in is None:
        raise InputError(None, "assemble needs at least one of flow results or cytokine results")

    subjects = sorted(man["subject_id"].unique())
    visits = design.visit_names
    obs_names = [f"{s}|{v}" for s in subjects for v in visits]
    row_of = {name: i for i, name in enumerate(obs_names)}

    long_parts: list[pd.DataFrame] = []
    floors_given: dict[str, float] = {}
    unmatched_rows: list[dict[str, Any]] = []
    back_calculated = None
    plate_of_sample: dict[str, str] = {}
    manifest_base = Path(manifest).parent if not isinstance(manifest, pd.DataFrame) else Path.cwd()
    var_parts: list[pd.DataFrame] = []
    uns: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
    results_ids: dict[str, set[str]] = {"flow": set(), "cytokine": set()}
    assays_used: list[str] = []

    if flow_in is not None:
        where = flow_in.source or "flow table"
        inputs.extend(flow_in.inputs)
        pops = require_columns(flow_in.table, ("sample_id", "population"), where)
        mflow = man[man["assay"] == "flow"]
        ids = dict(zip(mflow["file"], mflow["sample_id"]))
        ids.update({s: s for s in mflow["sample_id"]})
        flong, fvar, unmatched = _flow_features(pops, ids, tuple(flow_statistics), where)
        if unmatched:
            log.warning("%d flow sample(s) not in the manifest were left out (listed in "
                        "unmatched.tsv): %s", len(unmatched), ", ".join(unmatched[:10]))
        unmatched_rows += [{"side": "results", "assay": "flow", "sample_id": u, "file": "", "plate": "",
                            "well": "", "line": "", "reason": "flow result joins no manifest row"}
                           for u in unmatched]
        long_parts.append(flong.assign(flag="ok"))
        var_parts.append(fvar)
        results_ids["flow"] = set(flong["sample_id"])
        gating = pops.drop_duplicates("population")[
            [c for c in ("population", "parent") if c in pops.columns]].astype(str).reset_index(drop=True)
        uns["gating"] = gating
        uns["flow_unmatched_samples"] = np.array(unmatched, dtype=object) if unmatched \
            else np.array([], dtype=str)
        if flow_in.provenance_json:
            uns["flow_provenance_json"] = flow_in.provenance_json
        if flow_in.strategy_json:
            uns["gating_strategy_json"] = flow_in.strategy_json
        assays_used.append("flow")

    if cyto_in is not None:
        where = cyto_in.source or "cytokine table"
        inputs.extend(cyto_in.inputs)
        conc = require_columns(cyto_in.concentrations, ("sample_id", "analyte"), where)
        value_col = cytokine_value
        if value_col == "concentration_reported" and value_col not in conc.columns:
            log.warning("%s: no concentration_reported column (an older export): the raw "
                        "back-calculated concentration is used, without bridging", where)
            value_col = "concentration"
        clong, cvar, qc, c_unmatched = _cytokine_features(
            conc, man[man["assay"] == "cytokine"], value_col, tuple(drug_readouts), where,
            plate_files=cyto_in.plate_files, base=manifest_base,
            bridging_sample=cyto_in.bridging_sample)
        unmatched_rows += c_unmatched
        long_parts.append(clong[["sample_id", "feature", "value", "flag"]])
        back_calculated = clong[["sample_id", "feature", "back_calculated"]]
        plate_of_sample = dict(zip(clong["sample_id"], clong["plate"]))
        var_parts.append(cvar)
        results_ids["cytokine"] = set(clong["sample_id"])
        uns["qc_samples"] = _uns_frame(qc)
        uns["cytokine_value"] = value_col
        factors = clong.drop_duplicates(["plate", "analyte"])[["plate", "analyte", "bridging_factor"]]
        uns["cytokine_normalisation"] = {
            "value": value_col,
            "description": ("concentration_reported: the lab's LLOQ policy and the bridging "
                            "normalisation applied (layer 'back_calculated' keeps the raw "
                            "back-calculated concentration)") if value_col == "concentration_reported"
            else "raw back-calculated concentration (no bridging, no LLOQ policy)",
            "bridging_factors": _uns_frame(factors.sort_values(["plate", "analyte"])),
            "bridging_applied": bool((factors["bridging_factor"] != 1.0).any()),
        }
        if cyto_in.standard_curves is not None:
            uns["standard_curves"] = _uns_frame(cyto_in.standard_curves)
            floors_given = censor_levels(clong, cyto_in.standard_curves)
        if cyto_in.provenance_json:
            uns["cytokine_provenance_json"] = cyto_in.provenance_json
        assays_used.append("cytokine")

    var = pd.concat(var_parts, ignore_index=True) if var_parts else pd.DataFrame()
    if var.empty:
        raise InputError(None, "no feature values matched a manifest sample")
    var = var.set_index("feature")
    var.index.name = None
    feat_col = {f: j for j, f in enumerate(var.index)}

    # obs skeleton: one row per subject × visit, whether sampled or not.
    obs = pd.DataFrame({"subject_id": [s for s in subjects for _ in visits],
                        "visit": [v for _ in subjects for v in visits]}, index=obs_names)
    obs["study_day"] = np.nan
    obs["period"] = [design.period_for_visit(v) for v in obs["visit"]]
    for assay in ("flow", "cytokine"):
        obs[f"{assay}_sample_id"] = ""
    sample_row: dict[tuple[str, str], int] = {}
    for rec in man.itertuples(index=False):
        i = row_of[f"{rec.subject_id}|{rec.visit}"]
        sample_row[(rec.assay, rec.sample_id)] = i
        obs.iloc[i, obs.columns.get_loc(f"{rec.assay}_sample_id")] = rec.sample_id
        if np.isnan(obs.iloc[i, obs.columns.get_loc("study_day")]) or rec.assay == "flow":
            obs.iloc[i, obs.columns.get_loc("study_day")] = rec.study_day
        if rec.period:
            obs.iloc[i, obs.columns.get_loc("period")] = rec.period

    n_obs, n_var = len(obs_names), len(var)
    raw = np.full((n_obs, n_var), np.nan)
    flag_text = np.full((n_obs, n_var), "", dtype=object)
    for part, assay in zip(long_parts, assays_used):
        rows = part["sample_id"].map(lambda s, a=assay: sample_row.get((a, s), -1)).to_numpy(
            dtype=np.int64)  # an empty part maps to object dtype otherwise
        # features of an assay none of whose samples the manifest lists are not in var
        mapped = part["feature"].map(feat_col)
        keep = (rows >= 0) & mapped.notna().to_numpy()
        cols = mapped.fillna(-1).to_numpy(dtype=np.int64)
        raw[rows[keep], cols[keep]] = part["value"].to_numpy(dtype=float)[keep]
        flag_text[rows[keep], cols[keep]] = part["flag"].astype(str).to_numpy()[keep]
    # the raw back-calculated concentration (before bridging and the LLOQ policy), as a layer
    back = np.full((n_obs, n_var), np.nan)
    if back_calculated is not None and len(back_calculated):
        rows = back_calculated["sample_id"].map(lambda s: sample_row.get(("cytokine", s), -1)) \
            .to_numpy(dtype=np.int64)
        mapped = back_calculated["feature"].map(feat_col)
        keep = (rows >= 0) & mapped.notna().to_numpy()
        back[rows[keep], mapped.fillna(-1).to_numpy(dtype=np.int64)[keep]] = \
            back_calculated["back_calculated"].to_numpy(dtype=float)[keep]
    obs["cytokine_plate"] = [plate_of_sample.get(sid, "") for sid in obs["cytokine_sample_id"]]
    # manifest samples that found no result at all
    for rec in man.itertuples(index=False):
        if rec.assay in assays_used and rec.sample_id not in results_ids[rec.assay] and not any(
                u["side"] == "manifest" and u["sample_id"] == rec.sample_id for u in unmatched_rows):
            unmatched_rows.append({"side": "manifest", "assay": rec.assay, "sample_id": rec.sample_id,
                                   "file": rec.file, "plate": rec.plate, "well": rec.well,
                                   "line": rec.line, "reason": "manifest row finds no result"})
    unmatched = pd.DataFrame(unmatched_rows, columns=["side", "assay", "sample_id", "file", "plate",
                                                      "well", "line", "reason"])
    if len(unmatched):
        counts = unmatched.groupby(["side", "assay"]).size()
        log.warning("assemble: %s (listed in unmatched.tsv)", "; ".join(
            f"{n} {assay} {'manifest row(s) without a result' if side == 'manifest' else 'result(s) without a manifest row'}"
            for (side, assay), n in counts.items()))

    # Why a value is missing: per assay, per subject × visit (the flag layer holds it per cell).
    attended = {s: [v for v in visits if any(obs.loc[f"{s}|{v}", f"{a}_sample_id"]
                                             for a in ("flow", "cytokine"))] for s in subjects}
    last_index = {s: max((visits.index(v) for v in attended[s]), default=-1) for s in subjects}
    scheduled = {a: set(man.loc[man["assay"] == a, "visit"]) for a in ("flow", "cytokine")}
    reasons = []
    missing_code = np.zeros((n_obs, n_var), dtype=np.int32)
    assay_of_col = var["assay"].to_numpy()
    for i, (s, v) in enumerate(zip(obs["subject_id"], obs["visit"])):
        parts = []
        for assay in assays_used:
            sid = obs.iloc[i, obs.columns.get_loc(f"{assay}_sample_id")]
            if not sid:
                if visits.index(v) > last_index[s]:
                    code = 2
                elif v not in scheduled[assay]:
                    code = 3
                else:
                    code = 1
            elif sid not in results_ids[assay]:
                code = 4
            else:
                code = 0
            if code:
                parts.append(f"{assay}: {FLAG_MISSING[code][len('missing: '):]}")
            cols = assay_of_col == assay
            missing_code[i, cols] = code
        reasons.append("; ".join(parts))
    obs["missing_reason"] = reasons

    # The flag layer, the bit mask of immunoprofile.schema: a missing reason's bit, else the QC
    # flags of the cell's result (flags outside the vocabulary get bits 24-30, in the table).
    present = flag_text != ""
    texts = sorted(set(flag_text[present].tolist()))
    try:
        table = flag_table(t.strip() for f in texts for t in f.split(";") if t.strip())
    except ValueError as exc:
        raise InputError(None, f"cytokine flags: {exc}") from exc
    reason_bit = np.array([0] + [1 << FLAG_BITS[FLAG_MISSING[k]] for k in range(1, 6)],
                          dtype=np.int32)
    flag = reason_bit[missing_code]
    code_of = {f: encode_flags(f, table) for f in texts}
    flag[present] = np.array([code_of[f] for f in flag_text[present].tolist()], dtype=np.int32)
    no_value = reason_bit[5]
    flag[present & np.isnan(raw) & (flag == 0)] = no_value
    flag[~present & (flag == 0)] = no_value  # sample measured, this feature not (e.g. absent gate)

    transformed, floors, censored = transform(raw, var, np.where(present, flag_text, "").astype(str),
                                               floors_given)
    var["log_floor"] = floors  # the censoring level in concentration units (kept name)
    with np.errstate(divide="ignore", invalid="ignore"):
        var["censor_level"] = np.log10(floors)  # on the transformed scale
    base_rows = np.array([row_of[f"{s}|{design.baseline_visit}"] for s in obs["subject_id"]])
    change = transformed - transformed[base_rows]

    # Clinical context: per visit (SCORAD, doses) and per subject (derived endpoints).
    if clinical is not None:
        if not isinstance(clinical, pd.DataFrame):
            inputs.append(Path(clinical))
        clin = read_clinical(clinical, design=design)
        summary = clinical_summary(clin, design=design, doses=doses)  # type: ignore[arg-type]
        per_visit = clin.set_index(["subject_id", "visit"])
        keys = list(zip(obs["subject_id"], obs["visit"]))
        for col in ("scorad", "doses_received"):
            obs[col] = [float(per_visit[col].get(k, np.nan)) for k in keys]
        for col in summary.columns:
            values = summary[col].reindex(obs["subject_id"].to_numpy())
            obs[col] = values.to_numpy() if values.dtype != "boolean" else values.array
        unknown = sorted(set(clin["subject_id"]) - set(subjects))
        if unknown:
            log.info("clinical rows for subjects without samples ignored: %s", ", ".join(unknown))

    obs["subject_id"] = pd.Categorical(obs["subject_id"], categories=subjects)
    obs["visit"] = pd.Categorical(obs["visit"], categories=visits, ordered=True)
    obs["period"] = pd.Categorical(obs["period"], categories=design.period_names, ordered=True)
    _strings_to_categoricals(obs)
    _strings_to_categoricals(var)

    n_subjects = len(subjects)
    uns.update({
        "sample_size": {
            "n_subjects": n_subjects,
            "min_exact_wilcoxon_p": min(1.0, 2.0 / 2.0 ** n_subjects),
            "note": (f"{n_subjects} subjects: a paired exact two-sided Wilcoxon test cannot give "
                     f"p below 2/2^{n_subjects} = {2.0 / 2.0 ** n_subjects:.4g}"),
        },
        "design": design.to_dict(),
        "assays": np.array(assays_used, dtype=object),
        "flag_bits": table,
        "transforms": {
            "frequency": f"logit(p/100), p clipped to [{FREQUENCY_CLIP_PCT}, {100 - FREQUENCY_CLIP_PCT}] %",
            "mfi": f"asinh(x/{MFI_COFACTOR:g})",
            "count": "log10(x+1)",
            "concentration": "log10(x); left-censored (layer 'censored') below var['log_floor'] = the "
                             "highest sample LLOQ (plate LLOQ x dilution x bridging factor) among "
                             "the plates holding the analyte's study samples, or flagged below the "
                             "curve/LLOQ: transformed = log10(log_floor), one level per analyte "
                             "(var['censor_level']); without a known LLOQ the level is half the "
                             "smallest positive value; above-curve results with no number at twice "
                             "the largest value (transformed layer only)",
            "change_from_baseline": f"transformed - transformed at {design.baseline_visit}",
            "mfi_cofactor": MFI_COFACTOR,
            "frequency_clip_pct": FREQUENCY_CLIP_PCT,
        },
        # no timestamp inside the h5ad (provenance.json beside it has one): same inputs, same file
        "provenance_json": json.dumps(_without_created(build_provenance(
            inputs=[p for p in dict.fromkeys(inputs) if p.is_file()],
            parameters={"flow_statistics": list(flow_statistics), "cytokine_value": cytokine_value,
                        "drug_readouts": list(drug_readouts), "doses": doses,
                        "design": design.to_dict()},
            command="immunoprofile.study.assemble")), sort_keys=True, default=str),
    })
    adata = ad.AnnData(X=raw.copy(), obs=obs, var=var)
    adata.layers["raw"] = raw
    adata.layers["transformed"] = transformed
    adata.layers["flag"] = flag
    adata.layers["change_from_baseline"] = change
    adata.layers["censored"] = censored.astype(np.int8)
    if back_calculated is not None:
        adata.layers["back_calculated"] = back
    uns["unmatched"] = _uns_frame(unmatched)
    adata.uns["immunoprofile"] = uns
    return adata



def _without_created(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "created"}


def _uns_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A DataFrame that h5ad/zarr store cleanly: numeric columns stay, the rest become str."""
    import pandas as pd

    out = frame.reset_index(drop=True).copy()
    out.columns = [str(c).replace("/", "_") for c in out.columns]
    for col in out.columns:
        if not (pd.api.types.is_numeric_dtype(out[col]) or pd.api.types.is_bool_dtype(out[col])):
            out[col] = out[col].map(lambda v: "" if v is None or (isinstance(v, float) and v != v)
                                    else str(v))
    return out


def _strings_to_categoricals(frame: pd.DataFrame) -> None:
    """Do what h5ad writing would do anyway, but deliberately (sorted categories, in place)."""
    import pandas as pd

    for col in frame.columns:
        values = frame[col]
        if not is_text_column(values):
            continue
        strings = [v for v in values if isinstance(v, str)]
        if all(isinstance(v, str) or v is None or (isinstance(v, float) and v != v) for v in values):
            frame[col] = pd.Categorical(values.where(values.map(lambda v: isinstance(v, str))),
                                        categories=sorted(set(strings)))



def _flow_input(flow: pd.DataFrame | FlowResults | None,
                flow_dir: str | os.PathLike[str] | None) -> FlowResults | None:
    """The flow results to assemble, from a table, a :class:`FlowResults` or a folder."""
    if flow is not None and flow_dir is not None:
        raise TypeError("give flow= or flow_dir=, not both")
    if flow_dir is not None:
        return load_flow_results(flow_dir)
    if flow is None or isinstance(flow, FlowResults):
        return flow
    return FlowResults(table=flow)


def _cytokine_input(cytokines: pd.DataFrame | CytokineResults | None,
                    cytokine_dir: str | os.PathLike[str] | None,
                    standard_curves: pd.DataFrame | None) -> CytokineResults | None:
    """The cytokine results to assemble, from a table, a :class:`CytokineResults` or a folder."""
    from dataclasses import replace

    if cytokines is not None and cytokine_dir is not None:
        raise TypeError("give cytokines= or cytokine_dir=, not both")
    if cytokine_dir is not None:
        cytokines = load_cytokine_results(cytokine_dir)
    if cytokines is None:
        if standard_curves is not None:
            raise TypeError("standard_curves= without cytokine results")
        return None
    if not isinstance(cytokines, CytokineResults):
        cytokines = CytokineResults(concentrations=cytokines)
    if standard_curves is not None:
        cytokines = replace(cytokines, standard_curves=standard_curves)
    return cytokines
