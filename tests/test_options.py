"""One options model per stage (issue 13 item 5): the stage function's keywords and defaults,
the pipeline config's section and JSON Schema, and the command's flags all come from one model,
so they cannot drift apart. Each check below compares what a user actually gets through each
door (the function's signature, a loaded config, an invoked command) with the model."""

from __future__ import annotations

import inspect
import types
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from immunoprofile._options import cli_fields
from immunoprofile.cli import cli
from immunoprofile.cytokine.options import CytokineOptions, QuantifyOptions
from immunoprofile.errors import InputError
from immunoprofile.flow.options import CompensateOptions, GateOptions, TimeQCOptions
from immunoprofile.pipeline import config as config_module
from immunoprofile.pipeline.config import config_json_schema, load_config
from immunoprofile.report.options import ReportOptions
from immunoprofile.study.options import (AnalysisPlanOptions, AssembleOptions, CompareOptions,
                                         ComparisonOptions)


def _gate_files():
    from immunoprofile.flow.stage import gate_files

    return gate_files


def _quantify_files():
    from immunoprofile.cytokine.stage import quantify_files

    return quantify_files


# model, command, config attribute, config section class, its pipeline-only fields,
# the stage function (module, name), the fields deliberately not on the command line
STAGES = {
    "gate": (GateOptions, "flow", config_module.FlowConfig, {"enabled", "compensation_controls"},
             ("immunoprofile.flow.stage", "gate_files"), set()),
    "cytokines": (CytokineOptions, "cytokine", config_module.CytokineConfig, {"enabled"},
                  ("immunoprofile.cytokine.stage", "quantify_files"), {"bridging"}),
    # one per flow.compensation_controls set in a config
    "compensate": (CompensateOptions, None, config_module.ControlSet,
                   {"name", "date", "controls", "unstained", "channels", "gate"},
                   ("immunoprofile.flow.spillover_estimation", "estimate_spillover"), set()),
    "assemble": (AssembleOptions, "assemble", config_module.AssembleConfig, {"enabled"},
                 ("immunoprofile.study.stage", "assemble_study"), set()),
    "report": (ReportOptions, "report", config_module.ReportConfig, {"enabled"},
               ("immunoprofile.report.build", "build_report"), set()),
    # the config's compare: and analysis: sections are its two parts (see the test below)
    "compare": (CompareOptions, None, None, None,
                ("immunoprofile.study.compare_stage", "compare_study"),
                {"contrasts", "estimands", "primary_contrasts"}),
}
INVOKED = ["gate", "cytokines", "compensate"]

#: A value other than the default for every field, as the config gives it and as flags.
CHANGED: dict[str, dict[str, tuple[Any, list[str]]]] = {
    "gate": {
        "compensation": ("none", ["--comp", "none"]),
        "group": ("Group 1", ["--group", "Group 1"]),
        "statistics": (["median", "rcv"], ["--statistics", "median,rcv"]),
        "time_qc": ({"enabled": True}, ["--time-qc"]),
        "membership": (True, ["--membership"]),
    },
    "cytokines": {
        "model": ("4pl", ["--model", "4pl"]),
        "weights": ("power", ["--weights", "power"]),
        "power": (1.5, ["--power", "1.5"]),
        "replicate_means": (True, ["--replicate-means"]),
        "search": ("global", ["--search", "global"]),
        "recovery_range": ([70.0, 130.0], ["--recovery", "70,130"]),
        "max_cv": (25.0, ["--max-cv", "25"]),
        "min_beads": (20, ["--min-beads", "20"]),
        "drop_low_bead_standards": (True, ["--drop-low-bead-standards"]),
        "lloq_policy": ("half", ["--lloq-policy", "half"]),
        "bridging_sample": ("Pool", ["--bridging", "Pool"]),
        "drug_readouts": (["IL-1RA", "IL-1b"], ["--drug-readout", "IL-1RA",
                                                "--drug-readout", "IL-1b"]),
        "repair": (False, ["--no-repair"]),
    },
    "compensate": {
        "population": ("Singlets", ["--population", "Singlets"]),
        "method": ("median", ["--method", "median"]),
        "positive_quantile": (0.99, ["--positive-quantile", "0.99"]),
    },
}


def _default(model, name):
    return model.model_fields[name].get_default(call_default_factory=True)


@pytest.mark.parametrize("stage", STAGES)
def test_function_keywords_and_defaults_are_the_models(stage):
    model, *_, (module, name), _skip = STAGES[stage]
    import importlib

    fn = getattr(importlib.import_module(module), name)
    params = inspect.signature(fn).parameters
    assert "options" in params
    for field in model.model_fields:
        assert params[field].kind is inspect.Parameter.KEYWORD_ONLY, field
        assert params[field].default == _default(model, field), field
        assert f"    {field}\n" in fn.__doc__, field  # listed under Other Parameters


