"""``immunoprofile cytokines``: read plate exports, fit standard curves, quantify, write outputs.

The command only parses options, calls :func:`immunoprofile.cytokine.readers.read_plate` per
file, :func:`immunoprofile.cytokine.quantify.quantify_plates` once and
:func:`immunoprofile.cytokine.quantify.write_cytokine_outputs`. An unreadable plate is listed in
``failed.tsv``, the others go on, and the exit code is 1.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from .common import common_options

__all__ = ["command"]

log = logging.getLogger("immunoprofile.cytokines")


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
@common_options
def command(plate_inputs: tuple[Path, ...], layout_path: Path | None,
            standards_path: Path | None, model: str, weights: str, power: float,
            replicate_means: bool | None, search: str, lloq_policy: str, min_beads: int,
            drop_low_bead_standards: bool, max_cv: float, recovery: str, bridging_sample: str | None,
            drug_readouts: tuple[str, ...], no_repair: bool, out_dir: Path, verbosity) -> None:
    """Fit standard curves and quantify the multiplex PLATE_INPUTS (xPONENT, Bio-Plex, MSD, ...;
    files, or folders of plate exports).

    Writes concentrations.csv, standard_curves.csv, summary.csv, cytokines.h5ad,
    provenance.json and failed.tsv to --out. Exit 1 when a plate could not be read (listed in
    failed.tsv; the others are still quantified), 2 for invalid options or inputs.
    """
    from ..cytokine.quantify import QuantifyOptions, quantify_plates, write_cytokine_outputs
    from ..cytokine.readers import read_plate
    from ..errors import InputError
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
    for extra, what in ((layout_path, "layout"), (standards_path, "standards table")):
        if extra is not None and not extra.is_file():
            raise InputError(extra, f"{what} file not found")
    if layout_path is not None:  # one layout for every plate: a bad one is a usage error
        from ..cytokine.readers.layout import read_layout
        read_layout(layout_path)
    standards = None
    if standards_path is not None:  # read once; a bad table is a usage error for every plate
        from ..cytokine.readers.standards import describe_columns, read_standards
        standards = read_standards(standards_path)
        click.echo(f"{standards_path.name}: {describe_columns(standards)}",
                   err=verbosity.quiet)

    from ..cytokine.readers import expand_plate_paths
    plate_files = expand_plate_paths(plate_inputs)
    if not plate_files:
        raise InputError(plate_inputs[0], "no plate exports in the folder(s) given")
    out_dir.mkdir(parents=True, exist_ok=True)
    add_log_file(out_dir / "cytokines.log")
    plates, failures = [], []
    for path in plate_files:
        try:
            plate = read_plate(path, layout=layout_path, standards=standards,
                               repair=not no_repair)
        except InputError as exc:
            log.warning("%s", exc)
            failures.append((str(path), exc.reason))
            continue
        except Exception as exc:  # noqa: BLE001 - a reader bug on one file must not stop the batch
            if verbosity.debug:
                raise
            from ..executors import describe_error

            # a bug, not bad input: say so (same wording as the executors), --debug shows it
            reason = f"{describe_error(exc)}; run with --debug for the traceback"
            log.warning("%s: %s", path, reason)
            failures.append((str(path), reason))
            continue
        for message in plate.warnings:
            log.warning("%s: %s", path.name, message)
        plates.append(plate)
    log.info("quantifying %d plate export(s): model %s, weights %s", len(plates), model,
             weights)
    results = quantify_plates(plates, options)
    for plate, result in zip(plates, results):
        for message in result.warnings[len(plate.warnings):]:  # quantification's own warnings
            log.warning("%s: %s", Path(result.path).name, message)
    inputs = [*plate_files, *(p for p in (layout_path, standards_path) if p is not None)]
    written = write_cytokine_outputs(
        out_dir, results, failures, parameters=options.to_dict() | {"repair": not no_repair,
                                                                    "layout": _s(layout_path),
                                                                    "standards": _s(standards_path)},
        inputs=inputs, options=options, command=" ".join(["immunoprofile", *sys.argv[1:]]))
    n_curves = sum(len(r.curves) for r in results)
    n_failed_fits = sum(int((~r.curves["converged"].astype(bool)).sum()) for r in results)
    click.echo(f"quantified {len(results)}/{len(plate_files)} plate export(s), {n_curves} curve(s)"
               f" ({n_failed_fits} failed fit(s)); outputs in {out_dir}/ "
               f"({', '.join(p.name for p in written.values())})", err=verbosity.quiet)
    if failures:
        for path, reason in failures:
            click.echo(f"failed: {path}: {reason}", err=True)
        sys.exit(1)


def _s(path: Path | None) -> str | None:
    return None if path is None else str(path)
