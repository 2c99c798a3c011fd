"""Run per-sample tasks serially, in a local process pool, or on a Dask cluster.

Contract: ``for outcome in run_tasks(fn, tasks, spec=...)`` calls ``fn(*args)`` once per
``(key, args)`` task and yields a :class:`TaskOutcome` per task *in task order*, whatever order the
workers finished in, so results never depend on the executor or on ``--jobs``. A task that raises
does not stop the others: its outcome carries the one-line error instead of a value. ``fn`` must be
a module-level function and its arguments/results small and picklable (paths, parameters, tables;
never per-event arrays).
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import ImmunoprofileError, InputError

__all__ = ["ExecutorSpec", "TaskOutcome", "run_tasks", "describe_error"]

ExecutorKind = Literal["serial", "process", "dask"]


@dataclass(frozen=True)
class ExecutorSpec:
    """How to run tasks.

    Parameters
    ----------
    kind
        ``"serial"`` (in this process), ``"process"`` (local process pool, the default) or
        ``"dask"`` (Dask distributed).
    jobs
        Worker processes for ``"process"`` and for a Dask ``LocalCluster``; 1 means serial.
    address
        Scheduler address (``tcp://host:8786``) for ``"dask"``; ``None`` starts a local cluster.
    """

    kind: ExecutorKind = "process"
    jobs: int = 1
    address: str | None = None

    def effective_kind(self, n_tasks: int) -> ExecutorKind:
        """The kind actually used: a pool of one worker, or a single task, runs serially."""
        if self.kind == "process" and (self.jobs <= 1 or n_tasks <= 1):
            return "serial"
        return self.kind


@dataclass
class TaskOutcome:
    """The result of one task: ``value`` on success, ``error`` (one line) on failure."""

    key: str
    value: Any = None
    error: str | None = None
    details: str | None = field(default=None, repr=False)  # traceback, for --debug logs

    @property
    def ok(self) -> bool:
        return self.error is None


def describe_error(exc: BaseException) -> str:
    """One line for a failure: user-input problems as they are, anything else marked internal."""
    if isinstance(exc, ImmunoprofileError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory while processing this input"
    return f"internal error ({type(exc).__name__}: {' '.join(str(exc).split())})"


def _call(fn: Callable[..., Any], key: str, args: tuple) -> TaskOutcome:
    try:
        return TaskOutcome(key, value=fn(*args))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - a batch reports every failure and goes on
        details = None if isinstance(exc, InputError) else traceback.format_exc()
        return TaskOutcome(key, error=describe_error(exc), details=details)


def _pin_blas_threads() -> None:
    # Two workers on two cores: each must stay single-threaded or OpenBLAS thrashes.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def run_tasks(
    fn: Callable[..., Any],
    tasks: Sequence[tuple[str, tuple]],
    *,
    spec: ExecutorSpec = ExecutorSpec(),
    on_done: Callable[[TaskOutcome], None] | None = None,
) -> list[TaskOutcome]:
    """Run ``fn(*args)`` for every ``(key, args)`` in ``tasks``.

    Parameters
    ----------
    fn
        A module-level (picklable) function.
    tasks
        ``(key, args)`` pairs; keys must be unique.
    spec
        Which executor to use.
    on_done
        Called in the parent with each outcome as it completes (progress bars, logs).

    Returns
    -------
    list of TaskOutcome
        One per task, in the order of ``tasks``.
    """
    keys = [key for key, _ in tasks]
    if len(set(keys)) != len(keys):
        raise ValueError("task keys must be unique")
    done: dict[str, TaskOutcome] = {}
    for outcome in _iter_outcomes(fn, tasks, spec):
        done[outcome.key] = outcome
        if on_done is not None:
            on_done(outcome)
    return [done[key] for key in keys]


def _iter_outcomes(fn, tasks, spec: ExecutorSpec) -> Iterator[TaskOutcome]:
    kind = spec.effective_kind(len(tasks))
    if kind == "serial":
        for key, args in tasks:
            yield _call(fn, key, args)
    elif kind == "process":
        yield from _process_pool(fn, tasks, spec.jobs)
    elif kind == "dask":
        yield from _dask(fn, tasks, spec)
    else:  # pragma: no cover - guarded by the Literal type and config validation
        raise ValueError(f"unknown executor kind {spec.kind!r}")


def _process_pool(fn, tasks, jobs: int) -> Iterator[TaskOutcome]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    _pin_blas_threads()
    # spawn: no inherited threads or locks (rich's refresh thread, BLAS pools) in the workers.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=context) as pool:
        futures = {pool.submit(_call, fn, key, args): key for key, args in tasks}
        for future in as_completed(futures):
            try:
                yield future.result()
            except BaseException as exc:  # noqa: BLE001 - a worker died (killed, OOM)
                yield TaskOutcome(futures[future], error=describe_error(exc))


def _dask(fn, tasks, spec: ExecutorSpec) -> Iterator[TaskOutcome]:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError as exc:  # an optional extra: say how to get it, not a bare traceback
        raise ImmunoprofileError(
            "the Dask executor needs the 'dask' extra: pip install 'immunoprofile[dask]' "
            f"({exc})") from exc

    _pin_blas_threads()
    cluster = None
    if spec.address:
        client = Client(spec.address)
    else:
        cluster = LocalCluster(n_workers=max(spec.jobs, 1), threads_per_worker=1, processes=True,
                               dashboard_address=None, host="127.0.0.1")
        client = Client(cluster)
    try:
        futures = [client.submit(_call, fn, key, args, key=f"immunoprofile-{i}-{key}", pure=False)
                   for i, (key, args) in enumerate(tasks)]
        key_of = {f.key: key for f, (key, _) in zip(futures, tasks)}
        for future in as_completed(futures):
            try:
                yield future.result()
            except BaseException as exc:  # noqa: BLE001 - a worker died
                yield TaskOutcome(key_of[future.key], error=describe_error(exc))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
