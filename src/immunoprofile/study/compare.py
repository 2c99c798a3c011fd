"""Period comparisons for a small paired trial, following a stated analysis plan.

Contract: :func:`compare_periods` takes a study AnnData (from
:func:`~immunoprofile.study.matrix.assemble`) and returns one tidy row per population × feature ×
contrast with honest small-sample statistics; it never raises for a feature with too few
subjects or a degenerate fit, it says so in ``note`` / ``mixed_status``. :func:`analysis_plan`
returns the plan those rows follow (written as ``analysis_plan.json``).

The plan (every item a keyword argument / ``compare.options`` key; defaults in brackets):

* Populations [``evaluable``, ``all``]: ``evaluable`` = subjects with ``obs["evaluable"]`` true
  (≥ ``design.min_doses`` of ``design.planned_doses`` doses, 67 of 84); every period contrast is
  reported for each population (``population`` column) and the rows say which subjects were
  excluded. ``evaluable`` is the primary population, ``all`` the sensitivity analysis.
* Estimands [every visit of the period]: per period the visits whose mean is the subject's
  period value (e.g. ``{"treatment": ["week4", "week8", "week12"]}`` for the plateau).
  "Change" is defined once: period mean − run-in mean, on the analysis scale for features and
  as a percentage of the run-in mean for SCORAD.
* Primary features (``primary``) with their hierarchy [``gate``]: Holm over the primary
  features' Friedman p at ``alpha``; then Holm over the primary contrasts (``primary_contrasts``
  [the first contrast]) of the features that passed, on ``primary_test`` [``ttest``: the exact
  Wilcoxon cannot go below 2/2^n, 0.0156 at n = 7, which no Holm threshold over several
  hypotheses reaches]; ``p_adjusted`` = max(stage-1, stage-2 adjusted p). ``fixed-sequence``
  instead tests the primary (feature, contrast) pairs in the order given at ``alpha`` each,
  ``p_adjusted`` the running maximum.
* Everything else is exploratory: Benjamini–Hochberg within population, family and contrast
  (``q``, over the exact Wilcoxon p; over the exact Friedman p for Friedman rows); Spearman p
  adjusted the same way within population and family (``q_spearman``). QC gates
  (``qc_populations`` [TimeQC, Cells, Singlets, Live]) are reported but not tested (``role = "qc"``,
  no ``q``) unless ``test_qc``.

Methods (all on the ``transformed`` layer):

* ``friedman``: exact Friedman p (enumeration of the within-subject permutation distribution,
  :func:`~immunoprofile.study.exact.friedman_exact`) on subjects with all periods.
* Paired contrasts (difference = second − first) on subject period means: exact Wilcoxon
  signed-rank (all 2^n sign flips with tied |differences|; zeros dropped and counted); paired t
  with its 95 % CI (``estimate``, ``ci_low``, ``ci_high``); ``fold_change`` = 10^estimate for
  log10-scale features.
* Mixed model on visit-level data: ``y ~ period + (1|subject) + (1|subject:period)``, REML,
  Satterthwaite df as lmerTest (:mod:`immunoprofile.study.mixed`; ``mixed_ddf="kenward-roger"``
  for pbkrtest's Kenward–Roger); ``mixed_status`` is ``ok``,
  ``boundary`` (verified singular fit) or ``not estimable`` with the reason in ``note``.
* Censored values (below the LLOQ, ``layers["censored"]``): rank tests see them tied at the
  single censoring level ``var["censor_level"]`` (the highest LLOQ among the plates involved,
  below every quantified value); parametric estimates (estimate, CI, p_ttest) come from a
  censored-normal (Tobit) fit (:mod:`immunoprofile.study.censored`, ``estimate_method =
  "tobit"``) while at most ``censored_max_fraction`` [0.5] of the values used are censored and
  are not estimable above it; the mixed model is not fitted to censored data. A period median
  at the censoring level is reported as ``<LLOQ``.
* Spearman correlation (exact permutation p for n ≤ 10) of each subject's change with the SCORAD
  change, on the first contrast's rows.
* Drug readouts (``var["drug_readout"]``) form the ``pharmacokinetic`` family.
* Subjects nested in plates: for cytokine features the rows note that plate and subject are
  confounded when every subject's samples sit on one plate.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import anndata as ad
    import numpy as np
    import pandas as pd

__all__ = ["compare_periods", "analysis_plan", "paired_contrast", "mixed_model_contrasts", "bh",
           "holm", "DEFAULT_FAMILIES", "DEFAULT_CONTRASTS", "DEFAULT_QC_POPULATIONS",
           "DEFAULT_POPULATIONS", "COLUMNS", "wilcoxon_min_p"]

log = logging.getLogger(__name__)

# family -> pandas query over adata.var; a feature goes to the first family that matches.
# Counts and pct_total are descriptive (they depend on events acquired / upstream gates) and
# are not compared by default; add a family to compare them.
DEFAULT_FAMILIES: dict[str, str] = {
    "pharmacokinetic": "drug_readout == True",
    "flow": "assay == 'flow' and feature_type == 'frequency' and statistic == 'pct_parent'",
    "flow_mfi": "assay == 'flow' and feature_type == 'mfi' and statistic == 'mfi'",
    "cytokine": "assay == 'cytokine' and feature_type == 'concentration'",
}
DEFAULT_CONTRASTS: tuple[tuple[str, str], ...] = (
    ("run-in", "treatment"), ("treatment", "post-treatment"), ("run-in", "post-treatment"),
)
#: Gating-QC gates (last gate-path component): reported, not tested.
# TimeQC: the acquisition-QC root gate (flow.timeqc): % kept over time, a QC figure, not a biomarker
DEFAULT_QC_POPULATIONS: tuple[str, ...] = ("TimeQC", "Cells", "Singlets", "Live")
DEFAULT_POPULATIONS: tuple[str, ...] = ("evaluable", "all")
COLUMNS: tuple[str, ...] = (
    "population", "feature", "family", "role", "contrast", "n", "estimate", "ci_low", "ci_high",
    "estimate_method", "fold_change", "fc_ci_low", "fc_ci_high", "median_diff", "p_wilcoxon",
    "p_ttest", "p_mixed", "p_friedman", "q", "p_adjusted", "direction", "p_min_wilcoxon",
    "wilcoxon_method", "friedman_method", "mixed_estimate", "mixed_df", "mixed_status",
    "spearman_rho", "p_spearman", "q_spearman", "n_spearman", "spearman_method",
    "censored_fraction", "median_first", "median_second", "median_first_label",
    "median_second_label", "excluded_subjects", "feature_type", "unit", "note",
)
_TEXT_COLUMNS = {"population", "feature", "family", "role", "contrast", "estimate_method",
                 "direction", "wilcoxon_method", "friedman_method", "mixed_status",
                 "spearman_method", "median_first_label", "median_second_label",
                 "excluded_subjects", "feature_type", "unit", "note"}
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
        # No sign to rank: Wilcoxon's p is 1. The t statistic is 0/0: undefined (R's t.test
        # refuses such data), so no t-test p and no CI rather than a made-up 1.0.
        out.update(p_wilcoxon=1.0, wilcoxon_method="none",
                   note="all paired differences are zero: t-test undefined")
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
        out.update(p_wilcoxon=_exact_wilcoxon_p(nonzero), wilcoxon_method="exact")
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




#: (n, sum of the positive differences' ranks) -> scipy's exact two-sided Wilcoxon p
_EXACT_WILCOXON: dict[tuple[int, int], float] = {}


def _exact_wilcoxon_p(nonzero: np.ndarray) -> float:
    """``scipy.stats.wilcoxon(nonzero, method="exact").pvalue`` for distinct non-zero |d|.

    Without ties or zeros the exact p is a function of ``n`` and the rank sum of the positive
    differences alone, so scipy is asked once per such pair (its per-call overhead, ~1 ms, was
    most of a comparison's cost) and the very value it returned is reused.
    """
    import numpy as np
    from scipy import stats

    ranks = np.empty(nonzero.size, dtype=np.int64)
    ranks[np.argsort(np.abs(nonzero), kind="stable")] = np.arange(1, nonzero.size + 1)
    key = (int(nonzero.size), int(ranks[nonzero > 0].sum()))
    if key not in _EXACT_WILCOXON:
        _EXACT_WILCOXON[key] = float(stats.wilcoxon(nonzero, method="exact").pvalue)
    return _EXACT_WILCOXON[key]


def _float_noise(*arrays: np.ndarray) -> float:
    """The spread below which values count as equal: 1e-12 of their magnitude (at least 1).

    Means of identical values (a censoring level, a gate holding every event) can differ in the
    last bits depending on summation order (pandas 2 and 3 differ here); that is not variation.
    """
    import numpy as np

    finite = [np.abs(a[np.isfinite(a)]) for a in map(np.asarray, arrays)]
    top = max([1.0, *(float(f.max()) for f in finite if f.size)])
    return 1e-12 * top


def holm(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values; NaN stays NaN and is not counted."""
    import numpy as np

    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size:
        order = ok[np.argsort(p[ok], kind="stable")]
        m = order.size
        adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
        out[order] = np.minimum(adj, 1.0)
    return out


def mixed_model_contrasts(y: np.ndarray, subject: np.ndarray, period: np.ndarray,
                          periods: Sequence[str], contrasts: Sequence[tuple[str, str]], *,
                          min_subjects: int = 3) -> dict[tuple[str, str], dict[str, Any]]:
    """``y ~ period + (1|subject) + (1|subject:period)`` (REML) and its Satterthwaite contrasts.

    Returns
    -------
    dict
        ``{(first, second): PeriodLMM.contrast(...)}`` — estimate, se, df, t, p, CI, status and
        reason (see :mod:`immunoprofile.study.mixed`; NaN numbers when not estimable).
    """
    from .mixed import fit_period_lmm

    fit = fit_period_lmm(y, subject, period, periods, min_subjects=min_subjects)
    return {(a, b): fit.contrast(a, b) for a, b in contrasts}


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


def _resolve_primary(var: pd.DataFrame, primary: Sequence[str]) -> tuple[list[str], list[str]]:
    """Primary entries → var names (exact, gate-path tail ``Th2|pct_parent``, or analyte)."""
    from ..errors import InputError

    names = [str(v) for v in var.index]
    analytes = var["analyte"].astype(str).tolist() if "analyte" in var else [""] * len(names)
    ftypes = var["feature_type"].astype(str).tolist() if "feature_type" in var else [""] * len(names)
    found, missing = [], []
    for entry in primary:
        entry = str(entry)
        hits = [n for n in names if n == entry]
        if not hits:
            hits = [n for n in names if n.endswith("/" + entry)]
        if not hits:
            hits = [n for n, a, t in zip(names, analytes, ftypes) if a == entry and t == "concentration"]
        if len(hits) > 1:
            raise InputError(None, f"primary feature {entry!r} is ambiguous: matches {', '.join(hits)}")
        if hits:
            found.append(hits[0])
        else:
            missing.append(entry)
    return found, missing


def _qc_mask(var: pd.DataFrame, qc_populations: Sequence[str]) -> np.ndarray:
    import numpy as np

    if "population" not in var or not qc_populations:
        return np.zeros(len(var), dtype=bool)
    last = var["population"].astype(str).map(lambda p: p.rstrip("/").rsplit("/", 1)[-1])
    assay = var["assay"].astype(str) if "assay" in var else ""
    return (last.isin(set(qc_populations)) & (assay == "flow")).to_numpy()


def _subject_table(adata: ad.AnnData) -> pd.DataFrame:
    obs = adata.obs
    first = obs.drop_duplicates("subject_id")
    return first.set_index(first["subject_id"].astype(str))


def _populations(adata: ad.AnnData, populations: Sequence[str], design: Any
                 ) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Population → {subjects, excluded: {subject: reason}, definition}; plus notes."""
    import pandas as pd

    subjects = [str(s) for s in (adata.obs["subject_id"].cat.categories
                                 if hasattr(adata.obs["subject_id"], "cat")
                                 else sorted(set(adata.obs["subject_id"].astype(str))))]
    table = _subject_table(adata)
    out: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    # the dose rule is the study's own (uns["immunoprofile"]["design"]); a study that records no
    # design is described by its obs["evaluable"] alone, never by another trial's numbers
    planned = getattr(design, "planned_doses", None)
    min_doses = getattr(design, "min_doses", None)
    for name in populations:
        if name == "all":
            out[name] = {"subjects": subjects, "excluded": {},
                         "definition": "every subject with data (sensitivity population)"}
        elif name == "evaluable":
            if "evaluable" not in table.columns:
                notes.append("population 'evaluable' not reported: no dosing data in the study "
                             "(assemble with a clinical table holding doses_received)")
                continue
            ev = pd.array(table["evaluable"].reindex(subjects), dtype="boolean")
            state = ["unknown" if e is pd.NA else "yes" if bool(e) else "no" for e in ev]
            doses = table["total_doses"].reindex(subjects) if "total_doses" in table else None
            keep = [s for s, e in zip(subjects, state) if e == "yes"]
            excluded = {}
            for s, e in zip(subjects, state):
                if e == "yes":
                    continue
                d = float(doses.get(s)) if doses is not None else float("nan")
                excluded[s] = (f"{d:.0f} of {planned} doses (< {min_doses})"
                               if e == "no" and d == d and design is not None
                               else "not evaluable" if e == "no" else "dosing unknown")
            rule = (f"subjects with >= {min_doses} of {planned} planned doses (the protocol's "
                    "evaluability rule" if design is not None else
                    "subjects with obs['evaluable'] true (the study records no design")
            out[name] = {"subjects": keep, "excluded": excluded,
                         "definition": f"{rule}; primary population)"}
        else:
            from ..errors import InputError
            raise InputError(None, f"unknown population {name!r}; allowed: evaluable, all")
    return out, notes


def _estimand_visits(adata: ad.AnnData, periods: list[str],
                     estimands: Mapping[str, Sequence[str]] | None) -> dict[str, list[str]]:
    from ..errors import InputError

    visits = [str(v) for v in adata.obs["visit"].cat.categories] \
        if hasattr(adata.obs["visit"], "cat") else sorted(set(adata.obs["visit"].astype(str)))
    by_period: dict[str, list[str]] = {p: [] for p in periods}
    for v, p in zip(adata.obs["visit"].astype(str), adata.obs["period"].astype(str)):
        if p in by_period and v not in by_period[p]:
            by_period[p].append(v)
    order = {v: k for k, v in enumerate(visits)}
    out = {p: sorted(vs, key=lambda v: order.get(v, 0)) for p, vs in by_period.items()}
    for p, chosen in (estimands or {}).items():
        if p not in out:
            raise InputError(None, f"estimand for unknown period {p!r}; periods: {', '.join(periods)}")
        bad = [v for v in chosen if v not in out[p]]
        if bad:
            raise InputError(None, f"estimand {p!r}: visit(s) {', '.join(bad)} are not {p} visits "
                                   f"({', '.join(out[p])})")
        out[p] = [v for v in out[p] if v in set(chosen)]
    return out


def _settings_defaults() -> dict[str, Any]:
    return {"layer": "transformed", "families": None, "contrasts": DEFAULT_CONTRASTS,
            "mixed": True, "min_subjects": 3, "alpha": 0.05, "populations": DEFAULT_POPULATIONS,
            "estimands": None, "primary": (), "primary_contrasts": None, "hierarchy": "gate",
            "primary_test": "ttest", "qc_populations": DEFAULT_QC_POPULATIONS, "test_qc": False,
            "censored_max_fraction": 0.5, "mixed_ddf": "satterthwaite"}


def analysis_plan(adata: ad.AnnData, **settings: Any) -> dict[str, Any]:
    """The analysis plan :func:`compare_periods` follows for this study (JSON-ready).

    Parameters
    ----------
    adata
        The study.
    **settings
        The keyword arguments of :func:`compare_periods` (defaults when left out).

    Returns
    -------
    dict
        Populations (definition, subjects, exclusions with reasons), estimands (visits per
        period), the change definition, primary features / contrasts / hierarchy, the
        exploratory multiplicity rule, QC populations, censoring and model specifications.
    """
    from .design import StudyDesign

    cfg = {**_settings_defaults(), **settings}
    design = None
    uns = adata.uns.get("immunoprofile", {})
    if isinstance(uns, Mapping) and "design" in uns:
        design = StudyDesign.from_dict(uns["design"])
    periods = [str(p) for p in adata.obs["period"].cat.categories]
    contrasts = [tuple(c) for c in cfg["contrasts"]]
    pops, pop_notes = _populations(adata, cfg["populations"], design)
    primary, missing = _resolve_primary(adata.var, cfg["primary"])
    primary_contrasts = [tuple(c) for c in (cfg["primary_contrasts"] or contrasts[:1])]
    for c in primary_contrasts:
        if c not in contrasts:
            from ..errors import InputError
            raise InputError(None, f"primary contrast {c} is not one of the contrasts {contrasts}")
    if cfg["hierarchy"] not in ("gate", "fixed-sequence"):
        from ..errors import InputError
        raise InputError(None, f"hierarchy {cfg['hierarchy']!r}: allowed gate, fixed-sequence")
    if cfg["mixed_ddf"] not in ("satterthwaite", "kenward-roger"):
        from ..errors import InputError
        raise InputError(None, f"mixed_ddf {cfg['mixed_ddf']!r}: allowed satterthwaite, kenward-roger")
    if cfg["primary_test"] not in ("ttest", "wilcoxon", "mixed"):
        from ..errors import InputError
        raise InputError(None, f"primary_test {cfg['primary_test']!r}: allowed ttest, wilcoxon, mixed")
    test_col = {"ttest": "p_ttest", "wilcoxon": "p_wilcoxon", "mixed": "p_mixed"}[cfg["primary_test"]]
    if cfg["hierarchy"] == "gate":
        hierarchy = (f"stage 1: Holm over the primary features' exact Friedman p at alpha "
                     f"{cfg['alpha']}; stage 2: Holm over the primary contrasts "
                     f"({', '.join(f'{a}_vs_{b}' for a, b in primary_contrasts)}) of the features that "
                     f"passed stage 1, on {test_col}; p_adjusted = max(stage-1, stage-2 adjusted p); "
                     "features that fail the gate are not tested further (p_adjusted of their "
                     "contrasts = their stage-1 adjusted p)")
    else:
        hierarchy = (f"fixed sequence at alpha {cfg['alpha']}: " + " → ".join(
            f"{f} {a}_vs_{b}" for f in primary for a, b in primary_contrasts)
            + f" on {test_col}; p_adjusted = running maximum; testing stops at the first p > alpha")
    plates = _plate_nesting(adata)
    return {
        "populations": {name: {"definition": p["definition"], "subjects": p["subjects"],
                               "excluded": p["excluded"]} for name, p in pops.items()},
        "population_notes": pop_notes,
        "primary_population": "evaluable" if "evaluable" in pops else next(iter(pops), ""),
        "estimands": {p: {"visits": v, "summary": "mean over these visits of each subject"}
                      for p, v in _estimand_visits(adata, periods, cfg["estimands"]).items()},
        "estimands_default": "every visit of the period" if not cfg["estimands"] else
                             "configured (visits listed per period)",
        "change": ("period mean - run-in mean: on the analysis scale (layer "
                   f"{cfg['layer']!r}) for features, as a percentage of the run-in mean for SCORAD; "
                   "the clinical responder flag keeps the protocol's week-0 → week-12 definition"),
        "contrasts": [f"{a}_vs_{b}" for a, b in contrasts],
        "primary": {"features": primary, "not_in_study": missing,
                    "contrasts": [f"{a}_vs_{b}" for a, b in primary_contrasts],
                    "test": test_col, "hierarchy": cfg["hierarchy"], "procedure": hierarchy,
                    "alpha": cfg["alpha"]},
        "exploratory": ("every other compared feature: Benjamini-Hochberg within population, family "
                        "and contrast over the exact Wilcoxon p (q; Friedman rows over the exact "
                        "Friedman p); Spearman p adjusted the same way within population and "
                        "family (q_spearman)"),
        "families": dict(DEFAULT_FAMILIES if cfg["families"] is None else cfg["families"]),
        "qc_populations": {"gates": list(cfg["qc_populations"]), "tested": bool(cfg["test_qc"])},
        "censoring": (f"values below the LLOQ are left-censored at one level per analyte (the highest "
                      f"LLOQ among the plates involved, var['censor_level']); rank tests: tied below "
                      f"every quantified value; estimates: censored-normal (Tobit) fit on the log "
                      f"scale with subject fixed effects, not estimable when more than "
                      f"{100 * cfg['censored_max_fraction']:g} % of the values used are censored; "
                      f"the mixed model is not fitted to censored data; medians at the censoring "
                      f"level are reported as <LLOQ"),
        "mixed_model": ("y ~ period + (1|subject) + (1|subject:period) on visit-level data, REML, "
                        + ("Kenward-Roger (pbkrtest's adjusted covariance and df)"
                           if cfg["mixed_ddf"] == "kenward-roger" else "Satterthwaite df (lmerTest's "
                           "method)") + "; degenerate fits not estimable; verified boundary fits "
                        "reported as mixed_status 'boundary'")
                       if cfg["mixed"] else "not fitted",
        "exact_tests": "exact Wilcoxon signed-rank, exact Friedman (enumeration), exact Spearman "
                       "(permutation, n <= 10)",
        "min_subjects": cfg["min_subjects"],
        "plate_confounding": plates,
    }


def _plate_nesting(adata: ad.AnnData) -> str:
    """Whether cytokine plates nest subjects (each subject's samples on one plate)."""
    if "cytokine_plate" not in adata.obs.columns:
        return ""
    frame = adata.obs[["subject_id", "cytokine_plate"]].astype(str)
    frame = frame[frame["cytokine_plate"] != ""]
    if frame.empty or frame["cytokine_plate"].nunique() < 2:
        return ""
    per_subject = frame.groupby("subject_id", observed=True)["cytokine_plate"].nunique()
    if (per_subject <= 1).all():
        return ("subjects are nested in plates (each subject's samples on one plate): plate bias "
                "cancels in within-subject period contrasts but is confounded with subject in "
                "between-subject quantities (period medians, Spearman with SCORAD)")
    return "subjects' samples span several plates: plate bias enters the within-subject contrasts"


def _cell_means(values: np.ndarray, censored: np.ndarray, rowsel: np.ndarray, subj: np.ndarray,
                per: np.ndarray, subjects: list[str], periods: list[str]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Subject × period × feature means of the selected rows, visit and censored-visit counts."""
    import numpy as np

    n_s, n_p, n_v = len(subjects), len(periods), values.shape[1]
    means = np.full((n_s, n_p, n_v), np.nan)
    count = np.zeros((n_s, n_p, n_v))
    ncens = np.zeros((n_s, n_p, n_v))
    for i, s in enumerate(subjects):
        for k, p in enumerate(periods):
            mask = rowsel & (subj == s) & (per == p)
            if not mask.any():
                continue
            block = values[mask]
            n = np.isfinite(block).sum(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                means[i, k] = np.where(n > 0, np.nansum(block, axis=0) / np.maximum(n, 1), np.nan)
            count[i, k] = n
            ncens[i, k] = (censored[mask] & np.isfinite(block)).sum(axis=0)
    return means, count, ncens


def _median_label(values: np.ndarray, level: float, back: Any, unit: str) -> tuple[float, str]:
    """Median across subjects (back-transformed) and its label; ``<LLOQ`` at the censoring level."""
    import numpy as np

    v = values[np.isfinite(values)]
    if not v.size:
        return math.nan, ""
    med = float(np.median(v))
    if math.isfinite(level) and med <= level + 1e-9:
        return math.nan, f"<LLOQ ({back(level):.4g} {unit})".strip()
    value = float(back(med))
    return value, f"{value:.4g}"


def compare_periods(
    adata: ad.AnnData,
    *,
    layer: str = "transformed",
    families: Mapping[str, str] | None = None,
    contrasts: Sequence[tuple[str, str]] = DEFAULT_CONTRASTS,
    mixed: bool = True,
    min_subjects: int = 3,
    alpha: float = 0.05,
    populations: Sequence[str] = DEFAULT_POPULATIONS,
    estimands: Mapping[str, Sequence[str]] | None = None,
    primary: Sequence[str] = (),
    primary_contrasts: Sequence[tuple[str, str]] | None = None,
    hierarchy: str = "gate",
    primary_test: str = "ttest",
    qc_populations: Sequence[str] = DEFAULT_QC_POPULATIONS,
    test_qc: bool = False,
    censored_max_fraction: float = 0.5,
    mixed_ddf: str = "satterthwaite",
    options: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Compare the protocol periods feature by feature under the analysis plan (module docstring).

    Parameters
    ----------
    adata
        A study AnnData (obs = subject × visit with ``subject_id``, ``visit`` and ``period``).
    layer
        The scale the tests run on (``transformed``: log10 / logit / asinh).
    families
        ``{family: pandas query over var}``; defaults to :data:`DEFAULT_FAMILIES`. Features in no
        family are not compared.
    contrasts
        Pairs (first, second) of period names; the estimate is second − first.
    mixed
        Also fit the mixed model (sensitivity).
    min_subjects
        Fewest complete pairs for a test; below it the row says why in ``note``.
    alpha
        Level of the primary hierarchy and of ``significant`` (exploratory: q < alpha).
    populations
        Analysis populations reported (``evaluable``, ``all``).
    estimands
        ``{period: [visits]}`` whose mean is the subject's period value (default every visit).
    primary
        Pre-specified primary features (var names, gate-path tails like ``Th2|pct_parent``, or
        cytokine analytes like ``IL-13``).
    primary_contrasts
        Contrasts of the primary hierarchy (default: the first contrast).
    hierarchy
        ``gate`` (Friedman gate → pairwise, Holm at each stage) or ``fixed-sequence``.
    primary_test
        ``ttest``, ``wilcoxon`` or ``mixed``: the p of the primary contrasts.
    qc_populations
        Gating-QC gates (last gate-path component) reported but not tested.
    test_qc
        Test the QC gates too (then they join their family's BH).
    censored_max_fraction
        Above this fraction of censored values used, parametric estimates are not estimable.
    mixed_ddf
        Denominator df of the mixed-model contrasts: ``satterthwaite`` (lmerTest's default) or
        ``kenward-roger`` (pbkrtest's adjusted covariance and df).
    options
        The same settings as a mapping (a pipeline config's ``compare.options``); its keys
        override the keyword arguments. Unknown keys are an ``InputError``.

    Returns
    -------
    DataFrame
        Columns :data:`COLUMNS` plus ``significant``; per population one ``friedman`` row and
        one row per contrast for every compared feature. ``frame.attrs["notes"]`` states what
        the sample size allows and the methods; ``frame.attrs["plan"]`` is :func:`analysis_plan`.
    """
    import numpy as np
    import pandas as pd
    from scipy import stats

    from .censored import tobit_contrast
    from .exact import friedman_exact, spearman_exact
    from .mixed import fit_period_lmm

    settings = {"layer": layer, "families": families, "contrasts": contrasts, "mixed": mixed,
                "min_subjects": min_subjects, "alpha": alpha, "populations": populations,
                "estimands": estimands, "primary": primary, "primary_contrasts": primary_contrasts,
                "hierarchy": hierarchy, "primary_test": primary_test,
                "qc_populations": qc_populations, "test_qc": test_qc,
                "censored_max_fraction": censored_max_fraction, "mixed_ddf": mixed_ddf}
    if options:
        unknown = sorted(set(options) - set(settings))
        if unknown:
            from ..errors import InputError
            raise InputError(None, f"unknown compare option(s) {', '.join(unknown)}; "
                                   f"allowed: {', '.join(settings)}")
        settings.update(options)
        return compare_periods(adata, **settings)
    if layer not in adata.layers:
        from .._frames import layer_names
        from ..errors import InputError
        raise InputError(None, f"no layer {layer!r} in the study (have {', '.join(layer_names(adata))})")
    periods = [str(p) for p in adata.obs["period"].cat.categories]
    contrasts = [tuple(c) for c in contrasts]
    for a, b in contrasts:
        for p in (a, b):
            if p not in periods:
                from ..errors import InputError
                raise InputError(None, f"contrast period {p!r} is not one of {periods}")
    plan = analysis_plan(adata, **settings)
    families = dict(DEFAULT_FAMILIES if families is None else families)
    fam = _assign_families(adata.var, families)
    var = adata.var
    primary_set = set(plan["primary"]["features"])
    qc = _qc_mask(var, qc_populations)
    values = np.asarray(adata.layers[layer], dtype=float)
    censored = (np.asarray(adata.layers["censored"]).astype(bool) if "censored" in adata.layers
                else np.zeros(values.shape, dtype=bool))
    levels = (pd.to_numeric(var["censor_level"], errors="coerce").to_numpy(dtype=float)
              if "censor_level" in var else np.full(adata.n_vars, np.nan))
    raw = np.asarray(adata.layers["raw"], dtype=float) if "raw" in adata.layers else values
    subj = adata.obs["subject_id"].astype(str).to_numpy()
    per = adata.obs["period"].astype(str).to_numpy()
    vis = adata.obs["visit"].astype(str).to_numpy()
    est_visits = {p: set(v["visits"]) for p, v in plan["estimands"].items()}
    in_estimand = np.array([v in est_visits.get(p, set()) for v, p in zip(vis, per)])
    scorad = adata.obs["scorad"].to_numpy(dtype=float) if "scorad" in adata.obs else None
    pidx = {p: k for k, p in enumerate(periods)}
    primary_contrasts = [tuple(c) for c in (primary_contrasts or contrasts[:1])]
    plate_note = plan["plate_confounding"]
    rows: list[dict[str, Any]] = []
    for pop_name, pop in plan["populations"].items():
        subjects = list(pop["subjects"])
        excluded = ", ".join(f"{s} ({why})" for s, why in pop["excluded"].items())
        rowsel = in_estimand & np.isin(subj, subjects)
        means, count, ncens = _cell_means(values, censored, rowsel, subj, per, subjects, periods)
        raw_means = _cell_means(raw, censored, rowsel, subj, per, subjects, periods)[0]
        sc_change = None
        if scorad is not None and len(contrasts):
            sc_means, _, _ = _cell_means(scorad[:, None], np.zeros((len(scorad), 1), dtype=bool),
                                         rowsel, subj, per, subjects, periods)
            a, b = contrasts[0]
            base = sc_means[:, pidx[a], 0]
            with np.errstate(invalid="ignore", divide="ignore"):
                sc_change = np.where(base > 0, 100.0 * (sc_means[:, pidx[b], 0] - base) / base, np.nan)
        for j, feature in enumerate(adata.var_names):
            family = fam.iloc[j]
            if not family:
                continue
            ftype = str(var["feature_type"].iloc[j]) if "feature_type" in var else ""
            unit = str(var["unit"].iloc[j]) if "unit" in var else ""
            drug = bool(var["drug_readout"].iloc[j]) if "drug_readout" in var else False
            role = ("primary" if str(feature) in primary_set else
                    "qc" if qc[j] and not test_qc else "exploratory")
            base_row = {"population": pop_name, "feature": str(feature), "family": family,
                        "role": role, "feature_type": ftype, "unit": unit,
                        "excluded_subjects": excluded}
            label = "pharmacokinetic readout (drug measured), not a biomarker" if drug else ""
            if role == "qc":
                label = "; ".join(x for x in (label, "gating-QC gate: reported, not tested") if x)
            log10 = ftype in _LOG10_TYPES
            m = means[:, :, j]
            # Friedman on subjects with all periods (exact).
            complete = np.all(np.isfinite(m), axis=1)
            fr = {**base_row, "contrast": "friedman", "n": int(complete.sum()), "p_friedman": np.nan}
            notes = [label] if label else []
            if complete.sum() < min_subjects or len(periods) < 3:
                notes.append(f"too few subjects with all periods (n={int(complete.sum())}, "
                             f"need >= {min_subjects})")
            elif np.all(np.ptp(m[complete], axis=1) <= _float_noise(m[complete])):
                notes.append("no within-subject variation")
            else:
                _, fr["p_friedman"], fr["friedman_method"] = friedman_exact(m[complete])
            fr["note"] = "; ".join(notes)
            rows.append(fr)
            col_cens = censored[:, j] & rowsel
            any_cens = bool(col_cens.any())
            fit = None
            mixed_reason = ""
            if mixed and not any_cens:
                fit = fit_period_lmm(np.where(rowsel, values[:, j], np.nan), subj, per, periods,
                                     min_subjects=min_subjects)
            elif mixed:
                mixed_reason = "mixed model not fitted: censored values (see the Tobit estimate)"
            for a, b in contrasts:
                first, second = m[:, pidx[a]], m[:, pidx[b]]
                res = paired_contrast(first, second, min_subjects=min_subjects)
                row = {**base_row, "contrast": f"{a}_vs_{b}", **res, "estimate_method": "paired t"}
                notes = [n for n in (label, res["note"]) if n]
                both = np.isfinite(first) & np.isfinite(second)
                used = count[both][:, [pidx[a], pidx[b]], j].sum()
                cens_used = ncens[both][:, [pidx[a], pidx[b]], j].sum()
                frac = float(cens_used / used) if used else 0.0
                row["censored_fraction"] = frac
                if frac > 0 and res["n"] >= min_subjects:
                    row.update(p_ttest=np.nan, ci_low=np.nan, ci_high=np.nan)
                    if frac > censored_max_fraction:
                        row.update(estimate=np.nan, estimate_method="not estimable")
                        notes.append(f"{100 * frac:.0f} % of values censored (> "
                                     f"{100 * censored_max_fraction:g} %): no parametric estimate")
                    else:
                        sel = rowsel & np.isin(subj, np.asarray(subjects)[both])
                        tb = tobit_contrast(values[sel, j], censored[sel, j], subj[sel], per[sel], a, b)
                        row.update(estimate=tb["estimate"], ci_low=tb["ci_low"], ci_high=tb["ci_high"],
                                   p_tobit=tb["p"], estimate_method="tobit" if tb["status"] == "ok"
                                   else "not estimable")
                        notes.append(f"{100 * frac:.0f} % of values censored: censored-normal (Tobit) "
                                     "estimate, z-based CI and p" if tb["status"] == "ok"
                                     else f"Tobit not estimable: {tb['reason']}")
                        if tb["subjects_left_out"]:
                            notes.append("Tobit leaves out subject(s) censored at every visit: "
                                         + ", ".join(tb["subjects_left_out"]))
                if fit is not None:
                    mc = fit.contrast(a, b, ddf=mixed_ddf)
                    row.update(p_mixed=mc["p"], mixed_df=mc["df"], mixed_estimate=mc["estimate"],
                               mixed_status=mc["status"])
                    if mc["status"] != "ok":
                        notes.append(f"mixed model {mc['status']}: {mc['reason']}")
                elif mixed:
                    row["mixed_status"] = "not estimable"
                    notes.append(mixed_reason)
                if pop["excluded"] and res["n"]:
                    notes.append(f"population {pop_name}: excludes {excluded}")
                est = row["estimate"]
                row["direction"] = ("up" if est > 0 else "down" if est < 0 else "none") \
                    if est == est and row["n"] >= min_subjects else "none"
                if log10 and row["n"] >= min_subjects and est == est:
                    row["fold_change"] = 10.0 ** est
                    row["fc_ci_low"] = 10.0 ** row["ci_low"] if row["ci_low"] == row["ci_low"] else np.nan
                    row["fc_ci_high"] = 10.0 ** row["ci_high"] if row["ci_high"] == row["ci_high"] else np.nan
                level = levels[j]
                for side, k in (("first", pidx[a]), ("second", pidx[b])):
                    if ftype == "concentration":  # geometric period means; censoring respected
                        row[f"median_{side}"], row[f"median_{side}_label"] = _median_label(
                            m[:, k], level, lambda t: 10.0 ** t, unit)
                    else:
                        row[f"median_{side}"], row[f"median_{side}_label"] = _median_label(
                            raw_means[:, k, j], math.nan, lambda t: t, unit)
                if sc_change is not None and (a, b) == contrasts[0]:
                    ok = both & np.isfinite(sc_change)
                    row["n_spearman"] = int(ok.sum())
                    change = (second - first)[ok]
                    if (ok.sum() >= min_subjects and np.ptp(change) > _float_noise(first, second)
                            and np.ptp(sc_change[ok]) > _float_noise(sc_change[ok])):
                        rho, p, how = spearman_exact(change, sc_change[ok])
                        row.update(spearman_rho=rho, p_spearman=p, spearman_method=how)
                row["note"] = "; ".join(n for n in notes if n)
                rows.append(row)
    out = pd.DataFrame(rows)
    if "p_tobit" not in out.columns:
        out["p_tobit"] = np.nan
    for col in COLUMNS:
        if col not in out.columns:
            out[col] = "" if col in _TEXT_COLUMNS else np.nan
    for col in _TEXT_COLUMNS:
        out[col] = out[col].fillna("").astype(str)
    out["direction"] = out["direction"].replace("", "none")
    out["q"] = np.nan
    out["q_spearman"] = np.nan
    out["p_adjusted"] = np.nan
    if len(out):
        tested = out["role"] == "exploratory"
        for _, idx in out[tested].groupby(["population", "family", "contrast"], sort=False).groups.items():
            sub = out.loc[idx]
            pcol = "p_friedman" if sub["contrast"].iloc[0] == "friedman" else "p_wilcoxon"
            out.loc[idx, "q"] = bh(sub[pcol].to_numpy(dtype=float))
        sp = out["role"] != "qc"
        for _, idx in out[sp].groupby(["population", "family"], sort=False).groups.items():
            out.loc[idx, "q_spearman"] = bh(out.loc[idx, "p_spearman"].to_numpy(dtype=float))
        _primary_hierarchy(out, plan, primary_contrasts, hierarchy, alpha)
    out["significant"] = np.where(out["role"] == "primary", out["p_adjusted"] <= alpha,
                                  out["q"] < alpha)
    out = out[[*COLUMNS, "p_tobit", "significant"]]
    n_pairs = int(out.loc[out["contrast"] != "friedman", "n"].max()) if len(out) else 0
    out.attrs["plan"] = plan
    out.attrs["notes"] = {
        "sample_size": (f"at most {n_pairs} paired subjects: the exact two-sided Wilcoxon p cannot go "
                        f"below {wilcoxon_min_p(n_pairs):.4g} (2/2^n); see p_min_wilcoxon per row"),
        "scale": f"tests on layer {layer!r}; estimate = mean paired difference (second - first period)",
        "populations": {k: {"excluded": v["excluded"]} for k, v in plan["populations"].items()},
        "population_notes": plan["population_notes"],
        "multiplicity": plan["exploratory"],
        "primary": plan["primary"]["procedure"],
        "mixed_model": plan["mixed_model"],
        "censoring": plan["censoring"],
        "plates": plate_note,
        "families": families,
        "contrasts": [f"{a}_vs_{b}" for a, b in contrasts],
        "min_subjects": min_subjects,
    }
    return out


def _primary_hierarchy(out: pd.DataFrame, plan: Mapping[str, Any],
                       primary_contrasts: Sequence[tuple[str, str]], hierarchy: str,
                       alpha: float) -> None:
    """Fill ``p_adjusted`` of the primary rows, per population (in place)."""
    import numpy as np

    features = list(plan["primary"]["features"])
    test_col = plan["primary"]["test"]
    names = [f"{a}_vs_{b}" for a, b in primary_contrasts]
    for _, sub in out[out["role"] == "primary"].groupby("population", sort=False):
        if hierarchy == "fixed-sequence":
            running = 0.0
            for f in features:
                for c in names:
                    idx = sub.index[(sub["feature"] == f) & (sub["contrast"] == c)]
                    if not len(idx):
                        continue
                    p = float(out.loc[idx[0], test_col])
                    running = max(running, p) if p == p else 1.0
                    out.loc[idx, "p_adjusted"] = min(1.0, running)
            continue
        fr = sub[sub["contrast"] == "friedman"].set_index("feature").reindex(features)
        stage1 = dict(zip(features, holm(fr["p_friedman"].to_numpy(dtype=float))))
        for f, p in stage1.items():
            out.loc[sub.index[(sub["feature"] == f) & (sub["contrast"] == "friedman")], "p_adjusted"] = p
        passed = [f for f in features if stage1.get(f, np.nan) <= alpha]
        idx = sub.index[sub["feature"].isin(passed) & sub["contrast"].isin(names)]
        stage2 = holm(out.loc[idx, test_col].to_numpy(dtype=float))
        for i, p2 in zip(idx, stage2):
            out.loc[i, "p_adjusted"] = max(stage1[out.loc[i, "feature"]], p2) if p2 == p2 else np.nan
        gated = sub.index[~sub["feature"].isin(passed) & sub["contrast"].isin(names)]
        for i in gated:  # not tested further: the gate's own adjusted p is what they get
            out.loc[i, "p_adjusted"] = stage1.get(out.loc[i, "feature"], np.nan)
