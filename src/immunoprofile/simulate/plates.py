"""Simulated Luminex xPONENT 4.2 CSV exports (analysis off) of a 10-plex serum cytokine panel.

Contract: :func:`simulate_plate` turns a plate layout (well -> sample name, type, dilution) and the
true in-serum concentrations into median MFI, Net MFI and bead counts through a per-plate 5PL curve
with realistic noise; :func:`write_xponent_csv` writes them in the block layout of a MAGPIX
xPONENT 4.2 export (quoted CSV, CRLF; ``DataType:`` blocks Median, Net MFI, Count, Avg Net MFI,
Units, Per Bead Count, Dilution Factor, Analysis Types, Audit Logs, Warnings/Errors).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from immunoprofile._io import atomic_open

__all__ = [
    "Analyte", "ANALYTES", "N_STANDARDS", "STANDARD_DILUTION", "SAMPLE_DILUTION",
    "BRIDGE_NAME", "CONTROL_NAMES", "PlateWell", "PlateSim", "standard_concentrations",
    "control_concentrations", "bridge_concentrations", "plate_layout", "simulate_plate",
    "write_xponent_csv", "standards_table", "mfi_from_conc",
]

N_STANDARDS = 8
STANDARD_DILUTION = 4.0     # serial dilution factor between standards
SAMPLE_DILUTION = 2.0       # serum diluted 1:2 in assay buffer
BRIDGE_NAME = "BridgePool"  # the same serum pool on every plate (cross-plate normalisation)
CONTROL_NAMES = ("Control1", "Control2")
ROWS = "ABCDEFGH"


@dataclass(frozen=True)
class Analyte:
    """One bead set: its name in the export, bead region, kit top standard and serum biology.

    The curve is xPONENT's 5PL in Net MFI: ``y = A + (B - A) / (1 + (x / C) ** D) ** F`` with
    ``B`` the zero-concentration floor and ``A`` the saturation top (increasing curve, D > 0).
    """

    name: str
    region: int
    top_standard: float      # pg/mL of Standard1
    top_mfi: float           # A
    floor_mfi: float         # B (net)
    ec: float                # C, pg/mL (in-well)
    slope: float             # D
    asym: float              # F
    background: float        # raw MFI of a blank well
    serum_median: float      # population median in serum, pg/mL
    serum_sdlog: float       # between-subject spread


# Kit-like values: Standard1 and a 4-fold series of 8; serum medians typical of severe atopic
# dermatitis (CCL17/TARC high; IL-4 and IL-5 usually below the kit's range).
ANALYTES: tuple[Analyte, ...] = (
    Analyte("IL-1b", 46, 10_000, 21_000, 2.0, 450, 1.05, 0.85, 18, 0.9, 0.45),
    Analyte("IL-1RA", 25, 40_000, 18_500, 4.0, 2_500, 1.00, 0.90, 24, 380.0, 0.35),
    Analyte("IL-4", 53, 10_000, 24_000, 1.5, 500, 1.10, 0.80, 15, 0.22, 0.40),
    Analyte("IL-5", 33, 10_000, 16_000, 1.5, 550, 1.00, 0.85, 16, 0.30, 0.40),
    Analyte("IL-6", 19, 10_000, 22_500, 2.5, 420, 1.05, 0.80, 20, 2.6, 0.40),
    Analyte("IL-13", 51, 10_000, 17_500, 3.0, 480, 0.95, 0.90, 22, 14.0, 0.40),
    Analyte("IL-31", 76, 10_000, 12_500, 2.0, 600, 1.00, 0.85, 19, 4.5, 0.45),
    Analyte("TNF-a", 45, 10_000, 20_000, 2.0, 520, 1.05, 0.85, 21, 7.5, 0.30),
    Analyte("IFN-g", 43, 10_000, 19_000, 2.0, 560, 1.00, 0.80, 17, 5.0, 0.45),
    Analyte("CCL17", 62, 20_000, 23_000, 3.0, 1_500, 1.00, 0.85, 26, 1_800.0, 0.50),
)


def standard_concentrations(analyte: Analyte) -> list[float]:
    """Expected concentrations of Standard1..StandardN (pg/mL)."""
    return [analyte.top_standard / STANDARD_DILUTION ** k for k in range(N_STANDARDS)]


def control_concentrations(analyte: Analyte) -> dict[str, float]:
    """Nominal concentrations of the kit's low and high quality controls (pg/mL)."""
    top = analyte.top_standard
    return {CONTROL_NAMES[0]: top * 0.0125, CONTROL_NAMES[1]: top * 0.1}


