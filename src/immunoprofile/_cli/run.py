"""``immunoprofile run CONFIG``: run a whole pipeline config, writing a log next to the outputs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from .common import add_log_file, common_options, echo_err, progress

__all__ = ["command"]

log = logging.getLogger("immunoprofile.run")


@click.command("run")
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Recompute every sample (ignore the cache).")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
              help="Workers (overrides executor.jobs; 1 = serial).")
@click.option("--executor", type=click.Choice(["process", "dask", "serial"]), default=None,
              help="Executor (overrides executor.kind).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Dask scheduler address, e.g. tcp://host:8786 (implies --executor dask).")
@common_options
def command(config: Path, force: bool, jobs: int | None, executor: str | None,
            scheduler: str | None, verbosity) -> None:
    """Run gate → cytokines → assemble → compare → report as CONFIG describes."""
    from ..layout import RunLayout
    from ..pipeline.config import ConfigError, load_config
    from ..pipeline.runner import run_pipeline

    try:
        cfg = load_config(config)
        cfg.study_design()  # no design is a config problem, reported before anything is made
    except ConfigError as exc:
        for problem in exc.problems:
            echo_err(str(problem))
        echo_err(f"{len(exc.problems)} problem(s) in {config}; nothing was run")
        sys.exit(2)
    if scheduler and executor not in (None, "dask"):
        raise click.UsageError("--scheduler needs --executor dask")
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    log_path = RunLayout(cfg.out_dir).log
    add_log_file(log_path)
    log.info("run %s -> %s", config, cfg.out_dir)

    def bar(total: int, description: str):
        return progress(total, description, quiet=verbosity.quiet)

    summary = run_pipeline(cfg, force=force, jobs=jobs,
                           executor="dask" if scheduler else executor, address=scheduler,
                           progress=bar)
    for stage in summary.stages:
        log.info("%s: %s%s in %.1f s", stage.name, stage.status,
                 f" ({stage.message})" if stage.message else "", stage.seconds)
    for path, reason in summary.failures:
        echo_err(f"failed: {reason if reason.startswith(path) else f'{path}: {reason}'}")
    click.echo(f"outputs in {cfg.out_dir}/ (log: {log_path.name}"
               + (f"; {len(summary.failures)} failed, see failed.tsv" if summary.failures else "")
               + ")", err=verbosity.quiet)
    report = summary.layout.report.html
    if report.is_file():
        click.echo(f"report: {report}", err=verbosity.quiet)
    if summary.exit_code:
        sys.exit(summary.exit_code)
