"""Per-sample gating figures: every gate drawn over a density plot of its parent's events.

The strategy and FCS files named in the flow stage's provenance are re-read and re-gated with the
same engine, so the figure shows exactly what was counted.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator

from ..errors import InputError
from ..flow import gates as G
from ..flow.engine import dimension_values
from .plots import _STYLE, plt, styled

__all__ = ["gating_figure", "locate_inputs", "render_gating_png"]

log = logging.getLogger(__name__)


def locate_inputs(provenance: dict[str, Any]) -> tuple[Path | None, dict[str, Path], str]:
    """Strategy path, ``{file name: path}`` of FCS inputs and the compensation option recorded
    in a flow stage's provenance."""
    params = provenance.get("parameters", {}) or {}
    strategy = params.get("strategy") or params.get("strategy_path")
    files: dict[str, Path] = {}
    for record in provenance.get("inputs", []):
        path = Path(record.get("path", ""))
        if path.suffix.lower() in {".fcs", ".lmd"}:
            files[path.name] = path
        elif strategy is None and path.suffix.lower() in {".yaml", ".yml", ".xml", ".wsp"}:
            strategy = str(path)
    compensation = str(params.get("compensation", params.get("comp", "fcs")))
    return (Path(strategy) if strategy else None), files, compensation


def _label(dim: G.AnyDimension, fcs) -> str:
    name = getattr(dim, "channel", getattr(dim, "ratio_id", "?"))
    try:
        idx = fcs.channel_index(name)
    except (InputError, KeyError, ValueError):
        return name
    marker = fcs.markers[idx] if idx < len(fcs.markers) else ""
    return f"{marker} ({fcs.channels[idx]})" if marker and marker != fcs.channels[idx] else name


def _draw_density(ax, x: np.ndarray, y: np.ndarray | None) -> None:
    finite = np.isfinite(x) if y is None else np.isfinite(x) & np.isfinite(y)
    if y is None:
        ax.hist(x[finite], bins=128, color="#5d7fa3", histtype="stepfilled")
        return
    x, y = x[finite], y[finite]
    if x.size == 0:
        return
    xr = np.percentile(x, [0.2, 99.8])
    yr = np.percentile(y, [0.2, 99.8])
    pad_x, pad_y = 0.08 * (xr[1] - xr[0] or 1), 0.08 * (yr[1] - yr[0] or 1)
    hist, xe, ye = np.histogram2d(x, y, bins=96, range=[[xr[0] - pad_x, xr[1] + pad_x],
                                                      [yr[0] - pad_y, yr[1] + pad_y]])
    ax.imshow(np.log1p(hist.T), origin="lower", aspect="auto", cmap="viridis",
              extent=(xe[0], xe[-1], ye[0], ye[-1]), interpolation="nearest")


def _draw_gate(ax, gate: G.Gate, strategy: G.Strategy, counts: dict[str, int],
               parent_count: int) -> None:
    from matplotlib.patches import Ellipse, Polygon, Rectangle

    edge = {"fill": False, "ec": "#ff5a36", "lw": 1.1}
    xlim, ylim = ax.get_xlim(), ax.get_ylim()

    def note(text: str, x: float, y: float) -> None:
        ax.text(x, y, text, color="white", fontsize=6, ha="center", va="center",
                bbox={"boxstyle": "round,pad=0.15", "fc": "#00000099", "ec": "none"})

    pct = (lambda n: 100.0 * n / parent_count if parent_count else float("nan"))
    if isinstance(gate, G.RectangleGate):
        lo = [xlim[0] if v is None else v for v in gate.mins]
        hi = [xlim[1] if v is None else v for v in gate.maxs]
        if len(gate.dims) == 1:
            for v in (gate.mins[0], gate.maxs[0]):
                if v is not None:
                    ax.axvline(v, c="#ff5a36", lw=1.1)
            mid_y = sum(ylim) / 2
        else:
            lo[1] = ylim[0] if gate.mins[1] is None else gate.mins[1]
            hi[1] = ylim[1] if gate.maxs[1] is None else gate.maxs[1]
            ax.add_patch(Rectangle((lo[0], lo[1]), hi[0] - lo[0], hi[1] - lo[1], **edge))
            mid_y = (lo[1] + hi[1]) / 2
        n = counts.get(gate.id, 0)
        note(f"{gate.name}\n{n} ({pct(n):.1f}%)", (max(lo[0], xlim[0]) + min(hi[0], xlim[1])) / 2,
             mid_y)
    elif isinstance(gate, G.PolygonGate):
        vertices = np.asarray(gate.vertices, dtype=float)
        ax.add_patch(Polygon(vertices, closed=True, **edge))
        n = counts.get(gate.id, 0)
        note(f"{gate.name}\n{n} ({pct(n):.1f}%)", *vertices.mean(axis=0))
    elif isinstance(gate, G.EllipseGate) and len(gate.dims) == 2:
        cov = np.asarray(gate.covariance, dtype=float)
        values, vectors = np.linalg.eigh(cov)
        angle = math.degrees(math.atan2(vectors[1, 1], vectors[0, 1]))
        width, height = 2 * np.sqrt(values[::-1] * gate.distance_square)
        ax.add_patch(Ellipse(gate.mean, width, height, angle=angle, **edge))
        n = counts.get(gate.id, 0)
        note(f"{gate.name}\n{n} ({pct(n):.1f}%)", *gate.mean)
    elif isinstance(gate, G.DensityGate):
        # the accepted bins' outline (FlowCal density2d)
        xe, ye = np.asarray(gate.x_edges), np.asarray(gate.y_edges)
        bins = np.zeros((xe.size - 1, ye.size - 1))
        if gate.accepted:
            ij = np.asarray(gate.accepted)
            bins[ij[:, 0], ij[:, 1]] = 1.0
            ax.contour((xe[:-1] + xe[1:]) / 2, (ye[:-1] + ye[1:]) / 2, bins.T, levels=[0.5],
                       colors="#ff5a36", linewidths=1.1)
            n = counts.get(gate.id, 0)
            note(f"{gate.name}\n{n} ({pct(n):.1f}%)", float(xe[ij[:, 0]].mean()),
                 float(ye[ij[:, 1]].mean()))
    elif isinstance(gate, G.QuadrantGate):
        cuts: dict[int, list[float]] = {}
        for axis, divider in enumerate(gate.dividers[:2]):
            for value in divider.values:
                (ax.axvline if axis == 0 else ax.axhline)(value, c="#ff5a36", lw=1.1)
                cuts.setdefault(axis, []).append(value)
        for quadrant in gate.quadrants:
            pos = dict(quadrant.positions)
            xy = [pos.get(d.id, (xlim if i == 0 else ylim)[0]) for i, d in
                  enumerate(gate.dividers[:2])]
            xy = [min(max(v, lim[0]), lim[1]) for v, lim in zip(xy, (xlim, ylim))]
            n = counts.get(quadrant.id, 0)
            note(f"{quadrant.name or quadrant.id}\n{pct(n):.1f}%", *(xy + [sum(ylim) / 2])[:2])
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)


