"""Multiplex cytokine plates: read exports, fit standard curves, quantify.

Contract: ``readers.read_plate(path) -> PlateData`` (tidy well × analyte table) feeds
``curves.fit_curve`` and ``quantify.quantify_plate``; each stage is a plain function over plain
data.
"""

from __future__ import annotations

from .readers import PlateData, detect_format, read_plate
from .readers.standards import read_standards

__all__ = ["PlateData", "detect_format", "read_plate", "read_standards"]
