"""Views of a study AnnData: one matrix per visit, subject × period means, the long (tidy) table.

Contract: every function here reads an AnnData from :func:`~immunoprofile.study.matrix.assemble`
(or :func:`~immunoprofile.study.io.read_study`) and never changes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import anndata as ad
    import numpy as np
    import pandas as pd

__all__ = ["flag_labels", "split_by_visit", "period_means", "to_tidy"]


def flag_labels(adata: ad.AnnData) -> np.ndarray:
    """The flag layer decoded to strings (same shape as ``X``): ``ok``, ``below_curve;<LLOQ``,
    ``missing: visit not attended`` ... (schema 1's integer codes decode too)."""
    import numpy as np

    from ..schema import SCHEMA1_FLAG_CODES, decode_flag_array

    meta = adata.uns["immunoprofile"]
    codes = np.asarray(adata.layers["flag"])
    if "flag_bits" in meta:
        return decode_flag_array(codes, dict(meta["flag_bits"]))
    table = meta.get("flag_codes")  # schema 1, read without migrate
    lookup = dict(SCHEMA1_FLAG_CODES) if table is None else \
        dict(zip(np.asarray(table["code"]).tolist(), np.asarray(table["label"]).tolist()))
    return np.vectorize(lambda c: lookup.get(int(c), f"code {int(c)}"), otypes=[object])(codes)


def split_by_visit(adata: ad.AnnData) -> dict[str, ad.AnnData]:
    """One AnnData per visit (protocol order), each with the study's var, layers and uns."""
    out = {}
    for visit in adata.obs["visit"].cat.categories:
        mask = (adata.obs["visit"] == visit).to_numpy()
        if mask.any():
            out[str(visit)] = adata[mask].copy()
    return out


def period_means(adata: ad.AnnData, *, layer: str = "transformed") -> ad.AnnData:
    """Subject × period summary: the mean of ``layer`` over each subject's visits in each period.

    Parameters
    ----------
    adata
        A study AnnData from :func:`assemble`.
    layer
        The layer averaged into ``X`` (the transformed scale by default: means of logs/logits).

    Returns
    -------
    AnnData
        obs ``"S01|run-in"`` … with ``subject_id``, ``period`` (ordered) and the subject-level
        clinical columns; ``X`` = mean of ``layer``; layers ``raw_mean`` (mean of the raw values)
        and ``n_visits`` (visits with a value, per feature).
    """
    import anndata as ad
    import numpy as np
    import pandas as pd

    periods = list(adata.obs["period"].cat.categories)
    subjects = list(adata.obs["subject_id"].cat.categories) \
        if hasattr(adata.obs["subject_id"], "cat") else sorted(set(adata.obs["subject_id"]))
    values = np.asarray(adata.layers[layer], dtype=float)
    raw = np.asarray(adata.layers["raw"], dtype=float)
    subj = adata.obs["subject_id"].astype(str).to_numpy()
    per = adata.obs["period"].astype(str).to_numpy()
    n_var = adata.n_vars
    rows, mean, raw_mean, count = [], [], [], []
    for s in subjects:
        for p in periods:
            mask = (subj == s) & (per == p)
            block, rblock = values[mask], raw[mask]
            n = np.isfinite(block).sum(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean.append(np.where(n > 0, np.nansum(block, axis=0) / np.maximum(n, 1), np.nan))
                rn = np.isfinite(rblock).sum(axis=0)
                raw_mean.append(np.where(rn > 0, np.nansum(rblock, axis=0) / np.maximum(rn, 1), np.nan))
            count.append(n.astype(float) if mask.any() else np.zeros(n_var))
            rows.append((s, p))
    obs = pd.DataFrame({"subject_id": [r[0] for r in rows], "period": [r[1] for r in rows]},
                       index=[f"{s}|{p}" for s, p in rows])
    subject_cols = [c for c in ("age", "sex", "total_doses", "evaluable", "scorad_baseline",
                                "scorad_end_of_treatment", "scorad_pct_change", "responder")
                    if c in adata.obs.columns]
    if subject_cols:
        first = adata.obs.drop_duplicates("subject_id").set_index(
            adata.obs.drop_duplicates("subject_id")["subject_id"].astype(str))
        for col in subject_cols:
            vals = first[col].reindex(obs["subject_id"].to_numpy())
            obs[col] = vals.array if str(vals.dtype) in ("boolean", "category") else vals.to_numpy()
    if "scorad" in adata.obs.columns:
        sc = pd.DataFrame({"s": subj, "p": per, "v": adata.obs["scorad"].to_numpy(dtype=float)})
        means = sc.groupby(["s", "p"])["v"].mean()
        obs["scorad_mean"] = [float(means.get((s, p), np.nan)) for s, p in rows]
    obs["subject_id"] = pd.Categorical(obs["subject_id"], categories=subjects)
    obs["period"] = pd.Categorical(obs["period"], categories=periods, ordered=True)
    out = ad.AnnData(X=np.vstack(mean), obs=obs, var=adata.var.copy())
    out.layers["raw_mean"] = np.vstack(raw_mean)
    out.layers["n_visits"] = np.vstack(count)
    uns = dict(adata.uns.get("immunoprofile", {}))
    uns["period_means"] = {"layer": layer, "statistic": "mean over the subject's visits in the period"}
    out.uns["immunoprofile"] = uns
    return out


def to_tidy(adata: ad.AnnData) -> pd.DataFrame:
    """The study in long form: one row per subject × visit × feature (missing rows kept).

    Columns: ``obs_name, subject_id, visit, period, study_day, feature, feature_type, assay,
    population, marker, analyte, statistic, unit, value, transformed, change_from_baseline,
    flag`` (decoded label) and ``missing_reason``. ``visit`` and ``period`` stay ordered
    categoricals (Parquet keeps them).
    """
    import numpy as np
    import pandas as pd

    n_obs, n_var = adata.shape
    obs, var = adata.obs, adata.var
    ri = np.repeat(np.arange(n_obs), n_var)
    ci = np.tile(np.arange(n_var), n_obs)
    frame = pd.DataFrame({"obs_name": np.asarray(adata.obs_names)[ri]})
    for col in ("subject_id", "visit", "period", "study_day", "missing_reason"):
        if col in obs.columns:
            frame[col] = obs[col].iloc[ri].reset_index(drop=True) if str(obs[col].dtype) == "category" \
                else obs[col].to_numpy()[ri]
    frame["feature"] = pd.Categorical(np.asarray(adata.var_names)[ci],
                                      categories=list(adata.var_names))
    for col in ("feature_type", "assay", "population", "marker", "analyte", "statistic", "unit"):
        if col in var.columns:
            frame[col] = var[col].astype(str).to_numpy()[ci]
    frame["value"] = np.asarray(adata.layers["raw"], dtype=float).ravel()
    frame["transformed"] = np.asarray(adata.layers["transformed"], dtype=float).ravel()
    frame["change_from_baseline"] = np.asarray(adata.layers["change_from_baseline"], dtype=float).ravel()
    frame["flag"] = flag_labels(adata).ravel().astype(str)
    return frame
