"""write_fcs: files must read back bit-exactly with independent readers (flowio, FlowKit)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
import numpy as np
import pytest

from immunoprofile.errors import InputError
from immunoprofile.flow.fcs_write import _header, format_spillover, write_fcs

CHANNELS = ["FSC-A", "SSC-A", "BV421-A", "PE-A", "Time"]
MARKERS = ["", "", "CD3", "CD4", ""]


def _events(n: int = 2000, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.lognormal(7, 1.2, size=(n, len(CHANNELS))).astype(np.float32) - 50


def _read_flowio(path) -> tuple[flowio.FlowData, np.ndarray]:
    import flowio

    fd = flowio.FlowData(str(path))
    return fd, np.asarray(fd.as_array(preprocess=False), dtype=np.float32)


def test_roundtrip_flowio_values_names_markers(tmp_path):
    events = _events()
    path = write_fcs(tmp_path / "a.fcs", events, CHANNELS, MARKERS,
                     text={"$DATE": "24-NOV-2026", "$CYT": "Simulated cytometer"})
    fd, back = _read_flowio(path)
    assert fd.version == "3.1"
    assert fd.event_count == 2000 and fd.channel_count == 5
    assert np.array_equal(back, events)  # float32 little-endian, no precision lost
    text = fd.text
    assert [text[f"p{i}n"] for i in range(1, 6)] == CHANNELS
    assert text["p3s"] == "CD3" and text["p4s"] == "CD4"
    assert "p1s" not in text  # blank markers are omitted, not written empty
    assert text["datatype"] == "F" and text["byteord"] == "1,2,3,4" and text["mode"] == "L"
    assert text["nextdata"] == "0" and text["p1e"] == "0,0" and text["p1b"] == "32"
    assert text["date"] == "24-NOV-2026" and text["cyt"] == "Simulated cytometer"
    # HEADER and TEXT agree on where DATA lives, and the data segment has exactly the right size.
    assert fd.header["data_start"] == int(text["begindata"])
    assert fd.header["data_stop"] == int(text["enddata"])
    assert int(text["enddata"]) - int(text["begindata"]) + 1 == events.nbytes
    raw = path.read_bytes()
    assert raw[:10] == b"FCS3.1    "
    assert raw[-8:] == b"00000000"  # CRC field present (uncomputed)
    assert len(raw) == int(text["enddata"]) + 1 + 8


def test_roundtrip_flowkit_spillover(tmp_path):
    import flowkit as fk

    matrix = np.array([[1.0, 0.123456789], [1e-5, 1.0]])
    spill_channels = ["BV421-A", "PE-A"]
    path = write_fcs(tmp_path / "s.fcs", _events(), CHANNELS, MARKERS,
                     spillover=(spill_channels, matrix))
    sample = fk.Sample(str(path))
    assert sample.pnn_labels == CHANNELS
    spill = sample.metadata["spillover"]
    parts = spill.split(",")
    assert parts[0] == "2" and parts[1:3] == spill_channels
    assert np.array_equal(np.array(parts[3:], dtype=float).reshape(2, 2), matrix)
    comp = fk.Matrix(spill, detectors=spill_channels)  # FlowKit parses our $SPILLOVER
    np.testing.assert_array_equal(np.asarray(comp.matrix, dtype=float), matrix)
    # FlowKit's compensation with it equals observed @ inv(S) on the spillover channels.
    sample.apply_compensation(spill)
    comped = sample.get_events(source="comp")
    raw = sample.get_events(source="raw")
    expected = raw[:, 2:4] @ np.linalg.inv(matrix)
    np.testing.assert_allclose(comped[:, 2:4], expected, rtol=1e-9, atol=1e-6)


def test_spillover_object_with_attributes(tmp_path):
    class Spill:
        channels = ("PE-A", "BV421-A")
        matrix = np.array([[1.0, 0.5], [0.25, 1.0]])

    path = write_fcs(tmp_path / "o.fcs", _events(10), CHANNELS, MARKERS, spillover=Spill())
    fd, _ = _read_flowio(path)
    assert fd.text["spillover"] == "2,PE-A,BV421-A,1.0,0.5,0.25,1.0"


def test_read_back_with_immunoprofile_reader(tmp_path):
    from immunoprofile.flow.fcs import read_fcs

    events = _events()
    matrix = np.array([[1.0, 0.1], [0.05, 1.0]])
    path = write_fcs(tmp_path / "r.fcs", events, CHANNELS, MARKERS,
                     spillover=(["BV421-A", "PE-A"], matrix))
    fcs = read_fcs(path)
    assert fcs.version.endswith("3.1")  # "FCS3.1" as in the HEADER
    assert list(fcs.channels) == CHANNELS
    assert list(fcs.markers) == MARKERS
    assert np.array_equal(fcs.events, events)
    assert fcs.channel_index("CD4") == 3
    assert tuple(fcs.spillover.channels) == ("BV421-A", "PE-A")
    np.testing.assert_array_equal(fcs.spillover.matrix, matrix)


def test_numpy_names_fortran_order_and_big_endian_input(tmp_path):
    from immunoprofile.flow.fcs import read_fcs

    events = np.asfortranarray(_events(50).astype(">f8"))
    path = write_fcs(tmp_path / "n.fcs", events, np.array(CHANNELS), np.array(MARKERS))
    fcs = read_fcs(path)
    assert list(fcs.markers) == MARKERS
    assert np.array_equal(fcs.events, events.astype(np.float32))


def test_deterministic_bytes(tmp_path):
    events = _events()
    a = write_fcs(tmp_path / "a.fcs", events, CHANNELS, MARKERS, text={"$DATE": "01-JAN-2026"})
    b = write_fcs(tmp_path / "b.fcs", events, CHANNELS, MARKERS, text={"$DATE": "01-JAN-2026"})
    assert a.read_bytes() == b.read_bytes()


def test_delimiter_avoids_clashes_and_doubles_as_last_resort(tmp_path):
    from immunoprofile.flow.fcs import read_fcs

    path = write_fcs(tmp_path / "d.fcs", _events(5), CHANNELS, MARKERS, text={"$COM": "a|b"})
    raw = path.read_bytes()
    assert raw[58:59] == b"/" and b"/$COM/a|b/" in raw   # "|" occurs in TEXT, so "/" delimits
    assert read_fcs(path).text["$COM"] == "a|b"
    everything = "|/\\!^~\x0c"
    path = write_fcs(tmp_path / "e.fcs", _events(5), CHANNELS, MARKERS,
                     text={"$COM": f"x{everything}y"})
    raw = path.read_bytes()
    assert raw[58:59] == b"|" and b"|$COM|x||/" in raw    # no free candidate: doubled
    assert read_fcs(path).text["$COM"] == f"x{everything}y"


def test_ranges_default_and_override(tmp_path):
    events = _events(100)
    events[0, 4] = 500000.5  # Time above the default range
    path = write_fcs(tmp_path / "r.fcs", events, CHANNELS, MARKERS, text={"$P1R": "1024"})
    fd, _ = _read_flowio(path)
    assert fd.text["p1r"] == "1024"
    assert fd.text["p2r"] == "262144"
    assert fd.text["p5r"] == "500001"


def test_zero_events(tmp_path):
    path = write_fcs(tmp_path / "z.fcs", np.zeros((0, 5), np.float32), CHANNELS, MARKERS)
    raw = path.read_bytes()
    assert b"|$TOT|0|" in raw and b"|$BEGINDATA|0|" in raw


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channels": ["A", "A", "B", "C", "D"]}, "duplicate"),
        ({"channels": ["A", "B"]}, "channel names"),
        ({"channels": ["A", "", "B", "C", "D"]}, "non-empty"),
        ({"channels": ["A,1", "B", "C", "D", "E"]}, "commas"),
        ({"text": {"$TOT": "5"}}, "$TOT"),
        ({"text": {"$p2n": "x"}}, "$P2N"),
        ({"text": {"$COM": ""}}, "empty"),
        ({"spillover": (["XX-A"], [[1.0]])}, "XX-A"),
        ({"spillover": (["PE-A"], [[1.0, 2.0]])}, "shape"),
    ],
)
def test_invalid_arguments_raise_input_error(tmp_path, kwargs, message):
    args = {"channels": CHANNELS, "markers": None, **kwargs}
    with pytest.raises(InputError, match=message.replace("$", r"\$")):
        write_fcs(tmp_path / "bad.fcs", _events(5), **args)
    assert not (tmp_path / "bad.fcs").exists()


def test_header_large_offsets_moved_to_text():
    small = _header(58, 500, 501, 99_999_999)
    assert len(small) == 58 and small[:10] == b"FCS3.1    "
    assert small[26:34].strip() == b"501" and small[34:42].strip() == b"99999999"
    big = _header(58, 500, 501, 100_000_000)
    assert big[26:34].strip() == b"0" and big[34:42].strip() == b"0"
    assert big[10:18].strip() == b"58" and big[18:26].strip() == b"500"


@pytest.mark.slow
def test_file_larger_than_99999999_bytes(tmp_path):
    # 25.2M float32 values: DATA ends beyond byte 99,999,999, so HEADER carries 0 and TEXT the
    # real offsets.
    n = 12_600_000
    events = np.zeros((n, 2), dtype=np.float32)
    events[:, 0] = np.arange(n, dtype=np.float32)
    events[-1, 1] = 7.5
    path = write_fcs(tmp_path / "big.fcs", events, ["A", "B"], ["", ""])
    with open(path, "rb") as handle:
        header = handle.read(58)
    assert header[26:34].strip() == b"0" and header[34:42].strip() == b"0"
    import flowio

    fd = flowio.FlowData(str(path), only_text=True)
    begin, end = int(fd.text["begindata"]), int(fd.text["enddata"])
    assert end > 99_999_999 and end - begin + 1 == events.nbytes
    back = np.memmap(path, dtype="<f4", mode="r", offset=begin, shape=(n, 2))
    assert back[-1, 1] == 7.5 and back[n - 1, 0] == np.float32(n - 1)
    del back


def test_format_spillover_roundtrips_floats():
    text = format_spillover(["a", "b"], [[1.0, 0.1 + 0.2], [1 / 3, 1.0]])
    parts = text.split(",")
    assert [float(v) for v in parts[3:]] == [1.0, 0.1 + 0.2, 1 / 3, 1.0]


_name_chars = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters=",")


@settings(max_examples=25, deadline=None)
@given(
    n_events=st.integers(0, 50),
    # read_fcs strips surrounding blanks from names and markers (common instrument padding)
    names=st.lists(st.text(_name_chars, min_size=1, max_size=8).filter(
        lambda s: s.strip() == s and s), min_size=1, max_size=5, unique=True),
    marker=st.text(_name_chars, max_size=8).filter(lambda s: s.strip() == s),
    comment=st.text(_name_chars, min_size=1, max_size=20).filter(lambda s: s.strip()),
    seed=st.integers(0, 2**16),
)
def test_property_roundtrip_through_read_fcs(tmp_path_factory, n_events, names, marker, comment,
                                              seed):
    """Any channel names, markers and keyword values (incl. the delimiter, non-ASCII) survive."""
    from immunoprofile.flow.fcs import read_fcs

    rng = np.random.default_rng(seed)
    events = rng.normal(0, 1e4, size=(n_events, len(names))).astype(np.float32)
    markers = [marker] + [""] * (len(names) - 1)
    path = tmp_path_factory.mktemp("prop") / "p.fcs"
    write_fcs(path, events, names, markers, text={"$COM": comment})
    fcs = read_fcs(path)
    assert list(fcs.channels) == names
    assert fcs.markers[0] == (marker if marker.strip() else "")
    assert fcs.text["$COM"] == comment
    assert fcs.n_events == n_events
    assert np.array_equal(fcs.events.reshape(n_events, len(names)), events)