#: model, config attribute, section class, pipeline-only fields of each config section
SECTIONS = {
    **{stage: spec[:4] for stage, spec in STAGES.items() if spec[2] is not None},
    # compare's two parts: together they are CompareOptions
    "compare": (ComparisonOptions, "compare", config_module.CompareConfig, {"enabled"}),
    "analysis": (AnalysisPlanOptions, "analysis", config_module.AnalysisConfig, set()),
}


def test_compare_options_are_its_two_config_sections(tmp_path):
    assert set(CompareOptions.model_fields) == \
        set(ComparisonOptions.model_fields) | set(AnalysisPlanOptions.model_fields)
    assert not set(ComparisonOptions.model_fields) & set(AnalysisPlanOptions.model_fields)
    config = load_config(_config(tmp_path, {}))
    assert CompareOptions.from_sections(config.compare, config.analysis) == CompareOptions()


@pytest.mark.parametrize("stage", SECTIONS)
def test_config_section_is_the_model_plus_pipeline_fields(stage, tmp_path):
    model, attr, section, extras = SECTIONS[stage]
    assert issubclass(section, model)
    assert set(section.model_fields) - set(model.model_fields) == extras
    schema = config_json_schema()
    props = schema["$defs"][section.__name__]["properties"]
    defaults = model().to_dict()
    for field in model.model_fields:
        assert section.model_fields[field].get_default(call_default_factory=True) == \
            _default(model, field), field
        prop = props[field]
        if "$ref" in prop:  # a nested model: its own definition carries the defaults
            nested = schema["$defs"][prop["$ref"].rsplit("/", 1)[1]]["properties"]
            for key, value in defaults[field].items():
                assert nested[key].get("default") == value, (field, key)
        else:
            assert prop.get("default") == defaults[field], field
        assert prop.get("description") or "$ref" in prop, field
    # a config that says nothing gets the model's defaults
    config = load_config(_config(tmp_path, {}))
    if attr is not None:
        assert model.merge(getattr(config, attr)) == model()


@pytest.mark.parametrize("stage", STAGES)
def test_cli_flags_are_the_models_fields_with_its_defaults(stage):
    model, *_, skip = STAGES[stage]
    command = cli.get_command(None, stage)
    params = {p.name: p for p in command.params}
    flags = cli_fields(model)
    assert set(model.model_fields) - set(flags) == skip  # each left out with its reason
    for field, flag in flags.items():
        param = params[field]
        assert flag in param.opts, (field, param.opts)
        default = _default(model, field)
        if hasattr(default, "enabled"):
            default = default.enabled
        value = param.default
        sep = ","
        if isinstance(default, tuple) and isinstance(value, str):
            value = tuple(type(d)(v) for d, v in zip(default, value.split(sep)))
        assert (tuple(value) if isinstance(value, (list, tuple)) else value) == default, field


def _invoke(stage: str, args: list[str], tmp_path: Path, monkeypatch) -> Any:
    """Run the command with ``args``; return the options its stage function received."""
    import importlib

    module, name = STAGES[stage][4]
    seen = []

    def fake(*a, **kw):
        seen.append(a[2] if len(a) > 2 else kw.get("options", a[1]))
        return types.SimpleNamespace(samples=[], results=[], failures=[], written={},
                                     warnings=[], controls=[], detectors=[])

    monkeypatch.setattr(importlib.import_module(module), name, fake)
    data = tmp_path / ("plate.csv" if stage == "cytokines" else "a.fcs")
    data.write_text("x")
    extra = {"gate": ["--strategy", str(data)], "compensate": ["--unstained", str(data)]
             }.get(stage, [])
    if stage == "compensate":
        monkeypatch.setattr(importlib.import_module(module), "write_spillover_outputs",
                            lambda *a, **kw: {})
    res = CliRunner().invoke(cli, [stage, str(data), *extra, *args, "--out",
                                   str(tmp_path / "out"), "-q"])
    assert res.exit_code == 0, res.output
    assert len(seen) == 1
    return seen[0]


def _config(tmp_path: Path, section: dict[str, Any], attr: str = "flow") -> Path:
    import yaml

    path = tmp_path / "config.yaml"
    data = {"schema_version": 1, "inputs": {"manifest": "m.csv"}}
    if section:
        data[attr] = section
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("stage", INVOKED)
def test_cli_and_config_give_the_function_the_same_options(stage, tmp_path, monkeypatch):
    model, attr, *_ = STAGES[stage]
    # nothing given: the model's defaults through both doors
    assert model.merge(_invoke(stage, [], tmp_path, monkeypatch)) == model()
    # every field changed: the flags and the config's keys mean the same
    changed = CHANGED[stage]
    assert set(changed) == set(cli_fields(model))
    args = [a for _, flag_args in changed.values() for a in flag_args]
    from_cli = model.merge(_invoke(stage, args, tmp_path, monkeypatch))
    values = {k: v for k, (v, _) in changed.items()}
    if attr is None:  # compensate: one set of flow.compensation_controls
        values = {"compensation": "controls", "compensation_controls": [
            {"controls": ["c"], "unstained": "u.fcs", **values}]}
    config = load_config(_config(tmp_path, values, attr or "flow"))
    section = getattr(config, attr or "flow")
    from_config = model.merge(section if attr else section.compensation_controls[0])
    assert from_cli == from_config
    for field in changed:
        assert getattr(from_cli, field) != _default(model, field), field


