"""``immunoprofile compare``: period comparisons of a study → ``DIR/comparisons.csv``.

The command only parses options and calls :func:`immunoprofile.study.compare_stage.compare_study`
(the function ``immunoprofile run`` calls), which writes the table, ``analysis_plan.json``
(populations, estimands, primary hierarchy, multiplicity), ``comparisons_notes.json`` (what n
allows, methods) and ``provenance.json``; then it prints a summary.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .._options import click_options
from ..study.options import CompareOptions
from .common import Verbosity, add_log_file, common_options

__all__ = ["command"]


@click.command("compare")
@click.argument("study", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (comparisons.csv, comparisons_notes.json, provenance.json).")
@click_options(CompareOptions)
@common_options
def command(study: Path, out_dir: Path, options: CompareOptions, verbosity: Verbosity) -> None:
    """Compare run-in, treatment and post-treatment periods feature by feature in STUDY (.h5ad/.zarr)."""
    from ..study.compare_stage import compare_study

    # created at the first log record: an unreadable study (exit 2) leaves no file behind
    add_log_file(out_dir / "compare.log")
    result = compare_study(study, options, out_dir=out_dir,
                           command=" ".join(["immunoprofile", *sys.argv[1:]]))
    table, notes = result.table, result.notes
    contrasts = table[table["contrast"] != "friedman"]
    click.echo(f"compare: {table['feature'].nunique()} features, {len(contrasts)} paired contrasts → "
               f"{out_dir / 'comparisons.csv'}")
    click.echo(f"  {notes.get('sample_size', '')}")
    for (population, family), sub in contrasts.groupby(["population", "family"], sort=False):
        hits = sub[sub["q"] < 0.05].sort_values("p_wilcoxon")
        listed = ", ".join(f"{r.feature} {r.contrast} {r.direction}" for r in hits.head(5).itertuples())
        click.echo(f"  {population} / {family}: {len(hits)} of {int(sub['q'].notna().sum())} "
                   "exploratory contrasts with q < 0.05"
                   + (f" ({listed}{', …' if len(hits) > 5 else ''})" if listed else ""))
    for population, sub in contrasts[contrasts["role"] == "primary"].groupby("population", sort=False):
        hits = sub[sub["significant"].astype(bool)]
        click.echo(f"  {population} / primary: {len(hits)} of {len(sub)} contrasts with adjusted "
                   f"p <= alpha ({', '.join(f'{r.feature} {r.contrast}' for r in hits.itertuples())})")
