"""Fuzzing of the pipeline config loader with mutations of the real example config (issue 7).

``load_config`` must return a :class:`PipelineConfig` or raise an InputError (a ConfigError lists
every problem) naming the file -- for any bytes, YAML tags that would run code, alias bombs, or
absurd nesting.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from _fuzzkit import FUZZ, HOSTILE_YAML, PROJECT_ROOT, mutate, outcome
from hypothesis import given
from hypothesis import strategies as st

from immunoprofile.errors import InputError
from immunoprofile.pipeline.config import PipelineConfig, load_config

EXAMPLE = PROJECT_ROOT / "pipelines" / "example_trial.yaml"
_WORK = Path(tempfile.mkdtemp(prefix="config_fuzz_")) / "pipelines"
_WORK.mkdir()
# the config's relative paths (../example_data/...) resolve as they do in the repository
shutil.copytree(PROJECT_ROOT / "example_data", _WORK.parent / "example_data",
                ignore=shutil.ignore_patterns("*.fcs", "truth"))

YAML_TOKENS = [b"null", b"~", b"[]", b"{}", b".nan", b"-.inf", b"yes", b"no", b"!!binary aGk=",
               b"*alias", b"&anchor x", b"!!python/object/apply:os.system ['true']",
               b"!!python/name:os.system", b"'", b"\"", b"- a", b": :", b"dask", b"serial",
               b"process", b"4pl", b"1/y", b"none", b"-5", b"100000000", b"2", b"week0",
               b"../../../../etc/passwd", b"/dev/zero"]


def _check(config: PipelineConfig) -> None:
    assert isinstance(config, PipelineConfig)
    assert config.schema_version == 1


def _load(path: Path) -> str:
    # a ConfigError is an InputError: outcome() checks it names the file in one line
    return outcome(path, load_config, _check)


@FUZZ
@given(blob=mutate(EXAMPLE.read_bytes(), YAML_TOKENS))
def test_fuzz_mutated_example_config(blob: bytes) -> None:
    path = _WORK / "fuzz.yaml"
    path.write_bytes(blob)
    _load(path)


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(10 ** 30), 10 ** 30),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10),
                     st.sampled_from(["fcs", "none", "dask", "process", "serial", "5pl", "4pl",
                                      "1/y2", "keep", "week0", "../example_data/manifest.csv",
                                      "../example_data", "", "/", "~"]))
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)


@FUZZ
@given(data=st.data())
def test_fuzz_structural_edits(data: st.DataObject) -> None:
    """Replace, delete or add one key anywhere in the real config's tree."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    node = doc
    while True:
        key = data.draw(st.sampled_from(sorted(node)))
        if isinstance(node[key], dict) and data.draw(st.booleans()):
            node = node[key]
            continue
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            node[key] = data.draw(_VALUES)
        elif action == "delete":
            del node[key]
        else:
            node[data.draw(st.text(min_size=1, max_size=8))] = data.draw(_VALUES)
        break
    path = _WORK / "edit.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    _load(path)


@pytest.mark.parametrize("name", sorted(HOSTILE_YAML))
def test_hostile_configs_are_refused_quickly(name: str) -> None:
    path = _WORK / f"{name}.yaml"
    text = HOSTILE_YAML[name]
    path.write_bytes(text.encode("latin-1") if name == "bad-utf8" else text.encode("utf-8"))
    start = time.perf_counter()
    with pytest.raises(InputError) as info:
        load_config(path)
    assert time.perf_counter() - start < 30, "alias bombs and nesting must not take long"
    assert path.name in str(info.value) and "\n" not in str(info.value)
    assert not Path("/tmp/immunoprofile-pwned").exists()


def test_missing_file_and_directory(tmp_path: Path) -> None:
    for path in (tmp_path / "absent.yaml", tmp_path):
        with pytest.raises(InputError):
            load_config(path)
