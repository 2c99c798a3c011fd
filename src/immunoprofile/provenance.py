"""Provenance: what went into an output, so it can be trusted and re-run.

Every output directory gets a ``provenance.json`` built by :func:`build_provenance`: the inputs with
their SHA-256, the versions of immunoprofile and of the libraries that shaped the numbers, the
parameters, the command line and the platform. No timestamps inside the hashed parts: the same
inputs give the same provenance apart from the ``created`` field.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["sha256_file", "package_versions", "build_provenance", "SCHEMA_VERSION"]

SCHEMA_VERSION = "1"

_TRACKED_PACKAGES = (
    "immunoprofile", "numpy", "pandas", "scipy", "anndata", "flowkit", "flowio", "statsmodels",
    "scikit-learn", "pyarrow", "h5py", "matplotlib", "dask", "distributed", "pydantic",
)


def sha256_file(path: str | os.PathLike[str], *, chunk_size: int = 1 << 20) -> str:
    """Return the hex SHA-256 of a file, read in chunks (memory stays flat)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions(packages: Iterable[str] = _TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that shape results (absent ones are omitted)."""
    versions: dict[str, str] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def build_provenance(
    *,
    inputs: Iterable[str | os.PathLike[str]] = (),
    parameters: Mapping[str, Any] | None = None,
    command: str | None = None,
    extra: Mapping[str, Any] | None = None,
    sha256: Mapping[str | os.PathLike[str], str] | None = None,
) -> dict[str, Any]:
    """Assemble a JSON-serialisable provenance record.

    Parameters
    ----------
    inputs
        Files that went in; each is recorded with its absolute path, size and SHA-256.
    parameters
        Options that shaped the result (strategy, model, weights, thresholds ...).
    command
        The command line or pipeline step that produced the output.
    extra
        Anything else worth keeping (repairs made while reading, warnings ...).
    sha256
        Digests already known, by path (e.g. computed from the very bytes a reader decoded):
        those inputs are not read a second time.
    """
    known = {str(Path(k).resolve()): v for k, v in (sha256 or {}).items()}
    records = []
    for path in sorted({os.fspath(p) for p in inputs}):
        p = Path(path)
        resolved = str(p.resolve())
        records.append({
            "path": resolved,
            "name": p.name,
            "size": p.stat().st_size,
            "sha256": known.get(resolved) or sha256_file(p),
        })
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "immunoprofile",
        "versions": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": command if command is not None else " ".join(sys.argv),
        "parameters": dict(parameters or {}),
        "inputs": records,
        **(dict(extra) if extra else {}),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
