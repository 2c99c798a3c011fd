"""The compare stage: a study → period comparisons and their files.

Contract: :func:`compare_study` is the one function ``immunoprofile compare`` and
``immunoprofile run`` call; it runs :func:`~immunoprofile.study.compare.compare_periods` and, given
``out_dir``, writes the stage's folder (:class:`immunoprofile.layout.CompareOutputs`):
``comparisons.csv``, ``analysis_plan.json``, ``comparisons_notes.json`` and ``provenance.json``
(the study file's hash and every setting of the plan, defaults included, so the record is the
same whichever way the stage was started).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._options import takes_options
from .options import CompareOptions

if TYPE_CHECKING:
    import anndata as ad
    import pandas as pd

__all__ = ["CompareResult", "compare_study"]


@dataclass
class CompareResult:
    """What :func:`compare_study` produced.

    Attributes
    ----------
    table
        The comparisons (:func:`~immunoprofile.study.compare.compare_periods`).
    plan
        The analysis plan the rows follow.
    notes
        What the sample size allows, and the methods.
    settings
        Every setting of the comparison, defaults included.
    written
        Output name -> path (empty without ``out_dir``).
    """

    table: pd.DataFrame
    plan: dict[str, Any]
    notes: dict[str, Any]
    settings: dict[str, Any]
    written: dict[str, Path] = field(default_factory=dict)


@takes_options(CompareOptions)
def compare_study(study: ad.AnnData | str | os.PathLike[str],
                  options: CompareOptions | None = None, *,
                  out_dir: str | os.PathLike[str] | None = None, command: str | None = None,
                  **settings: Any) -> CompareResult:
    """Compare the protocol periods of a study and (with ``out_dir``) write the stage's files.

    Parameters
    ----------
    study
        A study AnnData, or its ``.h5ad`` file / ``.zarr`` folder
        (:func:`~immunoprofile.study.matrix.read_study`).
    options
        The tests and the analysis plan (:class:`~immunoprofile.study.options.CompareOptions`;
        its fields may also be given as keywords, below).
    out_dir
        When given, write ``comparisons.csv``, ``analysis_plan.json``,
        ``comparisons_notes.json`` and ``provenance.json`` there (created).
    command
        The command line, for provenance.
    **settings
        Only ``families`` (``{family: var query}``) of
        :func:`~immunoprofile.study.compare.compare_periods`, which no config or flag sets.

    Returns
    -------
    CompareResult

    Raises
    ------
    InputError
        When the study cannot be read or a setting does not fit it.
    """
    from .compare import _settings_defaults, compare_periods

    assert options is not None  # takes_options merged it
    source: Path | None = None
    if isinstance(study, (str, os.PathLike)):
        from .matrix import read_study

        source = Path(study)
        study = read_study(source)
    unknown = sorted(set(settings) - {"families"})
    if unknown:  # a typo must not fall back silently to a default
        raise TypeError(f"compare_study: unknown setting(s) {', '.join(unknown)}")
    settings = {**options.settings(), **settings}
    table = compare_periods(study, **settings)
    effective = json.loads(json.dumps({**_settings_defaults(), **settings}, default=str))
    result = CompareResult(table=table, plan=table.attrs.get("plan", {}),
                           notes=table.attrs.get("notes", {}), settings=effective)
    if out_dir is not None:
        result.written = _write(Path(out_dir), result, source=source, command=command)
    return result


def _write(out: Path, result: CompareResult, *, source: Path | None,
           command: str | None) -> dict[str, Path]:
    from .._io import write_csv_atomic, write_json_atomic
    from ..layout import CompareOutputs
    from ..provenance import build_provenance

    paths = CompareOutputs(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(paths.comparisons, result.table)
    write_json_atomic(paths.analysis_plan, result.plan)
    write_json_atomic(paths.notes, result.notes)
    write_json_atomic(paths.provenance, build_provenance(
        inputs=[source] if source is not None and source.is_file() else [],
        parameters=result.settings, command=command,
        extra={"notes": _plain(result.notes)}))
    return {"comparisons": paths.comparisons, "analysis_plan": paths.analysis_plan,
            "notes": paths.notes, "provenance": paths.provenance}


def _plain(value: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(value, default=str))
