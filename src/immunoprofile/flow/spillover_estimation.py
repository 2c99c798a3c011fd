"""Spillover matrices computed from single-stain compensation controls.

Contract: :func:`estimate_spillover` takes single-stain control files and an unstained control
and returns a :class:`SpilloverEstimate` whose ``spillover`` is a
:class:`~immunoprofile.flow.compensation.Spillover` over the fluorescence detectors (rows without
a control stay identity rows, as in CytoExploreR); :func:`write_spillover_outputs` writes it as
``spillover.csv`` (FlowJo layout), the ``$SPILLOVER`` string, a per-control table, a figure and
provenance.

The method, per control (documented in ``docs/compensation.md``):

1. **Scatter pre-gate** -- an automatic density gate on FSC-A × log SSC-A (the connected region
   of the smoothed 2-D histogram around its densest non-debris peak, above
   ``density_level`` × the peak) followed by a singlet gate on FSC-H/FSC-A (within
   ``singlet_mads`` robust SDs of its median), or the user's gating strategy.
2. **Positive population** -- gated events whose primary-channel value exceeds the
   ``positive_quantile`` (99.5 %) of the unstained control's gated events, minus events at a
   detector's top margin (saturated events bend every slope).
3. **Spillover** -- for every other detector, the slope of a robust (Huber M-estimator, MASS
   ``rlm``'s default, scale by MAD) linear regression of detector on primary over the positive
   events, with an intercept. The intercept absorbs autofluorescence, so the estimate does not
   depend on the unstained matching the stained cells (7-AAD positives are dead cells, with
   their own autofluorescence), every positive event contributes instead of one median, and
   truncating on the predictor (the positive threshold) leaves a regression slope unbiased. In
   linear (untransformed) space a single-stain control follows ``raw = t · S[p, :] + background``
   exactly, so one regression per detector is the answer and AutoSpill's iterative refinement
   (needed on transformed data) adds nothing. ``method="median"`` gives CytoExploreR's estimate
   instead: ``(median_pos - median_unstained) / (same in the primary channel)``.
4. **Check** -- every control is compensated with the full matrix (all rows at once) and the
   residual slope of each detector on the primary channel is recomputed over its positive
   events. The row's own fit makes this nearly 0 by construction; what it catches is the
   interplay of rows through the inverse (and saturation or a wrong primary). Over all gated
   events, negatives included, the slope would also measure how the positives' and negatives'
   autofluorescence differ (0.037 for the reference 7-AAD control, whose positives are dead
   cells), which is not a compensation error.
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._options import takes_options
from ..errors import InputError
from .compensation import Spillover, compensate
from .options import CompensateOptions

__all__ = [
    "ControlSummary", "SpilloverEstimate", "estimate_spillover", "write_spillover_outputs",
    "read_channel_map", "fluorescence_channels", "scatter_gate", "robust_line",
    "plot_controls", "acquisition_date",
]

#: Fewest positive events a control may have for a slope to be estimated.
MIN_POSITIVE = 50


@dataclass
class ControlSummary:
    """What was done with one single-stain control.

    Attributes
    ----------
    file
        The control's path.
    channel
        Its stained (primary) detector.
    channel_source
        How the channel was found: ``map`` (``--channels``), ``keyword`` (a TEXT keyword or the
        file name names it) or ``data`` (the detector brightest relative to the unstained).
    n_events, n_gated, n_positive
        Events in the file, after the scatter gate, in the positive population.
    threshold
        Primary-channel value above which events count as positive.
    coefficients
        Detector -> estimated spillover (the matrix row).
    intercepts
        Detector -> regression intercept (background in that detector).
    residual_slopes
        Detector -> slope of compensated detector on compensated primary over the positive
        events (after the fact).
    """

    file: str
    channel: str
    channel_source: str
    n_events: int
    n_gated: int
    n_positive: int
    threshold: float
    coefficients: dict[str, float] = field(default_factory=dict)
    intercepts: dict[str, float] = field(default_factory=dict)
    residual_slopes: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def max_residual(self) -> float:
        """Largest absolute residual slope over the other detectors."""
        vals = [abs(v) for d, v in self.residual_slopes.items() if d != self.channel]
        return max(vals) if vals else 0.0


@dataclass
class SpilloverEstimate:
    """A spillover matrix computed from controls, with how it was computed.

    Attributes
    ----------
    spillover
        The matrix over :attr:`detectors` (identity rows where no control).
    controls
        One :class:`ControlSummary` per stained control, in input order.
    unstained
        The unstained control's path (``None`` when none was given).
    method
        ``regression`` or ``median``.
    parameters
        Options used (positive quantile, gate, ...).
    """

    spillover: Spillover
    controls: list[ControlSummary]
    unstained: str | None
    method: str
    parameters: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def detectors(self) -> tuple[str, ...]:
        """Detector (``$PnN``) of each row/column."""
        return self.spillover.channels

    @property
    def keyword(self) -> str:
        """The matrix as an FCS ``$SPILLOVER`` value."""
        return self.spillover.to_keyword()


# ----- channels ---------------------------------------------------------------------------------

def _is_scatter_or_time(name: str) -> bool:
    from .stats import is_scatter_or_time

    return is_scatter_or_time(name)


def fluorescence_channels(fcs: Any) -> list[str]:
    """The fluorescence detectors of a file: not scatter or time; area (``-A``) parameters only
    when the file has any (FACSDiva and FlowJo compensate areas).

    Parameters
    ----------
    fcs
        An :class:`~immunoprofile.flow.fcs.FCSData`.

    Returns
    -------
    list of str
        ``$PnN`` in file order.
    """
    names = [c for c in fcs.channels if not _is_scatter_or_time(c)
             and not c.strip().upper().startswith(("EVENT", "WIDTH", "TIME"))]
    areas = [c for c in names if c.upper().endswith("-A")]
    return areas or names


def read_channel_map(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a ``name, channel`` CSV (CytoExploreR's ``Compensation-Channels.csv``).

    Parameters
    ----------
    path
        CSV with a header holding ``name`` (the control's file name) and ``channel`` (its
        stained detector, or ``Unstained``).

    Returns
    -------
    dict
        File name (basename) -> channel.

    Raises
    ------
    InputError
        When the file is missing or lacks the two columns.
    """
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise InputError(p, "channel map not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(p, f"cannot read channel map ({exc})") from None
    if not rows or not {"name", "channel"} <= {str(k).strip().lower() for k in rows[0]}:
        raise InputError(p, "channel map needs columns 'name' and 'channel'")
    out: dict[str, str] = {}
    for row in rows:
        low = {str(k).strip().lower(): (v or "").strip() for k, v in row.items()}
        if low["name"]:
            out[Path(low["name"]).name] = low["channel"]
    return out


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _channel_from_keywords(fcs: Any, detectors: Sequence[str]) -> str | None:
    """A detector named by the file's name or its tube/sample keywords (``PE`` -> ``PE-A``)."""
    dyes = {}
    for d in detectors:
        stem = re.sub(r"-[AHW]$", "", d.strip(), flags=re.IGNORECASE)
        dyes[d] = _norm(stem)
    sources = [Path(str(getattr(fcs, "path", "") or "")).stem]
    text = {str(k).upper(): str(v) for k, v in fcs.text.items()}
    sources += [text.get(k, "") for k in ("TUBE NAME", "$SMNO", "$FIL", "TUBE_NAME", "$SRC")]
    for source in sources:
        # runs of 1-3 consecutive tokens ("PE", "PE-Cy7"), never substrings ("pe" in "compensation")
        tokens = [_norm(t) for t in re.split(r"[\s_\-.,;()/+]+", source) if _norm(t)]
        runs = {"".join(tokens[i:i + k]) for k in (1, 2, 3) for i in range(len(tokens))}
        hits = [d for d, dye in dyes.items() if dye and dye in runs]
        if hits:
            return max(hits, key=lambda d: len(dyes[d]))
    return None


def acquisition_date(text: Mapping[str, Any]) -> _dt.date | None:
    """The acquisition day in a file's ``$DATE`` (``17-MAY-2018``, ``2018-05-17`` ...), or
    ``None`` when absent or unreadable."""
    raw = next((str(v).strip() for k, v in text.items() if str(k).upper() == "$DATE"), "")
    for fmt in ("%d-%b-%Y", "%Y-%m-%d", "%d-%b-%y", "%d/%m/%Y", "%m/%d/%Y", "%Y/%m/%d",
                "%d.%m.%Y", "%b %d, %Y"):
        try:
            return _dt.datetime.strptime(raw.title() if "%b" in fmt else raw, fmt).date()
        except ValueError:
            continue
    return None


# ----- gating -----------------------------------------------------------------------------------

def _find(fcs: Any, prefixes: Sequence[str], suffix: str) -> int | None:
    for i, c in enumerate(fcs.channels):
        u = c.strip().upper()
        if u.startswith(tuple(prefixes)) and u.endswith(suffix):
            return i
    return None


def scatter_gate(fcs: Any, *, density_level: float = 0.2, singlet_mads: float = 4.0,
                 bins: int = 128) -> tuple[np.ndarray, list[str]]:
    """Automatic lymphocyte / bead scatter gate (cells, then singlets).

    The densest peak of the smoothed FSC-A × log10 SSC-A histogram that is not debris (FSC above
    its 5th percentile), grown into the connected region above ``density_level`` × the peak;
    then events whose FSC-H/FSC-A lies within ``singlet_mads`` robust SDs of the gated median.

    Parameters
    ----------
    fcs
        The control.
    density_level
        Fraction of the peak density that bounds the gate (lower = wider).
    singlet_mads
        Width of the singlet band, in MAD-derived SDs (``inf`` disables it).
    bins
        Histogram bins per axis.

    Returns
    -------
    mask, warnings
        Boolean mask over all events; what could not be done (no scatter channels ...).
    """
    from scipy import ndimage

    n = fcs.n_events
    warnings: list[str] = []
    fi = _find(fcs, ("FSC", "FS"), "-A") or _find(fcs, ("FSC", "FS"), "")
    si = _find(fcs, ("SSC", "SS"), "-A") or _find(fcs, ("SSC", "SS"), "")
    if fi is None or si is None:
        warnings.append("no FSC/SSC channels: no scatter gate, all events used")
        return np.ones(n, dtype=bool), warnings
    ev = fcs.events
    fsc = ev[:, fi].astype(np.float64)
    ssc = ev[:, si].astype(np.float64)
    top_f = np.nanmax(fsc) if n else 0.0
    top_s = np.nanmax(ssc) if n else 0.0
    valid = np.isfinite(fsc) & np.isfinite(ssc) & (fsc > 0) & (ssc > 0)
    valid &= (fsc < 0.999 * top_f) & (ssc < 0.999 * top_s)  # off-scale events pile at the top
    if valid.sum() < 100:
        warnings.append("fewer than 100 on-scale scatter events: no scatter gate")
        return np.ones(n, dtype=bool), warnings
    x = fsc[valid]
    y = np.log10(ssc[valid])
    xr = np.quantile(x, [0.002, 0.998])
    yr = np.quantile(y, [0.002, 0.998])
    hist, xe, ye = np.histogram2d(x, y, bins=bins, range=[xr, yr])
    smooth = ndimage.gaussian_filter(hist, sigma=bins / 64)
    x_centre = 0.5 * (xe[:-1] + xe[1:])
    allowed = x_centre >= np.quantile(x, 0.05)  # debris is the low-FSC pile-up
    masked = np.where(allowed[:, None], smooth, 0.0)
    peak = np.unravel_index(int(np.argmax(masked)), masked.shape)
    labels, _ = ndimage.label(smooth >= density_level * smooth[peak])
    region = labels == labels[peak]
    ix = np.clip(np.searchsorted(xe, x, side="right") - 1, 0, bins - 1)
    iy = np.clip(np.searchsorted(ye, y, side="right") - 1, 0, bins - 1)
    inside = region[ix, iy] & (x >= xr[0]) & (x <= xr[1]) & (y >= yr[0]) & (y <= yr[1])
    mask = np.zeros(n, dtype=bool)
    mask[np.flatnonzero(valid)[inside]] = True
    hi = _find(fcs, ("FSC", "FS"), "-H")
    if hi is not None and hi != fi and np.isfinite(singlet_mads) and mask.sum() >= 100:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = ev[:, hi].astype(np.float64) / fsc
        r = ratio[mask]
        med = float(np.median(r))
        sd = 1.4826 * float(np.median(np.abs(r - med)))
        mask &= np.abs(ratio - med) <= singlet_mads * max(sd, 1e-9)
    return mask, warnings


def _strategy_gate(strategy: Any, fcs: Any, population: str | None) -> np.ndarray:
    from .engine import evaluate

    result = evaluate(strategy, fcs, spillover="none", missing_spillover="uncompensated")
    if population is None:
        pid = result.population_ids()[-1]
    else:
        matches = [pid for pid, path in result.paths.items()
                   if population in (pid, path, path.rsplit("/", 1)[-1])]
        if len(matches) != 1:
            raise InputError(strategy.source, f"gate population {population!r} "
                                              f"{'is ambiguous' if matches else 'not found'}")
        pid = matches[0]
    return result.masks[pid]


# ----- estimation -------------------------------------------------------------------------------

def robust_line(x: np.ndarray, y: np.ndarray, *, c: float = 1.345,
                max_iter: int = 50) -> tuple[float, float]:
    """Huber M-estimate of ``y = a + b x`` (iteratively reweighted least squares).

    Parameters
    ----------
    x, y
        Data (finite).
    c
        Huber tuning constant (1.345: 95 % efficiency at the normal, MASS ``rlm``'s default).
    max_iter
        Iteration cap.

    Returns
    -------
    (intercept, slope)
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size < 3 or np.ptp(x) == 0:
        return float("nan"), float("nan")
    # centre and scale for conditioning (values reach 2.6e5)
    mx, sx = float(np.median(x)), float(np.std(x)) or 1.0
    xs = (x - mx) / sx
    design = np.column_stack([np.ones_like(xs), xs])
    beta = np.linalg.lstsq(design, y, rcond=None)[0]
    for _ in range(max_iter):
        resid = y - design @ beta
        scale = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
        if scale <= 0:
            break
        u = np.abs(resid) / (c * scale)
        w = np.sqrt(np.where(u <= 1.0, 1.0, 1.0 / np.maximum(u, 1e-300)))
        new = np.linalg.lstsq(design * w[:, None], y * w, rcond=None)[0]
        done = np.allclose(new, beta, rtol=1e-9, atol=1e-12 * (abs(beta).max() + 1))
        beta = new
        if done:
            break
    slope = beta[1] / sx
    return float(beta[0] - slope * mx), float(slope)


def _read(path: str | os.PathLike[str]) -> Any:
    from .fcs import read_fcs

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "control FCS file not found")
    return read_fcs(p)


def _matrix_of(fcs: Any, detectors: Sequence[str]) -> np.ndarray:
    missing = [d for d in detectors if d not in fcs.channels]
    if missing:
        raise InputError(fcs.path, f"control lacks detector(s) {', '.join(missing)} of the "
                                   "other controls")
    return np.column_stack([fcs.events[:, fcs.channels.index(d)] for d in detectors]
                           ).astype(np.float64)


def _on_scale(values: np.ndarray, fcs: Any, detectors: Sequence[str]) -> np.ndarray:
    """Events below every detector's top margin (saturated events are off the line)."""
    ok = np.isfinite(values).all(axis=1)
    for j, d in enumerate(detectors):
        k = fcs.channels.index(d)
        top = fcs.ranges[k] if getattr(fcs, "ranges", None) is not None else np.inf
        top = float(top) if top and np.isfinite(float(top)) else np.inf
        ok &= values[:, j] < 0.995 * top
    return ok


@takes_options(CompensateOptions)
def estimate_spillover(
    controls: Sequence[str | os.PathLike[str]],
    options: CompensateOptions | None = None,
    *,
    unstained: str | os.PathLike[str] | None,
    channels: Mapping[str, str] | str | os.PathLike[str] | None = None,
    gate: Any = None,
    detectors: Sequence[str] | None = None,
) -> SpilloverEstimate:
    """Compute a spillover matrix from single-stain controls.

    Parameters
    ----------
    controls
        Single-stain control FCS files (one stained detector each). A file the channel map
        calls ``Unstained`` is taken as the unstained control when ``unstained`` is ``None``.
    unstained
        The unstained control (defines the positive threshold; the negative for ``median``).
    channels
        Control file name -> stained detector: a mapping or a ``name, channel`` CSV. Controls it
        does not name get their channel from their keywords/name, else from the data.
    gate
        Scatter pre-gate: ``None`` (automatic, :func:`scatter_gate`), or a gating strategy
        (:class:`~immunoprofile.flow.gates.Strategy` or a strategy file) whose ``population``
        (default: its last population) holds the events to use.
    options
        :class:`~immunoprofile.flow.options.CompensateOptions` (``population`` of ``gate``,
        ``method``: ``regression`` or ``median``, ``positive_quantile``), or give them as
        keywords (Other Parameters).
    detectors
        Matrix channels; default: :func:`fluorescence_channels` of the first control.

    Returns
    -------
    SpilloverEstimate

    Raises
    ------
    InputError
        A control is unreadable, lacks detectors, has no positive population, or two controls
        claim the same detector.
    """
    assert options is not None  # takes_options always gives one
    population, method = options.population, options.method
    positive_quantile = options.positive_quantile
    if not controls:
        raise InputError(None, "no single-stain controls given")
    mapping = (read_channel_map(channels) if isinstance(channels, (str, os.PathLike))
               else dict(channels or {}))
    files = [Path(c) for c in controls]
    if unstained is None:
        named = [f for f in files if mapping.get(f.name, "").lower() == "unstained"]
        if named:
            unstained = named[0]
    files = [f for f in files if unstained is None or f.resolve() != Path(unstained).resolve()]
    files = [f for f in files if mapping.get(f.name, "").lower() != "unstained"]
    if not files:
        raise InputError(None, "no stained controls left after removing the unstained one")
    if gate is not None and not hasattr(gate, "gates"):
        from .strategy import load_strategy

        gate = load_strategy(gate)
    warnings: list[str] = []

    def gated(fcs: Any) -> np.ndarray:
        if gate is None:
            mask, notes = scatter_gate(fcs)
            warnings.extend(f"{Path(fcs.path).name}: {w}" for w in notes)
            return mask
        return _strategy_gate(gate, fcs, population)

    datasets = [_read(f) for f in files]
    dets = list(detectors) if detectors is not None else fluorescence_channels(datasets[0])
    if len(dets) < 2:
        raise InputError(files[0], "fewer than two fluorescence detectors: nothing to compensate")
    neg_values: np.ndarray | None = None
    if unstained is not None:
        neg = _read(unstained)
        neg_all = _matrix_of(neg, dets)
        neg_values = neg_all[gated(neg) & _on_scale(neg_all, neg, dets)]
        if len(neg_values) < MIN_POSITIVE:
            raise InputError(unstained, f"only {len(neg_values)} unstained events pass the "
                                        "scatter gate")
    index = {d: j for j, d in enumerate(dets)}
    matrix = np.eye(len(dets))
    summaries: list[ControlSummary] = []
    per_control: list[tuple[Any, np.ndarray, np.ndarray, int]] = []
    for f, fcs in zip(files, datasets, strict=True):
        values = _matrix_of(fcs, dets)
        keep = gated(fcs) & _on_scale(values, fcs, dets)
        channel, source = _primary(f, fcs, dets, mapping, values[keep], neg_values)
        p = index[channel]
        other = next((s.file for s in summaries if s.channel == channel), None)
        if other is not None:
            raise InputError(f, f"controls {Path(other).name} and {f.name} both stain {channel}")
        if neg_values is not None:
            threshold = float(np.quantile(neg_values[:, p], positive_quantile))
        else:  # no unstained: above the control's own negative mode (robust upper bound)
            x = values[keep, p]
            lower = x[x <= np.median(x)]
            med = float(np.median(lower))
            threshold = med + 6 * 1.4826 * float(np.median(np.abs(lower - med)))
        pos = keep & (values[:, p] > threshold)
        n_pos = int(pos.sum())
        if n_pos < MIN_POSITIVE:
            raise InputError(f, f"only {n_pos} positive events in {channel} above the unstained's "
                                f"{100 * positive_quantile:g}th percentile ({threshold:.4g}); "
                                "is this the right channel?")
        summary = ControlSummary(file=str(f), channel=channel, channel_source=source,
                                 n_events=int(fcs.n_events), n_gated=int(keep.sum()),
                                 n_positive=n_pos, threshold=threshold)
        xp = values[pos, p]
        row = np.zeros(len(dets))
        for j, d in enumerate(dets):
            if j == p:
                row[j] = 1.0
                continue
            if method == "median" and neg_values is not None:
                num = np.median(values[pos, j]) - np.median(neg_values[:, j])
                den = np.median(xp) - np.median(neg_values[:, p])
                row[j], inter = float(num / den), float(np.median(neg_values[:, j]))
            else:
                inter, row[j] = robust_line(xp, values[pos, j])
            summary.coefficients[d] = float(row[j])
            summary.intercepts[d] = float(inter)
        worst = int(np.argmax(np.where(np.arange(len(dets)) == p, -np.inf, row)))
        if row[worst] > 1.0:  # another detector sees more of the dye: the wrong primary
            raise InputError(f, f"{dets[worst]} sees {row[worst]:.3g}x as much of this dye as "
                                f"{channel}: is {channel} the stained channel?")
        matrix[p] = row
        summaries.append(summary)
        per_control.append((fcs, values, pos, p))
    spill = Spillover(tuple(dets), matrix, source="single-stain controls")
    for summary, (fcs, values, pos, p) in zip(summaries, per_control, strict=True):
        comp = compensate(values[pos], dets, spill)
        for j, d in enumerate(dets):
            if j != p:
                summary.residual_slopes[d] = robust_line(comp[:, p], comp[:, j])[1]
    return SpilloverEstimate(
        spillover=spill, controls=summaries,
        unstained=None if unstained is None else str(unstained), method=method,
        parameters={"method": method, "positive_quantile": positive_quantile,
                    "gate": "automatic scatter gate" if gate is None
                    else str(getattr(gate, "source", gate)),
                    "population": population, "detectors": dets},
        warnings=warnings)


def _primary(f: Path, fcs: Any, dets: Sequence[str], mapping: Mapping[str, str],
             values: np.ndarray, neg: np.ndarray | None) -> tuple[str, str]:
    """The control's stained detector and how it was found (map, keyword, data)."""
    named = mapping.get(f.name) or mapping.get(f.stem)
    if named:
        hit = _resolve_detector(named, fcs, dets)
        if hit is None:
            raise InputError(f, f"channel map names {named!r}, which is not a fluorescence "
                                f"detector of this file ({', '.join(dets)})")
        return hit, "map"
    hit = _channel_from_keywords(fcs, dets)
    if hit is not None:
        return hit, "keyword"
    # the detector whose bright tail stands out most from the unstained (robust z of the 99.5th
    # percentile); without an unstained, from the control's own lower half
    scores = []
    for j in range(len(dets)):
        x = values[:, j]
        ref = neg[:, j] if neg is not None else x[x <= np.median(x)]
        med = float(np.median(ref))
        mad = 1.4826 * float(np.median(np.abs(ref - med))) or 1.0
        scores.append((float(np.quantile(x, 0.995)) - med) / mad)
    return dets[int(np.argmax(scores))], "data"


def _resolve_detector(name: str, fcs: Any, dets: Sequence[str]) -> str | None:
    if name in dets:
        return name
    for i, marker in enumerate(getattr(fcs, "markers", [])):
        if marker and marker == name and fcs.channels[i] in dets:
            return fcs.channels[i]
    low = [d for d in dets if _norm(d) == _norm(name)]
    return low[0] if len(low) == 1 else None


# ----- outputs ----------------------------------------------------------------------------------

def write_spillover_outputs(out_dir: str | os.PathLike[str], estimate: SpilloverEstimate, *,
                            command: str | None = None, figure: bool = True,
                            inputs: Sequence[str | os.PathLike[str]] = ()) -> dict[str, Path]:
    """Write ``spillover.csv``, ``spillover.txt`` (``$SPILLOVER``), ``controls.csv``,
    ``compensation_controls.png`` and ``provenance.json``, each atomically.

    ``spillover.csv`` has a header row of channel names and one row per channel: its name, then
    its spillover into each column (what :func:`~immunoprofile.flow.compensation.
    read_compensation_csv` and FlowJo's matrix import read).

    Parameters
    ----------
    out_dir
        Output folder (created).
    estimate
        From :func:`estimate_spillover`.
    command
        The command line, for provenance.
    figure
        Also draw the before/after figure grid.
    inputs
        Extra input files to record (channel map, gate strategy).

    Returns
    -------
    dict
        Output name -> path.
    """
    import pandas as pd

    from .._io import write_csv_atomic, write_json_atomic, write_text_atomic
    from ..provenance import build_provenance

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dets = list(estimate.detectors)
    lines = [",".join(_csv_cell(d) for d in dets)]
    for d, row in zip(dets, estimate.spillover.matrix, strict=True):
        lines.append(",".join([_csv_cell(d), *(repr(round(float(v), 6)) for v in row)]))
    written = {"spillover": out / "spillover.csv", "keyword": out / "spillover.txt",
               "controls": out / "controls.csv", "provenance": out / "provenance.json"}
    write_text_atomic(written["spillover"], "\n".join(lines) + "\n")
    write_text_atomic(written["keyword"], estimate.keyword + "\n")
    rows = []
    for s in estimate.controls:
        rows.append({"file": Path(s.file).name, "channel": s.channel,
                     "channel_source": s.channel_source, "n_events": s.n_events,
                     "n_gated": s.n_gated, "n_positive": s.n_positive,
                     "threshold": s.threshold, "max_abs_residual_slope": s.max_residual})
    write_csv_atomic(written["controls"], pd.DataFrame(rows))
    if figure:
        written["figure"] = out / "compensation_controls.png"
        plot_controls(estimate, written["figure"])
    files = [*(s.file for s in estimate.controls),
             *([estimate.unstained] if estimate.unstained else []), *map(str, inputs)]
    provenance = build_provenance(
        inputs=files, parameters=dict(estimate.parameters), command=command,
        extra={"controls": [{**r, "coefficients": s.coefficients, "intercepts": s.intercepts,
                             "residual_slopes": s.residual_slopes, "warnings": s.warnings}
                            for r, s in zip(rows, estimate.controls, strict=True)],
               "unstained": estimate.unstained, "spillover_keyword": estimate.keyword,
               "warnings": estimate.warnings})
    write_json_atomic(written["provenance"], provenance)
    return written


def _csv_cell(text: str) -> str:
    return f'"{text}"' if any(ch in text for ch in ',"\n') else text


def plot_controls(estimate: SpilloverEstimate, path: str | os.PathLike[str], *,
                  per_control: int = 3, max_events: int = 4000) -> Path:
    """Figure grid: each control's primary channel against the detectors it spills into most,
    before (raw) and after compensation, with the spillover / residual slope on each panel.

    Parameters
    ----------
    estimate
        From :func:`estimate_spillover`.
    path
        PNG to write (atomically).
    per_control
        Detectors shown per control (the largest spillover coefficients).
    max_events
        Events drawn per panel (a deterministic subsample).

    Returns
    -------
    Path
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._io import atomic_path

    dets = list(estimate.detectors)
    rows = len(estimate.controls)
    fig, axes = plt.subplots(rows, 2 * per_control, figsize=(2.3 * 2 * per_control, 2.2 * rows),
                             squeeze=False)
    cof = 150.0  # asinh cofactor of the display scale (conventional for flow data)
    for r, s in enumerate(estimate.controls):
        fcs = _read(s.file)
        values = _matrix_of(fcs, dets)
        comp = compensate(values, dets, estimate.spillover)
        p = dets.index(s.channel)
        x_thr = s.threshold
        pos = values[:, p] > x_thr
        step = max(1, int(pos.sum()) // max_events)
        idx = np.flatnonzero(pos)[::step]
        others = sorted((d for d in dets if d != s.channel),
                        key=lambda d: -abs(s.coefficients.get(d, 0.0)))[:per_control]
        for k, d in enumerate(others):
            j = dets.index(d)
            for half, (data, label) in enumerate(((values, f"spill {s.coefficients[d]:.4f}"),
                                                  (comp, f"residual {s.residual_slopes[d]:+.4f}"))):
                ax = axes[r, 2 * k + half]
                ax.scatter(np.arcsinh(data[idx, p] / cof), np.arcsinh(data[idx, j] / cof), s=1,
                           alpha=0.3, color="tab:blue" if half == 0 else "tab:green",
                           rasterized=True)
                ax.set_title(f"{Path(s.file).stem[:22]}\n{'raw' if half == 0 else 'compensated'}",
                             fontsize=7)
                ax.set_xlabel(f"{s.channel} (asinh)", fontsize=6)
                ax.set_ylabel(d, fontsize=6)
                ax.tick_params(labelsize=5)
                ax.text(0.03, 0.93, label, transform=ax.transAxes, fontsize=7, va="top",
                        bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0})
        for k in range(len(others), per_control):
            axes[r, 2 * k].axis("off")
            axes[r, 2 * k + 1].axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return Path(path)
