"""One exception family for everything immunoprofile raises on purpose.

Contract: anything a *user supplied* that is wrong (a file, a config value, an option) raises
:class:`InputError` naming the path and the reason in one line. The CLI maps
``InputError`` to exit code 2 (or to a ``failed.tsv`` row inside a batch); any other exception is a
bug and only shows a traceback with ``--debug``.
"""

from __future__ import annotations

import os

__all__ = ["ImmunoprofileError", "InputError"]


class ImmunoprofileError(Exception):
    """Base class of every error immunoprofile raises deliberately."""

    exit_code: int = 1


class InputError(ImmunoprofileError, ValueError):
    """A user-supplied input (file, config, option) is invalid.

    Parameters
    ----------
    path
        The file (or config key) at fault; ``None`` when there is no file.
    reason
        One line saying what is wrong, in the user's terms.
    """

    exit_code = 2

    def __init__(self, path: str | os.PathLike[str] | None, reason: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.reason = " ".join(str(reason).split())  # always one line
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason

    def __reduce__(self):  # survive pickling across process pools / Dask workers
        return (type(self), (self.path, self.reason))

