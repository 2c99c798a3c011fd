"""Multiplex cytokine plates: read exports, fit standard curves, quantify.

Contract: ``readers.read_plate(path) -> PlateData`` (tidy well × analyte table) feeds
``curves.fit_curve`` and ``quantify.quantify_plate``; each stage is a plain function over plain
data. :func:`quantify_files` is the ``cytokines`` stage (exports in, quantified plates and
outputs out); :func:`quantify_plates` quantifies plates already read.
"""

from __future__ import annotations

from typing import Any

from .readers import PlateData, detect_format, read_plate
from .readers.standards import read_standards

__all__ = ["PlateData", "detect_format", "read_plate", "read_standards", "quantify_files",
           "QuantifyFilesResult", "quantify_plates", "QuantifyOptions"]

_LAZY = {"quantify_files": "stage", "QuantifyFilesResult": "stage",
         "quantify_plates": "quantify", "QuantifyOptions": "quantify"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:  # lazily: scipy loads only when quantifying
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
