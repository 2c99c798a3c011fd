"""Standard curves for bead immunoassays: weighted 4PL/5PL fits, predictions and inverses.

Contract: ``fit_curve(x, y, ...) -> CurveFit``; the curve is the xPONENT form
``y = A + (B - A) / (1 + (x / C) ** D) ** F`` (4PL: ``F = 1``) with ``x`` the concentration and
``y`` the (net) MFI. A fit that fails is returned with ``converged=False`` and a message, never
raised. The documented equivalents (drc ``LL.4``/``LL.5``, nCal ``5PL``, Bio-Plex Manager's
printed equation) are converters onto the same :class:`CurveFit`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "CurveFit", "fit_curve", "curve_from_params", "weights_for",
    "from_drc", "to_drc", "from_ncal", "to_ncal", "from_bioplex", "to_bioplex",
    "MODELS", "WEIGHTS",
]

MODELS = ("5pl", "4pl")
WEIGHTS = ("1/y2", "1/y", "power", "none")

# F (the 5PL asymmetry) is bounded: outside this range the curve is a step or a line and the
# fit has stopped describing the standards (real fits: xPONENT 0.19-2.4, Bio-Plex 0.1-10).
_LOG_F_BOUNDS = (math.log(0.02), math.log(50.0))
# evaluations each multi-start candidate gets before the best one is polished to convergence
_COARSE_NFEV = 120


@dataclass(frozen=True)
class CurveFit:
    """A fitted (or given) 4PL/5PL standard curve ``y = A + (B-A)/(1+(x/C)^D)^F``.

    ``A`` is the response at zero concentration when ``D < 0`` (the xPONENT convention for
    rising curves), ``B`` the response at infinite concentration. Use :meth:`predict` for
    ``y(x)`` and :meth:`inverse` for ``x(y)``.

    Attributes
    ----------
    A, B, C, D, F
        The curve parameters (``F == 1`` for the 4PL).
    model
        ``"5pl"`` or ``"4pl"``.
    weights
        The weighting of the fit (``"1/y2"``, ``"1/y"``, ``"power"``, ``"none"``, or ``"given"``
        for a curve built from printed parameters).
    power
        The exponent of the ``"power"`` weighting.
    converged
        False when no start gave a usable optimum; the parameters are then the best attempt
        (possibly NaN) and must not be used for quantification.
    message
        Why the fit failed, or the optimiser's note.
    r2_weighted
        Weighted R² with the fit's weights and the weighted mean of y (xPONENT's printed R²).
    cost
        The weighted residual sum of squares ``sum(w * (y - yhat) ** 2)``.
    n_points
        Points used in the fit.
    x_min, x_max
        The smallest positive and the largest standard concentration of the fit.
    """

    A: float
    B: float
    C: float
    D: float
    F: float = 1.0
    model: str = "5pl"
    weights: str = "given"
    power: float = 1.8
    converged: bool = True
    message: str = ""
    r2_weighted: float = float("nan")
    cost: float = float("nan")
    n_points: int = 0
    x_min: float = float("nan")
    x_max: float = float("nan")

    # ------------------------------------------------------------------ evaluation
    @property
    def params(self) -> dict[str, float]:
        """The parameters as a dict ``{"A", "B", "C", "D", "F"}``."""
        return {"A": self.A, "B": self.B, "C": self.C, "D": self.D, "F": self.F}

    @property
    def increasing(self) -> bool:
        """True when the response rises with concentration."""
        return _increasing(self.A, self.B, self.D)

    def predict(self, x: ArrayLike) -> NDArray[np.float64]:
        """Response at concentration(s) ``x`` (``x = 0`` gives the zero-concentration asymptote;
        negative or NaN ``x`` gives NaN)."""
        return _predict(np.asarray(x, dtype=float), self.A, self.B, math.log(self.C)
                        if self.C > 0 else math.nan, self.D, self.F)

    def side(self, y: ArrayLike) -> NDArray[np.int8]:
        """Where each response lies: ``-1`` beyond the zero-concentration asymptote (the
        concentration is below anything the curve can give), ``+1`` beyond the
        infinite-concentration asymptote, ``0`` invertible (or NaN input)."""
        y = np.asarray(y, dtype=float)
        lo_conc, hi_conc = self._asymptotes()
        out = np.zeros(y.shape, dtype=np.int8)
        with np.errstate(invalid="ignore"):
            if hi_conc > lo_conc:  # rising: low signal -> low concentration
                out[y <= lo_conc] = -1
                out[y >= hi_conc] = 1
            else:
                out[y >= lo_conc] = -1
                out[y <= hi_conc] = 1
        return out

    def inverse(self, y: ArrayLike, *, below: float = math.nan,
                above: float = math.nan) -> NDArray[np.float64]:
        """Concentration giving response(s) ``y``.

        Parameters
        ----------
        y
            Responses (net MFI).
        below, above
            Returned where ``y`` lies outside the open interval between the asymptotes, on the
            zero-concentration side (``below``) or the infinite-concentration side (``above``).
            NaN by default; nCal's convention is ``below=0, above=inf``. See :meth:`side`.

        Returns
        -------
        ndarray
            Concentrations (float64), the shape of ``y``.
        """
        y = np.asarray(y, dtype=float)
        A, B, C, D, F = self.A, self.B, self.C, self.D, self.F
        side = self.side(y)
        with np.errstate(all="ignore"):
            # u - 1 = (B - y) / (y - A); log1p/expm1 keep precision near both asymptotes
            log_u = np.log1p((B - y) / (y - A))
            t = np.expm1(log_u / F)  # (x / C) ** D
            x = C * np.exp(np.log(t) / D)
        x = np.where(side == 0, x, np.nan)
        x = np.where(side == -1, below, x)
        x = np.where(side == 1, above, x)
        if D == 0 or not np.isfinite([A, B, C, D, F]).all():
            x = np.full(y.shape, np.nan)
        return x

    def _asymptotes(self) -> tuple[float, float]:
        """(response at zero concentration, response at infinite concentration)."""
        return (self.A, self.B) if self.D < 0 else (self.B, self.A)

    def to_dict(self) -> dict[str, Any]:
        """A flat, JSON-serialisable description of the curve."""
        return {
            "model": self.model, "weights": self.weights,
            "power": self.power if self.weights == "power" else None,
            **self.params, "r2_weighted": self.r2_weighted, "cost": self.cost,
            "n_points": self.n_points, "x_min": self.x_min, "x_max": self.x_max,
            "converged": self.converged, "message": self.message,
        }


# ---------------------------------------------------------------------------- model algebra
def _increasing(A: float, B: float, D: float) -> bool:
    return (B > A) if D < 0 else (A > B)


def _predict(x: NDArray[np.float64], A: float, B: float, logC: float, D: float,
             F: float) -> NDArray[np.float64]:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        z = D * (np.log(np.where(x < 0, np.nan, x)) - logC)
        g = np.exp(-F * np.logaddexp(0.0, z))  # (1 + (x/C)^D)^-F without overflow
    return A + (B - A) * g


def _model_and_jacobian(theta: NDArray[np.float64], logx: NDArray[np.float64], five: bool
                        ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Curve values and d/d(A, B, logC, D[, logF]) at the fit parameterisation."""
    A, B, logC, D = theta[:4]
    F = math.exp(theta[4]) if five else 1.0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        dlx = logx - logC
        z = D * dlx
        L = np.logaddexp(0.0, z)
        g = np.exp(-F * L)
        s = 0.5 * (1.0 + np.tanh(0.5 * z))  # expit(z), overflow-free
        dg_dlogC = F * D * g * s
        dg_dD = -F * g * s * dlx
        jac = [1.0 - g, g, (B - A) * dg_dlogC, (B - A) * dg_dD]
        if five:
            jac.append((B - A) * (-F * L * g))
    J = np.column_stack([np.broadcast_to(j, logx.shape) for j in jac])
    # x = 0: the limits of these derivatives are 0 (g is 0 or 1 there, exponentially flat)
    J = np.nan_to_num(J, nan=0.0, posinf=0.0, neginf=0.0)
    return A + (B - A) * g, J


