"""The public surface changes only on purpose: this test pins it.

Issue 13: the API is namespaced in the scanpy manner (``immunoprofile.flow``, ``.cytokine``,
``.study``, ``.report``, ``.pipeline``, ``.simulate``); the top level keeps only those, the
version and the errors; plumbing (executors, provenance) is in no namespace.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import pytest

import immunoprofile

TOP = {"__version__", "ImmunoprofileError", "InputError",
       "flow", "cytokine", "study", "report", "pipeline", "simulate"}

#: The namespaces this package pins name by name (study and report: see below).
NAMESPACES = {
    "immunoprofile.flow": {
        "read_fcs", "read_fcs_metadata", "FCSData", "write_fcs",
        "Spillover", "compensate", "read_compensation_csv", "parse_spillover",
        "resolve_compensation", "CompensationSpec", "estimate_spillover",
        "write_spillover_outputs",
        "LinearTransform", "LogTransform", "AsinhTransform", "HyperlogTransform",
        "LogicleTransform", "FlowJoBiexTransform",
        "Strategy", "load_strategy", "read_gatingml", "write_gatingml",
        "read_flowjo_workspace", "FlowJoWorkspace", "read_yaml_strategy", "write_yaml_strategy",
        "evaluate", "GatingResult", "population_stats", "time_qc",
        "gate_sample", "SampleGating", "write_gate_outputs", "gate_files", "GateFilesResult",
        "GateOptions", "TimeQCOptions", "CompensateOptions",
    },
    "immunoprofile.cytokine": {
        "read_plate", "PlateData", "detect_format", "read_standards", "fit_curve", "CurveFit",
        "quantify_plate", "quantify_plates", "PlateResult", "write_cytokine_outputs",
        "quantify_files", "QuantifyFilesResult", "QuantifyOptions", "CytokineOptions",
    },
    "immunoprofile.pipeline": {
        "load_config", "PipelineConfig", "ConfigError", "config_json_schema", "run_pipeline",
        "RunSummary", "validate_config", "ExecutorSpec",
    },
    "immunoprofile.simulate": {"simulate_trial", "trial_design", "DEFAULT_SEED"},
}

#: Plumbing: in no namespace.
PLUMBING = {"run_tasks", "sha256_file", "build_provenance"}


def test_top_level_is_the_namespaces_version_and_errors():
    assert set(immunoprofile.__all__) == TOP
    assert set(dir(immunoprofile)) == TOP
    for name in immunoprofile.NAMESPACES:
        module = getattr(immunoprofile, name)
        assert module is importlib.import_module(f"immunoprofile.{name}")


def test_namespaces_are_pinned_and_every_name_resolves():
    for module, names in NAMESPACES.items():
        mod = importlib.import_module(module)
        assert set(mod.__all__) == names, sorted(set(mod.__all__) ^ names)
        for name in names:
            assert getattr(mod, name) is not None, (module, name)
    # study and report are reshaped by other parts of issue 13: pin that they are namespaces
    # whose every public name resolves, and that no namespace exposes plumbing
    for name in immunoprofile.NAMESPACES:
        mod = getattr(immunoprofile, name)
        assert mod.__all__, name
        for public in mod.__all__:
            assert getattr(mod, public) is not None, (name, public)
        assert not PLUMBING & set(mod.__all__), name
    from immunoprofile.cytokine.stage import quantify_files
    from immunoprofile.flow.stage import gate_files

    assert immunoprofile.flow.gate_files is gate_files
    assert immunoprofile.cytokine.quantify_files is quantify_files


def test_the_old_flat_names_resolve_with_a_warning_naming_the_new_place():
    for name, home in immunoprofile._MOVED.items():
        with pytest.warns(FutureWarning, match=f"immunoprofile.{home}.{name}"):
            value = getattr(immunoprofile, name)
        assert value is getattr(importlib.import_module(f"immunoprofile.{home}"), name)
    with pytest.raises(AttributeError):
        immunoprofile.no_such_name  # noqa: B018
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the namespaces themselves never warn
        immunoprofile.flow.read_fcs  # noqa: B018


def test_import_is_light():
    code = ("import sys, immunoprofile, immunoprofile.flow, immunoprofile.cytokine, "
            "immunoprofile.pipeline; "
            "print(sorted(m for m in ('numpy', 'pandas', 'anndata') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
