"""immunoprofile: raw flow cytometry and multiplex cytokine files to trustworthy study matrices.

The public API is namespaced, in the scanpy manner::

    import immunoprofile as ip

    ip.flow        # FCS files, compensation, strategies, gating, statistics; flow.gate_files
    ip.cytokine    # plate exports, standard curves, quantification; cytokine.quantify_files
    ip.study       # manifest, design, clinical table, study matrices, period comparisons
    ip.report      # the HTML report
    ip.pipeline    # configs, run_pipeline, validate_config, ExecutorSpec
    ip.simulate    # the example-trial simulator

Each namespace loads on first use (``immunoprofile --help`` and ``import immunoprofile`` stay
light). The top level holds only these, ``__version__`` and the errors every stage raises
(:class:`ImmunoprofileError`, :class:`InputError`). Modules not re-exported by a namespace
(``executors``, ``provenance``, ``_*``) are plumbing.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from .errors import ImmunoprofileError, InputError

#: The public namespaces (subpackages imported on first attribute access).
NAMESPACES: tuple[str, ...] = ("flow", "cytokine", "study", "report", "pipeline", "simulate")

__all__ = ["__version__", "ImmunoprofileError", "InputError", *NAMESPACES]

# The flat names of before issue 13 -> their namespace. They still resolve, with a
# FutureWarning naming the new place; they are not part of the API (not in __all__ or dir()).
_MOVED: dict[str, str] = {
    **dict.fromkeys(("Strategy", "read_fcs", "read_fcs_metadata", "FCSData", "write_fcs",
                     "Spillover", "compensate", "read_compensation_csv", "parse_spillover",
                     "resolve_compensation", "LinearTransform", "LogTransform",
                     "AsinhTransform", "HyperlogTransform", "LogicleTransform",
                     "FlowJoBiexTransform", "evaluate", "GatingResult", "read_gatingml",
                     "write_gatingml", "read_flowjo_workspace", "FlowJoWorkspace",
                     "read_yaml_strategy", "write_yaml_strategy", "load_strategy",
                     "population_stats", "gate_sample", "write_gate_outputs", "SampleGating"),
                    "flow"),
    **dict.fromkeys(("read_plate", "PlateData", "read_standards", "fit_curve", "CurveFit",
                     "quantify_plate", "quantify_plates", "QuantifyOptions", "PlateResult",
                     "write_cytokine_outputs"), "cytokine"),
    **dict.fromkeys(("StudyDesign", "DEFAULT_DESIGN", "read_manifest", "ManifestError",
                     "read_clinical", "clinical_summary", "assemble", "split_by_visit",
                     "period_means", "to_tidy", "write_study", "read_study", "compare_periods"),
                    "study"),
    **dict.fromkeys(("load_config", "PipelineConfig", "config_json_schema", "run_pipeline",
                     "RunSummary", "validate_config", "ExecutorSpec"), "pipeline"),
    "simulate_trial": "simulate",
    "build_report": "report",
    # plumbing: internal modules, no longer part of the API
    "run_tasks": "executors",
    "sha256_file": "provenance",
    "build_provenance": "provenance",
}


def _version() -> str:
    # one source of truth: the installed package's metadata (pyproject.toml); read on first use,
    # as importlib.metadata alone takes longer to import than the whole command-line front end
    import importlib.metadata

    try:
        return importlib.metadata.version("immunoprofile")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        globals()[name] = value = _version()
        return value
    if name in NAMESPACES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    home = _MOVED.get(name)
    if home is None:
        raise AttributeError(f"module 'immunoprofile' has no attribute {name!r}")
    warnings.warn(f"immunoprofile.{name} is immunoprofile.{home}.{name} now (the top level "
                  "keeps only the namespaces flow, cytokine, study, report, pipeline, simulate)",
                  FutureWarning, stacklevel=2)
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
