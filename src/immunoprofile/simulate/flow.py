"""Simulated T-cell / Th2 / Treg panel FCS files with known population frequencies.

Contract: :func:`simulate_flow_sample` draws one tube's events in true-fluorescence space from a
:class:`FlowParams` (the biological frequencies), applies the panel's spillover matrix and detector
noise, and returns the *uncompensated* events plus each event's true class, from which the
realised population frequencies (the truth the gates must recover) are counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from immunoprofile.flow.fcs_write import write_fcs

__all__ = [
    "CHANNELS", "MARKERS", "FLUOR_CHANNELS", "SPILLOVER_MATRIX", "FlowParams", "FlowSample",
    "simulate_flow_sample", "write_flow_sample", "POPULATIONS", "population_truth",
    "expected_fractions", "apply_gain", "simulate_control", "add_clog", "add_drift",
]

# (channel $PnN, marker $PnS). Fluorochromes as on a 4-laser BD LSRFortessa T-cell panel.
_PANEL: tuple[tuple[str, str], ...] = (
    ("FSC-A", ""), ("FSC-H", ""), ("SSC-A", ""),
    ("BV421-A", "CCR7"),
    ("BV510-A", "Viability"),   # LIVE/DEAD Fixable Aqua: dead cells take up the dye, bright
    ("BV605-A", "CD4"),
    ("BV711-A", "CD45RA"),
    ("FITC-A", "CD3"),
    ("PE-A", "CRTH2"),          # CD294, the Th2 marker
    ("PE-Cy7-A", "CD127"),
    ("APC-A", "CD25"),
    ("APC-H7-A", "CD8"),
    ("Time", ""),
)
CHANNELS: tuple[str, ...] = tuple(c for c, _ in _PANEL)
MARKERS: tuple[str, ...] = tuple(m for _, m in _PANEL)
FLUOR_CHANNELS: tuple[str, ...] = CHANNELS[3:12]

# Spillover (row = dye, column = detector, diagonal 1), typical magnitudes for these dyes on a
# violet/blue/yellow-green/red Fortessa: BV421 -> BV510, BV510 -> BV605, FITC -> PE,
# PE -> PE-Cy7 (tandem), APC -> APC-H7 and the reverse tandem leak are the large ones.
_SPILL = {
    ("BV421-A", "BV510-A"): 0.082, ("BV421-A", "BV605-A"): 0.012, ("BV421-A", "FITC-A"): 0.004,
    ("BV510-A", "BV421-A"): 0.018, ("BV510-A", "BV605-A"): 0.115, ("BV510-A", "FITC-A"): 0.046,
    ("BV510-A", "BV711-A"): 0.010,
    ("BV605-A", "BV510-A"): 0.006, ("BV605-A", "BV711-A"): 0.094, ("BV605-A", "PE-A"): 0.021,
    ("BV711-A", "BV605-A"): 0.021, ("BV711-A", "APC-H7-A"): 0.031, ("BV711-A", "PE-Cy7-A"): 0.012,
    ("FITC-A", "BV510-A"): 0.017, ("FITC-A", "PE-A"): 0.152, ("FITC-A", "PE-Cy7-A"): 0.003,
    ("PE-A", "FITC-A"): 0.011, ("PE-A", "BV605-A"): 0.034, ("PE-A", "PE-Cy7-A"): 0.024,
    ("PE-A", "APC-A"): 0.002,
    ("PE-Cy7-A", "PE-A"): 0.008, ("PE-Cy7-A", "APC-H7-A"): 0.043, ("PE-Cy7-A", "BV711-A"): 0.005,
    ("APC-A", "APC-H7-A"): 0.081, ("APC-A", "PE-Cy7-A"): 0.006, ("APC-A", "BV711-A"): 0.004,
    ("APC-H7-A", "APC-A"): 0.023, ("APC-H7-A", "PE-Cy7-A"): 0.052,
}


def _spillover_matrix() -> np.ndarray:
    index = {c: i for i, c in enumerate(FLUOR_CHANNELS)}
    matrix = np.eye(len(FLUOR_CHANNELS))
    for (dye, detector), value in _SPILL.items():
        matrix[index[dye], index[detector]] = value
    return matrix


SPILLOVER_MATRIX: np.ndarray = _spillover_matrix()

# Event classes (integers in FlowSample.labels).
DEBRIS, DOUBLET, DEAD, MONOCYTE, BASOPHIL, NON_T_LYMPH, T_CELL = range(7)

#: Populations whose truth is tabulated: name -> (gate path as the example strategy names it,
#: parent name). Paths follow the engine's convention (a quadrant replaces its gate in the path).
_T = "/Cells/Singlets/Live/CD3+"
POPULATIONS: dict[str, tuple[str, str]] = {
    "CD3+": (_T, "Live"),
    "CD4+CD8-": (f"{_T}/CD4+CD8-", "CD3+"),
    "CD4-CD8+": (f"{_T}/CD4-CD8+", "CD3+"),
    "CD4+CD8+": (f"{_T}/CD4+CD8+", "CD3+"),
    "CD4-CD8-": (f"{_T}/CD4-CD8-", "CD3+"),
    "Th2": (f"{_T}/CD4+CD8-/Th2", "CD4+CD8-"),
    "Treg": (f"{_T}/CD4+CD8-/Treg", "CD4+CD8-"),
    "Naive": (f"{_T}/CD4+CD8-/Naive", "CD4+CD8-"),
    "CM": (f"{_T}/CD4+CD8-/CM", "CD4+CD8-"),
    "EM": (f"{_T}/CD4+CD8-/EM", "CD4+CD8-"),
    "TEMRA": (f"{_T}/CD4+CD8-/TEMRA", "CD4+CD8-"),
    "Memory": (f"{_T}/CD4+CD8-/Memory", "CD4+CD8-"),
}

# CD45RA/CCR7 subsets of CD4 T cells: (CD45RA+, CCR7+) per subset.
_SUBSETS = {"Naive": (True, True), "CM": (False, True), "EM": (False, False),
            "TEMRA": (True, False)}
# Subset mix of each CD4 lineage: conventional (not Th2, not Treg), Th2 (memory cells), Treg.
_CONV_MIX = {"Naive": 0.45, "CM": 0.25, "EM": 0.24, "TEMRA": 0.06}
_TH2_MIX = {"Naive": 0.0, "CM": 0.45, "EM": 0.55, "TEMRA": 0.0}
_TREG_MIX = {"Naive": 0.30, "CM": 0.45, "EM": 0.25, "TEMRA": 0.0}


@dataclass(frozen=True)
class FlowParams:
    """Biological composition of one tube (fractions 0-1).

    Parameters
    ----------
    th2, treg
        Th2 (CRTH2+) and Treg (CD25+CD127lo) fractions of CD4 T cells (disjoint lineages).
    cd8
        CD8 single-positive fraction of CD3+ T cells; ``cd4`` the CD4 single-positive fraction.
    t_of_lymph
        CD3+ fraction of lymphocytes.
    dead, debris, doublets, monocytes
        Fractions of all events.
    """

    th2: float
    treg: float
    cd4: float = 0.62
    cd8: float = 0.30
    dp: float = 0.015
    t_of_lymph: float = 0.70
    basophil_of_lymph: float = 0.006
    dead: float = 0.06
    debris: float = 0.07
    doublets: float = 0.045
    monocytes: float = 0.12
    stain: float = 1.0  # per-tube staining brightness factor


@dataclass
class FlowSample:
    """One simulated tube: uncompensated events and the true class of every event."""

    events: np.ndarray          # n × len(CHANNELS), float32, uncompensated
    labels: np.ndarray          # event class (DEBRIS ... T_CELL)
    t_subset: np.ndarray        # for T cells: 0 CD4, 1 CD8, 2 DP, 3 DN; -1 otherwise
    cd4_lineage: np.ndarray     # for CD4 T cells: 0 conventional, 1 Th2, 2 Treg; -1 otherwise
    cd4_subset: np.ndarray      # for CD4 T cells: index into list(_SUBSETS); -1 otherwise


def _lognormal(rng: np.random.Generator, median: float, sdlog: float, n: int) -> np.ndarray:
    return median * np.exp(sdlog * rng.standard_normal(n))


def _choice(rng: np.random.Generator, probs: dict[str, float] | list[float], n: int) -> np.ndarray:
    p = np.asarray(list(probs.values()) if isinstance(probs, dict) else probs, dtype=float)
    return rng.choice(len(p), size=n, p=p / p.sum())


def simulate_flow_sample(rng: np.random.Generator, n_events: int, params: FlowParams) -> FlowSample:
    """Draw one tube's events.

    Parameters
    ----------
    rng
        Seeded generator (the only source of randomness).
    n_events
        Number of events in the file.
    params
        Composition of the tube.

    Returns
    -------
    FlowSample
        Events after spillover and detector noise (what the cytometer records), with labels.
    """
    p = params
    lymph = 1.0 - p.dead - p.debris - p.doublets - p.monocytes
    class_probs = [p.debris, p.doublets, p.dead, p.monocytes, lymph * p.basophil_of_lymph,
                   lymph * (1 - p.t_of_lymph - p.basophil_of_lymph), lymph * p.t_of_lymph]
    labels = _choice(rng, class_probs, n_events)
    n = n_events
    idx = {c: i for i, c in enumerate(CHANNELS)}
    true = np.zeros((n, len(CHANNELS)))

    # Autofluorescence / unstained background of every event in every fluorescence detector.
    for ch in FLUOR_CHANNELS:
        true[:, idx[ch]] = _lognormal(rng, 90.0, 0.55, n)

    def put(mask: np.ndarray, channel: str, median: float, sdlog: float) -> None:
        k = int(mask.sum())
        if k:
            true[mask, idx[channel]] = _lognormal(rng, median * p.stain, sdlog, k)

    # --- scatter (linear, 0-262144) -------------------------------------------------------------
    fsc = np.empty(n)
    ssc = np.empty(n)
    scatter = {  # class -> (FSC mean, FSC sd, SSC median, SSC sdlog)
        DEBRIS: (12_000, 7_000, 6_000, 0.75), DEAD: (42_000, 8_000, 24_000, 0.30),
        MONOCYTE: (92_000, 11_000, 56_000, 0.20), BASOPHIL: (56_000, 6_000, 17_000, 0.22),
        NON_T_LYMPH: (57_000, 7_000, 16_000, 0.24), T_CELL: (55_000, 6_500, 16_500, 0.24),
        DOUBLET: (55_000, 6_500, 16_500, 0.24),
    }
    for cls, (fm, fs, sm, ss) in scatter.items():
        mask = labels == cls
        k = int(mask.sum())
        fsc[mask] = np.abs(fm + fs * rng.standard_normal(k))
        ssc[mask] = _lognormal(rng, sm, ss, k)
    fsc_h = fsc * 0.87 * (1 + 0.025 * rng.standard_normal(n))
    # Doublets: two cells passing together -> area adds up, height barely grows.
    doublet = labels == DOUBLET
    k = int(doublet.sum())
    second = np.abs(55_000 + 6_500 * rng.standard_normal(k))
    fsc_h[doublet] = np.maximum(fsc[doublet], second) * 0.87 * 1.08 * (
        1 + 0.03 * rng.standard_normal(k))
    fsc[doublet] += second
    ssc[doublet] += _lognormal(rng, 16_500, 0.24, k)
    true[:, idx["FSC-A"]] = fsc
    true[:, idx["FSC-H"]] = fsc_h
    true[:, idx["SSC-A"]] = ssc

    # --- viability: dead cells and much debris take up the amine-reactive dye ------------------
    put(labels == DEAD, "BV510-A", 14_000, 0.5)
    debris = labels == DEBRIS
    put(debris & (rng.random(n) < 0.6), "BV510-A", 6_000, 1.0)
    put(~np.isin(labels, [DEAD, DEBRIS]), "BV510-A", 220, 0.45)

    # --- lineage markers ----------------------------------------------------------------------
    monocyte = labels == MONOCYTE
    put(monocyte, "BV605-A", 1_800, 0.40)          # monocytes are CD4 dim
    put(monocyte, "BV711-A", 900, 0.6)
    basophil = labels == BASOPHIL
    put(basophil, "PE-A", 5_000, 0.45)             # basophils are CRTH2+ but CD3-
    put(basophil, "PE-Cy7-A", 1_500, 0.5)
    nont = labels == NON_T_LYMPH
    nk_like = nont & (rng.random(n) < 0.35)
    put(nk_like, "APC-H7-A", 1_200, 0.5)            # NK cells: CD8 dim, CD3-
    put(nont & ~nk_like, "BV711-A", 7_000, 0.4)     # B cells are CD45RA+
    put(nont & (rng.random(n) < 0.5), "BV421-A", 1_800, 0.5)
    put(nont, "PE-Cy7-A", 600, 0.6)

    tcell = labels == T_CELL
    t_subset = np.full(n, -1)
    t_subset[tcell] = _choice(rng, [p.cd4, p.cd8, p.dp, max(1 - p.cd4 - p.cd8 - p.dp, 0.0)],
                              int(tcell.sum()))
    put(tcell, "FITC-A", 9_000, 0.33)
    cd4 = t_subset == 0
    cd8 = t_subset == 1
    dp = t_subset == 2
    put(cd4 | dp, "BV605-A", 11_000, 0.30)
    put(cd8 | dp, "APC-H7-A", 14_000, 0.35)
    # CD8 and double-negative T cells: CD127+ mostly, naive/memory mix (not tabulated).
    other_t = tcell & ~cd4
    put(other_t, "PE-Cy7-A", 2_200, 0.5)
    ra = other_t & (rng.random(n) < 0.5)
    put(ra, "BV711-A", 8_000, 0.4)
    put(other_t & (rng.random(n) < 0.45), "BV421-A", 3_000, 0.4)

    # CD4 lineages (disjoint): conventional, Th2 (CRTH2+, CD127+), Treg (CD25 bright, CD127 low).
    n_cd4 = int(cd4.sum())
    lineage = np.full(n, -1)
    lineage[cd4] = _choice(rng, [1 - p.th2 - p.treg, p.th2, p.treg], n_cd4)
    subset = np.full(n, -1)
    names = list(_SUBSETS)
    for code, mix in enumerate((_CONV_MIX, _TH2_MIX, _TREG_MIX)):
        sel = lineage == code
        subset[sel] = _choice(rng, [mix[s] for s in names], int(sel.sum()))
    th2 = lineage == 1
    treg = lineage == 2
    put(th2, "PE-A", 4_200, 0.40)
    put(treg, "APC-A", 3_400, 0.40)
    put(cd4 & ~treg, "APC-A", 130, 0.55)            # activated conventional cells: CD25 dim
    put(cd4 & ~treg, "PE-Cy7-A", 2_800, 0.40)
    put(treg, "PE-Cy7-A", 160, 0.55)
    for s, (ra_pos, ccr7_pos) in enumerate(_SUBSETS.values()):
        sel = subset == s
        if ra_pos:
            put(sel, "BV711-A", 8_500, 0.38)
        if ccr7_pos:
            put(sel, "BV421-A", 3_200, 0.38)

    # --- doublets carry the summed stain of two T/non-T lymphocytes --------------------------
    if k:
        true[doublet, idx["FITC-A"]] += _lognormal(rng, 9_000, 0.33, k) * (rng.random(k) < 0.85)
        true[doublet, idx["BV605-A"]] += _lognormal(rng, 11_000, 0.3, k) * (rng.random(k) < 0.5)
        true[doublet, idx["APC-H7-A"]] += _lognormal(rng, 14_000, 0.35, k) * (rng.random(k) < 0.3)

    observed = _optics(rng, true)
    return FlowSample(observed.astype(np.float32), labels, t_subset, lineage, subset)


def _optics(rng: np.random.Generator, true: np.ndarray) -> np.ndarray:
    """What the cytometer records from true intensities: spillover, then photon (Poisson-like)
    and electronic noise, scatter jitter, Time, and the detectors' range."""
    n = true.shape[0]
    idx = {c: i for i, c in enumerate(CHANNELS)}
    cols = [idx[c] for c in FLUOR_CHANNELS]
    observed = true.copy()
    detected = true[:, cols] @ SPILLOVER_MATRIX
    photon = np.sqrt(3.0 * np.maximum(detected, 0.0))
    observed[:, cols] = detected + photon * rng.standard_normal(detected.shape) \
        + 18.0 * rng.standard_normal(detected.shape)
    for ch in ("FSC-A", "FSC-H", "SSC-A"):
        j = idx[ch]
        observed[:, j] = np.clip(observed[:, j] * (1 + 0.01 * rng.standard_normal(n)), 0, 262_143)
    # Time: acquisition order at ~2,000 events/s, in 0.01 s ticks ($TIMESTEP 0.01).
    observed[:, idx["Time"]] = np.sort(rng.uniform(0, n / 2000.0 * 100.0, n)).round(0)
    observed[:, cols] = np.clip(observed[:, cols], -500, 262_143)
    return observed


