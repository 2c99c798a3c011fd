"""Study level: the protocol, the sample manifest, the clinical table, study matrices, comparisons.

Contract: manifest + per-sample tidy results (flow, cytokine) + clinical table → one AnnData per
study (:func:`assemble`) → per-feature period comparisons (:func:`compare_periods`).
"""

from __future__ import annotations

from .clinical import clinical_summary, read_clinical
from .compare import compare_periods
from .compare_stage import CompareResult, compare_study
from .design import (DEFAULT_DESIGN, EXAMPLE_TRIAL_DESIGN, PROTOCOLS, Period, StudyDesign, Visit,
                     resolve_design)
from .inputs import CytokineResults, FlowResults, load_cytokine_results, load_flow_results
from .manifest import ManifestError, ManifestProblem, read_manifest, validate_manifest
from .matrix import (
    assemble,
    period_means,
    read_study,
    split_by_visit,
    to_tidy,
    write_study,
)

__all__ = [
    "CompareResult", "DEFAULT_DESIGN", "EXAMPLE_TRIAL_DESIGN", "PROTOCOLS", "compare_study",
    "resolve_design", "ManifestError", "ManifestProblem", "Period", "StudyDesign", "Visit",
    "CytokineResults", "FlowResults", "load_cytokine_results", "load_flow_results",
    "assemble", "clinical_summary", "compare_periods", "period_means", "read_clinical",
    "read_manifest", "read_study", "split_by_visit", "to_tidy", "validate_manifest", "write_study",
]
