"""``immunoprofile inspect``: a scientist's first look at one FCS file.

The command only calls :func:`immunoprofile.flow.fcs.describe_fcs` and prints its summary: a rich
table on a terminal, plain text otherwise, JSON with ``--json``. An unreadable file is one line on
stderr and exit code 2 (through :func:`~immunoprofile._cli.common.common_options`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .common import common_options

__all__ = ["command", "format_plain"]


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:g}"
    return str(value)


def format_plain(summary: dict[str, Any]) -> str:
    """The summary as plain, aligned text (what a log file or a pipe gets).

    Parameters
    ----------
    summary
        The dict from :func:`immunoprofile.flow.fcs.describe_fcs`.

    Returns
    -------
    str
    """
    lines = [f"file:      {summary['file']}",
             f"version:   {summary['version']}   data type: {summary['datatype']}   "
             f"events: {summary['n_events']}   channels: {summary['n_channels']}   "
             f"data set: {summary['dataset'] + 1} of {summary['n_datasets']}"]
    rows = [("#", "channel", "marker", "range", "bits", "type", "gain", "log")]
    rows += [(str(c["index"]), c["name"], c["marker"], _fmt(c["range"]), _fmt(c["bits"]),
              c["datatype"], _fmt(c["gain"]), _fmt(c["log"])) for c in summary["channels"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines.append("")
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    spill = summary["spillover"]
    lines.append("")
    if spill is None:
        lines.append("spillover: none in this file")
    else:
        lines.append(f"spillover: {spill['keyword']}, {len(spill['channels'])} channels "
                     f"({', '.join(spill['channels'])}); largest off-diagonal "
                     f"{spill['max_offdiagonal']:.4g}")
    if summary["keywords"]:
        lines.append("")
        kw = max(len(k) for k in summary["keywords"])
        lines += [f"{k.ljust(kw)}  {v}" for k, v in summary["keywords"].items()]
    lines.append("")
    if summary["warnings"]:
        lines += [f"warning: {w}" for w in summary["warnings"]]
    else:
        lines.append("no repairs needed")
    return "\n".join(lines)


def _print_rich(summary: dict[str, Any], console: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    e = lambda v: escape(_fmt(v))  # noqa: E731 - names may contain [brackets]
    console.print(f"[bold]{e(summary['file'])}[/bold]")
    console.print(f"{summary['version']} · data type {summary['datatype']} · "
                  f"{summary['n_events']:,} events · {summary['n_channels']} channels · "
                  f"data set {summary['dataset'] + 1} of {summary['n_datasets']}")
    table = Table(show_header=True, header_style="bold")
    for col, justify in (("#", "right"), ("channel", "left"), ("marker", "left"),
                         ("range", "right"), ("bits", "right"), ("type", "left"),
                         ("gain", "right"), ("log", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for c in summary["channels"]:
        table.add_row(str(c["index"]), e(c["name"]), e(c["marker"]), e(c["range"]),
                      e(c["bits"]), e(c["datatype"]), e(c["gain"]), e(c["log"]))
    console.print(table)
    spill = summary["spillover"]
    if spill is None:
        console.print("spillover: none in this file")
    else:
        console.print(f"spillover: {e(spill['keyword'])}, {len(spill['channels'])} channels "
                      f"({e(', '.join(spill['channels']))}); largest off-diagonal "
                      f"{spill['max_offdiagonal']:.4g}")
    if summary["keywords"]:
        kt = Table(show_header=False, box=None)
        kt.add_column(style="bold")
        kt.add_column()
        for k, v in summary["keywords"].items():
            kt.add_row(e(k), e(v))
        console.print(kt)
    for w in summary["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {e(w)}", highlight=False)
    if not summary["warnings"]:
        console.print("no repairs needed")


@click.command("inspect")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--dataset", default=0, show_default=True, type=click.IntRange(min=0),
              help="Data set index in a multi-data-set ($NEXTDATA) file.")
@common_options
def command(file: Path, as_json: bool, dataset: int, verbosity: Any) -> None:
    """First look at an FCS FILE: version, channels, markers, spillover, keywords, repairs."""
    from rich.console import Console

    from ..flow.fcs import describe_fcs

    summary = describe_fcs(file, dataset=dataset)
    if as_json:
        click.echo(json.dumps(summary, indent=2, allow_nan=False))
        return
    console = Console(highlight=False)
    if console.is_terminal:
        _print_rich(summary, console)
    else:
        click.echo(format_plain(summary))
