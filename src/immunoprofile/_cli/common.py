"""Shared command-line plumbing: verbosity, error-to-exit-code mapping, progress, logs.

Every command is decorated with :func:`common_options` and wraps its body in
:func:`handle_errors`, so the contract is the same everywhere: one line per error on stderr,
exit 0 (all good) / 1 (some samples failed, listed) / 2 (usage or invalid input), and a traceback
only with ``--debug``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from ..errors import ImmunoprofileError, InputError

__all__ = ["common_options", "handle_errors", "progress", "setup_logging", "echo_err", "Verbosity"]

log = logging.getLogger("immunoprofile")


class Verbosity:
    """The -v/-q/--debug choice of one invocation."""

    def __init__(self, verbose: int = 0, quiet: bool = False, debug: bool = False) -> None:
        self.verbose, self.quiet, self.debug = verbose, quiet, debug

    @property
    def level(self) -> int:
        if self.debug or self.verbose >= 2:
            return logging.DEBUG
        if self.quiet:
            return logging.WARNING
        return logging.INFO


def common_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``-v/--verbose``, ``-q/--quiet`` and ``--debug``; pass ``verbosity`` to the command."""

    @click.option("-v", "--verbose", count=True, help="More detail (-vv for debug logs).")
    @click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
    @click.option("--debug", is_flag=True, help="Show tracebacks for unexpected errors.")
    @functools.wraps(fn)
    def wrapper(*args: Any, verbose: int, quiet: bool, debug: bool, **kwargs: Any) -> Any:
        verbosity = Verbosity(verbose, quiet, debug)
        setup_logging(verbosity)
        with handle_errors(verbosity):
            return fn(*args, verbosity=verbosity, **kwargs)

    return wrapper


def echo_err(message: str) -> None:
    """One line on stderr."""
    click.echo(" ".join(message.split()), err=True)


@contextlib.contextmanager
def handle_errors(verbosity: Verbosity | None = None) -> Iterator[None]:
    """Map exceptions to one-line messages and exit codes (2 input, 1 failed samples/bugs)."""
    debug = bool(verbosity and verbosity.debug)
    try:
        yield
    except (click.exceptions.Exit, click.Abort, click.ClickException):
        raise
    except InputError as exc:
        if debug:  # the traceback helps, but the exit code must not depend on --debug
            traceback.print_exc()
        echo_err(f"error: {exc}")
        for line in getattr(exc, "detail_lines", ()):  # e.g. every manifest problem, one per line
            echo_err(f"  {line}")
        sys.exit(2)
    except ImmunoprofileError as exc:
        if debug:
            traceback.print_exc()
        echo_err(f"error: {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        echo_err("interrupted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no bare traceback
        if debug:
            raise
        echo_err(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        sys.exit(1)


def setup_logging(verbosity: Verbosity, log_file: str | Path | None = None) -> None:
    """Log to stderr through rich (plain when not a terminal) and optionally to a plain file."""
    from rich.console import Console
    from rich.logging import RichHandler

    root = logging.getLogger("immunoprofile")
    root.setLevel(logging.DEBUG)
    for handler in list(root.handlers):
        if getattr(handler, "_immunoprofile", False):
            root.removeHandler(handler)
    console = Console(stderr=True)
    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(console=console, show_time=False, show_path=False,
                              rich_tracebacks=verbosity.debug, markup=False)
    else:
        # plain, one line per record: rich would wrap and pad piped logs at 80 columns
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.setLevel(verbosity.level)
    handler._immunoprofile = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    if log_file is not None:
        add_log_file(log_file)
    root.propagate = False


def add_log_file(path: str | Path) -> None:
    """Also write plain, timestamped logs to ``path`` (next to the outputs), creating it (and its
    folder) at the first record, so a command stopped by bad input leaves nothing behind."""
    handler = _LazyFileHandler(path)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._immunoprofile = True  # type: ignore[attr-defined]
    logging.getLogger("immunoprofile").addHandler(handler)


class _LazyFileHandler(logging.FileHandler):
    def __init__(self, path: str | Path) -> None:
        super().__init__(path, mode="a", encoding="utf-8", delay=True)

    def _open(self):  # type: ignore[no-untyped-def]
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


@contextlib.contextmanager
def progress(total: int, description: str, *, quiet: bool = False) -> Iterator[Callable[[], None]]:
    """A rich progress bar on a terminal; yields ``advance()``. Silent when quiet or not a TTY."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        yield lambda: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                  transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)