def weights_for(y: ArrayLike, scheme: str, power: float = 1.8) -> NDArray[np.float64]:
    """Least-squares weights for observed responses ``y``.

    ``"1/y2"``: ``1/y²`` (xPONENT); ``"1/y"``: ``1/|y|``; ``"power"``: ``1/|y|^power``
    (Bio-Plex Manager's power-law variance, ``power=1.8``); ``"none"``: 1. A zero response gets
    weight 1 (as xPONENT does).
    """
    y = np.abs(np.asarray(y, dtype=float))
    if scheme == "none":
        return np.ones_like(y)
    exponent = {"1/y2": 2.0, "1/y": 1.0, "power": float(power)}.get(scheme)
    if exponent is None:
        raise ValueError(f"unknown weighting {scheme!r}; choose one of {', '.join(WEIGHTS)}")
    with np.errstate(divide="ignore"):
        w = np.where(y == 0, 1.0, 1.0 / y ** exponent)
    return w


# ---------------------------------------------------------------------------- fitting
def fit_curve(x: ArrayLike, y: ArrayLike, *, model: str = "5pl", weights: str = "1/y2",
              power: float = 1.8, replicate_means: bool = False,
              search: str = "local") -> CurveFit:
    """Fit a 4PL/5PL standard curve by weighted least squares.

    Parameters
    ----------
    x
        Standard concentrations (``x >= 0``; ``x = 0`` points pin the zero-concentration
        asymptote). NaN pairs are dropped.
    y
        Responses (net MFI), one per well; negative values are kept (as xPONENT does).
    model
        ``"5pl"`` (xPONENT "Logistic 5P") or ``"4pl"``.
    weights
        ``"1/y2"`` (xPONENT), ``"1/y"``, ``"power"`` (``1/y^power``, Bio-Plex Manager) or
        ``"none"`` (ordinary least squares, as drc). Weights use the observed responses.
    power
        Exponent of the power-law variance weighting.
    replicate_means
        Fit the mean response of each distinct concentration instead of every well.
    search
        ``"local"`` (default): the classic start (asymptotes just beyond the data, ``C`` at the
        mid-response, ``D = -1``, ``F = 1``) polished locally, which lands on xPONENT's own
        optimum; the multi-start search runs only when that fails (no finite optimum, ``F``
        at its bound, ``R² <= 0``). ``"global"``: always run every start and keep the lowest
        weighted cost (can beat the vendor's optimum, e.g. drLumi IFNg, at the price of
        disagreeing with its numbers).

    Returns
    -------
    CurveFit
        ``converged=False`` with a message when the data cannot support a fit (too few
        points, no dynamic range) or no start reached a finite optimum.

    Notes
    -----
    Parameters are optimised as ``(A, B, log C, D, log F)`` with ``scipy.optimize.least_squares``
    (Levenberg-Marquardt, analytic Jacobian; ``F`` kept in [0.02, 50] by a logistic transform
    of ``log F``). The multi-start search adds the best nodes of a profile
    grid over ``(log C, D, F)`` with ``A, B`` solved linearly at each node (the global
    fallback) and, for the 5PL, the 4PL optimum at several ``F``; the lowest weighted cost
    wins. 4PL fits are reported with ``D < 0`` (``A`` = zero-concentration response), the
    xPONENT convention.
    """
    if search not in ("local", "global"):
        raise ValueError(f"unknown search {search!r}; choose 'local' or 'global'")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    if weights not in WEIGHTS:
        raise ValueError(f"unknown weighting {weights!r}; choose one of {', '.join(WEIGHTS)}")
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length ({x.size} vs {y.size})")
    keep = np.isfinite(x) & np.isfinite(y) & (x >= 0)
    x, y = x[keep], y[keep]
    if replicate_means and x.size:
        levels, inv = np.unique(x, return_inverse=True)
        y = np.bincount(inv, weights=y) / np.bincount(inv)
        x = levels
    n_params = 5 if model == "5pl" else 4
    positive = x[x > 0]
    base = dict(model=model, weights=weights, power=float(power), n_points=int(x.size),
                x_min=float(positive.min()) if positive.size else math.nan,
                x_max=float(positive.max()) if positive.size else math.nan)
    nan = math.nan

    def failed(message: str) -> CurveFit:
        return CurveFit(nan, nan, nan, nan, nan if model == "5pl" else 1.0, converged=False,
                        message=message, **base)

    if np.unique(positive).size < n_params - 1 or x.size < n_params:
        return failed(f"too few standards for a {model.upper()} fit "
                      f"({x.size} points, {np.unique(positive).size} positive levels)")
    if np.ptp(y) <= 0:
        return failed("standards have no dynamic range (all responses equal)")

    w = weights_for(y, weights, power)
    sw = np.sqrt(w)
    with np.errstate(divide="ignore"):
        logx = np.log(x)
    five = model == "5pl"
    starts = _starts(logx, y, w, five)
    # the classic start alone first: it lands where the vendor software lands
    best = _polish(starts[-1], logx, y, sw, five)
    fallback = best is None or not _sane(best, five) or _r2_at(best[1], logx, y, w, five) <= 0
    if search == "global" or fallback:
        # every start gets a short budget; only the most promising is polished to the end
        coarse: tuple[float, NDArray[np.float64], str] | None = None
        for theta0 in starts[:-1]:
            coarse = _better(coarse, _polish(theta0, logx, y, sw, five, max_nfev=_COARSE_NFEV))
        if five:
            # the 4PL optimum seeds the 5PL at several asymmetries
            four = _best_fit4(logx, y, w, sw)
            if four is not None:
                for logF in (0.0, math.log(0.5), math.log(2.0), math.log(0.25), math.log(4.0)):
                    coarse = _better(coarse, _polish(np.append(four, logF), logx, y, sw, True,
                                                     max_nfev=_COARSE_NFEV))
        if coarse is not None:
            best = _better(best, _polish(coarse[1], logx, y, sw, five))
    if best is None:
        return failed("no start reached a finite optimum")
    cost, theta, msg = best
    A, B, logC, D = (float(v) for v in theta[:4])
    F = math.exp(theta[4]) if five else 1.0
    if not five and D > 0:  # 4PL: the same curve with A at zero concentration
        A, B, D = B, A, -D
    yhat = _predict(x, A, B, logC, D, F)
    r2 = _weighted_r2(y, yhat, w)
    converged = bool(np.isfinite([A, B, logC, D, F, cost]).all())
    if converged and five and _at_f_bound(float(theta[4])):
        msg = f"{msg}; F at its bound ({F:.3g})".strip("; ")
    return CurveFit(A, B, math.exp(logC), D, F, converged=converged,
                    message=msg if converged else "non-finite optimum", r2_weighted=r2,
                    cost=float(np.sum(w * (y - yhat) ** 2)), **base)


