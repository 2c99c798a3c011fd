"""The cytokine stage as one function: plate exports in, quantified plates (and outputs) out.

Contract: :func:`quantify_files` reads every plate export through an executor (serial, process
pool or Dask), fits and quantifies it (:func:`~immunoprofile.cytokine.quantify.quantify_plate`;
with bridging, :func:`~immunoprofile.cytokine.quantify.quantify_plates` over all of them once
they are read), returns a :class:`QuantifyFilesResult` (concentrations table, ``cytokines.h5ad``
AnnData, failures) and, given ``out_dir``, writes the outputs with
:func:`~immunoprofile.cytokine.quantify.write_cytokine_outputs`. ``immunoprofile cytokines``
and the pipeline runner both call it; the runner adds only its cache (``cache=``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._stage import StageOutcome
from ..errors import InputError
from .._options import takes_options
from ..executors import ExecutorSpec
from .options import CytokineOptions, QuantifyOptions

if TYPE_CHECKING:  # pragma: no cover
    import anndata
    import pandas as pd

    from .._stage import ProgressFactory, TaskCache
    from .quantify import PlateResult

__all__ = ["PlateTask", "QuantifyFilesResult", "quantify_files"]

log = logging.getLogger("immunoprofile.cytokines")


@dataclass(frozen=True)
class PlateTask:
    """One plate export's work (small, picklable; what a cache keys on). ``options=None``: only
    read the plate (bridging quantifies all plates together afterwards)."""

    path: Path
    layout: Path | None
    standards: Path | None
    standards_table: Any
    repair: bool
    options: Any


@dataclass(kw_only=True)
class QuantifyFilesResult(StageOutcome):
    """What :func:`quantify_files` produced (``failures``, ``written``, ``n_cached``: see
    :class:`~immunoprofile._stage.StageOutcome`).

    Attributes
    ----------
    results
        One :class:`~immunoprofile.cytokine.quantify.PlateResult` per export read, input order.
    options
        The options used.
    """

    results: list[PlateResult]
    options: QuantifyOptions

    @property
    def concentrations(self) -> pd.DataFrame:
        """The tidy ``concentrations.csv`` table (one row per well × analyte)."""
        import pandas as pd

        from .quantify import CONCENTRATION_COLUMNS

        frames = [r.concentrations for r in self.results]
        if not frames:
            return pd.DataFrame(columns=list(CONCENTRATION_COLUMNS))
        return pd.concat(frames, ignore_index=True).loc[:, list(CONCENTRATION_COLUMNS)]

    @property
    def adata(self) -> anndata.AnnData:
        """The ``cytokines.h5ad`` AnnData (samples × analytes)."""
        from .quantify import to_anndata

        return to_anndata(self.results, options=self.options)


@takes_options(CytokineOptions)
def quantify_files(
    files: Sequence[str | os.PathLike[str]],
    options: CytokineOptions | QuantifyOptions | None = None,
    *,
    layout: str | os.PathLike[str] | None = None,
    standards: str | os.PathLike[str] | None = None,
    executor: ExecutorSpec | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    cache: TaskCache | None = None,
    progress: ProgressFactory | None = None,
    command: str | None = None,
) -> QuantifyFilesResult:
    """Read, fit and quantify many plate exports.

    Parameters
    ----------
    files
        Plate exports (xPONENT, Bio-Plex, MSD, ...); a folder stands for its plate exports. An
        export that cannot be read is listed in ``failures``; the others go on.
    options
        The stage's options (:class:`~immunoprofile.cytokine.options.CytokineOptions`: curve,
        QC and reading options; a :class:`~immunoprofile.cytokine.options.QuantifyOptions` is
        taken as is); each can also be given as a keyword, listed under Other Parameters.
    layout
        Plate layout CSV applied to every plate (read once: a bad one is an InputError).
    standards
        Kit standards table (read once: a bad one is an InputError).
    executor
        Where tasks run (:class:`~immunoprofile.executors.ExecutorSpec`); ``None`` = serial.
    out_dir
        When given, write ``concentrations.csv``, ``standard_curves.csv``, ``summary.csv``,
        ``standard_levels.csv``, ``plate_qc.csv``, ``cytokines.h5ad``, ``provenance.json``,
        ``failed.tsv`` (and ``vendor_comparison.csv``) there.
    cache
        Per-export result store keyed on :class:`PlateTask` (not used with bridging, which
        normalises plates on each other).
    progress
        ``progress(total, description)`` context manager yielding ``advance()``.
    command
        The command line, for provenance.

    Returns
    -------
    QuantifyFilesResult
    """
    from .._stage import run_stage_tasks
    from .quantify import quantify_plates, write_cytokine_outputs
    from .readers import expand_plate_paths

    assert isinstance(options, CytokineOptions)  # takes_options always gives one
    repair = options.repair
    options = options.quantify_options()
    plate_files = expand_plate_paths(files)
    if not plate_files:
        raise InputError(files[0] if files else None, "no plate exports in the folder(s) given")
    layout_path = None if layout is None else Path(layout).resolve()
    standards_path = None if standards is None else Path(standards).resolve()
    for given, what in ((layout, "layout"), (standards, "standards table")):
        if given is not None and not Path(given).is_file():
            raise InputError(given, f"{what} file not found")
    if layout_path is not None:  # one layout for every plate: a bad one is a usage error
        from .readers.layout import read_layout

        read_layout(layout_path)
    table = None
    if standards_path is not None:  # read once; a bad table is a usage error for every plate
        from .readers.standards import describe_columns, read_standards

        table = read_standards(standards_path)
        log.info("%s: %s", standards_path.name, describe_columns(table))
    # bridging normalises plates on each other: tasks only read, all are quantified together
    bridging = bool(options.bridging)
    store = None if bridging else cache
    cached: dict[str, PlateResult] = {}
    tasks: list[tuple[str, PlateTask]] = []
    for path in plate_files:
        task = PlateTask(path=path, layout=layout_path, standards=standards_path,
                         standards_table=table, repair=repair,
                         options=None if bridging else options)
        hit = store.get(task) if store is not None and path.is_file() else None
        if hit is not None:
            cached[str(path)] = hit
        else:
            tasks.append((str(path), task))
    log.info("cytokines: %d plate export(s), %d from the cache: model %s, weights %s",
             len(plate_files), len(cached), options.model, options.weights)
    outcomes = {o.key: o for o in run_stage_tasks(
        _quantify_one, tasks, executor=executor, cache=store, progress=progress,
        description="plates", log=log)}
    results = [cached[str(p)] if str(p) in cached else outcomes[str(p)].value
               for p in plate_files if str(p) in cached or outcomes[str(p)].ok]
    failures = [(key, o.error or "failed") for key, o in outcomes.items() if not o.ok]
    if bridging and results:
        results = quantify_plates(results, options)
    for r in results:
        for message in r.warnings:
            log.warning("%s: %s", Path(r.path).name, message)
    result = QuantifyFilesResult(results=results, failures=failures, options=options,
                                 n_cached=len(cached))
    if out_dir is None:
        return result
    result.written = write_cytokine_outputs(
        out_dir, results, failures,
        parameters=options.to_dict() | {"repair": repair, "layout": _s(layout_path),
                                        "standards": _s(standards_path)},
        inputs=[*plate_files, *(p for p in (layout_path, standards_path) if p is not None)],
        options=options, command=command)
    return result


def _s(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _quantify_one(task: PlateTask) -> Any:
    """Read one export and quantify it (only read it when ``task.options`` is ``None``): the
    executors' task function."""
    from .quantify import quantify_plate
    from .readers import read_plate

    plate = read_plate(task.path, layout=task.layout,
                       standards=task.standards_table if task.standards_table is not None
                       else task.standards, repair=task.repair)
    return plate if task.options is None else quantify_plate(plate, options=task.options)
