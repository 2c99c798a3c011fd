"""validate_config: every problem of a config and its inputs, one line each."""

from __future__ import annotations

from pathlib import Path

from immunoprofile.pipeline.validate import validate_config


def test_valid_trial_has_no_problems(tiny_trial: Path) -> None:
    assert validate_config(tiny_trial) == []


def test_strategy_channel_missing_and_baseline(tiny_trial: Path) -> None:
    root = tiny_trial.parent
    strategy = root / "strategy.yaml"
    strategy.write_text(strategy.read_text().replace("channel: CD3", "channel: CD33"))
    (root / "flow" / "s01_week4.fcs").unlink()
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(l for l in manifest.read_text().splitlines()
                                  if not l.startswith("S03_week0")) + "\n")
    problems = [str(p) for p in validate_config(tiny_trial)]
    missing_channel = [p for p in problems if "CD33" in p]
    assert len(missing_channel) == 4  # every remaining readable file says so
    assert any("s01_week4.fcs" in p and "not found" in p for p in problems)
    assert any("'S03' has no baseline (week0)" in p for p in problems)
    assert all("\n" not in p for p in problems)


def test_bad_fcs_is_one_line(tiny_trial: Path) -> None:
    (tiny_trial.parent / "flow" / "s02_week0.fcs").write_bytes(b"FCS3.1  garbage")
    (problem,) = validate_config(tiny_trial)
    assert "s02_week0.fcs" in str(problem)


def test_config_problems_stop_there(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("schema_version: 1\ninputs: {manifest: m.csv}\nexecutor: {kind: slurm}\n")
    (problem,) = validate_config(path)
    assert problem.line == 3 and problem.where == "executor.kind"


def _cli(*args: str) -> "subprocess.CompletedProcess[str]":
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "immunoprofile.cli", *args],
                          capture_output=True, text=True, timeout=120)


def test_validate_and_run_cli_report_every_problem_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("schema_version: 1\ninputs: {manifest: m.csv, stratgy: s.yaml}\n"
                    "executor: {kind: slurm, jobs: 0}\n")
    for command in ("validate", "run"):
        proc = _cli(command, str(path))
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 4 and "Traceback" not in proc.stderr  # 3 problems + a summary
        assert lines[0].startswith(f"{path}:2: inputs.stratgy: unknown key")
        assert "did you mean 'strategy'?" in lines[0]
    assert not (tmp_path / "output").exists()  # run stopped before creating anything


def test_validate_cli_ok_and_input_problems(tiny_trial: Path) -> None:
    proc = _cli("validate", str(tiny_trial))
    assert proc.returncode == 0 and "OK" in proc.stdout
    (tiny_trial.parent / "flow" / "s01_week0.fcs").unlink()
    proc = _cli("validate", str(tiny_trial))
    assert proc.returncode == 2 and "s01_week0.fcs" in proc.stderr


def test_schema_cli_prints_json_schema() -> None:
    import json

    proc = _cli("schema")
    assert proc.returncode == 0
    schema = json.loads(proc.stdout)
    assert schema["title"] == "immunoprofile pipeline config"
    assert "executor" in schema["properties"]


def test_example_trial_validates_and_a_foreign_well_is_found(tmp_path: Path,
                                                             example_dir: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    assert validate_config(root / "pipelines" / "example_trial.yaml") == []

    lines = (example_dir / "manifest.csv").read_text().splitlines()
    row = next(i for i, l in enumerate(lines) if ",cytokine," in l and ",plate1," in l)
    lines[row] = lines[row].rsplit(",", 1)[0] + ",P24"
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"schema_version: 1\ninputs:\n  manifest: manifest.csv\n"
                      f"  plates: [{example_dir}/plates]\n"
                      f"  standards: {example_dir}/standards.csv\nflow: {{enabled: false}}\n"
                      "design: {protocol: example-trial}\n")
    (problem,) = validate_config(config)
    assert problem.line == row + 1 and "well P24 is not on plate 'plate1'" in problem.message


def test_a_config_without_a_design_runs_nothing(tiny_trial: Path) -> None:
    """No silent default protocol: without ``design:`` validate and run say so in one line
    naming the config and ``design`` (exit 2), and run creates no output folder."""
    text = tiny_trial.read_text()
    assert "design: {protocol: example-trial}\n" in text
    tiny_trial.write_text(text.replace("design: {protocol: example-trial}\n", ""))
    for command in ("validate", "run"):
        proc = _cli(command, str(tiny_trial))
        assert proc.returncode == 2, proc.stderr
        first = proc.stderr.strip().splitlines()[0]
        assert first.startswith(f"{tiny_trial}: design: no study design")
        assert "protocol: example-trial" in first
    assert not (tiny_trial.parent / "out").exists()
