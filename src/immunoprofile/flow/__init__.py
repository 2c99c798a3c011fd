"""Flow cytometry: FCS files, compensation, transforms, gating strategies, the gate engine,
population statistics and time QC.

One file, stage by stage: :func:`read_fcs` → :func:`load_strategy` (Gating-ML, FlowJo or YAML) →
:func:`evaluate` → :func:`population_stats`; :func:`gate_sample` does all of it for one file.
Many files: :func:`gate_files` (the ``gate`` stage: process pool or Dask, one tidy table and one
AnnData; its options are :class:`GateOptions`). Spillover from single-stain controls:
:func:`estimate_spillover` (:class:`CompensateOptions`). Every name loads on first use.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    # files
    "read_fcs": "fcs", "read_fcs_metadata": "fcs", "FCSData": "fcs", "write_fcs": "fcs_write",
    # compensation
    "Spillover": "compensation", "compensate": "compensation",
    "read_compensation_csv": "compensation", "parse_spillover": "compensation",
    "resolve_compensation": "compensation", "CompensationSpec": "compensation",
    "estimate_spillover": "spillover_estimation",
    "write_spillover_outputs": "spillover_estimation",
    # transforms
    **dict.fromkeys(("LinearTransform", "LogTransform", "AsinhTransform", "HyperlogTransform",
                     "LogicleTransform", "FlowJoBiexTransform"), "transforms"),
    # strategies
    "Strategy": "gates", "load_strategy": "strategy",
    "read_gatingml": "gatingml", "write_gatingml": "gatingml",
    "read_flowjo_workspace": "flowjo", "FlowJoWorkspace": "flowjo",
    "read_yaml_strategy": "yaml_strategy", "write_yaml_strategy": "yaml_strategy",
    # gating and statistics
    "evaluate": "engine", "GatingResult": "engine", "population_stats": "stats",
    "time_qc": "timeqc",
    "gate_sample": "batch", "SampleGating": "batch", "write_gate_outputs": "batch",
    "gate_files": "stage", "GateFilesResult": "stage",
    # options
    "GateOptions": "options", "TimeQCOptions": "options", "CompensateOptions": "options",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
