"""Look at the data while writing a strategy: any population of any file on the strategy's axes.

Contract: :func:`population_figure` draws, for one or several FCS files, a density plot (two
axes) or a histogram (one axis) of one population's events, with the strategy's gates on those
axes drawn where they sit on that file (data-driven gates as fitted on it). Axis positions are
the transformed units gate coordinates use; the bottom axis is labelled in data units, the top
axis in transformed units, so both can be read off. :func:`plot_files` renders it to a PNG.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..flow import gates as G
from .plots import figure_png, plt, styled

__all__ = ["population_figure", "plot_files", "TRANSFORMS", "axis_dimension"]

#: ``--transform`` choices: the same parameters the example strategy uses.
TRANSFORMS = ("logicle", "asinh", "linear")
_SCATTER = re.compile(r"^(FSC|SSC|TIME)([-_ ].*)?$", re.IGNORECASE)


# ----- matplotlib drawing (axes with ticks in two units; the report's grids draw pixels) ---------

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


def _override(name: str, fcs: Any) -> Any:
    from ..flow import transforms as tr

    top = 262144.0
    try:
        r = float(fcs.ranges[fcs.channel_index(name)])
        top = r if r > 1 else top
    except (InputError, AttributeError, IndexError, TypeError, ValueError):
        pass
    if name == "logicle":
        return tr.LogicleTransform(top, 0.5, 4.5, 0.0)
    if name == "asinh":
        return tr.AsinhTransform(top, 4.5, 0.0)
    return tr.LinearTransform(top, 0.0)


def axis_dimension(strategy: G.Strategy | None, fcs: Any, name: str,
                   transform: str | None) -> tuple[G.Strategy, G.Dimension, bool]:
    """The dimension to plot ``name`` (channel or marker) on, and whether it is the strategy's.

    With a strategy and no ``transform``, the first gate dimension on the same file channel is
    used (its compensation and transform: the strategy's own axis). Otherwise the file's
    spillover is applied to fluorescence channels and ``transform`` (default logicle for
    fluorescence, linear for scatter) is used.

    Returns
    -------
    strategy, dimension, own
        A strategy holding the dimension's transform, the dimension, and ``True`` when it is
        the strategy's own axis (so its gates can be drawn on it).
    """
    index = fcs.channel_index(name)
    if strategy is not None:
        for gate in strategy.iter_gates():
            for dim in gate.dimensions:
                if isinstance(dim, G.Dimension):
                    try:
                        same = fcs.channel_index(dim.channel) == index
                    except InputError:
                        same = False
                    if same:
                        if transform is None:
                            return strategy, dim, True
                        break
    channel = fcs.channels[index]
    scatter = bool(_SCATTER.match(channel))
    kind = transform or ("linear" if scatter else "logicle")
    dim = G.Dimension(channel=channel,
                      compensation=G.UNCOMPENSATED if scatter or fcs.spillover is None
                      else G.FCS_SPILLOVER,
                      transform=f"plot:{kind}")
    base = strategy if strategy is not None else G.Strategy(gates={})
    transforms = {**base.transforms, f"plot:{kind}": _override(kind, fcs) if kind != "linear"
                  else _override_linear(fcs, index)}
    import dataclasses

    return dataclasses.replace(base, transforms=transforms), dim, False


def _override_linear(fcs: Any, index: int) -> Any:
    from ..flow.transforms import LinearTransform

    try:
        top = float(fcs.ranges[index])
    except (AttributeError, IndexError, TypeError, ValueError):
        top = 262144.0
    return LinearTransform(top if top > 1 else 262144.0, 0.0)


def _population(strategy: G.Strategy | None, result: Any, parent: str | None) -> str | None:
    if parent is None or parent in ("", "/", "all", "all events"):
        return None
    if strategy is None or result is None:
        raise InputError(None, "--parent needs --strategy (the population is defined by it)")
    wanted = parent.strip()
    by_path = {path: pid for pid, path in result.paths.items()}
    if wanted in by_path:
        return by_path[wanted]
    hits = [pid for pid, path in result.paths.items() if path.rsplit("/", 1)[-1] == wanted]
    if len(hits) == 1:
        return hits[0]
    known = ", ".join(result.paths.values())
    why = "is ambiguous" if hits else "is not a population of the strategy"
    raise InputError(strategy.source, f"--parent {parent!r} {why} (populations: {known})")


def _data_ticks(ax, transform: Any, axis: str) -> None:
    """Bottom/left ticks labelled in data units at round data values; top/right in transformed."""
    if transform is None:
        return
    lo, hi = (ax.get_xlim() if axis == "x" else ax.get_ylim())
    with np.errstate(all="ignore"):
        d_lo, d_hi = (float(v) for v in transform.inverse(np.array([lo, hi])))
    candidates = [0.0] + [s * 10.0 ** k for k in range(2, 8) for s in (1, -1)]
    if d_hi - d_lo < 10 or not math.isfinite(d_hi - d_lo):
        return
    if max(abs(d_lo), abs(d_hi)) <= 1e6 and _is_linear(transform):
        return  # linear axes: the default ticks are already readable in both units
    ticks, labels = [], []
    for value in sorted(candidates):
        if d_lo <= value <= d_hi:
            ticks.append(float(transform.apply(np.array([value]))[0]))
            labels.append("0" if value == 0 else f"{'-' if value < 0 else ''}1e{int(round(math.log10(abs(value))))}")
    if len(ticks) < 2:
        return
    sec = ax.secondary_xaxis("top") if axis == "x" else ax.secondary_yaxis("right")
    sec.tick_params(labelsize=5, length=2, pad=1)
    (ax.set_xticks if axis == "x" else ax.set_yticks)(ticks, labels)


def _is_linear(transform: Any) -> bool:
    from ..flow.transforms import LinearTransform

    return isinstance(transform, LinearTransform)


@styled
def population_figure(files: Sequence[str | os.PathLike[str]], x: str, y: str | None = None, *,
                      strategy: G.Strategy | None = None, parent: str | None = None,
                      transform: str | None = None, compensation: str = "fcs") -> plt.Figure:
    """A density plot (``y`` given) or histogram of one population, one panel per file.

    Parameters
    ----------
    files
        FCS files (one panel each).
    x, y
        Channel ($PnN) or marker ($PnS) names.
    strategy
        Supplies the axes (compensation, transform), the parent population and the gates drawn.
    parent
        Population path or unique name whose events are shown (default: all events).
    transform
        ``logicle``, ``asinh`` or ``linear`` instead of the strategy's own axis transform (the
        strategy's gates are then not drawn: they live on its own axes).
    compensation
        ``fcs`` (the file's spillover) or ``none``, for the gating that selects the parent.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from ..flow.adaptive_gates import fitted_strategy
    from ..flow.engine import dimension_values, evaluate
    from ..flow.fcs import read_fcs
    from .gating_plots import _label

    if transform is not None and transform not in TRANSFORMS:
        raise InputError(None, f"--transform must be one of {', '.join(TRANSFORMS)}")
    n = len(files)
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.9 * ncols, 2.7 * nrows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    spill = "none" if compensation == "none" else None
    for ax, path in zip(axes.ravel(), files):
        fcs = read_fcs(path)
        result = evaluate(strategy, fcs, spillover=spill) if strategy is not None else None
        pid = _population(strategy, result, parent)
        mask = np.ones(fcs.n_events, dtype=bool) if pid is None else result.masks[pid]
        sx, dx, own_x = axis_dimension(strategy, fcs, x, transform)
        dims = [dx]
        own = own_x
        if y is not None:
            sy, dy, own_y = axis_dimension(sx, fcs, y, transform)
            sx, dims, own = sy, [dx, dy], own_x and own_y
        # the engine compensates the channels the strategy's gates use: an open rectangle on
        # the plotted axes makes them part of it (for axes the strategy itself never gates on)
        probe = G.RectangleGate(id="\x00plot", parent=None, name="plot", dims=tuple(dims),
                                mins=(None,) * len(dims), maxs=(None,) * len(dims))
        import dataclasses

        sx = dataclasses.replace(sx, gates={**sx.gates, probe.id: probe})
        columns = dimension_values(sx, fcs, dims, spillover=spill)
        values = [c[mask] for c in columns]
        _draw_density(ax, values[0], values[1] if y is not None else None)
        drawn = []
        if strategy is not None and own:
            shown = fitted_strategy(strategy, {g: r.fitted for g, r in result.fits.items()})
            wanted = [d.channel for d in dims]
            for gate in shown.iter_gates():
                if gate.parent != pid or isinstance(gate, G.BooleanGate):
                    continue
                names = [getattr(d, "channel", None) for d in gate.dimensions]
                if names == wanted or (y is None and names[:1] == wanted and len(names) == 1):
                    _draw_gate(ax, gate, shown, result.counts, int(mask.sum()))
                    record = result.fits.get(gate.id)
                    drawn.append(gate.name + (" (fallback)" if record and record.fallback
                                              else ""))
        _data_ticks(ax, sx.transforms.get(dims[0].transform) if dims[0].transform else None,
                    "x")
        if y is not None:
            _data_ticks(ax, sx.transforms.get(dims[1].transform) if dims[1].transform else None,
                        "y")
            ax.set_ylabel(_label(dims[1], fcs))
        else:
            ax.set_ylabel("events")
        ax.set_xlabel(_label(dims[0], fcs))
        where = "all events" if pid is None else result.paths[pid]
        title = f"{Path(path).stem}\n{where} ({int(mask.sum())} events)"
        if drawn:
            title += f"\ngates: {', '.join(drawn)}"
        ax.set_title(title, fontsize=6.5)
    fig.tight_layout()
    return fig


def plot_files(files: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], x: str,
               y: str | None = None, **options: Any) -> Path:
    """Draw :func:`population_figure` and write it as a PNG (atomically); returns ``out``."""
    from .._io import atomic_open

    png = figure_png(population_figure(files, x, y, **options), dpi=110, tight=True)
    with atomic_open(out, "wb") as fh:
        fh.write(png)
    return Path(out)
