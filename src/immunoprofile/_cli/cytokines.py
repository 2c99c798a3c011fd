"""``immunoprofile cytokines``: read plate exports, fit standard curves, quantify, write outputs.

Its stage options are :class:`~immunoprofile.cytokine.options.CytokineOptions` (the flags, the
config's ``cytokine:`` section and the function's keywords come from that one model). The command
only parses options and calls :func:`immunoprofile.cytokine.quantify_files` (the
same function ``immunoprofile run`` calls), which reads the plates through the process pool and
writes the outputs. An unreadable plate is listed in ``failed.tsv``, the others go on, and the
exit code is 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .._options import click_options
from ..cytokine.options import CytokineOptions
from .common import common_options, progress

__all__ = ["command"]


@click.command("cytokines")
@click.argument("plate_inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--layout", "layout_path", default=None, type=click.Path(path_type=Path),
              help="Plate layout CSV (well -> sample, type, dilution) applied to every plate.")
@click.option("--standards", "standards_path", default=None, type=click.Path(path_type=Path),
              help="Kit standards table (analyte x standard -> expected concentration, unit).")
@click_options(CytokineOptions)  # --model ... --drug-readout, --repair/--no-repair
@click.option("--out", "out_dir", default="cytokines_output", show_default=True,
              type=click.Path(path_type=Path), help="Output folder.")
@click.option("--jobs", "-j", default=1, show_default=True, type=click.IntRange(min=1),
              help="Worker processes (1 = serial).")
@common_options
def command(plate_inputs: tuple[Path, ...], layout_path: Path | None,
            standards_path: Path | None, options: CytokineOptions, out_dir: Path, jobs: int,
            verbosity) -> None:
    """Fit standard curves and quantify the multiplex PLATE_INPUTS (xPONENT, Bio-Plex, MSD, ...;
    files, or folders of plate exports).

    Writes concentrations.csv, standard_curves.csv, summary.csv, cytokines.h5ad,
    provenance.json and failed.tsv to --out. Exit 1 when a plate could not be read (listed in
    failed.tsv; the others are still quantified), 2 for invalid options or inputs.
    """
    from ..cytokine.stage import quantify_files
    from ..executors import ExecutorSpec
    from .common import add_log_file

    add_log_file(out_dir / "cytokines.log")  # opened at the first record: bad input leaves none
    result = quantify_files(
        plate_inputs, options, layout=layout_path, standards=standards_path,
        executor=ExecutorSpec("process", jobs), out_dir=out_dir,
        progress=lambda total, what: progress(total, what, quiet=verbosity.quiet),
        command=" ".join(["immunoprofile", *sys.argv[1:]]))
    n_curves = sum(len(r.curves) for r in result.results)
    n_failed_fits = sum(int((~r.curves["converged"].astype(bool)).sum()) for r in result.results)
    n_files = len(result.results) + len(result.failures)
    click.echo(f"quantified {len(result.results)}/{n_files} plate export(s), {n_curves} curve(s)"
               f" ({n_failed_fits} failed fit(s)); outputs in {out_dir}/ "
               f"({', '.join(p.name for p in result.written.values())})", err=verbosity.quiet)
    if result.failures:
        for path, reason in result.failures:
            click.echo(f"failed: {path}: {reason}", err=True)
        sys.exit(1)
