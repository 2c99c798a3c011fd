"""QC summary tables for the report: per-sample flow QC with robust outliers, per-plate curve QC."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["flow_sample_qc", "robust_outliers", "plate_qc", "OUTLIER_Z"]

#: |robust z| above which a sample's population frequency is called an outlier (Iglewicz–Hoaglin).
OUTLIER_Z = 3.5


def robust_outliers(populations: pd.DataFrame, *, threshold: float = OUTLIER_Z) -> pd.DataFrame:
    """Robust z-scores of every sample's ``pct_parent`` per population.

    z = 0.6745 (x − median) / MAD across samples; populations whose MAD is 0 are skipped (no
    spread to compare against).

    Returns
    -------
    DataFrame
        ``sample_id, population, pct_parent, median, robust_z`` for |z| > ``threshold``.
    """
    wide = populations.pivot_table(index="sample_id", columns="population", values="pct_parent",
                                   aggfunc="first")
    median = wide.median()
    mad = (wide - median).abs().median()
    usable = mad > 0
    z = 0.6745 * (wide.loc[:, usable] - median[usable]) / mad[usable]
    long = z.stack().rename("robust_z").reset_index()
    long = long[long["robust_z"].abs() > threshold]
    long["pct_parent"] = [wide.at[s, p] for s, p in zip(long["sample_id"], long["population"])]
    long["median"] = long["population"].map(median)
    return long.sort_values(["sample_id", "population"]).reset_index(drop=True)


def _first_matching(populations: pd.DataFrame, word: str) -> str | None:
    names = sorted(set(populations["population"]), key=lambda p: (p.count("/"), p))
    for name in names:
        if word in name.rsplit("/", 1)[-1].lower():
            return name
    return None


def flow_sample_qc(populations: pd.DataFrame, outliers: pd.DataFrame, *,
                   max_time_qc_removed: float = 10.0) -> pd.DataFrame:
    """One row per sample: events, % removed by time QC (when it ran), % singlets, % live (when
    such gates exist), outlier flags; a sample losing more than ``max_time_qc_removed`` % to
    time QC is flagged ``time QC``."""
    rows = []
    singlets = _first_matching(populations, "singlet")
    live = _first_matching(populations, "live")
    for sample_id, group in populations.groupby("sample_id", sort=True):
        first = group.iloc[0]
        total = first["count"] * 100.0 / first["pct_total"] if first["pct_total"] else np.nan
        row = {"sample_id": sample_id, "file": first.get("file", ""),
               "events": int(round(total)) if np.isfinite(total) else np.nan}
        for label, pop in (("% singlets", singlets), ("% live", live)):
            if pop is not None:
                hit = group.loc[group["population"] == pop, "pct_parent"]
                row[label] = float(hit.iloc[0]) if len(hit) else np.nan
        removed = (float(first["pct_removed_time_qc"]) if "pct_removed_time_qc" in group
                   else None)
        if removed is not None:
            row["% removed by time QC"] = removed
        flagged = outliers.loc[outliers["sample_id"] == sample_id, "population"].tolist()
        row["outlier populations"] = "; ".join(p.rsplit("/", 1)[-1] for p in flagged)
        flags = (["outlier"] if flagged else []) + (
            ["time QC"] if removed is not None and removed > max_time_qc_removed else [])
        row["flag"] = "; ".join(flags) or "ok"
        rows.append(row)
    return pd.DataFrame(rows)


def plate_qc(curves: pd.DataFrame | None, concentrations: pd.DataFrame | None,
             acceptance: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per plate: analytes, curve fit R², failed fits, standards dropped, % results out of
    range and wells with low bead counts; where the outputs have them, plate acceptance (the
    cytokines command's ``plate_qc.csv``), kit controls out of range and the agreement with the
    vendor's own results (median over analytes of each analyte's median relative difference)."""
    plates = sorted(set(curves["plate"]) if curves is not None else
                    set(concentrations["plate"]) if concentrations is not None else set())
    rows = []
    for plate in plates:
        row: dict[str, object] = {"plate": plate}
        if curves is not None:
            c = curves[curves["plate"] == plate]
            row["analytes"] = int(c["analyte"].nunique())
            if "r2_weighted" in c:
                row["median R²"] = float(np.nanmedian(c["r2_weighted"])) if len(c) else np.nan
                row["min R²"] = float(np.nanmin(c["r2_weighted"])) if len(c) else np.nan
            if "converged" in c:
                row["failed fits"] = int((~c["converged"].astype(bool)).sum())
            if "standards_dropped" in c:
                row["standards dropped"] = int(c["standards_dropped"].fillna("").astype(str)
                                               .map(_count_items).sum())
            if "controls_checked" in c:
                row["controls out of range"] = (f"{int(c['controls_out_of_range'].sum())}/"
                                                f"{int(c['controls_checked'].sum())}")
            if "vendor_median_rel_diff" in c and c["vendor_median_rel_diff"].notna().any():
                vendor = c["vendor_median_rel_diff"].astype(float) * 100.0
                row["vendor Δ % (median)"] = float(np.nanmedian(vendor))
                row["vendor Δ % (worst analyte)"] = float(np.nanmax(vendor))
        if concentrations is not None:
            k = concentrations[concentrations["plate"] == plate]
            if "sample_type" in k:
                k = k[k["sample_type"].isin(["unknown", "control"])]
            flags = k["flag"].fillna("").astype(str)
            row["results"] = int(len(k))
            row["% out of range"] = (round(100.0 * float(flags.str.contains(
                "LLOQ|ULOQ|below_curve|above_curve|extrapolated").mean()), 1) if len(k) else np.nan)
            row["low-bead wells"] = int(k.loc[flags.str.contains("low_beads"), "well"].nunique())
        if acceptance is not None:
            hit = acceptance[acceptance["plate"].astype(str) == str(plate)]
            if len(hit):
                ok = str(hit["accepted"].iat[0]).strip().lower() in ("true", "1")
                row["accepted"] = "yes" if ok else "no"
                reasons = hit["reasons"].iat[0] if "reasons" in hit else ""
                row["why not"] = "" if ok or pd.isna(reasons) else str(reasons)
        rows.append(row)
    return pd.DataFrame(rows)


def _count_items(text: str) -> int:
    text = text.strip()
    if not text or text.lower() in {"nan", "none", "[]"}:
        return 0
    return len([t for t in text.replace(",", ";").split(";") if t.strip()])
