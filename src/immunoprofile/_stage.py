"""What the batch stages (:func:`immunoprofile.flow.gate_files`,
:func:`immunoprofile.cytokine.quantify_files`) share: running per-input tasks through an executor
with an optional per-task cache and a progress bar.

The cache is the caller's (the pipeline runner keys it by content); a stage only asks it for a
task's result before running the task and hands it every result as soon as it arrives, so a run
killed half-way keeps what is done.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .executors import ExecutorSpec, TaskOutcome, run_tasks

__all__ = ["TaskCache", "ProgressFactory", "StageOutcome", "no_progress", "run_stage_tasks"]

#: ``progress(total, description)`` -> context manager yielding ``advance()``.
ProgressFactory = Callable[[int, str], contextlib.AbstractContextManager[Callable[[], None]]]


@dataclass(kw_only=True)
class StageOutcome:
    """What every batch stage returns besides its results.

    Attributes
    ----------
    failures
        ``(input, reason)`` of every input that could not be processed (the others went on).
    written
        Output name -> path (empty when no ``out_dir`` was given).
    n_cached
        Inputs whose result came from the cache.
    """

    failures: list[tuple[str, str]] = field(default_factory=list)
    written: dict[str, Path] = field(default_factory=dict)
    n_cached: int = 0


class TaskCache(Protocol):
    """A per-task result store: ``get(task)`` (``None`` when absent) and ``put(task, value)``.

    A store may also offer ``writer(task)``: a small picklable callable ``store(value)`` that
    stores the task's result where it is computed. On this machine's executors (serial, local
    process pool) the worker then writes its own entry, so the parent process does not spend
    its time serialising every result a second time.
    """

    def get(self, task: Any) -> Any | None: ...

    def put(self, task: Any, value: Any) -> None: ...


@contextlib.contextmanager
def no_progress(total: int, description: str) -> Iterator[Callable[[], None]]:
    """The silent :data:`ProgressFactory`."""
    yield lambda: None


def run_stage_tasks(fn: Callable[..., Any], tasks: Sequence[tuple[str, Any]], *,
                    executor: ExecutorSpec | None, cache: TaskCache | None,
                    progress: ProgressFactory | None, description: str,
                    log: logging.Logger) -> list[TaskOutcome]:
    """Run ``fn(task)`` for every ``(key, task)`` through ``executor`` (serial when ``None``),
    logging each failure (traceback at debug level) and storing each success in ``cache``.

    Returns
    -------
    list of TaskOutcome
        In task order.
    """
    spec = executor if executor is not None else ExecutorSpec("serial")
    by_key = dict(tasks)
    writer = getattr(cache, "writer", None)
    # Remote (Dask) workers may not see this machine's cache folder: the parent stores theirs.
    in_worker = writer is not None and spec.effective_kind(len(tasks)) in ("serial", "process")
    with (progress or no_progress)(len(tasks), description) as advance:
        def on_done(outcome: TaskOutcome) -> None:
            if outcome.ok:
                if cache is not None and not in_worker:
                    cache.put(by_key[outcome.key], outcome.value)
            else:
                log.warning("%s: %s", outcome.key, outcome.error)
                if outcome.details:
                    log.debug(outcome.details)
            advance()

        if not tasks:
            return []
        if in_worker:
            return run_tasks(_compute_and_store,
                             [(key, (fn, writer(task), task)) for key, task in tasks],
                             spec=spec, on_done=on_done)
        return run_tasks(fn, [(key, (task,)) for key, task in tasks], spec=spec,
                         on_done=on_done)


def _compute_and_store(fn: Callable[[Any], Any], store: Callable[[Any], None],
                       task: Any) -> Any:
    """``fn(task)``, stored by ``store`` before it is returned (the task function of a cached
    stage whose workers write their own cache entries)."""
    value = fn(task)
    store(value)
    return value
