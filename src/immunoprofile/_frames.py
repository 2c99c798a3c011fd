"""Small helpers that behave the same on pandas 2 and 3 and on anndata 0.12 and 0.13."""

from __future__ import annotations

__all__ = ["is_text_column", "layer_names"]

from typing import Any

from .schema import layer_names  # the one definition lives with the rest of the schema


def is_text_column(column: Any) -> bool:
    """True for a column of Python objects or strings.

    pandas 2 stores text as ``object``; pandas 3 as its ``str`` dtype. Code that converts text
    columns (to categoricals, to plain ``str`` for h5ad) must see both.
    """
    import pandas as pd

    dtype = getattr(column, "dtype", column)
    return pd.api.types.is_object_dtype(dtype) or (
        pd.api.types.is_string_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype))

