"""Shared pieces of the cross-cutting fuzz tests (``tests/test_fuzz_*.py``, issue 7).

Contract every fuzz test checks: a reader given any bytes returns a correct result or raises
:class:`~immunoprofile.errors.InputError` naming the file in one line -- never another exception,
never a hang (each example has a deadline), never a MemoryError from a lying header.

Budget: ``IMMUNOPROFILE_FUZZ_EXAMPLES`` examples per test (default 60, what ``make test`` runs);
a longer campaign is one command:
``IMMUNOPROFILE_FUZZ_EXAMPLES=1000 .venv/bin/python -m pytest -q -k fuzz tests``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from immunoprofile.errors import InputError

__all__ = ["EXAMPLES", "FUZZ", "mutate", "outcome", "HOSTILE_NUMBERS", "PROJECT_ROOT",
           "EXAMPLE_DIR", "REFERENCE_DIR", "HOSTILE_YAML"]

T = TypeVar("T")

EXAMPLES = int(os.environ.get("IMMUNOPROFILE_FUZZ_EXAMPLES", 60))
# derandomize: the default budget is reproducible in CI; a longer run explores further because
# hypothesis draws more examples from the same deterministic stream.
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=20), derandomize=True,
                suppress_health_check=list(HealthCheck), print_blob=True)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_DIR = PROJECT_ROOT / "example_data"
REFERENCE_DIR = Path(os.environ.get("IMMUNOPROFILE_REFERENCE",
                                    PROJECT_ROOT.parent / "shared" / "reference"))

#: values a tired human or a broken export puts where a number belongs
HOSTILE_NUMBERS = [b"", b"nan", b"NaN", b"inf", b"-inf", b"Infinity", b"1e308", b"-1e308",
                   b"1e999", b"1e-320", b"-0", b"0", b"-1", b"1e12", b"99999999999999999999999",
                   b"0x1F", b"1,5", b"1.2.3", b"\xff\xfe", b"null", b"\"\"", b"' '", b"\t", b"#"]


_BOMB = ("a: &a [x, x, x, x, x, x, x, x, x, x]\n"
         + "".join(f"{chr(98 + k)}: &{chr(98 + k)} [{', '.join(['*' + chr(97 + k)] * 10)}]\n"
                   for k in range(8))
         + "schema_version: 1\ninputs: {manifest: m.csv}\nextra: *i\n")
#: YAML that would run code, explode, or overflow a parser
HOSTILE_YAML = {
    "python-object": "!!python/object/apply:os.system ['touch /tmp/immunoprofile-pwned']\n",
    "python-name": "schema_version: !!python/name:os.system\n",
    "python-object-new": "x: !!python/object/new:subprocess.Popen [['true']]\n",
    "alias-bomb": _BOMB,
    "deep-flow-nesting": "x: " + "[" * 20000 + "]" * 20000 + "\n",
    "deep-block-nesting": "".join("  " * k + f"k{k}:\n" for k in range(3000)),
    "huge-int": "schema_version: 1" + "0" * 5000 + "\n",
    "nul-bytes": "schema_version: 1\n\x00\x00\n",
    "tabs": "schema_version: 1\ninputs:\n\tmanifest: m.csv\n",
    "duplicate-keys": "schema_version: 1\nschema_version: 1\ninputs: {manifest: m.csv}\n",
    "empty": "",
    "comments-only": "# nothing here\n",
    "a-list": "- schema_version: 1\n",
    "a-scalar": "just text\n",
    "bad-utf8": b"schema_version: 1\nname: \xff\xfe\n".decode("latin-1"),
}


@st.composite
def mutate(draw: st.DrawFn, base: bytes, tokens: list[bytes] | None = None) -> bytes:
    """A mutation of ``base``: truncation, deleted/duplicated/inserted spans, a token swapped for
    a hostile value, shuffled or duplicated lines, bit flips, or random bytes."""
    kind = draw(st.sampled_from(["truncate", "delete", "insert", "replace", "replace",
                                 "dup_line", "drop_line", "swap_lines", "flip", "random",
                                 "empty"]))
    if not base or kind == "empty":
        return draw(st.sampled_from([b"", b"\n", b"\xef\xbb\xbf", b" \r\n\r\n"]))
    if kind == "truncate":
        return base[:draw(st.integers(0, len(base) - 1))]
    if kind == "delete":
        i = draw(st.integers(0, len(base) - 1))
        return base[:i] + base[i + draw(st.integers(1, 200)):]
    if kind == "insert":
        i = draw(st.integers(0, len(base)))
        return base[:i] + draw(st.binary(min_size=1, max_size=40)) + base[i:]
    if kind == "replace":
        found = list(re.finditer(rb"[A-Za-z0-9_.+\-]+", base))
        if not found:
            return base
        # several tokens at once half of the time
        out = base
        for _ in range(draw(st.integers(1, 3))):
            found = list(re.finditer(rb"[A-Za-z0-9_.+\-]+", out)) or found
            tok = found[draw(st.integers(0, len(found) - 1))]
            if tok.end() > len(out):
                continue
            new = draw(st.sampled_from(HOSTILE_NUMBERS + (tokens or [])))
            out = out[:tok.start()] + new + out[tok.end():]
        return out
    lines = base.splitlines(keepends=True)
    if kind == "dup_line":
        i = draw(st.integers(0, len(lines) - 1))
        return b"".join(lines[:i + 1] + [lines[i]] * draw(st.integers(1, 3)) + lines[i + 1:])
    if kind == "drop_line":
        i = draw(st.integers(0, len(lines) - 1))
        return b"".join(lines[:i] + lines[i + 1:])
    if kind == "swap_lines":
        i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
        lines[i], lines[j] = lines[j], lines[i]
        return b"".join(lines)
    if kind == "flip":
        raw = bytearray(base)
        for _ in range(draw(st.integers(1, 8))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        return bytes(raw)
    return draw(st.binary(max_size=400))


def outcome(path: Path, read: Callable[[Path], T], check: Callable[[T], Any] | None = None
            ) -> str:
    """Run ``read(path)``: ``"ok"`` (``check`` passed on the result) or ``"refused"`` for an
    ``InputError`` naming ``path`` in one line. Any other exception propagates (a test failure).
    """
    try:
        result = read(path)
    except InputError as exc:
        message = str(exc)
        assert "\n" not in message, message
        assert exc.reason, message
        assert path.name in message, f"the error must name the file {path.name}: {message}"
        return "refused"
    if check is not None:
        check(result)
    return "ok"
