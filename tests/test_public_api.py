"""The public surface changes only on purpose: this test pins it."""

from __future__ import annotations

import importlib

import immunoprofile

PUBLIC = {
    'AsinhTransform',
    'CurveFit',
    'DEFAULT_DESIGN',
    'ExecutorSpec',
    'FCSData',
    'FlowJoBiexTransform',
    'FlowJoWorkspace',
    'GatingResult',
    'HyperlogTransform',
    'ImmunoprofileError',
    'InputError',
    'LinearTransform',
    'LogTransform',
    'LogicleTransform',
    'ManifestError',
    'PipelineConfig',
    'PlateData',
    'PlateResult',
    'QuantifyOptions',
    'RunSummary',
    'SampleGating',
    'Spillover',
    'Strategy',
    'StudyDesign',
    'assemble',
    'build_provenance',
    'build_report',
    'clinical_summary',
    'compare_periods',
    'compensate',
    'config_json_schema',
    'evaluate',
    'fit_curve',
    'gate_sample',
    'load_config',
    'load_strategy',
    'parse_spillover',
    'period_means',
    'population_stats',
    'quantify_plate',
    'quantify_plates',
    'read_clinical',
    'read_compensation_csv',
    'read_fcs',
    'read_fcs_metadata',
    'read_flowjo_workspace',
    'read_gatingml',
    'read_manifest',
    'read_plate',
    'read_standards',
    'read_study',
    'read_yaml_strategy',
    'resolve_compensation',
    'run_pipeline',
    'run_tasks',
    'sha256_file',
    'simulate_trial',
    'split_by_visit',
    'to_tidy',
    'validate_config',
    'write_cytokine_outputs',
    'write_fcs',
    'write_gate_outputs',
    'write_gatingml',
    'write_study',
    'write_yaml_strategy',
}


def test_public_names_are_pinned():
    assert set(immunoprofile.__all__) - {"__version__"} == PUBLIC


#: The stage namespaces (issue 13): the in-memory batch calls the CLI and the runner also use.
NAMESPACES = {
    "immunoprofile.flow": {"gate_files", "GateFilesResult"},
    "immunoprofile.cytokine": {"PlateData", "detect_format", "read_plate", "read_standards",
                               "quantify_files", "QuantifyFilesResult", "quantify_plates",
                               "QuantifyOptions"},
}


def test_stage_namespaces_are_pinned_and_resolve():
    for module, names in NAMESPACES.items():
        mod = importlib.import_module(module)
        assert set(mod.__all__) == names, module
        for name in names:
            assert callable(getattr(mod, name)), (module, name)
    from immunoprofile.cytokine.stage import quantify_files
    from immunoprofile.flow.stage import gate_files

    assert importlib.import_module("immunoprofile.flow").gate_files is gate_files
    assert importlib.import_module("immunoprofile.cytokine").quantify_files is quantify_files


def test_every_public_name_resolves_lazily():
    for name in sorted(PUBLIC):
        assert getattr(immunoprofile, name) is not None, name


def test_import_is_light():
    import subprocess
    import sys

    code = ("import sys, immunoprofile, immunoprofile.flow; "
            "print(sorted(m for m in ('numpy', 'pandas', 'anndata') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
