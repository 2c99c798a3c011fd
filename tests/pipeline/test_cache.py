"""The content-addressed result cache: keys, round trips, atomic entries, damaged entries."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pandas.testing as pdt

from immunoprofile.flow.batch import SampleGating
from immunoprofile.pipeline.cache import ResultCache, cache_key


def _sample(sid: str = "S1") -> SampleGating:
    stats = pd.DataFrame({
        "sample_id": [sid, sid], "file": [f"{sid}.fcs"] * 2, "population": ["/A", "/A/B"],
        "parent": [None, "/A"], "count": np.array([100, 25], dtype=np.int64),
        "pct_parent": [100.0, 25.0], "pct_total": [100.0, 25.0],
        "mfi_CD4": [1234.5678901234, np.nan],
    })
    return SampleGating(sid, f"{sid}.fcs", "ab" * 32, stats, {"$DATE": "01-JAN-2024"}, 100,
                        ["repaired offset"])


def test_key_changes_with_every_ingredient() -> None:
    base = dict(kind="flow", input_hashes={"fcs": "a", "strategy": "b"},
                parameters={"compensation": "fcs"}, version="1")
    key = cache_key(**base)
    assert len(key) == 64 and key == cache_key(**base)
    variants = [dict(base, kind="plate"), dict(base, input_hashes={"fcs": "x", "strategy": "b"}),
                dict(base, input_hashes={"fcs": "a", "strategy": "x"}),
                dict(base, parameters={"compensation": "none"}), dict(base, version="2")]
    assert len({cache_key(**v) for v in variants} | {key}) == len(variants) + 1
    # parameter order must not matter
    assert cache_key(**dict(base, parameters={"a": 1, "b": 2})) == cache_key(
        **dict(base, parameters={"b": 2, "a": 1}))


def test_gating_round_trip_is_exact(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "cache")
    key = cache_key(kind="flow", input_hashes={"fcs": "1"}, parameters={}, version="1")
    assert cache.get_gating(key) is None and cache.misses == 1
    sample = _sample()
    entry = cache.put_gating(key, sample)
    assert sorted(p.name for p in entry.iterdir()) == ["meta.json", "stats.parquet"]
    back = cache.get_gating(key)
    assert cache.hits == 1
    pdt.assert_frame_equal(back.stats, sample.stats)
    assert (back.sample_id, back.file, back.sha256, back.keywords, back.n_events,
            back.warnings) == (sample.sample_id, sample.file, sample.sha256, sample.keywords,
                               sample.n_events, sample.warnings)
    # no staging folders left, nothing but entries
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_incomplete_or_damaged_entries_are_misses(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    key = cache_key(kind="flow", input_hashes={"fcs": "1"}, parameters={}, version="1")
    entry = cache.put_gating(key, _sample())
    (entry / "stats.parquet").write_bytes(b"not parquet")
    assert cache.get_gating(key) is None
    (entry / "meta.json").unlink()  # as if killed before the entry was committed
    assert cache.get_gating(key) is None
    cache.put_gating(key, _sample())  # rebuilt over the damaged one
    assert cache.get_gating(key) is not None


def test_second_put_keeps_the_first_and_stale_staging_is_cleaned(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    key = cache_key(kind="flow", input_hashes={"fcs": "1"}, parameters={}, version="1")
    cache.put_gating(key, _sample("S1"))
    cache.put_gating(key, _sample("S1"))
    stale = cache.entry_dir("flow", key).parent / ".deadbeef.x.tmp"
    stale.mkdir()
    (stale / "stats.parquet").write_bytes(b"half")
    assert cache.clean_stale() == 1 and not stale.exists()
    assert cache.get_gating(key).sample_id == "S1"
    assert [p for p in os.listdir(cache.entry_dir("flow", key).parent)] == [key]
