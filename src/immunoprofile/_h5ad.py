"""Write AnnData's ``.h5ad`` on-disk layout with h5py alone.

Why: ``import anndata`` costs about a second per process (it imports zarr, and dask.array when
Dask is installed), more than gating a few files; commands that only *write* a small dense
matrix (``immunoprofile gate``) use this instead. The layout is AnnData's own (encoding types
``anndata``/``array``/``dataframe``/``categorical``/``string-array``/``string``/``dict``/
``numeric-scalar``), including what ``AnnData.write_h5ad`` does to the data on the way
(repeated strings become categoricals with natural-sorted categories), so ``anndata.read_h5ad``
gives back the same object either way (``tests/test_h5ad.py`` compares them). Anything outside
this small subset raises ``TypeError`` and the caller falls back to anndata.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["write_h5ad"]


def write_h5ad(path: str | os.PathLike[str], *, X: np.ndarray, obs: Any, var: Any,
               uns: Mapping[str, Any]) -> None:
    """Write a dense AnnData (``X``, ``obs``, ``var``, ``uns``) to ``path`` as ``.h5ad``.

    Parameters
    ----------
    path
        The file to create (overwritten).
    X
        2-D numeric array, ``len(obs) × len(var)``.
    obs, var
        pandas DataFrames with string indexes and numeric, boolean, string or categorical
        columns.
    uns
        Nested mapping of strings, numbers, and numeric or string arrays.

    Raises
    ------
    TypeError
        For data this writer does not cover (the caller then uses anndata).
    """
    import h5py

    X = np.asarray(X)
    if X.ndim != 2 or X.dtype.kind not in "biuf" or X.shape != (len(obs), len(var)):
        raise TypeError(f"X of shape {X.shape} ({X.dtype}) does not fit obs × var")
    with h5py.File(path, "w") as f:
        _attrs(f, "anndata", "0.1.0")
        _array(f, "X", X)
        for name in ("layers", "obsm", "obsp", "varm", "varp"):
            _attrs(f.create_group(name), "dict", "0.1.0")
        _dataframe(f, "obs", obs)
        _dataframe(f, "var", var)
        _mapping(f, "uns", uns)


def _attrs(obj: Any, kind: str, version: str) -> None:
    obj.attrs["encoding-type"] = kind
    obj.attrs["encoding-version"] = version


def _str_dtype() -> Any:
    import h5py

    return h5py.string_dtype(encoding="utf-8")


def _array(group: Any, key: str, values: np.ndarray) -> None:
    _attrs(group.create_dataset(key, data=values), "array", "0.2.0")


def _strings(group: Any, key: str, values: Any) -> None:
    data = np.array([str(v) for v in values], dtype=object)
    _attrs(group.create_dataset(key, data=data, dtype=_str_dtype()), "string-array", "0.2.0")


def _is_strings(values: Any) -> bool:
    from pandas.api.types import infer_dtype

    return infer_dtype(values, skipna=False) == "string"


def _categorical(group: Any, key: str, values: Any) -> None:
    g = group.create_group(key)
    _attrs(g, "categorical", "0.2.0")
    g.attrs["ordered"] = bool(values.ordered)
    categories = values.categories
    if _is_strings(categories):
        _strings(g, "categories", categories)
    elif np.asarray(categories).dtype.kind in "biuf":
        _array(g, "categories", np.asarray(categories))
    else:
        raise TypeError(f"categorical {key!r} has categories of type {categories.dtype}")
    _array(g, "codes", np.asarray(values.codes))


def _dataframe(parent: Any, key: str, frame: Any) -> None:
    import pandas as pd

    g = parent.create_group(key)
    _attrs(g, "dataframe", "0.2.0")
    index_name = "_index"
    g.attrs["_index"] = index_name
    g.attrs["column-order"] = np.array([str(c) for c in frame.columns], dtype=object)
    if not _is_strings(frame.index) and len(frame.index):
        raise TypeError(f"{key} index is not strings")
    _strings(g, index_name, frame.index)
    for column in frame.columns:
        if not isinstance(column, str) or column == index_name:
            raise TypeError(f"{key} column {column!r} cannot be written")
        values = frame[column]
        if isinstance(values.dtype, pd.CategoricalDtype):
            _categorical(g, column, values.cat)
        elif _is_strings(values):
            cat = pd.Categorical(values)
            if len(cat.categories) < len(cat):  # as AnnData.strings_to_categoricals does
                from natsort import natsorted

                order = natsorted(cat.categories)
                if not np.array_equal(cat.categories, order):
                    cat = cat.reorder_categories(order)
                _categorical(g, column, cat)
            else:
                _strings(g, column, values)
        elif values.dtype.kind in "biuf" and not isinstance(values.dtype,
                                                             pd.api.extensions.ExtensionDtype):
            _array(g, column, values.to_numpy())
        else:
            raise TypeError(f"{key} column {column!r} has dtype {values.dtype}")


def _mapping(parent: Any, key: str, mapping: Mapping[str, Any]) -> None:
    g = parent.create_group(key)
    _attrs(g, "dict", "0.1.0")
    for name, value in mapping.items():
        if not isinstance(name, str) or "/" in name:
            raise TypeError(f"uns key {name!r} cannot be written")
        if isinstance(value, Mapping):
            _mapping(g, name, value)
        elif isinstance(value, str):
            _attrs(g.create_dataset(name, data=value, dtype=_str_dtype()), "string", "0.2.0")
        elif isinstance(value, (bool, int, float, np.number, np.bool_)):
            _attrs(g.create_dataset(name, data=np.asarray(value)), "numeric-scalar", "0.2.0")
        elif isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            _array(g, name, value)
        elif isinstance(value, np.ndarray) and value.dtype.kind in "OU" and _is_strings(value):
            _strings(g, name, value)
        else:
            raise TypeError(f"uns value {name!r} of type {type(value).__name__}")
