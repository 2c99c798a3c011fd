"""Atomic output writing: a file is either complete or absent, never half-written.

Every writer goes to a temporary file in the destination's folder and ``os.replace``-s it into
place, so a crash or a kill mid-write leaves the previous version (or nothing), never a torso.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_path", "atomic_open", "write_text_atomic", "write_json_atomic", "write_csv_atomic",
    "write_h5ad_atomic", "write_parquet_atomic",
]


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; rename it into place on success.

    On any exception the temporary file is removed and ``destination`` is left untouched.
    """
    dest = Path(destination)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:  # data on disk before the rename makes it visible
            os.fsync(handle.fileno())
        # mkstemp creates 0600; outputs should be as readable as any file the user creates.
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(destination: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """``open()`` that writes to a temporary file and renames it into place on success."""
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
        kwargs.setdefault("newline", "")
    with atomic_path(destination) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle


def write_text_atomic(destination: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) atomically."""
    with atomic_open(destination, "w") as handle:
        handle.write(text)


def write_json_atomic(destination: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as pretty, key-sorted JSON atomically (deterministic bytes)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default, allow_nan=True)
    write_text_atomic(destination, text + "\n")


def write_csv_atomic(destination: str | os.PathLike[str], frame, **kwargs: Any) -> None:
    """Write a pandas DataFrame as CSV atomically (no index unless asked, fixed float format)."""
    kwargs.setdefault("index", False)
    kwargs.setdefault("lineterminator", "\n")
    with atomic_open(destination, "w") as handle:
        frame.to_csv(handle, **kwargs)


def write_parquet_atomic(destination: str | os.PathLike[str], frame, **kwargs: Any) -> None:
    """Write a pandas DataFrame as Parquet atomically (pyarrow, no pandas index)."""
    kwargs.setdefault("index", False)
    with atomic_path(destination) as tmp:
        frame.to_parquet(tmp, engine="pyarrow", **kwargs)


def write_h5ad_atomic(destination: str | os.PathLike[str], adata, **kwargs: Any) -> None:
    """Write an AnnData to ``.h5ad`` atomically."""
    with atomic_path(destination) as tmp:
        adata.write_h5ad(tmp, **kwargs)


def _json_default(value: Any) -> Any:
    """Make numpy scalars/arrays and paths JSON-serialisable."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a hard dependency
        np = None
    if np is not None:
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
