"""Acquisition quality over time: find and remove stretches of bad events (clogs, bubbles,
flow-rate surges, signal drift), in the spirit of flowAI and PeacoQC.

Contract: :func:`time_qc` looks at one :class:`~immunoprofile.flow.fcs.FCSData` and returns a
:class:`TimeQCResult` whose ``keep`` mask (file order) is the root gate ``TimeQC`` every
population sits under (:func:`apply_root_gate`); ``rate_bins`` and ``signal_bins`` hold the
traces behind the decision, for the report.

The rule (every threshold is relative to the file's own robust level, median ± k × MAD):

1. **Event rate** -- events are binned along ``Time`` in equal-width bins holding about
   ``events_per_bin`` (40) events on average. A bin is flagged when its count departs from
   the median count by more than ``rate_k`` (5) robust SDs (1.4826 × MAD, never below the
   Poisson SD √median), or holds less than ``gap_fraction`` (¼) of the median count: a clog
   shows as empty or thin bins, its release as a burst. Bins hold a whole number of Time ticks.
   A flagged stretch then grows into neighbouring bins departing the same way by more than
   ``grow_k`` (2) robust SDs (hysteresis: clogs do not start and end on bin edges).
2. **Signal** -- the events not flagged by rate are cut, in time order, into consecutive
   chunks of ``signal_events_per_bin`` (250) events. For each QC channel (fluorescence and
   scatter; on an asinh scale, cofactor 150, so shifts are relative) the chunk's mean and
   standard deviation (asinh values are bounded, so both are stable, while the median of a
   bimodal channel jumps between its modes) are compared with their median over chunks: a
   chunk is flagged when either departs by more than ``signal_k`` (5) robust SDs -- the MAD
   over chunks, never below the sampling error of a chunk of that size -- *and* by at least
   ``min_shift`` (0.15 asinh units, about 15 % for bright signals). Rate is judged first so that a burst's
   own events do not drag a chunk of good events with them; chunks never straddle a stretch
   removed for rate. The file's level is re-estimated without the flagged chunks until the
   flags are stable (a drift over a third of the file would otherwise pull the median and
   inflate the MAD).
3. **Short good stretches** -- good stretches shorter than ``min_good_bins`` (3) rate bins
   between two flagged stretches are removed too (PeacoQC's ``consecutive_bins``).

A file without a usable ``Time`` channel (absent, constant, non-finite, running backwards more
than once per thousand events, or too short for 10 bins) passes untouched with a warning.

Sensitivity, measured on the simulated trial (``tests/simulate``, ``tests/flow/test_timeqc.py``):
a clog (0.8 s gap, then 500 junk events in 0.1 s) is removed completely with < 1 % of a file's
good events; a fluorescence sag is found where it falls below about 0.6-0.8 of the file's level
(bimodal channels make chunk means noisy); clean files lose nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .options import TimeQCOptions  # the thresholds (one model: function, config and CLI)

__all__ = ["TimeQCOptions", "TimeQCResult", "time_qc", "apply_root_gate", "ROOT_NAME",
           "time_channel"]

#: Name (and population id) of the root gate.
ROOT_NAME = "TimeQC"

_COFACTOR = 150.0


@dataclass
class TimeQCResult:
    """The outcome of :func:`time_qc` on one file.

    Attributes
    ----------
    keep
        Boolean mask over all events (file order): the ``TimeQC`` population.
    applied
        Whether a usable Time channel was found (``False``: everything kept).
    rate_bins
        One dict per rate bin: ``t_start, t_end, count, rate`` (events/s), ``flagged``.
    signal_bins
        One dict per signal chunk: ``t_start, t_end, n, flagged, reason`` and
        ``median_<channel>`` (asinh units) for every QC channel.
    removed_stretches
        ``(t_start, t_end)`` of every removed stretch, in Time units.
    warnings
        Why QC was skipped, or what was noticed.
    """

    keep: np.ndarray
    applied: bool
    rate_bins: list[dict[str, Any]] = field(default_factory=list)
    signal_bins: list[dict[str, Any]] = field(default_factory=list)
    removed_stretches: list[tuple[float, float]] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def n_removed(self) -> int:
        """Events removed."""
        return int(self.keep.size - np.count_nonzero(self.keep))

    @property
    def pct_removed(self) -> float:
        """Percentage of events removed (0 for an empty file)."""
        return 100.0 * self.n_removed / self.keep.size if self.keep.size else 0.0

    def summary(self) -> dict[str, Any]:
        """Small, picklable summary (for ``SampleGating`` and provenance)."""
        return {"applied": self.applied, "n_events": int(self.keep.size),
                "n_removed": self.n_removed, "pct_removed": round(self.pct_removed, 4),
                "removed_stretches": [[float(a), float(b)] for a, b in self.removed_stretches],
                "channels": list(self.channels), "warnings": list(self.warnings),
                "rate_bins": self.rate_bins, "signal_bins": self.signal_bins}


def time_channel(fcs: Any) -> int | None:
    """Index of the file's Time channel (``$PnN`` ``Time``, any case), or ``None``."""
    for i, c in enumerate(fcs.channels):
        if c.strip().upper() in ("TIME", "HDR-T", "TIME-A"):
            return i
    return None


