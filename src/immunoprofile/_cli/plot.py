"""``immunoprofile plot``: look at any population of any file on a strategy's own axes.

The command only parses options and calls
:func:`immunoprofile.report.explore_plot.plot_files` (a density plot or histogram with the
strategy's gates drawn; several files side by side with ``--grid``).
"""

from __future__ import annotations

from pathlib import Path

import click

from .common import common_options

__all__ = ["command"]


@click.command("plot")
@click.argument("files", nargs=-1, required=True, metavar="FCS...",
                type=click.Path(path_type=Path))
@click.option("--x", "x", required=True, help="Channel ($PnN) or marker ($PnS) on the x axis.")
@click.option("--y", "y", default=None, help="Second axis (a density plot); none = histogram.")
@click.option("--parent", default=None,
              help="Population (path or unique name) whose events are shown; needs --strategy.")
@click.option("--strategy", "strategy_path", default=None, type=click.Path(path_type=Path),
              help="Strategy giving the axes, the population and the gates drawn.")
@click.option("--transform", type=click.Choice(["logicle", "asinh", "linear"]), default=None,
              help="Axis transform instead of the strategy's own (its gates are then not drawn).")
@click.option("--comp", "compensation", type=click.Choice(["fcs", "none"]), default="fcs",
              show_default=True, help="Compensation for the gating that picks --parent.")
@click.option("--grid", is_flag=True, help="Several FCS files side by side in one figure.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="PNG file to write.")
@common_options
def command(files: tuple[Path, ...], x: str, y: str | None, parent: str | None,
            strategy_path: Path | None, transform: str | None, compensation: str, grid: bool,
            out: Path, verbosity) -> None:
    """Draw a density plot (--x and --y) or histogram (--x) of one population of FCS files."""
    from ..errors import InputError
    from ..flow.strategy import load_strategy
    from ..report.explore_plot import plot_files

    if len(files) > 1 and not grid:
        raise click.UsageError("several FCS files: add --grid to draw them side by side")
    for f in files:
        if not f.is_file():
            raise InputError(f, "FCS file not found")
    if parent is not None and strategy_path is None:
        raise click.UsageError("--parent needs --strategy (the population is defined by it)")
    strategy = None
    if strategy_path is not None:
        if not strategy_path.is_file():
            raise InputError(strategy_path, "strategy file not found")
        strategy = load_strategy(strategy_path)
    if out.suffix.lower() != ".png":
        raise click.UsageError(f"--out must be a .png file, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_files(list(files), out, x, y, strategy=strategy, parent=parent, transform=transform,
               compensation=compensation)
    click.echo(f"wrote {out}", err=verbosity.quiet)
