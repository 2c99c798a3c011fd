"""Matplotlib figures for the report (Agg backend; each function returns a Figure).

Figures are small and rasterised so the self-contained HTML stays light; ``figure_png`` turns
one into PNG bytes (and closes it) for embedding and for ``RUN_DIR/plots/``.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

__all__ = ["styled", "figure_png", "curve_grid", "trajectory_grid", "forest_plot", "PERIOD_COLOURS"]

PERIOD_COLOURS = {"run-in": "#e8eef7", "treatment": "#fbe9d7", "post-treatment": "#e6f2e6"}
_STYLE = {"font.size": 7, "axes.titlesize": 7.5, "axes.labelsize": 7, "xtick.labelsize": 6,
          "ytick.labelsize": 6, "legend.fontsize": 6, "figure.titlesize": 8, "axes.spines.top": False,
          "axes.spines.right": False}


def styled(fn):
    """Run a figure-building function inside the report's compact matplotlib style."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with plt.rc_context(_STYLE):
            return fn(*args, **kwargs)

    return wrapper


def figure_png(fig: plt.Figure, *, dpi: int = 90, tight: bool = True,
               palette: bool = True) -> bytes:
    """Render ``fig`` to PNG bytes (deterministic: no metadata timestamps) and close it.

    ``tight`` trims the margins (costly on grids of many axes: layouts that are already fixed
    pass False); ``palette`` quantises to 256 colours, which keeps plots crisp at about a third of
    the size, so the self-contained report stays small.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight" if tight else None,
                metadata={"Software": None})
    plt.close(fig)
    if not palette:
        return buffer.getvalue()
    from PIL import Image

    buffer.seek(0)
    with Image.open(buffer) as image:
        quantised = image.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE,
                                                  dither=Image.Dither.NONE)
        out = io.BytesIO()
        quantised.save(out, format="PNG", compress_level=6)  # optimize=True: 4x slower
    return out.getvalue()


def _fixed_layout(fig: plt.Figure, *, left: float = 0.55, right: float = 0.15,
                  bottom: float = 0.45, top: float = 0.5, wspace: float = 0.45,
                  hspace: float = 0.75) -> None:
    """Margins in inches, set once: measuring every tick label (``tight_layout``, a tight
    bounding box on save) was most of the report's build time."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                        top=1 - top / height, wspace=wspace, hspace=hspace)


def _grid(n: int, ncols: int, panel: tuple[float, float]) -> tuple[plt.Figure, np.ndarray]:
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows),
                                 squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def _logistic(x: np.ndarray, A: float, B: float, C: float, D: float, F: float) -> np.ndarray:
    return A + (B - A) / (1.0 + (x / C) ** D) ** F


@styled
def curve_grid(plate: str, curves: pd.DataFrame, wells: pd.DataFrame) -> plt.Figure:
    """One panel per analyte of a plate: fitted curve, standards (used/dropped), samples placed
    on the curve, LLOQ/ULOQ lines. Axes are log–log (concentration vs Net MFI)."""
    analytes = sorted(curves["analyte"].unique())
    fig, axes = _grid(len(analytes), 5, (2.1, 1.8))
    for ax, analyte in zip(axes, analytes):
        c = curves[curves["analyte"] == analyte].iloc[0]
        w = wells[wells["analyte"] == analyte]
        dropped = {s.strip() for s in str(c.get("standards_dropped", "") or "").replace(",", ";")
                   .split(";") if s.strip() and s.strip().lower() != "nan"}
        std = w[w.get("sample_type", pd.Series(dtype=str)) == "standard"] if "sample_type" in w \
            else w.iloc[0:0]
        xcol = "expected_conc" if "expected_conc" in w and std["expected_conc"].notna().any() \
            else "concentration"
        pos = std[std[xcol] > 0] if len(std) else std
        if len(pos):
            is_dropped = pos["sample_id"].astype(str).isin(dropped) | \
                pos["well"].astype(str).isin(dropped)
            ax.scatter(pos.loc[~is_dropped, xcol], pos.loc[~is_dropped, "net_mfi"].clip(lower=1),
                       s=9, c="#1f5fa8", label="standard", zorder=3)
            if is_dropped.any():
                ax.scatter(pos.loc[is_dropped, xcol], pos.loc[is_dropped, "net_mfi"].clip(lower=1),
                           s=12, facecolors="none", edgecolors="#c0392b", label="dropped", zorder=3)
        samples = w[w["sample_type"].isin(["unknown", "control"])] if "sample_type" in w else w
        conc = samples["concentration"] / samples.get("dilution", 1).replace(0, np.nan).fillna(1)
        ok = conc > 0
        ax.scatter(conc[ok], samples.loc[ok, "net_mfi"].clip(lower=1), s=4, c="#7f8c8d",
                   alpha=0.6, label="samples", zorder=2)
        params = [c.get(k, np.nan) for k in ("A", "B", "C", "D", "F")]
        params[4] = 1.0 if not np.isfinite(params[4]) else params[4]
        finite_x = pd.concat([pos[xcol] if len(pos) else pd.Series(dtype=float), conc[ok]])
        if all(np.isfinite(params)) and len(finite_x):
            lo, hi = float(finite_x.min()) / 3, float(finite_x.max()) * 3
            grid = np.geomspace(max(lo, 1e-6), max(hi, 1e-5), 200)
            with np.errstate(all="ignore"):
                ax.plot(grid, np.clip(_logistic(grid, *params), 1, None), c="#1f5fa8", lw=1)
        for key, style in (("lloq", ":"), ("uloq", "--")):
            value = c.get(key, np.nan)
            if pd.notna(value) and value > 0:
                ax.axvline(value, c="#555", ls=style, lw=0.8)
        r2 = c.get("r2_weighted", np.nan)
        ax.set_title(f"{analyte}  R²={r2:.4f}" if pd.notna(r2) else str(analyte))
        if not len(pos) and not ok.any():  # an MSD reference spot without calibrators
            ax.text(0.5, 0.5, "no standard curve", ha="center", va="center",
                    transform=ax.transAxes, fontsize=7, color="#777")
            continue
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("concentration")
        ax.set_ylabel("Net MFI")
    if len(axes):
        axes[0].legend(loc="upper left", frameon=False)
    fig.suptitle(f"Standard curves — plate {plate}   (dotted LLOQ, dashed ULOQ)", fontsize=8)
    _fixed_layout(fig)
    return fig


