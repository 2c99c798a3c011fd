"""A small dense REML fit of the period model ``y ~ period + (1|subject) + (1|subject:period)``.

Contract: :func:`fit_period_lmm` takes visit-level values of one feature and returns a
:class:`PeriodLMM` whose :meth:`PeriodLMM.contrast` gives estimate, SE, Satterthwaite df and p of
a period difference, computed the way lmerTest does (``lmerTest::contest1D`` with
``ddf = "Satterthwaite"``), or the reason the contrast is not estimable. It never returns a p
from a degenerate fit.

Why our own fit. The trial has at most a few dozen subjects and ~100 visits per feature, so the
marginal covariance ``V = s0 I + s1 Z1 Z1' + s2 Z2 Z2'`` is a small dense matrix and the REML
criterion, its gradient and the Hessian needed for Satterthwaite's df are a few lines of dense
linear algebra, exactly (no numerical differentiation, no optimiser landing on a spurious
optimum the way statsmodels' ``MixedLM`` did with a subject variance of zero and log-likelihood
+inf). The parametrisation follows lme4/lmerTest so the numbers are theirs:

* ``theta = (sd_subject, sd_subject:period) / sigma`` (lme4's relative Cholesky factors, >= 0)
  is optimised on the profiled REML criterion (``sigma`` profiled out);
* the asymptotic covariance of ``varpar = (theta_1, theta_2, sigma)`` is
  ``2 · H⁺`` with ``H`` the Hessian of the (unprofiled) REML deviance in ``varpar`` (lmerTest
  ``as_lmerModLT``; ``H⁺`` the pseudo-inverse over eigenvalues > 1e-8), here analytic and on the
  standardised data (y / SD(y); the df are scale free — lmerTest's absolute 1e-8 threshold on
  the raw-scale Hessian would drop the sigma direction only for data on a scale of ~1e5);
* for a contrast ``L``: ``var = L' C L`` with ``C = (X' V⁻¹ X)⁻¹``, ``g = ∂var/∂varpar``
  (analytic; lmerTest uses ``numDeriv::jacobian``), ``df = 2 var² / (g' (2H⁺) g)``, two-sided
  ``p = 2 P(t_df > |est / se|)``.

Degenerate fits are detected rather than reported: a non-finite criterion, an optimiser that
does not converge from any start (L-BFGS-B from a grid of starts, then Nelder–Mead), a Hessian
with a negative eigenvalue (not a minimum) or a non-finite/non-positive contrast variance or df
make the contrast *not estimable* with the reason. A variance component estimated at exactly
zero (a singular fit) is accepted only after the boundary is verified — every start and both
optimisers agree and the criterion rises when the component leaves zero — and is then reported
with status ``"boundary"`` (the Satterthwaite df then come from the remaining components, as in
lmerTest).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["PeriodLMM", "fit_period_lmm", "EIGEN_TOL"]

#: lmerTest's tolerance for zero / negative Hessian eigenvalues (``as_lmerModLT(tol = 1e-8)``).
EIGEN_TOL = 1e-8
# lme4 checks a theta below this for a better fit on the boundary (lmerControl(boundary.tol)).
_BOUNDARY_TOL = 1e-4
_COMPONENTS = ("subject", "subject:period")


@dataclass
class PeriodLMM:
    """A fitted period mixed model (or the reason it could not be fitted).

    Attributes
    ----------
    periods
        Period levels present in the data (the first is the reference level of ``beta``).
    status
        ``"ok"``, ``"boundary"`` (a variance component verified at zero) or ``"not estimable"``.
    reason
        Why (for ``boundary`` / ``not estimable``); empty for ``ok``.
    beta, cov_beta
        Fixed effects (intercept, then period effects vs the reference) and their covariance.
    theta, sigma
        Relative SDs of the subject and subject:period effects, and the residual SD.
    reml_criterion
        lme4's REML criterion (``-2`` × restricted log-likelihood) at the optimum.
    n_obs, n_subjects
        Observations and subjects used.
    """

    periods: list[str]
    status: str
    reason: str = ""
    beta: Any = None
    cov_beta: Any = None
    theta: Any = None
    sigma: float = math.nan
    reml_criterion: float = math.nan
    n_obs: int = 0
    n_subjects: int = 0
    _parts: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def variances(self) -> dict[str, float]:
        """Variance components on the data scale: subject, subject:period, residual."""
        if self.theta is None:
            return {}
        s2 = self.sigma ** 2
        return {"subject": float(self.theta[0] ** 2 * s2),
                "subject:period": float(self.theta[1] ** 2 * s2), "residual": float(s2)}

    def contrast(self, first: str, second: str, *, level: float = 0.95,
                 ddf: str = "satterthwaite") -> dict[str, Any]:
        """Estimate ``second − first`` with SE, df, t, two-sided p and CI.

        Parameters
        ----------
        first, second
            Periods compared.
        level
            Confidence level of the CI.
        ddf
            ``"satterthwaite"`` (lmerTest's default) or ``"kenward-roger"`` (lmerTest's
            ``ddf = "Kenward-Roger"``: pbkrtest's adjusted covariance ``vcovAdj`` for the SE and
            ``Lb_ddf`` for the df).

        Returns
        -------
        dict
            ``estimate, se, df, t, p, ci_low, ci_high, status, reason``; the numbers are NaN
            and ``status`` is ``"not estimable"`` when the fit or the contrast is degenerate.
        """
        import numpy as np
        from scipy import stats

        nan = {"estimate": math.nan, "se": math.nan, "df": math.nan, "t": math.nan,
               "p": math.nan, "ci_low": math.nan, "ci_high": math.nan}
        if self.status == "not estimable":
            return {**nan, "status": self.status, "reason": self.reason}
        if first not in self.periods or second not in self.periods:
            missing = [p for p in (first, second) if p not in self.periods]
            return {**nan, "status": "not estimable",
                    "reason": f"no data in period(s) {', '.join(missing)}"}
        L = self._coef(second) - self._coef(first)
        est = float(L @ self.beta)
        C = self._parts["C"]  # on the standardised scale (df are scale free)
        var = float(L @ C @ L)
        if ddf == "kenward-roger":
            return self._kenward_roger(L, est, var, level, nan)
        if ddf != "satterthwaite":
            raise ValueError(f"ddf {ddf!r}: satterthwaite or kenward-roger")
        w = self._parts["VinvX"] @ (C @ L)  # V⁻¹ X C L
        g_phi = np.array([w @ A @ w for A in self._parts["A"]])  # ∂var/∂(s1, s2, s0)
        g = self._parts["J"].T @ g_phi
        denom = float(g @ self._parts["vcov_varpar"] @ g)
        if not (np.isfinite(var) and var > 0):
            return {**nan, "estimate": est, "status": "not estimable",
                    "reason": "contrast variance not positive"}
        df = 2.0 * var ** 2 / denom if denom > 0 else math.nan
        if not (np.isfinite(df) and df > 0):
            return {**nan, "estimate": est, "status": "not estimable",
                    "reason": "Satterthwaite df undefined (no information on the variance parameters)"}
        se = math.sqrt(var) * self._parts["scale"]
        t = est / se
        half = float(stats.t.ppf(0.5 + level / 2.0, df)) * se
        return {"estimate": est, "se": se, "df": float(df), "t": t,
                "p": float(2.0 * stats.t.sf(abs(t), df)), "ci_low": est - half,
                "ci_high": est + half, "status": self.status, "reason": self.reason}

    def _kenward_roger(self, L: np.ndarray, est: float, var: float, level: float,
                       nan: dict[str, float]) -> dict[str, Any]:
        """pbkrtest's ``vcovAdj`` + ``Lb_ddf`` for one contrast (dense, standardised scale)."""
        import numpy as np
        from scipy import stats

        parts = self._parts
        Phi, X, G = parts["C"], parts["X"], parts["A"]  # G: Z_k Z_k' and I (residual)
        s = parts["phi"]
        V = sum(sk * Gk for sk, Gk in zip(s, G))
        Vi = np.linalg.inv(V)
        TT = Vi @ X
        HH = [Gk @ Vi for Gk in G]
        OO = [H @ X for H in HH]
        k = len(G)
        PP = [-(O.T @ TT) for O in OO]
        PP = [(P + P.T) / 2.0 for P in PP]
        QQ = {(r, t): OO[r].T @ Vi @ OO[t] for r in range(k) for t in range(r, k)}
        IE2 = np.empty((k, k))
        for i in range(k):
            for j in range(i, k):
                IE2[i, j] = IE2[j, i] = (np.sum(HH[i].T * HH[j]) - 2.0 * np.sum(Phi * QQ[(i, j)])
                                         + np.sum((Phi @ PP[i]) * (PP[j] @ Phi)))
        cond = float(np.min(np.abs(np.linalg.eigvalsh(IE2))))
        W = 2.0 * (np.linalg.inv(IE2) if cond > 1e-10 else np.linalg.pinv(IE2))
        UU = np.zeros_like(Phi)
        for i in range(k - 1):
            for j in range(i + 1, k):
                UU += W[i, j] * (QQ[(i, j)] - PP[i] @ Phi @ PP[j])
        UU = UU + UU.T
        for i in range(k):
            UU += W[i, i] * (QQ[(i, i)] - PP[i] @ Phi @ PP[i])
        PhiA = Phi + 2.0 * Phi @ UU @ Phi
        var_adj = float(L @ PhiA @ L)
        Theta = np.outer(L, L) / var
        A1 = A2 = 0.0
        for i in range(k):
            ui = Theta @ Phi @ PP[i] @ Phi
            for j in range(i, k):
                e = 1.0 if i == j else 2.0
                uj = Theta @ Phi @ PP[j] @ Phi
                A1 += e * W[i, j] * np.trace(ui) * np.trace(uj)
                A2 += e * W[i, j] * np.sum(ui * uj.T)
        q = 1.0
        B = (A1 + 6.0 * A2) / (2.0 * q)
        g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
        den = 3 * q + 2 * (1 - g)
        c1, c2, c3 = g / den, (q - g) / den, (q + 2 - g) / den
        v0, v1, v2 = 1 + c1 * B, 1 - c2 * B, 1 - c3 * B
        v0 = 0.0 if abs(v0) < 1e-10 else v0
        ratio = 1.0 if abs(1 - A2 / q) < 1e-14 and abs(v1) < 1e-14 else (1 - A2 / q) / v1
        rho = 1 / q * ratio ** 2 * v0 / v2
        df = 4 + (q + 2) / (q * rho - 1)
        if not (np.isfinite(df) and df > 0 and var_adj > 0):
            return {**nan, "estimate": est, "status": "not estimable",
                    "reason": "Kenward-Roger df undefined"}
        se = math.sqrt(var_adj) * parts["scale"]
        t = est / se
        half = float(stats.t.ppf(0.5 + level / 2.0, df)) * se
        return {"estimate": est, "se": se, "df": float(df), "t": t,
                "p": float(2.0 * stats.t.sf(abs(t), df)), "ci_low": est - half,
                "ci_high": est + half, "status": self.status, "reason": self.reason}

    def _coef(self, period: str) -> np.ndarray:
        import numpy as np

        v = np.zeros(len(self.periods))
        v[0] = 1.0
        k = self.periods.index(period)
        if k:
            v[k] = 1.0
        return v


