"""``immunoprofile gate``: gate FCS files with one strategy and write the batch outputs.

The command only parses options, calls :func:`immunoprofile.flow.batch.gate_sample` per file
through :func:`immunoprofile.executors.run_tasks` and :func:`write_gate_outputs` once.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from .common import common_options, progress

__all__ = ["command"]

log = logging.getLogger("immunoprofile.gate")


@click.command("gate")
@click.argument("inputs", nargs=-1, required=True, metavar="FILES_OR_DIRS...",
                type=click.Path(path_type=Path))
@click.option("--strategy", "strategy_path", required=True, type=click.Path(path_type=Path),
              help="Gating strategy: Gating-ML 2.0 XML, FlowJo .wsp or YAML.")
@click.option("--comp", "compensation", default="fcs", show_default=True,
              help="Compensation: fcs (the file's spillover), none, or a matrix CSV path.")
@click.option("--group", default=None, help="FlowJo sample group (workspaces only).")
@click.option("--out", "out_dir", default="gate_output", show_default=True,
              type=click.Path(path_type=Path), help="Output folder.")
@click.option("--jobs", "-j", default=1, show_default=True, type=click.IntRange(min=1),
              help="Worker processes (1 = serial).")
@click.option("--membership", is_flag=True,
              help="Also write membership/<sample_id>.parquet (one boolean column per population).")
@click.option("--manifest", "manifest_path", default=None, type=click.Path(path_type=Path),
              help="Manifest CSV mapping file -> sample_id (default: the file stem).")
@click.option("--statistics", default="median,gmean,rcv", show_default=True,
              help="Marker statistics per population (comma-separated): median (the MFI), "
                   "gmean (geometric mean), rcv (robust CV).")
@click.option("--time-qc", "time_qc", is_flag=True,
              help="Remove bad stretches of acquisition (clogs, surges, drift) found along Time "
                   "as a root gate TimeQC (off by default here; on in pipelines).")
@common_options
def command(inputs: tuple[Path, ...], strategy_path: Path, compensation: str, group: str | None,
            out_dir: Path, jobs: int, membership: bool, manifest_path: Path | None,
            statistics: str, time_qc: bool, verbosity) -> None:
    """Compensate, transform, gate and summarise FCS FILES_OR_DIRS (folders: every *.fcs)."""
    from ..errors import InputError
    from ..executors import ExecutorSpec, run_tasks
    from ..flow.batch import (expand_fcs_inputs, gate_task, sample_ids_from_manifest,
                              write_gate_outputs)
    from ..flow.strategy import load_strategy

    from ..flow.stats import STATISTICS

    wanted = tuple(x.strip() for x in statistics.split(",") if x.strip())
    if not wanted or set(wanted) - set(STATISTICS):
        raise click.UsageError(f"--statistics takes a comma-separated subset of "
                               f"{', '.join(STATISTICS)}; got {statistics!r}")
    if not strategy_path.is_file():
        raise InputError(strategy_path, "strategy file not found")
    strategy = load_strategy(strategy_path, group=group)
    comp_lower = compensation.lower()
    if comp_lower not in ("fcs", "none"):
        from ..flow.compensation import read_compensation_csv

        if not Path(compensation).is_file():
            raise InputError(compensation, "compensation matrix file not found "
                                           "(--comp takes fcs, none or a matrix file)")
        read_compensation_csv(compensation)  # a bad matrix is a usage error: stop now
    files = expand_fcs_inputs(inputs)
    mapping = sample_ids_from_manifest(manifest_path) if manifest_path else {}
    sample_ids = [mapping.get(f.name, f.stem) for f in files]
    seen: dict[str, Path] = {}
    for sid, f in zip(sample_ids, files):
        if sid in seen:
            raise InputError(f, f"sample id {sid!r} is also the id of {seen[sid]}; "
                                "rename a file or map ids with --manifest")
        seen[sid] = f
    comp_arg = comp_lower if comp_lower in ("fcs", "none") else str(Path(compensation).resolve())
    tasks = []
    for sid, f in zip(sample_ids, files):
        member = str(out_dir / "membership" / f"{sid}.parquet") if membership else None
        # data-driven gates: each sample's fitted gates as fixed Gating-ML (replayable)
        fitted = str(out_dir / "fitted_gates" / f"{sid}.gatingml.xml") if strategy.fits else None
        tasks.append((sid, (str(f), strategy, comp_arg, sid, member, wanted, fitted, time_qc)))

    log.info("gating %d file(s) with %s (%d job(s))", len(tasks), strategy_path.name, jobs)
    with progress(len(tasks), "gating", quiet=verbosity.quiet) as advance:
        def on_done(outcome) -> None:
            advance()
            if not outcome.ok:
                log.warning("%s: %s", outcome.key, outcome.error)
                if outcome.details and verbosity.debug:
                    log.debug(outcome.details)

        outcomes = run_tasks(gate_task, tasks, spec=ExecutorSpec("process", jobs),
                             on_done=on_done)
    samples = [o.value for o in outcomes if o.ok]
    file_of = dict(zip(sample_ids, files))
    failures = [(str(file_of[o.key]), o.error) for o in outcomes if not o.ok]
    inputs_used = [*files, strategy_path]
    if comp_lower not in ("fcs", "none"):
        inputs_used.append(Path(compensation))
    written = write_gate_outputs(
        out_dir, samples, failures, strategy=strategy,
        parameters={"strategy": str(strategy_path), "compensation": compensation,
                    "group": group, "membership": membership, "jobs": jobs,
                    "statistics": list(wanted), "time_qc": time_qc},
        inputs=inputs_used, command=" ".join(["immunoprofile", *sys.argv[1:]]))
    click.echo(f"gated {len(samples)}/{len(tasks)} file(s); outputs in {out_dir}/ "
               f"({', '.join(p.name for p in written.values())})", err=verbosity.quiet)
    if failures:
        for path, reason in failures:
            click.echo(f"failed: {reason if reason.startswith(path) else f'{path}: {reason}'}",
                       err=True)
        sys.exit(1)
