"""Content-addressed cache of per-sample results, so a re-run redoes only what changed.

Contract: an entry's key is the SHA-256 of (input file hashes, parameters, package version); an
entry is a folder of Parquet tables plus ``meta.json`` (never pickle), built in a temporary folder
and renamed into place in one step, so a run killed mid-way leaves complete entries or none.
A damaged or unreadable entry counts as a miss and is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ..flow.batch import SampleGating

__all__ = ["CACHE_FORMAT", "cache_key", "ResultCache"]

#: Bump when the stored layout or the meaning of cached results changes.
CACHE_FORMAT = "1"


def cache_key(*, kind: str, input_hashes: Mapping[str, str], parameters: Mapping[str, Any],
              version: str | None = None) -> str:
    """The key of one cached result.

    Parameters
    ----------
    kind
        What is cached (``"flow"``, ``"plate"``): different kinds never share keys.
    input_hashes
        Role -> SHA-256 of each input file (``{"fcs": ..., "strategy": ...}``).
    parameters
        Every option that shapes the result (JSON-serialisable).
    version
        The package version (defaults to the installed immunoprofile's).

    Returns
    -------
    str
        64 hex digits.
    """
    if version is None:
        from .. import __version__ as version
    payload = json.dumps({"format": CACHE_FORMAT, "kind": kind, "inputs": dict(input_hashes),
                          "parameters": dict(parameters), "version": version},
                         sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class ResultCache:
    """A folder of cache entries: ``<root>/<kind>/<key[:2]>/<key>/{*.parquet, meta.json}``.

    Parameters
    ----------
    root
        The cache folder (created on first write).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def entry_dir(self, kind: str, key: str) -> Path:
        """Where the entry for ``key`` lives."""
        return self.root / kind / key[:2] / key

    # ----- generic tables + metadata ------------------------------------------------------
    def get(self, kind: str, key: str) -> tuple[dict[str, pd.DataFrame], dict[str, Any]] | None:
        """``(tables, meta)`` of a complete entry, or ``None`` (a miss)."""
        import pandas as pd
        import pyarrow as pa

        entry = self.entry_dir(kind, key)
        meta_path = entry / "meta.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            tables = {name: pd.read_parquet(entry / f"{name}.parquet", engine="pyarrow")
                      for name in meta.get("tables", [])}
        except (OSError, ValueError, pa.ArrowException):
            # absent, or damaged by something outside our atomic writes: rebuild it
            self.misses += 1
            return None
        if meta.get("key") != key:
            self.misses += 1
            return None
        self.hits += 1
        return tables, meta.get("meta", {})

    def put(self, kind: str, key: str, tables: Mapping[str, pd.DataFrame],
            meta: Mapping[str, Any], files: Mapping[str, Path] | None = None) -> Path:
        """Store an entry atomically (a folder renamed into place); returns its folder.

        ``files``: name in the entry -> a file copied in as it is (besides the tables)."""
        final = self.entry_dir(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=final.parent))
        try:
            # Plain writes inside a private staging folder: the folder rename below is what makes
            # the entry visible, and an entry damaged by a power cut reads as a miss (no fsync).
            for name, frame in tables.items():
                frame.to_parquet(staging / f"{name}.parquet", engine="pyarrow", index=False)
            for name, source in (files or {}).items():
                shutil.copyfile(source, staging / name)
            # meta.json last: an entry counts only when it is there
            (staging / "meta.json").write_text(
                json.dumps({"key": key, "tables": sorted(tables), "meta": dict(meta)},
                           sort_keys=True, default=_plain), encoding="utf-8")
            if final.exists() and not (final / "meta.json").exists():
                shutil.rmtree(final)  # a damaged older entry
            try:
                os.rename(staging, final)
            except OSError:
                if not (final / "meta.json").exists():
                    raise
                # another worker stored the same content first: keep theirs
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return final

    def clean_stale(self) -> int:
        """Remove staging folders left by killed runs; returns how many were removed."""
        removed = 0
        if not self.root.is_dir():
            return 0
        for staging in self.root.glob("*/*/.*.tmp"):
            with contextlib.suppress(OSError):
                if staging.is_dir():
                    shutil.rmtree(staging)
                else:
                    staging.unlink()
                removed += 1
        return removed

    # ----- flow samples -------------------------------------------------------------------
    def get_gating(self, key: str) -> SampleGating | None:
        """A cached :class:`~immunoprofile.flow.batch.SampleGating`, or ``None``."""
        from ..flow.batch import SampleGating, TraceChunk, split_time_qc

        found = self.get("flow", key)
        if found is None:
            return None
        tables, meta = found
        time_qc, trace = split_time_qc(meta.get("time_qc"))  # entries written with traces inside
        chunk = meta.get("time_qc_chunk")
        if chunk is not None:  # formatted time_qc.csv lines, read when the outputs are written
            path = self.entry_dir("flow", key) / "time_qc_trace.csv"
            if not path.is_file():
                self.hits -= 1
                self.misses += 1
                return None
            trace = TraceChunk(path=path, columns=tuple(chunk["columns"]),
                               dtypes=tuple(chunk["dtypes"]), n_rows=int(chunk["n_rows"]))
        return SampleGating(sample_id=meta["sample_id"], file=meta["file"],
                            sha256=meta["sha256"], stats=tables["stats"],
                            keywords=dict(meta.get("keywords", {})),
                            n_events=int(meta.get("n_events", 0)),
                            warnings=list(meta.get("warnings", [])),
                            positions=tables.get("positions"), time_qc=time_qc,
                            time_qc_trace=tables.get("time_qc_trace", trace))

    def put_gating(self, key: str, sample: SampleGating) -> Path:
        """Store a :class:`~immunoprofile.flow.batch.SampleGating`."""
        from ..flow.batch import TraceChunk

        meta = {"sample_id": sample.sample_id, "file": sample.file, "sha256": sample.sha256,
                "keywords": sample.keywords, "n_events": sample.n_events,
                "warnings": sample.warnings, "time_qc": sample.time_qc}
        tables = {"stats": sample.stats}
        if sample.positions is not None and len(sample.positions):
            tables["positions"] = sample.positions
        files = {}
        trace = sample.time_qc_trace
        if isinstance(trace, TraceChunk):  # already formatted: stored as it is
            files["time_qc_trace.csv"] = trace.path
            meta["time_qc_chunk"] = {"columns": list(trace.columns),
                                     "dtypes": list(trace.dtypes), "n_rows": trace.n_rows}
        elif trace is not None and len(trace):
            tables["time_qc_trace"] = trace
        return self.put("flow", key, tables, meta, files=files)

    # ----- cytokine plates ----------------------------------------------------------------
    def get_plate(self, key: str) -> Any | None:
        """A cached :class:`~immunoprofile.cytokine.quantify.PlateResult`, or ``None``.

        Curve objects (``fits``) are not stored: the curves table holds their parameters, and
        nothing downstream reads ``fits``.
        """
        from ..cytokine.quantify import PlateResult

        found = self.get("plate", key)
        if found is None:
            return None
        tables, meta = found
        return PlateResult(concentrations=tables["concentrations"], curves=tables["curves"],
                           summary=tables["summary"], fits={}, path=meta.get("path", ""),
                           format=meta.get("format", ""), warnings=list(meta.get("warnings", [])),
                           repairs=list(meta.get("repairs", [])), bridging=tables.get("bridging"),
                           **{name: tables.get(name) for name in _OPTIONAL_PLATE_TABLES})

    def put_plate(self, key: str, result: Any) -> Path:
        """Store a :class:`~immunoprofile.cytokine.quantify.PlateResult` (without ``fits``)."""
        tables = {"concentrations": result.concentrations, "curves": result.curves,
                  "summary": result.summary}
        for name in ("bridging", *_OPTIONAL_PLATE_TABLES):
            if getattr(result, name, None) is not None:
                tables[name] = getattr(result, name)
        meta = {"path": result.path, "format": result.format, "warnings": result.warnings,
                "repairs": result.repairs}
        return self.put("plate", key, tables, meta)


# PlateResult tables stored when present (QC and the vendor's results beside ours)
_OPTIONAL_PLATE_TABLES = ("standard_levels", "plate_qc", "vendor_comparison")


def _plain(value: Any) -> Any:
    """JSON for numpy scalars/arrays and paths (values keep their numeric type); anything else
    as its string, so a cache entry's metadata can always be written."""
    from .._io import _json_default

    try:
        return _json_default(value)
    except TypeError:
        return str(value)