def test_assemble_command_and_config_give_the_same_options(tmp_path, monkeypatch):
    # the assemble command also writes the study itself (after its log file): both patched
    import pandas as pd

    from immunoprofile.study import stage

    seen, written = [], []
    adata = types.SimpleNamespace(
        obs=pd.DataFrame({"missing_reason": [""], "subject_id": ["S1"]}), n_obs=1, n_vars=0,
        uns={"immunoprofile": {"unmatched": []}})

    def fake(manifest, options=None, **kw):
        seen.append(options)
        return types.SimpleNamespace(adata=adata)

    monkeypatch.setattr(stage, "assemble_study", fake)
    monkeypatch.setattr(stage, "write_assemble_outputs",
                        lambda a, out, zarr: written.append(zarr) or {"unmatched.tsv": out})

    def invoke(args):
        res = CliRunner().invoke(cli, ["assemble", "--manifest", str(tmp_path / "m.csv"),
                                       "--flow", str(tmp_path), "--design", "example-trial",
                                       "--out", str(tmp_path / "study.h5ad"), "-q", *args])
        assert res.exit_code == 0, res.output
        return seen[-1]

    assert AssembleOptions.merge(invoke([])) == AssembleOptions()
    assert written[-1] is False
    changed = {"cytokine_value": "concentration", "zarr": True}
    from_cli = invoke(["--cytokine-value", "concentration", "--zarr"])
    assert written[-1] is True  # the option the command writes by is the model's
    config = load_config(_config(tmp_path, changed, "assemble"))
    assert from_cli == AssembleOptions.merge(config.assemble)
    for field, value in changed.items():
        assert getattr(from_cli, field) == value != _default(AssembleOptions, field)
    res = CliRunner().invoke(cli, ["assemble", "--manifest", "m.csv", "--flow", str(tmp_path),
                                   "--design", "example-trial", "--out", "s.h5ad",
                                   "--cytokine-value", "raw"])
    assert res.exit_code == 2


COMPARE_CHANGED: dict[str, tuple[Any, list[str]]] = {
    "layer": ("raw", ["--layer", "raw"]),
    "mixed": (False, ["--no-mixed"]),
    "mixed_ddf": ("kenward-roger", ["--ddf", "kenward-roger"]),
    "min_subjects": (2, ["--min-subjects", "2"]),
    "alpha": (0.1, ["--alpha", "0.1"]),
    "populations": (["all"], ["--population", "all"]),
    "primary": (["IL-13", "Th2|pct_parent"], ["--primary", "IL-13", "--primary", "Th2|pct_parent"]),
    "hierarchy": ("fixed-sequence", ["--hierarchy", "fixed-sequence"]),
    "primary_test": ("wilcoxon", ["--primary-test", "wilcoxon"]),
    "qc_populations": (["Cells"], ["--qc-population", "Cells"]),
    "test_qc": (True, ["--test-qc"]),
    "censored_max_fraction": (0.25, ["--censored-max-fraction", "0.25"]),
}


def test_compare_command_and_config_give_the_same_options(tmp_path, monkeypatch):
    import pandas as pd

    from immunoprofile.study import compare_stage

    seen = []
    table = pd.DataFrame(columns=["feature", "contrast", "population", "family", "q",
                                  "p_wilcoxon", "role", "significant"])

    def fake(study, options=None, **kw):
        seen.append(options)
        return types.SimpleNamespace(table=table, notes={})

    real = compare_stage.compare_study
    monkeypatch.setattr(compare_stage, "compare_study", fake)

    def invoke(args):
        res = CliRunner().invoke(cli, ["compare", str(tmp_path / "study.h5ad"), "--out",
                                       str(tmp_path / "cmp"), "-q", *args])
        assert res.exit_code == 0, res.output
        return seen[-1]

    assert invoke([]) == CompareOptions()
    assert set(COMPARE_CHANGED) == set(cli_fields(CompareOptions))
    from_cli = invoke([a for _, flag_args in COMPARE_CHANGED.values() for a in flag_args])
    values = {k: v for k, (v, _) in COMPARE_CHANGED.items()}
    path = tmp_path / "config.yaml"
    import yaml

    path.write_text(yaml.safe_dump({
        "schema_version": 1, "inputs": {"manifest": "m.csv"},
        "compare": {k: v for k, v in values.items() if k in ComparisonOptions.model_fields},
        "analysis": {k: v for k, v in values.items() if k in AnalysisPlanOptions.model_fields}}))
    config = load_config(path)
    assert from_cli == CompareOptions.from_sections(config.compare, config.analysis)
    for field in COMPARE_CHANGED:
        assert getattr(from_cli, field) != _default(CompareOptions, field), field
    # the period pairs are a config's only; as keywords they are the model's
    opts = CompareOptions.merge(None, contrasts=[["run-in", "treatment"]])
    assert opts.contrasts == (("run-in", "treatment"),)
    assert "contrasts" not in CompareOptions().settings()  # compare_periods' default applies
    with pytest.raises(TypeError, match="unknown setting"):
        real(table, layr="raw")  # a typo is not silently dropped