def simulate_control(rng: np.random.Generator, n_events: int, stained: str | None, *,
                     brightness: float = 25_000.0, positive_fraction: float = 0.5) -> np.ndarray:
    """One single-stain compensation control (or the unstained tube) of the panel.

    Lymphocyte-like scatter with a little debris; every event has the unstained
    autofluorescence of the sample tubes in every detector; in a stained control a
    ``positive_fraction`` of the cells also carries the dye in ``stained``'s channel
    (log-normal, median ``brightness``). The same optics as the samples (the panel's
    :data:`SPILLOVER_MATRIX`, photon and electronic noise).

    Parameters
    ----------
    rng
        Seeded generator (the only source of randomness).
    n_events
        Events in the tube.
    stained
        The dye's detector (one of :data:`FLUOR_CHANNELS`), or ``None`` for the unstained.
    brightness, positive_fraction
        Median true intensity and fraction of stained events.

    Returns
    -------
    numpy.ndarray
        ``n_events × len(CHANNELS)`` float32 events, uncompensated.
    """
    if stained is not None and stained not in FLUOR_CHANNELS:
        raise ValueError(f"{stained!r} is not a fluorescence channel of the panel")
    idx = {c: i for i, c in enumerate(CHANNELS)}
    n = n_events
    true = np.zeros((n, len(CHANNELS)))
    debris = rng.random(n) < 0.05
    fsc = np.where(debris, np.abs(12_000 + 7_000 * rng.standard_normal(n)),
                   np.abs(56_000 + 6_500 * rng.standard_normal(n)))
    true[:, idx["FSC-A"]] = fsc
    true[:, idx["FSC-H"]] = fsc * 0.87 * (1 + 0.025 * rng.standard_normal(n))
    true[:, idx["SSC-A"]] = np.where(debris, _lognormal(rng, 6_000, 0.75, n),
                                     _lognormal(rng, 16_500, 0.24, n))
    for ch in FLUOR_CHANNELS:
        true[:, idx[ch]] = _lognormal(rng, 90.0, 0.55, n)
    if stained is not None:
        pos = ~debris & (rng.random(n) < positive_fraction)
        true[pos, idx[stained]] += _lognormal(rng, brightness, 0.5, int(pos.sum()))
    return _optics(rng, true).astype(np.float32)


