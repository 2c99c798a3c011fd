"""``immunoprofile compensate``: a spillover matrix from single-stain controls.

The command only parses options, calls
:func:`immunoprofile.flow.spillover_estimation.estimate_spillover` and
:func:`~immunoprofile.flow.spillover_estimation.write_spillover_outputs`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .._options import click_options
from ..flow.options import CompensateOptions
from .common import common_options

__all__ = ["command"]


@click.command("compensate")
@click.argument("controls", nargs=-1, required=True, metavar="CONTROLS...",
                type=click.Path(path_type=Path))
@click.option("--unstained", required=True, type=click.Path(path_type=Path),
              help="The unstained control (sets the positive threshold).")
@click.option("--channels", "channel_map", default=None, type=click.Path(path_type=Path),
              help="CSV 'name, channel': each control file's stained detector (default: from "
                   "its keywords/name, else the detector brightest against the unstained).")
@click.option("--gate", "gate_path", default=None, type=click.Path(path_type=Path),
              help="Scatter pre-gate strategy (Gating-ML, FlowJo, YAML); default: automatic "
                   "lymphocyte/bead scatter + singlet gate.")
@click_options(CompensateOptions)  # --population, --method, --positive-quantile
@click.option("--out", "out_dir", default="compensation", show_default=True,
              type=click.Path(path_type=Path), help="Output folder.")
@click.option("--no-figure", is_flag=True, help="Skip the before/after figure grid.")
@common_options
def command(controls: tuple[Path, ...], unstained: Path, channel_map: Path | None,
            gate_path: Path | None, options: CompensateOptions, out_dir: Path, no_figure: bool,
            verbosity) -> None:
    """Compute a spillover matrix from single-stain CONTROLS (files or folders) and the
    unstained control; write spillover.csv (FlowJo layout), spillover.txt ($SPILLOVER),
    controls.csv, compensation_controls.png and provenance.json to --out."""
    from ..errors import InputError
    from ..flow.batch import expand_fcs_inputs
    from ..flow.spillover_estimation import estimate_spillover, write_spillover_outputs

    if gate_path is not None and not gate_path.is_file():
        raise InputError(gate_path, "gate strategy file not found")
    if not unstained.is_file():
        raise InputError(unstained, "unstained control not found")
    files = expand_fcs_inputs(controls)
    estimate = estimate_spillover(files, options, unstained=unstained, channels=channel_map,
                                  gate=gate_path)
    extra = [p for p in (channel_map, gate_path) if p is not None]
    written = write_spillover_outputs(out_dir, estimate, figure=not no_figure, inputs=extra,
                                      command=" ".join(["immunoprofile", *sys.argv[1:]]))
    for warning in estimate.warnings:
        click.echo(f"warning: {warning}", err=True)
    if not verbosity.quiet:
        for s in estimate.controls:
            click.echo(f"{s.file and Path(s.file).name}: {s.channel} ({s.channel_source}), "
                       f"{s.n_positive} positive of {s.n_gated} gated events, max residual "
                       f"slope {s.max_residual:.4f}")
        click.echo(f"spillover matrix of {len(estimate.detectors)} detectors "
                   f"({len(estimate.controls)} controls) in {out_dir}/ "
                   f"({', '.join(p.name for p in written.values())})")