def _design(y: np.ndarray, subject: np.ndarray, period: np.ndarray, periods: list[str]
            ) -> tuple[np.ndarray, list[np.ndarray]]:
    import numpy as np

    n = y.size
    X = np.zeros((n, len(periods)))
    X[:, 0] = 1.0
    for k, p in enumerate(periods[1:], start=1):
        X[:, k] = period == p
    A = []
    for key in (subject, np.char.add(np.char.add(subject.astype(str), "\x1f"), period.astype(str))):
        _, inv = np.unique(key, return_inverse=True)
        A.append((inv[:, None] == inv[None, :]).astype(float))  # Z Z'
    return X, A


class _Criterion:
    """Profiled REML criterion of ``theta`` and its gradient (dense, Cholesky based)."""

    def __init__(self, y: np.ndarray, X: np.ndarray, A: list[np.ndarray]) -> None:
        import numpy as np

        self.y, self.X, self.A = y, X, A
        self.n, self.p = X.shape
        self.eye = np.eye(self.n)

    def parts(self, theta: np.ndarray) -> dict[str, Any] | None:
        import numpy as np
        from scipy.linalg.lapack import dpotrf, dpotrs

        # LAPACK's potrf/potrs directly: the very routines cho_factor/cho_solve call (same
        # numbers), without their per-call checks and batching wrapper (most of the optimiser's
        # time at n ~ 100).
        Vt = self.eye + theta[0] ** 2 * self.A[0] + theta[1] ** 2 * self.A[1]
        L, info = dpotrf(Vt, lower=1, clean=0)
        if info != 0:
            return None
        Vi_X, info_x = dpotrs(L, self.X, lower=1)
        Vi_y, info_y = dpotrs(L, self.y, lower=1)
        XtViX = self.X.T @ Vi_X
        Lx, info_c = dpotrf(XtViX, lower=1, clean=0)
        if info_x or info_y or info_c:
            return None
        beta, _ = dpotrs(Lx, self.X.T @ Vi_y, lower=1)
        Py = Vi_y - Vi_X @ beta  # P_theta y
        q = float(self.y @ Py)  # r' V_theta⁻¹ r
        logdet_v = 2.0 * float(np.sum(np.log(np.diag(L))))
        logdet_x = 2.0 * float(np.sum(np.log(np.diag(Lx))))
        return {"cf": L, "Vi_X": Vi_X, "XtViX_inv": dpotrs(Lx, np.eye(self.p), lower=1)[0],
                "beta": beta, "Py": Py, "q": q, "logdet_v": logdet_v, "logdet_x": logdet_x}

    def value(self, theta: np.ndarray) -> float:
        theta = [abs(t) for t in theta]
        pr = self.parts(theta)  # type: ignore[arg-type]
        if pr is None or not pr["q"] > 0:
            return math.inf
        dof = self.n - self.p
        return (pr["logdet_v"] + pr["logdet_x"] + dof * (1.0 + math.log(2.0 * math.pi * pr["q"] / dof)))

    def slopes(self, theta: np.ndarray) -> np.ndarray:
        """Derivatives of the criterion in ``theta_k²`` (finite at ``theta_k = 0``, unlike in theta)."""
        import numpy as np
        from scipy.linalg.lapack import dpotrs

        pr = self.parts(theta)
        if pr is None or not pr["q"] > 0:
            return np.full(2, np.nan)
        P = dpotrs(pr["cf"], self.eye, lower=1)[0] - pr["Vi_X"] @ pr["XtViX_inv"] @ pr["Vi_X"].T
        dof = self.n - self.p
        return np.array([float(np.sum(P * A)) - dof * float(pr["Py"] @ A @ pr["Py"]) / pr["q"]
                         for A in self.A])

    def gradient(self, theta: np.ndarray) -> np.ndarray:
        import numpy as np

        return 2.0 * np.asarray(theta, dtype=float) * self.slopes(theta)


