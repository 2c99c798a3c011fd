"""Left-censored (below-LLOQ) values: a censored-normal (Tobit) period contrast on the log scale.

Contract: :func:`tobit_contrast` fits ``y ~ period + subject`` by maximum likelihood with the
censored values entering as ``P(y <= censoring level)`` (``survival::survreg(Surv(y, event,
type = "left") ~ period + subject, dist = "gaussian")`` in R) and returns the period contrast
with its Wald SE, z-based CI and p (survreg's), or the reason it is not estimable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["tobit_contrast"]


def tobit_contrast(y: np.ndarray, censored: np.ndarray, subject: Sequence[str] | np.ndarray,
                   period: Sequence[str] | np.ndarray, first: str, second: str, *,
                   level: float = 0.95) -> dict[str, Any]:
    """Censored-normal ML contrast ``second − first`` with subject fixed effects.

    Parameters
    ----------
    y
        Visit-level values on the analysis (log) scale; for censored rows the censoring level.
    censored
        True where the value is only known to be at or below ``y``.
    subject, period
        Labels per row (rows of other periods are ignored).
    first, second
        The periods compared.

    Returns
    -------
    dict
        ``estimate, se, ci_low, ci_high, p, sigma, status, reason, subjects_left_out`` (subjects
        censored at every visit: no information on the contrast).
    """
    import numpy as np
    from scipy import optimize, stats

    y = np.asarray(y, dtype=float)
    cens = np.asarray(censored, dtype=bool)
    subject = np.asarray(subject).astype(str)
    period = np.asarray(period).astype(str)
    keep = np.isfinite(y) & np.isin(period, [first, second])
    y, cens, subject, period = y[keep], cens[keep], subject[keep], period[keep]
    out: dict[str, Any] = {"estimate": math.nan, "se": math.nan, "ci_low": math.nan,
                           "ci_high": math.nan, "p": math.nan, "sigma": math.nan,
                           "status": "not estimable", "reason": ""}
    # A subject censored at every visit of the two periods has its fixed effect at -inf and
    # carries no information on the within-subject contrast: it is left out (and counted).
    all_cens = sorted(s for s in set(subject) if cens[subject == s].all())
    if all_cens:
        keep = ~np.isin(subject, all_cens)
        y, cens, subject, period = y[keep], cens[keep], subject[keep], period[keep]
    out["subjects_left_out"] = all_cens
    subjects = sorted(set(subject))
    if (~cens).sum() < len(subjects) + 2 or not (period == second).any() or not (period == first).any():
        out["reason"] = "too few quantified values for a censored-normal fit"
        return out
    X = np.column_stack([np.ones(y.size), (period == second).astype(float)]
                        + [(subject == s).astype(float) for s in subjects[1:]])
    if np.linalg.matrix_rank(X) < X.shape[1]:
        out["reason"] = "censored-normal design not of full rank"
        return out

    from scipy.special import log_ndtr

    # stats.norm.logcdf / logpdf at loc 0, scale 1 are exactly these (scipy's _norm_logcdf and
    # _norm_logpdf), without the distribution machinery's per-call cost (most of the fit's time).
    log_c = np.log(np.sqrt(2 * np.pi))

    def nll(par: np.ndarray) -> float:
        beta, log_s = par[:-1], par[-1]
        s = math.exp(log_s)
        z = (y - X @ beta) / s
        ll = np.where(cens, log_ndtr(z), (-z ** 2 / 2.0 - log_c) - log_s)
        return -float(np.sum(ll))

    beta0 = np.linalg.lstsq(X, y, rcond=None)[0]
    s0 = max(float(np.std(y - X @ beta0)), 1e-3)
    res = optimize.minimize(nll, np.append(beta0, math.log(s0)), method="BFGS",
                            options={"gtol": 1e-9, "maxiter": 5000})
    res = optimize.minimize(nll, res.x, method="Nelder-Mead",
                            options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000}) \
        if not res.success else res
    if not np.isfinite(res.fun):
        out["reason"] = "censored-normal likelihood not finite"
        return out
    hess = _hessian(nll, res.x)
    try:
        cov = np.linalg.inv(hess)
    except np.linalg.LinAlgError:
        out["reason"] = "censored-normal information matrix singular"
        return out
    se = float(math.sqrt(cov[1, 1])) if cov[1, 1] > 0 else math.nan
    if not math.isfinite(se) or se > 1e3:
        out["reason"] = "censored-normal fit degenerate (contrast SE not finite)"
        return out
    est = float(res.x[1])
    zq = float(stats.norm.ppf(0.5 + level / 2.0))
    out.update(estimate=est, se=se, ci_low=est - zq * se, ci_high=est + zq * se,
               p=float(2 * stats.norm.sf(abs(est / se))), sigma=math.exp(float(res.x[-1])),
               status="ok", reason="")
    return out


def _hessian(f: Any, x: np.ndarray) -> np.ndarray:
    """Central-difference Hessian (steps scaled to each coordinate)."""
    import numpy as np

    k = x.size
    h = 1e-4 * np.maximum(np.abs(x), 1.0)
    H = np.empty((k, k))
    for i in range(k):
        for j in range(i, k):
            ei, ej = np.zeros(k), np.zeros(k)
            ei[i], ej[j] = h[i], h[j]
            val = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (4 * h[i] * h[j])
            H[i, j] = H[j, i] = val
    return H
