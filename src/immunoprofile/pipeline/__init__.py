"""Batch runs from a config: :mod:`.config` (validated YAML), :mod:`.cache` (content-addressed
per-sample results), :mod:`.runner` (gate → cytokines → assemble → compare → report) and
:mod:`.validate` (check a config and its inputs without computing). :class:`ExecutorSpec` says
where a stage's per-file tasks run (serial, process pool, Dask), here and in
``flow.gate_files``/``cytokine.quantify_files``. Every name loads on first use."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "load_config": "config", "PipelineConfig": "config", "ConfigError": "config",
    "config_json_schema": "config",
    "run_pipeline": "runner", "RunSummary": "runner",
    "validate_config": "validate",
    "ExecutorSpec": "immunoprofile.executors",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
