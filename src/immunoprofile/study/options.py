"""The options of the study stages, one model each (see :mod:`immunoprofile._options`).

:class:`AssembleOptions` (the ``assemble`` stage: :func:`~immunoprofile.study.stage.
assemble_study`, ``immunoprofile assemble``, the config's ``assemble:`` section). Light on
purpose (pydantic only): the config and the command build on it before numpy loads.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .._options import StageOptions

__all__ = ["AssembleOptions", "CytokineValue"]

#: Which ``concentrations.csv`` column is a cytokine feature's value.
CytokineValue = Literal["concentration", "concentration_reported"]


class AssembleOptions(StageOptions):
    """The study matrix (``study.h5ad``: samples × features, joined with the manifest)."""

    cytokine_value: CytokineValue = Field(
        "concentration_reported",
        description="Which concentrations.csv column is the value (concentration_reported: LLOQ "
                    "policy and bridging applied; the raw value stays as layer back_calculated).")
    zarr: bool = Field(False, description="Also write the study as a .zarr store.")
