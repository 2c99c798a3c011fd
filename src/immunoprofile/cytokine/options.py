"""The options of the cytokine stage, one model (see :mod:`immunoprofile._options`).

:class:`QuantifyOptions` is how a plate is fitted, back-calculated and flagged
(:func:`~immunoprofile.cytokine.quantify.quantify_plate`); :class:`CytokineOptions` adds how
exports are read — the whole ``cytokines`` stage (:func:`immunoprofile.cytokine.quantify_files`,
``immunoprofile cytokines``, the config's ``cytokine:`` section). Light on purpose (pydantic only).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from .._options import Cli, StageOptions

__all__ = ["Model", "Weights", "LloqPolicy", "LLOQ_POLICIES", "QuantifyOptions",
           "CytokineOptions"]

#: Curve models (``auto``: the export's software's own).
Model = Literal["auto", "5pl", "4pl"]
#: Fit weights (``auto``: the export's software's own).
Weights = Literal["auto", "1/y2", "1/y", "power", "none"]
#: What ``concentration_reported`` holds below the LLOQ.
LloqPolicy = Literal["keep", "half", "sqrt2", "na"]
LLOQ_POLICIES: tuple[str, ...] = get_args(LloqPolicy)


class QuantifyOptions(StageOptions):
    """How a plate is fitted, back-calculated and flagged.

    ``auto`` (and ``replicate_means=None``) mean what the export's own software does, see
    :data:`~immunoprofile.cytokine.quantify.VENDOR_DEFAULTS` (xPONENT's for unknown formats).
    Drug readouts are matched ignoring case, punctuation, a ``Hu`` prefix and a ``(region)``
    suffix; they are marked ``drug_readout`` in the curves table and the AnnData ``var``.
    """

    model: Model = Field("auto", description="Standard-curve model (xPONENT form); auto: the "
                         "export's software's own (xPONENT 5PL, Bio-Plex its printed 4PL/5PL, "
                         "MSD Discovery Workbench 4PL).")
    weights: Weights = Field("auto", description="Fit weighting: 1/y2 (xPONENT, MSD), 1/y, "
                             "power (Bio-Plex, 1/y^power), none; auto: the export's "
                             "software's.")
    power: float = Field(1.8, gt=0, description="Exponent of weights power (1/y^power).")
    replicate_means: Annotated[bool | None, Cli(flag="--replicate-means",
                                                secondary="--each-well")] = Field(
        None, description="Fit the mean Net MFI per standard level / every standard well; "
                          "unset: as the export's software (replicate means for MSD, each "
                          "well otherwise).")
    search: Literal["local", "global"] = Field(
        "local", description="local: vendor-compatible start; global: lowest cost over many "
                             "starts.")
    recovery_range: Annotated[tuple[float, float], Cli(flag="--recovery", separator=",",
                                                       metavar="LOW,HIGH")] = Field(
        (80.0, 120.0), description="Standard recovery (%) that counts towards LLOQ/ULOQ (a "
                                   "level must also have replicate CV <= max_cv).")
    max_cv: float = Field(20.0, gt=0, description="Replicate %CV above this is flagged "
                                                  "high_cv.")
    min_beads: int = Field(35, ge=0, description="Wells with fewer beads are flagged "
                                                 "low_beads.")
    drop_low_bead_standards: bool = Field(False, description="Leave standard wells with fewer "
                                                             "than min_beads beads out of the "
                                                             "fit.")
    lloq_policy: LloqPolicy = Field("keep", description="concentration_reported below the "
                                    "LLOQ: keep, LLOQ/2, LLOQ/sqrt(2) or NA.")
    bridging: Annotated[bool, Cli(skip="on when --bridging names the sample")] = Field(
        False, description="Normalise plates on a bridging control (on when bridging_sample "
                           "is given, unless set false).")
    bridging_sample: Annotated[str | None, Cli(flag="--bridging", metavar="SAMPLE")] = Field(
        None, description="Normalise plates on this bridging-control sample (its name).")
    drug_readouts: Annotated[tuple[str, ...], Cli(flag="--drug-readout")] = Field(
        ("IL-1RA",), description="Analytes that measure the study drug itself (repeatable on "
                                 "the command line).")

    @model_validator(mode="before")
    @classmethod
    def _bridging_from_sample(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("bridging_sample") and "bridging" not in data:
            return {**data, "bridging": True}
        return data

    @field_validator("recovery_range")
    @classmethod
    def _brackets_100(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 <= low < 100 < high:
            raise ValueError(f"recovery range {value} must bracket 100 %")
        return value

    @field_validator("power")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("power must be finite")
        return value

    @model_validator(mode="after")
    def _bridging_needs_sample(self) -> QuantifyOptions:
        if self.bridging and not self.bridging_sample:
            raise ValueError("bridging normalisation needs the bridging sample's name")
        return self


class CytokineOptions(QuantifyOptions):
    """The cytokines stage: reading the exports, then :class:`QuantifyOptions`."""

    repair: bool = Field(True, description="Repair known export defects (each repair logged); "
                                           "off: keep the file's expected concentrations even "
                                           "when they look corrupted.")

    def quantify_options(self) -> QuantifyOptions:
        """The :class:`QuantifyOptions` part."""
        return QuantifyOptions.merge(self)