def _optimise(crit: _Criterion) -> tuple[np.ndarray, float, list[str]]:
    """Best theta over a grid of starts, L-BFGS-B then Nelder–Mead; boundaries checked.

    The criterion is even in each theta, so the optimisers run unconstrained and |theta| is
    kept: a bound at 0 would trap L-BFGS-B there (the theta-gradient vanishes at 0 even where
    the criterion falls as the variance grows).
    """
    import numpy as np
    from scipy.optimize import minimize

    problems: list[str] = []
    grid = [0.0, 0.05, 0.3, 1.0, 3.0]
    starts = sorted(((crit.value(np.array([a, b])), a, b) for a in grid for b in grid))
    lbfgs = {"ftol": 1e-15, "gtol": 1e-10, "maxiter": 2000}
    candidates: list[tuple[float, np.ndarray]] = []
    for _, a, b in starts[:2]:
        x0 = np.array([max(a, 0.1), max(b, 0.1)])
        res = minimize(crit.value, x0, jac=crit.gradient, method="L-BFGS-B",
                       options=lbfgs)
        if np.isfinite(res.fun):
            candidates.append((float(res.fun), np.abs(np.asarray(res.x, dtype=float))))
    if not candidates:
        return np.full(2, np.nan), math.inf, ["REML criterion not finite at any start"]
    fun, theta = min(candidates, key=lambda c: c[0])
    agree = len(candidates) == 2 and abs(candidates[0][0] - candidates[1][0]) < 1e-7
    if not agree or not _converged(crit, theta):
        # refit with a second, derivative-free optimiser (on |theta|) from the best point
        nm = minimize(crit.value, np.maximum(theta, 0.05), method="Nelder-Mead",
                      options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 4000})
        if np.isfinite(nm.fun) and nm.fun < fun - 1e-9:
            fun, theta = float(nm.fun), np.abs(np.asarray(nm.x, dtype=float))
            res = minimize(crit.value, theta, jac=crit.gradient, method="L-BFGS-B",
                           options=lbfgs)
            if np.isfinite(res.fun) and res.fun <= fun:
                fun, theta = float(res.fun), np.abs(np.asarray(res.x, dtype=float))
    # theta_k = 0 is a stationary point in theta even when the criterion falls as the variance
    # grows (the gradient carries a factor theta_k): leave such a saddle from inside.
    for _ in range(3):
        slopes = crit.slopes(theta)
        leave = (theta == 0) & (slopes < 0)
        if not leave.any():
            break
        x0 = np.where(leave, 0.5, np.maximum(theta, 0.05))
        res = minimize(crit.value, x0, jac=crit.gradient, method="L-BFGS-B",
                       options=lbfgs)
        if np.isfinite(res.fun) and res.fun < fun:
            fun, theta = float(res.fun), np.abs(np.asarray(res.x, dtype=float))
        else:
            break
    # lme4's boundary check: a theta near zero is tried at exactly zero.
    for k in range(2):
        if 0 < theta[k] < _BOUNDARY_TOL:
            trial = theta.copy()
            trial[k] = 0.0
            if crit.value(trial) <= fun + 1e-10:
                fun, theta = crit.value(trial), trial
    grad = crit.gradient(theta)
    if not np.all(np.isfinite(grad)):
        problems.append("gradient not finite at the optimum")
    elif not _converged(crit, theta, grad):
        problems.append(f"optimiser did not converge (gradient {np.max(np.abs(grad[theta > 0])):.2g})")
    return theta, fun, problems


