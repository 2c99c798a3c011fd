"""Pipeline config loading: path resolution, all-errors-at-once reporting, JSON Schema."""

from __future__ import annotations

import os

import json
from pathlib import Path

import pytest

from immunoprofile.errors import InputError
from immunoprofile.pipeline.config import (ConfigError, PipelineConfig, config_json_schema,
                                           load_config)

GOOD = """\
schema_version: 1
name: mini
inputs:
  manifest: data/manifest.csv
  strategy: /abs/strategy.yaml
  plates: [plates]
flow:
  compensation: comp/matrix.csv
executor:
  kind: dask
  jobs: 2
outputs:
  dir: ../out
"""


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / "configs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_relative_paths_resolve_against_config_folder(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    base = (tmp_path / "configs").resolve()
    assert cfg.inputs.manifest == base / "data" / "manifest.csv"
    assert cfg.inputs.strategy == Path("/abs/strategy.yaml")
    assert cfg.inputs.plates == [base / "plates"]
    assert cfg.flow.compensation == str(base / "comp" / "matrix.csv")
    assert cfg.out_dir == tmp_path.resolve() / "out"
    assert cfg.cache_dir == tmp_path.resolve() / "out" / ".cache"
    assert cfg.executor.kind == "dask" and cfg.executor.jobs == 2
    # defaults filled in: the cytokine stage's one default (the export's software's model, as the
    # command line has it; issue 13 made the config, function and flags agree)
    assert cfg.cytokine.model == "auto" and cfg.cytokine.replicate_means is None


def test_every_problem_reported_at_once_with_line_path_value_and_hint(tmp_path: Path) -> None:
    text = """\
schema_version: 1
inputs:
  manifest: m.csv
  stratgy: s.yaml
cytokine:
  model: 5PL
  weights: 1/y^2
executor:
  kind: dsk
  jobs: 0
outputz:
  dir: out
"""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = info.value.problems
    got = {(p.line, p.where) for p in problems}
    assert got == {(4, "inputs.stratgy"), (6, "cytokine.model"), (7, "cytokine.weights"),
                   (9, "executor.kind"), (10, "executor.jobs"), (11, "outputz")}
    by_where = {p.where: str(p) for p in problems}
    assert "did you mean 'strategy'?" in by_where["inputs.stratgy"]
    assert "'5PL'" in by_where["cytokine.model"] and "did you mean '5pl'?" in by_where[
        "cytokine.model"]
    assert "allowed: process, serial, dask" in by_where["executor.kind"]
    assert "did you mean 'dask'?" in by_where["executor.kind"]
    assert "did you mean 'outputs'?" in by_where["outputz"]
    assert all(str(p).startswith(f"{path}:") for p in problems)
    assert isinstance(info.value, InputError)  # exit code 2 through the CLI


def test_missing_required_and_wrong_schema_version(tmp_path: Path) -> None:
    path = write(tmp_path, "schema_version: 2\nname: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    wheres = {p.where: p for p in info.value.problems}
    assert set(wheres) == {"schema_version", "inputs"}
    assert wheres["schema_version"].line == 1
    assert "required key missing" in wheres["inputs"].message


def test_duplicate_keys_are_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "schema_version: 1\ninputs:\n  manifest: a.csv\n  manifest: b.csv\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.line == 4 and problem.where == "inputs.manifest"


@pytest.mark.parametrize("text", ["schema_version: [1\n", "- a\n- b\n", ""])
def test_not_yaml_or_not_a_mapping_is_one_clear_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert len(info.value.problems) == 1


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_json_schema_is_json_and_forbids_unknown_keys() -> None:
    schema = config_json_schema()
    json.dumps(schema)
    assert schema["additionalProperties"] is False
    assert "source" not in schema["properties"]
    assert set(schema["required"]) == {"schema_version", "inputs"}
    executor = schema["$defs"]["ExecutorConfig"]["properties"]["kind"]
    assert executor["enum"] == ["process", "serial", "dask"]


def test_example_trial_config_loads() -> None:
    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "pipelines" / "example_trial.yaml")
    assert isinstance(cfg, PipelineConfig)
    assert cfg.inputs.manifest == root / "example_data" / "manifest.csv"
    assert cfg.out_dir == root / "demo_output"


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.floats(allow_nan=True),
                     st.text(max_size=8), st.sampled_from(["fcs", "dask", "5pl", "m.csv"]))
