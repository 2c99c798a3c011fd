"""The command-line contract, driven through real subprocesses with broken inputs (issue 7).

Exit codes: 0 all good; 1 some samples failed (listed in ``failed.tsv``, the rest completed);
2 usage or invalid input. An error is one line on stderr naming the file and the problem, with no
traceback unless ``--debug``; an exit-2 failure leaves no output files behind.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from immunoprofile.flow.fcs import read_fcs
from immunoprofile.flow.fcs_write import write_fcs

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = PROJECT_ROOT / "example_data"
COMMANDS = ["inspect", "gate", "compensate", "cytokines", "assemble", "compare", "report", "run", "validate",
            "schema"]


def ip(*args: str | os.PathLike[str], cwd: Path, prelude: str | None = None
       ) -> subprocess.CompletedProcess[str]:
    """Run ``immunoprofile ARGS`` in a fresh interpreter (``prelude``: code run before the CLI,
    used to inject an internal fault)."""
    cli = "from immunoprofile.cli import main; main()"
    code = cli if prelude is None else prelude + "\n" + cli
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "MPLBACKEND": "Agg", "COLUMNS": "80"}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_one_line_error(res: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """Exit ``code``; stderr is one ``error:`` line holding every needle; no traceback."""
    lines = res.stderr.strip().splitlines()
    assert res.returncode == code, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: "), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def assert_usage_error(res: subprocess.CompletedProcess[str], option: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr
    error = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and option in error[0], res.stderr


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def read_failed(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small working folder: two good FCS files (1500 real events each), a corrupt and a
    truncated one, one real plate export and a garbage one, strategies and broken tables."""
    root = tmp_path_factory.mktemp("cli")
    src = read_fcs(sorted((EXAMPLE / "flow").glob("AD01_week0*.fcs"))[0])
    for i, name in enumerate(["good1.fcs", "good2.fcs"]):
        write_fcs(root / name, src.events[i * 1500:(i + 1) * 1500], src.channels, src.markers,
                  spillover=src.spillover)
    raw = (root / "good1.fcs").read_bytes()
    (root / "truncated.fcs").write_bytes(raw[:len(raw) // 2])
    noise = np.random.default_rng(7).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    (root / "corrupt.fcs").write_bytes(b"FCS3.1    " + noise)
    shutil.copy(EXAMPLE / "strategy.yaml", root / "strategy.yaml")
    gml = (EXAMPLE / "strategy.gatingml.xml").read_text()
    assert 'data-type:name="SSC-A"' in gml
    (root / "nochannel.xml").write_text(gml.replace('data-type:name="SSC-A"',
                                                    'data-type:name="SSC-Q"'))
    (root / "broken_strategy.xml").write_text(gml[:len(gml) // 2])
    plates = root / "plates"
    plates.mkdir()
    shutil.copy(EXAMPLE / "plates" / "plate1.csv", plates / "plate1.csv")
    (plates / "garbage.csv").write_bytes(noise[:2000])
    shutil.copy(EXAMPLE / "standards.csv", root / "standards.csv")
    (root / "bad_standards.csv").write_text("analyte,standard\nIL-6,S1\n")
    (root / "bad_manifest.csv").write_text("sample_id,subject_id\nx,AD01\n")
    (root / "broken.yaml").write_text("schema_version: 1\ninputs: [\n")
    (root / "garbage.h5ad").write_bytes(noise[:2000])
    return root


# --------------------------------------------------------------------------------------------
# every command: an unknown option is a usage error (2), --help works, no traceback
@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_option_is_a_usage_error(ws: Path, command: str) -> None:
    assert_usage_error(ip(command, "--no-such-option", cwd=ws), "--no-such-option")


def test_every_command_is_listed_and_documented(ws: Path) -> None:
    res = ip("--help", cwd=ws)
    assert res.returncode == 0
    for command in COMMANDS:
        assert command in res.stdout


# --------------------------------------------------------------------------------------------
# inspect
def test_inspect_good_missing_corrupt_truncated(ws: Path) -> None:
    res = ip("inspect", "--json", "good1.fcs", cwd=ws)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)
    assert_one_line_error(ip("inspect", "absent.fcs", cwd=ws), 2, "absent.fcs", "not found")
    assert_one_line_error(ip("inspect", "corrupt.fcs", cwd=ws), 2, "corrupt.fcs")
    assert_one_line_error(ip("inspect", "truncated.fcs", cwd=ws), 2, "truncated.fcs",
                          "truncated")


def test_debug_shows_a_traceback_only_for_internal_errors(ws: Path) -> None:
    # a real internal fault (injected): one line and exit 1 without --debug, traceback with it
    prelude = ("import immunoprofile.flow.fcs as m\n"
               "def boom(*a, **k):\n    raise RuntimeError('injected fault')\n"
               "m.describe_fcs = m.read_fcs = m.read_fcs_metadata = boom")
    res = ip("inspect", "good1.fcs", cwd=ws, prelude=prelude)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    line, = res.stderr.strip().splitlines()
    assert "internal error" in line and "injected fault" in line and "--debug" in line
    res = ip("inspect", "--debug", "good1.fcs", cwd=ws, prelude=prelude)
    assert res.returncode != 0 and "Traceback" in res.stderr and "injected fault" in res.stderr
    # bad input stays exit 2 with --debug (the traceback is extra help, not a new exit code)
    res = ip("inspect", "--debug", "corrupt.fcs", cwd=ws)
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1].startswith("error: ")


# --------------------------------------------------------------------------------------------
# gate
def test_gate_some_samples_fail_exit_1_rest_complete(ws: Path) -> None:
    out = ws / "gate_mixed"
    res = ip("gate", "good1.fcs", "corrupt.fcs", "good2.fcs", "truncated.fcs",
             "--strategy", "strategy.yaml", "--out", out, cwd=ws)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    failed = read_failed(out / "failed.tsv")
    assert sorted(Path(r["input"]).name for r in failed) == ["corrupt.fcs", "truncated.fcs"]
    assert all(Path(r["input"]).name in r["reason"] for r in failed)
    reported = [line for line in res.stderr.splitlines() if line.startswith("failed: ")]
    assert len(reported) == 2 and any("truncated.fcs" in x and "truncated" in x for x in reported)
    with open(out / "populations.csv", newline="") as handle:
        samples = {row["sample_id"] for row in csv.DictReader(handle)}
    assert samples == {"good1", "good2"}
    assert (out / "provenance.json").is_file()
    assert not list(out.rglob("*.tmp*")), "no temporary files left"


def test_gate_all_good_exit_0(ws: Path) -> None:
    out = ws / "gate_good"
    res = ip("gate", "good1.fcs", "--strategy", "strategy.yaml", "--out", out, cwd=ws)
    assert res.returncode == 0, res.stderr
    assert (out / "populations.csv").is_file()
    assert not (out / "failed.tsv").exists() or read_failed(out / "failed.tsv") == []


def test_gate_strategy_naming_a_missing_channel(ws: Path) -> None:
    # the strategy reads, but no file has SSC-Q: every sample fails, each listed with the reason
    out = ws / "gate_nochannel"
    res = ip("gate", "good1.fcs", "good2.fcs", "--strategy", "nochannel.xml", "--out", out,
             cwd=ws)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    failed = read_failed(out / "failed.tsv")
    assert len(failed) == 2 and all("SSC-Q" in r["reason"] for r in failed)


@pytest.mark.parametrize("args,needles", [
    (["good1.fcs", "--strategy", "absent.yaml"], ["absent.yaml", "not found"]),
    (["good1.fcs", "--strategy", "broken_strategy.xml"], ["broken_strategy.xml"]),
    (["absent.fcs", "--strategy", "strategy.yaml"], ["absent.fcs"]),
    (["good1.fcs", "--strategy", "strategy.yaml", "--comp", "absent.csv"], ["absent.csv"]),
], ids=["missing-strategy", "broken-strategy", "missing-fcs", "missing-comp"])
def test_gate_invalid_input_exit_2_no_outputs(ws: Path, args: list[str],
                                              needles: list[str]) -> None:
    out = ws / "gate_exit2"
    assert_one_line_error(ip("gate", *args, "--out", out, cwd=ws), 2, *needles)
    assert not out.exists() or files_under(out) == []


# --------------------------------------------------------------------------------------------
# cytokines
def test_cytokines_garbage_plate_among_good_ones(ws: Path) -> None:
    out = ws / "cyto_mixed"
    res = ip("cytokines", "plates/plate1.csv", "plates/garbage.csv", "--standards",
             "standards.csv", "--out", out, cwd=ws)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    failed = read_failed(out / "failed.tsv")
    assert [Path(r["input"]).name for r in failed] == ["garbage.csv"]
    assert failed[0]["reason"]
    with open(out / "concentrations.csv", newline="") as handle:
        plates = {row["plate"] for row in csv.DictReader(handle)}
    assert plates and all("garbage" not in p for p in plates)


def test_cytokines_missing_plate_is_a_listed_failure(ws: Path) -> None:
    # a missing plate among the inputs is a failed sample (exit 1, listed), like a garbage one
    out = ws / "cyto_missing"
    res = ip("cytokines", "plates/absent.csv", "--out", out, cwd=ws)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    failed = read_failed(out / "failed.tsv")
    assert len(failed) == 1 and "not found" in failed[0]["reason"]
    assert any(line.startswith("failed: ") and "absent.csv" in line
               for line in res.stderr.splitlines())


@pytest.mark.parametrize("args,needles", [
    (["plates/plate1.csv", "--standards", "bad_standards.csv"], ["bad_standards.csv"]),
    (["plates/plate1.csv", "--standards", "absent_standards.csv"], ["absent_standards.csv"]),
    (["plates/plate1.csv", "--layout", "absent_layout.csv"], ["absent_layout.csv"]),
    (["plates/plate1.csv", "--layout", "bad_manifest.csv"], ["bad_manifest.csv"]),
], ids=["bad-standards", "missing-standards", "missing-layout", "bad-layout"])
def test_cytokines_invalid_input_exit_2_no_outputs(ws: Path, args: list[str],
                                                   needles: list[str]) -> None:
    out = ws / f"cyto_exit2_{needles[0]}"
    res = ip("cytokines", *args, "--out", out, cwd=ws)
    if res.stderr.startswith("Usage:"):  # click validated the path itself
        assert_usage_error(res, needles[0])
    else:
        assert_one_line_error(res, 2, *needles)
    assert not out.exists() or files_under(out) == []


# --------------------------------------------------------------------------------------------
# assemble, compare, report
def test_assemble_broken_manifest_and_missing_folder(ws: Path) -> None:
    out = ws / "study_out" / "study.h5ad"
    res = ip("assemble", "--design", "example-trial", "--manifest", "bad_manifest.csv", "--flow", "gate_good", "--out", out,
             cwd=ws)
    if res.stderr.startswith("Usage:"):
        assert_usage_error(res, "gate_good")
    else:
        assert_one_line_error(res, 2, "bad_manifest.csv", "missing")
    assert not out.parent.exists() or files_under(out.parent) == []
    res = ip("assemble", "--design", "example-trial", "--manifest", "absent.csv", "--flow", ".", "--out", out, cwd=ws)
    assert res.returncode == 2 and "absent.csv" in res.stderr and "Traceback" not in res.stderr
    assert not out.parent.exists() or files_under(out.parent) == []


@pytest.mark.parametrize("study", ["garbage.h5ad", "absent.h5ad", "good1.fcs"])
def test_compare_unreadable_study(ws: Path, study: str) -> None:
    out = ws / "compare_out"
    res = ip("compare", study, "--out", out, cwd=ws)
    if res.stderr.startswith("Usage:"):
        assert_usage_error(res, study)
    else:
        assert_one_line_error(res, 2, study)
    assert not out.exists() or files_under(out) == []


def test_report_missing_and_empty_run_folder(ws: Path) -> None:
    res = ip("report", "absent_run", cwd=ws)
    if res.stderr.startswith("Usage:"):
        assert_usage_error(res, "absent_run")
    else:
        assert_one_line_error(res, 2, "absent_run")
    empty = ws / "empty_run"
    empty.mkdir()
    assert_one_line_error(ip("report", empty, "--out", empty / "r.html", cwd=ws), 2,
                          "empty_run")
    assert files_under(empty) == []


@pytest.mark.parametrize("case", ["broken-provenance", "missing-columns"])
def test_report_on_a_hand_damaged_run_folder(ws: Path, case: str) -> None:
    run = ws / f"damaged_run_{case}"
    (run / "flow").mkdir(parents=True)
    if case == "broken-provenance":
        (run / "flow" / "populations.csv").write_text(
            "sample_id,population,parent,count,pct_parent,pct_total\ns1,/Cells,,10,50,50\n")
        (run / "flow" / "provenance.json").write_text('{"broken')
        culprit = "provenance.json"
    else:
        (run / "flow" / "populations.csv").write_text("sample_id,foo\ns1,2\n")
        culprit = "populations.csv"
    before = files_under(run)
    assert_one_line_error(ip("report", run, "--out", run / "r.html", "--no-gating", cwd=ws), 2,
                          culprit)
    assert files_under(run) == before


# --------------------------------------------------------------------------------------------
# run, validate, schema
def _config_lines(res: subprocess.CompletedProcess[str], name: str) -> None:
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines and all(name in line for line in lines), res.stderr


def test_run_and_validate_broken_config(ws: Path) -> None:
    for command in ("run", "validate"):
        res = ip(command, "broken.yaml", cwd=ws)
        _config_lines(res, "broken.yaml")
        assert "line" in res.stderr or "broken.yaml:3" in res.stderr
        res = ip(command, "absent.yaml", cwd=ws)
        if res.stderr.startswith("Usage:"):  # click checked the path itself
            assert_usage_error(res, "absent.yaml")
        else:
            _config_lines(res, "absent.yaml")


def test_run_and_validate_config_with_a_broken_manifest(ws: Path) -> None:
    config = ws / "bad_manifest_config.yaml"
    config.write_text("schema_version: 1\n"
                      "inputs:\n  manifest: bad_manifest.csv\n  strategy: strategy.yaml\n"
                      "design: {protocol: example-trial}\noutputs:\n  dir: run_out\n")
    for command in ("validate", "run"):
        res = ip(command, config, cwd=ws)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert "bad_manifest.csv" in res.stderr
        assert all(line.strip() for line in res.stderr.strip().splitlines())
    out = ws / "run_out"
    assert not out.exists() or not [p for p in files_under(out) if not p.endswith(".log")]


def test_run_with_a_corrupt_sample_completes_the_rest_exit_1(ws: Path) -> None:
    (ws / "tiny_manifest.csv").write_text(
        "sample_id,subject_id,visit,study_day,period,assay,file\n"
        "AD01_week0_flow,AD01,week0,0,run-in,flow,good1.fcs\n"
        "AD01_week1_flow,AD01,week1,7,treatment,flow,corrupt.fcs\n"
        "AD01_week2_flow,AD01,week2,14,treatment,flow,good2.fcs\n")
    config = ws / "tiny.yaml"
    config.write_text("schema_version: 1\ninputs:\n  manifest: tiny_manifest.csv\n"
                      "  strategy: strategy.yaml\ndesign: {protocol: example-trial}\n"
                      "outputs:\n  dir: tiny_out\n"
                      "report:\n  enabled: false\nexecutor:\n  kind: serial\n")
    res = ip("run", config, cwd=ws)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    failed = read_failed(ws / "tiny_out" / "failed.tsv")
    assert [Path(r["input"]).name for r in failed] == ["corrupt.fcs"]
    assert [line for line in res.stderr.splitlines() if line.startswith("failed: ")] == [
        f"failed: {failed[0]['reason']}"]
    with open(ws / "tiny_out" / "flow" / "populations.csv", newline="") as handle:
        samples = {row["sample_id"] for row in csv.DictReader(handle)}
    assert samples == {"AD01_week0_flow", "AD01_week2_flow"}


def test_validate_the_example_trial_and_print_the_schema(ws: Path) -> None:
    res = ip("validate", PROJECT_ROOT / "pipelines" / "example_trial.yaml", cwd=ws)
    assert res.returncode == 0, res.stderr
    res = ip("schema", cwd=ws)
    assert res.returncode == 0 and res.stderr == ""
    schema = json.loads(res.stdout)
    assert "inputs" in schema["properties"]
