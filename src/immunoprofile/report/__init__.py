"""The QC and results report: one self-contained HTML file built from a run directory.

Contract: ``build_report(run_dir) -> Path`` reads only the tidy outputs of earlier stages
(``populations.csv``, ``concentrations.csv``, ``standard_curves.csv``, ``study.h5ad``,
``comparisons.csv``, ``failed.tsv``, ``provenance.json``), draws every plot with matplotlib, embeds
them as PNG, writes the same PNGs to ``RUN_DIR/plots/`` and MultiQC ``*_mqc.tsv`` tables beside.
"""

from .._lazy import lazy_exports

_EXPORTS = {"build_report": "build", "ReportOptions": "options"}
__all__ = sorted(_EXPORTS)
# loaded on first use: the config and the command line read .options without numpy
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
