"""Period comparisons for a small paired trial: every feature, run-in vs treatment vs post-treatment.

Contract: :func:`compare_periods` takes a study AnnData (from
:func:`~immunoprofile.study.matrix.assemble`) and returns one tidy row per feature × contrast with
honest small-sample statistics; it never raises for a feature with too few subjects, it says so in
``note``.

Methods (all on the ``transformed`` layer unless told otherwise):

* Per subject and period the mean over that period's visits (:func:`period_means`).
* ``friedman``: Friedman test across the three periods on subjects with all three means.
* Paired contrasts ``run-in_vs_treatment``, ``treatment_vs_post-treatment``,
  ``run-in_vs_post-treatment`` (difference = second − first): exact two-sided Wilcoxon
  signed-rank test (``scipy.stats.wilcoxon(method="exact")``). With tied absolute differences
  the exact null distribution of the midrank statistic is not the textbook one, so we use the
  exact permutation distribution of the signed ranks (all 2^n sign flips,
  ``scipy.stats.PermutationMethod``) and say so in ``note``; zero differences are dropped
  (Wilcoxon's convention) and counted in ``note``. With n pairs the two-sided exact p cannot go
  below 2/2^n (``p_min_wilcoxon``: 0.0078 for n = 8, 0.0625 for n = 5).
* Paired t-test with its 95 % CI (``estimate``/``ci_low``/``ci_high`` = mean paired difference
  on the transformed scale); ``median_diff``; for log10-scale features (concentrations, counts)
  ``fold_change`` = 10^estimate with ``fc_ci_low``/``fc_ci_high``.
* Sensitivity: linear mixed model on every visit (statsmodels ``MixedLM``, REML, subject random
  intercept, period fixed effect). Small-sample inference: Wald t statistics referred to a
  t distribution with between-within degrees of freedom (df = observations − subjects − number of
  period parameters, as SAS ``DDFM=BW`` gives for within-subject effects), not to the normal.
* Benjamini–Hochberg within each family and contrast (``q``, over ``p_wilcoxon``; over
  ``p_friedman`` for the Friedman rows).
* On the ``run-in_vs_treatment`` rows: Spearman correlation of each subject's change with the
  SCORAD percent change from baseline to end of treatment (``spearman_rho``, ``p_spearman``).
* Drug readouts (``var["drug_readout"]``, IL-1RA for anakinra) form the ``pharmacokinetic``
  family and are labelled as such, not as biomarkers.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import anndata as ad
    import numpy as np
    import pandas as pd

__all__ = ["compare_periods", "paired_contrast", "mixed_model_contrasts", "bh", "DEFAULT_FAMILIES",
           "DEFAULT_CONTRASTS", "COLUMNS", "wilcoxon_min_p"]

log = logging.getLogger(__name__)

# family -> pandas query over adata.var; a feature goes to the first family that matches.
# Counts and pct_total are descriptive (they depend on events acquired / upstream gates) and
# are not compared by default; add a family to compare them.
DEFAULT_FAMILIES: dict[str, str] = {
    "pharmacokinetic": "drug_readout == True",
    "flow": "assay == 'flow' and feature_type == 'frequency' and statistic == 'pct_parent'",
    "flow_mfi": "assay == 'flow' and feature_type == 'mfi' and statistic == 'median'",
    "cytokine": "assay == 'cytokine' and feature_type == 'concentration'",
}
DEFAULT_CONTRASTS: tuple[tuple[str, str], ...] = (
    ("run-in", "treatment"), ("treatment", "post-treatment"), ("run-in", "post-treatment"),
)
COLUMNS: tuple[str, ...] = (
    "feature", "family", "contrast", "n", "estimate", "ci_low", "ci_high", "fold_change",
    "fc_ci_low", "fc_ci_high", "median_diff", "p_wilcoxon", "p_ttest", "p_mixed", "p_friedman",
    "q", "direction", "p_min_wilcoxon", "wilcoxon_method", "mixed_df", "spearman_rho",
    "p_spearman", "n_spearman", "median_first", "median_second", "feature_type", "unit", "note",
)
_LOG10_TYPES = {"concentration", "count"}


def wilcoxon_min_p(n: int) -> float:
    """Smallest two-sided p the exact Wilcoxon signed-rank test can give with ``n`` non-zero pairs."""
    return min(1.0, 2.0 / 2.0 ** n) if n > 0 else 1.0


def bh(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values; NaN stays NaN and is not counted in m."""
    import numpy as np
    from scipy.stats import false_discovery_control

    p = np.asarray(p, dtype=float)
    q = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = false_discovery_control(p[ok], method="bh")
    return q


