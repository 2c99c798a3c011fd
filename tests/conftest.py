"""Shared fixtures: paths to the real reference data and the bundled example trial."""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path

import pytest

# Keep BLAS single-threaded in tests: 2 cores, and parallel tests must not thrash.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("IMMUNOPROFILE_REFERENCE",
                                    PROJECT_ROOT.parent / "shared" / "reference"))
EXAMPLE_DIR = PROJECT_ROOT / "example_data"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``../shared/reference`` (real public data and oracles); skipped only where it is absent."""
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"reference data folder not found at {REFERENCE_DIR}")
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def example_dir() -> Path:
    """The bundled example trial under ``example_data/``."""
    return EXAMPLE_DIR


# Independent implementations the suite compares against. FlowKit caps pandas below 3, so they live in
# the `oracles` extra and one of `make test`'s two environments (the oldest supported stack); the other
# (newest Python, pandas 3, anndata >= 0.13) runs everything else with `-m "not oracle"`.
_ORACLE_IMPORT = re.compile(
    r"(?:^|\s)(?:import|from)\s+(?:flowkit|flowio|flowutils)\b"
    r"|importorskip\(\s*[\"'](?:flowkit|flowio|flowutils)", re.MULTILINE)


def _oracle_helpers(module: object) -> set[str]:
    """Names of a test module's own functions that import an oracle library."""
    names = set()
    for name, value in vars(module).items():
        if inspect.isfunction(value) and value.__module__ == getattr(module, "__name__", None):
            try:
                if _ORACLE_IMPORT.search(inspect.getsource(value)):
                    names.add(name)
            except (OSError, TypeError):
                continue
    return names


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``oracle`` every test that imports an oracle library itself or through a helper."""
    helpers_of: dict[str, set[str]] = {}
    for item in items:
        function = getattr(item, "function", None)
        module = getattr(item, "module", None)
        if function is None or module is None:
            continue
        try:
            source = inspect.getsource(function)
        except (OSError, TypeError):
            continue
        helpers = helpers_of.setdefault(module.__name__, _oracle_helpers(module))
        if _ORACLE_IMPORT.search(source) or any(
                re.search(rf"\b{re.escape(name)}\(", source) for name in helpers - {function.__name__}):
            item.add_marker(pytest.mark.oracle)