def test_report_command_and_config_give_the_same_options(tmp_path, monkeypatch):
    import immunoprofile.report

    seen = []

    def fake(layout, out, options=None):
        seen.append(options)
        return types.SimpleNamespace(path=tmp_path / "r.html", size_bytes=0, seconds=0.0,
                                     plots=[])

    monkeypatch.setattr(immunoprofile.report, "build_report", fake)

    def invoke(args):
        res = CliRunner().invoke(cli, ["report", str(tmp_path), "-q", *args])
        assert res.exit_code == 0, res.output
        return seen[-1]

    assert invoke([]) == ReportOptions()
    changed = {"title": ("T", ["--title", "T"]),
               "max_gating_samples": (5, ["--max-gating-samples", "5"]),
               "gating": (False, ["--no-gating"]), "jobs": (1, ["--jobs", "1"])}
    assert set(changed) == set(cli_fields(ReportOptions))
    from_cli = invoke([a for _, flag_args in changed.values() for a in flag_args])
    config = load_config(_config(tmp_path, {k: v for k, (v, _) in changed.items()}, "report"))
    assert from_cli == ReportOptions.merge(config.report)
    for field in changed:
        assert getattr(from_cli, field) != _default(ReportOptions, field), field
    res = CliRunner().invoke(cli, ["report", str(tmp_path), "--jobs", "0"])
    assert res.exit_code == 2 and "--jobs" in res.output


def test_keywords_are_validated_by_the_model():
    gate_files, quantify_files = _gate_files(), _quantify_files()
    with pytest.raises(TypeError, match="unexpected keyword"):
        gate_files([], "s.yaml", compensaton="none")  # a typo is not silently dropped
    with pytest.raises(InputError, match="statistics"):
        gate_files([], "s.yaml", statistics=["mean"])
    with pytest.raises(InputError, match="recovery_range"):
        quantify_files([], recovery_range=(120, 80))
    # keywords on top of an options object
    merged = GateOptions.merge(GateOptions(membership=True), group="g")
    assert merged.membership and merged.group == "g"
    assert GateOptions(time_qc=True).time_qc.options() == TimeQCOptions()
    assert GateOptions(time_qc=TimeQCOptions(rate_k=3)).time_qc.options().rate_k == 3
    assert GateOptions(time_qc=None).time_qc.options() is None
    # a QuantifyOptions is a CytokineOptions' quantification part; repair stays the default
    opts = CytokineOptions.merge(QuantifyOptions(model="4pl"))
    assert opts.model == "4pl" and opts.repair is True
    assert opts.quantify_options() == QuantifyOptions(model="4pl")
    # naming a bridging sample turns bridging on, unless bridging is set false
    assert QuantifyOptions(bridging_sample="Pool").bridging
    assert not QuantifyOptions(bridging_sample="Pool", bridging=False).bridging


def test_option_vocabularies_match_the_code_that_uses_them():
    from typing import get_args

    from immunoprofile.cytokine import curves, quantify
    from immunoprofile.cytokine.options import LLOQ_POLICIES, Model, Weights
    from immunoprofile.flow import stats
    from immunoprofile.flow.options import STATISTICS

    assert set(get_args(Model)) == {*curves.MODELS, "auto"}
    assert set(get_args(Weights)) == {*curves.WEIGHTS, "auto"}
    assert quantify.LLOQ_POLICIES == LLOQ_POLICIES
    assert stats.STATISTICS is STATISTICS
    for vendor in quantify.VENDOR_DEFAULTS.values():
        assert vendor["model"] in curves.MODELS and vendor["weights"] in curves.WEIGHTS


def test_the_gate_command_stays_light():
    import subprocess
    import sys

    code = ("import sys, immunoprofile._cli.gate, immunoprofile._cli.cytokines; "
            "print(sorted(m for m in ('numpy', 'pandas', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
