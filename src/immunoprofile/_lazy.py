"""Lazy namespaces: a package's public names, each imported from its module on first use.

``__getattr__, __dir__ = lazy_exports(__name__, {"name": "module", ...})`` in a package's
``__init__`` keeps ``import immunoprofile.flow`` (and the command line) free of numpy, pandas and
anndata until a name is used (PEP 562).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps each public name to the
    module that defines it: relative to the package (``"stage"``, ``"readers.standards"``) or
    absolute (``"immunoprofile.executors"``)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        target = module if module.startswith("immunoprofile.") else f".{module}"
        value = getattr(importlib.import_module(target, package), name)
        setattr(sys.modules[package], name, value)  # the next lookup is a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
