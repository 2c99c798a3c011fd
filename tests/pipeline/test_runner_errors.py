"""The runner hides no error (issue 13): a config option reaches its stage function or fails
loudly, and a stage whose module cannot be imported stops the run instead of being skipped."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import immunoprofile.report
from immunoprofile.pipeline.config import load_config
from immunoprofile.pipeline.runner import run_pipeline


def _with_report(config: Path) -> Path:
    text = config.read_text().replace("report: {enabled: false}",
                                      "report: {enabled: true, title: Tiny trial report}")
    assert "Tiny trial report" in text
    config.write_text(text)
    return config


def test_report_title_reaches_build_report(tiny_trial: Path, monkeypatch) -> None:
    calls = []

    def build_report(run_dir, out=None, *, title=None, options=None):
        calls.append(title)
        Path(out).write_text("<html></html>")
        return SimpleNamespace(path=Path(out))

    monkeypatch.setattr(immunoprofile.report, "build_report", build_report)
    summary = run_pipeline(load_config(_with_report(tiny_trial)))
    assert calls == ["Tiny trial report"]  # the option the runner used to drop silently
    assert summary.stage("report").status == "done"


def test_an_option_the_stage_does_not_take_is_an_error(tiny_trial: Path, monkeypatch) -> None:
    def build_report(run_dir, out=None):  # a stage function without the config's option
        raise AssertionError("must not be called without the title")

    monkeypatch.setattr(immunoprofile.report, "build_report", build_report)
    with pytest.raises(TypeError, match="title"):
        run_pipeline(load_config(_with_report(tiny_trial)))


def test_a_stage_module_that_cannot_be_imported_stops_the_run(tiny_trial: Path,
                                                              monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "immunoprofile.report", None)  # import raises ImportError
    with pytest.raises(ImportError):
        run_pipeline(load_config(_with_report(tiny_trial)))
