"""``immunoprofile compare``: period comparisons of a study → ``DIR/comparisons.csv``.

The command only parses options, calls :func:`immunoprofile.study.compare.compare_periods` and
writes the table, ``analysis_plan.json`` (populations, estimands, primary hierarchy, multiplicity),
``comparisons_notes.json`` (what n allows, methods) and ``provenance.json``.
"""

from __future__ import annotations

from pathlib import Path

import click

from .common import Verbosity, add_log_file, common_options

__all__ = ["command"]


@click.command("compare")
@click.argument("study", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (comparisons.csv, comparisons_notes.json, provenance.json).")
@click.option("--layer", default="transformed", show_default=True, help="Layer the tests run on.")
@click.option("--min-subjects", default=3, show_default=True, type=click.IntRange(min=2),
              help="Fewest complete pairs for a test (fewer: reported in note).")
@click.option("--no-mixed", is_flag=True, help="Skip the mixed-model sensitivity analysis.")
@click.option("--primary", "primary", multiple=True,
              help="Pre-specified primary feature (repeatable): a var name, a gate-path tail such "
                   "as 'Th2|pct_parent', or a cytokine analyte such as 'IL-13'.")
@click.option("--ddf", "mixed_ddf", default="satterthwaite", show_default=True,
              type=click.Choice(["satterthwaite", "kenward-roger"]),
              help="Denominator df of the mixed-model contrasts.")
@click.option("--population", "populations", multiple=True, type=click.Choice(["evaluable", "all"]),
              help="Analysis population(s) to report (default: evaluable and all).")
@common_options
def command(study: Path, out_dir: Path, layer: str, min_subjects: int, no_mixed: bool,
            mixed_ddf: str, primary: tuple[str, ...], populations: tuple[str, ...],
            verbosity: Verbosity) -> None:
    """Compare run-in, treatment and post-treatment periods feature by feature in STUDY (.h5ad/.zarr)."""
    from .._io import write_csv_atomic, write_json_atomic
    from ..provenance import build_provenance
    from ..study.compare import compare_periods
    from ..study.matrix import read_study

    adata = read_study(study)
    # only once the input reads: an exit-2 failure leaves no file in the output folder
    add_log_file(out_dir / "compare.log")
    settings = {"layer": layer, "mixed": not no_mixed, "min_subjects": min_subjects,
                "primary": list(primary), "mixed_ddf": mixed_ddf}
    if populations:
        settings["populations"] = list(populations)
    table = compare_periods(adata, **settings)
    notes = table.attrs.get("notes", {})
    write_csv_atomic(out_dir / "comparisons.csv", table, float_format="%.6g")
    write_json_atomic(out_dir / "analysis_plan.json", table.attrs.get("plan", {}))
    write_json_atomic(out_dir / "comparisons_notes.json", notes)
    write_json_atomic(out_dir / "provenance.json", build_provenance(
        inputs=[study] if study.is_file() else [],
        parameters=settings, extra={"notes": notes}))
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
