"""The example-trial simulator behind ``example_data/``.

Contract: :func:`simulate_trial` writes a complete, deterministic study folder (FCS files, cytokine
plate exports, standards, clinical table, manifest, gating strategy and the truth behind every
number) from one seed; the per-assay generators live in :mod:`.flow`, :mod:`.plates` and
:mod:`.clinical`. Run it as ``python -m immunoprofile.simulate OUT_DIR [--seed N] [--events N]``.
"""

from __future__ import annotations

from .trial import DEFAULT_SEED, simulate_trial, trial_design

__all__ = ["simulate_trial", "trial_design", "DEFAULT_SEED"]
