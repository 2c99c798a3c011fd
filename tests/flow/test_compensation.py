"""Tests of immunoprofile.flow.compensation against FlowKit and hand-checked matrices."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from immunoprofile.errors import InputError
from immunoprofile.flow.compensation import (Spillover, compensate, parse_spillover,
                                             read_compensation_csv, resolve_compensation)
from immunoprofile.flow.fcs import read_fcs


def _flowkit_sample(path: Path):
    import flowkit as fk

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fk.Sample(str(path), ignore_offset_error=True)


def test_comp_csv_applies_like_flowkit(reference_dir: Path) -> None:
    base = reference_dir / "flow" / "fcs_edge_cases" / "flowkit"
    csv_path = base / "comp_complete_example.csv"
    fcs = read_fcs(base / "test_comp_example.fcs", dtype=np.float64)
    spill = resolve_compensation(csv_path, fcs)
    assert spill is not None and spill.n_channels == 14
    ours = compensate(fcs.events, fcs.channels, spill)

    sample = _flowkit_sample(base / "test_comp_example.fcs")
    sample.apply_compensation(str(csv_path))
    theirs = sample.get_events(source="comp")
    assert theirs.shape == ours.shape
    scale = np.abs(theirs).max(axis=0) + 1.0
    np.testing.assert_array_less(np.abs(ours - theirs) / scale, 1e-4)
    # the changed columns are exactly the matrix's channels
    changed = sorted({fcs.channels[j] for j in np.flatnonzero((ours != fcs.events).any(axis=0))})
    assert changed and set(changed) <= set(spill.channels)
    untouched = [j for j, c in enumerate(fcs.channels) if c not in spill.channels]
    np.testing.assert_array_equal(ours[:, untouched], fcs.events[:, untouched])


def test_file_spill_like_flowkit(reference_dir: Path) -> None:
    path = reference_dir / "flow" / "fcs_edge_cases" / "flowkit" / "100715.fcs"
    fcs = read_fcs(path, dtype=np.float64)
    spill = resolve_compensation("fcs", fcs)
    ours = compensate(fcs.events, fcs.channels, spill)
    sample = _flowkit_sample(path)
    sample.apply_compensation(sample.metadata["spill"])
    theirs = sample.get_events(source="comp")
    scale = np.abs(theirs).max(axis=0) + 1.0
    np.testing.assert_array_less(np.abs(ours - theirs) / scale, 1e-9)


def test_columns_subset_equals_full(reference_dir: Path) -> None:
    base = reference_dir / "flow" / "fcs_edge_cases" / "flowkit"
    fcs = read_fcs(base / "test_comp_example.fcs")
    spill = resolve_compensation(base / "comp_complete_example.csv", fcs)
    full = compensate(fcs.events, fcs.channels, spill)
    cols = ["PE-A", "FSC-A", 11, "Qdot705-A"]
    sub = compensate(fcs.events, fcs.channels, spill, columns=cols)
    idx = [fcs.channels.index("PE-A"), 0, 11, fcs.channels.index("Qdot705-A")]
    assert sub.shape == (fcs.n_events, 4) and sub.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(sub, full[:, idx], rtol=1e-6, atol=1e-3)
    assert sub.dtype == np.float32


def test_compensate_known_two_channel_case() -> None:
    # true signals (a, b); detector sees a + 0.2 b and 0.1 a + b
    true = np.array([[100.0, 0.0], [0.0, 50.0], [10.0, 20.0]])
    s = Spillover(("A", "B"), np.array([[1.0, 0.1], [0.2, 1.0]]))
    raw = true @ s.matrix
    raw3 = np.column_stack([raw, [1.0, 2.0, 3.0]])
    out = compensate(raw3, ["A", "B", "FSC"], s)
    np.testing.assert_allclose(out[:, :2], true, atol=1e-12)
    np.testing.assert_array_equal(out[:, 2], [1.0, 2.0, 3.0])
    assert compensate(raw3, ["A", "B", "FSC"], None).tolist() == raw3.tolist()


def test_spillover_validation() -> None:
    with pytest.raises(InputError, match="not square"):
        Spillover(("A", "B"), np.ones((2, 3)))
    with pytest.raises(InputError, match="singular"):
        Spillover(("A", "B"), np.ones((2, 2)))
    with pytest.raises(InputError, match="NaN or infinite"):
        Spillover(("A", "B"), np.array([[1, np.nan], [0, 1]]))
    with pytest.raises(InputError, match="repeat"):
        Spillover(("A", "A"), np.eye(2))
    with pytest.raises(InputError, match="names 3 channels"):
        Spillover(("A", "B", "C"), np.eye(2))
    s = Spillover(("A", "B"), [[1, 0.5], [0, 1]])
    assert s.matrix.dtype == np.float64 and not s.matrix.flags.writeable
    np.testing.assert_allclose(s.inverse @ s.matrix, np.eye(2), atol=1e-15)
    assert parse_spillover(s.to_keyword()) == s


def test_parse_spillover_errors() -> None:
    s = parse_spillover(" 2, A ,B,1,0.1,0,1 ")
    assert s.channels == ("A", "B")
    for bad, match in [("x,A,B", "channel count"), ("2,A,B,1,0,0", "7 fields are expected"),
                       ("2,A,B,1,0,zero,1", "non-numeric"), ("0", "not plausible"),
                       ("", "channel count")]:
        with pytest.raises(InputError, match=match):
            parse_spillover(bad)


def test_read_flowjo_csvs(reference_dir: Path) -> None:
    d = reference_dir / "flow" / "flowjo_wsp" / "8_color_data_set"
    full = read_compensation_csv(d / "den_comp.csv")
    assert full.n_channels == 8 and full.channels[0] == "TNFa FITC FLR-A"
    assert full.matrix[0, 1] == pytest.approx(0.014139)
    np.testing.assert_array_equal(np.diag(full.matrix), 1.0)
    null = read_compensation_csv(d / "den_comp_null_channel.csv")
    assert null.n_channels == 7 and "TNFa FITC FLR-A" not in null.channels
    # the 7 remaining rows/columns equal the full matrix's rows/columns of those channels
    idx = [full.channels.index(c) for c in null.channels]
    np.testing.assert_allclose(null.matrix, full.matrix[np.ix_(idx, idx)])


def test_csv_with_row_labels_and_tabs(tmp_path: Path) -> None:
    p = tmp_path / "m.tsv"
    p.write_text("\tA\tB\nA\t1\t0.3\nB\t0.1\t1\n")
    s = read_compensation_csv(p)
    assert s.channels == ("A", "B") and s.matrix[0, 1] == 0.3
    bad = tmp_path / "bad.csv"
    bad.write_text("A,B\n1,0\n")
    with pytest.raises(InputError, match="1 rows for 2 channels"):
        read_compensation_csv(bad)
    bad.write_text("A,B\n1,x\n0,1\n")
    with pytest.raises(InputError, match="line 2 holds a non-numeric value"):
        read_compensation_csv(bad)
    with pytest.raises(InputError, match="not found"):
        read_compensation_csv(tmp_path / "none.csv")


def test_resolve_compensation_specs(reference_dir: Path) -> None:
    base = reference_dir / "flow" / "fcs_edge_cases" / "flowkit"
    fcs = read_fcs(base / "test_comp_example.fcs")
    assert resolve_compensation("none", fcs) is None
    assert resolve_compensation(None, fcs) is None
    assert resolve_compensation("fcs", fcs) == fcs.spillover
    other = read_fcs(reference_dir / "flow" / "gatingml2" / "data1.fcs")
    assert resolve_compensation("fcs", other) is None
    with pytest.raises(InputError, match="names channels not in this file: Ax488-A, PE-A"):
        resolve_compensation(base / "comp_complete_example.csv", other)
    # markers are accepted and mapped to $PnN
    s = resolve_compensation(Spillover(("CD4", "PE-A"), np.eye(2)), fcs)
    assert s.channels == ("PacBlu-A", "PE-A")
    with pytest.raises(InputError):
        resolve_compensation(3.5, fcs)  # type: ignore[arg-type]


def test_compensate_errors() -> None:
    s = Spillover(("A", "B"), np.eye(2))
    with pytest.raises(InputError, match="spillover channels not in the events: B"):
        compensate(np.zeros((2, 2)), ["A", "C"], s)
    with pytest.raises(InputError, match="shape"):
        compensate(np.zeros((2, 3)), ["A", "B"], s)
    with pytest.raises(InputError, match="'Z' is not in the events"):
        compensate(np.zeros((2, 2)), ["A", "B"], s, columns=["Z"])


def test_non_finite_values_stay_in_their_column() -> None:
    s = Spillover(("A", "B"), np.array([[1.0, 0.1], [0.2, 1.0]]))
    raw = np.array([[10.0, 5.0, np.inf], [1.0, np.nan, 2.0], [3.0, 4.0, 5.0]], dtype=np.float32)
    out = compensate(raw, ["A", "B", "Time"], s)
    exact = raw[:, :2].astype(np.float64) @ np.linalg.inv(s.matrix)
    np.testing.assert_allclose(out[0, :2], exact[0], rtol=1e-6)  # inf in Time does not leak
    assert out[0, 2] == np.inf
    assert np.isnan(out[1, :2]).all() and out[1, 2] == 2.0  # NaN in B spreads only through S
    np.testing.assert_allclose(out[2, :2], exact[2], rtol=1e-6)
    sub = compensate(raw, ["A", "B", "Time"], s, columns=["Time", "A"])
    assert sub[0, 0] == np.inf and np.isfinite(sub[0, 1])


_FUZZ = int(__import__("os").environ.get("IMMUNOPROFILE_FUZZ_EXAMPLES", 60))


@settings(max_examples=_FUZZ, deadline=2000,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(
    st.text(max_size=300),
    st.lists(st.lists(st.sampled_from(["1", "0", "0.5", "x", "", "nan", "inf", "1e308", "A", "B",
                                       "-0.1", "#A", " "]), max_size=5), max_size=6)
    .map(lambda rows: "\n".join(",".join(r) for r in rows))))
def test_fuzz_csv_and_keyword(tmp_path: Path, text: str) -> None:
    """Any text gives a valid Spillover or an InputError naming the file."""
    p = tmp_path / "fuzz.csv"
    p.write_bytes(text.encode("utf-8", errors="replace"))
    for parse in (lambda: read_compensation_csv(p), lambda: parse_spillover(text, source=str(p))):
        try:
            s = parse()
        except InputError as exc:
            assert "\n" not in str(exc) and str(p) in str(exc)
            continue
        assert s.matrix.shape == (s.n_channels, s.n_channels)
        assert np.isfinite(s.inverse).all()