def _converged(crit: _Criterion, theta: np.ndarray, grad: np.ndarray | None = None) -> bool:
    """Projected gradient small: free components flat, a zero component may only push outwards."""
    import numpy as np

    grad = crit.gradient(theta) if grad is None else grad
    free = theta > 0
    return bool(np.all(np.isfinite(grad)) and np.all(np.abs(grad[free]) <= 1e-3))


def fit_period_lmm(y: np.ndarray, subject: Sequence[str] | np.ndarray,
                   period: Sequence[str] | np.ndarray, periods: Sequence[str], *,
                   min_subjects: int = 3) -> PeriodLMM:
    """REML fit of ``y ~ period + (1|subject) + (1|subject:period)`` on visit-level data.

    Parameters
    ----------
    y
        One value per visit (NaN rows are dropped).
    subject, period
        Labels per visit.
    periods
        Period order; the first period with data is the reference level.
    min_subjects
        Fewer subjects → not estimable.

    Returns
    -------
    PeriodLMM
        See the module docstring for how degenerate fits are reported.
    """
    import numpy as np

    y = np.asarray(y, dtype=float)
    subject = np.asarray(subject).astype(str)
    period = np.asarray(period).astype(str)
    ok = np.isfinite(y)
    y, subject, period = y[ok], subject[ok], period[ok]
    present = [p for p in periods if np.any(period == p)]
    n_subj = int(np.unique(subject).size)
    fit = PeriodLMM(periods=present, status="not estimable", n_obs=int(y.size), n_subjects=n_subj)
    if n_subj < min_subjects or len(present) < 2:
        fit.reason = f"too few subjects or periods ({n_subj} subject(s), {len(present)} period(s))"
        return fit
    if np.ptp(y) == 0:
        fit.reason = "no variation"
        return fit
    X, A = _design(y, subject, period, present)
    n_cells = int(np.unique(np.char.add(subject, period)).size)
    if y.size - len(present) <= 0 or n_cells >= y.size:
        fit.reason = ("one visit per subject and period: the subject:period variance is not "
                      "separable from the residual")
        return fit
    # centre and scale for the optimiser; every reported quantity is rescaled back.
    shift, scale = float(np.mean(y)), float(np.std(y))
    ys = (y - shift) / scale
    crit = _Criterion(ys, X, A)
    theta, fun, problems = _optimise(crit)
    if problems or not np.isfinite(fun):
        fit.reason = "; ".join(problems) or "REML criterion not finite"
        return fit
    pr = crit.parts(theta)
    assert pr is not None
    n, p = X.shape
    sigma2 = pr["q"] / (n - p)  # REML residual variance on the scaled data
    beta = pr["beta"] * scale
    beta[0] += shift
    sigma = math.sqrt(sigma2) * scale
    # Hessian and Jacobians on the standardised data (theta is scale free, sigma scales): the
    # Satterthwaite df is invariant, and the dense algebra keeps its precision at any data scale.
    sg = math.sqrt(sigma2)
    s = np.array([theta[0] ** 2, theta[1] ** 2, 1.0]) * sigma2  # (s1, s2, s0)
    V = s[0] * A[0] + s[1] * A[1] + s[2] * np.eye(n)
    Vi = np.linalg.inv(V)
    ViX = Vi @ X
    C = np.linalg.inv(X.T @ ViX)
    C = (C + C.T) / 2.0
    P = Vi - ViX @ C @ ViX.T
    Py = P @ ys
    mats = [A[0], A[1], np.eye(n)]
    PV = [P @ M for M in mats]
    grad_phi = np.array([np.trace(PV[i]) - Py @ mats[i] @ Py for i in range(3)])
    H_phi = np.array([[-np.sum(PV[i] * PV[j].T) + 2.0 * Py @ mats[i] @ P @ mats[j] @ Py
                       for j in range(3)] for i in range(3)])
    t1, t2 = float(theta[0]), float(theta[1])
    # phi = (s1, s2, s0) = (sg² t1², sg² t2², sg²) as a function of varpar = (t1, t2, sg)
    J = np.array([[2 * sg ** 2 * t1, 0.0, 2 * sg * t1 ** 2],
                  [0.0, 2 * sg ** 2 * t2, 2 * sg * t2 ** 2],
                  [0.0, 0.0, 2 * sg]])
    second = [np.array([[2 * sg ** 2, 0, 4 * sg * t1], [0, 0, 0], [4 * sg * t1, 0, 2 * t1 ** 2]]),
              np.array([[0, 0, 0], [0, 2 * sg ** 2, 4 * sg * t2], [0, 4 * sg * t2, 2 * t2 ** 2]]),
              np.array([[0, 0, 0], [0, 0, 0], [0, 0, 2.0]])]
    H = J.T @ H_phi @ J + sum(grad_phi[k] * second[k] for k in range(3))
    H = (H + H.T) / 2.0
    evals, evecs = np.linalg.eigh(H)
    if not np.all(np.isfinite(evals)):
        fit.reason = "Hessian of the REML deviance not finite"
        return fit
    if np.any(evals < -EIGEN_TOL):
        fit.reason = (f"not a minimum: Hessian of the REML deviance has negative eigenvalue(s) "
                      f"{', '.join(f'{e:.2g}' for e in evals[evals < -EIGEN_TOL])}")
        return fit
    pos = evals > EIGEN_TOL
    h_inv = (evecs[:, pos] / evals[pos]) @ evecs[:, pos].T
    boundary = [name for name, t in zip(_COMPONENTS, theta) if t == 0.0]
    if boundary:
        # verified boundary: the criterion must rise as the component leaves zero (∂/∂s_k > 0)
        bad = [name for k, name in enumerate(_COMPONENTS) if theta[k] == 0.0 and grad_phi[k] <= 0]
        if bad:
            fit.reason = f"boundary optimum not verified for {', '.join(bad)} variance"
            return fit
    fit.status = "boundary" if boundary else "ok"
    fit.reason = (f"singular fit: {' and '.join(boundary)} variance estimated as 0 (verified "
                  "boundary optimum)") if boundary else ""
    fit.beta, fit.cov_beta, fit.theta, fit.sigma = beta, C * scale ** 2, np.asarray(theta, dtype=float), sigma
    fit.reml_criterion = float(fun + 2 * (n - p) * math.log(scale))
    fit._parts = {"VinvX": ViX, "C": C, "A": mats, "J": J, "vcov_varpar": 2.0 * h_inv,
                  "hessian": H, "scale": scale, "X": X, "phi": s}
    return fit
