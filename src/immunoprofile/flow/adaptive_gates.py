"""Data-driven gates: positions fitted on each sample's own parent events.

Contract: :func:`fit_gate` takes a gate holding *fallback* coordinates, its
:class:`~immunoprofile.flow.gates.GateFit` and the parent events' values on the gate's
dimensions (transformed units), and returns the concrete gate to evaluate on this sample plus a
:class:`FitRecord` (what was fitted, whether it fell back and why). The engine calls it while
evaluating (a child is fitted on its parent's fitted population). Nothing here reads files.

Methods
-------
- ``density_minimum``: openCyto's ``mindensity``: a Gaussian kernel density (bandwidth R's
  ``bw.nrd0`` × ``adjust``, 512 grid points over the data ± 3 bandwidths, linearly binned as R's
  ``density`` does), its local maxima and minima by the sign change of the first difference; the
  cut is the deepest minimum inside the search range between the two highest maxima.
- ``tail``: the first grid point right of the highest peak where the density falls below
  ``fraction`` × that peak's height.
- ``quantile``: the ``q`` quantile of the parent's values.
- ``cluster``: scikit-learn ``GaussianMixture`` (full covariances, fixed ``seed``), the
  component whose mean is nearest ``reference``; the gate is that component's ellipsoid holding
  ``probability`` of its mass (distance² = χ²\\ :sub:`d` quantile).
- ``singlets``: a band ``median(y/x) ± width × 1.4826 MAD(y/x)`` around the diagonal.
- ``density``: FlowCal's ``density2d`` (the densest bins of a Gaussian-smoothed 2-D histogram
  holding at least ``fraction`` of the events; see :func:`density2d`).

Guardrails: every method falls back to the gate's stated coordinates when it cannot fit (too
few events, one peak, no valley or position outside the search range, a mixture that does not
converge) and says so in the record; the batch writer flags samples that fell back or moved
more than ``max_shift`` from the batch median (:func:`flag_positions`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .gates import (
    CutFit,
    DensityGate,
    EllipseGate,
    Gate,
    GateFit,
    PolygonGate,
    Quadrant,
    QuadrantGate,
    RectangleGate,
)

__all__ = ["FitRecord", "fit_gate", "kde", "density_minimum", "tail_cut", "quantile_cut",
           "fit_cluster", "fit_singlets", "density2d", "density_members", "position_rows",
           "flag_positions", "fitted_strategy", "POSITION_COLUMNS", "CUT_METHODS", "MIN_EVENTS"]

#: Methods of a fitted cut (threshold, rectangle bound, quadrant divider).
CUT_METHODS = ("density_minimum", "tail", "quantile")
#: Fewer finite parent events than this: no fit, the stated coordinates are used.
MIN_EVENTS = 20
_GRID = 512


@dataclass
class FitRecord:
    """What a data-driven gate did on one sample.

    Attributes
    ----------
    gate_id
        The gate.
    kind
        ``cuts``, ``cluster``, ``singlets`` or ``density``.
    positions
        Parameter name (``"CD3 min"``, ``"mean FSC-A"`` ...) -> value in transformed units (the
        fallback's value when it fell back).
    data_values
        Parameter name -> the value in data units (``None`` where no single axis applies).
    fallback
        ``True`` when any coordinate is the stated fallback.
    reason
        Why it fell back (``""`` when it did not).
    max_shift
        The gate's stated maximum distance from the batch median (``None`` = not checked).
    fitted
        The concrete gate evaluated on this sample.
    """

    gate_id: str
    kind: str
    positions: dict[str, float] = field(default_factory=dict)
    data_values: dict[str, float | None] = field(default_factory=dict)
    fallback: bool = False
    reason: str = ""
    max_shift: float | None = None
    fitted: Gate | None = None


# ----------------------------------------------------------------------------------------------
# 1-D: kernel density, peaks, valleys
# ----------------------------------------------------------------------------------------------
def _finite(x: NDArray[np.float64]) -> NDArray[np.float64]:
    x = np.asarray(x, dtype=np.float64)
    return x[np.isfinite(x)]


def _bw_nrd0(x: NDArray[np.float64]) -> float:
    # R's bw.nrd0: 0.9 * min(sd, IQR / 1.34) * n^-1/5, with R's fallbacks for degenerate data
    sd = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
    q75, q25 = np.percentile(x, [75, 25])
    lo = min(sd, float(q75 - q25) / 1.34)
    if lo <= 0:
        lo = sd or abs(float(x[0])) or 1.0
    return 0.9 * lo * x.size ** -0.2


def kde(x: NDArray[np.float64], *, adjust: float = 2.0, n: int = _GRID
        ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Gaussian kernel density as R's ``density(x, adjust=adjust)`` computes it.

    Parameters
    ----------
    x
        Finite values (at least two).
    adjust
        Bandwidth multiplier of ``bw.nrd0`` (openCyto's default is 2).
    n
        Grid points.

    Returns
    -------
    grid, density
        ``n`` grid points from ``min(x) - 3 bw`` to ``max(x) + 3 bw`` and the density there.
    """
    x = _finite(x)
    bw = adjust * _bw_nrd0(x)
    lo, hi = float(x.min()) - 3 * bw, float(x.max()) + 3 * bw
    grid = np.linspace(lo, hi, n)
    # linear binning onto the grid (as R does, on a grid twice as wide for the FFT; here the
    # convolution is direct and the kernel is cut at 4 bandwidths)
    step = grid[1] - grid[0]
    pos = (x - lo) / step
    left = np.clip(np.floor(pos).astype(np.intp), 0, n - 2)
    frac = pos - left
    weights = np.zeros(n)
    np.add.at(weights, left, 1 - frac)
    np.add.at(weights, left + 1, frac)
    half = int(math.ceil(4 * bw / step))
    offsets = np.arange(-half, half + 1) * step
    kernel = np.exp(-0.5 * (offsets / bw) ** 2) / (bw * math.sqrt(2 * math.pi))
    dens = np.convolve(weights, kernel, mode="full")[half:half + n] / x.size
    return grid, dens


def _extrema(dens: NDArray[np.float64], kind: int) -> NDArray[np.intp]:
    # openCyto's .find_peaks/.find_valleys: second difference of the sign of the first difference
    second = np.diff(np.sign(np.diff(dens)))
    return np.flatnonzero(second == kind) + 1


def _peaks(x: NDArray[np.float64], grid: NDArray[np.float64], dens: NDArray[np.float64],
           min_peak: float) -> NDArray[np.intp]:
    peaks = _extrema(dens, -2)
    peaks = peaks[(grid[peaks] >= x.min()) & (grid[peaks] <= x.max())]
    peaks = peaks[np.argsort(-dens[peaks], kind="stable")]
    if peaks.size:
        peaks = peaks[dens[peaks] >= min_peak * dens[peaks[0]]]
    return peaks


def _in(value: float, search: tuple[float, float] | None) -> bool:
    return search is None or search[0] <= value <= search[1]


def density_minimum(x: NDArray[np.float64], *, search: tuple[float, float] | None = None,
                    adjust: float = 2.0, min_peak: float = 0.05) -> tuple[float | None, str]:
    """openCyto ``mindensity``: the deepest valley between the two highest density peaks.

    Parameters
    ----------
    x
        The parent's values on the gate's axis (transformed units).
    search
        ``(low, high)``: only valleys inside it count.
    adjust
        Bandwidth multiplier (openCyto: 2).
    min_peak
        A maximum counts as a peak only when at least this fraction of the highest peak's
        height (openCyto counts every local maximum; this keeps noise bumps from making a
        one-peak density look bimodal).

    Returns
    -------
    cut, reason
        The cut, or ``None`` with the reason it could not be placed.
    """
    x = _finite(x)
    if x.size < MIN_EVENTS:
        return None, f"only {x.size} events"
    grid, dens = kde(x, adjust=adjust)
    peaks = _peaks(x, grid, dens, min_peak)
    if peaks.size < 2:
        return None, "the density has one peak"
    first, second = sorted(int(p) for p in peaks[:2])
    # the lowest point between the two peaks (a run of equal lowest values, e.g. a density that
    # underflows to 0 in a wide gap, gives its middle); it must be a valley inside the search
    # range, not the density still falling at the range's edge
    between = np.arange(first + 1, second)
    if search is not None:
        between = between[(grid[between] >= search[0]) & (grid[between] <= search[1])]
    if between.size == 0:
        return None, "no valley between the two highest peaks inside the search range"
    low = dens[between].min()
    lowest = between[dens[between] <= low]
    k = int(lowest[lowest.size // 2])
    left_ok = k > between[0] or dens[k - 1] > dens[k] or k - 1 == first
    right_ok = k < between[-1] or dens[k + 1] > dens[k] or k + 1 == second
    if not (left_ok and right_ok) and lowest.size == 1:
        return None, "no valley between the two highest peaks inside the search range"
    return float(grid[k]), ""


def tail_cut(x: NDArray[np.float64], *, fraction: float = 0.05,
             search: tuple[float, float] | None = None, adjust: float = 2.0
             ) -> tuple[float | None, str]:
    """Where the density right of its highest (negative) peak falls below ``fraction`` of it.

    Returns
    -------
    cut, reason
        As for :func:`density_minimum`.
    """
    x = _finite(x)
    if x.size < MIN_EVENTS:
        return None, f"only {x.size} events"
    grid, dens = kde(x, adjust=adjust)
    peaks = _peaks(x, grid, dens, 0.0)
    if search is not None:
        peaks = peaks[grid[peaks] < search[1]]
    if peaks.size == 0:
        return None, "no density peak below the search range"
    top = int(peaks[0])
    below = np.flatnonzero(dens[top:] < fraction * dens[top])
    if below.size == 0:
        return None, "the density never falls below the fraction"
    cut = float(grid[top + below[0]])
    if not _in(cut, search):
        return None, f"tail cut {cut:.4g} outside the search range"
    return cut, ""


def quantile_cut(x: NDArray[np.float64], *, q: float,
                 search: tuple[float, float] | None = None) -> tuple[float | None, str]:
    """The ``q`` quantile of ``x`` (inside ``search``, else no cut)."""
    x = _finite(x)
    if x.size < MIN_EVENTS:
        return None, f"only {x.size} events"
    cut = float(np.quantile(x, q))
    if not _in(cut, search):
        return None, f"quantile {cut:.4g} outside the search range"
    return cut, ""


def _cut(x: NDArray[np.float64], spec: CutFit) -> tuple[float | None, str]:
    opts = dict(spec.options)
    if spec.method == "density_minimum":
        return density_minimum(x, search=spec.search, adjust=float(opts.get("adjust", 2.0)),
                               min_peak=float(opts.get("min_peak", 0.05)))
    if spec.method == "tail":
        return tail_cut(x, fraction=float(opts.get("fraction", 0.05)), search=spec.search,
                        adjust=float(opts.get("adjust", 2.0)))
    if spec.method == "quantile":
        return quantile_cut(x, q=float(opts["q"]), search=spec.search)
    raise ValueError(f"unknown cut method {spec.method!r}")


# ----------------------------------------------------------------------------------------------
# 2-D and n-D
# ----------------------------------------------------------------------------------------------
def fit_cluster(X: NDArray[np.float64], *, reference: Sequence[float], components: int = 3,
                probability: float = 0.95, seed: int = 0, max_events: int = 50_000,
                search: Sequence[tuple[float, float]] | None = None
                ) -> tuple[tuple[NDArray[np.float64], NDArray[np.float64], float] | None, str]:
    """The Gaussian-mixture component nearest ``reference`` as ``(mean, covariance, d²)``.

    Parameters
    ----------
    X
        Events × dimensions (transformed units); rows with a non-finite value are ignored.
    reference
        A point near the wanted population (e.g. lymphocytes on FSC/SSC).
    components
        Mixture components.
    probability
        Share of the component's mass inside the ellipse (distance² = χ² quantile).
    seed
        ``random_state`` of the mixture and of the subsample (fixed: same data, same gate).
    max_events
        Fit on a seeded random subsample of at most this many events.
    search
        Per dimension ``(low, high)``: the chosen mean must lie inside.

    Returns
    -------
    fit, reason
        ``(mean, covariance, distance²)`` or ``None`` with the reason.
    """
    from scipy.stats import chi2
    from sklearn.mixture import GaussianMixture

    X = np.asarray(X, dtype=np.float64)
    X = X[np.isfinite(X).all(axis=1)]
    if X.shape[0] < max(MIN_EVENTS, 10 * components):
        return None, f"only {X.shape[0]} events for {components} components"
    if X.shape[0] > max_events:
        rows = np.random.default_rng(seed).choice(X.shape[0], max_events, replace=False)
        X = X[np.sort(rows)]
    model = GaussianMixture(n_components=components, covariance_type="full",
                            random_state=seed, reg_covar=1e-6)
    try:
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X)
    except (ValueError, np.linalg.LinAlgError) as exc:
        return None, f"mixture fit failed ({exc})"
    if not model.converged_:
        return None, "mixture fit did not converge"
    ref = np.asarray(reference, dtype=np.float64)
    k = int(np.argmin(np.linalg.norm(model.means_ - ref, axis=1)))
    mean, cov = model.means_[k], model.covariances_[k]
    if search is not None and not all(lo <= m <= hi for m, (lo, hi) in zip(mean, search)):
        return None, "the nearest component's mean lies outside the search range"
    return (mean, cov, float(chi2.ppf(probability, df=X.shape[1]))), ""


def fit_singlets(x: NDArray[np.float64], y: NDArray[np.float64], *, width: float = 4.0
                 ) -> tuple[tuple[float, float, float] | None, str]:
    """Robust band around the diagonal: ``(median ratio, lower slope, upper slope)`` of y/x.

    The slopes are ``median(y/x) ∓ width × 1.4826 × MAD(y/x)`` over events with ``x > 0``;
    doublets (area grows, height does not) fall below the lower slope.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0)
    if int(ok.sum()) < MIN_EVENTS:
        return None, f"only {int(ok.sum())} events"
    ratio = y[ok] / x[ok]
    median = float(np.median(ratio))
    spread = 1.4826 * float(np.median(np.abs(ratio - median)))
    if not spread > 0:
        return None, "no spread around the diagonal"
    return (median, median - width * spread, median + width * spread), ""


def density2d(x: NDArray[np.float64], y: NDArray[np.float64], x_edges: NDArray[np.float64],
              y_edges: NDArray[np.float64], *, fraction: float, sigma: float = 10.0
              ) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """FlowCal's ``density2d`` gate: events in the densest bins holding ``fraction`` of them.

    Follows ``FlowCal.gate.density2d`` step by step: a 2-D histogram on the given edges; each
    event mapped to its bin with ``numpy.digitize`` (events on the last edge in the last bin,
    events outside the edges gated out and not counted); ``n = ceil(fraction × inside)``; the
    histogram smoothed with ``scipy.ndimage.gaussian_filter(sigma, mode="constant",
    truncate=6)`` and normalised; bins sorted by that density (``argsort`` descending, C order)
    and accepted until their raw counts reach ``n``.

    Returns
    -------
    mask, bin_mask
        Event mask (input order) and the accepted-bin mask (``len(x_edges) - 1`` ×
        ``len(y_edges) - 1``).
    """
    from scipy.ndimage import gaussian_filter

    if not 0 <= fraction <= 1:
        raise ValueError("fraction must be between 0 and 1")
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    xe, ye = np.asarray(x_edges, dtype=float), np.asarray(y_edges, dtype=float)
    hist, _, _ = np.histogram2d(x, y, bins=[xe, ye])
    xi, yi, inside = _bins_of(x, y, xe, ye)
    bin_mask = np.zeros(hist.shape, dtype=bool)
    n = int(np.ceil(fraction * float(inside.sum())))
    if n == 0:
        return np.zeros(x.shape, dtype=bool), bin_mask
    smooth = gaussian_filter(hist, sigma=sigma, order=0, mode="constant", cval=0.0, truncate=6.0)
    dens = smooth / np.sum(smooth)
    order = np.argsort(dens.ravel(order="C"))[::-1]
    cumulative = np.cumsum(hist.ravel(order="C")[order])
    last = int(np.nonzero(cumulative >= n)[0][0])
    bin_mask.ravel(order="C")[order[:last + 1]] = True
    mask = np.zeros(x.shape, dtype=bool)
    mask[inside] = bin_mask[xi[inside], yi[inside]]
    return mask, bin_mask


def _bins_of(x: NDArray[np.float64], y: NDArray[np.float64], xe: NDArray[np.float64],
             ye: NDArray[np.float64]) -> tuple[NDArray[np.intp], NDArray[np.intp],
                                               NDArray[np.bool_]]:
    xi = np.digitize(x, bins=xe) - 1
    yi = np.digitize(y, bins=ye) - 1
    # np.histogram2d closes the last bin; np.digitize does not (as FlowCal reconciles)
    xi[x == xe[-1]] = len(xe) - 2
    yi[y == ye[-1]] = len(ye) - 2
    inside = (xi >= 0) & (xi < len(xe) - 1) & (yi >= 0) & (yi < len(ye) - 1)
    return xi, yi, inside


def density_members(x: NDArray[np.float64], y: NDArray[np.float64], gate: DensityGate
                    ) -> NDArray[np.bool_]:
    """Events of ``x, y`` inside a :class:`DensityGate` (their bin is accepted)."""
    xe, ye = np.asarray(gate.x_edges, dtype=float), np.asarray(gate.y_edges, dtype=float)
    xi, yi, inside = _bins_of(np.asarray(x, dtype=float), np.asarray(y, dtype=float), xe, ye)
    bins = np.zeros((len(xe) - 1, len(ye) - 1), dtype=bool)
    if gate.accepted:
        ij = np.asarray(gate.accepted, dtype=np.intp)
        bins[ij[:, 0], ij[:, 1]] = True
    out = np.zeros(np.shape(x), dtype=bool)
    out[inside] = bins[xi[inside], yi[inside]]
    return out


# ----------------------------------------------------------------------------------------------
# The engine's entry point
# ----------------------------------------------------------------------------------------------
def _dim_name(dim: Any) -> str:
    return str(getattr(dim, "channel", getattr(dim, "ratio_id", "?")))


def _inverse(transform: Any, value: float) -> float | None:
    if transform is None:
        return float(value)
    with np.errstate(all="ignore"):
        out = float(np.asarray(transform.inverse(np.array([value], dtype=float)))[0])
    return out if math.isfinite(out) else None


def fit_gate(gate: Gate, fit: GateFit, columns: Sequence[NDArray[np.float64]],
             transforms: Sequence[Any]) -> tuple[Gate, FitRecord]:
    """Fit a data-driven gate on its parent's events.

    Parameters
    ----------
    gate
        The gate with its fallback coordinates (as in ``Strategy.gates``).
    fit
        How to fit it (``Strategy.fits[gate.id]``).
    columns
        The parent's events on each of ``gate.dimensions`` (transformed units).
    transforms
        Each dimension's transform (``None`` = untransformed), for data-unit values.

    Returns
    -------
    gate, record
        The concrete gate for this sample (same id, parent, name) and its :class:`FitRecord`.
    """
    record = FitRecord(gate_id=gate.id, kind=fit.kind, max_shift=fit.max_shift)
    names = [_dim_name(d) for d in gate.dimensions]
    reasons: list[str] = []

    def put(name: str, value: float, axis: int | None) -> None:
        record.positions[name] = float(value)
        record.data_values[name] = None if axis is None else _inverse(transforms[axis], value)

    if fit.kind == "cuts":
        out = _fit_cuts(gate, fit, columns, names, put, reasons)
    elif fit.kind == "cluster":
        out = _fit_cluster(gate, fit, columns, names, put, reasons)
    elif fit.kind == "singlets":
        out = _fit_singlets(gate, fit, columns, put, reasons)
    elif fit.kind == "density":
        out = _fit_density(gate, fit, columns, names, put, reasons)
    else:
        raise ValueError(f"gate {gate.id!r}: unknown fit kind {fit.kind!r}")
    record.fallback = bool(reasons)
    record.reason = "; ".join(reasons)
    record.fitted = out
    return out, record


def _fit_cuts(gate: Gate, fit: GateFit, columns, names, put, reasons) -> Gate:
    if isinstance(gate, QuadrantGate):
        axis_of = {d.id: i for i, d in enumerate(gate.dividers)}
        values = {d.id: list(d.values) for d in gate.dividers}
        for spec in fit.cuts:
            axis = axis_of[spec.target[0]]
            cut, why = _cut(columns[axis], spec)
            if cut is None:
                reasons.append(f"{names[axis]}: {why}")
                cut = values[spec.target[0]][0]
            put(f"{names[axis]} at", cut, axis)
            values[spec.target[0]] = [cut]
        dividers = tuple(dataclasses.replace(d, values=tuple(values[d.id]))
                         for d in gate.dividers)
        old = {d.id: d.values[0] for d in gate.dividers}
        # a quadrant's location keeps its side of the moved divider
        quadrants = tuple(Quadrant(id=q.id, name=q.name, positions=tuple(
            (did, values[did][0] + (loc - old[did])) for did, loc in q.positions))
            for q in gate.quadrants)
        return dataclasses.replace(gate, dividers=dividers, quadrants=quadrants)
    if not isinstance(gate, RectangleGate):
        raise ValueError(f"gate {gate.id!r}: fitted cuts need a range, rectangle or quadrant")
    mins, maxs = list(gate.mins), list(gate.maxs)
    for spec in fit.cuts:
        axis, side = int(spec.target[0]), spec.target[1]
        cut, why = _cut(columns[axis], spec)
        bounds = mins if side == "min" else maxs
        if cut is None:
            reasons.append(f"{names[axis]} {side}: {why}")
            cut = bounds[axis]
        bounds[axis] = cut
        put(f"{names[axis]} {side}", cut, axis)
    return dataclasses.replace(gate, mins=tuple(mins), maxs=tuple(maxs))


def _fit_cluster(gate: Gate, fit: GateFit, columns, names, put, reasons) -> Gate:
    assert isinstance(gate, EllipseGate)
    search = fit.option("search")
    result, why = fit_cluster(np.column_stack(columns), reference=fit.option("reference"),
                              components=int(fit.option("components", 3)),
                              probability=float(fit.option("probability", 0.95)),
                              seed=int(fit.option("seed", 0)), search=search)
    if result is None:
        reasons.append(why)
        out = gate
    else:
        mean, cov, dsq = result
        out = dataclasses.replace(gate, mean=tuple(float(v) for v in mean),
                                  covariance=tuple(tuple(float(v) for v in row) for row in cov),
                                  distance_square=dsq)
    for axis, name in enumerate(names):
        put(f"mean {name}", out.mean[axis], axis)
    for axis, name in enumerate(names):
        put(f"sd {name}", math.sqrt(out.covariance[axis][axis]), None)
    return out


def _fit_singlets(gate: Gate, fit: GateFit, columns, put, reasons) -> Gate:
    assert isinstance(gate, PolygonGate)
    result, why = fit_singlets(columns[0], columns[1], width=float(fit.option("width", 4.0)))
    if result is None:
        reasons.append(why)
        v = np.asarray(gate.vertices, dtype=float)
        slopes = v[:, 1] / np.where(v[:, 0] != 0, v[:, 0], np.nan)
        result = (float(np.nanmedian(slopes)), float(np.nanmin(slopes)),
                  float(np.nanmax(slopes)))
        out: Gate = gate
    else:
        x = np.asarray(columns[0], dtype=float)
        x = x[np.isfinite(x) & (x > 0)]
        lo, hi = fit.option("x_range") or (float(x.min()) * 0.999, float(x.max()) * 1.001)
        _, low, high = result
        out = dataclasses.replace(gate, vertices=((lo, low * lo), (hi, low * hi),
                                                  (hi, high * hi), (lo, high * lo)))
    put("ratio median", result[0], None)
    put("ratio low", result[1], None)
    put("ratio high", result[2], None)
    return out


def _fit_density(gate: Gate, fit: GateFit, columns, names, put, reasons) -> Gate:
    xe = np.asarray(fit.option("x_edges"), dtype=float)
    ye = np.asarray(fit.option("y_edges"), dtype=float)
    x, y = (np.asarray(c, dtype=float) for c in columns[:2])
    ok = np.isfinite(x) & np.isfinite(y)
    if int(ok.sum()) < MIN_EVENTS:
        reasons.append(f"only {int(ok.sum())} events")
        out = gate
        centre = (float("nan"), float("nan"))
    else:
        _, bins = density2d(x[ok], y[ok], xe, ye, fraction=float(fit.option("fraction")),
                            sigma=float(fit.option("sigma", 10.0)))
        ij = np.argwhere(bins)
        out = DensityGate(id=gate.id, parent=gate.parent, name=gate.name,
                          dims=tuple(gate.dimensions[:2]),  # type: ignore[arg-type]
                          x_edges=tuple(float(v) for v in xe), y_edges=tuple(float(v) for v in ye),
                          accepted=tuple((int(i), int(j)) for i, j in ij))
        xc, yc = (xe[:-1] + xe[1:]) / 2, (ye[:-1] + ye[1:]) / 2
        centre = (float(xc[ij[:, 0]].mean()), float(yc[ij[:, 1]].mean())) if ij.size else \
            (float("nan"), float("nan"))
    put(f"centre {names[0]}", centre[0], 0)
    put(f"centre {names[1]}", centre[1], 1)
    return out


# ----------------------------------------------------------------------------------------------
# Batch: positions table, flags, replay
# ----------------------------------------------------------------------------------------------
POSITION_COLUMNS = ("sample_id", "population", "kind", "parameter", "value", "value_data",
                    "fallback", "reason", "batch_median", "shift", "max_shift", "flag")


def position_rows(records: dict[str, FitRecord], paths: dict[str, str], sample_id: str
                  ) -> list[dict[str, Any]]:
    """One row per fitted parameter of one sample (unflagged; see :func:`flag_positions`)."""
    rows = []
    for gid, rec in records.items():
        for name, value in rec.positions.items():
            data = rec.data_values.get(name)
            rows.append({"sample_id": sample_id, "gate_id": gid,
                         "population": paths.get(gid, gid), "kind": rec.kind,
                         "parameter": name, "value": float(value),
                         "value_data": float("nan") if data is None else float(data),
                         "fallback": bool(rec.fallback), "reason": rec.reason,
                         "max_shift": float("nan") if rec.max_shift is None
                         else float(rec.max_shift)})
    return rows


def flag_positions(rows: Any) -> Any:
    """The ``gate_positions.csv`` table: every sample's fitted positions, flagged.

    Parameters
    ----------
    rows
        A DataFrame of :func:`position_rows` rows (any number of samples).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`POSITION_COLUMNS`, sorted by sample then strategy order. ``batch_median``
        is the median over samples that did not fall back; ``shift`` = value − median
        (transformed units); ``flag`` is ``fallback``, ``moved`` (``|shift| > max_shift``) or
        both joined by ``; ``, blank when neither.
    """
    import pandas as pd

    table = pd.DataFrame(rows).reset_index(drop=True)
    if table.empty:
        return pd.DataFrame(columns=list(POSITION_COLUMNS))
    fitted = table[~table["fallback"].astype(bool)]
    medians = fitted.groupby(["gate_id", "parameter"], sort=False)["value"].median().to_dict()
    table["batch_median"] = [medians.get(k, np.nan) for k in
                             zip(table["gate_id"], table["parameter"])]
    table["shift"] = table["value"] - table["batch_median"]
    moved = table["max_shift"].notna() & (table["shift"].abs() > table["max_shift"])
    table["flag"] = ["; ".join(f for f, on in (("fallback", bool(fb)), ("moved", bool(mv))) if on)
                     for fb, mv in zip(table["fallback"], moved)]
    order = {gid: i for i, gid in enumerate(dict.fromkeys(table["gate_id"]))}
    table = table.assign(_o=table["gate_id"].map(order)).sort_values(
        ["sample_id", "_o"], kind="stable")
    return table[list(POSITION_COLUMNS)].reset_index(drop=True)


def fitted_strategy(strategy: Any, fitted: dict[str, Gate]) -> Any:
    """``strategy`` with each data-driven gate replaced by its fitted form on one sample and
    no fits left: a fixed strategy that replays that sample's result (e.g. as Gating-ML)."""
    gates = {gid: fitted.get(gid, gate) for gid, gate in strategy.gates.items()}
    return dataclasses.replace(strategy, gates=gates, fits={})
