"""``immunoprofile assemble``: manifest + flow/cytokine results + clinical table → study AnnData.

The command only parses options and calls the assemble stage
(:func:`immunoprofile.study.stage.assemble_study`, as ``immunoprofile run`` does; the outputs
are written once the inputs assembled, so an invalid input leaves no log file beside ``--out``): the
study (``.h5ad``, optionally ``.zarr``), one matrix per visit, the subject × period means, the
same data as tidy Parquet, ``unmatched.tsv`` (every result without a manifest row and every
manifest row without a result) and ``provenance.json``.
"""

from __future__ import annotations

from pathlib import Path

import click

from .._options import click_options
from ..study.options import AssembleOptions
from .common import Verbosity, add_log_file, common_options

__all__ = ["command"]


@click.command("assemble")
@click.option("--manifest", "manifest", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Sample manifest CSV.")
@click.option("--flow", "flow_dir", default=None, type=click.Path(path_type=Path),
              help="Output folder of `immunoprofile gate` (populations.csv).")
@click.option("--cytokines", "cytokine_dir", default=None, type=click.Path(path_type=Path),
              help="Output folder of `immunoprofile cytokines` (concentrations.csv).")
@click.option("--clinical", "clinical", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Clinical CSV: subject_id, visit, scorad, doses_received, age, sex.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Study file to write (e.g. study.h5ad); the other outputs go beside it.")
@click.option("--design", "design", required=True, metavar="NAME|FILE",
              help="The study design: a protocol name (example-trial, the bundled trial's) or a "
                   "design file (YAML with the keys of a pipeline config's design section).")
@click_options(AssembleOptions)
@common_options
def command(manifest: Path, flow_dir: Path | None, cytokine_dir: Path | None, clinical: Path | None,
            out: Path, design: str, options: AssembleOptions, verbosity: Verbosity) -> None:
    """Join flow and cytokine results with the manifest (and clinical table) into one AnnData."""
    from ..errors import InputError
    from ..study.design import resolve_design
    from ..layout import StudyOutputs
    from ..study.stage import assemble_study, write_assemble_outputs

    if flow_dir is None and cytokine_dir is None:
        raise InputError(None, "give --flow and/or --cytokines (nothing to assemble)")
    adata = assemble_study(manifest, flow_dir=flow_dir, cytokine_dir=cytokine_dir,
                           clinical=clinical, options=options,
                           design=resolve_design(design)).adata
    # only once the inputs assembled: an exit-2 failure leaves no file beside --out (the
    # assembly's warnings went to stderr)
    add_log_file(out.parent / "assemble.log")
    out = out if out.suffix else out.with_suffix(".h5ad")
    unmatched_path = StudyOutputs(out.parent).unmatched
    write_assemble_outputs(adata, out, zarr=options.zarr)
    n_missing = int((adata.obs["missing_reason"].astype(str) != "").sum())
    n_unmatched = len(adata.uns["immunoprofile"]["unmatched"])
    if n_unmatched:
        click.echo(f"assemble: {n_unmatched} unmatched result(s)/manifest row(s) → {unmatched_path}")
    click.echo(f"assemble: {adata.n_obs} subject-visits ({adata.obs['subject_id'].nunique()} subjects, "
               f"{n_missing} with missing data, reasons in obs['missing_reason']) × {adata.n_vars} "
               f"features → {out}")
