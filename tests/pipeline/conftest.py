"""Fixtures for pipeline tests (helpers live in ``trialdata.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trialdata import make_trial


@pytest.fixture
def tiny_trial(tmp_path: Path) -> Path:
    """Config of a 3-subject × 2-visit trial (6 FCS files of 3000 events)."""
    return make_trial(tmp_path / "trial")