def paired_contrast(first: np.ndarray, second: np.ndarray, *, min_subjects: int = 3) -> dict[str, Any]:
    """Paired tests of ``second − first`` for subjects with both values.

    Parameters
    ----------
    first, second
        Subject-aligned values (NaN = missing; such subjects are left out).
    min_subjects
        Fewer complete pairs than this → no tests, a note.

    Returns
    -------
    dict
        ``n, estimate, ci_low, ci_high, median_diff, p_wilcoxon, wilcoxon_method, p_ttest,
        p_min_wilcoxon, note`` (see the module docstring).
    """
    import numpy as np
    from scipy import stats

    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    ok = np.isfinite(first) & np.isfinite(second)
    d = second[ok] - first[ok]
    n = int(d.size)
    out: dict[str, Any] = {"n": n, "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                           "median_diff": np.nan, "p_wilcoxon": np.nan, "wilcoxon_method": "",
                           "p_ttest": np.nan, "p_min_wilcoxon": wilcoxon_min_p(n), "note": ""}
    notes: list[str] = []
    if n < min_subjects:
        out["note"] = f"too few subjects with both periods (n={n}, need >= {min_subjects})"
        if n:
            out["estimate"], out["median_diff"] = float(d.mean()), float(np.median(d))
        return out
    out["estimate"], out["median_diff"] = float(d.mean()), float(np.median(d))
    # Means of identical values can differ in the last bits: such float noise is not a difference.
    scale = max(1.0, float(np.max(np.abs(first[ok]))), float(np.max(np.abs(second[ok]))))
    d = np.where(np.abs(d) <= 1e-9 * scale, 0.0, d)
    if np.all(d == 0):
        out.update(p_wilcoxon=1.0, p_ttest=1.0, wilcoxon_method="none",
                   note="all paired differences are zero")
        out["ci_low"] = out["ci_high"] = 0.0
        return out
    # Paired t on the transformed scale with its 95 % CI.
    if np.std(d, ddof=1) > 0:
        res = stats.ttest_1samp(d, 0.0)
        ci = res.confidence_interval(0.95)
        out.update(p_ttest=float(res.pvalue), ci_low=float(ci.low), ci_high=float(ci.high))
    else:
        notes.append("identical non-zero differences: t-test undefined")
    nonzero = d[d != 0]
    zeros = n - nonzero.size
    absd = np.abs(nonzero)
    ties = np.unique(np.round(absd / scale, 12)).size < absd.size
    out["p_min_wilcoxon"] = wilcoxon_min_p(int(nonzero.size))
    if zeros:
        notes.append(f"{zeros} zero difference(s) dropped (Wilcoxon)")
    if not ties and nonzero.size <= 50:
        res = stats.wilcoxon(nonzero, method="exact")
        out.update(p_wilcoxon=float(res.pvalue), wilcoxon_method="exact")
    elif nonzero.size <= 13:  # 2^13 = 8192 sign flips: enumerate them all (exact, deterministic)
        res = stats.wilcoxon(nonzero, method=stats.PermutationMethod(n_resamples=2 ** 13))
        out.update(p_wilcoxon=float(res.pvalue), wilcoxon_method="exact-permutation")
        notes.append("tied |differences|: exact permutation distribution of signed midranks")
    else:
        res = stats.wilcoxon(nonzero, method="approx")
        out.update(p_wilcoxon=float(res.pvalue), wilcoxon_method="normal-approximation")
        notes.append("ties with many pairs: normal approximation")
    out["note"] = "; ".join(notes)
    return out


