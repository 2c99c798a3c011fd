"""Flow cytometry: FCS reading, compensation, transforms, gating strategies, the gate engine and
population statistics. Each module is one stage; see ``immunoprofile.flow.gates`` for the shared
strategy model. :func:`gate_files` gates many files into one tidy table and one AnnData (the
``gate`` stage, loaded on first use)."""

from __future__ import annotations

from typing import Any

__all__ = ["gate_files", "GateFilesResult"]


def __getattr__(name: str) -> Any:
    if name in __all__:  # lazily: importing a flow submodule must stay light
        from . import stage

        return getattr(stage, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