@styled
def trajectory_grid(tidy: pd.DataFrame, features: list[str], *, title: str,
                    log_y: bool = False, labels: dict[str, str] | None = None) -> plt.Figure:
    """Per feature, one line per subject across study days, periods shaded.

    ``tidy`` columns: ``feature, subject_id, study_day, value, period``.
    """
    fig, axes = _grid(len(features), 4, (2.5, 1.8))
    spans = (tidy.groupby("period", observed=True)["study_day"].agg(["min", "max"])
             if "period" in tidy else pd.DataFrame())
    subjects = sorted(tidy["subject_id"].unique())
    colours = plt.get_cmap("tab10")
    for ax, feature in zip(axes, features):
        for period, (lo, hi) in spans.iterrows():
            ax.axvspan(lo - 2, hi + 2, color=PERIOD_COLOURS.get(str(period), "#eee"), lw=0)
        f = tidy[tidy["feature"] == feature]
        for i, subject in enumerate(subjects):
            s = f[f["subject_id"] == subject].sort_values("study_day")
            ax.plot(s["study_day"], s["value"], marker="o", ms=2, lw=0.8,
                    color=colours(i % 10), label=subject)
        name = (labels or {}).get(feature, feature)
        ax.set_title(name if len(name) < 42 else "…" + name[-40:])
        ax.set_xlabel("study day")
        if log_y and (f["value"] > 0).any():
            ax.set_yscale("log")
    if len(axes):
        axes[0].legend(ncol=2, frameon=False, loc="best")
    fig.suptitle(title + "   (shaded: run-in · treatment · post-treatment)", fontsize=8)
    _fixed_layout(fig, left=0.5)
    return fig


@styled
def forest_plot(comparisons: pd.DataFrame, *, max_features: int = 25,
                labels: dict[str, str] | None = None) -> plt.Figure:
    """Paired period contrasts (estimate with 95 % CI) for the features with the smallest q."""
    df = comparisons.dropna(subset=["estimate"]).copy()
    if "q" in df and df["q"].notna().any():
        order = df.groupby("feature")["q"].min().sort_values().index[:max_features]
    else:
        order = df["feature"].drop_duplicates().iloc[:max_features]
    df = df[df["feature"].isin(order)]
    contrasts = list(dict.fromkeys(df["contrast"]))
    features = list(order)
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(6.5, 0.28 * len(features) + 1.0))
    offsets = np.linspace(-0.25, 0.25, max(len(contrasts), 1))
    markers = ["o", "s", "^", "D"]
    for j, contrast in enumerate(contrasts):
        c = df[df["contrast"] == contrast].set_index("feature").reindex(features)
        y = np.arange(len(features)) + offsets[j]
        err = np.vstack([c["estimate"] - c["ci_low"], c["ci_high"] - c["estimate"]])
        ax.errorbar(c["estimate"], y, xerr=np.abs(np.nan_to_num(err)), fmt=markers[j % 4], ms=3,
                    lw=0.8, capsize=1.5, label=contrast)
    ax.axvline(0, c="#555", lw=0.8)
    ax.set_yticks(np.arange(len(features)))
    names = [(labels or {}).get(f, f) for f in features]
    ax.set_yticklabels([f if len(f) < 48 else "…" + f[-46:] for f in names])
    ax.invert_yaxis()
    ax.set_xlabel("paired difference on the transformed scale (95 % CI)")
    ax.legend(frameon=False, loc="lower right")
    _fixed_layout(fig, left=2.6, right=0.2, bottom=0.45, top=0.15)
    return fig