def mixed_model_contrasts(y: np.ndarray, subject: np.ndarray, period: np.ndarray,
                          periods: Sequence[str], contrasts: Sequence[tuple[str, str]], *,
                          min_subjects: int = 3) -> tuple[dict[tuple[str, str], float], float, str]:
    """Linear mixed model ``y ~ period + (1 | subject)`` and p-values of the period contrasts.

    Returns
    -------
    tuple
        ({contrast: two-sided p}, between-within df, note). p is NaN where the model cannot
        be fitted or a period has no data.
    """
    import numpy as np
    import pandas as pd
    import statsmodels.formula.api as smf
    from scipy import stats
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    ok = np.isfinite(y)
    frame = pd.DataFrame({"y": y[ok], "subject": subject[ok], "period": period[ok]})
    present = [p for p in periods if (frame["period"] == p).any()]
    nan_result = {c: np.nan for c in contrasts}
    n_subj = frame["subject"].nunique()
    if n_subj < min_subjects or len(present) < 2:
        return nan_result, np.nan, "mixed model: too few subjects or periods"
    if np.ptp(frame["y"].to_numpy()) == 0:
        return nan_result, np.nan, "mixed model: no variation"
    ref = present[0]
    frame["period"] = pd.Categorical(frame["period"], categories=present)
    note = ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = smf.mixedlm(f"y ~ C(period, Treatment('{ref}'))", frame, groups=frame["subject"])
            fit = model.fit(reml=True, method=["lbfgs", "powell"])
        except (np.linalg.LinAlgError, ValueError) as exc:
            return nan_result, np.nan, f"mixed model failed: {exc}"
    conv = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    if conv:
        note = ("mixed model: subject variance on the boundary (zero)" if all("boundary" in c for c in conv)
                else "mixed model: convergence warning")
    names = list(fit.fe_params.index)
    beta = fit.fe_params.to_numpy()
    cov = fit.cov_params().loc[names, names].to_numpy()

    def coef_vector(p: str) -> np.ndarray:
        v = np.zeros(len(names))
        if p != ref:
            v[names.index(f"C(period, Treatment('{ref}'))[T.{p}]")] = 1.0
        return v

    # Between-within df: within-subject effects lose one df per subject and per period parameter.
    df = float(len(frame) - n_subj - (len(present) - 1))
    out: dict[tuple[str, str], float] = {}
    for a, b in contrasts:
        if a not in present or b not in present or df <= 0:
            out[(a, b)] = np.nan
            continue
        L = coef_vector(b) - coef_vector(a)
        est = float(L @ beta)
        se = float(np.sqrt(max(L @ cov @ L, 0.0)))
        out[(a, b)] = float(2 * stats.t.sf(abs(est / se), df)) if se > 0 else np.nan
    return out, df, note


def _assign_families(var: pd.DataFrame, families: Mapping[str, str]) -> pd.Series:
    import pandas as pd

    fam = pd.Series("", index=var.index, dtype=object)
    frame = var.copy()
    for col in frame.columns:
        if str(frame[col].dtype) == "category":
            frame[col] = frame[col].astype(object)
    for name, query in families.items():
        try:
            hit = frame.query(query, engine="python").index
        except (KeyError, NameError, SyntaxError, ValueError) as exc:
            from ..errors import InputError
            raise InputError(None, f"family {name!r}: bad query {query!r} ({exc})") from exc
        fam[hit.intersection(fam.index[fam == ""])] = name
    return fam