def bridge_concentrations() -> dict[str, float]:
    """True serum concentrations of the bridging pool (an AD patient serum pool), pg/mL."""
    return {a.name: a.serum_median * 1.2 for a in ANALYTES}


def standards_table() -> list[dict[str, object]]:
    """Rows of ``standards.csv``: kit standards and controls with expected values and ranges."""
    rows: list[dict[str, object]] = []
    for analyte in ANALYTES:
        for k, conc in enumerate(standard_concentrations(analyte), start=1):
            rows.append({"analyte": analyte.name, "standard": f"Standard{k}",
                         "expected_conc": conc, "unit": "pg/mL", "control_low": None,
                         "control_high": None})
        for name, conc in control_concentrations(analyte).items():
            rows.append({"analyte": analyte.name, "standard": name, "expected_conc": conc,
                         "unit": "pg/mL", "control_low": round(conc * 0.7, 4),
                         "control_high": round(conc * 1.3, 4)})
    return rows


@dataclass(frozen=True)
class PlateWell:
    """One well of a layout: position, sample name, type and dilution (None for backgrounds)."""

    well: str
    sample: str
    sample_type: str     # background | standard | control | unknown
    dilution: float | None


def _well_order() -> list[str]:
    # xPONENT acquires column by column: A1, B1, ..., H1, A2, ...
    return [f"{r}{c}" for c in range(1, 13) for r in ROWS]


def plate_layout(samples: Sequence[str]) -> list[PlateWell]:
    """Standard plate map: backgrounds, standards and controls in columns 1-4, then samples.

    Duplicates sit side by side (same row, columns 2k+1 and 2k+2). Room for 36 samples.

    Parameters
    ----------
    samples
        Sample names (each measured in duplicate), in plate order.
    """
    fixed: list[tuple[str, str, float | None]] = [("Background0", "background", None)]
    fixed += [(f"Standard{k}", "standard", 1.0) for k in range(1, N_STANDARDS + 1)]
    fixed += [(name, "control", 1.0) for name in CONTROL_NAMES]
    fixed += [(BRIDGE_NAME, "unknown", SAMPLE_DILUTION)]
    items = fixed + [(s, "unknown", SAMPLE_DILUTION) for s in samples]
    capacity = 48  # duplicate pairs on a 96-well plate
    if len(items) > capacity:
        raise ValueError(f"{len(samples)} samples do not fit on one plate (at most "
                         f"{capacity - len(fixed)})")
    wells: list[PlateWell] = []
    for i, (name, kind, dilution) in enumerate(items):
        pair, row = divmod(i, 8)
        for col in (2 * pair + 1, 2 * pair + 2):
            wells.append(PlateWell(f"{ROWS[row]}{col}", name, kind, dilution))
    order = {w: i for i, w in enumerate(_well_order())}
    return sorted(wells, key=lambda w: order[w.well])


def mfi_from_conc(analyte: Analyte, conc: np.ndarray, *, top_factor: float = 1.0,
                  ec_factor: float = 1.0) -> np.ndarray:
    """Noise-free Net MFI of an in-well concentration on a plate with the given curve shifts."""
    x = np.maximum(np.asarray(conc, dtype=float), 0.0)
    top = analyte.top_mfi * top_factor
    c = analyte.ec * ec_factor
    return top + (analyte.floor_mfi - top) / (1.0 + (x / c) ** analyte.slope) ** analyte.asym


@dataclass
class PlateSim:
    """A simulated plate: per well × analyte median MFI, Net MFI, counts; plus header facts."""

    name: str
    layout: list[PlateWell]
    median: np.ndarray       # wells × analytes
    net: np.ndarray
    count: np.ndarray        # beads per region
    total_events: np.ndarray  # per well
    date: str                # M/D/YYYY
    start_time: str


def _round_half(x: np.ndarray) -> np.ndarray:
    # A median of integer bead intensities is an integer or ends in .5.
    return np.round(np.asarray(x) * 2.0) / 2.0


