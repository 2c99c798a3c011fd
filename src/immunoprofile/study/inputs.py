"""Loaders of the stage output folders that a study is assembled from.

Contract: :func:`load_flow_results` reads the output folder of ``immunoprofile gate``
(``populations.csv``, and beside it ``provenance.json`` and the strategy stored in ``flow.h5ad``);
:func:`load_cytokine_results` reads the output folder of ``immunoprofile cytokines``
(``concentrations.csv``, and beside it ``standard_curves.csv`` and ``provenance.json``). Each
returns the tables plus what the join needs from the provenance, as a plain dataclass that
:func:`~immunoprofile.study.matrix.assemble` accepts in place of a bare DataFrame. Nothing here
joins or transforms.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..layout import CytokineOutputs, GateOutputs

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["FlowResults", "CytokineResults", "load_flow_results", "load_cytokine_results"]


@dataclass
class FlowResults:
    """Flow statistics to assemble: the tidy ``populations.csv`` table and its context.

    Attributes
    ----------
    table
        One row per sample × population (``sample_id``, ``population``, optionally ``file``,
        ``parent`` and the statistic columns ``count``, ``pct_parent``, ``pct_total``,
        ``mfi_<marker>``, ``gmean_<marker>``, ``rcv_<marker>``).
    provenance_json
        The gate step's ``provenance.json`` text ("" when unknown), kept in the study's ``uns``.
    strategy_json
        The gating strategy as JSON ("" when unknown), kept in the study's ``uns``.
    source
        The file the table came from (``None`` for an in-memory table); names it in errors.
    inputs
        Files read (recorded in the study's provenance).
    """

    table: pd.DataFrame
    provenance_json: str = ""
    strategy_json: str = ""
    source: Path | None = None
    inputs: tuple[Path, ...] = ()


@dataclass
class CytokineResults:
    """Cytokine concentrations to assemble: ``concentrations.csv`` and its context.

    Attributes
    ----------
    concentrations
        One row per well × analyte (``sample_id``, ``analyte``, and as available ``plate``,
        ``well``, ``concentration``, ``concentration_reported``, ``unit``, ``dilution``,
        ``flag``, ``sample_type``, ``bridging_factor``).
    standard_curves
        The per-plate curves table with ``plate, analyte, lloq`` (sets the censoring level);
        ``None`` when unknown.
    plate_files
        Plate name -> the export file(s) it was read from (joins manifest ``file`` columns).
    bridging_sample
        The bridging control's sample name when the plates were normalised on one.
    provenance_json
        The cytokine step's ``provenance.json`` text ("" when unknown).
    source
        The file the concentrations came from (``None`` for an in-memory table).
    inputs
        Files read (recorded in the study's provenance).
    """

    concentrations: pd.DataFrame
    standard_curves: pd.DataFrame | None = None
    plate_files: dict[str, list[str]] = field(default_factory=dict)
    bridging_sample: str | None = None
    provenance_json: str = ""
    source: Path | None = None
    inputs: tuple[Path, ...] = ()


def load_flow_results(folder: str | os.PathLike[str]) -> FlowResults:
    """Read the output folder of ``immunoprofile gate`` (or its ``populations.csv``).

    Raises
    ------
    InputError
        When there is no ``populations.csv`` or it lacks ``sample_id``/``population``.
    """
    path = _find(folder, GateOutputs.populations.name)
    table = read_table(path, ("sample_id", "population"))
    beside = GateOutputs(path.parent)  # the gate stage's folder, named as the stage writes it
    return FlowResults(table=table, provenance_json=_text(beside.provenance),
                       strategy_json=_flow_strategy_json(beside.h5ad),
                       source=path, inputs=(path,))


def load_cytokine_results(folder: str | os.PathLike[str]) -> CytokineResults:
    """Read the output folder of ``immunoprofile cytokines`` (or its ``concentrations.csv``).

    Raises
    ------
    InputError
        When there is no ``concentrations.csv`` or it lacks ``sample_id``/``analyte``.
    """
    path = _find(folder, CytokineOutputs.concentrations.name)
    conc = read_table(path, ("sample_id", "analyte"))
    beside = CytokineOutputs(path.parent)  # the cytokine stage's folder, as the stage writes it
    inputs = [path]
    curves = None
    curves_path = beside.standard_curves
    if curves_path.is_file():
        inputs.append(curves_path)
        curves = read_table(curves_path, ())
    prov_text = _text(beside.provenance)
    try:
        prov = json.loads(prov_text) if prov_text else {}
    except ValueError:
        prov = {}
    prov = prov if isinstance(prov, dict) else {}
    return CytokineResults(concentrations=conc, standard_curves=curves,
                           plate_files=_plate_files(prov), bridging_sample=_bridging_sample(prov),
                           provenance_json=prov_text, source=path, inputs=tuple(inputs))


def _find(base: str | os.PathLike[str], name: str) -> Path:
    """``base`` itself when it is the file, else ``base/name``; InputError when neither exists."""
    p = Path(base)
    if p.is_file():
        return p
    if (p / name).is_file():
        return p / name
    raise InputError(p, f"no {name} here (expected the output folder of the previous step)")


def read_table(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """A CSV with the ``required`` columns; InputError naming the file otherwise."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, keep_default_na=True, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not a readable CSV: {exc}") from exc
    return require_columns(frame, required, path)


def require_columns(frame: pd.DataFrame, required: tuple[str, ...],
                    where: str | os.PathLike[str]) -> pd.DataFrame:
    """``frame`` itself when it has the ``required`` columns; InputError naming ``where`` else."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(where, f"missing column(s) {', '.join(missing)}")
    return frame


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def _plate_files(prov: dict[str, Any]) -> dict[str, list[str]]:
    """Plate name → the export file(s) it came from (``immunoprofile cytokines``' provenance)."""
    plates = prov.get("plates", [])
    out: dict[str, list[str]] = {}
    for entry in plates if isinstance(plates, list) else []:
        if not isinstance(entry, dict):
            continue
        for name in entry.get("plates", []) or []:
            out.setdefault(str(name), []).append(str(entry.get("path", "")))
    return out


def _bridging_sample(prov: dict[str, Any]) -> str | None:
    """The bridging control's name when the cytokine step normalised on one."""
    params = prov.get("parameters", {})
    if not isinstance(params, dict):
        return None
    return str(params["bridging_sample"]) if params.get("bridging") and params.get("bridging_sample") \
        else None


def _flow_strategy_json(path: Path) -> str:
    """The gating strategy ``immunoprofile gate`` stored in flow.h5ad (empty when absent)."""
    if not path.is_file():
        return ""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            value = handle["uns/immunoprofile/strategy_json"][()]
    except (OSError, KeyError):
        return ""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
