"""The gate stage as one function: many FCS files, one strategy -> one tidy table, one AnnData.

Contract: :func:`gate_files` gates every file with :func:`~immunoprofile.flow.batch.gate_sample`
through an executor (serial, process pool or Dask), returns a :class:`GateFilesResult` (the tidy
``populations.csv`` table, the ``flow.h5ad`` AnnData, the failures) and, given ``out_dir``, writes
the gate outputs with :func:`~immunoprofile.flow.batch.write_gate_outputs`. ``immunoprofile gate``
and the pipeline runner both call it, so their outputs are the same bytes; the runner adds only
its cache (``cache=``) and the per-file matrices of its compensation controls
(``compensation=`` a callable). :func:`pair_samples` is the one file -> sample id join.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._stage import StageOutcome
from ..errors import InputError
from .._options import takes_options
from ..executors import ExecutorSpec
from .options import GateOptions

if TYPE_CHECKING:  # pragma: no cover
    import anndata
    import pandas as pd

    from .._stage import ProgressFactory, TaskCache
    from .batch import SampleGating
    from .gates import Strategy

__all__ = ["GateFilesResult", "GateTask", "gate_files", "pair_samples"]

log = logging.getLogger("immunoprofile.gate")

_BUILTIN = ("fcs", "none")


@dataclass(frozen=True)
class GateTask:
    """Everything one file's gating needs (small, picklable: what crosses to a worker, and what
    a cache keys on)."""

    sample_id: str
    path: Path
    strategy: Any
    compensation: Any
    statistics: tuple[str, ...] | None
    time_qc: Any
    membership_path: Path | None = None
    fitted_gatingml_path: Path | None = None
    trace_chunk_path: Path | None = None


@dataclass(kw_only=True)
class GateFilesResult(StageOutcome):
    """What :func:`gate_files` produced (``failures``, ``written``, ``n_cached``: see
    :class:`~immunoprofile._stage.StageOutcome`).

    Attributes
    ----------
    samples
        One :class:`~immunoprofile.flow.batch.SampleGating` per gated file, sorted by sample id.
        With ``out_dir``, time-QC traces computed in this run went straight to
        ``time_qc.csv`` and are not kept (``time_qc_trace`` is ``None``; cached ones are a
        :class:`~immunoprofile.flow.batch.TraceChunk`), so memory does not grow with files.
    strategy
        The strategy used.
    """

    samples: list[SampleGating]
    strategy: Strategy

    @property
    def table(self) -> pd.DataFrame:
        """The tidy ``populations.csv`` table (one row per sample × population)."""
        from .batch import gate_outputs_frame

        return gate_outputs_frame(self.samples)

    @property
    def adata(self) -> anndata.AnnData:
        """The ``flow.h5ad`` AnnData (obs = samples, var = population × statistic)."""
        from .batch import gate_anndata

        return gate_anndata(self.samples, strategy=self.strategy, failures=self.failures)


def pair_samples(files: Sequence[str | os.PathLike[str]],
                 sample_ids: Mapping[str, str] | None = None) -> list[tuple[str, Path]]:
    """``(sample_id, path)`` of every file, sorted by sample id: the id is
    ``sample_ids[file name]`` (a manifest's mapping,
    :func:`~immunoprofile.flow.batch.sample_ids_from_manifest`), else the file stem.

    Raises
    ------
    InputError
        When two files get the same sample id.
    """
    mapping = sample_ids or {}
    seen: dict[str, Path] = {}
    for item in files:
        path = Path(item)
        sid = str(mapping.get(path.name, path.stem))
        if sid in seen:
            raise InputError(path, f"sample id {sid!r} is also the id of {seen[sid]}; rename a "
                                   "file or map ids in a manifest")
        seen[sid] = path
    return sorted(seen.items())


@takes_options(GateOptions)
def gate_files(
    files: Sequence[str | os.PathLike[str]],
    strategy: Strategy | str | os.PathLike[str],
    options: GateOptions | None = None,
    *,
    sample_ids: Mapping[str, str] | None = None,
    executor: ExecutorSpec | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    cache: TaskCache | None = None,
    progress: ProgressFactory | None = None,
    parameters: Mapping[str, Any] | None = None,
    command: str | None = None,
) -> GateFilesResult:
    """Gate many FCS files with one strategy into one table and one AnnData.

    Parameters
    ----------
    files
        FCS files (a folder stands for its ``*.fcs`` files). A file that cannot be read or gated
        is listed in ``failures``; the others go on.
    strategy
        A :class:`~immunoprofile.flow.gates.Strategy`, or a Gating-ML / FlowJo / YAML file.
    options
        The stage's options (:class:`~immunoprofile.flow.options.GateOptions`: compensation,
        group, statistics, time_qc, membership); each can also be given as a keyword, listed
        under Other Parameters. ``compensation`` may also be a callable ``path -> choice``
        choosing per file (an ``InputError`` it raises fails that file alone); ``time_qc``
        takes ``True``/``False`` or :class:`~immunoprofile.flow.options.TimeQCOptions`.
        ``membership`` needs ``out_dir``.
    sample_ids
        File name -> sample id (default: the file stem); see :func:`pair_samples`.
    executor
        Where tasks run (:class:`~immunoprofile.executors.ExecutorSpec`); ``None`` = serial.
    out_dir
        When given, write ``populations.csv``, ``flow.h5ad``, ``provenance.json``,
        ``failed.tsv`` (and ``time_qc.csv``, ``gate_positions.csv``, ``fitted_gates/``) there.
    cache
        Per-sample result store (:class:`immunoprofile._stage.TaskCache`) keyed on
        :class:`GateTask`.
    progress
        ``progress(total, description)`` context manager yielding ``advance()``.
    parameters
        Extra entries for the provenance ``parameters`` (the caller's own options).
    command
        The command line, for provenance.

    Returns
    -------
    GateFilesResult
    """
    from .._stage import run_stage_tasks
    from ..layout import COMPENSATION_BY_FILE_KEY, COMPENSATION_KEY, STRATEGY_KEY, TIME_QC_KEY
    from .batch import expand_fcs_inputs, write_gate_outputs
    from .strategy import load_strategy

    assert options is not None  # takes_options always gives one
    compensation, group, membership = options.compensation, options.group, options.membership
    wanted = tuple(options.statistics)
    time_qc = options.time_qc.options()
    if isinstance(compensation, str) and compensation == "controls":
        raise InputError(None, "compensation 'controls' is computed by a pipeline from its "
                               "compensation_controls; here give fcs, none or a matrix file "
                               "(immunoprofile compensate writes one)")
    strategy_path = None
    if not hasattr(strategy, "gates"):
        strategy_path = Path(strategy).resolve()
        if not strategy_path.is_file():
            raise InputError(strategy, "strategy file not found")
        strategy = load_strategy(strategy_path, group=group)
    if membership and out_dir is None:
        raise ValueError("membership=True writes Parquet files: give out_dir")
    choose = compensation if callable(compensation) else None
    fixed = None if choose is not None else _check_compensation(compensation)
    paths = [p for item in files
             for p in (expand_fcs_inputs([item]) if Path(item).is_dir() else [Path(item)])]
    pairs = pair_samples(paths, sample_ids)
    out = None if out_dir is None else Path(out_dir)
    spec = executor or ExecutorSpec("serial")
    # Each sample's time-QC traces are written as time_qc.csv lines where it is gated (a local
    # worker sees out_dir) and dropped from memory; `.*.tmp` names: a killed run's are cleaned.
    spill = (f".time_qc.{uuid.uuid4().hex[:12]}" if out is not None and time_qc
             and spec.effective_kind(len(pairs)) in ("serial", "process") else None)
    if spill is not None:
        out.mkdir(parents=True, exist_ok=True)

    samples: dict[str, SampleGating] = {}
    failures: list[tuple[str, str]] = []
    tasks: list[tuple[str, GateTask]] = []
    matrix_of_file: dict[str, str] = {}
    for sid, path in pairs:
        sample_comp = fixed
        if choose is not None:
            try:
                sample_comp = _check_compensation(choose(path))
            except InputError as exc:
                failures.append((str(path), str(exc)))
                continue
            matrix_of_file[path.name] = str(sample_comp)
        task = GateTask(
            sample_id=sid, path=path, strategy=strategy, compensation=sample_comp,
            statistics=wanted, time_qc=time_qc or None,
            membership_path=out / "membership" / f"{sid}.parquet" if membership else None,
            # data-driven gates: each sample's fitted gates as fixed Gating-ML (replayable)
            fitted_gatingml_path=(out / "fitted_gates" / f"{sid}.gatingml.xml"
                                  if out is not None and strategy.fits else None),
            trace_chunk_path=(None if spill is None
                              else out / f"{spill}.{len(tasks) + len(samples):06d}.tmp"))
        hit = None if cache is None or not path.is_file() else cache.get(task)
        if hit is not None and all(p is None or p.is_file() for p in
                                   (task.membership_path, task.fitted_gatingml_path)):
            samples[sid] = hit
        else:
            tasks.append((sid, task))
    n_cached = len(samples)
    log.info("gate: %d FCS file(s), %d from the cache, %d to compute (%s, %d job(s))",
             len(pairs), n_cached, len(tasks), spec.effective_kind(len(tasks)), spec.jobs)
    outcomes = run_stage_tasks(_gate_one, tasks, executor=spec, cache=cache, progress=progress,
                               description="gating", log=log)
    path_of = dict(pairs)
    for outcome in outcomes:
        if outcome.ok:
            samples[outcome.key] = outcome.value
        else:
            failures.append((str(path_of[outcome.key]), outcome.error or "failed"))
    result = GateFilesResult(samples=[samples[s] for s in sorted(samples)],
                             failures=sorted(failures), strategy=strategy, n_cached=n_cached)
    if out is None:
        return result
    matrices = {Path(str(c)) for c in
                ([fixed] if choose is None else matrix_of_file.values())
                if isinstance(c, (str, os.PathLike)) and str(c) not in _BUILTIN}
    params = {STRATEGY_KEY: None if strategy_path is None else str(strategy_path),
              COMPENSATION_KEY: (compensation if isinstance(compensation, str)
                                 else "per file" if choose is not None else str(compensation)),
              "group": group, "membership": membership, "statistics": list(wanted),
              TIME_QC_KEY: None if not time_qc else time_qc.to_dict(),
              **({COMPENSATION_BY_FILE_KEY: dict(sorted(matrix_of_file.items()))}
                 if matrix_of_file else {}),
              **dict(parameters or {})}
    try:
        result.written = write_gate_outputs(
            out, result.samples, result.failures, strategy=strategy, parameters=params,
            inputs=[*(p for _, p in pairs if p.is_file()),
                    *([strategy_path] if strategy_path is not None else []), *sorted(matrices)],
            command=command)
    finally:
        if spill is not None:
            _drop_trace_chunks(result.samples, out, spill)
    return result


def _drop_trace_chunks(samples: list[SampleGating], out: Path, spill: str) -> None:
    """Remove this run's trace chunk files (those in cache entries stay, and stay referenced)."""
    import contextlib

    from .batch import TraceChunk

    for sample in samples:
        trace = sample.time_qc_trace
        if isinstance(trace, TraceChunk) and trace.path.parent == out \
                and trace.path.name.startswith(spill):
            sample.time_qc_trace = None
    for path in out.glob(f"{spill}.*.tmp"):
        with contextlib.suppress(OSError):
            path.unlink()


def _check_compensation(choice: Any) -> Any:
    """A compensation choice as a task takes it: ``"fcs"``/``"none"``, a ``Spillover``, or a
    matrix file's absolute path (a missing or unreadable matrix is an InputError here)."""
    if isinstance(choice, str) and choice.lower() in _BUILTIN:
        return choice.lower()
    if not isinstance(choice, (str, os.PathLike)):
        return choice  # an already-parsed Spillover
    from .compensation import read_compensation_csv

    if not Path(choice).is_file():
        raise InputError(choice, "compensation matrix file not found "
                                 "(--comp takes fcs, none or a matrix file)")
    read_compensation_csv(choice)  # a bad matrix stops the batch now, not once per file
    return str(Path(choice).resolve())


def _gate_one(task: GateTask) -> SampleGating:
    """One :class:`GateTask` through :func:`~immunoprofile.flow.batch.gate_sample` (the
    executors' task function)."""
    from .batch import gate_sample, write_trace_chunk

    sample = gate_sample(task.path, task.strategy, compensation=task.compensation,
                         sample_id=task.sample_id, membership_path=task.membership_path,
                         statistics=task.statistics, time_qc=task.time_qc,
                         fitted_gatingml_path=task.fitted_gatingml_path)
    if task.trace_chunk_path is not None:
        sample = write_trace_chunk(sample, task.trace_chunk_path)
    return sample
