"""The options of the flow stages, one model each (see :mod:`immunoprofile._options`).

:class:`GateOptions` (the ``gate`` stage: :func:`immunoprofile.flow.gate_files`, ``immunoprofile
gate``, the config's ``flow:`` section), :class:`TimeQCOptions` (:func:`~immunoprofile.flow.
timeqc.time_qc`'s thresholds; ``flow.time_qc`` in a config) and :class:`CompensateOptions`
(:func:`~immunoprofile.flow.spillover_estimation.estimate_spillover`, ``immunoprofile
compensate``, a config's ``compensation_controls`` sets). Light on purpose (pydantic only): the
commands build their flags from these models before any numerical library loads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, Field, ValidationInfo, WithJsonSchema

from .._options import Cli, StageOptions, resolve_path

__all__ = ["STATISTICS", "Statistic", "TimeQCOptions", "TimeQCSetting", "GateOptions",
           "CompensateOptions"]

#: A marker statistic per population: median (the MFI), gmean (geometric mean of the positive
#: values), rcv (robust CV).
Statistic = Literal["median", "gmean", "rcv"]
#: Every statistic, in column order (:func:`immunoprofile.flow.stats.population_stats`).
STATISTICS: tuple[str, ...] = get_args(Statistic)


class TimeQCOptions(StageOptions):
    """Acquisition QC over time (the rule is in :mod:`immunoprofile.flow.timeqc`)."""

    events_per_bin: int = Field(40, ge=10, description="Mean events per rate bin.")
    rate_k: float = Field(5.0, gt=0, description="Robust SDs a bin's event count may depart "
                                                 "from the median.")
    signal_events_per_bin: int = Field(250, ge=50, description="Events per signal chunk.")
    signal_k: float = Field(5.0, gt=0, description="Robust SDs a chunk's signal level or "
                                                   "spread may depart.")
    min_shift: float = Field(0.15, ge=0, description="Smallest signal departure that counts "
                                                     "(asinh units).")
    min_good_bins: int = Field(3, ge=0, description="Good stretches shorter than this (rate "
                                                    "bins) between flagged ones are removed.")
    grow_k: float = Field(2.0, gt=0, description="A flagged stretch grows into neighbouring "
                                                 "bins departing the same way by more robust "
                                                 "SDs than this.")
    gap_fraction: float = Field(0.25, ge=0, lt=1, description="Bins below this fraction of the "
                                                             "median event count are gaps "
                                                             "(clogs).")
    max_removed_pct: float = Field(10.0, ge=0, le=100, description="A file losing more is "
                                                                  "flagged in the QC table.")
    channels: tuple[str, ...] | None = Field(None, description="QC channels; none = every "
                                                               "channel but Time.")


def _switch(value: Any) -> Any:
    """``time_qc`` as given to :func:`~immunoprofile.flow.gate_files`: ``None``/``False`` (off),
    ``True`` (on, default thresholds), a :class:`TimeQCOptions` (on, those), or the config's
    mapping ``{enabled: ..., <thresholds>}``."""
    if value is None or isinstance(value, bool):
        return {"enabled": bool(value)}
    if isinstance(value, TimeQCOptions) and not isinstance(value, TimeQCSetting):
        return {"enabled": True, **{k: getattr(value, k) for k in value.model_fields_set}}
    return value


class TimeQCSetting(TimeQCOptions):
    """Time QC on or off, with its thresholds."""

    enabled: bool = Field(False, description="Remove bad stretches along Time (clogs, surges, "
                                             "drift) as the root gate TimeQC.")

    def options(self) -> TimeQCOptions | None:
        """The thresholds (``None`` when off)."""
        if not self.enabled:
            return None
        return TimeQCOptions(**{k: getattr(self, k) for k in TimeQCOptions.model_fields})


_BUILTIN = {"fcs": "fcs", "file": "fcs", "none": "none", "controls": "controls"}


def _compensation(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        if value.strip().lower() in _BUILTIN:
            return _BUILTIN[value.strip().lower()]
        if (info.context or {}).get("base_dir") is not None:  # in a config: relative to it
            return str(resolve_path(value, info))
        return value
    if isinstance(value, os.PathLike) or callable(value) or hasattr(value, "channels"):
        return value  # a path, a per-file chooser (the runner's controls) or a Spillover
    raise ValueError("compensation is fcs, none, a matrix file, a Spillover or a callable")


#: fcs | none | a matrix file (CSV: FlowJo layout, or $SPILLOVER text) | a Spillover | a
#: callable ``path -> one of those`` choosing per file.
Compensation = Annotated[Any, BeforeValidator(_compensation),
                         WithJsonSchema({"type": "string"})]


class GateOptions(StageOptions):
    """The gate stage: compensation, statistics, time QC, what to write."""

    compensation: Annotated[Compensation, Cli(flag="--comp", metavar="fcs|none|PATH")] = Field(
        "fcs", description="fcs (the file's own spillover), none, or a matrix CSV path (in a "
                           "config, relative to it; there also controls: computed from "
                           "compensation_controls).")
    group: str | None = Field(None, description="FlowJo sample group (workspaces only).")
    statistics: Annotated[tuple[Statistic, ...], Cli(separator=",")] = Field(
        STATISTICS, min_length=1,
        description="Marker statistics per population (comma-separated on the command line): "
                    "median (MFI), gmean (geometric mean of positive values), rcv (robust CV).")
    time_qc: Annotated[TimeQCSetting, BeforeValidator(_switch),
                       Cli(help="Remove bad stretches of acquisition (clogs, surges, drift) "
                                "found along Time as a root gate TimeQC (thresholds: "
                                "flow.time_qc in a config).")] = Field(
        default_factory=TimeQCSetting, description="Time QC: on/off (True/False) and its "
                                                   "thresholds (TimeQCOptions).")
    membership: bool = Field(False, description="Also write membership/<sample_id>.parquet (one "
                                                "boolean column per population).")


class CompensateOptions(StageOptions):
    """How a spillover matrix is computed from single-stain controls."""

    population: str | None = Field(None, description="Population of the pre-gate strategy "
                                                      "holding the events to use (default: its "
                                                      "last one).")
    method: Literal["regression", "median"] = Field(
        "regression", description="regression: robust slope of each detector on the primary "
                                  "over positive events; median: CytoExploreR's median "
                                  "differences against the unstained.")
    positive_quantile: float = Field(0.995, gt=0.5, lt=1.0, description="Unstained quantile of "
                                     "the primary channel above which events are positive.")
