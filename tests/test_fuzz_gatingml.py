"""Fuzzing of the Gating-ML reader and of the engine on whatever it accepts (issue 7).

Seeds are the real Gating-ML 2.0 compliance files (``../shared/reference/flow/gatingml2/gml``)
and the example trial's strategy. A mutated file must give a Strategy the engine can evaluate on
a small FCS file (or an InputError naming the file), never another exception.
"""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from _fuzzkit import EXAMPLE_DIR, FUZZ, REFERENCE_DIR, mutate, outcome
from hypothesis import given
from hypothesis import strategies as st

from immunoprofile.errors import InputError
from immunoprofile.flow.engine import evaluate
from immunoprofile.flow.fcs import FCSData, read_fcs
from immunoprofile.flow.fcs_write import write_fcs
from immunoprofile.flow.gates import Strategy
from immunoprofile.flow.gatingml import read_gatingml
from immunoprofile.flow.strategy import load_strategy

GML_DIR = REFERENCE_DIR / "flow" / "gatingml2" / "gml"
EXAMPLE_STRATEGY = EXAMPLE_DIR / "strategy.gatingml.xml"
SEEDS = sorted(GML_DIR.glob("*.xml")) + [EXAMPLE_STRATEGY]
_WORK = Path(tempfile.mkdtemp(prefix="gml_fuzz_"))

# tokens of Gating-ML worth swapping in: other ids, element names, hostile attribute values
GML_TOKENS = [b"Range1", b"Polygon1", b"Cells", b"FL1-H", b"FSC-A", b"uncompensated", b"FCS",
              b"and", b"or", b"not", b"RectangleGate", b"EllipsoidGate", b"BooleanGate",
              b"QuadrantGate", b"logicle", b"hyperlog", b"fasinh", b"flog", b"flin", b"fratio",
              b"spectrumMatrix", b"1e400", b"-1e400", b"NaN", b"INF", b"1e-400"]


@cache
def _seed(i: int) -> bytes:
    return SEEDS[i % len(SEEDS)].read_bytes()


@cache
def _small_fcs(kind: str) -> FCSData:
    """300 real events (plus NaN/inf rows) with the channels the seed strategies use."""
    if kind == "gml":
        src = read_fcs(REFERENCE_DIR / "flow" / "gatingml2" / "data1.fcs")
    else:
        src = read_fcs(sorted((EXAMPLE_DIR / "flow").glob("*.fcs"))[0])
    events = np.array(src.events[:300], dtype=np.float32)
    events[0, :] = np.nan
    events[1, :] = np.inf
    events[2, :] = -np.inf
    events[3, ::2] = np.nan
    path = _WORK / f"small_{kind}.fcs"
    write_fcs(path, events, src.channels, src.markers, spillover=src.spillover)
    return read_fcs(path)


def _check_strategy(strategy: Strategy, kind: str) -> None:
    """Whatever the reader accepts, the engine evaluates cleanly or refuses with an InputError."""
    assert isinstance(strategy, Strategy) and strategy.gates
    fcs = _small_fcs(kind)
    try:
        result = evaluate(strategy, fcs)
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    for pid, mask in result.masks.items():
        assert mask.shape == (fcs.n_events,) and mask.dtype == bool, pid
        assert result.counts[pid] == int(mask.sum())
        parent = result.parents.get(pid)
        if parent is not None:
            assert not (mask & ~result.masks[parent]).any(), f"{pid} leaves its parent"
    assert evaluate(strategy, fcs).counts == result.counts  # deterministic


pytestmark = pytest.mark.skipif(not GML_DIR.is_dir(), reason="reference data not present")


def test_every_seed_reads_and_evaluates() -> None:
    # the fuzzing starts from files that are valid: each one must read and evaluate cleanly
    for path in SEEDS:
        _check_strategy(read_gatingml(path), "example" if path == EXAMPLE_STRATEGY else "gml")


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_gatingml(data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(SEEDS) - 1))
    blob = data.draw(mutate(_seed(i), GML_TOKENS))
    path = _WORK / "fuzz.xml"
    path.write_bytes(blob)
    kind = "example" if SEEDS[i] == EXAMPLE_STRATEGY else "gml"
    outcome(path, read_gatingml, lambda s: _check_strategy(s, kind))
    # the dispatcher sees the same bytes (Gating-ML, FlowJo or YAML by content)
    outcome(path, load_strategy, lambda s: _check_strategy(s, kind))


_ATTR = st.sampled_from(["gating:id", "gating:parent_id", "data-type:value", "gating:min",
                         "gating:max", "transforms:T", "transforms:W", "transforms:M",
                         "transforms:A", "data-type:name", "transforms:value",
                         "gating:compensation-ref", "gating:transformation-ref"])
_VALUE = st.one_of(st.sampled_from(["", "nan", "inf", "-inf", "1e308", "-1e308", "0", "-0",
                                    "1e-310", "Cells", "FL1-H", "FL1-H", "FCS", "uncompensated",
                                    "undefined", "default"]),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.text(max_size=6))


