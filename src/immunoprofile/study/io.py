"""Reading and writing study AnnData (``.h5ad`` or ``.zarr``), atomically and with key checks.

Contract: :func:`write_study` refuses keys h5ad/zarr cannot store and never leaves a half-written
file; :func:`read_study` turns any unreadable file into an ``InputError``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._frames import layer_names
from .._io import write_h5ad_atomic
from ..errors import InputError
from ..schema import SCHEMA_VERSION, migrate

if TYPE_CHECKING:  # pragma: no cover
    import anndata as ad

__all__ = ["write_study", "read_study"]


def _check_keys(adata: ad.AnnData) -> None:
    """zarr refuses '/' in keys and h5ad silently nests them: refuse early, naming the key."""

    def walk(mapping: Any, where: str) -> None:
        if isinstance(mapping, dict):
            for key, value in mapping.items():
                if "/" in str(key):
                    raise ValueError(f"'/' in key {where}[{key!r}] cannot be stored")
                walk(value, f"{where}[{key!r}]")

    walk(dict(adata.uns), "uns")
    for name in (*layer_names(adata), *adata.obsm.keys(), *adata.varm.keys()):
        if "/" in name:
            raise ValueError(f"'/' in key {name!r} cannot be stored")


def write_study(adata: ad.AnnData, out_path: str | os.PathLike[str], *, zarr: bool = False) -> Path:
    """Write a study AnnData atomically as ``.h5ad`` (default) or ``.zarr`` (a folder).

    Parameters
    ----------
    adata
        From :func:`assemble`, :func:`period_means` or :func:`split_by_visit`.
    out_path
        Destination; for zarr a folder (replaced whole on success).
    zarr
        Write a zarr store instead of an HDF5 file.

    Returns
    -------
    Path
        The written path.
    """
    out = Path(out_path)
    _check_keys(adata)
    if not zarr:
        write_h5ad_atomic(out, adata)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        store = tmp / "store.zarr"
        adata.write_zarr(store)
        if out.exists():  # swap: old aside, new in, old removed — never a half store at `out`
            old = tmp / "old"
            os.replace(out, old)
        os.replace(store, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def read_study(path: str | os.PathLike[str]) -> ad.AnnData:
    """Read a study written by :func:`write_study` (``.h5ad`` file or ``.zarr`` folder).

    Files of an older schema are migrated on read (:func:`immunoprofile.schema.migrate`).

    Raises
    ------
    InputError
        When the file is missing or is not an immunoprofile study.
    """
    import anndata as ad

    p = Path(path)
    if not p.exists():
        raise InputError(p, "study file not found")
    try:
        adata = ad.read_zarr(p) if p.is_dir() else ad.read_h5ad(p)
    except Exception as exc:  # noqa: BLE001 - converted, not swallowed
        # a damaged file fails anywhere inside h5py/anndata's decoders (fuzzing found
        # RuntimeError "bad symbol table node signature", IORegistryError, ...): all are bad input
        raise InputError(p, f"cannot read as AnnData ({type(exc).__name__}: {exc})") from exc
    if "immunoprofile" not in adata.uns or "period" not in adata.obs.columns:
        raise InputError(p, "not an immunoprofile study (no uns['immunoprofile'] / obs['period'])")
    try:
        return migrate(adata)  # an older schema's file reads as today's
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(p, f"cannot bring to schema {SCHEMA_VERSION}: {exc}") from exc