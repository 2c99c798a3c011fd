"""Study level: the protocol, the sample manifest, the clinical table, study matrices, comparisons.

Contract: manifest + per-sample tidy results (flow, cytokine) + clinical table → one AnnData per
study (:func:`assemble`; the stage :func:`~immunoprofile.study.stage.assemble_study` with its
:class:`AssembleOptions`) → per-feature period comparisons (:func:`compare_periods`). Every name
loads on first use (the config and the command line read :mod:`.options` without numpy).
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "clinical_summary": "clinical", "read_clinical": "clinical",
    "compare_periods": "compare",
    "CompareResult": "compare_stage", "compare_study": "compare_stage",
    **dict.fromkeys(("DEFAULT_DESIGN", "EXAMPLE_TRIAL_DESIGN", "PROTOCOLS", "Period",
                     "StudyDesign", "Visit", "resolve_design"), "design"),
    **dict.fromkeys(("CytokineResults", "FlowResults", "load_cytokine_results",
                     "load_flow_results"), "inputs"),
    **dict.fromkeys(("ManifestError", "ManifestProblem", "read_manifest", "validate_manifest"),
                    "manifest"),
    **dict.fromkeys(("assemble", "period_means", "read_study", "split_by_visit", "to_tidy",
                     "write_study"), "matrix"),
    "AssembleOptions": "options",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