def _better(best: tuple[float, NDArray[np.float64], str] | None,
            new: tuple[float, NDArray[np.float64], str] | None
            ) -> tuple[float, NDArray[np.float64], str] | None:
    if new is None:
        return best
    if best is None or new[0] < best[0] * (1 - 1e-12):
        return new
    return best


def _sane(result: tuple[float, NDArray[np.float64], str], five: bool) -> bool:
    """A local optimum worth keeping without the multi-start search."""
    _, theta, _ = result
    if not np.isfinite(theta).all():
        return False
    return not (five and _at_f_bound(float(theta[4])))


def _r2_at(theta: NDArray[np.float64], logx: NDArray[np.float64], y: NDArray[np.float64],
           w: NDArray[np.float64], five: bool) -> float:
    yhat, _ = _model_and_jacobian(theta, logx, five)
    return _weighted_r2(y, yhat, w)


def _weighted_r2(y: NDArray[np.float64], yhat: NDArray[np.float64],
                 w: NDArray[np.float64]) -> float:
    ybar = float(np.sum(w * y) / np.sum(w))
    ss_tot = float(np.sum(w * (y - ybar) ** 2))
    return 1.0 - float(np.sum(w * (y - yhat) ** 2)) / ss_tot if ss_tot > 0 else math.nan


