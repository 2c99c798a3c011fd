"""Acquisition-over-time figures: each file's event rate and signal levels along Time, with the
stretches time QC removed shaded (from ``flow/time_qc.csv``, written by the gate stage)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .plots import plt, styled

__all__ = ["time_qc_figure", "time_qc_samples"]

#: Signal traces drawn per file (the channels that moved most).
_TRACES = 5


def time_qc_samples(traces: pd.DataFrame, *, limit: int = 24) -> list[str]:
    """Samples worth a figure: those that lost events, most first (at most ``limit``)."""
    rate = traces[traces["kind"] == "rate"]
    removed = rate.assign(n=np.where(rate["removed"].astype(bool), rate["count"], 0))
    signal = traces[(traces["kind"] == "signal") & traces["removed"].astype(bool)]
    lost = removed.groupby("sample_id")["n"].sum().add(
        signal.groupby("sample_id")["count"].sum(), fill_value=0)
    lost = lost[lost > 0].sort_values(ascending=False, kind="stable")
    return [str(s) for s in lost.index[:limit]]


def _spans(frame: pd.DataFrame) -> list[tuple[float, float]]:
    """Merged ``(start, end)`` of the removed bins/chunks of one sample."""
    spans: list[tuple[float, float]] = []
    for a, b in sorted(zip(frame["t_start"], frame["t_end"])):
        if spans and a <= spans[-1][1] + 1e-12:
            spans[-1] = (spans[-1][0], max(b, spans[-1][1]))
        else:
            spans.append((float(a), float(b)))
    return spans


@styled
def time_qc_figure(sample_id: str, traces: pd.DataFrame, *, pct_removed: float | None = None
                   ) -> plt.Figure:
    """Rate (top) and signal levels (bottom) along Time of one sample, removed stretches shaded.

    Parameters
    ----------
    sample_id
        The sample.
    traces
        Its rows of ``time_qc.csv``.
    pct_removed
        Shown in the title.
    """
    rate = traces[traces["kind"] == "rate"]
    signal = traces[traces["kind"] == "signal"]
    shaded = _spans(pd.concat([rate[rate["removed"].astype(bool)],
                               signal[signal["removed"].astype(bool)]]))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6.4, 3.4), sharex=True,
                                   gridspec_kw={"height_ratios": [1, 1.4]})
    mid = 0.5 * (rate["t_start"].to_numpy(float) + rate["t_end"].to_numpy(float))
    ax1.step(mid, rate["rate"].to_numpy(float), where="mid", color="#2c3e50", lw=0.8)
    ax1.set_ylabel("events / time unit")
    levels = [c for c in signal.columns if c.startswith("level_")
              and signal[c].notna().any()]
    if levels and len(signal):
        moved = sorted(levels, key=lambda c: -float(np.nanmax(np.abs(
            signal[c] - np.nanmedian(signal[c])))))[:_TRACES]
        smid = 0.5 * (signal["t_start"].to_numpy(float) + signal["t_end"].to_numpy(float))
        for c in moved:
            ax2.plot(smid, signal[c].to_numpy(float), lw=0.9, marker=".", ms=2,
                     label=c.removeprefix("level_"))
        ax2.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax2.set_ylabel("mean asinh(x/150)")
    ax2.set_xlabel("Time")
    for ax in (ax1, ax2):
        for a, b in shaded:
            ax.axvspan(a, b, color="#e74c3c", alpha=0.25, lw=0)
    title = sample_id if pct_removed is None else f"{sample_id}: {pct_removed:.1f} % removed"
    fig.suptitle(title, x=0.01, ha="left")
    fig.tight_layout()
    return fig
