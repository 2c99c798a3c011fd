"""``immunoprofile report RUN_DIR [--out report.html]``: the command only parses options and calls
:func:`immunoprofile.report.build_report` (the function ``immunoprofile run`` calls) on the folder's
:class:`~immunoprofile.layout.RunLayout`."""

from __future__ import annotations

from pathlib import Path

import click

from .common import Verbosity, common_options

_FOLDER = click.Path(file_okay=False, path_type=Path)


@click.command("report")
@click.argument("run_dir", type=_FOLDER)
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTML file to write (default RUN_DIR/report.html).")
@click.option("--flow", "flow_dir", type=_FOLDER, default=None,
              help="Output folder of `immunoprofile gate` (default RUN_DIR/flow, or RUN_DIR "
                   "itself when it holds populations.csv).")
@click.option("--cytokines", "cytokines_dir", type=_FOLDER, default=None,
              help="Output folder of `immunoprofile cytokines` (default RUN_DIR/cytokines, or "
                   "RUN_DIR when it holds concentrations.csv).")
@click.option("--study", "study_dir", type=_FOLDER, default=None,
              help="Folder of `immunoprofile assemble`'s study.h5ad (default RUN_DIR/study, or "
                   "RUN_DIR when it holds study.h5ad).")
@click.option("--compare", "compare_dir", type=_FOLDER, default=None,
              help="Output folder of `immunoprofile compare` (default RUN_DIR/compare, or "
                   "RUN_DIR when it holds comparisons.csv).")
@click.option("--title", default=None, help="The report's title.")
@click.option("--max-gating-samples", default=200, show_default=True,
              help="At most this many per-sample gating figures.")
@click.option("--no-gating", is_flag=True, help="Leave out the per-sample gating figures.")
@click.option("--jobs", default=2, show_default=True, help="Processes drawing gating figures.")
@common_options
def command(run_dir: Path, out: Path | None, flow_dir: Path | None, cytokines_dir: Path | None,
            study_dir: Path | None, compare_dir: Path | None, title: str | None,
            max_gating_samples: int, no_gating: bool, jobs: int, verbosity: Verbosity) -> None:
    """Build one self-contained HTML QC and results report from RUN_DIR."""
    from ..errors import InputError
    from ..layout import RunLayout
    from ..report import build_report

    layout = RunLayout.of_folder(run_dir, flow_dir=flow_dir, cytokines_dir=cytokines_dir,
                                 study_dir=study_dir, compare_dir=compare_dir)
    for option, folder, main in (("--flow", flow_dir, layout.flow.populations),
                                 ("--cytokines", cytokines_dir, layout.cytokines.concentrations),
                                 ("--study", study_dir, layout.study.h5ad),
                                 ("--compare", compare_dir, layout.compare.comparisons)):
        if folder is not None and not main.is_file():
            raise InputError(main, f"not found ({option} names the folder holding it)")
    summary = build_report(layout, out, max_gating_samples=max_gating_samples,
                           gating=not no_gating, jobs=jobs, title=title)
    click.echo(f"report: {summary.path} ({summary.size_bytes / 1e6:.1f} MB, "
               f"{summary.seconds:.1f} s, {len(summary.plots)} PNGs in {layout.report.plots})")
