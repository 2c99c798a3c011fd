"""Fuzzing of the user-typed CSV tables with mutations of real files (issue 7): the clinical
table, the manifest, the kit standards table, the plate layout, the generic plate CSV and the
bead-level export. Each must give its documented result or an InputError naming the file.
"""

from __future__ import annotations

import functools
import math
import shutil
import tempfile
from functools import cache
from pathlib import Path

import pytest
from _fuzzkit import EXAMPLE_DIR, FUZZ, REFERENCE_DIR, mutate, outcome
from hypothesis import given
from hypothesis import strategies as st

from immunoprofile.cytokine.readers import PlateData, read_plate
from immunoprofile.cytokine.readers.beadlevel import read_beadlevel
from immunoprofile.cytokine.readers.layout import read_generic, read_layout
from immunoprofile.cytokine.readers.standards import read_standards
from immunoprofile.errors import InputError
from immunoprofile.study.clinical import read_clinical
from immunoprofile.study.manifest import read_manifest

_WORK = Path(tempfile.mkdtemp(prefix="tables_fuzz_"))
# the manifest names plate files relative to its folder: keep the real layout beside it
shutil.copytree(EXAMPLE_DIR / "plates", _WORK / "plates")

GENERIC = b"""well,analyte,mfi,count,sample
A1,IL-6,20,80,Background0
A2,IL-6,24,81,Background0
B1,IL-6,15000,90,Standard1
B2,IL-6,5000,95,Standard2
C1,IL-6,300,70,P01
A1,IL-13,10,77,Background0
A2,IL-13,12,75,Background0
B1,IL-13,9000,90,Standard1
B2,IL-13,3000,88,Standard2
C1,IL-13,50,60,P01
"""
LAYOUT = b"""well,sample,sample_type,dilution,expected_conc,analyte
A1,Blank,background,,,
A2,QC-low,control,,,
B1,Std1,standard,,1000,
B2,Std2,,,250,IL-6
C1,P01-W4,unknown,4,,
H12,Nothing,unknown,,,
"""
BEADLEVEL = REFERENCE_DIR / "cytokine" / "xponent" / "drLumi_beadlevel_plate_P1_A1.csv"

TABLE_TOKENS = [b"AD01", b"AD99", b"week0", b"week99", b"screening", b"run-in", b"flow",
                b"cytokine", b"plate1", b"A1", b"Z99", b"E3;E4", b"M", b"F", b"X", b"Standard1",
                b"Background0", b"standard", b"background", b"IL-6", b"pg/mL", b"-50", b"1e300"]


@cache
def _bytes(name: str) -> bytes:
    if name == "beadlevel":
        # the first 300 lines of a real bead-level export keep examples fast
        return b"".join(BEADLEVEL.read_bytes().splitlines(keepends=True)[:300])
    return {"clinical": (EXAMPLE_DIR / "clinical.csv").read_bytes(),
            "manifest": (EXAMPLE_DIR / "manifest.csv").read_bytes(),
            "standards": (EXAMPLE_DIR / "standards.csv").read_bytes(),
            "layout": LAYOUT, "generic": GENERIC}[name]


def _check_clinical(frame) -> None:
    assert {"subject_id", "visit", "scorad"} <= set(frame.columns)
    assert not frame.duplicated(["subject_id", "visit"]).any()
    for value in frame["scorad"]:
        assert math.isnan(value) or 0 <= value <= 103


def _check_manifest(frame) -> None:
    assert {"sample_id", "subject_id", "visit", "assay"} <= set(frame.columns)
    assert frame["sample_id"].is_unique


def _check_plate(plate: PlateData) -> None:
    assert isinstance(plate, PlateData) and not plate.wells.empty
    assert plate.wells.duplicated(["plate", "well", "analyte"]).sum() == 0
    assert set(plate.wells["sample_type"]) <= {"background", "standard", "control", "unknown"}


READERS = {
    "clinical": (functools.partial(read_clinical, design="example-trial"), _check_clinical),
    "manifest": (functools.partial(read_manifest, design="example-trial"), _check_manifest),
    "standards": (read_standards, None),
    "layout": (read_layout, None),
    "generic": (read_generic, _check_plate),
    "beadlevel": (read_beadlevel, _check_plate),
}


def test_seeds_read() -> None:
    for name, (read, check) in READERS.items():
        if name == "beadlevel" and not BEADLEVEL.is_file():
            continue
        path = _WORK / f"seed_{name}.csv"
        path.write_bytes(_bytes(name))
        assert outcome(path, read, check) == "ok", name


@FUZZ
@given(data=st.data(), name=st.sampled_from(sorted(READERS)))
def test_fuzz_mutated_tables(data: st.DataObject, name: str) -> None:
    if name == "beadlevel" and not BEADLEVEL.is_file():
        return
    read, check = READERS[name]
    blob = data.draw(mutate(_bytes(name), TABLE_TOKENS))
    path = _WORK / f"fuzz_{name}.csv"
    path.write_bytes(blob)
    outcome(path, read, check)
    if name in ("generic", "beadlevel"):
        # the dispatcher sniffs the format from the same bytes
        outcome(path, read_plate, _check_plate)


@FUZZ
@given(raw=st.binary(max_size=500), name=st.sampled_from(sorted(READERS)))
def test_fuzz_random_bytes(raw: bytes, name: str) -> None:
    read, _ = READERS[name]
    path = _WORK / f"random_{name}.csv"
    path.write_bytes(raw)
    outcome(path, read)


@pytest.mark.parametrize("name", sorted(READERS))
@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf", b"\n\n\n", b"\x00" * 64,
                                     b"a,a,a\n1,2,3\n", b"\"unterminated\n"],
                         ids=["empty", "bom", "blank-lines", "nul", "duplicate-names", "quote"])
def test_degenerate_files_are_input_errors(name: str, content: bytes) -> None:
    read, _ = READERS[name]
    path = _WORK / f"degenerate_{name}.csv"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        read(path)
    assert path.name in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name", sorted(READERS))
def test_missing_file_and_directory(tmp_path: Path, name: str) -> None:
    read, _ = READERS[name]
    for path in (tmp_path / "absent.csv", tmp_path):
        with pytest.raises(InputError):
            read(path)
