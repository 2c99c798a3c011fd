"""``immunoprofile gate``: gate FCS files with one strategy and write the batch outputs.

Its stage options are :class:`~immunoprofile.flow.options.GateOptions` (the flags, the config's
``flow:`` section and the function's keywords come from that one model). The command only parses
options and calls :func:`immunoprofile.flow.gate_files` (the same
function ``immunoprofile run`` calls), which gates through the process pool and writes the outputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .._options import click_options
from ..flow.options import GateOptions
from .common import common_options, progress

__all__ = ["command"]


@click.command("gate")
@click.argument("inputs", nargs=-1, required=True, metavar="FILES_OR_DIRS...",
                type=click.Path(path_type=Path))
@click.option("--strategy", "strategy_path", required=True, type=click.Path(path_type=Path),
              help="Gating strategy: Gating-ML 2.0 XML, FlowJo .wsp or YAML.")
@click_options(GateOptions)  # --comp, --group, --statistics, --time-qc, --membership
@click.option("--out", "out_dir", default="gate_output", show_default=True,
              type=click.Path(path_type=Path), help="Output folder.")
@click.option("--jobs", "-j", default=1, show_default=True, type=click.IntRange(min=1),
              help="Worker processes (1 = serial).")
@click.option("--manifest", "manifest_path", default=None, type=click.Path(path_type=Path),
              help="Manifest CSV mapping file -> sample_id (default: the file stem).")
@common_options
def command(inputs: tuple[Path, ...], strategy_path: Path, options: GateOptions,
            out_dir: Path, jobs: int, manifest_path: Path | None, verbosity) -> None:
    """Compensate, transform, gate and summarise FCS FILES_OR_DIRS (folders: every *.fcs)."""
    from ..executors import ExecutorSpec
    from ..flow.batch import expand_fcs_inputs, sample_ids_from_manifest
    from ..flow.stage import gate_files

    files = expand_fcs_inputs(inputs)
    result = gate_files(
        files, strategy_path, options,
        sample_ids=sample_ids_from_manifest(manifest_path) if manifest_path else None,
        executor=ExecutorSpec("process", jobs), out_dir=out_dir,
        progress=lambda total, what: progress(total, what, quiet=verbosity.quiet),
        command=" ".join(["immunoprofile", *sys.argv[1:]]))
    n_tasks = len(result.samples) + len(result.failures)
    click.echo(f"gated {len(result.samples)}/{n_tasks} file(s); outputs in {out_dir}/ "
               f"({', '.join(p.name for p in result.written.values())})", err=verbosity.quiet)
    if result.failures:
        for path, reason in result.failures:
            click.echo(f"failed: {reason if reason.startswith(path) else f'{path}: {reason}'}",
                       err=True)
        sys.exit(1)
