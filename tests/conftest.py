"""Shared fixtures: paths to the real reference data and the bundled example trial."""

from __future__ import annotations

import os
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
