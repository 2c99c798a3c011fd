"""Write events as an FCS 3.1 file (float32, little-endian, list mode), atomically.

Contract: ``write_fcs(path, events, channels, markers, ...)`` produces one standard-conforming
FCS 3.1 data set that FlowJo, FlowKit/flowio and :func:`immunoprofile.flow.fcs.read_fcs` read back to the
same float32 values, channel names, markers and ``$SPILLOVER``. Output bytes depend only on the
arguments (no timestamps are added), so a seeded simulator writes byte-identical files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from immunoprofile._io import atomic_path
from immunoprofile.errors import InputError

__all__ = ["write_fcs", "format_spillover"]

_HEADER_LEN = 58  # "FCS3.1" + 4 spaces + 6 offsets of 8 characters
_MAX_HEADER_OFFSET = 99_999_999  # offsets above this go to TEXT only; HEADER carries 0
# The first of these that occurs in no keyword or value delimits TEXT. Escaping by doubling is
# legal but a value that starts or ends with the delimiter then looks like an (illegal) empty
# value to many readers, so a clash-free delimiter is preferred. Form feed is a last resort.
_DELIMITERS = ("|", "/", "\\", "!", "^", "~", "\x0c")
_CRC = b"00000000"  # FCS 3.1 §3.4: an uncomputed CRC is written as ASCII zeros
_DEFAULT_RANGE = 262144

# Keywords this writer derives from the data; a caller's ``text`` may not override them because a
# mismatch would make the file unreadable or lie about its layout.
_STRUCTURAL = {"$BEGINANALYSIS", "$ENDANALYSIS", "$BEGINSTEXT", "$ENDSTEXT", "$BEGINDATA",
               "$ENDDATA", "$BYTEORD", "$DATATYPE", "$MODE", "$NEXTDATA", "$PAR", "$TOT",
               "$SPILLOVER"}
_STRUCTURAL_PARAM = ("N", "S", "B", "E", "G", "DATATYPE")


def format_spillover(channels: Sequence[str], matrix: Any) -> str:
    """Format a spillover matrix as the FCS 3.1 ``$SPILLOVER`` value.

    Parameters
    ----------
    channels
        ``$PnN`` names of the matrix rows/columns, in order.
    matrix
        Square matrix; row *i* is how much of channel *i*'s dye appears in every detector.

    Returns
    -------
    str
        ``"n,ch1,...,chn,m11,m12,...,mnn"`` (row-major, shortest round-tripping float text).
    """
    values = np.asarray(matrix, dtype=np.float64)
    n = len(channels)
    if values.shape != (n, n):
        raise ValueError(f"spillover matrix shape {values.shape} does not match {n} channels")
    if not np.all(np.isfinite(values)):
        raise ValueError("spillover matrix contains non-finite values")
    # repr() of a Python float is the shortest text that round-trips exactly.
    numbers = [repr(float(v)) for v in values.ravel()]
    return ",".join([str(n), *channels, *numbers])


def write_fcs(path: str | os.PathLike[str], events: Any, channels: Sequence[str],
              markers: Sequence[str] | None = None, *, text: Mapping[str, Any] | None = None,
              spillover: Any = None, ranges: Sequence[float] | None = None) -> Path:
    """Write ``events`` as an FCS 3.1 file with float32 little-endian list-mode data.

    Parameters
    ----------
    path
        Destination; written through a temporary file and renamed into place.
    events
        ``n_events × n_channels`` array (converted to float32).
    channels
        ``$PnN`` names (unique, non-empty).
    markers
        ``$PnS`` names, one per channel; ``""`` or ``None`` leaves ``$PnS`` out (FCS 3.1 forbids
        empty keyword values).
    text
        Extra TEXT keywords (e.g. ``{"$DATE": "24-NOV-2026", "$CYT": "Simulated"}``). Keys are
        written as given (``$`` keywords upper-cased). Layout keywords (``$TOT``, ``$PAR``,
        ``$BEGINDATA``, ``$PnN``, ``$PnB`` ...) are derived from the data and may not be given;
        ``$PnR`` may be, to override the range.
    spillover
        A :class:`immunoprofile.flow.compensation.Spillover` (anything with ``channels`` and
        ``matrix``) or a ``(channels, matrix)`` pair; written as ``$SPILLOVER``. Its channels must
        be among ``channels``.
    ranges
        ``$PnR`` per channel; default 262144, or the ceiling of the channel's maximum if larger.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    InputError
        When the arguments cannot form a valid FCS file (shape mismatch, duplicate or empty
        channel names, a reserved keyword in ``text``, spillover channels not in the file).
    """
    dest = Path(path)
    data = np.asarray(events)
    if data.ndim != 2:
        raise InputError(dest, "events must be a 2-D array (events × channels), "
                               f"got {data.ndim}-D")
    n_events, n_par = data.shape
    channels = [str(c) for c in channels]
    markers_list = ["" if m is None else str(m)
                    for m in ([""] * n_par if markers is None else list(markers))]
    if len(channels) != n_par or len(markers_list) != n_par:
        raise InputError(dest, f"{n_par} event columns but {len(channels)} channel names and "
                               f"{len(markers_list)} markers")
    if any(not c.strip() for c in channels):
        raise InputError(dest, "channel names ($PnN) must be non-empty")
    if len(set(channels)) != n_par:
        dupes = sorted({c for c in channels if channels.count(c) > 1})
        raise InputError(dest, f"duplicate channel names ($PnN): {', '.join(dupes)}")
    # FCS 3.1 §3.2.18: $PnN must not contain commas (they separate names in $SPILLOVER).
    if any("," in c for c in channels):
        raise InputError(dest, "channel names ($PnN) must not contain commas")

    values = np.ascontiguousarray(data, dtype="<f4")
    if ranges is None:
        with np.errstate(invalid="ignore"):
            col_max = (np.nanmax(values, axis=0) if n_events else np.zeros(n_par))
        ranges = [max(_DEFAULT_RANGE, int(np.ceil(m))) if np.isfinite(m) else _DEFAULT_RANGE
                  for m in col_max]
    elif len(ranges) != n_par:
        raise InputError(dest, f"{len(ranges)} ranges for {n_par} channels")

    keywords: dict[str, str] = {
        "$BYTEORD": "1,2,3,4",
        "$DATATYPE": "F",
        "$MODE": "L",
        "$NEXTDATA": "0",
        "$PAR": str(n_par),
        "$TOT": str(n_events),
    }
    for i, (name, marker) in enumerate(zip(channels, markers_list, strict=True), start=1):
        keywords[f"$P{i}N"] = name
        if marker.strip():
            keywords[f"$P{i}S"] = marker
        keywords[f"$P{i}B"] = "32"
        keywords[f"$P{i}E"] = "0,0"
        keywords[f"$P{i}G"] = "1"
        keywords[f"$P{i}R"] = _format_number(ranges[i - 1])
    if spillover is not None:
        spill_channels, matrix = _unpack_spillover(spillover)
        missing = [c for c in spill_channels if c not in channels]
        if missing:
            raise InputError(dest, f"spillover channels not in the file: {', '.join(missing)}")
        try:
            keywords["$SPILLOVER"] = format_spillover(spill_channels, matrix)
        except ValueError as exc:
            raise InputError(dest, f"invalid spillover: {exc}") from exc
    for key, value in (text or {}).items():
        name = str(key).upper() if str(key).startswith("$") else str(key)
        if _is_structural(name, n_par):
            raise InputError(dest, f"keyword {name} is derived from the data and cannot be set")
        value_text = str(value)
        if not name.strip() or not value_text.strip():
            raise InputError(dest, f"keyword {name!r} has an empty name or value (FCS 3.1 §3.2)")
        keywords[name] = value_text

    text_bytes, data_start, data_end = _layout_text(keywords, values.nbytes)
    header = _header(_HEADER_LEN, _HEADER_LEN + len(text_bytes) - 1, data_start, data_end)
    with atomic_path(dest) as tmp, open(tmp, "wb") as handle:
        handle.write(header)
        handle.write(text_bytes)
        if values.nbytes:
            handle.write(memoryview(values).cast("B"))
        handle.write(_CRC)
    return dest


def _is_structural(name: str, n_par: int) -> bool:
    if name in _STRUCTURAL:
        return True
    if name.startswith("$P") and len(name) > 3:
        digits = "".join(ch for ch in name[2:] if ch.isdigit())
        suffix = name[2 + len(digits):]
        if digits and suffix in _STRUCTURAL_PARAM:
            return True
    return False


def _unpack_spillover(spillover: Any) -> tuple[list[str], np.ndarray]:
    if hasattr(spillover, "channels") and hasattr(spillover, "matrix"):
        return [str(c) for c in spillover.channels], np.asarray(spillover.matrix, dtype=float)
    spill_channels, matrix = spillover
    return [str(c) for c in spill_channels], np.asarray(matrix, dtype=float)


def _format_number(value: float) -> str:
    as_float = float(value)
    return str(int(as_float)) if as_float.is_integer() else repr(as_float)


def _choose_delimiter(keywords: Mapping[str, str]) -> str:
    used = "".join(f"{k}{v}" for k, v in keywords.items())
    return next((d for d in _DELIMITERS if d not in used), _DELIMITERS[0])


def _serialise(keywords: Mapping[str, str]) -> bytes:
    delimiter = _choose_delimiter(keywords)
    # FCS 3.1 §3.2.4: a delimiter inside a keyword or value is written twice (only reached when
    # every candidate delimiter occurs somewhere in TEXT).
    parts = [delimiter]
    for key, value in keywords.items():
        parts.append(key.replace(delimiter, delimiter * 2) + delimiter
                     + value.replace(delimiter, delimiter * 2) + delimiter)
    return "".join(parts).encode("utf-8")


def _layout_text(keywords: dict[str, str], n_data_bytes: int) -> tuple[bytes, int, int]:
    """Serialise TEXT with self-consistent $BEGINDATA/$ENDDATA (their digits change its length)."""
    data_start = data_end = 0
    fixed = dict(keywords)
    for _ in range(10):
        full = {"$BEGINANALYSIS": "0", "$ENDANALYSIS": "0", "$BEGINSTEXT": "0", "$ENDSTEXT": "0",
                "$BEGINDATA": str(data_start), "$ENDDATA": str(data_end), **fixed}
        text_bytes = _serialise(full)
        new_start = _HEADER_LEN + len(text_bytes)
        # An empty DATA segment is written as 0,0 (nothing to point at).
        new_end = new_start + n_data_bytes - 1 if n_data_bytes else 0
        new_start = new_start if n_data_bytes else 0
        if (new_start, new_end) == (data_start, data_end):
            return text_bytes, data_start, data_end
        data_start, data_end = new_start, new_end
    # Unreachable in practice: the digit counts settle within three rounds.
    raise RuntimeError("FCS TEXT layout did not converge")


def _header(text_start: int, text_end: int, data_start: int, data_end: int) -> bytes:
    """The 58-byte FCS 3.1 HEADER; DATA offsets beyond 99,999,999 are written as 0 (TEXT rules)."""
    if data_end > _MAX_HEADER_OFFSET:
        data_start = data_end = 0
    fields = [text_start, text_end, data_start, data_end, 0, 0]
    header = "FCS3.1    " + "".join(f"{value:>8d}" for value in fields)
    return header.encode("ascii")
