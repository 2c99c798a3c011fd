"""``immunoprofile cytokines``: read plate exports, fit standard curves, quantify, write outputs.

The command only parses options and calls :func:`immunoprofile.cytokine.quantify_files` (the
same function ``immunoprofile run`` calls), which reads the plates through the process pool and
writes the outputs. An unreadable plate is listed in ``failed.tsv``, the others go on, and the
exit code is 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import common_options, progress

__all__ = ["command"]


@click.command("cytokines")
@click.argument("plate_inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--layout", "layout_path", default=None, type=click.Path(path_type=Path),
              help="Plate layout CSV (well -> sample, type, dilution) applied to every plate.")
@click.option("--standards", "standards_path", default=None, type=click.Path(path_type=Path),
              help="Kit standards table (analyte x standard -> expected concentration, unit).")
@click.option("--model", type=click.Choice(["auto", "5pl", "4pl"]), default="auto",
              show_default=True,
              help="Standard-curve model (xPONENT form); auto: the export's software's own "
                   "(xPONENT 5PL, Bio-Plex its printed 4PL/5PL, MSD Discovery Workbench 4PL).")
@click.option("--weights", type=click.Choice(["auto", "1/y2", "1/y", "power", "none"]),
              default="auto", show_default=True,
              help="Fit weighting: 1/y2 (xPONENT, MSD), power (Bio-Plex), ...; auto: the "
                   "export's software's.")
@click.option("--power", default=1.8, show_default=True, type=float,
              help="Exponent of --weights power (1/y^power).")
@click.option("--replicate-means/--each-well", "replicate_means", default=None,
              help="Fit the mean Net MFI per standard level / every standard well (default: as "
                   "the export's software: replicate means for MSD, each well otherwise).")
@click.option("--search", type=click.Choice(["local", "global"]), default="local",
              show_default=True,
              help="local: vendor-compatible start; global: lowest cost over many starts.")
@click.option("--lloq-policy", type=click.Choice(["keep", "half", "sqrt2", "na"]),
              default="keep", show_default=True,
              help="concentration_reported below the LLOQ: keep, LLOQ/2, LLOQ/sqrt2 or NA.")
@click.option("--min-beads", default=35, show_default=True, type=click.IntRange(min=0),
              help="Wells with fewer beads are flagged low_beads.")
@click.option("--drop-low-bead-standards", is_flag=True,
              help="Leave standard wells with fewer than --min-beads beads out of the fit.")
@click.option("--max-cv", default=20.0, show_default=True, type=click.FloatRange(min=0,
              min_open=True), help="Replicate %CV above this is flagged high_cv.")
@click.option("--recovery", default="80,120", show_default=True,
              help="Recovery range (percent) of standards defining LLOQ/ULOQ, as LOW,HIGH.")
@click.option("--bridging", "bridging_sample", default=None,
              help="Normalise plates on this bridging-control sample name.")
@click.option("--drug-readout", "drug_readouts", multiple=True, default=("IL-1RA",),
              show_default=True, help="Analyte measuring the study drug (repeatable).")
@click.option("--no-repair", is_flag=True,
              help="Keep the file's expected concentrations even when they look corrupted.")
@click.option("--out", "out_dir", default="cytokines_output", show_default=True,
              type=click.Path(path_type=Path), help="Output folder.")
@click.option("--jobs", "-j", default=1, show_default=True, type=click.IntRange(min=1),
              help="Worker processes (1 = serial).")
@common_options
def command(plate_inputs: tuple[Path, ...], layout_path: Path | None,
            standards_path: Path | None, model: str, weights: str, power: float,
            replicate_means: bool | None, search: str, lloq_policy: str, min_beads: int,
            drop_low_bead_standards: bool, max_cv: float, recovery: str, bridging_sample: str | None,
            drug_readouts: tuple[str, ...], no_repair: bool, out_dir: Path, jobs: int,
            verbosity) -> None:
    """Fit standard curves and quantify the multiplex PLATE_INPUTS (xPONENT, Bio-Plex, MSD, ...;
    files, or folders of plate exports).

    Writes concentrations.csv, standard_curves.csv, summary.csv, cytokines.h5ad,
    provenance.json and failed.tsv to --out. Exit 1 when a plate could not be read (listed in
    failed.tsv; the others are still quantified), 2 for invalid options or inputs.
    """
    from ..cytokine.quantify import QuantifyOptions
    from ..cytokine.stage import quantify_files
    from ..errors import InputError
    from ..executors import ExecutorSpec
    from .common import add_log_file

    try:
        low, high = (float(v) for v in recovery.split(","))
    except ValueError:
        raise InputError(None, f"--recovery {recovery!r}: expected LOW,HIGH in percent, "
                               "e.g. 80,120") from None
    options = QuantifyOptions(
        model=model, weights=weights, power=power, replicate_means=replicate_means,
        search=search, recovery_range=(low, high), max_cv=max_cv, min_beads=min_beads,
        drop_low_bead_standards=drop_low_bead_standards,
        lloq_policy=lloq_policy, bridging=bridging_sample is not None,
        bridging_sample=bridging_sample, drug_readouts=tuple(drug_readouts))
    add_log_file(out_dir / "cytokines.log")  # opened at the first record: bad input leaves none
    result = quantify_files(
        plate_inputs, options, layout=layout_path, standards=standards_path,
        repair=not no_repair, executor=ExecutorSpec("process", jobs), out_dir=out_dir,
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
