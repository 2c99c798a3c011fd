"""Find and load the outputs of a run directory into one :class:`RunData` (no plotting here)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import InputError

__all__ = ["RunData", "collect_run"]


@dataclass
class RunData:
    """Everything the report shows, as plain tables; a missing stage is ``None``."""

    run_dir: Path
    populations: pd.DataFrame | None = None
    flow_provenance: dict[str, Any] = field(default_factory=dict)
    flow_failed: pd.DataFrame | None = None
    concentrations: pd.DataFrame | None = None
    curves: pd.DataFrame | None = None
    cytokine_failed: pd.DataFrame | None = None
    plate_acceptance: pd.DataFrame | None = None  # cytokines' plate_qc.csv
    study_path: Path | None = None
    comparisons: pd.DataFrame | None = None
    time_qc: pd.DataFrame | None = None
    other_failed: list[pd.DataFrame] = field(default_factory=list)


def _find(run_dir: Path, name: str) -> Path | None:
    """The shallowest file called ``name`` below ``run_dir`` (ties broken by path, for determinism)."""
    hits = sorted(run_dir.rglob(name), key=lambda p: (len(p.relative_to(run_dir).parts), str(p)))
    hits = [h for h in hits if "plots" not in h.relative_to(run_dir).parts]
    return hits[0] if hits else None


def _read_csv(path: Path | None, required: tuple[str, ...] = ()) -> pd.DataFrame | None:
    if path is None:
        return None
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read table ({exc})") from None
    # a hand-edited table without the columns the report uses is bad input, not a KeyError
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise InputError(path, f"table lacks column(s) {', '.join(missing)}")
    return table


def _read_failed(path: Path | None) -> pd.DataFrame | None:
    if path is None:
        return None
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("input\t"):
            continue
        item, _, reason = line.partition("\t")
        rows.append({"input": item, "reason": reason})
    return pd.DataFrame(rows, columns=["input", "reason"])


def collect_run(run_dir: str | Path) -> RunData:
    """Load the tidy outputs found under ``run_dir``.

    Raises
    ------
    InputError
        If ``run_dir`` does not exist or holds none of the known outputs.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise InputError(root, "run directory not found")
    data = RunData(run_dir=root)
    populations = _find(root, "populations.csv")
    data.populations = _read_csv(populations, ("sample_id", "population", "pct_parent"))
    if populations is not None:
        prov = populations.parent / "provenance.json"
        if prov.is_file():
            try:
                data.flow_provenance = json.loads(prov.read_text(encoding="utf-8"))
            except (ValueError, OSError) as exc:  # JSONDecodeError and UnicodeDecodeError
                raise InputError(prov, f"not readable JSON ({exc})") from None
        data.flow_failed = _read_failed(_maybe(populations.parent / "failed.tsv"))
        data.time_qc = _read_csv(_maybe(populations.parent / "time_qc.csv"),
                                 ("sample_id", "kind", "t_start", "t_end", "removed"))
    concentrations = _find(root, "concentrations.csv")
    data.concentrations = _read_csv(concentrations, ("sample_id", "plate", "analyte"))
    if concentrations is not None:
        data.curves = _read_csv(_maybe(concentrations.parent / "standard_curves.csv"))
        data.cytokine_failed = _read_failed(_maybe(concentrations.parent / "failed.tsv"))
        data.plate_acceptance = _read_csv(_maybe(concentrations.parent / "plate_qc.csv"),
                                          ("plate", "accepted"))
    data.study_path = _find(root, "study.h5ad")
    data.comparisons = _read_csv(_find(root, "comparisons.csv"))
    if all(x is None for x in (data.populations, data.concentrations, data.study_path,
                               data.comparisons)):
        raise InputError(root, "no immunoprofile outputs found (populations.csv, "
                               "concentrations.csv, study.h5ad or comparisons.csv)")
    return data


def _maybe(path: Path) -> Path | None:
    return path if path.is_file() else None
