"""immunoprofile: raw flow cytometry and multiplex cytokine files to trustworthy study matrices.

The public API is re-exported here lazily (heavy libraries load on first use, keeping the command
line fast). Stages are plain functions over plain data; see the README for the flow of data.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any

try:  # one source of truth for the version: the installed package's metadata (pyproject.toml)
    __version__ = importlib.metadata.version("immunoprofile")
except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "ImmunoprofileError": "immunoprofile.errors",
    "InputError": "immunoprofile.errors",
    "build_provenance": "immunoprofile.provenance",
    "sha256_file": "immunoprofile.provenance",
    "ExecutorSpec": "immunoprofile.executors",
    "run_tasks": "immunoprofile.executors",
    "Strategy": "immunoprofile.flow.gates",
    "read_fcs": "immunoprofile.flow.fcs",
    "read_fcs_metadata": "immunoprofile.flow.fcs",
    "FCSData": "immunoprofile.flow.fcs",
    "write_fcs": "immunoprofile.flow.fcs_write",
    "Spillover": "immunoprofile.flow.compensation",
    "compensate": "immunoprofile.flow.compensation",
    "read_compensation_csv": "immunoprofile.flow.compensation",
    "parse_spillover": "immunoprofile.flow.compensation",
    "resolve_compensation": "immunoprofile.flow.compensation",
    "LinearTransform": "immunoprofile.flow.transforms",
    "LogTransform": "immunoprofile.flow.transforms",
    "AsinhTransform": "immunoprofile.flow.transforms",
    "HyperlogTransform": "immunoprofile.flow.transforms",
    "LogicleTransform": "immunoprofile.flow.transforms",
    "FlowJoBiexTransform": "immunoprofile.flow.transforms",
    "evaluate": "immunoprofile.flow.engine",
    "GatingResult": "immunoprofile.flow.engine",
    "read_gatingml": "immunoprofile.flow.gatingml",
    "write_gatingml": "immunoprofile.flow.gatingml",
    "read_flowjo_workspace": "immunoprofile.flow.flowjo",
    "FlowJoWorkspace": "immunoprofile.flow.flowjo",
    "read_yaml_strategy": "immunoprofile.flow.yaml_strategy",
    "write_yaml_strategy": "immunoprofile.flow.yaml_strategy",
    "load_strategy": "immunoprofile.flow.strategy",
    "population_stats": "immunoprofile.flow.stats",
    "gate_sample": "immunoprofile.flow.batch",
    "write_gate_outputs": "immunoprofile.flow.batch",
    "SampleGating": "immunoprofile.flow.batch",
    "read_plate": "immunoprofile.cytokine.readers",
    "PlateData": "immunoprofile.cytokine.readers",
    "read_standards": "immunoprofile.cytokine.readers.standards",
    "fit_curve": "immunoprofile.cytokine.curves",
    "CurveFit": "immunoprofile.cytokine.curves",
    "quantify_plate": "immunoprofile.cytokine.quantify",
    "quantify_plates": "immunoprofile.cytokine.quantify",
    "QuantifyOptions": "immunoprofile.cytokine.quantify",
    "PlateResult": "immunoprofile.cytokine.quantify",
    "write_cytokine_outputs": "immunoprofile.cytokine.quantify",
    "StudyDesign": "immunoprofile.study",
    "DEFAULT_DESIGN": "immunoprofile.study",
    "read_manifest": "immunoprofile.study",
    "ManifestError": "immunoprofile.study",
    "read_clinical": "immunoprofile.study",
    "clinical_summary": "immunoprofile.study",
    "assemble": "immunoprofile.study",
    "split_by_visit": "immunoprofile.study",
    "period_means": "immunoprofile.study",
    "to_tidy": "immunoprofile.study",
    "write_study": "immunoprofile.study",
    "read_study": "immunoprofile.study",
    "compare_periods": "immunoprofile.study",
    "load_config": "immunoprofile.pipeline.config",
    "PipelineConfig": "immunoprofile.pipeline.config",
    "config_json_schema": "immunoprofile.pipeline.config",
    "run_pipeline": "immunoprofile.pipeline.runner",
    "RunSummary": "immunoprofile.pipeline.runner",
    "validate_config": "immunoprofile.pipeline.validate",
    "simulate_trial": "immunoprofile.simulate",
    "build_report": "immunoprofile.report",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'immunoprofile' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