@FUZZ
@given(data=st.data(), attr=_ATTR, value=_VALUE)
def test_fuzz_attribute_values(data: st.DataObject, attr: str, value: str) -> None:
    """Set every occurrence (or one) of an attribute to a hostile value."""
    i = data.draw(st.integers(0, len(SEEDS) - 1))
    text = _seed(i).decode("utf-8")
    needle = f'{attr}="'
    starts = [k for k in range(len(text)) if text.startswith(needle, k)]
    if not starts:
        return
    chosen = starts if data.draw(st.booleans()) else [data.draw(st.sampled_from(starts))]
    escaped = value.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
    for k in reversed(chosen):
        end = text.index('"', k + len(needle))
        text = text[:k + len(needle)] + escaped + text[end:]
    path = _WORK / "attr.xml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    kind = "example" if SEEDS[i] == EXAMPLE_STRATEGY else "gml"
    outcome(path, read_gatingml, lambda s: _check_strategy(s, kind))


@FUZZ
@given(raw=st.binary(max_size=600),
       prefix=st.sampled_from([b"", b"<?xml version='1.0'?>",
                               b'<gating:Gating-ML xmlns:gating="http://www.isac-net.org/std/'
                               b'Gating-ML/v2.0/gating">']))
def test_fuzz_random_bytes(raw: bytes, prefix: bytes) -> None:
    path = _WORK / "random.xml"
    path.write_bytes(prefix + raw)
    outcome(path, read_gatingml)
    outcome(path, load_strategy)


_NS = ('xmlns:gating="http://www.isac-net.org/std/Gating-ML/v2.0/gating" '
       'xmlns:data-type="http://www.isac-net.org/std/Gating-ML/v2.0/datatypes"')
_GATE = ('<gating:RectangleGate gating:id="{name}"><gating:dimension gating:min="0" '
         'gating:max="1"><data-type:fcs-dimension data-type:name="FL1-H"/></gating:dimension>'
         '</gating:RectangleGate>')
HOSTILE = {
    "xxe-file": f'<?xml version="1.0"?><!DOCTYPE g [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                f'<gating:Gating-ML {_NS}>{_GATE.format(name="&x;")}</gating:Gating-ML>',
    "xxe-http": f'<?xml version="1.0"?><!DOCTYPE g [<!ENTITY x SYSTEM "http://127.0.0.1:9/x">]>'
                f'<gating:Gating-ML {_NS}>{_GATE.format(name="&x;")}</gating:Gating-ML>',
    "parameter-entity": '<?xml version="1.0"?><!DOCTYPE g [<!ENTITY % p SYSTEM '
                        '"file:///etc/passwd"> %p;]><g/>',
    "billion-laughs": '<?xml version="1.0"?><!DOCTYPE g [<!ENTITY a "aaaaaaaaaa">'
                      + "".join(f'<!ENTITY {chr(98 + k)} "{("&" + chr(97 + k) + ";") * 10}">'
                                for k in range(9))
                      + f']><gating:Gating-ML {_NS}>{_GATE.format(name="&j;")}</gating:Gating-ML>',
    "quadratic-blowup": '<?xml version="1.0"?><!DOCTYPE g [<!ENTITY a "' + "a" * 50_000
                        + f'">]><gating:Gating-ML {_NS}>'
                        + _GATE.format(name="&a;" * 2000) + "</gating:Gating-ML>",
    "duplicate-ids": f'<gating:Gating-ML {_NS}>{_GATE.format(name="A")}'
                     f'{_GATE.format(name="A")}</gating:Gating-ML>',
    "wrong-namespace": '<Gating-ML xmlns="http://www.isac-net.org/std/Gating-ML/v1.5/gating"/>',
    "no-gates": f'<gating:Gating-ML {_NS}/>',
    "deep-nesting": f'<gating:Gating-ML {_NS}>' + "<x>" * 5000 + "</x>" * 5000
                    + "</gating:Gating-ML>",
    "deep-gate-chain": f'<gating:Gating-ML {_NS}>' + "".join(
        _GATE.format(name=f'G{k}" gating:parent_id="G{k + 1}') for k in range(3000))
        + _GATE.format(name="G3000") + "</gating:Gating-ML>",
    "empty": "",
    "utf16-bom": "\ufeff",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_documents_are_refused(name: str) -> None:
    path = _WORK / f"{name}.xml"
    path.write_text(HOSTILE[name], encoding="utf-8")
    for read in (read_gatingml, load_strategy):
        with pytest.raises(InputError) as info:
            read(path)
        message = str(info.value)
        assert path.name in message and "\n" not in message
        assert "root:" not in message  # /etc/passwd never read into a message


def test_external_dtd_is_never_fetched() -> None:
    # a DOCTYPE naming an external DTD (an unreachable port here) is read without loading it
    path = _WORK / "external-dtd.xml"
    path.write_text(f'<?xml version="1.0"?><!DOCTYPE g SYSTEM "http://127.0.0.1:9/x.dtd">'
                    f'<gating:Gating-ML {_NS}>{_GATE.format(name="A")}</gating:Gating-ML>')
    assert [g.id for g in read_gatingml(path).gates.values()] == ["A"]


def test_missing_file_and_directory(tmp_path: Path) -> None:
    for path in (tmp_path / "absent.xml", tmp_path):
        with pytest.raises(InputError):
            read_gatingml(path)
