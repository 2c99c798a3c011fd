"""``immunoprofile report RUN_DIR [--out report.html]``."""

from __future__ import annotations

from pathlib import Path

import click

from .common import Verbosity, common_options


@click.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTML file to write (default RUN_DIR/report.html).")
@click.option("--max-gating-samples", default=200, show_default=True,
              help="At most this many per-sample gating figures.")
@click.option("--no-gating", is_flag=True, help="Leave out the per-sample gating figures.")
@click.option("--jobs", default=2, show_default=True, help="Processes drawing gating figures.")
@common_options
def command(run_dir: Path, out: Path | None, max_gating_samples: int, no_gating: bool, jobs: int,
            verbosity: Verbosity) -> None:
    """Build one self-contained HTML QC and results report from RUN_DIR."""
    from ..report import build_report

    summary = build_report(run_dir, out, max_gating_samples=max_gating_samples,
                           gating=not no_gating, jobs=jobs)
    click.echo(f"report: {summary.path} ({summary.size_bytes / 1e6:.1f} MB, "
               f"{summary.seconds:.1f} s, {len(summary.plots)} PNGs in {run_dir / 'plots'})")