def apply_gain(sample: FlowSample, gain: float) -> None:
    """Scale every fluorescence detector of ``sample`` by ``gain`` in place (acquisition drift:
    laser power / detector voltage of the day; scatter, spillover and the truth are unchanged)."""
    cols = [CHANNELS.index(c) for c in FLUOR_CHANNELS]
    sample.events[:, cols] = np.minimum(sample.events[:, cols] * np.float32(gain),
                                        np.float32(262_143))


def population_truth(sample: FlowSample) -> dict[str, tuple[int, int]]:
    """Realised ``(count, parent count)`` of every tabulated population, from the true classes.

    Parameters
    ----------
    sample
        A simulated tube.

    Returns
    -------
    dict
        Population name (keys of :data:`POPULATIONS`) -> (events in it, events in its parent).

    The parent of ``CD3+`` is live singlet lymphocytes (T, B/NK and basophils; monocytes sit
    above the ``Cells`` scatter gate), i.e. what the strategy's ``Live`` gate should contain.
    """
    live = np.isin(sample.labels, [BASOPHIL, NON_T_LYMPH, T_CELL])
    tcell = sample.labels == T_CELL
    cd4 = sample.t_subset == 0
    counts: dict[str, tuple[int, int]] = {
        "CD3+": (int(tcell.sum()), int(live.sum())),
        "CD4+CD8-": (int(cd4.sum()), int(tcell.sum())),
        "CD4-CD8+": (int((sample.t_subset == 1).sum()), int(tcell.sum())),
        "CD4+CD8+": (int((sample.t_subset == 2).sum()), int(tcell.sum())),
        "CD4-CD8-": (int((sample.t_subset == 3).sum()), int(tcell.sum())),
        "Th2": (int((sample.cd4_lineage == 1).sum()), int(cd4.sum())),
        "Treg": (int((sample.cd4_lineage == 2).sum()), int(cd4.sum())),
    }
    for s, name in enumerate(_SUBSETS):
        counts[name] = (int((sample.cd4_subset == s).sum()), int(cd4.sum()))
    counts["Memory"] = (int(cd4.sum()) - counts["Naive"][0], int(cd4.sum()))
    return counts


