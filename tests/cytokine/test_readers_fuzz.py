"""Fuzzing every plate reader: a PlateData or an InputError, never another exception.

Mutated real files (byte flips, insertions, deletions, truncation; line and cell edits that keep
the format recognisable so the deep parsers run), random bytes, NaN/Inf cells and empty files.
The budget per test is ``IMMUNOPROFILE_FUZZ_EXAMPLES`` (default 60; ``make fuzz`` raises it).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from immunoprofile.cytokine.readers import FORMATS, PlateData, WELL_COLUMNS, read_plate
from immunoprofile.cytokine.readers.layout import read_layout
from immunoprofile.cytokine.readers.standards import read_standards
from immunoprofile.errors import InputError

EXAMPLES = int(os.environ.get("IMMUNOPROFILE_FUZZ_EXAMPLES", 60))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# small real files of every format (the big ones only make each example slower)
TEXT_SEEDS = [
    "xponent/drLumi_plate1_LX200_xPONENT3.1_analysisON_5PL.csv",
    "xponent/allotropy_FlexMAP3D_NaN_and_not_reported.csv",
    "xponent/allotropy_FlexMAP3D_xPONENT4.3_example02_saved_unquoted.csv",
    "xponent/allotropy_Intelliflex_xPONENTstyle_example01.csv",
    "xponent/allotropy_Intelliflex_v2.2_flat.csv",
    "xponent/serolyzer_MAGPIX_xPONENT4.2_Chul_IgG3_1_quoted.csv",
    "msd/allotropy_msd_workbench_test_1.csv",
    "msd/allotropy_msd_workbench_test_2_SYNTHETIC.csv",
    "msd/allotropy_msd_methodical_mind_plate_reader_test_1.txt",
    "msd/allotropy_msd_methodical_mind_384_wells.txt",
]
BINARY_SEEDS = [
    "bioplex/labkey_03-31A82-IgA-Biotin.xls",
    "bioplex/labkey_pnLINCO20070302A.xlsx",
]
NASTY_CELLS = ["NaN", "nan", "Inf", "-Inf", "1e309", "-1e309", "", "Not Reported", "<", "> 3",
               "OOR <", "***", "---", "0", "-0", "1(1,A1)", "Standard1", "DataType:", '"', "\x00",
               "9" * 400, "A99", "1(99,Z99)"]


class _Seeds(dict):
    """The seed files' bytes (short repr: hypothesis prints its arguments on failure)."""

    def __repr__(self) -> str:
        return f"<{len(self)} seed files>"


GENERIC_SEED = (b"well,analyte,mfi,count,sample,sample_type,dilution,expected_conc,unit,"
                b"bead_region\n"
                b"A1,IL-6,20,80,Background0,background,1,,pg/mL,19\n"
                b"B1,IL-6,15000,90,Standard1,standard,1,1000,pg/mL,19\n"
                b"B2,IL-6,5000,95,Standard2,standard,1,250,pg/mL,19\n"
                b"C1,IL-6,300,70,P01,unknown,2,,pg/mL,19\n")


@pytest.fixture(scope="module")
def seeds(reference_dir: Path, example_dir: Path) -> dict[str, bytes]:
    base = reference_dir / "cytokine"
    out = _Seeds({name: (base / name).read_bytes() for name in TEXT_SEEDS + BINARY_SEEDS})
    out["generic.csv"] = GENERIC_SEED
    example_plate = example_dir / "plates" / "plate1.csv"
    if example_plate.is_file():  # the simulated trial's xPONENT 4.2 export
        out["example_plate1.csv"] = example_plate.read_bytes()
    return out


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="immunoprofile-fuzz-") as tmp:
        yield Path(tmp)


def _check(path: Path, data: bytes, **kwargs) -> None:
    path.write_bytes(data)
    try:
        plate = read_plate(path, **kwargs)
    except InputError as exc:
        assert str(exc).startswith(str(path)), str(exc)
        assert "\n" not in str(exc)
        return
    assert isinstance(plate, PlateData)
    assert list(plate.wells.columns) == list(WELL_COLUMNS)
    assert len(plate.wells) > 0
    assert plate.format in FORMATS
    assert set(plate.wells["sample_type"]) <= {"background", "standard", "control", "unknown"}
    assert (plate.wells["dilution"] > 0).all()
    json.dumps(plate.metadata, allow_nan=False)
    json.dumps(plate.repairs, allow_nan=False)


