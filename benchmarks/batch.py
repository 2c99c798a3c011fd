"""Scale benchmark of a batch run (issue 5 item 5): ``immunoprofile run`` vs a plain FlowKit loop.

Generates a deterministic batch (the T-cell panel FCS 3.1 files and 9-gate Gating-ML strategy of
``gate_vs_flowkit.py``, copies of the example trial's xPONENT plates), then measures, each in
its own interpreter:

- ``run_pipeline`` (gate + cytokines; ``--force``, fresh cache) with 1 and 2 workers;
- with 1 worker on 1/4, 1/2 and all of the files: peak memory against the number of files;
- a plain FlowKit loop (``Session.analyze_samples`` + medians from its masks) on the first
  ``--flowkit-files`` files, checking that every population count equals ours.

Two modes, both measured in one run and both printed against the same FlowKit loop:

- ``defaults``: the pipeline's defaults (time QC on, median + geometric mean + robust CV);
- ``like``: like-for-like with the FlowKit loop (time QC off, medians only: the same work).

Per mode: files/s and wall at 1 worker, the speed-up from 1 to 2 workers, marginal CPU per file,
peak RSS of the largest process against the number of files (1 worker), and the ratios to FlowKit
(wall at 1 worker, CPU per file). Usage::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/batch.py             # 200 × 100k, 20 plates
    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/batch.py --files 40 --events 20000 --plates 4
    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/batch.py --modes like --files 60
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ----- data -------------------------------------------------------------------------------------

def make_batch(work: Path, n_files: int, n_events: int, n_plates: int) -> dict[str, Path]:
    """Write the batch: flow/*.fcs, plates/*.csv, the strategy, standards and a manifest.

    FCS files and the 9-gate Gating-ML strategy (polygon, rectangle, ellipse, quadrant, boolean
    under compensation and logicle) are those of ``benchmarks/gate_vs_flowkit.py``, which FlowKit
    reads too; the plates are the example trial's xPONENT exports, renamed per copy.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gate_vs_flowkit import make_file, make_strategy

    from immunoprofile.simulate.trial import simulate_trial

    (work / "flow").mkdir(parents=True, exist_ok=True)
    (work / "plates").mkdir(exist_ok=True)
    rows = ["sample_id,subject_id,visit,study_day,assay,file"]
    for i in range(n_files):
        path = work / "flow" / f"b{i:04d}.fcs"
        rows.append(f"B{i:04d},P{i:04d},week0,0,flow,flow/{path.name}")
        if not path.is_file():
            make_file(path, n_events, seed=1000 + i)
    (work / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    make_strategy(work / "strategy.xml")
    if n_plates:
        base = simulate_trial(work / "base", n_events=200, n_subjects=1)
        sources = sorted((base / "plates").glob("*.csv"))
        for j in range(n_plates):
            source = sources[j % len(sources)]
            text = source.read_text(encoding="utf-8")
            (work / "plates" / f"plate{j + 1:02d}.csv").write_text(
                text.replace(f'"Batch","{source.stem}"', f'"Batch","plate{j + 1:02d}"'),
                encoding="utf-8")
        shutil.copy(base / "standards.csv", work / "standards.csv")
    return {"strategy": work / "strategy.xml", "manifest": work / "manifest.csv"}


#: mode -> (statistics, time QC on): what each measured side of ``immunoprofile run`` does
MODES = {"defaults": ("median,gmean,rcv", True), "like": ("median", False)}


def write_config(work: Path, name: str, n_files: int, *, plates: bool,
                 statistics: str = "median,gmean,rcv", time_qc: bool = True) -> Path:
    lines = (work / "manifest.csv").read_text().splitlines()
    (work / f"manifest_{name}.csv").write_text("\n".join(lines[: n_files + 1]) + "\n")
    config = work / f"{name}.yaml"
    config.write_text(
        "schema_version: 1\n"
        "design: {protocol: example-trial}\n"  # the manifest's visits are the example protocol's
        "inputs:\n"
        f"  manifest: manifest_{name}.csv\n"
        "  strategy: strategy.xml\n"
        + ("  plates: [plates]\n  standards: standards.csv\n" if plates else "")
        + f"cytokine: {{enabled: {str(plates).lower()}}}\n"
        + f"flow: {{statistics: [{statistics}], time_qc: {{enabled: {str(time_qc).lower()}}}}}\n"
        "assemble: {enabled: false}\ncompare: {enabled: false}\nreport: {enabled: false}\n"
        f"outputs: {{dir: out_{name}}}\n")
    return config


# ----- the measured sides (each in a fresh interpreter) -----------------------------------------

def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def child_run(config: str, jobs: int) -> dict:
    from immunoprofile.pipeline.config import load_config
    from immunoprofile.pipeline.runner import run_pipeline

    cfg = load_config(config)
    shutil.rmtree(cfg.out_dir, ignore_errors=True)
    t0 = time.perf_counter()
    summary = run_pipeline(cfg, force=True, jobs=jobs, executor="process")
    wall = time.perf_counter() - t0
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return {"wall_s": wall, "cpu_s": _cpu_s(), "stages": {s.name: s.seconds for s in summary.stages},
            "n_flow": summary.n_flow, "n_plates": summary.n_plates,
            "failures": len(summary.failures),
            "peak_mib": max(_vm_hwm_mib(), children), "parent_mib": _vm_hwm_mib(),
            "worker_mib": children}


def child_flowkit(strategy: str, files: list[str]) -> dict:
    t0 = time.perf_counter()
    import flowkit as fk
    import numpy as np

    counts: dict[str, dict[str, int]] = {}
    for path in files:
        sample = fk.Sample(path, sample_id="s")
        session = fk.Session(gating_strategy=strategy, fcs_samples=[sample])
        session.analyze_samples(use_mp=False)
        report = session.get_analysis_report()
        # MFI: FlowKit has none; medians of compensated events from its masks, as we report
        sample.apply_compensation(sample.metadata["spillover"])
        comp = sample.get_events(source="comp")
        fluor = [i for i, n in enumerate(sample.pnn_labels)
                 if n not in ("FSC-A", "FSC-H", "SSC-A", "Time")]
        mine: dict[str, int] = {}
        for name, gpath, count in zip(report["gate_name"], report["gate_path"], report["count"]):
            mask = session.get_gate_membership("s", name, gate_path=gpath)
            np.median(comp[mask][:, fluor], axis=0) if mask.any() else None
            mine[str(name)] = int(count)  # Gating-ML gate id (unique in the strategy)
        counts[Path(path).stem] = mine
    return {"wall_s": time.perf_counter() - t0, "cpu_s": _cpu_s(), "counts": counts,
            "peak_mib": _vm_hwm_mib()}


def burn(seconds: float) -> int:
    """Pure CPU work (the control task: how many cores does this machine give us right now?)."""
    start, spins = time.process_time(), 0
    while time.process_time() - start < seconds:
        spins += 1
    return spins


def free_cores_control(n_tasks: int = 6, seconds: float = 0.5) -> float:
    """Speed-up of pure CPU tasks from 1 to 2 workers through the same executor."""
    from immunoprofile.executors import ExecutorSpec, run_tasks

    walls = []
    for spec in (ExecutorSpec("serial"), ExecutorSpec("process", 2)):
        t0 = time.perf_counter()
        run_tasks(burn, [(str(i), (seconds,)) for i in range(n_tasks)], spec=spec)
        walls.append(time.perf_counter() - t0)
    return walls[0] / walls[1]


def _child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child {args[:2]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----- main -------------------------------------------------------------------------------------

def measure_mode(work: Path, mode: str, args: argparse.Namespace) -> dict:
    """Every figure of one mode: runs at 1 and 2 workers, then peak memory against files."""
    statistics, time_qc = MODES[mode]
    if mode == "defaults" and args.statistics:
        statistics = args.statistics
    print(f"== mode {mode}: statistics {statistics}, time QC {'on' if time_qc else 'off'}")
    runs = {}
    for jobs in (1, 2):
        config = write_config(work, f"{mode}_j{jobs}", args.files, plates=args.plates > 0,
                              statistics=statistics, time_qc=time_qc)
        runs[jobs] = _child(["--child-run", str(config), str(jobs)])
        r = runs[jobs]
        gate_s = r["stages"]["gate"]
        print(f"run, {jobs} worker(s): {r['wall_s']:.1f} s total; gate {gate_s:.1f} s = "
              f"{args.files / gate_s:.2f} files/s; cytokines {r['stages']['cytokines']:.1f} s "
              f"({r['n_plates']} plates); CPU {r['cpu_s']:.1f} s = "
              f"{r['cpu_s'] / r['wall_s']:.2f} cores busy on average; "
              f"peak RSS {r['peak_mib']:.0f} MiB (parent {r['parent_mib']:.0f}, "
              f"largest worker {r['worker_mib']:.0f}); failures {r['failures']}")
    speedup_gate = runs[1]["stages"]["gate"] / runs[2]["stages"]["gate"]
    speedup_all = runs[1]["wall_s"] / runs[2]["wall_s"]
    print(f"speed-up 1 -> 2 workers: gate stage {speedup_gate:.2f}x, whole run "
          f"{speedup_all:.2f}x (target >= 1.7x; needs two idle cores: load average now "
          f"{os.getloadavg()[0]:.1f})")
    print("peak memory against the number of files (1 worker, flow only):")
    cpu: dict[int, float] = {}
    peak: dict[int, float] = {}
    gate_wall: dict[int, float] = {}
    points = sorted({max(1, args.files // 4), max(1, args.files // 2), args.files})
    for n in points:
        config = write_config(work, f"{mode}_mem_{n}", n, plates=False, statistics=statistics,
                              time_qc=time_qc)
        r = _child(["--child-run", str(config), "1"])
        cpu[n], peak[n], gate_wall[n] = r["cpu_s"], r["peak_mib"], r["stages"]["gate"]
        print(f"  {n:5d} files: peak RSS {r['peak_mib']:.0f} MiB, gate {r['stages']['gate']:.1f} s "
              f"wall, run {r['cpu_s']:.1f} s CPU")
    lo, hi = min(cpu), max(cpu)
    per_file_cpu = (cpu[hi] - cpu[lo]) / (hi - lo) if hi > lo else cpu[hi] / hi
    per_file_wall = ((gate_wall[hi] - gate_wall[lo]) / (hi - lo) if hi > lo
                     else gate_wall[hi] / hi)
    print(f"marginal per file (flow, 1 worker): {per_file_cpu:.3f} s CPU, {per_file_wall:.3f} s "
          f"gate wall (fixed start-up cost {cpu[lo] - per_file_cpu * lo:.1f} s CPU)")
    return {"runs": runs, "per_file_cpu": per_file_cpu, "per_file_wall": per_file_wall,
            "peak": peak, "speedup_gate": speedup_gate, "speedup_all": speedup_all}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--plates", type=int, default=20)
    parser.add_argument("--flowkit-files", type=int, default=20,
                        help="FlowKit is slow: loop over this many files, report files/s.")
    parser.add_argument("--keep", type=Path, default=None, help="Work folder to keep/reuse.")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES),
                        help="defaults (time QC, three statistics) and/or like (FlowKit's work)")
    parser.add_argument("--statistics", default=None,
                        help="Override the defaults mode's statistics (like: medians only).")
    parser.add_argument("--child-run", nargs=2, metavar=("CONFIG", "JOBS"), help=argparse.SUPPRESS)
    parser.add_argument("--child-flowkit", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_run:
        print(json.dumps(child_run(args.child_run[0], int(args.child_run[1]))))
        return 0
    if args.child_flowkit:
        print(json.dumps(child_flowkit(args.child_flowkit[0], args.child_flowkit[1:])))
        return 0

    work = args.keep or Path(tempfile.mkdtemp(prefix="immunoprofile_batch_"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    make_batch(work, args.files, args.events, args.plates)
    print(f"batch: {args.files} FCS files × {args.events:,} events, {args.plates} plates in "
          f"{work} (generated in {time.perf_counter() - t0:.0f} s)")
    print(f"control, pure-CPU tasks 1 -> 2 workers through the same executor: "
          f"{free_cores_control():.2f}x (load average {os.getloadavg()[0]:.1f})")

    measured = {mode: measure_mode(work, mode, args) for mode in args.modes}

    m = min(args.flowkit_files, args.files)
    files = [str(work / "flow" / f"b{i:04d}.fcs") for i in range(m)]
    fk = _child(["--child-flowkit", str(work / "strategy.xml"), *files])
    import pandas as pd

    from immunoprofile.flow.gatingml import read_gatingml

    path_of = read_gatingml(work / "strategy.xml").paths()  # gate id -> our population path
    fk_rate = m / fk["wall_s"]
    fk_cpu_per_file = fk["cpu_s"] / m
    print(f"FlowKit loop: {m} files in {fk['wall_s']:.1f} s = {fk_rate:.2f} files/s "
          f"(incl. import), {fk_cpu_per_file:.3f} s CPU per file, peak RSS "
          f"{fk['peak_mib']:.0f} MiB")
    print(f"\n{'mode':9s} {'files/s 1w':>10s} {'wall 1w':>8s} {'2w':>8s} {'1->2':>5s} "
          f"{'CPU/file':>8s} {'peak RSS by files (MiB)':>28s} {'wall ratio':>10s} "
          f"{'CPU ratio':>9s} counts")
    for mode, res in measured.items():
        ours = pd.read_csv(work / f"out_{mode}_j1" / "flow" / "populations.csv")
        mismatches = compared = 0
        for i in range(m):
            mine = ours[ours["sample_id"] == f"B{i:04d}"].set_index("population")["count"]
            for gate_id, count in fk["counts"][f"b{i:04d}"].items():
                compared += 1
                mismatches += int(mine.get(path_of.get(gate_id, "?"), -1)) != count
        rate_1 = args.files / res["runs"][1]["stages"]["gate"]
        rate_2 = args.files / res["runs"][2]["stages"]["gate"]
        peaks = ", ".join(f"{n}: {v:.0f}" for n, v in sorted(res["peak"].items()))
        print(f"{mode:9s} {rate_1:10.2f} {1 / rate_1:7.3f}s {1 / rate_2:7.3f}s "
              f"{res['speedup_gate']:4.2f}x {res['per_file_cpu']:7.3f}s {peaks:>28s} "
              f"{rate_1 / fk_rate:9.1f}x {fk_cpu_per_file / res['per_file_cpu']:8.1f}x "
              f"{compared - mismatches}/{compared} equal")
    print("wall ratio: files/s of the gate stage at 1 worker over the FlowKit loop's (target "
          ">= 10x); CPU ratio: FlowKit's CPU per file (its import spread over its files) over "
          "our marginal CPU per file (the fair figure on a shared machine)")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
