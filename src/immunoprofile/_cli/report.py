"""``immunoprofile report RUN_DIR [--out report.html]``: the command only parses options and
calls :func:`immunoprofile.report.build_report` (the function ``immunoprofile run`` calls) on the
folder's :class:`~immunoprofile.layout.RunLayout`."""

from __future__ import annotations

from pathlib import Path

import click

from .._options import click_options
from ..layout import MAIN_FILES
from ..report.options import ReportOptions
from .common import Verbosity, common_options

_FOLDER = click.Path(file_okay=False, path_type=Path)
#: stage folder -> the command that writes it
_WRITERS = {"flow": "gate", "cytokines": "cytokines", "study": "assemble", "compare": "compare"}


def _stage_folders(fn):  # type: ignore[no-untyped-def]
    """``--flow/--cytokines/--study/--compare DIR``: a stage's folder when not in RUN_DIR."""
    for stage, writer in reversed(_WRITERS.items()):
        fn = click.option(f"--{stage}", f"{stage}_dir", type=_FOLDER, default=None, help=(
            f"Output folder of `immunoprofile {writer}` (default RUN_DIR/{stage}, or RUN_DIR "
            f"itself when it holds {MAIN_FILES[stage]})."))(fn)
    return fn


@click.command("report")
@click.argument("run_dir", type=_FOLDER)
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTML file to write (default RUN_DIR/report.html).")
@_stage_folders
@click_options(ReportOptions)
@common_options
def command(run_dir: Path, out: Path | None, flow_dir: Path | None, cytokines_dir: Path | None,
            study_dir: Path | None, compare_dir: Path | None, options: ReportOptions,
            verbosity: Verbosity) -> None:
    """Build one self-contained HTML QC and results report from RUN_DIR."""
    from ..errors import InputError
    from ..layout import RunLayout
    from ..report import build_report

    layout = RunLayout.of_folder(run_dir, flow_dir=flow_dir, cytokines_dir=cytokines_dir,
                                 study_dir=study_dir, compare_dir=compare_dir)
    given = {"flow": flow_dir, "cytokines": cytokines_dir, "study": study_dir,
             "compare": compare_dir}
    for stage, folder in given.items():
        if folder is not None and not layout.main_output(stage).is_file():
            raise InputError(layout.main_output(stage),
                             f"not found (--{stage} names the folder holding it)")
    summary = build_report(layout, out, options)
    click.echo(f"report: {summary.path} ({summary.size_bytes / 1e6:.1f} MB, "
               f"{summary.seconds:.1f} s, {len(summary.plots)} PNGs in {layout.report.plots})")