def expected_fractions(params: FlowParams) -> dict[str, float]:
    """Model (expected) fraction of parent for every tabulated population.

    Parameters
    ----------
    params
        The tube's composition.

    Returns
    -------
    dict
        Population name (keys of :data:`POPULATIONS`) -> expected fraction of its parent, 0-1.
    """
    p = params
    out = {
        "CD3+": p.t_of_lymph,
        "CD4+CD8-": p.cd4, "CD4-CD8+": p.cd8, "CD4+CD8+": p.dp,
        "CD4-CD8-": max(1 - p.cd4 - p.cd8 - p.dp, 0.0),
        "Th2": p.th2, "Treg": p.treg,
    }
    conv = 1 - p.th2 - p.treg
    for name in _SUBSETS:
        out[name] = conv * _CONV_MIX[name] + p.th2 * _TH2_MIX[name] + p.treg * _TREG_MIX[name]
    out["Memory"] = 1.0 - out["Naive"]
    return out


def write_flow_sample(path: str | Path, sample: FlowSample, *, text: dict[str, str]) -> Path:
    """Write a simulated tube as FCS 3.1 (uncompensated, with the panel's ``$SPILLOVER``).

    Parameters
    ----------
    path
        Destination ``.fcs`` file.
    sample
        The simulated tube.
    text
        Extra TEXT keywords (``$DATE``, ``$SRC`` ...).

    Returns
    -------
    Path
        The written file.
    """
    keywords = {"$CYT": "Simulated LSRFortessa (immunoprofile.simulate)", "$TIMESTEP": "0.01",
                **text}
    return write_fcs(path, sample.events, CHANNELS, MARKERS, text=keywords,
                     spillover=(FLUOR_CHANNELS, SPILLOVER_MATRIX))


