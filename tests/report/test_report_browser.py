"""The report in a real browser: Debian's headless Chromium driven by Playwright."""

from __future__ import annotations

import pytest

from _browser import open_in_chromium

from immunoprofile.report import build_report

@pytest.mark.browser
def test_synthetic_report_renders_in_chromium(synthetic_run, tmp_path):
    summary = build_report(synthetic_run, gating=False)
    shot = tmp_path / "report.png"
    images_ok, console_errors, page_errors, facts = open_in_chromium(summary.path, shot)
    assert images_ok and facts["images"] == 4
    assert console_errors == [] and page_errors == []
    assert facts["firstHeading"] == "Summary" and facts["summaryRows"] >= 10
    assert shot.stat().st_size > 10_000
