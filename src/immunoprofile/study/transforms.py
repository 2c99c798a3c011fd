"""The study's value transforms: analysis scales, the cytokine censoring level, flag merging.

Contract: pure functions of arrays and tables (no I/O). The conventions (logit of frequencies,
asinh of MFIs, log10 of counts and concentrations, one left-censoring level per analyte) are
described in :mod:`immunoprofile.study.matrix` and stored in ``uns["immunoprofile"]["transforms"]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..schema import canonical_flags

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

__all__ = ["MFI_COFACTOR", "FREQUENCY_CLIP_PCT", "combine_flags", "censor_levels", "transform"]

MFI_COFACTOR = 150.0
FREQUENCY_CLIP_PCT = 0.01


def combine_flags(flags: pd.Series) -> str:
    """The flags of replicate wells as one ``;``-joined set in the schema's bit order (``ok``
    only when nothing else)."""
    return canonical_flags(flags.dropna().astype(str))


_BELOW = ("below_curve", "<LLOQ")  # flags that censor a value without a number


def censor_levels(clong: pd.DataFrame, curves: pd.DataFrame) -> dict[str, float]:
    """Per cytokine feature: the highest sample LLOQ (plate LLOQ × dilution × bridging factor)
    among the plates holding the study's samples — one censoring level per analyte."""
    import numpy as np
    import pandas as pd

    if not {"plate", "analyte", "lloq"} <= set(curves.columns) or not len(clong):
        return {}
    lloq = curves.assign(plate=curves["plate"].astype(str), analyte=curves["analyte"].astype(str),
                         lloq=pd.to_numeric(curves["lloq"], errors="coerce"))
    rows = clong.merge(lloq[["plate", "analyte", "lloq"]], on=["plate", "analyte"], how="left")
    rows["sample_lloq"] = rows["lloq"] * rows["dilution"] * rows["bridging_factor"]
    highest = rows.groupby("feature")["sample_lloq"].max()
    return {f: float(v) for f, v in highest.items() if np.isfinite(v) and v > 0}


def transform(raw: np.ndarray, var: pd.DataFrame, flag_text: np.ndarray,
              levels: dict[str, float] | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The transformed layer, the per-feature censoring level (concentration units; NaN except
    concentrations) and the censored mask.

    A concentration below its analyte's censoring level (``levels``: the highest sample LLOQ among
    the plates involved), or flagged below the curve / LLOQ with no number, is left-censored: the
    censored mask says so and the transformed layer holds log10(level) — one level per analyte, so
    rank tests see every censored value tied below every quantified one. Without a known LLOQ
    the level is half the smallest positive value and only flagged values are censored.
    """
    import numpy as np

    levels = levels or {}
    censored = np.zeros(raw.shape, dtype=bool)
    out = np.full_like(raw, np.nan, dtype=float)
    floors = np.full(raw.shape[1], np.nan)
    for j, ftype in enumerate(var["feature_type"].to_numpy()):
        x = raw[:, j]
        if ftype == "frequency":
            p = np.clip(x / 100.0, FREQUENCY_CLIP_PCT / 100.0, 1 - FREQUENCY_CLIP_PCT / 100.0)
            out[:, j] = np.log(p / (1 - p))
        elif ftype == "mfi":
            out[:, j] = np.arcsinh(x / MFI_COFACTOR)
        elif ftype == "count":
            out[:, j] = np.log10(np.clip(x, 0, None) + 1.0)
        elif ftype == "concentration":
            positive = x[np.isfinite(x) & (x > 0)]
            flags = flag_text[:, j]
            below = np.array([any(b in f for b in _BELOW) for f in flags], dtype=bool)
            level = levels.get(str(var.index[j]), np.nan)
            with np.errstate(invalid="ignore"):
                if np.isfinite(level) and level > 0:
                    cens = (np.isfinite(x) & (x < level)) | (np.isnan(x) & below)
                else:
                    level = float(positive.min() / 2.0) if positive.size else 1e-3
                    cens = below | (np.isfinite(x) & (x < level))
                col = np.log10(np.where(x > 0, x, np.nan))
            top = float(positive.max() * 2.0) if positive.size else np.nan
            floors[j] = level
            col[cens] = np.log10(level)
            censored[:, j] = cens
            above = np.isnan(x) & np.array(["above_curve" in f or ">ULOQ" in f for f in flags], dtype=bool)
            if np.isfinite(top):
                col[above] = np.log10(top)
            out[:, j] = col
    return out, floors, censored
