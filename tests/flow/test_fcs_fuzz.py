"""Bounded fuzzing of the FCS reader (issue 7): a correct result or an InputError, nothing else.

Budget: ``IMMUNOPROFILE_FUZZ_EXAMPLES`` examples per test (default 60). A longer run is one command:
``IMMUNOPROFILE_FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest tests/flow/test_fcs_fuzz.py -q``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from immunoprofile.errors import InputError
from immunoprofile.flow.fcs import describe_fcs, read_fcs, read_fcs_metadata

_spec = importlib.util.spec_from_file_location("_fcs_test_helpers",
                                               Path(__file__).with_name("test_fcs.py"))
assert _spec is not None and _spec.loader is not None
_helpers = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("_fcs_test_helpers", _helpers)
_spec.loader.exec_module(_helpers)
build_fcs = _helpers.build_fcs

EXAMPLES = int(os.environ.get("IMMUNOPROFILE_FUZZ_EXAMPLES", 60))
FUZZ = settings(max_examples=EXAMPLES, deadline=2000, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

REF = Path(os.environ.get("IMMUNOPROFILE_REFERENCE",
                         Path(__file__).resolve().parents[2].parent / "shared" / "reference")) / "flow"
SEEDS = [p for p in (
    REF / "gatingml2" / "data1.fcs",  # FCS 2.0, 16-bit ints, gain, log
    REF / "flowjo_wsp" / "simple_line_example" / "data_set_simple_line_100.fcs",  # FCS 3.1 float
    REF / "fcs_edge_cases" / "flowkit" / "index_sorted" / "index_sorted_example.fcs",  # spill
    REF / "fcs_edge_cases" / "flowkit" / "noncompliant" / "data_start_offset_discrepancy_example.fcs",
    REF / "fcs_edge_cases" / "flowkit" / "multi_dataset_fcs" / "coulter.lmd",  # $NEXTDATA
    REF / "fcs_edge_cases" / "flowcal" / "Data003.fcs",  # 24-bit integers with bit masks
    *sorted((Path(__file__).resolve().parents[2] / "example_data" / "flow").glob("*.fcs"))[:1],
) if p.is_file()]

_WORK = Path(tempfile.mkdtemp(prefix="fcs_fuzz_"))


def _seed_bytes(i: int) -> bytes:
    if not SEEDS:
        # without the reference folder, fuzz a synthetic file instead
        v = np.arange(40, dtype=np.float32).reshape(20, 2)
        return build_fcs([dict(name="a", values=v[:, 0], kind="F"),
                          dict(name="b", values=v[:, 1], kind="F")], extra={"$SPILLOVER": "2,a,b,1,0.1,0,1"})
    return SEEDS[i % len(SEEDS)].read_bytes()


_SEED_CACHE: dict[int, bytes] = {}


def _seed(i: int) -> bytes:
    if i not in _SEED_CACHE:
        _SEED_CACHE[i] = _seed_bytes(i)
    return _SEED_CACHE[i]


def check_contract(raw: bytes) -> str:
    """Read ``raw`` every way we can; return "ok" or "refused". Anything else fails the test."""
    p = _WORK / "fuzz.fcs"
    p.write_bytes(raw)
    try:
        meta = read_fcs_metadata(p)
        fcs = read_fcs(p)
        describe_fcs(p)
        for k in range(1, min(fcs.n_datasets, 3)):
            read_fcs(p, dataset=k)
    except InputError as exc:
        msg = str(exc)
        assert "\n" not in msg and str(p) in msg and exc.reason
        return "refused"
    assert fcs.events.ndim == 2 and fcs.events.flags["C_CONTIGUOUS"]
    assert fcs.events.shape == (fcs.n_events, len(fcs.channels)) == (meta.n_events,
                                                                      len(meta.channels))
    assert fcs.events.dtype == np.float32
    assert len(fcs.markers) == len(fcs.ranges) == len(fcs.channels)
    return "ok"


@FUZZ
@given(seed=st.integers(0, 6), cut=st.floats(0, 1))
def test_truncations(seed: int, cut: float) -> None:
    raw = _seed(seed)
    check_contract(raw[:int(len(raw) * cut)])


@FUZZ
@given(seed=st.integers(0, 6),
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=8),
       in_text=st.booleans())
def test_byte_flips(seed: int, flips: list[tuple[float, int]], in_text: bool) -> None:
    raw = bytearray(_seed(seed))
    # Most of the interesting structure is in HEADER+TEXT; flip there half of the time.
    limit = min(len(raw), int(raw[18:26].strip() or b"0") + 1) if in_text else len(raw)
    limit = max(limit, 1) if limit <= len(raw) else len(raw)
    for where, value in flips:
        raw[min(int(where * limit), len(raw) - 1)] = value
    check_contract(bytes(raw))


@FUZZ
@given(prefix=st.sampled_from([b"", b"FCS3.1", b"FCS3.0    ", b"FCS2.0          58"]),
       body=st.binary(max_size=600))
def test_random_bytes(prefix: bytes, body: bytes) -> None:
    assert check_contract(prefix + body) in ("ok", "refused")


NASTY = ["", " ", "0", "-1", "1", "2", "3", "7", "9", "17", "64", "65", "1e12", "1000000", "nan",
         "inf", "-inf", "abc", "4,3,2", "1,2,3,4,5,6,7,8", "2,1,4,3", "I", "F", "D", "A", "C",
         "99999999999999999999999", "1" * 5000, "4,0", "4,1", "0,0", "x,y", "3,A,B,C,1,0",
         "2,a,b,1,nan,0,1", "2,a,a,1,0,0,1", "2,a,b,1,1,1,1"]
KEYS = ["$PAR", "$TOT", "$DATATYPE", "$BYTEORD", "$MODE", "$BEGINDATA", "$ENDDATA", "$NEXTDATA",
        "$P1B", "$P2B", "$P1R", "$P1E", "$P1G", "$P1N", "$P2N", "$P1DATATYPE", "$SPILLOVER",
        "$BEGINSTEXT", "$ENDSTEXT", "$TIMESTEP"]


def _set_keyword(raw: bytes, key: str, value: str) -> bytes:
    """Replace or add a keyword in the first TEXT segment, fixing up the HEADER offsets."""
    ts, te = int(raw[10:18]), int(raw[18:26])
    text = raw[ts:te + 1].decode("latin-1")
    d = text[0]
    pat = re.compile(re.escape(d) + re.escape(key) + re.escape(d) + "[^" + re.escape(d) + "]*",
                     re.IGNORECASE)
    new = pat.sub(lambda m: d + key + d + value.replace(d, " "), text, count=1)
    if new == text:
        new = text + key + d + value.replace(d, " ") + d
    shift = len(new) - len(text)
    rest = raw[te + 1:]
    hd_s, hd_e = raw[26:34].strip(), raw[34:42].strip()
    header = bytearray(raw[:58])
    header[18:26] = f"{te + shift:>8}".encode()
    if hd_s and int(hd_s) > te and len(str(int(hd_s) + shift)) <= 8:
        header[26:34] = f"{int(hd_s) + shift:>8}".encode()
        header[34:42] = f"{int(hd_e) + shift:>8}".encode()
    return bytes(header) + raw[58:ts] + new.encode("latin-1") + rest


@FUZZ
@given(seed=st.integers(0, 6),
       edits=st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(NASTY)), min_size=1,
                      max_size=3))
def test_keyword_mutations(seed: int, edits: list[tuple[str, str]]) -> None:
    raw = _seed(seed)
    try:
        int(raw[10:18]), int(raw[18:26])
    except ValueError:  # pragma: no cover - all seeds have plain offsets
        pytest.fail("seed without TEXT offsets")
    for key, value in edits:
        raw = _set_keyword(raw, key, value)
    check_contract(raw)


_SPECIAL = [float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 1e-45, 3.4e38, -3.4e38]


@FUZZ
@given(n=st.integers(0, 50), p=st.integers(1, 5),
       raw_bits=st.binary(min_size=4 * 250, max_size=4 * 250),
       specials=st.lists(st.tuples(st.integers(0, 249), st.sampled_from(_SPECIAL)), max_size=30),
       dup=st.booleans(), byteord=st.sampled_from(["1,2,3,4", "4,3,2,1"]))
def test_float_data_with_nan_inf_and_duplicate_names(n: int, p: int, raw_bits: bytes,
                                                     specials: list[tuple[int, float]],
                                                     dup: bool, byteord: str) -> None:
    # raw bit patterns (every NaN payload, subnormals) plus injected infinities and zeros
    values = np.frombuffer(raw_bits, dtype="<f4").copy()
    for i, f in specials:
        values[i] = f
    v = values[:n * p].reshape(n, p)
    names = ["X"] * p if dup else [f"c{j}" for j in range(p)]
    raw = build_fcs([dict(name=names[j], values=v[:, j], kind="F") for j in range(p)],
                    byteord=byteord)
    p_ = _WORK / "nan.fcs"
    p_.write_bytes(raw)
    fcs = read_fcs(p_)
    assert fcs.events.tobytes() == v.tobytes()  # bit-exact, NaN payloads included
    assert fcs.channels == names
    if dup and p > 1:
        assert any("duplicate channel names" in w for w in fcs.warnings)
        with pytest.raises(InputError, match="appears"):
            fcs.channel_index("X")


@FUZZ
@given(tot=st.sampled_from([10**6, 10**9, 10**12, 10**18]),
       par=st.sampled_from([None, 10**3, 10**6, 10**9]),
       bits=st.sampled_from([None, "64", "8"]))
def test_lying_headers_never_allocate(tot: int, par: int | None, bits: str | None) -> None:
    v = np.ones((5, 2), dtype=np.float32)
    extra = {} if par is None else {"$PAR": str(par)}
    if bits is not None:
        extra["$P1B"] = bits
    raw = build_fcs([dict(name="a", values=v[:, 0], kind="F"),
                     dict(name="b", values=v[:, 1], kind="F")], tot=tot, extra=extra)
    assert check_contract(raw) == "refused"


def test_empty_and_tiny_files() -> None:
    for raw in (b"", b"F", b"FCS3.1", b" " * 58, b"FCS3.1" + b" " * 52):
        assert check_contract(raw) == "refused"


def test_work_dir_cleanup() -> None:
    """The scratch folder stays small (one file rewritten in place)."""
    assert len(list(_WORK.iterdir())) <= 2
