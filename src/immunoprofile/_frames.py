"""Small helpers that behave the same on pandas 2 and 3 and on anndata 0.12 and 0.13."""

from __future__ import annotations

__all__ = ["is_text_column", "layer_names"]

from typing import Any


def is_text_column(column: Any) -> bool:
    """True for a column of Python objects or strings.

    pandas 2 stores text as ``object``; pandas 3 as its ``str`` dtype. Code that converts text
    columns (to categoricals, to plain ``str`` for h5ad) must see both.
    """
    import pandas as pd

    dtype = getattr(column, "dtype", column)
    return pd.api.types.is_object_dtype(dtype) or (
        pd.api.types.is_string_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype))


def layer_names(adata: Any) -> list[str]:
    """Names of an AnnData's layers.

    anndata >= 0.13 also lists ``X`` among ``adata.layers``, under the key ``None``; every
    listing of layers (key checks, messages, comparisons) must leave it out.
    """
    return [key for key in adata.layers if key is not None]
