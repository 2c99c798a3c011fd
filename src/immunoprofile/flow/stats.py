"""Per-population statistics of one gated FCS data set.

Contract: :func:`population_stats` turns a gating result (boolean masks over all events) and the
data set it came from into one tidy row per population -- count, % of parent, % of total, and per
marker the median (MFI), geometric mean and robust CV, all on the compensated, untransformed scale.

How (one pass per marker): events are grouped once by membership pattern (the set of
populations holding them), each marker column is sorted once within those groups, and every
population's exact order statistics are read off the shared ordering by bisection (a population
is a union of groups). Medians and percentiles are the very values a per-population partition
gives.

Definitions (what a reader of ``populations.csv`` should know)
-------------------------------------------------------------
- ``pct_parent = 100 * count / count(parent)``, ``pct_total = 100 * count / n_events``; NaN when
  the denominator is 0 (an empty parent has no frequency, not 0 %).
- ``mfi_<m>``: median of the compensated values of marker ``m`` in the population (NaN if empty).
- ``gmean_<m>``: geometric mean of the population's *positive* values of ``m``
  (``exp(mean(log x))`` over ``x > 0``); compensated data have zeros and negatives, which a
  geometric mean cannot include. NaN when no value is positive.
- ``rcv_<m>``: robust CV as FlowJo defines it,
  ``100 * 0.5 * (P84.13 - P15.87) / median`` (the percentiles that bracket ±1 SD of a normal
  distribution); NaN when the median is not positive. Percentiles use numpy's linear interpolation.
- ``<m>`` is the channel's ``$PnS`` marker, or its ``$PnN`` when the marker is blank; scatter
  (FSC*/SSC*/FS/SS) and time channels get no marker statistics unless asked for by ``markers``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from .compensation import (
    Compensation,
    CompensationSpec,
    compensated_channels,
    sample_compensation,
)
from .options import STATISTICS  # the marker statistics, in column order (one list)

__all__ = ["population_stats", "marker_columns", "is_scatter_or_time", "STATISTICS"]

_PREFIX = {"median": "mfi", "gmean": "gmean", "rcv": "rcv"}

#: Rows compensated at a time (float64 blocks that stay in cache).
_BLOCK_ROWS = 1 << 15

#: The percentiles behind FlowJo's robust CV (±1 SD of a normal distribution).
_RCV_LOW, _RCV_HIGH = 15.865525393145708, 84.13447460685429


def is_scatter_or_time(channel: str) -> bool:
    """Whether a ``$PnN`` is a scatter or time parameter (excluded from default marker stats).

    Parameters
    ----------
    channel
        The channel name.

    Returns
    -------
    bool
    """
    c = channel.strip().upper()
    return (c.startswith(("FSC", "SSC", "FS ", "SS ", "FS-", "SS-")) or c in ("FS", "SS")
            or c.startswith("TIME"))


def marker_columns(fcs: Any, markers: Sequence[str] | None = None) -> list[tuple[int, str]]:
    """Channels that get marker statistics, as ``(column index, label)`` pairs.

    Parameters
    ----------
    fcs
        The :class:`~immunoprofile.flow.fcs.FCSData`.
    markers
        Channel names or markers to report; ``None`` = every channel but scatter and time.

    Returns
    -------
    list of (int, str)
        Column index and the label used in ``mfi_<label>`` (``$PnS``, else ``$PnN``; a label that
        repeats is suffixed with its channel, ``CD4 [PE-H]``).
    """
    if markers is None:
        idx = [i for i, c in enumerate(fcs.channels) if not is_scatter_or_time(c)]
    else:
        idx = []
        for m in markers:
            i = fcs.channel_index(m)
            if i not in idx:
                idx.append(i)
    labels = [(fcs.markers[i] or fcs.channels[i]).strip() or fcs.channels[i] for i in idx]
    out = []
    for i, label in zip(idx, labels):
        if labels.count(label) > 1:
            label = f"{label} [{fcs.channels[i]}]"
        out.append((i, label))
    return out


def _compensation(result: Any, fcs: Any,
                  spillover: CompensationSpec | Compensation | None) -> Compensation:
    """The compensation of the marker statistics: the gating result's own when it carries one
    (a different ``spillover`` is refused), else ``spillover`` (``None``: the file's own)."""
    own = getattr(result, "compensation", None)
    if own is None:
        return sample_compensation("file" if spillover is None else spillover, fcs)
    if spillover is not None:
        asked = sample_compensation(spillover, fcs)
        if asked.spillover != own.spillover:
            raise InputError(getattr(fcs, "path", None),
                             f"statistics asked for compensation {asked.origin!r} but the "
                             f"events were gated with {own.origin!r}; gate with the "
                             "compensation wanted (evaluate(..., spillover=...))")
    return own


def _marker_values(result: Any, fcs: Any, comp: Compensation,
                   cols: list[int]) -> list[np.ndarray]:
    """Compensated values of each marker column, channel-major: the gating result's own where
    the gates used the channel, the rest compensated the same way (float64, then the data's
    dtype)."""
    ev = np.asarray(fcs.events)
    dtype = ev.dtype if ev.dtype.kind == "f" else np.dtype(np.float64)
    have: Mapping[str, np.ndarray] = getattr(result, "compensated", None) or {}
    names = [fcs.channels[i] for i in cols]
    todo = [i for i, c in zip(cols, names)
            if c not in have or have[c].dtype != dtype or have[c].shape != (ev.shape[0],)]
    out = np.empty((len(todo), ev.shape[0]), dtype=dtype)
    for start in range(0, ev.shape[0] if todo else 0, _BLOCK_ROWS):  # float64 a block at a time, as the engine
        rows = slice(start, start + _BLOCK_ROWS)
        out[:, rows] = compensated_channels(ev[rows], fcs.channels, comp.spillover, todo)
    computed = dict(zip(todo, out))
    return [computed[i] if i in computed else have[c] for i, c in zip(cols, names)]


def population_stats(result: Any, fcs: Any, *,
                     spillover: CompensationSpec | Compensation | None = None,
                     sample_id: str, markers: Sequence[str] | None = None,
                     statistics: Sequence[str] = STATISTICS) -> pd.DataFrame:
    """Tidy statistics, one row per population of ``result``.

    Parameters
    ----------
    result
        A gating result with ``masks`` (population id -> boolean array over all events, file
        order), ``paths`` (id -> population path) and ``parents`` (id -> parent id or ``None``),
        as returned by :func:`immunoprofile.flow.engine.evaluate`.
    fcs
        The :class:`~immunoprofile.flow.fcs.FCSData` that was gated.
    spillover
        Compensation for the marker statistics. A gating result from
        :func:`~immunoprofile.flow.engine.evaluate` carries its own (``result.compensation``),
        which is used: leave this ``None``, or pass the same (anything else is an
        :class:`InputError`). For other results: a
        :data:`~immunoprofile.flow.compensation.CompensationSpec` (``"file"``, ``"none"``, a
        :class:`~immunoprofile.flow.compensation.Spillover`, a matrix path); ``None`` = ``"file"``.
    sample_id
        Written in the ``sample_id`` column.
    markers
        Channels/markers to summarise; ``None`` = all but scatter and time (see
        :func:`marker_columns`).
    statistics
        Which marker statistics to compute, a subset of :data:`STATISTICS` (``median`` → the
        ``mfi_`` columns). The geometric mean costs a logarithm per event; the percentiles of
        the robust CV come almost free with the median.

    Returns
    -------
    pandas.DataFrame
        ``sample_id, population, parent, count, pct_parent, pct_total, mfi_<m>..., gmean_<m>...,
        rcv_<m>...``; ``parent`` is the parent's path (``""`` for top-level populations). Rows in
        the result's population order (parents before children).

    Raises
    ------
    InputError
        When a mask does not cover the data set, a parent is unknown, a marker is not found, or
        ``spillover`` differs from the compensation the result was gated with.
    """
    wanted = tuple(stat for stat in STATISTICS if stat in set(statistics))
    unknown = set(statistics) - set(STATISTICS)
    if unknown:
        raise InputError(None, f"unknown statistic(s) {sorted(unknown)}; choose from "
                               f"{', '.join(STATISTICS)}")
    n_total = int(fcs.n_events)
    cols = marker_columns(fcs, markers) if wanted else []
    comp = _compensation(result, fcs, spillover)
    masks: Mapping[str, np.ndarray] = result.masks
    paths: Mapping[str, str] = result.paths
    parents: Mapping[str, str | None] = result.parents
    path_of = lambda pid: str(paths.get(pid, pid))  # noqa: E731

    # Marker-major layout: each population gathers contiguous columns by index (``take`` on a
    # 1-D array is ~10x faster than a 2-D boolean row gather).
    columns = _marker_values(result, fcs, comp, [i for i, _ in cols]) if cols else []
    counts: dict[str, int] = {}
    rows: list[dict[str, Any]] = []
    for pid, mask in masks.items():
        m = np.asarray(mask)
        if m.dtype != np.bool_ or m.shape != (n_total,):
            raise InputError(getattr(fcs, "path", None),
                             f"mask of population {path_of(pid)} has shape {m.shape} "
                             f"({m.dtype}); expected {n_total} booleans")
        counts[pid] = int(np.count_nonzero(m))
    for pid, mask in masks.items():
        parent = parents.get(pid)
        if parent is None:
            parent_count, parent_path = n_total, ""
        elif parent in counts:
            parent_count, parent_path = counts[parent], path_of(parent)
        else:
            raise InputError(getattr(fcs, "path", None),
                             f"population {path_of(pid)} has unknown parent {parent!r}")
        count = counts[pid]
        rows.append({"sample_id": sample_id, "population": path_of(pid), "parent": parent_path,
                     "count": count, "pct_parent": _pct(count, parent_count),
                     "pct_total": _pct(count, n_total)})
    stats_rows = _all_marker_stats(columns, [np.asarray(m) for m in masks.values()],
                                   list(counts.values()), wanted) if cols else []
    table = pd.DataFrame(rows, columns=["sample_id", "population", "parent", "count",
                                        "pct_parent", "pct_total"])
    table["count"] = table["count"].astype(np.int64)
    table["pct_parent"] = table["pct_parent"].astype(np.float64)
    table["pct_total"] = table["pct_total"].astype(np.float64)
    if cols:
        labels = [label for _, label in cols]
        block = np.vstack(stats_rows) if stats_rows else np.empty((0, len(wanted) * len(cols)))
        names = [f"{_PREFIX[stat]}_{x}" for stat in wanted for x in labels]
        table = pd.concat([table, pd.DataFrame(block, columns=names, index=table.index)], axis=1)
    return table


def _pct(count: int, denominator: int) -> float:
    return 100.0 * count / denominator if denominator > 0 else float("nan")


def _all_marker_stats(columns: list[np.ndarray], masks: list[np.ndarray], counts: list[int],
                      wanted: Sequence[str]) -> list[np.ndarray]:
    """One statistics row per population (see :func:`_marker_stats` for the layout).

    Events are grouped once by membership pattern (which populations hold them) and each
    marker column is sorted once within those groups; every population's exact order statistics
    then come from the shared ordering (:func:`_class_stats`). Strategies whose populations cut
    the events into too many patterns fall back to one selection per population.
    """
    classes = _membership_classes(masks, columns[0].size) if masks else None
    if classes is None:
        return [_marker_stats(columns, np.flatnonzero(m), wanted) for m in masks]
    block = _class_stats(columns, classes, np.asarray(counts, dtype=np.int64), wanted)
    return list(block)


#: Thresholds tested per bisection step of :func:`_select` (a ``_FAN``-ary search).
_FAN = 16

#: Beyond this many membership patterns a shared ordering stops paying for itself.
_MAX_CLASSES = 2048


def _densify(label: np.ndarray) -> tuple[np.ndarray, int]:
    """Renumber labels to ``0..k-1`` keeping their order; returns the labels and ``k``."""
    present = np.bincount(label) > 0
    remap = (np.cumsum(present) - 1).astype(np.uint16)
    return remap.take(label), int(np.count_nonzero(present))


def _membership_classes(masks: list[np.ndarray], n: int
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Group the events by membership pattern.

    Returns ``(order, starts, member)``: the indices of the events in at least one population,
    grouped by pattern (file order within a group); the group offsets into ``order``
    (``len = K + 1``); and ``member[p, c]``, whether population ``p`` holds group ``c``. ``None``
    when there are more than :data:`_MAX_CLASSES` patterns.
    """
    if len(masks) <= 16:
        return _few_masks_classes(masks, n)
    label = np.zeros(n, dtype=np.uint16)
    bits = 0
    for m in masks:
        if bits == 16:  # the next bit would overflow: renumber the patterns seen so far
            label, k = _densify(label)
            if k > _MAX_CLASSES:
                return None
            bits = max(1, (k - 1).bit_length())
        np.left_shift(label, 1, out=label)
        np.bitwise_or(label, m, out=label)
        bits += 1
    label, k = _densify(label)
    if k > _MAX_CLASSES:
        return None
    order = np.argsort(label, kind="stable")  # radix sort of 16-bit labels
    starts = np.zeros(k + 1, dtype=np.int64)
    np.cumsum(np.bincount(label, minlength=k), out=starts[1:])
    first = order[starts[:-1]]
    member = np.stack([m[first] for m in masks])
    if not member[:, 0].any():  # pattern 0 (the smallest) = in no population: not needed
        order = order[starts[1]:]
        starts = starts[1:] - starts[1]
        member = member[:, 1:]
    return order, starts, member


def _few_masks_classes(masks: list[np.ndarray], n: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """:func:`_membership_classes` for at most 16 populations: each event's pattern is its
    16-bit label itself (built block by block, in cache), so no renumbering is needed and
    population ``p`` holds pattern ``v`` when bit ``P - 1 - p`` of ``v`` is set."""
    n_pop = len(masks)
    label = np.zeros(n, dtype=np.uint16)
    for start in range(0, n, _BLOCK_ROWS):
        rows = slice(start, start + _BLOCK_ROWS)
        block = label[rows]
        for m in masks:
            np.left_shift(block, 1, out=block)
            np.bitwise_or(block, m[rows], out=block)
    sizes = np.bincount(label, minlength=1 << n_pop)
    present = np.flatnonzero(sizes)
    if present.size > _MAX_CLASSES:
        return None
    order = np.argsort(label, kind="stable")  # radix sort of 16-bit labels
    del label
    starts = np.zeros(present.size + 1, dtype=np.int64)
    np.cumsum(sizes[present], out=starts[1:])
    shifts = np.arange(n_pop - 1, -1, -1)
    member = ((present[None, :] >> shifts[:, None]) & 1).astype(bool)
    if present[0] == 0:  # pattern 0 = in no population: not needed
        order = order[starts[1]:]
        starts = starts[1:] - starts[1]
        member = member[:, 1:]
    return order, starts, member


def _keys(values: np.ndarray) -> np.ndarray:
    """Unsigned integers ordered as the (non-NaN) floats ``values`` are."""
    utype = np.uint32 if values.dtype.itemsize == 4 else np.uint64
    u = values.view(utype)
    sign = utype(1) << utype(8 * values.dtype.itemsize - 1)
    return np.where(u & sign, ~u, u | sign)


def _from_keys(keys: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`_keys`."""
    utype = keys.dtype.type
    sign = utype(1) << utype(8 * dtype.itemsize - 1)
    return np.where(keys & sign, keys & ~sign, ~keys).view(dtype)


def _class_stats(columns: list[np.ndarray], classes: tuple[np.ndarray, np.ndarray, np.ndarray],
                 counts: np.ndarray, wanted: Sequence[str]) -> np.ndarray:
    """Statistics of every population from one within-group sort per marker.

    The ``r``-th smallest value of a population (a union of groups, each sorted) is the
    smallest value ``t`` with ``#(values <= t) >= r + 1``: found by bisection over the values'
    bit patterns (order-preserving integer keys), counting with one ``searchsorted`` per group.
    Exact: the answer is always one of the data values, as with a partition.
    """
    order, starts, member = classes
    n_pop, n_cls = member.shape
    m = len(columns)
    out = {stat: np.full((n_pop, m), np.nan) for stat in wanted}
    quantiles = (_RCV_LOW, 50.0, _RCV_HIGH) if "rcv" in out else (50.0,)
    need_order = "median" in out or "rcv" in out
    seg = np.empty(order.size, dtype=columns[0].dtype)
    for j in range(m):
        np.take(columns[j], order, out=seg)
        parts = [seg[starts[c]:starts[c + 1]] for c in range(n_cls)]
        for part in parts:
            part.sort()
        # NaN sorts last: each group's valid values are a prefix
        valid = [part if part.size == 0 or not np.isnan(part[-1])
                 else part[:int(np.count_nonzero(~np.isnan(part)))] for part in parts]
        if "gmean" in out:
            log_sum = np.zeros(n_cls)
            n_pos = np.zeros(n_cls, dtype=np.int64)
            for c, part in enumerate(valid):
                pos = part[int(np.searchsorted(part, 0, side="right")):]
                if pos.size:
                    # log in the data's precision (fast SIMD), accumulate in float64
                    log_sum[c] = np.log(pos).sum(dtype=np.float64)
                    n_pos[c] = pos.size
            for p in range(n_pop):
                total = int(n_pos[member[p]].sum())
                if total:
                    out["gmean"][p, j] = float(np.exp(log_sum[member[p]].sum() / total))
        if need_order:
            has_nan = np.array([v.size < part.size for v, part in zip(valid, parts)])
            pops = [p for p in range(n_pop) if counts[p] > 0 and not has_nan[member[p]].any()]
            queries = _rank_queries(pops, counts, quantiles)
            if not queries[0]:
                continue
            value = _select(valid, member, *queries)
            at = dict(zip(zip(*queries), value))
            for p in pops:
                values = _interpolate(int(counts[p]), quantiles, lambda r: at[(p, r)])
                med = values[len(values) // 2]
                if "median" in out:
                    out["median"][p, j] = med
                if "rcv" in out and med > 0:
                    out["rcv"][p, j] = 100.0 * 0.5 * (values[-1] - values[0]) / med
    return np.concatenate([out[stat] for stat in wanted], axis=1)


def _ranks(k: int, qs: Sequence[float]) -> tuple[list[float], list[int]]:
    """numpy's linear-interpolation positions of ``qs`` in ``k`` values and the ranks they use."""
    positions = [(k - 1) * q / 100.0 for q in qs]
    ranks = sorted({r for p in positions
                    for r in (int(np.floor(p)), min(int(np.floor(p)) + 1, k - 1))})
    return positions, ranks


def _interpolate(k: int, qs: Sequence[float], value) -> list[float]:
    """numpy's default (linear) percentiles from the order statistics ``value(rank)``."""
    out = []
    for p in _ranks(k, qs)[0]:
        lo = int(np.floor(p))
        a, b, t = value(lo), value(min(lo + 1, k - 1)), p - lo
        # numpy's _lerp: interpolate from the nearer end for stability
        out.append(b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t)
    return out


def _rank_queries(pops: list[int], counts: np.ndarray,
                  qs: Sequence[float]) -> tuple[list[int], list[int]]:
    qpop: list[int] = []
    qrank: list[int] = []
    for p in pops:
        for r in _ranks(int(counts[p]), qs)[1]:
            qpop.append(p)
            qrank.append(r)
    return qpop, qrank


def _select(parts: list[np.ndarray], member: np.ndarray, qpop: list[int],
            qrank: list[int]) -> list[float]:
    """``sorted(union of parts[c] for c in population)[rank]`` for each query (NaN-free parts,
    each sorted)."""
    dtype = parts[0].dtype if parts else np.dtype(np.float64)
    pop = np.asarray(qpop)
    need = np.asarray(qrank, dtype=np.int64) + 1
    holds = member[pop]  # (queries, groups)
    users = [np.flatnonzero(holds[:, c] & (parts[c].size > 0)) for c in range(len(parts))]
    lo_vals = np.full(pop.size, np.inf, dtype=dtype)
    hi_vals = np.full(pop.size, -np.inf, dtype=dtype)
    for c, q in enumerate(users):
        if q.size:
            np.minimum.at(lo_vals, q, parts[c][0])
            np.maximum.at(hi_vals, q, parts[c][-1])
    lo, hi = _keys(lo_vals), _keys(hi_vals)
    one = lo.dtype.type(1)
    ktype = lo.dtype.type
    steps = np.arange(1, _FAN, dtype=lo.dtype)  # candidates j * width / _FAN, j = 1.._FAN-1
    while True:
        open_ = np.flatnonzero(lo < hi)
        if not open_.size:
            break
        # _FAN-ary search: one pass over the groups tests _FAN - 1 thresholds per query (the
        # Python loop over groups, not the searchsorted, is what costs)
        a, width = lo[open_], hi[open_] - lo[open_]
        step, rem = width // ktype(_FAN), width % ktype(_FAN)
        cand = (a[:, None] + step[:, None] * steps
                + (rem[:, None] * steps) // ktype(_FAN))  # exact: no overflow, lo <= c < hi
        t = _from_keys(cand, dtype)
        count = np.zeros(cand.shape, dtype=np.int64)
        where = np.full(pop.size, -1, dtype=np.int64)
        where[open_] = np.arange(open_.size)
        for c, q in enumerate(users):
            if not q.size:
                continue
            k = where[q]
            k = k[k >= 0]
            if k.size:
                count[k] += np.searchsorted(parts[c], t[k].ravel(),
                                            side="right").reshape(k.size, -1)
        enough = count >= need[open_][:, None]  # monotone along each row
        first = np.argmax(enough, axis=1)  # first candidate with enough values
        found = enough[np.arange(open_.size), first]
        rows = np.arange(open_.size)
        new_hi = np.where(found, cand[rows, first], hi[open_])
        below = np.where(found, first - 1, _FAN - 2)  # the last candidate without enough
        new_lo = np.where(below >= 0, cand[rows, np.maximum(below, 0)] + one, a)
        hi[open_], lo[open_] = new_hi, new_lo
    # -0.0 and 0.0 compare equal; report zero the way a partition of the data would
    return [float(v) + 0.0 for v in _from_keys(lo, dtype)]


def _marker_stats(columns: list[np.ndarray], idx: np.ndarray,
                  wanted: Sequence[str] = STATISTICS) -> np.ndarray:
    """The ``wanted`` statistics (median, geometric mean of positive values, robust CV) of each
    row of ``columns`` (one marker per row) over the events ``idx``, laid out statistic-major:
    ``[medians..., gmeans..., rcvs...]`` for the statistics asked for."""
    m = len(columns)
    out = {stat: np.full(m, np.nan) for stat in wanted}
    if idx.size:
        quantiles = (_RCV_LOW, 50.0, _RCV_HIGH) if "rcv" in out else (50.0,)
        for j in range(m):
            x = columns[j].take(idx)
            if "gmean" in out:
                pos = x[x > 0]
                if pos.size:
                    # log in the data's precision (fast SIMD), accumulate in float64
                    out["gmean"][j] = float(np.exp(np.log(pos).mean(dtype=np.float64)))
            if "median" in out or "rcv" in out:
                values = _percentiles(x, quantiles)
                med = values[len(values) // 2]
                if "median" in out:
                    out["median"][j] = med
                if "rcv" in out and med > 0:
                    out["rcv"][j] = 100.0 * 0.5 * (values[-1] - values[0]) / med
    return np.concatenate([out[stat] for stat in wanted]) if wanted else np.empty(0)


def _percentiles(x: np.ndarray, qs: Sequence[float]) -> list[float]:
    """numpy's default (linear) percentiles of a 1-D array; ``x`` may be reordered in place.

    Exact order statistics, found faster than ``np.percentile`` (whose multi-pivot partition is
    slow): see :func:`_order_stats`.
    """
    k = x.size
    if np.isnan(x).any():
        return [float("nan")] * len(qs)
    value = _order_stats(x, _ranks(k, qs)[1])
    return _interpolate(k, qs, value.__getitem__)


#: Below this size a plain partition is as fast as anything cleverer.
_SELECT_MIN = 50_000
_SAMPLE = 4096


def _order_stats(x: np.ndarray, ranks: list[int]) -> dict[int, float]:
    """``sorted(x)[r]`` for each rank (NaN-free ``x``; may be reordered in place).

    Large arrays: a strided sample brackets each rank between two sample values, one filtering
    pass counts the values below the bracket and keeps those inside it, and only that small
    subset is partitioned (Floyd-Rivest style). If the bracket misses the rank (adversarial
    ordering), the exact partition path runs instead, so the result is always exact.
    """
    k = x.size
    value: dict[int, float] = {}
    if k >= _SELECT_MIN:
        sample = np.sort(x[::max(1, k // _SAMPLE)])
        s = sample.size
        todo = []
        for r in ranks:
            if r in value:
                continue
            f = r / (k - 1) if k > 1 else 0.5
            sp = int(f * (s - 1))
            margin = int(5 * np.sqrt(s * f * (1 - f))) + 8  # ~5 sd of a sample quantile's rank
            lo = sample[max(0, sp - margin)]
            hi = sample[min(s - 1, sp + 1 + margin)]
            below = int(np.count_nonzero(x < lo))
            inside = x[(x >= lo) & (x <= hi)]
            if below <= r < below + inside.size:
                inside.partition(r - below)
                value[r] = float(inside[r - below])
                # the next rank, when it is inside too, is the minimum of the upper part
                if r + 1 < below + inside.size and r + 1 in ranks:
                    value[r + 1] = float(inside[r - below + 1:].min())
            else:
                todo.append(r)
        if not todo:
            return value
        ranks = todo

    def solve(a: int, b: int, rs: list[int]) -> None:
        if not rs:
            return
        mid = rs[len(rs) // 2]
        x[a:b].partition(mid - a)
        value[mid] = float(x[mid])
        solve(a, mid, [r for r in rs if r < mid])
        solve(mid + 1, b, [r for r in rs if r > mid])

    solve(0, k, ranks)
    return value