def _best_fit4(logx: NDArray[np.float64], y: NDArray[np.float64], w: NDArray[np.float64],
               sw: NDArray[np.float64]) -> NDArray[np.float64] | None:
    best = None
    for theta0 in _starts(logx, y, w, False):
        best = _better(best, _polish(theta0, logx, y, sw, False, max_nfev=_COARSE_NFEV))
    if best is None:
        return None
    final = _polish(best[1], logx, y, sw, False)
    return (final or best)[1]


def _linear_ab(g: NDArray[np.float64], y: NDArray[np.float64], w: NDArray[np.float64]
               ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """For curve shapes ``g`` (rows), the weighted LS ``A, B`` of ``y = A + (B-A) g`` and cost."""
    # y = A (1 - g) + B g : a 2-column weighted linear regression per row, solved in closed form
    u, v = 1.0 - g, g
    suu, svv, suv = (w * u * u).sum(1), (w * v * v).sum(1), (w * u * v).sum(1)
    suy, svy = (w * u * y).sum(1), (w * v * y).sum(1)
    det = suu * svv - suv * suv
    with np.errstate(divide="ignore", invalid="ignore"):
        A = (svv * suy - suv * svy) / det
        B = (suu * svy - suv * suy) / det
        resid = y - (A[:, None] * u + B[:, None] * v)
        cost = (w * resid * resid).sum(1)
    cost = np.where(np.isfinite(cost) & (np.abs(det) > 1e-12 * (suu * svv + 1e-300)), cost, np.inf)
    return A, B, cost


def _starts(logx: NDArray[np.float64], y: NDArray[np.float64], w: NDArray[np.float64],
            five: bool) -> list[NDArray[np.float64]]:
    """Starting points: the best nodes of a profile grid plus the classic data-driven start."""
    finite = np.isfinite(logx)
    lx = logx[finite]
    lo, hi = float(lx.min()), float(lx.max())
    span = max(hi - lo, 1.0)
    logCs = np.linspace(lo - 0.5 * span, hi + 1.5 * span, 25)
    Ds = -np.geomspace(0.25, 8.0, 12)
    Ds = np.concatenate([Ds, -Ds])
    logFs = np.log([0.2, 0.5, 1.0, 2.0, 4.0]) if five else np.array([0.0])
    grid = np.array(np.meshgrid(logCs, Ds, logFs, indexing="ij")).reshape(3, -1).T
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        z = grid[:, 1:2] * (logx[None, :] - grid[:, 0:1])
        g = np.exp(-np.exp(grid[:, 2:3]) * np.logaddexp(0.0, z))
    A, B, cost = _linear_ab(g, y[None, :], w[None, :])
    order = np.argsort(cost, kind="stable")
    starts: list[NDArray[np.float64]] = []
    for i in order[:4]:
        if not np.isfinite(cost[i]):
            break
        theta = [A[i], B[i], grid[i, 0], grid[i, 1]] + ([grid[i, 2]] if five else [])
        starts.append(np.array(theta, dtype=float))
    # classic start: asymptotes a little beyond the data, C at the mid-response, slope -1
    low_y = float(np.mean(y[logx <= np.min(logx) + 1e-12]))
    high_y = float(np.mean(y[logx >= np.max(logx) - 1e-12]))
    pad = 0.05 * float(np.ptp(y))
    A0 = low_y - pad if high_y >= low_y else low_y + pad
    B0 = high_y + pad if high_y >= low_y else high_y - pad
    mid = 0.5 * (low_y + high_y)
    near = np.argmin(np.abs(y[finite] - mid))
    starts.append(np.array([A0, B0, float(lx[near]), -1.0] + ([0.0] if five else []), float))
    return starts


def _polish(theta0: NDArray[np.float64], logx: NDArray[np.float64], y: NDArray[np.float64],
            sw: NDArray[np.float64], five: bool, *, max_nfev: int = 1000
            ) -> tuple[float, NDArray[np.float64], str] | None:
    """Local weighted least squares from ``theta0``; None if it never reached a finite cost.

    Levenberg-Marquardt (MINPACK) on ``(A, B, log C, D[, u])`` where ``log F`` is the bounded
    logistic transform of ``u``: the bound on ``F`` without a bounded solver (LM is ~2x faster
    here than the trust-region reflective method and lands on the same optima).
    """
    from scipy.optimize import least_squares

    lo, hi = _LOG_F_BOUNDS

    def unpack(t: NDArray[np.float64]) -> NDArray[np.float64]:
        if not five:
            return t
        theta = t.copy()
        theta[4] = lo + (hi - lo) * 0.5 * (1.0 + math.tanh(0.5 * t[4]))
        return theta

    def residuals(t: NDArray[np.float64]) -> NDArray[np.float64]:
        f, _ = _model_and_jacobian(unpack(t), logx, five)
        return sw * (f - y)

    def jacobian(t: NDArray[np.float64]) -> NDArray[np.float64]:
        _, J = _model_and_jacobian(unpack(t), logx, five)
        J = sw[:, None] * J
        if five:
            s = 0.5 * (1.0 + math.tanh(0.5 * t[4]))
            J[:, 4] *= (hi - lo) * s * (1.0 - s)
        return J

    t0 = np.array(theta0, dtype=float)
    if five:
        p = min(max((t0[4] - lo) / (hi - lo), 1e-9), 1 - 1e-9)
        t0[4] = math.log(p / (1 - p))
    if not np.isfinite(residuals(t0)).all():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            res = least_squares(residuals, t0, jac=jacobian, method="lm", x_scale="jac",
                                xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=max_nfev)
        except (ValueError, OverflowError, np.linalg.LinAlgError):  # wild start
            return None
    cost = float(np.sum(res.fun ** 2))
    theta = unpack(res.x)
    if not np.isfinite(cost) or not np.isfinite(theta).all():
        return None
    # status 0 = evaluation budget spent on a flat (non-identifiable) valley: the cost is final
    note = "" if res.status > 0 else "optimum is flat (parameters poorly identified)"
    return cost, theta, note


def _at_f_bound(log_f: float) -> bool:
    return log_f <= _LOG_F_BOUNDS[0] + 1e-3 or log_f >= _LOG_F_BOUNDS[1] - 1e-3


# ---------------------------------------------------------------------------- converters
def curve_from_params(A: float, B: float, C: float, D: float, F: float = 1.0, *,
                      model: str | None = None, **fields: Any) -> CurveFit:
    """A :class:`CurveFit` from given xPONENT-form parameters (e.g. a vendor's printed curve)."""
    if model is None:
        model = "4pl" if F == 1.0 else "5pl"
    return CurveFit(float(A), float(B), float(C), float(D), float(F), model=model, **fields)


def from_drc(b: float, c: float, d: float, e: float, f: float = 1.0) -> CurveFit:
    """drc ``LL.4``/``LL.5``: ``f(x) = c + (d-c)/(1+exp(b(log x - log e)))^f``.

    Maps to ``A=c, B=d, C=e, D=b, F=f``.
    """
    return curve_from_params(c, d, e, b, f)


def to_drc(curve: CurveFit) -> dict[str, float]:
    """drc ``LL.4``/``LL.5`` parameters ``b, c, d, e, f`` of a curve.

    For a 4PL the representation drc prints is returned (``c`` the lower asymptote, so a
    decreasing curve has ``b > 0``); a 5PL maps one to one.
    """
    A, B, C, D, F = curve.A, curve.B, curve.C, curve.D, curve.F
    if F == 1.0 and A > B:
        A, B, D = B, A, -D
    return {"b": D, "c": A, "d": B, "e": C, "f": F}


def from_ncal(c: float, d: float, b: float, e: float, f: float = 1.0) -> CurveFit:
    """nCal's classical 5PL ``y = c + (d-c)/(1+exp(b log x - b log e))^f`` (``b < 0`` rising).

    Maps to ``A=c, B=d, C=e, D=b, F=f``. nCal's inverse convention (0 below ``c``, Inf above
    ``d``) is ``curve.inverse(y, below=0, above=inf)``.
    """
    return curve_from_params(c, d, e, b, f, model="5pl")


def to_ncal(curve: CurveFit) -> dict[str, float]:
    """nCal classical parameters ``c, d, b, e, f`` of a curve."""
    return {"c": curve.A, "d": curve.B, "b": curve.D, "e": curve.C, "f": curve.F}


def from_bioplex(a: float, b: float, c: float, d: float, e: float = 1.0) -> CurveFit:
    """Bio-Plex Manager's printed ``FI = a + (d - a)/((1 + (Conc/c)^b))^e`` (4PL: ``e = 1``).

    Maps to ``A=a, B=d, C=c, D=b, F=e``.
    """
    return curve_from_params(a, d, c, b, e)


def to_bioplex(curve: CurveFit) -> dict[str, float]:
    """Bio-Plex Manager parameters ``a, b, c, d, e`` of a curve."""
    return {"a": curve.A, "b": curve.D, "c": curve.C, "d": curve.B, "e": curve.F}
