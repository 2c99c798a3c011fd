"""Gate the same simulated FCS files with FlowKit and with immunoprofile; compare counts, time and
peak memory.

Usage::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/gate_vs_flowkit.py [--sizes 100000 1000000]
        [--repeats 3] [--keep DIR]

For each size a deterministic 12-channel file (FSC/SSC, 8 fluorescence channels, Time) with a
``$SPILLOVER`` is written, plus a 9-gate Gating-ML strategy (polygons, rectangles, an ellipse, a
quadrant gate, and/or/not booleans) on compensated, logicle-transformed axes. Each side runs in
its own fresh interpreter (so peak memory is its own): FlowKit does ``Sample`` + ``Session`` +
``analyze_samples`` + medians of the compensated events from its masks; immunoprofile does
``read_fcs`` + ``evaluate`` + ``population_stats`` (count, %, median, geometric mean, robust CV)
and, for the same work as FlowKit's side, ``read_fcs`` + ``evaluate`` + ``population_stats``
with ``statistics=("median",)`` (counts, %, MFI). Every population
count must be identical.
Printed: time of the pipeline (imports excluded, best of ``--repeats``), time of the whole
process (imports included), the ratios, peak resident memory (VmHWM), and ``immunoprofile
--help`` time; then the issue-14 target lines: RATIOS per size (default statistics, medians
only, counts only, peak memory), the whole process on ``--whole-files`` files of the largest
size (``immunoprofile gate --jobs 1`` against a FlowKit script writing the same counts and
medians), and with ``--report-run demo_output`` the example trial's report build time. The
batch of 200 files is ``benchmarks/batch.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

FLUOR = [("FITC-A", "CD3"), ("PE-A", "CD4"), ("PerCP-Cy5-5-A", "CD8"), ("APC-A", "CD25"),
         ("BV421-A", "CD127"), ("PE-Cy7-A", "CCR7"), ("APC-Cy7-A", "LiveDead"),
         ("BV510-A", "CD45RA")]
SCATTER = ["FSC-A", "FSC-H", "SSC-A"]
CHANNELS = SCATTER + [c for c, _ in FLUOR] + ["Time"]
MARKERS = ["", "", ""] + [m for _, m in FLUOR] + [""]


# ------------------------------------------------------------------------------------------------
# deterministic data and strategy
# ------------------------------------------------------------------------------------------------

def _spillover():
    import numpy as np

    from immunoprofile.flow.compensation import Spillover

    rng = np.random.default_rng(2026)
    n = len(FLUOR)
    matrix = np.eye(n)
    for i in range(n):
        for j in range(n):
            if i != j and abs(i - j) <= 2:  # neighbouring detectors see each other's dyes
                matrix[i, j] = rng.uniform(0.01, 0.25 if abs(i - j) == 1 else 0.05)
    return Spillover(tuple(c for c, _ in FLUOR), matrix)


def make_file(path: Path, n_events: int, seed: int = 7) -> Path:
    """Write a realistic PBMC-like T-cell panel file with ``n_events`` events."""
    import numpy as np

    from immunoprofile.flow.fcs_write import write_fcs

    rng = np.random.default_rng(seed)
    n = n_events
    kind = rng.choice(4, size=n, p=[0.10, 0.08, 0.30, 0.52])  # debris, doublets, non-T, T
    fsc_a = np.where(kind == 0, rng.normal(15000, 6000, n), rng.normal(90000, 15000, n))
    fsc_a = np.where(kind == 1, fsc_a * 1.8, fsc_a)
    fsc_h = np.where(kind == 1, fsc_a * 0.55, fsc_a * 0.85) + rng.normal(0, 3000, n)
    ssc_a = np.where(kind == 0, rng.normal(8000, 4000, n), rng.normal(40000, 12000, n))

    def pos(mask, mean, sd=0.5):
        return np.where(mask, rng.lognormal(mean, sd, n), rng.normal(0, 150, n))

    t = kind == 3
    cd4 = t & (rng.random(n) < 0.65)
    cd8 = t & ~cd4 & (rng.random(n) < 0.85)
    treg = cd4 & (rng.random(n) < 0.08)
    naive = t & (rng.random(n) < 0.45)
    dead = rng.random(n) < 0.07
    true = np.column_stack([
        pos(t, 8.5), pos(cd4, 8.0), pos(cd8, 8.3),
        pos(treg | (cd4 & (rng.random(n) < 0.2)), 7.5 + treg * 1.0),
        pos(cd4 & ~treg, 7.8), pos(naive, 7.6), pos(dead, 9.0), pos(naive, 8.1),
    ])
    spill = _spillover()
    raw_fl = true @ spill.matrix
    events = np.column_stack([fsc_a, fsc_h, ssc_a, raw_fl,
                              np.sort(rng.uniform(0, 600, n))]).astype(np.float32)
    return write_fcs(path, events, CHANNELS, MARKERS, spillover=spill,
                     text={"$CYT": "Simulated LSRFortessa", "$DATE": "24-NOV-2026"})


def make_strategy(path: Path) -> Path:
    """Write the 9-gate Gating-ML strategy (12 populations) used on every file."""
    from immunoprofile.flow.gates import (
        FCS_SPILLOVER,
        BooleanGate,
        Dimension,
        EllipseGate,
        PolygonGate,
        Quadrant,
        QuadrantDivider,
        QuadrantGate,
        RectangleGate,
        Strategy,
    )
    from immunoprofile.flow.gatingml import write_gatingml
    from immunoprofile.flow.transforms import LogicleTransform

    def fl(channel: str) -> Dimension:
        return Dimension(channel, FCS_SPILLOVER, "logicle")

    fsc_a, fsc_h, ssc_a = Dimension("FSC-A"), Dimension("FSC-H"), Dimension("SSC-A")
    gates = {
        "Cells": PolygonGate("Cells", None, "Cells", dims=(fsc_a, ssc_a),
                             vertices=((40000.0, 10000.0), (150000.0, 15000.0),
                                       (160000.0, 90000.0), (60000.0, 95000.0),
                                       (35000.0, 40000.0))),
        "Singlets": PolygonGate("Singlets", "Cells", "Singlets", dims=(fsc_a, fsc_h),
                                vertices=((30000.0, 20000.0), (170000.0, 120000.0),
                                          (170000.0, 170000.0), (30000.0, 45000.0))),
        "Live": RectangleGate("Live", "Singlets", "Live", dims=(fl("APC-Cy7-A"),),
                              mins=(None,), maxs=(0.55,)),
        "CD3": RectangleGate("CD3", "Live", "CD3+", dims=(fl("FITC-A"), ssc_a),
                             mins=(0.55, None), maxs=(None, 100000.0)),
        "Q": QuadrantGate("Q", "CD3", "CD4vCD8",
                          dividers=(QuadrantDivider("d4", fl("PE-A"), (0.5,)),
                                    QuadrantDivider("d8", fl("PerCP-Cy5-5-A"), (0.5,))),
                          quadrants=(Quadrant("CD4", (("d4", 1.0), ("d8", 0.0)), "CD4+"),
                                     Quadrant("CD8", (("d4", 0.0), ("d8", 1.0)), "CD8+"),
                                     Quadrant("DP", (("d4", 1.0), ("d8", 1.0)), "DP"),
                                     Quadrant("DN", (("d4", 0.0), ("d8", 0.0)), "DN"))),
        "Treg": EllipseGate("Treg", "CD4", "Treg", dims=(fl("APC-A"), fl("BV421-A")),
                            mean=(0.72, 0.35), covariance=((0.004, -0.001), (-0.001, 0.006)),
                            distance_square=4.0),
        "Naive": RectangleGate("Naive", "CD4", "Naive", dims=(fl("BV510-A"), fl("PE-Cy7-A")),
                               mins=(0.55, 0.5), maxs=(None, None)),
        "CD4mem": BooleanGate("CD4mem", "CD3", "CD4 memory", op="and",
                              operands=(("CD4", False), ("Naive", True))),
        "TregOrNaive": BooleanGate("TregOrNaive", None, "Treg or naive", op="or",
                                   operands=(("Treg", False), ("Naive", False))),
    }
    strategy = Strategy(gates=gates, transforms={"logicle": LogicleTransform(262144, 0.5, 4.5, 0)})
    write_gatingml(strategy, path)
    return path


# ------------------------------------------------------------------------------------------------
# the two sides (each in its own interpreter)
# ------------------------------------------------------------------------------------------------

def _peak_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource  # fallback: may include memory inherited across exec

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def side_flowkit(fcs_path: str, gml_path: str, repeats: int) -> dict:
    t0 = time.perf_counter()
    import flowkit as fk
    import numpy as np

    import_s = time.perf_counter() - t0
    best = best_cpu = best_counts = float("inf")
    counts: dict[str, int] = {}
    for _ in range(repeats):
        t1, c1 = time.perf_counter(), time.process_time()
        sample = fk.Sample(fcs_path, sample_id="s")
        session = fk.Session(gating_strategy=gml_path, fcs_samples=[sample])
        session.analyze_samples(use_mp=False)
        report = session.get_analysis_report()
        best_counts = min(best_counts, time.process_time() - c1)
        # MFI: FlowKit has no such statistic; medians of compensated events from its masks
        sample.apply_compensation(sample.metadata["spillover"])
        comp = sample.get_events(source="comp")
        fl_idx = [sample.pnn_labels.index(c) for c, _ in FLUOR]
        medians = {}
        for gate_name, gate_path in zip(report["gate_name"], report["gate_path"], strict=True):
            mask = session.get_gate_membership("s", gate_name, gate_path=gate_path)
            medians[gate_name] = np.median(comp[mask][:, fl_idx], axis=0)
        best = min(best, time.perf_counter() - t1)
        best_cpu = min(best_cpu, time.process_time() - c1)
        counts = {str(k): int(v) for k, v in zip(report["gate_name"], report["count"],
                                                 strict=True)}
    return {"import_s": import_s, "pipeline_s": best, "cpu_s": best_cpu,
            "counts_cpu_s": best_counts, "counts": counts,
            "peak_mib": _peak_rss_mib(), "n_mfi": len(medians)}


def side_immunoprofile(fcs_path: str, gml_path: str, repeats: int,
                       stats: str = "population_stats") -> dict:
    t0 = time.perf_counter()
    from immunoprofile.flow.engine import evaluate
    from immunoprofile.flow.fcs import read_fcs
    from immunoprofile.flow.gatingml import read_gatingml
    from immunoprofile.flow.stats import population_stats

    import_s = time.perf_counter() - t0
    best = best_cpu = best_counts = float("inf")
    counts: dict[str, int] = {}
    for _ in range(repeats):
        t1, c1 = time.perf_counter(), time.process_time()
        strategy = read_gatingml(gml_path)
        fcs = read_fcs(fcs_path)
        result = evaluate(strategy, fcs)
        best_counts = min(best_counts, time.process_time() - c1)
        if stats == "population_stats":
            # the real output: count, % parent, % total, median, geometric mean, robust CV
            n_rows = population_stats(result, fcs, sample_id="s").shape[0]
        else:
            # the same work as FlowKit's side: counts and the MFI (median) of each fluorescence
            # marker per population, on compensated events
            n_rows = population_stats(result, fcs, sample_id="s", statistics=("median",),
                                      markers=[c for c, _ in FLUOR]).shape[0]
        best = min(best, time.perf_counter() - t1)
        best_cpu = min(best_cpu, time.process_time() - c1)
        counts = dict(result.counts)
        del fcs, result
    return {"import_s": import_s, "pipeline_s": best, "cpu_s": best_cpu,
            "counts_cpu_s": best_counts, "counts": counts,
            "peak_mib": _peak_rss_mib(), "n_mfi": n_rows}


def _run_side(side: str, fcs_path: Path, gml_path: Path, repeats: int) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--side", side, str(fcs_path), str(gml_path),
                          "--repeats", str(repeats)], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{side} side failed:\n{out.stderr}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    data["process_s"] = wall
    return data


FLOWKIT_SCRIPT = '''
import sys
import flowkit as fk
import numpy as np
import pandas as pd
gml, out, files = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = []
for path in files:
    sample = fk.Sample(path, sample_id="s")
    session = fk.Session(gating_strategy=gml, fcs_samples=[sample])
    session.analyze_samples(use_mp=False)
    report = session.get_analysis_report()
    sample.apply_compensation(sample.metadata["spillover"])
    comp = sample.get_events(source="comp")
    fl = [i for i, n in enumerate(sample.pnn_labels) if n not in ("FSC-A", "FSC-H", "SSC-A", "Time")]
    for name, gpath, count in zip(report["gate_name"], report["gate_path"], report["count"]):
        mask = session.get_gate_membership("s", name, gate_path=gpath)
        med = np.median(comp[mask][:, fl], axis=0) if mask.any() else [np.nan] * len(fl)
        rows.append({"file": path, "population": name, "count": int(count), **{
            f"mfi_{sample.pnn_labels[i]}": float(v) for i, v in zip(fl, med)}})
pd.DataFrame(rows).to_csv(out, index=False)
'''


def whole_process(workdir: Path, gml: Path, files: list[Path], repeats: int) -> dict:
    """Wall and CPU seconds of ``immunoprofile gate FILES --jobs 1`` (default statistics,
    populations.csv + flow.h5ad + provenance) and of a FlowKit script doing the same gating
    with medians to a CSV, each a fresh process from start to exit (imports included)."""
    import resource

    script = workdir / "flowkit_gate.py"
    script.write_text(FLOWKIT_SCRIPT)
    exe = Path(sys.executable).with_name("immunoprofile")
    ours = ([str(exe)] if exe.exists() else [sys.executable, "-m", "immunoprofile.cli"]) + [
        "gate", *map(str, files), "--strategy", str(gml), "--out", str(workdir / "ip_out"),
        "--jobs", "1", "-q"]
    theirs = [sys.executable, str(script), str(gml), str(workdir / "fk_out.csv"),
              *map(str, files)]
    out = {}
    for name, cmd in (("immunoprofile", ours), ("FlowKit", theirs)):
        wall = cpu = float("inf")
        for _ in range(repeats):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            wall = min(wall, time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = min(cpu, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        out[name] = {"wall_s": wall, "cpu_s": cpu}
    return out


def report_time(run_dir: Path, jobs: int) -> tuple[float, float]:
    """Wall seconds of ``immunoprofile report RUN_DIR`` (a fresh process) and the build time
    the report itself logs."""
    exe = Path(sys.executable).with_name("immunoprofile")
    cmd = ([str(exe)] if exe.exists() else [sys.executable, "-m", "immunoprofile.cli"]) + [
        "report", str(run_dir), "--out", str(run_dir / "report_bench.html")]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    import re

    found = re.findall(r"MB, ([0-9.]+) s\)", proc.stderr + proc.stdout)
    return wall, float(found[-1]) if found else float("nan")


def _help_time() -> float:
    exe = Path(sys.executable).with_name("immunoprofile")
    cmd = [str(exe), "--help"] if exe.exists() else [sys.executable, "-m", "immunoprofile.cli",
                                                      "--help"]
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        best = min(best, time.perf_counter() - t0)
    return best


SIDES = {
    "flowkit": side_flowkit,
    "immunoprofile": side_immunoprofile,
    "immunoprofile-medians": lambda f, g, r: side_immunoprofile(f, g, r, stats="medians"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="keep generated files here")
    parser.add_argument("--whole-files", type=int, default=3,
                        help="files of the largest size for the whole-process comparison (0: skip)")
    parser.add_argument("--report-run", type=Path, default=None,
                        help="a finished run folder (e.g. demo_output) whose report to time")
    parser.add_argument("--side", choices=list(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        print(json.dumps(SIDES[args.side](args.paths[0], args.paths[1], args.repeats)))
        return 0

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="gate_vs_flowkit_"))
    workdir.mkdir(parents=True, exist_ok=True)
    gml = make_strategy(workdir / "strategy.xml")
    print(f"# files in {workdir}; OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")
    header = (f"{'events':>9} {'side':>13} {'pipeline s':>10} {'CPU s':>7} {'process s':>9} "
              f"{'import s':>8} {'peak MiB':>8}")
    print(header)
    ok = True
    for size in args.sizes:
        path = workdir / f"sim_{size}.fcs"
        if not path.exists():
            make_file(path, size)
        fk_res = _run_side("flowkit", path, gml, args.repeats)
        ip_res = _run_side("immunoprofile", path, gml, args.repeats)
        med_res = _run_side("immunoprofile-medians", path, gml, args.repeats)
        for name, res in (("FlowKit", fk_res), ("immunoprofile", ip_res),
                          ("ip (medians)", med_res)):
            print(f"{size:>9} {name:>13} {res['pipeline_s']:>10.3f} {res['cpu_s']:>7.3f} "
                  f"{res['process_s']:>9.2f} "
                  f"{res['import_s']:>8.2f} {res['peak_mib']:>8.0f}")
        same = fk_res["counts"] == ip_res["counts"] == med_res["counts"]
        ok &= same
        print(f"{size:>9} counts identical: {same} ({len(ip_res['counts'])} populations; "
              f"e.g. {dict(list(ip_res['counts'].items())[:4])})")
        if not same:
            diff = {k: (fk_res["counts"].get(k), ip_res["counts"].get(k))
                    for k in set(fk_res["counts"]) | set(ip_res["counts"])
                    if fk_res["counts"].get(k) != ip_res["counts"].get(k)}
            print(f"{size:>9} DIFFERENT counts (FlowKit, ours): {diff}")
        print(f"{size:>9} speed-up pipeline {fk_res['pipeline_s'] / ip_res['pipeline_s']:.1f}x "
              f"(CPU {fk_res['cpu_s'] / ip_res['cpu_s']:.1f}x), "
              f"whole process {fk_res['process_s'] / ip_res['process_s']:.1f}x; "
              f"peak memory ours/FlowKit {ip_res['peak_mib'] / fk_res['peak_mib']:.2f}")
        print(f"{size:>9} to counts only (load + compensate + transform + gate), CPU: FlowKit "
              f"{fk_res['counts_cpu_s']:.3f} s, ours {med_res['counts_cpu_s']:.3f} s: "
              f"{fk_res['counts_cpu_s'] / med_res['counts_cpu_s']:.1f}x")
        print(f"{size:>9} same work as FlowKit (gating + medians): pipeline "
              f"{fk_res['pipeline_s'] / med_res['pipeline_s']:.1f}x "
              f"(CPU {fk_res['cpu_s'] / med_res['cpu_s']:.1f}x), peak memory "
              f"{med_res['peak_mib'] / fk_res['peak_mib']:.2f}")
        print(f"{size:>9} RATIOS vs FlowKit (CPU): default statistics "
              f"{fk_res['cpu_s'] / ip_res['cpu_s']:.1f}x (target 15), medians only "
              f"{fk_res['cpu_s'] / med_res['cpu_s']:.1f}x (target 20), counts only "
              f"{fk_res['counts_cpu_s'] / med_res['counts_cpu_s']:.1f}x; peak memory "
              f"{ip_res['peak_mib']:.0f} MiB (target <= 200)")
    if args.whole_files:
        size = max(args.sizes)
        files = []
        for k in range(args.whole_files):
            path = workdir / f"whole_{size}_{k}.fcs"
            if not path.exists():
                make_file(path, size, seed=100 + k)
            files.append(path)
        whole = whole_process(workdir, gml, files, args.repeats)
        fk_w, ip_w = whole["FlowKit"], whole["immunoprofile"]
        print(f"whole process, {len(files)} x {size} events: FlowKit script "
              f"{fk_w['wall_s']:.2f} s wall ({fk_w['cpu_s']:.2f} CPU), immunoprofile gate "
              f"--jobs 1 {ip_w['wall_s']:.2f} s wall ({ip_w['cpu_s']:.2f} CPU): RATIO "
              f"{fk_w['wall_s'] / ip_w['wall_s']:.1f}x wall, {fk_w['cpu_s'] / ip_w['cpu_s']:.1f}x "
              f"CPU (target 6)")
    if args.report_run is not None:
        wall, logged = report_time(args.report_run, 2)
        print(f"report of {args.report_run}: {wall:.1f} s wall for the whole command, "
              f"{logged:.1f} s build time as logged (target <= 15)")
    print(f"immunoprofile --help: {_help_time():.3f} s (best of 5)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