def _suffix(name: str) -> str:
    return Path(name).suffix


@FUZZ
@given(data=st.data())
def test_fuzz_byte_mutations(seeds: dict[str, bytes], scratch: Path, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(seeds)))
    raw = bytearray(seeds[name])
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] = data.draw(st.integers(0, 255))
        elif op == "insert":
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del raw[pos:pos + data.draw(st.integers(1, 4096))]
        elif op == "truncate":
            del raw[pos:]
        elif op == "dup" and raw:
            raw[pos:pos] = raw[pos:pos + data.draw(st.integers(1, 2048))]
    _check(scratch / f"mutated{_suffix(name)}", bytes(raw))


@FUZZ
@given(data=st.data())
def test_fuzz_line_and_cell_edits(seeds: dict[str, bytes], scratch: Path,
                                  data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(n for n in seeds if n not in BINARY_SEEDS)))
    lines = seeds[name].decode("utf-8-sig").splitlines()
    for _ in range(data.draw(st.integers(1, 10))):
        if not lines:
            break
        i = data.draw(st.integers(0, len(lines) - 1))
        op = data.draw(st.sampled_from(["cell", "cell", "cell", "drop", "dup", "swap", "cut"]))
        sep = "\t" if "\t" in lines[i] else ","
        if op == "cell":
            cells = lines[i].split(sep)
            j = data.draw(st.integers(0, len(cells) - 1))
            cells[j] = data.draw(st.sampled_from(NASTY_CELLS) | st.text(max_size=12))
            lines[i] = sep.join(cells)
        elif op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "swap":
            k = data.draw(st.integers(0, len(lines) - 1))
            lines[i], lines[k] = lines[k], lines[i]
        else:
            del lines[i:]
    _check(scratch / f"edited{_suffix(name)}", ("\n".join(lines) + "\n").encode("utf-8"))


@FUZZ
@given(raw=st.binary(max_size=4096), fmt=st.sampled_from([None, *FORMATS]))
def test_fuzz_random_bytes(scratch: Path, raw: bytes, fmt: str | None) -> None:
    _check(scratch / "random.bin", raw, format=fmt)


@FUZZ
@given(text=st.text(max_size=2000), prefix=st.sampled_from(
    ["", "Program,xPONENT,,LX200\nDataType:,Median\nLocation,Sample,IL6\n",
     "EventNo,RID,DBL,DD,RP1\n", "Plate_X\nSample,Assay,Well,Signal\n",
     "==========Data====\n\t1\t2\nA\t", "well,analyte,mfi\n", "<BioPlexManager>",
     "MODEL NAME,WELL LOCATION,R25: RP1 MEDIAN\n"]))
def test_fuzz_recognisable_headers_with_random_bodies(scratch: Path, text: str,
                                                      prefix: str) -> None:
    suffix = ".xml" if prefix.startswith("<") else ".csv"
    _check(scratch / f"headed{suffix}", (prefix + text).encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("data", [b"", b"\n\n\n", b"\xef\xbb\xbf", b"   \t  "])
def test_empty_files(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(data)
    with pytest.raises(InputError, match="empty"):
        read_plate(path)


def test_directory_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="directory"):
        read_plate(tmp_path)


@FUZZ
@given(rows=st.lists(st.lists(st.sampled_from(NASTY_CELLS) | st.text(max_size=8), max_size=7),
                     max_size=12),
       header=st.sampled_from(["well,sample,sample_type,dilution,expected_conc,analyte,plate",
                               "analyte,standard,expected_conc,unit,control_low,control_high",
                               "well,sample", ""]))
def test_fuzz_layout_and_standards_tables(scratch: Path, rows: list[list[str]],
                                          header: str) -> None:
    path = scratch / "table.csv"
    body = "\n".join(",".join(c.replace("\n", " ").replace("\r", " ") for c in r) for r in rows)
    path.write_text(header + "\n" + body + "\n", encoding="utf-8", errors="surrogatepass")
    for reader in (read_layout, read_standards):
        try:
            reader(path)
        except InputError as exc:
            assert "\n" not in str(exc)