# ----- acquisition anomalies (issue 12): clogs and signal drift over Time ----------------------

def add_clog(rng: np.random.Generator, events: np.ndarray, *, at: float = 0.55,
             gap_s: float = 0.8, burst_events: int = 500, burst_s: float = 0.1,
             timestep: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Put a clog into a tube's acquisition: no events for ``gap_s`` seconds, then a burst.

    Every event from the fraction ``at`` of the acquisition on is delayed by the gap and the
    burst; the burst is ``burst_events`` junk events released by the clog in ``burst_s`` seconds
    (copies of the tube's own events, dimmed 30-70 % in fluorescence and shrunk in scatter, as
    aggregates and partly lysed cells passing in a surge).

    Parameters
    ----------
    rng
        Seeded generator (used only here).
    events
        ``n × len(CHANNELS)`` events in time order (Time in ``timestep`` ticks).
    at, gap_s, burst_events, burst_s
        Where the clog happens (fraction of events before it), the gap and the burst.
    timestep
        Seconds per Time tick.

    Returns
    -------
    events, clog
        The new events (``n + burst_events`` rows, time order) and the mask of the burst events.
    """
    idx = {c: i for i, c in enumerate(CHANNELS)}
    ti = idx["Time"]
    n = events.shape[0]
    cut = int(round(at * n))
    t0 = float(events[cut, ti])
    shift = round((gap_s + burst_s) / timestep)
    later = events[cut:].copy()
    later[:, ti] += shift
    burst = events[rng.integers(0, n, burst_events)].astype(np.float64)
    fl = [idx[c] for c in FLUOR_CHANNELS]
    burst[:, fl] *= rng.uniform(0.3, 0.7, (burst_events, 1))
    for ch in ("FSC-A", "FSC-H", "SSC-A"):
        burst[:, idx[ch]] *= 0.6
    start = t0 + gap_s / timestep
    burst[:, ti] = np.sort(np.round(start + rng.uniform(0, burst_s / timestep, burst_events)))
    out = np.vstack([events[:cut], burst.astype(events.dtype), later])
    clog = np.zeros(out.shape[0], dtype=bool)
    clog[cut:cut + burst_events] = True
    return out, clog


def add_drift(events: np.ndarray, *, start: float = 0.65, end_factor: float = 0.5
              ) -> tuple[np.ndarray, np.ndarray]:
    """Let every fluorescence signal sag linearly from 1 at the fraction ``start`` of the
    acquisition time to ``end_factor`` at its end (a failing laser or a partial clog).

    Parameters
    ----------
    events
        ``n × len(CHANNELS)`` events in time order.
    start, end_factor
        Where the drift starts (fraction of the acquisition time) and the factor at the end.

    Returns
    -------
    events, factor
        The drifted events and each event's signal factor (1 outside the drift).
    """
    idx = {c: i for i, c in enumerate(CHANNELS)}
    t = events[:, idx["Time"]].astype(np.float64)
    t_start = t.min() + start * (t.max() - t.min())
    frac = np.clip((t - t_start) / max(t.max() - t_start, 1e-9), 0.0, 1.0)
    factor = 1.0 - (1.0 - end_factor) * frac
    out = events.copy()
    fl = [idx[c] for c in FLUOR_CHANNELS]
    out[:, fl] = (out[:, fl] * factor[:, None]).astype(events.dtype)
    return out, factor