def compare_periods(
    adata: ad.AnnData,
    *,
    layer: str = "transformed",
    families: Mapping[str, str] | None = None,
    contrasts: Sequence[tuple[str, str]] = DEFAULT_CONTRASTS,
    mixed: bool = True,
    min_subjects: int = 3,
    alpha: float = 0.05,
    options: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Compare the protocol periods feature by feature (see the module docstring for methods).

    Parameters
    ----------
    adata
        A study AnnData (obs = subject × visit with ``subject_id`` and ``period``).
    layer
        The scale the tests run on (``transformed``: log10 / logit / asinh).
    families
        ``{family: pandas query over var}``; BH runs within each family and contrast. Defaults to
        :data:`DEFAULT_FAMILIES` (``pharmacokinetic``, ``flow``, ``flow_mfi``, ``cytokine``).
        Features in no family are not compared.
    contrasts
        Pairs (first, second) of period names; the estimate is second − first.
    mixed
        Also fit the mixed model (sensitivity; the slowest part).
    min_subjects
        Fewest complete pairs for a test; below it the row says why in ``note``.
    alpha
        Level for the ``significant`` column (q < alpha).
    options
        The same settings as a mapping (e.g. a pipeline config's ``compare.options``); its keys
        override the keyword arguments. Unknown keys are an ``InputError``.

    Returns
    -------
    DataFrame
        Columns :data:`COLUMNS` plus ``significant``; one ``friedman`` row and one row per contrast
        for every compared feature, sorted by family, feature (var order), contrast order.
        ``frame.attrs["notes"]`` states what the sample size allows and the methods used.
    """
    import numpy as np
    import pandas as pd
    from scipy import stats

    from .matrix import period_means

    if options:
        settings = {"layer": layer, "families": families, "contrasts": contrasts, "mixed": mixed,
                    "min_subjects": min_subjects, "alpha": alpha}
        unknown = sorted(set(options) - set(settings))
        if unknown:
            from ..errors import InputError
            raise InputError(None, f"unknown compare option(s) {', '.join(unknown)}; "
                                   f"allowed: {', '.join(settings)}")
        settings.update(options)
        return compare_periods(adata, **settings)
    if layer not in adata.layers:
        from ..errors import InputError
        raise InputError(None, f"no layer {layer!r} in the study (have {', '.join(k for k in adata.layers if k is not None)})")
    families = dict(DEFAULT_FAMILIES if families is None else families)
    fam = _assign_families(adata.var, families)
    pm = period_means(adata, layer=layer)
    periods = list(pm.obs["period"].cat.categories)
    subjects = list(pm.obs["subject_id"].cat.categories)
    means = np.asarray(pm.X, dtype=float).reshape(len(subjects), len(periods), adata.n_vars)
    raw_means = np.asarray(pm.layers["raw_mean"], dtype=float).reshape(means.shape)
    values = np.asarray(adata.layers[layer], dtype=float)
    subj = adata.obs["subject_id"].astype(str).to_numpy()
    per = adata.obs["period"].astype(str).to_numpy()
    scorad = None
    if "scorad_pct_change" in adata.obs.columns:
        sc = pd.to_numeric(adata.obs.drop_duplicates("subject_id").set_index(
            adata.obs.drop_duplicates("subject_id")["subject_id"].astype(str))["scorad_pct_change"],
            errors="coerce")
        scorad = sc.reindex(subjects).to_numpy(dtype=float)
    contrasts = [tuple(c) for c in contrasts]
    for a, b in contrasts:
        for p in (a, b):
            if p not in periods:
                from ..errors import InputError
                raise InputError(None, f"contrast period {p!r} is not one of {periods}")
    pidx = {p: k for k, p in enumerate(periods)}
    rows: list[dict[str, Any]] = []
    var = adata.var
    for j, feature in enumerate(adata.var_names):
        family = fam.iloc[j]
        if not family:
            continue
        ftype = str(var["feature_type"].iloc[j]) if "feature_type" in var else ""
        unit = str(var["unit"].iloc[j]) if "unit" in var else ""
        drug = bool(var["drug_readout"].iloc[j]) if "drug_readout" in var else False
        base = {"feature": str(feature), "family": family, "feature_type": ftype, "unit": unit}
        label = "pharmacokinetic readout (drug measured), not a biomarker" if drug else ""
        m = means[:, :, j]
        # Friedman on subjects with all periods.
        complete = np.all(np.isfinite(m), axis=1)
        fr = {**base, "contrast": "friedman", "n": int(complete.sum()), "p_friedman": np.nan}
        notes = [label] if label else []
        if complete.sum() < min_subjects or len(periods) < 3:
            notes.append(f"too few subjects with all periods (n={int(complete.sum())}, need >= {min_subjects})")
        else:
            mc = m[complete]
            if np.all(np.ptp(mc, axis=1) == 0):
                notes.append("no within-subject variation")
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    fr["p_friedman"] = float(stats.friedmanchisquare(*mc.T).pvalue)
        fr["note"] = "; ".join(notes)
        rows.append(fr)
        mixed_p: dict[tuple[str, str], float] = {}
        mixed_df, mixed_note = np.nan, ""
        if mixed:
            mixed_p, mixed_df, mixed_note = mixed_model_contrasts(
                values[:, j], subj, per, periods, contrasts, min_subjects=min_subjects)
        for a, b in contrasts:
            first, second = m[:, pidx[a]], m[:, pidx[b]]
            res = paired_contrast(first, second, min_subjects=min_subjects)
            row = {**base, "contrast": f"{a}_vs_{b}", **res}
            row["p_mixed"] = mixed_p.get((a, b), np.nan)
            row["mixed_df"] = mixed_df
            notes = [n for n in (label, res["note"], mixed_note) if n]
            row["note"] = "; ".join(notes)
            est = row["estimate"]
            row["direction"] = ("up" if est > 0 else "down" if est < 0 else "none") \
                if est == est and row["n"] >= min_subjects else "none"
            if ftype in _LOG10_TYPES and row["n"] >= min_subjects:
                row["fold_change"] = 10.0 ** est
                row["fc_ci_low"] = 10.0 ** row["ci_low"] if row["ci_low"] == row["ci_low"] else np.nan
                row["fc_ci_high"] = 10.0 ** row["ci_high"] if row["ci_high"] == row["ci_high"] else np.nan
            ra, rb = raw_means[:, pidx[a], j], raw_means[:, pidx[b], j]
            row["median_first"] = float(np.nanmedian(ra)) if np.isfinite(ra).any() else np.nan
            row["median_second"] = float(np.nanmedian(rb)) if np.isfinite(rb).any() else np.nan
            if scorad is not None and (a, b) == contrasts[0]:
                ok = np.isfinite(first) & np.isfinite(second) & np.isfinite(scorad)
                row["n_spearman"] = int(ok.sum())
                change = (second - first)[ok]
                if ok.sum() >= min_subjects and np.ptp(change) > 0 and np.ptp(scorad[ok]) > 0:
                    sp = stats.spearmanr(change, scorad[ok])
                    row["spearman_rho"], row["p_spearman"] = float(sp.statistic), float(sp.pvalue)
            rows.append(row)
    out = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in out.columns:
            out[col] = np.nan if col not in ("note", "direction", "wilcoxon_method") else ""
    out["q"] = np.nan
    if len(out):
        for _, idx in out.groupby(["family", "contrast"], sort=False).groups.items():
            sub = out.loc[idx]
            pcol = "p_friedman" if sub["contrast"].iloc[0] == "friedman" else "p_wilcoxon"
            out.loc[idx, "q"] = bh(sub[pcol].to_numpy(dtype=float))
    out["significant"] = out["q"] < alpha
    out["note"] = out["note"].fillna("")
    out["direction"] = out["direction"].fillna("none")
    out["wilcoxon_method"] = out["wilcoxon_method"].fillna("")
    out = out[[*COLUMNS, "significant"]]
    n_pairs = int(out.loc[out["contrast"] != "friedman", "n"].max()) if len(out) else 0
    out.attrs["notes"] = {
        "sample_size": (f"at most {n_pairs} paired subjects: the exact two-sided Wilcoxon p cannot go "
                        f"below {wilcoxon_min_p(n_pairs):.4g} (2/2^n); see p_min_wilcoxon per row"),
        "scale": f"tests on layer {layer!r}; estimate = mean paired difference (second - first period)",
        "multiplicity": "Benjamini-Hochberg within family and contrast (q); Friedman rows over p_friedman",
        "mixed_model": "MixedLM REML, subject random intercept, period fixed effect; t with "
                       "between-within df (observations - subjects - period parameters)",
        "families": families,
        "contrasts": [f"{a}_vs_{b}" for a, b in contrasts],
        "min_subjects": min_subjects,
    }
    return out
