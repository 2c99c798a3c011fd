"""Read FCS 2.0, 3.0, 3.1 and 3.2 files into one C-contiguous event matrix.

Contract: :func:`read_fcs` returns an :class:`FCSData` whose ``events`` hold every parameter in
``$PnN`` order with ``$PnG`` gain and ``$PnE`` log amplification applied; anything repaired while
reading (offsets taken from TEXT, off-by-one ends) is listed in ``FCSData.warnings``; a file that
cannot be read correctly raises :class:`~immunoprofile.errors.InputError` naming the file and the
reason -- never a MemoryError from a header that lies about its size.

Parser notes (the *why* behind the choices)
-------------------------------------------
- Written on numpy alone: flowio cannot read 24-bit integers, blank HEADER offsets or FCS 3.2
  ``$PnDATATYPE``. Uniform layouts are read with one ``readinto`` plus at most one ``astype``
  pass (as fast as ``np.fromfile``); mixed widths, 24-bit integers and odd byte orders go
  through a per-column vectorised byte assembly.
- Integers narrower than whole bytes (``$PnB`` 9, 10, 12, ..., FCS 2.0/3.0) are one packed
  little-endian bit stream, least significant bit first, whatever ``$BYTEORD`` says: the order
  the FACScan files of the FlowJo tutorial use (checked against FlowJo's own Lymphocytes count;
  see :func:`_packed`). ``$DATATYPE A`` is read fixed-width (``$PnB`` characters) or delimited
  (``$PnB *``).
- Supplemental TEXT offsets that are empty, equal to the primary TEXT's, or impossible (inside
  the HEADER/primary TEXT, past the end) are ignored, the impossible ones with a warning.
- Integer data are masked with ``next_power_of_two($PnR) - 1`` when that is below ``2**$PnB`` (FCS
  3.1 §3.3.32), as flowio/FlowKit do.
- ``$PnE f1,f2`` with ``f1 > 0`` gives ``10**(f1 * x / $PnR) * f2`` (``f2 == 0`` is read as 1, as
  the standard says); it applies to integer parameters only (float data are linear by definition).
- ``$PnG`` gain divides the value (FlowKit/flowio convention, needed by the Gating-ML compliance
  data). A channel named ``Time`` gets no gain; it is multiplied by ``$TIMESTEP`` instead, again as
  FlowKit does, so that event values agree with FlowKit/FlowJo workspaces.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from .compensation import Spillover, parse_spillover

__all__ = ["FCSData", "FCSMetadata", "read_fcs", "read_fcs_metadata", "describe_fcs",
           "SPILLOVER_KEYWORDS", "KEY_KEYWORDS"]

#: TEXT keywords that may hold the acquisition spillover matrix, in order of preference.
SPILLOVER_KEYWORDS = ("$SPILLOVER", "SPILLOVER", "$SPILL", "SPILL")

#: Keywords a scientist looks at first (shown by ``immunoprofile inspect`` when present).
KEY_KEYWORDS = ("$DATE", "$BTIM", "$ETIM", "$CYT", "$CYTSN", "$SRC", "$FIL", "$OP", "$INST",
                "$SYS", "$PROJ", "$EXP", "$SMNO", "$COM", "$TIMESTEP", "$MODE", "$BYTEORD",
                "CREATOR", "EXPERIMENT NAME", "TUBE NAME", "$VOL", "$ABRT", "$LOST")

_HEADER_LEN = 58
_MAX_DATASETS = 10_000
_VERSIONS = ("FCS2.0", "FCS3.0", "FCS3.1", "FCS3.2")


class _ChannelLookup:
    """Shared ``channel_index`` for :class:`FCSData` and :class:`FCSMetadata`."""

    path: str
    channels: list[str]
    markers: list[str]

    def channel_index(self, name_or_marker: str) -> int:
        """Column index of a channel (``$PnN`` first, then a unique ``$PnS`` marker).

        Parameters
        ----------
        name_or_marker
            A channel name such as ``"FL1-H"`` or a marker such as ``"CD4"``.

        Returns
        -------
        int
            Zero-based column of ``events``.

        Raises
        ------
        InputError
            When the name matches no channel or marker, or matches several markers.
        """
        hits = [i for i, c in enumerate(self.channels) if c == name_or_marker]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise InputError(self.path,
                             f"channel name {name_or_marker!r} appears {len(hits)} times")
        hits = [i for i, m in enumerate(self.markers) if m and m == name_or_marker]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            names = ", ".join(self.channels[i] for i in hits)
            raise InputError(self.path,
                             f"marker {name_or_marker!r} is ambiguous: on channels {names}")
        # Last resort: case-insensitive, but only when unambiguous.
        low = name_or_marker.casefold()
        hits = sorted({i for i, c in enumerate(self.channels) if c.casefold() == low}
                      | {i for i, m in enumerate(self.markers) if m and m.casefold() == low})
        if len(hits) == 1:
            return hits[0]
        raise InputError(self.path, f"no channel or marker named {name_or_marker!r} "
                                    f"(channels: {', '.join(self.channels)})")


@dataclass
class FCSMetadata(_ChannelLookup):
    """HEADER and TEXT of one data set, without events (see :func:`read_fcs_metadata`)."""

    path: str
    version: str
    text: dict[str, str]
    channels: list[str]
    markers: list[str]
    ranges: list[float]
    datatype: str
    spillover: Spillover | None
    warnings: list[str]
    n_datasets: int
    n_events: int
    dataset: int = 0


@dataclass
class FCSData(_ChannelLookup):
    """One FCS data set: keywords, channels and the event matrix.

    Attributes
    ----------
    path
        The file read.
    version
        ``"FCS2.0"``, ``"FCS3.0"``, ``"FCS3.1"`` or ``"FCS3.2"``.
    text
        Every TEXT (and supplemental TEXT) keyword; keys upper-cased (``"$P1N"``), values as
        written.
    channels, markers
        ``$PnN`` and ``$PnS`` per column (``""`` when a marker is absent).
    events
        ``n_events × n_channels``, C-contiguous, gain/log amplification/time step applied.
    ranges
        ``$PnR`` per column (NaN when missing or unreadable).
    datatype
        ``$DATATYPE`` (``"I"``, ``"F"``, ``"D"``, ``"A"``); ``"mixed"`` for FCS 3.2 mixed
        ``$PnDATATYPE``.
    spillover
        The acquisition spillover from ``$SPILLOVER``/``$SPILL``/``SPILL``, or ``None``.
    warnings
        One sentence per repair made while reading.
    n_datasets
        Number of data sets chained by ``$NEXTDATA``.
    sha256
        Hex SHA-256 of the whole file, from the same bytes the events were decoded from
        (``read_fcs(..., sha256=True)``); ``None`` when not asked for.
    """

    path: str
    version: str
    text: dict[str, str]
    channels: list[str]
    markers: list[str]
    events: np.ndarray
    ranges: list[float]
    datatype: str
    spillover: Spillover | None
    warnings: list[str] = field(default_factory=list)
    n_datasets: int = 1
    dataset: int = 0
    sha256: str | None = None

    @property
    def n_events(self) -> int:
        """Number of events (rows of ``events``)."""
        return int(self.events.shape[0])

    @property
    def n_channels(self) -> int:
        """Number of parameters (columns of ``events``)."""
        return int(self.events.shape[1])


# --------------------------------------------------------------------------------------------
# HEADER and TEXT
# --------------------------------------------------------------------------------------------

@dataclass
class _Header:
    version: str
    text_start: int
    text_end: int
    data_start: int | None  # None = blank field
    data_end: int | None


@dataclass
class _Dataset:
    """Parsed HEADER+TEXT of one data set and where it starts in the file."""

    base: int
    header: _Header
    text: dict[str, str]
    warnings: list[str]


def _header_int(path: str, raw: bytes, what: str) -> int | None:
    s = raw.decode("latin-1").strip()
    if not s:
        return None
    if not s.isdigit():
        raise InputError(path, f"HEADER {what} offset {s!r} is not a number")
    return int(s)


def _parse_header(path: str, buf: _File, base: int) -> _Header:
    if len(buf) - base < _HEADER_LEN:
        if base == 0:
            raise InputError(path, f"not an FCS file: only {len(buf)} bytes, shorter than an "
                                   "FCS HEADER")
        raise InputError(path, f"$NEXTDATA points to offset {base}, past the end of the file")
    head = bytes(buf[base:base + _HEADER_LEN])
    version = head[:6].decode("latin-1")
    if not version.startswith("FCS"):
        where = "" if base == 0 else f" at $NEXTDATA offset {base}"
        raise InputError(path, f"not an FCS file{where}: it does not start with 'FCS'")
    text_start = _header_int(path, head[10:18], "TEXT start")
    text_end = _header_int(path, head[18:26], "TEXT end")
    if text_start is None or text_end is None:
        raise InputError(path, "HEADER has no TEXT segment offsets")
    return _Header(version, text_start, text_end, _header_int(path, head[26:34], "DATA start"),
                   _header_int(path, head[34:42], "DATA end"))


def _split_text(raw: str, *, escaped: bool = True) -> tuple[list[str], bool]:
    """Split a TEXT segment on its delimiter (its first character).

    With ``escaped`` (FCS 3.x rule) a doubled delimiter is a literal character; without it every
    delimiter ends a token (FCS 2.0 writers used ``//`` for an empty value). Returns the tokens and
    whether the segment ended without a closing delimiter.
    """
    delim = raw[0]
    body = raw[1:]
    if not escaped:
        parts = body.split(delim)
        unterminated = parts[-1] != ""
        return (parts if unterminated else parts[:-1]), unterminated
    tokens: list[str] = []
    cur: list[str] = []
    pos = 0
    # Runs of the delimiter: an even run is escaped text, an odd run ends a token
    # (after the escaped pairs it contains).
    for m in re.finditer(re.escape(delim) + "+", body):
        cur.append(body[pos:m.start()])
        n = m.end() - m.start()
        cur.append(delim * (n // 2))
        if n % 2:
            tokens.append("".join(cur))
            cur = []
        pos = m.end()
    tail = body[pos:] if pos < len(body) else ""
    unterminated = bool(cur) or bool(tail)
    if unterminated:
        cur.append(tail)
        tokens.append("".join(cur))
    return tokens, unterminated


def _suspicious(tokens: list[str], delim: str) -> bool:
    """An escaped split that leaves a delimiter inside a keyword or an odd count went wrong."""
    return len(tokens) % 2 == 1 or any(delim in k for k in tokens[0::2])


def _parse_text(path: str, raw_bytes: bytes, what: str, warnings: list[str]) -> dict[str, str]:
    if not raw_bytes:
        raise InputError(path, f"{what} segment is empty")
    try:
        raw = raw_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raw = raw_bytes.decode("latin-1")  # FCS 2.0/3.0 allow any 8-bit text
    if len(raw) < 2:
        raise InputError(path, f"{what} segment is too short to hold any keyword")
    delim = raw[0]
    # Writers pad the segment after the closing delimiter with blanks or NULs.
    stripped = raw[0] + raw[1:].rstrip(" \x00\r\n") if delim not in " \x00\r\n" else raw
    if len(stripped) >= 2:
        raw = stripped
    tokens, unterminated = _split_text(raw)
    if _suspicious(tokens, delim) and delim * 2 in raw[1:]:
        plain, plain_unterminated = _split_text(raw, escaped=False)
        if not _suspicious(plain, delim):
            warnings.append(f"{what} has empty keyword values written as doubled delimiters; "
                            "read them as empty")
            tokens, unterminated = plain, plain_unterminated
    if unterminated:
        warnings.append(f"{what} segment does not end with its delimiter")
    if len(tokens) % 2:
        # A dangling keyword without a value: drop it, say so.
        last = tokens.pop()
        if last.strip():
            warnings.append(f"{what} keyword {last[:40]!r} has no value; ignored")
    text: dict[str, str] = {}
    for key, value in zip(tokens[0::2], tokens[1::2]):
        k = key.strip().upper()
        if not k:
            continue
        if k in text and text[k] != value:
            warnings.append(f"{what} keyword {k} appears twice; the first value is kept")
            continue
        text[k] = value
    return text


def _read_dataset_meta(path: str, buf: _File, base: int) -> _Dataset:
    header = _parse_header(path, buf, base)
    warnings: list[str] = []
    if header.version not in _VERSIONS:
        warnings.append(f"unknown FCS version {header.version!r}; read as FCS 3.1")
    size = len(buf)
    ts, te = base + header.text_start, base + header.text_end
    if header.text_start < _HEADER_LEN or te < ts or te >= size:
        raise InputError(path, f"HEADER TEXT offsets {header.text_start}-{header.text_end} are "
                               f"outside the file ({size} bytes)")
    text = _parse_text(path, bytes(buf[ts:te + 1]), "TEXT", warnings)
    _supplemental_text(path, buf, base, header, text, warnings)
    return _Dataset(base, header, text, warnings)


def _supplemental_text(path: str, buf: _File, base: int, header: _Header, text: dict[str, str],
                       warnings: list[str]) -> None:
    """Merge the supplemental TEXT (FCS 3.x) into ``text``; primary keywords win on conflicts.

    Empty or zero offsets mean "none". Offsets equal to the primary TEXT's are a common way of
    saying the same; offsets that point into the HEADER or inside the primary TEXT (a NovoCyte
    writes 58-58), past the end of the file, or to an unreadable segment cannot hold extra
    keywords and are ignored with a warning: everything the file needs is checked later anyway.
    """
    s_start, s_end = _int_kw(text, "$BEGINSTEXT"), _int_kw(text, "$ENDSTEXT")
    if not s_start and not s_end:
        return
    if (s_start, s_end) == (header.text_start, header.text_end):
        return
    where = f"supplemental TEXT offsets {s_start}-{s_end}"
    if s_start is None or s_end is None or s_end < s_start:
        warnings.append(f"{where} are not a segment; ignored")
        return
    if s_start < _HEADER_LEN or (s_start <= header.text_end and s_end >= header.text_start):
        warnings.append(f"{where} point inside the HEADER or the primary TEXT "
                        f"({header.text_start}-{header.text_end}); ignored")
        return
    if base + s_end >= len(buf):
        warnings.append(f"{where} are outside the file; ignored")
        return
    try:
        supp = _parse_text(path, bytes(buf[base + s_start:base + s_end + 1]),
                           "supplemental TEXT", warnings)
    except InputError as exc:
        warnings.append(f"{where}: {exc.reason}; ignored")
        return
    for k, v in supp.items():
        text.setdefault(k, v)


def _int_kw(text: Mapping[str, str], key: str) -> int | None:
    v = text.get(key, "").strip()
    if not v:
        return None
    try:
        return int(v)
    except ValueError:
        try:
            f = float(v)
        except ValueError:
            return None
        return int(f) if math.isfinite(f) and f == int(f) else None


def _walk_datasets(path: str, buf: _File, stop_at: int | None = None) -> list[_Dataset]:
    """HEADER+TEXT of every data set chained by ``$NEXTDATA`` (up to ``stop_at`` if given)."""
    sets = [_read_dataset_meta(path, buf, 0)]
    seen = {0}
    while len(sets) < _MAX_DATASETS:
        if stop_at is not None and len(sets) > stop_at:
            break
        cur = sets[-1]
        nxt = _int_kw(cur.text, "$NEXTDATA")
        if not nxt:
            break
        base = cur.base + nxt
        if base in seen or base <= cur.base or base + _HEADER_LEN > len(buf):
            sets[0].warnings.append(f"$NEXTDATA {nxt} of data set {len(sets) - 1} does not point "
                                    "to a further data set; ignored")
            break
        seen.add(base)
        try:
            sets.append(_read_dataset_meta(path, buf, base))
        except InputError as exc:
            # A broken later data set must not make the earlier ones unreadable.
            sets[0].warnings.append(f"data set {len(sets)} at $NEXTDATA offset {base} is "
                                    f"unreadable ({exc.reason}); ignored")
            break
    return sets


# --------------------------------------------------------------------------------------------
# Parameters and DATA layout
# --------------------------------------------------------------------------------------------

@dataclass
class _Param:
    name: str
    marker: str
    kind: str  # "I", "F", "D", "A" (ASCII)
    nbytes: int  # 0 for packed integers and delimited ASCII
    range: float
    mask: int | None
    log: tuple[float, float] | None
    gain: float
    bits: int = 0  # width in the DATA bit stream; 0 for delimited ASCII ($PnB "*")


def _float_kw(text: Mapping[str, str], key: str) -> float | None:
    v = text.get(key, "").strip()
    if not v:
        return None
    try:
        f = float(v)
    except ValueError:
        return None
    return f if math.isfinite(f) else None


def _params(path: str, text: Mapping[str, str], warnings: list[str]) -> tuple[list[_Param], str]:
    n_par = _int_kw(text, "$PAR")
    if n_par is None or n_par < 0:
        raise InputError(path, f"$PAR is missing or not a count ({text.get('$PAR')!r})")
    datatype = text.get("$DATATYPE", "").strip().upper()
    if datatype not in ("I", "F", "D", "A"):
        raise InputError(path, f"$DATATYPE {text.get('$DATATYPE')!r} is not one of I, F, D, A")
    mode = text.get("$MODE", "L").strip().upper() or "L"
    if mode != "L":
        raise InputError(path, f"$MODE {mode} (histogram data) is not supported; only list mode")
    params: list[_Param] = []
    kinds = set()
    for i in range(1, n_par + 1):
        bits_raw = text.get(f"$P{i}B")
        if bits_raw is None:
            raise InputError(path, f"$P{i}B is missing although $PAR is {n_par}")
        kind = text.get(f"$P{i}DATATYPE", datatype).strip().upper() or datatype
        if kind not in ("I", "F", "D") and not (kind == "A" and datatype == "A"):
            raise InputError(path, f"$P{i}DATATYPE {kind!r} is not one of I, F, D")
        bits = _int_kw(text, f"$P{i}B")
        if kind == "A":
            # ASCII: $PnB is the number of characters, or "*" for delimited values
            # (FCS 3.1 3.2.4); the standard requires "*" on all parameters or none.
            if bits_raw.strip() == "*":
                bits = 0
            elif bits is None or bits <= 0:
                raise InputError(path, f"$P{i}B {bits_raw!r} is neither a character count nor "
                                       "'*' for ASCII data")
            else:
                bits *= 8
        if kind == "F" and bits != 32 or kind == "D" and bits != 64:
            if bits not in (32, 64) or bits is None:
                # The type fixes the width; a wrong $PnB is a common writer bug.
                warnings.append(f"$P{i}B is {bits_raw!r} for {kind} data; read as "
                                f"{32 if kind == 'F' else 64} bits")
                bits = 32 if kind == "F" else 64
            else:
                warnings.append(f"$P{i}B is {bits} for {kind} data; read as "
                                f"{'float' if bits == 32 else 'double'}")
                kind = "F" if bits == 32 else "D"
        if kind != "A" and (bits is None or bits <= 0 or bits > 64):
            raise InputError(path, f"$P{i}B {bits_raw!r} is not a width of 1 to 64 bits")
        name = text.get(f"$P{i}N", "").strip()
        if not name:
            name = f"P{i}"
            warnings.append(f"$P{i}N is missing; channel named {name!r}")
        marker = text.get(f"$P{i}S", "").strip()
        rng = _float_kw(text, f"$P{i}R")
        if rng is None:
            rng = float("nan")
        mask = None
        log = None
        if kind in ("I", "A"):
            if rng > 0 and kind == "I":
                top = 1 << max(0, math.ceil(math.log2(rng)))
                if top < (1 << bits):
                    mask = top - 1
            e_raw = text.get(f"$P{i}E", "").strip()
            if e_raw:
                log = _pne(path, i, e_raw, warnings)
                if log is not None and not rng > 0:
                    raise InputError(path, f"$P{i}E asks for log amplification but $P{i}R "
                                           f"{text.get(f'$P{i}R')!r} is not a positive range")
        gain = _float_kw(text, f"$P{i}G")
        if gain is None or gain == 0:
            gain = 1.0
        # Integers narrower than a whole number of bytes are packed without padding.
        nbytes = bits // 8 if bits % 8 == 0 else 0
        params.append(_Param(name, marker, kind, nbytes, rng, mask, log, gain, bits))
        kinds.add(kind)
    if "A" in kinds and 0 < sum(q.bits == 0 for q in params) < len(params):
        raise InputError(path, "ASCII data mix delimited ($PnB '*') and fixed-width parameters, "
                               "which the standard does not allow")
    if len(kinds) > 1:
        label = "mixed"
    else:
        label = kinds.pop() if kinds else datatype
    return params, label


def _pne(path: str, i: int, raw: str, warnings: list[str]) -> tuple[float, float] | None:
    parts = [p.strip() for p in raw.split(",")]
    try:
        f1, f2 = (float(parts[0]), float(parts[1])) if len(parts) == 2 else (float("nan"), 0.0)
    except ValueError:
        f1, f2 = float("nan"), 0.0
    if not (math.isfinite(f1) and math.isfinite(f2)):
        warnings.append(f"$P{i}E {raw!r} is not 'decades,offset'; read as linear")
        return None
    if f1 <= 0:
        return None
    if f2 <= 0:
        f2 = 1.0  # FCS 3.1: "$PnE/f1,0/ ... shall be interpreted as f1,1"
    return f1, f2


def _byte_perm(path: str, byteord: str, nbytes: int) -> tuple[str, np.ndarray | None]:
    """Return ('<'|'>', None) for plain orders, or ('perm', permutation to little-endian)."""
    try:
        order = [int(x) for x in byteord.replace(" ", "").split(",") if x]
    except ValueError:
        raise InputError(path, f"$BYTEORD {byteord!r} is not a list of byte numbers") from None
    if nbytes == 1:
        return "<", None
    if not order or sorted(order) != list(range(1, len(order) + 1)):
        raise InputError(path, f"$BYTEORD {byteord!r} is not a permutation of 1..n")
    if order == sorted(order):
        return "<", None
    if order == sorted(order, reverse=True):
        return ">", None
    if len(order) != nbytes:
        raise InputError(path, f"$BYTEORD {byteord!r} cannot be applied to {8 * nbytes}-bit values")
    return "perm", np.argsort(np.asarray(order))


def _np_kind(kind: str, nbytes: int) -> str:
    return {"I": "u", "F": "f", "D": "f"}[kind] + str(nbytes)


def _fits(vals: np.ndarray, dtype: np.dtype, name: str, warnings: list[str]) -> None:
    """Warn when double values overflow a narrower float dtype (they would turn into inf)."""
    if vals.dtype.itemsize <= dtype.itemsize or vals.size == 0:
        return
    with np.errstate(invalid="ignore"):
        big = np.abs(vals) > np.finfo(dtype).max
    if big.any():
        warnings.append(f"{int(np.count_nonzero(big & np.isfinite(vals)))} values of {name} "
                        f"exceed the {dtype} range and became inf; read with dtype=np.float64")


def _decode(path: str, data: np.ndarray, n: int, params: list[_Param],
            byteord: str, dtype: np.dtype, warnings: list[str]) -> np.ndarray:
    """Decode the DATA bytes (``n`` rows, uint8, owned) into an ``n × p`` array of ``dtype``."""
    p = len(params)
    row = sum(q.nbytes for q in params)
    if p == 0:
        return np.empty((n, 0), dtype=dtype)
    if params[0].kind == "A":
        if params[0].bits == 0:
            return _ascii_delimited(path, data, n, p, warnings).astype(dtype, order="C")
        return _ascii_fixed(path, data, n, params, dtype)
    if any(q.bits % 8 for q in params):
        return _packed(data, n, params, dtype)
    widths = {q.nbytes for q in params}
    kinds = {q.kind for q in params}
    first = params[0]
    if len(widths) == 1 and len(kinds) == 1 and first.nbytes in (1, 2, 4, 8):
        order, perm = _byte_perm(path, byteord, first.nbytes)
        if order != "perm":
            # Fast path: one strided read, byte swap and cast in a single astype pass.
            raw = data.view(np.dtype(_np_kind(first.kind, first.nbytes))
                            .newbyteorder(order)).reshape(n, p)
            masks = [q.mask for q in params]
            if first.kind == "I" and any(m is not None for m in masks):
                full = (1 << (8 * first.nbytes)) - 1
                mvec = np.array([full if m is None else m for m in masks],
                                dtype=raw.dtype.newbyteorder("="))
                return np.bitwise_and(raw, mvec).astype(dtype, order="C")
            if raw.dtype == dtype:  # native layout: the buffer we read into is the result
                return raw
            if first.kind == "D" and dtype.itemsize < 8:
                _fits(raw, dtype, "the double-precision channels", warnings)
            with np.errstate(over="ignore"):
                return raw.astype(dtype, order="C")
    raw8 = data.reshape(n, row)
    if len(widths) == 1 and kinds == {"I"} and first.nbytes == 3 and n * p > 0:
        order, perm = _byte_perm(path, byteord, 3)
        base = data.base if isinstance(data.base, np.ndarray) else None
        at = data.ctypes.data - base.ctypes.data if base is not None else -1
        if order != "perm" and base is not None and 0 <= at \
                and base.size >= at + data.size + 1:
            # 24-bit: read each value as a 4-byte word starting at its own offset (stride 3;
            # the spare byte after the data keeps the last word in bounds), then drop the
            # neighbour's byte. Three vectorised passes, no per-byte loop.
            words = np.ndarray(shape=(n * p,), dtype=np.dtype("<u4" if order == "<" else ">u4"),
                               buffer=base, offset=at, strides=(3,))
            vals = words.astype(np.uint32)
            if order == "<":
                vals &= np.uint32(0xFFFFFF)
            else:
                vals >>= np.uint32(8)
            vals = vals.reshape(n, p)
            masks = [q.mask for q in params]
            if any(m is not None for m in masks):
                mvec = np.array([0xFFFFFF if m is None else m for m in masks], dtype=np.uint32)
                vals &= mvec
            return vals.astype(dtype, order="C")
    if len(widths) == 1 and kinds == {"I"} and first.nbytes in (3, 5, 6, 7):
        # Uniform odd-width integers (24-bit): copy all bytes at once into zero-padded
        # 4/8-byte little-endian slots and reinterpret; two passes instead of one per byte.
        w = first.nbytes
        order, perm = _byte_perm(path, byteord, w)
        src = raw8.reshape(n, p, w)
        if order == ">":
            src = src[:, :, ::-1]
        elif order == "perm":
            src = src[:, :, perm]
        slot = 4 if w == 3 else 8
        padded = np.zeros((n, p, slot), dtype=np.uint8)
        padded[:, :, :w] = src
        vals = padded.view("<u4" if slot == 4 else "<u8").reshape(n, p)
        masks = [q.mask for q in params]
        if any(m is not None for m in masks):
            full = (1 << (8 * w)) - 1
            vals &= np.array([full if m is None else m for m in masks], dtype=vals.dtype)
        return vals.astype(dtype, order="C")
    # General path: per column byte assembly from the (n, row) uint8 view.
    out = np.empty((n, p), dtype=dtype)
    off = 0
    for j, q in enumerate(params):
        cols = raw8[:, off:off + q.nbytes]
        off += q.nbytes
        order, perm = _byte_perm(path, byteord, q.nbytes)
        if order == ">":
            cols = cols[:, ::-1]
        elif order == "perm":
            cols = cols[:, perm]
        # cols is now little-endian byte significance order.
        if q.nbytes in (1, 2, 4, 8):
            vals = np.ascontiguousarray(cols).view("<" + _np_kind(q.kind, q.nbytes))[:, 0]
        else:  # 24/40/48/56-bit unsigned integers
            vals = np.zeros(n, dtype=np.uint64)
            for b in range(q.nbytes):
                vals |= cols[:, b].astype(np.uint64) << np.uint64(8 * b)
        if q.mask is not None:
            vals = vals & np.asarray(q.mask, dtype=vals.dtype)
        if q.kind == "D":
            _fits(vals, dtype, q.name, warnings)
        with np.errstate(over="ignore"):
            out[:, j] = vals
    return out


def _packed(data: np.ndarray, n: int, params: list[_Param], dtype: np.dtype) -> np.ndarray:
    """Integers of any bit width packed without padding (``$PnB`` 9, 10, 12, ...).

    The DATA segment is one little-endian bit stream: value ``k`` occupies stream bits
    ``[o_k, o_k + width)`` where stream bit ``i`` is bit ``i % 8`` (least significant first) of
    byte ``i // 8``, whatever ``$BYTEORD`` says. That is the order the FACScan files of the FlowJo
    tutorial use: decoded so, their Lymphocytes polygon holds FlowJo's count (6,890 vs 6,885 in
    FlowJo 7.6.5); the most-significant-first order gives 245. Each value is read as the
    unaligned 8-byte little-endian word starting at its first byte (one gather per column),
    shifted and masked; widths above 57 bits take the missing high bits from the next word.
    """
    nbytes = data.size
    padded = np.zeros(nbytes + 16, dtype=np.uint8)  # spare bytes: words past the last value
    padded[:nbytes] = data
    # Overlapping words, one starting at every byte (stride 1): words[b] = bytes b..b+7.
    words = np.ndarray(shape=(nbytes + 8,), dtype="<u8", buffer=padded, offset=0, strides=(1,))
    row_bits = sum(q.bits for q in params)
    out = np.empty((n, len(params)), dtype=dtype)
    rows = np.arange(n, dtype=np.int64) * row_bits
    col_off = 0
    for j, q in enumerate(params):
        off = rows + col_off
        col_off += q.bits
        first = off >> 3
        shift = (off & 7).astype(np.uint64)
        vals = words[first] >> shift
        if q.bits > 57:  # the value may reach past the 8-byte word (shift + width > 64)
            hi = words[first + 8] << (np.uint64(64) - np.maximum(shift, np.uint64(1)))
            vals |= np.where(shift > 0, hi, np.uint64(0))
        if q.bits < 64:
            vals &= np.uint64((1 << q.bits) - 1)
        if q.mask is not None:
            vals &= np.uint64(q.mask)
        out[:, j] = vals
    return out


_ASCII_SEPARATORS = bytes.maketrans(b",\t\r\n\x00", b"     ")


def _ascii_numbers(path: str, raw: np.ndarray, what: str) -> np.ndarray:
    """Parse an array of byte strings as numbers (float64), or say which one is not a number."""
    try:
        return raw.astype(np.float64)
    except ValueError:
        for tok in raw.ravel():
            try:
                float(tok)
            except ValueError:
                raise InputError(path, f"{what} value {tok.decode('latin-1')!r} is not a "
                                       "number") from None
        raise


def _ascii_fixed(path: str, data: np.ndarray, n: int, params: list[_Param],
                 dtype: np.dtype) -> np.ndarray:
    """``$DATATYPE A`` with ``$PnB`` characters per value (fixed-width columns)."""
    raw8 = data.reshape(n, sum(q.nbytes for q in params))
    out = np.empty((n, len(params)), dtype=dtype)
    off = 0
    for j, q in enumerate(params):
        col = np.ascontiguousarray(raw8[:, off:off + q.nbytes]).view(f"S{q.nbytes}")[:, 0]
        off += q.nbytes
        # Surrounding blanks are padding; an all-blank field is refused, not read as 0.
        col = np.char.strip(col)
        out[:, j] = _ascii_numbers(path, col, f"ASCII {q.name}")
    return out


def _ascii_delimited(path: str, data: np.ndarray, n: int | None, p: int,
                     warnings: list[str]) -> np.ndarray:
    """``$DATATYPE A`` with ``$PnB *``: values separated by blanks, tabs, commas, CR or LF.

    Runs of separators count as one (FCS 3.1 3.2.4). ``n`` is ``$TOT`` (``None`` when missing).
    """
    tokens = data.tobytes().translate(_ASCII_SEPARATORS).split()
    have = len(tokens)
    if n is None:
        n, rem = divmod(have, p)
        if rem:
            warnings.append(f"delimited ASCII DATA end with {rem} values of an incomplete event")
    elif have < n * p:
        raise InputError(path, f"delimited ASCII DATA hold {have} values; $TOT {n} × $PAR {p} "
                               f"needs {n * p}")
    elif have > n * p:
        warnings.append(f"delimited ASCII DATA hold {have - n * p} values beyond $TOT × $PAR; "
                        "ignored")
    vals = _ascii_numbers(path, np.array(tokens[:n * p], dtype=bytes), "ASCII")
    return vals.reshape(n, p)


def _locate_data(path: str, ds: _Dataset, size: int, row_bits: int, warnings: list[str],
                 delimited: bool = False) -> tuple[int, int | None, int]:
    """Absolute start of DATA, the number of events and the DATA length in bytes.

    HEADER, TEXT and file size are cross-checked. ``row_bits`` is the size of one event in bits
    (packed integer widths need not fill whole bytes). Delimited ASCII events have no fixed
    size: the segment is taken as the offsets give it and the event count (``None`` when
    ``$TOT`` is missing) is checked by the decoder.
    """
    h, text, base = ds.header, ds.text, ds.base
    tot = _int_kw(text, "$TOT")
    if tot is not None and tot < 0:
        raise InputError(path, f"$TOT {tot} is negative")
    t_start, t_end = _int_kw(text, "$BEGINDATA"), _int_kw(text, "$ENDDATA")
    cands: list[tuple[str, int, int]] = []
    header_blank = h.data_start is None or h.data_end is None
    # A 0 in either HEADER field means "see TEXT" (files over 99,999,999 bytes).
    if not header_blank and h.data_start and h.data_end:
        cands.append(("HEADER", h.data_start, h.data_end))
    if t_start is not None and t_end is not None and (t_start or t_end):
        cands.append(("TEXT", t_start, t_end))
    if header_blank:
        warnings.append("HEADER DATA offsets are blank; taken from $BEGINDATA/$ENDDATA")
    if not cands:
        if tot == 0 or (row_bits == 0 and not delimited):
            return base, 0, 0
        raise InputError(path, "no DATA segment offsets in HEADER or TEXT")
    avail = lambda s: size - (base + s)  # noqa: E731 - bytes from s to end of file
    if row_bits == 0 and not delimited:
        return base, 0, 0
    if delimited:
        for src, s, e in cands:
            if s > 0 and e >= s - 1 and avail(s) >= e - s + 1:
                return base + s, tot, e - s + 1
        src, s, e = cands[-1]
        raise InputError(path, f"{src} DATA offsets {s}-{e} are outside the file ({size} bytes)")
    if tot is None:
        src, s, e = cands[-1]
        nbytes = e - s + 1
        if s <= 0 or nbytes < 0:
            raise InputError(path, f"{src} DATA offsets {s}-{e} are invalid")
        have = min(nbytes, max(0, avail(s)))
        n = have * 8 // row_bits
        warnings.append(f"$TOT is missing; {n} events inferred from the DATA segment size")
        rem = have - (n * row_bits + 7) // 8
        if rem:
            warnings.append(f"DATA segment has {rem} bytes beyond the last whole event")
        return base + s, n, (n * row_bits + 7) // 8
    expected = (tot * row_bits + 7) // 8
    if expected == 0:
        return base, 0, 0
    # 1. an exact match (or the classic end+1 writer bug) that fits in the file
    for slack in (0, 1):
        for src, s, e in cands:
            if s > 0 and e - s + 1 == expected + slack and avail(s) >= expected:
                if slack:
                    warnings.append(f"{src} $ENDDATA {e} is one byte past the data end "
                                    f"({s + expected - 1}); off-by-one offset repaired")
                others = [c for c in cands if c[0] != src and (c[1], c[2]) != (s, e)]
                for o_src, o_s, o_e in others:
                    warnings.append(f"{o_src} DATA offsets {o_s}-{o_e} disagree with {src} "
                                    f"offsets {s}-{e}; used {src} (it matches $TOT × event size)")
                return base + s, tot, expected
    # 2. a start that leaves room for all events (end offset wrong)
    for src, s, e in cands:
        if s > 0 and avail(s) >= expected:
            warnings.append(f"{src} DATA end offset {e} disagrees with $TOT × event size "
                            f"({expected} bytes from {s}); read {tot} events from {s}")
            return base + s, tot, expected
    src, s, e = cands[-1]
    have = max(0, avail(s)) if s > 0 else 0
    raise InputError(path, f"data segment truncated: expected {expected} bytes "
                           f"({tot} events × {row_bits / 8:g} bytes), file has {have}")


class _File:
    """Random access to a file without loading it: HEADER/TEXT by slices, DATA into an array.

    DATA is read with ``readinto`` straight into the numpy buffer that becomes (or feeds) the
    event matrix, so a native-order float32 file costs one copy, like ``np.fromfile``.
    """

    def __init__(self, path: str, fh: Any, size: int) -> None:
        self.path, self._fh, self.size = path, fh, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, sl: slice) -> bytes:
        start, stop = max(0, sl.start or 0), min(self.size, sl.stop)
        if stop <= start:
            return b""
        self._fh.seek(start)
        return self._fh.read(stop - start)

    def read_array(self, start: int, nbytes: int) -> np.ndarray:
        """``nbytes`` from ``start`` as a writable uint8 array (caller checked the size).

        The array's base holds 8 spare bytes so 24-bit values can be read as overlapping
        4-byte words without running past the allocation.
        """
        padded = np.zeros(nbytes + 8, dtype=np.uint8)
        out = padded[:nbytes]
        self._fh.seek(start)
        got = self._fh.readinto(memoryview(out))
        if got != nbytes:
            raise InputError(self.path, f"data segment truncated: expected {nbytes} bytes, "
                                        f"file has {got}")
        return out

    def read_array_hashed(self, start: int, nbytes: int) -> tuple[np.ndarray, str]:
        """Like :meth:`read_array`, reading the whole file once and hashing those bytes.

        The file lands in one buffer placed so that DATA starts 64-byte aligned; the returned
        array is a view of it (the HEADER/TEXT bytes around it are small).
        """
        import hashlib

        pad = (-start) % 64
        whole = np.zeros(pad + self.size + 8, dtype=np.uint8)
        view = memoryview(whole)[pad:pad + self.size]
        self._fh.seek(0)
        got = self._fh.readinto(view)
        if got != self.size:
            raise InputError(self.path, f"file changed while being read: expected {self.size} "
                                        f"bytes, got {got}")
        digest = hashlib.sha256(view).hexdigest()  # releases the GIL; SHA-NI where present
        return whole[pad + start:pad + start + nbytes], digest


@contextlib.contextmanager
def _open(path: str | os.PathLike[str]) -> Iterator[tuple[str, _File]]:
    p = os.fspath(path)
    try:
        fh = open(p, "rb")
    except FileNotFoundError:
        raise InputError(p, "file not found") from None
    except IsADirectoryError:
        raise InputError(p, "is a directory, not an FCS file") from None
    except OSError as exc:
        raise InputError(p, f"cannot read file: {exc.strerror or exc}") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            raise InputError(p, "file is empty")
        try:
            yield p, _File(p, fh, size)
        except OSError as exc:  # e.g. the file vanished or a network share dropped mid-read
            raise InputError(p, f"cannot read file: {exc.strerror or exc}") from None


def _spillover(path: str, text: Mapping[str, str], warnings: list[str]) -> Spillover | None:
    for key in SPILLOVER_KEYWORDS:
        value = text.get(key)
        if value is None or not value.strip():
            continue
        try:
            return parse_spillover(value)
        except InputError as exc:
            warnings.append(f"{key} keyword ignored: {exc.reason}")
            return None
    return None


def _select(path: str, buf: _File, dataset: int) -> tuple[_Dataset, int]:
    if not isinstance(dataset, int) or dataset < 0:
        raise InputError(path, f"dataset must be a non-negative index, got {dataset!r}")
    sets = _walk_datasets(path, buf)
    if dataset >= len(sets):
        raise InputError(path, f"data set {dataset} requested but the file has {len(sets)}")
    return sets[dataset], len(sets)


def _meta(path: str, ds: _Dataset,
          buf: _File) -> tuple[list[_Param], str, int, int, int, list[str]]:
    """Parameters, DATA start, event count and DATA length in bytes of one data set."""
    warnings = list(ds.warnings)
    params, label = _params(path, ds.text, warnings)
    delimited = bool(params) and all(q.kind == "A" and q.bits == 0 for q in params)
    start, n, nbytes = _locate_data(path, ds, len(buf), sum(q.bits for q in params), warnings,
                                    delimited)
    if n is None:  # delimited ASCII without $TOT: count the values
        n = _ascii_delimited(path, buf.read_array(start, nbytes), None, len(params),
                             warnings).shape[0]
        warnings.append(f"$TOT is missing; {n} events counted in the delimited ASCII DATA")
    return params, label, start, n, nbytes, warnings


def read_fcs_metadata(path: str | os.PathLike[str], *, dataset: int = 0) -> FCSMetadata:
    """Read HEADER and TEXT of one data set and check that its DATA segment is present.

    Parameters
    ----------
    path
        The FCS file.
    dataset
        Index of the data set in a ``$NEXTDATA`` chain.

    Returns
    -------
    FCSMetadata
        Keywords, channels, markers, ranges, spillover, number of events and repair warnings.

    Raises
    ------
    InputError
        When the file is not FCS, its TEXT is unreadable or its DATA cannot be where it claims.
    """
    with _open(path) as (p, buf):
        ds, n_sets = _select(p, buf, dataset)
        params, label, _start, n, _nbytes, warnings = _meta(p, ds, buf)
    return FCSMetadata(path=p, version=ds.header.version, text=dict(ds.text),
                       channels=[q.name for q in params], markers=[q.marker for q in params],
                       ranges=[q.range for q in params], datatype=label,
                       spillover=_spillover(p, ds.text, warnings), warnings=warnings,
                       n_datasets=n_sets, n_events=n, dataset=dataset)


def read_fcs(path: str | os.PathLike[str], *, dataset: int = 0,
             dtype: Any = np.float32, sha256: bool = False) -> FCSData:
    """Read one data set of an FCS 2.0/3.0/3.1/3.2 file.

    Parameters
    ----------
    path
        The FCS (or ``.lmd``) file.
    dataset
        Index of the data set in a ``$NEXTDATA`` chain (0 = first).
    dtype
        Floating dtype of ``events`` (``np.float32`` by default, ``np.float64`` for exactness).
    sha256
        Also hash the whole file (``FCSData.sha256``) from the bytes read, in the same single
        read of the file, instead of reading it a second time for provenance.

    Returns
    -------
    FCSData
        Events (C-contiguous, ``n_events × n_channels``) with ``$PnG``, ``$PnE`` and the time step
        applied, plus keywords, channels, markers, spillover and repair warnings.

    Raises
    ------
    InputError
        Not an FCS file, unreadable TEXT, unsupported layout, or DATA shorter than the TEXT claims.
    """
    out_dtype = np.dtype(dtype)
    if out_dtype.kind != "f":
        raise InputError(None, f"read_fcs dtype must be a float type, got {out_dtype}")
    with _open(path) as (p, buf):
        ds, n_sets = _select(p, buf, dataset)
        params, label, start, n, nbytes, warnings = _meta(p, ds, buf)
        byteord = ds.text.get("$BYTEORD", "").strip()
        if not byteord:
            if any(q.nbytes > 1 and q.kind != "A" for q in params):
                warnings.append("$BYTEORD is missing; assumed little-endian (1,2,3,4)")
            byteord = "1,2,3,4"
        digest = None
        if sha256:
            data, digest = buf.read_array_hashed(start, nbytes)
        else:
            data = buf.read_array(start, nbytes)
    events = _decode(p, data, n, params, byteord, out_dtype, warnings)
    _scale(ds.text, params, events, warnings)
    return FCSData(path=p, version=ds.header.version, text=dict(ds.text),
                   channels=[q.name for q in params], markers=[q.marker for q in params],
                   events=events, ranges=[q.range for q in params], datatype=label,
                   spillover=_spillover(p, ds.text, warnings), warnings=warnings,
                   n_datasets=n_sets, dataset=dataset, sha256=digest)


def _scale(text: Mapping[str, str], params: list[_Param], events: np.ndarray,
           warnings: list[str]) -> None:
    """Apply ``$PnE`` log amplification, ``$PnG`` gain and ``$TIMESTEP`` in place."""
    timestep = _float_kw(text, "$TIMESTEP")
    if timestep is None and text.get("$TIMESTEP", "").strip() and any(
            q.name.casefold() == "time" for q in params):
        warnings.append(f"$TIMESTEP {text['$TIMESTEP'][:20]!r} is not a number; time left unscaled")
    names = [q.name for q in params]
    if len(set(names)) != len(names):
        dup = sorted({c for c in names if names.count(c) > 1})
        warnings.append(f"duplicate channel names {', '.join(dup)}; refer to them by index")
    with np.errstate(over="ignore", invalid="ignore"):
        for j, q in enumerate(params):
            col = events[:, j]
            if q.log is not None:
                f1, f2 = q.log
                col[:] = (np.power(10.0, f1 * col.astype(np.float64) / q.range) * f2)
            if q.name.casefold() == "time":
                if timestep is not None and timestep > 0 and timestep != 1.0:
                    col *= col.dtype.type(timestep)
            elif q.gain != 1.0:
                col /= col.dtype.type(q.gain)


def describe_fcs(path: str | os.PathLike[str], *, dataset: int = 0) -> dict[str, Any]:
    """A plain, JSON-ready summary of one data set (HEADER and TEXT only; DATA is not decoded).

    Parameters
    ----------
    path
        The FCS file.
    dataset
        Index of the data set in a ``$NEXTDATA`` chain.

    Returns
    -------
    dict
        ``file, version, datatype, n_events, n_channels, dataset, n_datasets, channels`` (list of
        ``index, name, marker, range, bits, datatype, gain, log``), ``spillover`` (``None`` or
        ``channels, keyword, max_offdiagonal``), ``keywords`` (:data:`KEY_KEYWORDS` present) and
        ``warnings`` (repairs the reader would make).

    Raises
    ------
    InputError
        When the file cannot be read (see :func:`read_fcs_metadata`).
    """
    meta = read_fcs_metadata(path, dataset=dataset)
    text = meta.text
    channels = []
    for i, (name, marker, rng) in enumerate(zip(meta.channels, meta.markers, meta.ranges),
                                           start=1):
        gain = _float_kw(text, f"$P{i}G")
        channels.append({
            "index": i, "name": name, "marker": marker,
            "range": rng if math.isfinite(rng) else None,
            "bits": _int_kw(text, f"$P{i}B"),
            "datatype": (text.get(f"$P{i}DATATYPE") or text.get("$DATATYPE", "")).strip().upper(),
            "gain": gain, "log": text.get(f"$P{i}E", "").strip() or None})
    spill = None
    if meta.spillover is not None:
        m = np.array(meta.spillover.matrix)
        off = m - np.diag(np.diag(m))
        spill = {"keyword": next(k for k in SPILLOVER_KEYWORDS if text.get(k, "").strip()),
                 "channels": list(meta.spillover.channels),
                 "max_offdiagonal": float(np.abs(off).max()) if m.size else 0.0,
                 "matrix": m.tolist()}
    return {"file": meta.path, "version": meta.version, "datatype": meta.datatype,
            "n_events": meta.n_events, "n_channels": len(meta.channels),
            "dataset": dataset, "n_datasets": meta.n_datasets, "channels": channels,
            "spillover": spill,
            "keywords": {k: text[k].strip() for k in KEY_KEYWORDS if text.get(k, "").strip()},
            "warnings": list(meta.warnings)}
