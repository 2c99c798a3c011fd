"""Atomic writers: complete file or none, never a half-written output."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from immunoprofile._io import atomic_open, write_csv_atomic, write_json_atomic, write_text_atomic


def test_write_text_atomic_creates_parents_and_content(tmp_path):
    target = tmp_path / "a" / "b" / "out.txt"
    write_text_atomic(target, "hello\n")
    assert target.read_text() == "hello\n"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]  # no temp file left


def test_failed_write_leaves_previous_version_and_no_temp(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as handle:
            handle.write("partial")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_json_is_deterministic_and_handles_numpy(tmp_path):
    import numpy as np

    obj = {"b": np.float64(1.5), "a": np.arange(3), "c": {np.int64(2).item(): "x"}}
    write_json_atomic(tmp_path / "x.json", obj)
    first = (tmp_path / "x.json").read_bytes()
    write_json_atomic(tmp_path / "x.json", obj)
    assert (tmp_path / "x.json").read_bytes() == first
    assert json.loads(first) == {"a": [0, 1, 2], "b": 1.5, "c": {"2": "x"}}


def test_csv_atomic_round_trip(tmp_path):
    frame = pd.DataFrame({"x": [1, 2], "y": ["a", "b"]})
    write_csv_atomic(tmp_path / "f.csv", frame)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "f.csv"), frame)


def test_outputs_get_normal_permissions(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "p.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "p.txt").stat().st_mode) == 0o644
