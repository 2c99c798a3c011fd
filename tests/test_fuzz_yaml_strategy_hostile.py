"""Hostile YAML strategies (issue 7): code-running tags, alias bombs, absurd nesting and numbers
are refused with an InputError naming the file, quickly; the byte-level fuzzing of the reader
lives in tests/flow/test_yaml_strategy.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from _fuzzkit import HOSTILE_YAML

from immunoprofile.errors import InputError
from immunoprofile.flow.strategy import load_strategy
from immunoprofile.flow.yaml_strategy import read_yaml_strategy


@pytest.mark.parametrize("name", sorted(HOSTILE_YAML))
def test_hostile_yaml_strategies_are_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.yaml"
    text = HOSTILE_YAML[name]
    path.write_bytes(text.encode("latin-1") if name == "bad-utf8" else text.encode("utf-8"))
    for read in (read_yaml_strategy, load_strategy):
        start = time.perf_counter()
        with pytest.raises(InputError) as info:
            read(path)
        assert time.perf_counter() - start < 30
        assert path.name in str(info.value) and "\n" not in str(info.value)
    assert not Path("/tmp/immunoprofile-pwned").exists()