_keys = st.one_of(st.sampled_from(["schema_version", "inputs", "manifest", "executor", "kind",
                                   "jobs", "flow", "cytokine", "model", "outputs", "dir",
                                   "plates", "design", "periods", "treatment"]),
                  st.text(min_size=1, max_size=6))
_docs = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=4)), max_leaves=12)


@settings(max_examples=int(os.environ.get("IMMUNOPROFILE_FUZZ_EXAMPLES", 150)), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(doc=_docs, junk=st.binary(max_size=40))
def test_fuzz_any_document_gives_a_config_or_one_config_error(tmp_path: Path, doc, junk: bytes) -> None:
    import yaml

    for text in (yaml.safe_dump({"schema_version": 1, "inputs": {"manifest": "m.csv"},
                                 "extra": doc} if isinstance(doc, dict) else doc),
                 yaml.safe_dump(doc), junk.decode("latin-1")):
        path = tmp_path / "fuzz.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            load_config(path)
        except ConfigError as exc:
            assert exc.problems and all("\n" not in str(p) for p in exc.problems)
        except InputError as exc:
            assert "\n" not in str(exc)


def test_inconsistent_design_is_a_config_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "schema_version: 1\ninputs: {manifest: m.csv}\ndesign:\n"
                           "  baseline_visit: week00\n  protocol: example-trial\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.where == "design" and problem.line == 3
    assert "week00" in problem.message and "Value error" not in problem.message
    good = load_config(write(tmp_path, "schema_version: 1\ninputs: {manifest: m.csv}\ndesign:\n"
                                       "  protocol: example-trial\n"
                                       "  baseline_visit: week1\n  periods:\n"
                                       "    run-in: [-56, 0]\n    treatment: [1, 84]\n"))
    design = good.design.to_study_design()
    assert design.baseline_visit == "week1" and design.period_names == ["run-in", "treatment"]


def test_no_silent_default_study_design(tmp_path: Path) -> None:
    """A config without a design names none: run/validate say so (one problem, ``design``);
    a design without a protocol to start from states every protocol fact."""
    from immunoprofile.study.design import EXAMPLE_TRIAL_DESIGN

    bare = load_config(write(tmp_path, "schema_version: 1\ninputs: {manifest: m.csv}\n"))
    assert bare.design is None
    with pytest.raises(ConfigError) as info:
        bare.study_design()
    (problem,) = info.value.problems
    assert problem.where == "design" and "protocol: example-trial" in problem.message
    named = load_config(write(tmp_path, "schema_version: 1\ninputs: {manifest: m.csv}\n"
                                        "design: {protocol: example-trial}\n"))
    assert named.study_design() == EXAMPLE_TRIAL_DESIGN
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "schema_version: 1\ninputs: {manifest: m.csv}\ndesign:\n"
                                    "  periods: {run-in: [-7, 0], treatment: [1, 28]}\n"))
    (problem,) = info.value.problems
    assert problem.where == "design" and "visits" in problem.message \
        and "min_doses" in problem.message
    with pytest.raises(ConfigError, match="unknown protocol"):
        load_config(write(tmp_path, "schema_version: 1\ninputs: {manifest: m.csv}\n"
                                    "design: {protocol: my-trial}\n"))
    own = load_config(write(tmp_path, """\
schema_version: 1
inputs: {manifest: m.csv}
design:
  periods: {run-in: [-7, 0], treatment: [1, 28], post-treatment: [29, 56]}
  visits: {day0: {day: 0, before: 7, after: 0}, day28: {day: 28}, day56: {day: 56}}
  baseline_visit: day0
  end_of_treatment_visit: day28
  planned_doses: 28
  min_doses: 21
  responder_reduction_pct: 50
"""))
    design = own.study_design()
    assert design.visit_names == ["day0", "day28", "day56"] and design.min_doses == 21
    assert design.period_for("day28", 30) == "treatment"  # inside its 3-day window
    assert design.period_for("day28", 33) == "post-treatment"
