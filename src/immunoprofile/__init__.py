"""immunoprofile: raw flow cytometry and multiplex cytokine files to trustworthy study matrices.

The public API is re-exported here lazily (heavy libraries load on first use, keeping the command
line fast). Stages are plain functions over plain data; see the README for the flow of data.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "ImmunoprofileError": "immunoprofile.errors",
    "InputError": "immunoprofile.errors",
    "build_provenance": "immunoprofile.provenance",
    "sha256_file": "immunoprofile.provenance",
    "ExecutorSpec": "immunoprofile.executors",
    "run_tasks": "immunoprofile.executors",
    "Strategy": "immunoprofile.flow.gates",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'immunoprofile' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
