"""The study matrix in the long form the R reference script reads, and back.

``long_from_study`` writes one row per subject × visit × compared feature with what R needs to
redo the analysis independently (visit value on the analysis scale, censoring, the subject's
evaluability and SCORAD, the feature's family and role); ``study_from_long`` rebuilds a study
AnnData from it so the Python side runs on exactly the numbers R saw. ``edge_case_long`` is
the synthetic edge-case trial (ties, zeros, missing visits, a subject with one period, a boundary
variance, partly and fully censored features).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from immunoprofile.schema import migrate
from immunoprofile.study.compare import DEFAULT_QC_POPULATIONS, _assign_families, _qc_mask
from immunoprofile.study.design import DEFAULT_DESIGN

PERIODS = DEFAULT_DESIGN.period_names
LONG_COLUMNS = ["subject", "visit", "period", "feature", "feature_type", "assay", "statistic",
                "gate", "unit", "drug_readout", "family", "role", "censor_level", "y", "censored"]
CLINICAL_COLUMNS = ["subject", "visit", "period", "scorad", "evaluable", "total_doses"]


def clinical_from_study(adata: ad.AnnData) -> pd.DataFrame:
    """Every subject × visit of the grid with SCORAD, evaluability and total doses."""
    obs = adata.obs
    return pd.DataFrame({
        "subject": obs["subject_id"].astype(str).to_numpy(),
        "visit": obs["visit"].astype(str).to_numpy(),
        "period": obs["period"].astype(str).to_numpy(),
        "scorad": obs["scorad"].to_numpy(dtype=float) if "scorad" in obs else np.nan,
        "evaluable": obs["evaluable"].astype("boolean").to_numpy() if "evaluable" in obs else pd.NA,
        "total_doses": obs["total_doses"].to_numpy(dtype=float) if "total_doses" in obs else np.nan,
    })[CLINICAL_COLUMNS]


def long_from_study(adata: ad.AnnData, primary: list[str]) -> pd.DataFrame:
    """Visit-level rows of every compared feature (default families)."""
    from immunoprofile.study.compare import DEFAULT_FAMILIES, _resolve_primary

    fam = _assign_families(adata.var, DEFAULT_FAMILIES)
    qc = _qc_mask(adata.var, DEFAULT_QC_POPULATIONS)
    prim = set(_resolve_primary(adata.var, primary)[0])
    values = np.asarray(adata.layers["transformed"], dtype=float)
    cens = np.asarray(adata.layers["censored"]).astype(bool) if "censored" in adata.layers \
        else np.zeros(values.shape, dtype=bool)
    obs = adata.obs
    var = adata.var
    parts = []
    for j, feature in enumerate(adata.var_names):
        if not fam.iloc[j]:
            continue
        ok = np.isfinite(values[:, j])
        parts.append(pd.DataFrame({
            "subject": obs["subject_id"].astype(str).to_numpy()[ok],
            "visit": obs["visit"].astype(str).to_numpy()[ok],
            "period": obs["period"].astype(str).to_numpy()[ok],
            "feature": str(feature),
            "feature_type": str(var["feature_type"].iloc[j]),
            "assay": str(var["assay"].iloc[j]),
            "statistic": str(var["statistic"].iloc[j]),
            "gate": str(var["population"].iloc[j]) if "population" in var else "",
            "unit": str(var["unit"].iloc[j]),
            "drug_readout": bool(var["drug_readout"].iloc[j]),
            "family": fam.iloc[j],
            "role": "primary" if str(feature) in prim else "qc" if qc[j] else "exploratory",
            "censor_level": float(var["censor_level"].iloc[j]) if "censor_level" in var else np.nan,
            "y": values[ok, j],
            "censored": cens[ok, j],
        }))
    return pd.concat(parts, ignore_index=True)[LONG_COLUMNS]


def study_from_long(long: pd.DataFrame, clinical: pd.DataFrame) -> ad.AnnData:
    """A study AnnData (obs = the clinical table's subject × visit grid) with the long values."""
    visits = [v for v in DEFAULT_DESIGN.visit_names if v in set(clinical["visit"])]
    subjects = sorted(set(clinical["subject"]))
    obs_names = [f"{s}|{v}" for s in subjects for v in visits]
    obs = pd.DataFrame({"subject_id": [s for s in subjects for _ in visits],
                        "visit": [v for _ in subjects for v in visits]}, index=obs_names)
    obs["period"] = [DEFAULT_DESIGN.period_for_visit(v) for v in obs["visit"]]
    clin = clinical.set_index(clinical["subject"] + "|" + clinical["visit"])
    obs["scorad"] = clin["scorad"].reindex(obs_names).to_numpy(dtype=float)
    obs["total_doses"] = clin["total_doses"].reindex(obs_names).to_numpy(dtype=float)
    ev = clin["evaluable"].reindex(obs_names)
    obs["evaluable"] = pd.array([pd.NA if pd.isna(e) else str(e).lower() == "true" for e in ev],
                                dtype="boolean")
    obs["subject_id"] = pd.Categorical(obs["subject_id"], categories=subjects)
    obs["visit"] = pd.Categorical(obs["visit"], categories=visits, ordered=True)
    obs["period"] = pd.Categorical(obs["period"], categories=PERIODS, ordered=True)
    feats = long.drop_duplicates("feature").set_index("feature")
    var = pd.DataFrame(index=list(feats.index))
    for col in ("feature_type", "assay", "statistic", "unit"):
        var[col] = feats[col].astype(str).to_numpy()
    var["population"] = feats["gate"].fillna("").astype(str).to_numpy()
    var["analyte"] = np.where(var["feature_type"] == "concentration",
                              var.index.str.split("|").str[0], "")
    var["drug_readout"] = feats["drug_readout"].astype(str).str.lower().eq("true").to_numpy()
    var["censor_level"] = feats["censor_level"].to_numpy(dtype=float)
    row = {n: i for i, n in enumerate(obs_names)}
    col = {f: j for j, f in enumerate(var.index)}
    X = np.full((len(obs_names), len(var)), np.nan)
    C = np.zeros(X.shape, dtype=bool)
    r = [row[f"{s}|{v}"] for s, v in zip(long["subject"], long["visit"])]
    c = [col[f] for f in long["feature"]]
    X[r, c] = long["y"].to_numpy(dtype=float)
    C[r, c] = long["censored"].astype(str).str.lower().eq("true").to_numpy()
    adata = ad.AnnData(X=X.copy(), obs=obs, var=var)
    adata.layers["transformed"] = X
    adata.layers["raw"] = np.where(var["feature_type"].eq("concentration").to_numpy(), 10.0 ** X, X)
    adata.layers["censored"] = C
    # the committed long tables (tests/study/data/r_reference) were written from schema-1 studies
    # (the MFI statistic named "median"): read them as read_study reads a schema-1 file
    adata.uns["immunoprofile"] = {"schema_version": "1"}
    return migrate(adata)


def edge_case_long(seed: int = 20261201) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Synthetic 8-subject trial with the edge cases the R reference covers: (long, clinical)."""
    rng = np.random.default_rng(seed)
    subjects = [f"E{i:02d}" for i in range(1, 9)]
    visits = DEFAULT_DESIGN.visit_names
    period = {v: DEFAULT_DESIGN.period_for_visit(v) for v in visits}
    doses = {s: 84.0 for s in subjects}
    doses["E08"] = 40.0  # not evaluable
    effect = {"run-in": 0.0, "treatment": -0.5, "post-treatment": -0.1}
    rows = []

    def add(feature: str, values: dict[tuple[str, str], float], *, ftype: str = "frequency",
            censored: dict[tuple[str, str], bool] | None = None, level: float = np.nan) -> None:
        for (s, v), y in values.items():
            if y != y:
                continue
            rows.append({"subject": s, "visit": v, "period": period[v], "feature": feature,
                         "feature_type": ftype, "y": y,
                         "censored": bool((censored or {}).get((s, v), False)),
                         "censor_level": level})

    subj_eff = dict(zip(subjects, rng.normal(0, 1, 8)))
    cell_eff = {(s, p): rng.normal(0, 0.3) for s in subjects for p in PERIODS}
    # a well-behaved feature: both variance components non-zero
    add("normal", {(s, v): subj_eff[s] + effect[period[v]] + cell_eff[(s, period[v])]
                   + rng.normal(0, 0.2) for s in subjects for v in visits})
    # boundary: no subject:period effect at all, a big subject effect
    add("boundary", {(s, v): 3 * subj_eff[s] + effect[period[v]] + rng.normal(0, 0.3)
                     for s in subjects for v in visits})
    # ties: values on a coarse grid (tied period-mean differences)
    add("ties", {(s, v): round(subj_eff[s] + effect[period[v]] + rng.normal(0, 0.3), 0)
                 for s in subjects for v in visits})
    # zeros: three subjects do not change at all between run-in and treatment
    zero = {(s, v): subj_eff[s] + (0.0 if s in ("E01", "E02", "E03") else
                                   effect[period[v]] + rng.normal(0, 0.3)) for s in subjects for v in visits}
    for s in ("E01", "E02", "E03"):
        for v in visits:
            zero[(s, v)] = round(subj_eff[s], 3) + (0.2 if period[v] == "post-treatment" else 0.0)
    add("zeros", zero)
    # missing visits and a subject with run-in only (E07)
    miss = {(s, v): subj_eff[s] + effect[period[v]] + cell_eff[(s, period[v])] + rng.normal(0, 0.3)
            for s in subjects for v in visits}
    for key in [("E02", "week2"), ("E03", "week8"), ("E04", "week0"), ("E05", "week16"),
                ("E05", "week20")] + [("E07", v) for v in visits if period[v] != "run-in"]:
        miss[key] = np.nan
    add("missing_and_one_period", miss)
    # partly censored concentration (log10), one censoring level
    level = 0.6
    conc = {(s, v): 1.0 + 0.5 * subj_eff[s] + effect[period[v]] + rng.normal(0, 0.25)
            for s in subjects for v in visits}
    cflag = {k: y < level for k, y in conc.items()}
    add("part_censored", {k: max(y, level) for k, y in conc.items()}, ftype="concentration",
        censored=cflag, level=level)
    # every value below the LLOQ
    add("all_censored", {(s, v): level for s in subjects for v in visits}, ftype="concentration",
        censored={(s, v): True for s in subjects for v in visits}, level=level)
    frame = pd.DataFrame(rows)
    conc_feature = frame["feature_type"] == "concentration"
    frame["assay"] = np.where(conc_feature, "cytokine", "flow")
    frame["statistic"] = np.where(conc_feature, "concentration", "pct_parent")
    frame["gate"] = np.where(conc_feature, "", "/Cells/" + frame["feature"])
    frame["unit"] = np.where(conc_feature, "pg/mL", "%")
    frame["drug_readout"] = False
    frame["family"] = np.where(conc_feature, "cytokine", "flow")
    frame["role"] = "exploratory"
    scorad0 = dict(zip(subjects, rng.uniform(45, 70, 8)))
    resp = dict(zip(subjects, rng.uniform(0.0, 0.6, 8)))
    clinical = pd.DataFrame([{"subject": s, "visit": v, "period": period[v],
                              "scorad": round(scorad0[s] * (1 - resp[s] * (period[v] == "treatment"))
                                              + rng.normal(0, 1), 1),
                              "evaluable": doses[s] >= DEFAULT_DESIGN.min_doses,
                              "total_doses": doses[s]} for s in subjects for v in visits])
    return frame[LONG_COLUMNS], clinical[CLINICAL_COLUMNS]