def simulate_plate(rng: np.random.Generator, name: str, layout: list[PlateWell],
                   serum_conc: Mapping[str, Mapping[str, float]], *, top_factor: float,
                   ec_factor: float, date: str, start_time: str, standard_bias: float = 1.0,
                   n_low_bead: int = 3) -> PlateSim:
    """Measure every well of ``layout``.

    Parameters
    ----------
    rng
        Seeded generator.
    name
        Batch name written in the header.
    layout
        Wells (from :func:`plate_layout`).
    serum_conc
        Sample name -> analyte -> true concentration in the undiluted specimen (pg/mL), for every
        unknown (including the bridging pool).
    top_factor, ec_factor
        This plate's curve shifts (reagent lot, reader calibration): top MFI and EC50 multipliers.
    date, start_time
        Fixed header date (``M/D/YYYY``) and start time.
    standard_bias
        True / labelled concentration of this plate's standard series (a reconstitution error):
        the curve is then off by this factor and every result on the plate with it, which only
        the bridging control reveals.
    n_low_bead
        How many well × analyte cells get fewer than 35 beads (aspiration problems).
    """
    n_wells, n_an = len(layout), len(ANALYTES)
    in_well = np.zeros((n_wells, n_an))
    for i, well in enumerate(layout):
        for j, analyte in enumerate(ANALYTES):
            if well.sample_type == "standard":
                k = int(well.sample.removeprefix("Standard")) - 1
                in_well[i, j] = standard_concentrations(analyte)[k] * standard_bias
            elif well.sample_type == "control":
                in_well[i, j] = control_concentrations(analyte)[well.sample]
            elif well.sample_type == "unknown":
                in_well[i, j] = serum_conc[well.sample][analyte.name] / (well.dilution or 1.0)
    signal = np.column_stack([
        mfi_from_conc(a, in_well[:, j], top_factor=top_factor, ec_factor=ec_factor)
        for j, a in enumerate(ANALYTES)])
    # Pipetting/bead CV ~6 %, plus reader noise of a few MFI near the floor.
    signal = signal * np.exp(0.06 * rng.standard_normal(signal.shape)) \
        + 2.0 * rng.standard_normal(signal.shape)
    background = np.array([a.background for a in ANALYTES]) * (0.9 + 0.2 * rng.random(n_an))
    raw = background + 1.5 * rng.standard_normal((n_wells, n_an)) + signal
    median = _round_half(np.maximum(raw, 1.0))
    is_bg = np.array([w.sample_type == "background" for w in layout])
    net = median - median[is_bg].mean(axis=0)
    count = np.clip(np.round(rng.normal(86, 13, (n_wells, n_an))), 42, 125)
    if n_low_bead:
        cells = rng.choice(n_wells * n_an, size=n_low_bead, replace=False)
        count.flat[cells] = rng.integers(14, 34, size=n_low_bead)
    total = count.sum(axis=1) + rng.integers(40, 160, size=n_wells)
    return PlateSim(name, layout, median, net, count.astype(int), total.astype(int), date,
                    start_time)


def _num(value: float) -> str:
    # Quarter-unit values print exactly (e.g. 653.5, 10.75, -0.25), integers without ".0".
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _row(*cells: object) -> str:
    return ",".join('"' + str(c).replace('"', '""') + '"' for c in cells)


