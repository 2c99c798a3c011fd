"""The report's acquisition-over-time section (issue 12), on PeacoQC's own example file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from immunoprofile.cli import cli
from immunoprofile.report.qc import flow_sample_qc

STRATEGY = ("format: immunoprofile-strategy/1\ncompensation: none\n"
            "transforms: {FSC-A: {type: linear, T: 262144}}\n"
            "gates: [{name: Cells, type: range, channel: FSC-A, min: 0.1, max: 0.9}]\n")

def test_peacoqc_file_removed_stretch_in_report(reference_dir: Path, tmp_path: Path) -> None:
    fcs = reference_dir / "flow" / "fcs_instruments" / "peacoqc_111.fcs"
    (tmp_path / "s.yaml").write_text(STRATEGY)
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["gate", str(fcs), "--strategy", str(tmp_path / "s.yaml"),
                                   "--time-qc", "--out", str(out)])
    assert res.exit_code == 0, res.output
    pops = pd.read_csv(out / "populations.csv")
    assert pops["population"].iloc[0] == "TimeQC"
    assert pops.loc[pops["population"] == "/Cells", "parent"].item() == "TimeQC"
    removed = float(pops["pct_removed_time_qc"].iloc[0])
    assert 3 <= removed <= 20
    res = CliRunner().invoke(cli, ["report", str(out)])
    assert res.exit_code == 0, res.output
    html = (out / "report.html").read_text()
    assert 'id="time-qc"' in html and 'alt="time QC of peacoqc_111"' in html
    assert (out / "plots" / "time_qc_peacoqc_111.png").is_file()
    traces = pd.read_csv(out / "plots" / "time_qc_peacoqc_111.tsv", sep="\t")
    assert traces["removed"].any() and not traces["removed"].all()


def test_sample_qc_flags_files_losing_too_much_to_time_qc() -> None:
    rows = []
    for sid, lost in (("a", 2.0), ("b", 35.0)):
        rows += [{"sample_id": sid, "file": f"{sid}.fcs", "population": "TimeQC", "parent": "",
                  "count": 100 - lost, "pct_parent": 100 - lost, "pct_total": 100 - lost,
                  "pct_removed_time_qc": lost}]
    qc = flow_sample_qc(pd.DataFrame(rows), pd.DataFrame(columns=["sample_id", "population"]),
                        max_time_qc_removed=10.0)
    assert list(qc["flag"]) == ["ok", "time QC"]
    assert list(qc["% removed by time QC"]) == [2.0, 35.0]
    assert list(qc["events"]) == [100, 100]
