"""Load the outputs of a run folder into one :class:`RunData` (no plotting here), reading each
stage's files where :class:`immunoprofile.layout.RunLayout` puts them."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import InputError
from ..layout import RunLayout

__all__ = ["RunData", "collect_run"]

log = logging.getLogger("immunoprofile.report")


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
    analysis_plan: dict[str, Any] = field(default_factory=dict)
    other_failed: list[pd.DataFrame] = field(default_factory=list)


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


def collect_run(run_dir: str | os.PathLike[str] | RunLayout) -> RunData:
    """Load the tidy outputs of a run folder, read where its
    :class:`~immunoprofile.layout.RunLayout` puts them.

    Parameters
    ----------
    run_dir
        A run folder (``immunoprofile run``, or stage commands given ``--out RUN/<stage>``), the
        output folder of one stage command, or a :class:`~immunoprofile.layout.RunLayout`
        naming each stage's folder (:meth:`~immunoprofile.layout.RunLayout.of_folder`).

    Raises
    ------
    InputError
        If the folder does not exist, or none of the stages' main files is where the layout
        puts it (the message names the expected paths).
    """
    layout = run_dir if isinstance(run_dir, RunLayout) else RunLayout.of_folder(run_dir)
    root = layout.root
    if not root.is_dir():
        raise InputError(root, "run directory not found")
    data = RunData(run_dir=root)
    flow, cyto = layout.flow, layout.cytokines
    data.populations = _read_csv(_maybe(flow.populations), ("sample_id", "population",
                                                           "pct_parent"))
    if data.populations is not None:
        if flow.provenance.is_file():
            data.flow_provenance = _read_json(flow.provenance)
        data.flow_failed = _read_failed(_maybe(flow.failed))
        data.time_qc = _read_csv(_maybe(flow.time_qc),
                                 ("sample_id", "kind", "t_start", "t_end", "removed"))
    data.concentrations = _read_csv(_maybe(cyto.concentrations), ("sample_id", "plate",
                                                                  "analyte"))
    if data.concentrations is not None:
        data.curves = _read_csv(_maybe(cyto.standard_curves))
        data.cytokine_failed = _read_failed(_maybe(cyto.failed))
        data.plate_acceptance = _read_csv(_maybe(cyto.plate_qc), ("plate", "accepted"))
    data.study_path = _maybe(layout.study.h5ad)
    data.comparisons = _read_csv(_maybe(layout.compare.comparisons))
    if data.comparisons is not None and layout.compare.analysis_plan.is_file():
        data.analysis_plan = _read_json(layout.compare.analysis_plan)
    found = {"flow": data.populations, "cytokines": data.concentrations,
             "study": data.study_path, "compare": data.comparisons}
    expected = {stage: layout.main_output(stage) for stage in found}
    if all(x is None for x in found.values()):
        raise InputError(root, "no immunoprofile outputs: expected " + ", ".join(
            _shown(p, root) for p in expected.values()))
    for stage, value in found.items():
        if value is None:
            log.info("report: %s not found; its section is left out", expected[stage])
    return data


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:  # JSONDecodeError and UnicodeDecodeError
        raise InputError(path, f"not readable JSON ({exc})") from None


def _maybe(path: Path) -> Path | None:
    return path if path.is_file() else None