def write_xponent_csv(path: str | Path, plate: PlateSim, *, batch: str,
                      serial: str = "MAGPX15341702", min_events: int = 50) -> Path:
    """Write ``plate`` as an xPONENT 4.2 (MAGPIX) CSV export with analysis off.

    Returns
    -------
    Path
        The written file.
    """
    names = [a.name for a in ANALYTES]
    regions = [str(a.region) for a in ANALYTES]
    lines: list[str] = [
        _row("Program", "xPONENT", "", "MAGPIX"),
        _row("Build", "4.2.1324.0"),
        _row("Date", plate.date, "9:12 AM"),
        "",
        _row("SN", serial),
        _row("Batch", batch),
        _row("Version", "1"),
        _row("Operator", "lab"),
        _row("ComputerName", "MAGPIX-PC"),
        _row("Country Code", "409"),
        _row("ProtocolName", "HCYTOMAG-10plex_serum_AD"),
        _row("ProtocolVersion", "1"),
        _row("ProtocolDescription", "Human cytokine 10-plex, serum 1:2, analysis off"),
        _row("ProtocolDevelopingCompany", ""),
        _row("SampleVolume", "50 uL"),
        _row("SampleWash", "Off"),
        _row("BatchStartTime", f"{plate.date} {plate.start_time}"),
        _row("BatchStopTime", f"{plate.date} {plate.start_time.replace('10:', '11:')}"),
        _row("BatchDescription", "<None>"),
        _row("ProtocolPlate", "Name", "Costar 96 black", "Type", "96", "Plates", "1"),
        _row("ProtocolMicrosphere", "Map", "MagPlex 80 regions", "Type", "MagPlex", "Count",
             str(len(ANALYTES))),
        _row("ProtocolReporterGain", "N/A"),
        _row("ProtocolAnalysis", "Off"),
        _row("NormBead", "None"),
        _row("ProtocolHeater", "Off"),
        "",
        _row("Most Recent Calibration and Verification Results:"),
        _row("Last CAL Calibration", f"Passed {plate.date} 8:01:12 AM"),
        _row("Last VER Verification", f"Passed {plate.date} 8:09:40 AM"),
        _row("Last Fluidics Test", f"Passed {plate.date} 8:11:02 AM"),
        _row(""),
        _row("CALInfo:"),
        _row("Calibrator"),
        _row("Lot", "ExpirationDate", "CalibrationTime", "Result", "MachineSerialNo"),
        _row("C04417", "6/30/2027", f"{plate.date} 8:01:12 AM", "Pass", serial),
        "",
        "",
        _row("Samples", str(len(plate.layout)), "Min Events", str(min_events), "Per Bead"),
        "",
        _row("Results"),
        "",
    ]
    locations = [f"{i}(1,{w.well})" for i, w in enumerate(plate.layout, start=1)]

    def block(title: str, values: np.ndarray) -> None:
        lines.append(_row("DataType:", title))
        lines.append(_row("Location", "Sample", *names, "Total Events"))
        for loc, well, vals, total in zip(locations, plate.layout, values, plate.total_events,
                                          strict=True):
            lines.append(_row(loc, well.sample, *(_num(v) for v in vals), str(total)))
        lines.append("")

    block("Median", plate.median)
    block("Net MFI", plate.net)
    block("Count", plate.count.astype(float))

    # Avg Net MFI over replicate wells: unknowns and controls first, standards last (as 4.2 does).
    lines.append(_row("DataType:", "Avg Net MFI"))
    lines.append(_row("Sample", *names))
    order: list[str] = []
    for well in plate.layout:
        if well.sample_type != "background" and well.sample not in order:
            order.append(well.sample)
    order.sort(key=lambda s: s.startswith("Standard"))
    samples = np.array([w.sample for w in plate.layout])
    for sample in order:
        lines.append(_row(sample, *(_num(v) for v in plate.net[samples == sample].mean(axis=0))))
    lines.append("")
    lines += [_row("DataType:", "Units"), _row("Analyte:", *names), _row("BeadID:", *regions),
              _row("Units:", *([""] * len(names))), ""]
    lines += [_row("DataType:", "Per Bead Count"), _row("Analyte:", *names),
              _row("BeadID:", *regions), _row("Per Bead:", *([str(min_events)] * len(names))), ""]
    lines += [_row("DataType:", "Dilution Factor"), _row("Location", "Sample", "Dilution Factor")]
    for loc, well in zip(locations, plate.layout, strict=True):
        if well.dilution is None:
            lines.append(_row(loc, well.sample))
        else:
            lines.append(_row(loc, well.sample, _num(well.dilution)))
    lines += ["", ""]
    lines += [_row("DataType:", "Analysis Types"), _row("Analyte:", *names),
              _row("AnalysisType", *(["None"] * len(names))), ""]
    lines += [_row("DataType:", "Audit Logs"), _row("UserId", "Date", "Message"), ""]
    lines += [_row("DataType:", "Warnings/Errors"), _row("Location", "Status", "Message")]
    for well, counts in zip(plate.layout, plate.count, strict=True):
        if counts.min() < min_events:
            lines.append(_row(f"1,{well.well}", "Ok", "The acquisition had at least one region "
                                                     "that did not reach the specified count."))
    lines.append("")
    body = "\r\n".join(lines) + "\r\n"
    # xPONENT closes the file with a CRC32 of its content; ours is a CRC32 of the bytes above.
    crc = zlib.crc32(body.encode("utf-8")) & 0xFFFFFFFF
    text = body + f"-- CRC --\r\nCRC32: {crc:08X}"
    with atomic_open(path, "w", newline="") as handle:
        handle.write(text)
    return Path(path)