@styled
def gating_figure(sample_id: str, fcs, strategy: G.Strategy, result, spillover, *,
                  outlier: bool = False, max_panels: int = 16) -> plt.Figure:
    """One compact row-wrapped grid: a panel per drawable gate over its parent's events.

    Data-driven gates are drawn where they were fitted on this sample (``result.fits``)."""
    if getattr(result, "fits", None):
        from ..flow.adaptive_gates import fitted_strategy

        strategy = fitted_strategy(strategy, {g: r.fitted for g, r in result.fits.items()})
    drawable = [g for g in strategy.iter_gates()
                if not isinstance(g, G.BooleanGate) and 1 <= len(g.dimensions) <= 2
                and not any(isinstance(d, G.RatioDimension) for d in g.dimensions)][:max_panels]
    n = max(len(drawable), 1)
    ncols = min(n, 6)
    nrows = math.ceil(n / ncols)
    # A fixed layout (no tight_layout): measuring tick labels of ~10 axes per sample was most of
    # the report's build time.
    width, height = 1.75 * ncols, 1.7 * nrows + 0.25
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=0.45 / width, right=1 - 0.1 / width, bottom=0.38 / height,
                        top=1 - 0.42 / height, wspace=0.42, hspace=0.62)
    axes = axes.ravel()
    for ax in axes[len(drawable):]:
        ax.set_visible(False)
    counts = dict(result.counts)
    # the engine's own values, so the events are drawn exactly where they were gated
    dims = list(dict.fromkeys(d for g in drawable for d in g.dimensions))
    columns = dict(zip(dims, dimension_values(
        strategy, fcs, dims, spillover=spillover if spillover is not None else "none")))
    for ax, gate in zip(axes, drawable):
        parent = np.ones(fcs.n_events, dtype=bool) if gate.parent is None else \
            result.masks[gate.parent]
        values = [columns[dim][parent] for dim in gate.dimensions]
        _draw_density(ax, values[0], values[1] if len(values) > 1 else None)
        _draw_gate(ax, gate, strategy, counts, int(parent.sum()))
        ax.set_xlabel(_label(gate.dimensions[0], fcs), labelpad=1)
        if len(gate.dimensions) > 1:
            ax.set_ylabel(_label(gate.dimensions[1], fcs), labelpad=1)
        parent_name = "all events" if gate.parent is None else strategy.name_of(gate.parent)
        record = (getattr(result, "fits", None) or {}).get(gate.id)
        fell_back = " (fallback)" if record is not None and record.fallback else ""
        ax.set_title(f"{parent_name} → {gate.name}{fell_back}", fontsize=6.5,
                     color="#c0392b" if fell_back else "black")
        ax.tick_params(length=2, pad=1, labelsize=5)
        ax.xaxis.set_major_locator(MaxNLocator(3))
        ax.yaxis.set_major_locator(MaxNLocator(3))
    title = f"{sample_id}" + ("   ⚠ outlier (robust z > 3.5)" if outlier else "")
    fig.suptitle(title, fontsize=8, color="#c0392b" if outlier else "black", x=0.01, ha="left")
    return fig


def render_gating_png(sample_id: str, fcs_path: str, strategy_path: str, compensation: str,
                      outlier: bool) -> bytes:
    """Re-read, re-gate and draw one sample; return its PNG (a picklable per-sample task)."""
    from ..flow.compensation import resolve_compensation
    from ..flow.engine import evaluate
    from ..flow.fcs import read_fcs
    from ..flow.strategy import load_strategy
    from .plots import figure_png

    strategy = load_strategy(strategy_path)
    fcs = read_fcs(fcs_path)
    if hasattr(strategy, "for_file"):  # a FlowJo workspace: this file's own sample
        strategy, _ = strategy.for_file(fcs_path, fcs.text)
    spill = resolve_compensation(compensation, fcs)
    result = evaluate(strategy, fcs, spillover=spill if spill is not None else "none")
    fig = gating_figure(sample_id, fcs, strategy, result, spill, outlier=outlier)
    return figure_png(fig, dpi=72, tight=False)