def _robust(values: np.ndarray) -> tuple[float, float]:
    med = float(np.median(values))
    return med, 1.4826 * float(np.median(np.abs(values - med)))


def time_qc(fcs: Any, options: TimeQCOptions | None = None) -> TimeQCResult:
    """Flag and remove bad stretches of acquisition along ``Time``.

    Parameters
    ----------
    fcs
        The data set.
    options
        Thresholds; defaults documented in :class:`TimeQCOptions`.

    Returns
    -------
    TimeQCResult
    """
    opt = options or TimeQCOptions()
    n = int(fcs.n_events)
    keep = np.ones(n, dtype=bool)
    ti = time_channel(fcs)
    if ti is None:
        return TimeQCResult(keep, False, warnings=["no Time channel: time QC skipped"])
    t = np.asarray(fcs.events[:, ti], dtype=np.float64)
    if not np.isfinite(t).all() or n < 10 * min(opt.events_per_bin, 50) or np.ptp(t) <= 0:
        return TimeQCResult(keep, False, warnings=["Time channel not usable (constant, "
                                                   "non-finite or too few events): time QC "
                                                   "skipped"])
    order = np.argsort(t, kind="stable")
    if np.any(np.diff(t) < 0):
        backwards = int(np.count_nonzero(np.diff(t) < 0))
        if backwards > max(1, n // 1000):
            return TimeQCResult(keep, False, warnings=[f"Time runs backwards {backwards} times "
                                                       "(resets?): time QC skipped"])
    ts = t[order]
    n_bins = int(np.clip(round(n / opt.events_per_bin), 10, 5000))
    span = float(ts[-1] - ts[0])
    width = span / n_bins
    # Time is often recorded in ticks ($TIMESTEP): a bin must hold a whole number of ticks, or
    # counts alternate between bins of k and k+1 ticks and the spread of counts is inflated
    steps = np.diff(np.unique(ts))
    tick = float(steps.min()) if steps.size and np.unique(ts).size < n // 2 else 0.0
    if tick > 0 and width > tick:
        width = max(1, round(width / tick)) * tick
        origin = float(ts[0]) - tick / 2
    else:
        origin = float(ts[0])
    n_bins = int(np.floor((ts[-1] - origin) / width)) + 1
    edges = origin + width * np.arange(n_bins + 1)
    which = np.clip(np.searchsorted(edges, ts, side="right") - 1, 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins).astype(np.float64)
    full = counts[:-1] if n_bins > 2 else counts  # the last bin is usually cut short
    med, sd = _robust(full)
    sd = max(sd, np.sqrt(max(med, 1.0)))
    bad_rate = (np.abs(counts - med) > opt.rate_k * sd) | (counts < opt.gap_fraction * med)
    # the last, partial bin: judged on its rate over the part of it that was acquired
    tail = (float(ts[-1]) - edges[-2]) / width
    if n_bins > 2 and tail < 1:
        expect = med * tail
        bad_rate[-1] = abs(counts[-1] - expect) > opt.rate_k * max(sd * np.sqrt(tail), 1.0) \
            and counts[-1] > expect
    # hysteresis: a flagged stretch grows into neighbours departing the same way by more than
    # grow_k SDs (a burst or gap rarely starts and ends on bin edges)
    dev = (counts - med) / sd
    grown = True
    while grown:
        grown = False
        for b in np.flatnonzero(bad_rate):
            for nb in (b - 1, b + 1):
                if 0 <= nb < n_bins and not bad_rate[nb] and abs(dev[nb]) > opt.grow_k \
                        and np.sign(dev[nb]) == np.sign(dev[b]):
                    bad_rate[nb] = grown = True

    # ----- signal, on the events rate did not flag ---------------------------------------------
    names = [c for i, c in enumerate(fcs.channels) if i != ti] if opt.channels is None else \
        [fcs.channels[fcs.channel_index(c)] for c in opt.channels]
    cols = [fcs.channels.index(c) for c in names]
    ok_sorted = ~bad_rate[which]
    rows = order[ok_sorted]
    bad_event = np.zeros(n, dtype=bool)
    bad_event[order[~ok_sorted]] = True
    signal_bins: list[dict[str, Any]] = []
    k = max(1, int(opt.signal_events_per_bin))
    # chunks never straddle a stretch removed for rate (they would mix both sides of a clog)
    stretch_id = np.cumsum(bad_rate)[which[ok_sorted]]  # bad bins passed so far
    bounds_list = [0]
    for sid in np.unique(stretch_id):
        at = np.flatnonzero(stretch_id == sid)
        m = max(1, at.size // k)
        bounds_list += [int(at[0] + round(i * at.size / m)) for i in range(1, m + 1)]
    bounds = np.asarray(bounds_list)
    n_chunks = bounds.size - 1
    if n_chunks >= 5:
        data = np.arcsinh(np.asarray(fcs.events[np.ix_(rows, cols)], dtype=np.float64)
                          / _COFACTOR)
        meds = np.empty((n_chunks, len(cols)))
        sds = np.empty((n_chunks, len(cols)))
        for c in range(n_chunks):
            block = data[bounds[c]:bounds[c + 1]]
            meds[c], sds[c] = block.mean(axis=0), block.std(axis=0)
        flagged = np.zeros(n_chunks, dtype=bool)
        reasons: list[list[str]] = [[] for _ in range(n_chunks)]
        size = float(np.median(np.diff(bounds)))
        sizes = np.diff(bounds).astype(float)
        centred = data - data.mean(axis=0)
        var = np.maximum((centred ** 2).mean(axis=0), 1e-12)
        kurtosis = (centred ** 4).mean(axis=0) / var ** 2
        # the file's level is re-estimated without the chunks found so far, until stable: a
        # drift covering a third of the file would otherwise pull the level and inflate the MAD
        for _ in range(5):
            found = np.zeros(n_chunks, dtype=bool)
            reasons = [[] for _ in range(n_chunks)]
            ref = ~flagged if (~flagged).sum() >= 5 else np.ones(n_chunks, dtype=bool)
            for j, name in enumerate(names):
                # sampling error of a chunk's mean / SD (asinh values are bounded, so both are
                # stable): a floor under the MAD across chunks, which few chunks estimate poorly
                sd = float(np.sqrt(var[j]))
                se_mean = sd / np.sqrt(sizes)
                se_sd = sd * np.sqrt(max(kurtosis[j] - 1.0, 0.1) / (4 * sizes))
                for stat, label, floor in ((meds[:, j], "level", se_mean),
                                           (sds[:, j], "spread", se_sd)):
                    level, spread = _robust(stat[ref])
                    dev = np.abs(stat - level)
                    hit = (dev > opt.signal_k * np.maximum(spread, floor)) \
                        & (dev >= opt.min_shift)
                    for c in np.flatnonzero(hit):
                        reasons[c].append(f"{label} {name}")
                    found |= hit
            if np.array_equal(found, flagged):
                break
            flagged = found
        for c in range(n_chunks):
            chunk = rows[bounds[c]:bounds[c + 1]]
            if flagged[c]:
                bad_event[chunk] = True
            row = {"t_start": float(t[chunk[0]]), "t_end": float(t[chunk[-1]]),
                   "n": int(chunk.size), "flagged": bool(flagged[c]),
                   "reason": "; ".join(reasons[c][:4]) + (" ..." if len(reasons[c]) > 4 else "")}
            row.update({f"level_{name}": round(float(meds[c, j]), 5)
                        for j, name in enumerate(names)})
            signal_bins.append(row)

    # ----- per rate bin: removed if any of its events is bad; fill short good stretches -------
    bin_bad = np.zeros(n_bins, dtype=bool)
    np.logical_or.at(bin_bad, which, bad_event[order])
    bin_bad |= bad_rate
    filled = _fill_short(bin_bad, opt.min_good_bins)
    # events of a short good stretch between two bad ones go too
    bad_event[order[(filled & ~bin_bad)[which]]] = True
    bin_bad = filled
    keep = ~bad_event
    rate_bins = [{"t_start": float(edges[b]), "t_end": float(edges[b + 1]),
                  "count": int(counts[b]), "rate": float(counts[b] / width) if width else 0.0,
                  "flagged": bool(bad_rate[b]), "removed": bool(bin_bad[b])}
                 for b in range(n_bins)]
    stretches = _stretches(ts, keep[order])
    warnings = []
    if n_chunks < 5:
        warnings.append(f"only {rows.size} events: signal over time not checked")
    return TimeQCResult(keep, True, rate_bins, signal_bins, stretches, names, warnings)


def _fill_short(bad: np.ndarray, min_good: int) -> np.ndarray:
    out = bad.copy()
    idx = np.flatnonzero(bad)
    for a, b in zip(idx[:-1], idx[1:], strict=True):
        if 1 < b - a <= min_good:
            out[a:b] = True
    return out


def _stretches(ts: np.ndarray, keep_sorted: np.ndarray) -> list[tuple[float, float]]:
    """``(first, last)`` Time of each run of removed events (time order)."""
    out: list[tuple[float, float]] = []
    bad = ~keep_sorted
    if not bad.any():
        return out
    change = np.flatnonzero(np.diff(np.concatenate([[0], bad.astype(np.int8), [0]])))
    for a, b in zip(change[::2], change[1::2], strict=True):
        out.append((float(ts[a]), float(ts[b - 1])))
    return out


def apply_root_gate(result: Any, keep: np.ndarray, *, name: str = ROOT_NAME) -> Any:
    """Put a gating result computed on the kept events under a root population ``name``.

    Parameters
    ----------
    result
        :class:`~immunoprofile.flow.engine.GatingResult` of the strategy evaluated on the
        events ``keep`` selects (in file order).
    keep
        The root gate's mask over all events.
    name
        Id, name and path of the root population.

    Returns
    -------
    GatingResult
        Masks over all events: the root first, then every population (a subset of the root);
        top-level populations have the root as parent. Population paths are kept as the
        strategy names them, so features compare across runs with and without time QC.
    """
    from .engine import GatingResult

    keep = np.asarray(keep, dtype=bool)
    rows = np.flatnonzero(keep)
    masks = {name: keep}
    for pid, mask in result.masks.items():
        full = np.zeros(keep.size, dtype=bool)
        full[rows[np.asarray(mask, dtype=bool)]] = True
        masks[pid] = full
    parents = {name: None, **{pid: (name if parent is None else parent)
                              for pid, parent in result.parents.items()}}
    return GatingResult(masks=masks, counts={p: int(np.count_nonzero(m)) for p, m in masks.items()},
                        paths={name: name, **result.paths}, parents=parents,
                        n_events=int(keep.size), path=result.path,
                        warnings=list(result.warnings), fits=dict(getattr(result, "fits", {})),
                        # the same compensation; its columns (kept events only) are recomputed
                        compensation=getattr(result, "compensation", None))
