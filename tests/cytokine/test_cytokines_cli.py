"""End to end: ``immunoprofile cytokines`` on real plate exports, through click's CliRunner."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from click.testing import CliRunner

from immunoprofile.cli import cli


def test_cytokines_command_on_real_plates(reference_dir, tmp_path):
    xponent = reference_dir / "cytokine" / "xponent" / \
        "drLumi_plate1_LX200_xPONENT3.1_analysisON_5PL.csv"
    junk = tmp_path / "notes.txt"
    junk.write_text("this is not a plate export\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["cytokines", str(xponent), str(junk), "--out", str(out),
                                      "--lloq-policy", "half", "-q"])
    # one unreadable file: the other plate is still quantified, exit code 1
    assert result.exit_code == 1, result.output
    for name in ("concentrations.csv", "standard_curves.csv", "cytokines.h5ad",
                 "provenance.json", "failed.tsv"):
        assert (out / name).is_file(), name
    failed = pd.read_csv(out / "failed.tsv", sep="\t")
    assert failed.input.tolist() == [str(junk)]
    assert "not a recognised plate export" in failed.reason.iat[0]
    assert "notes.txt" in result.output

    conc = pd.read_csv(out / "concentrations.csv")
    assert list(conc.columns[:10]) == ["sample_id", "plate", "well", "analyte", "mfi", "net_mfi",
                                       "concentration", "unit", "dilution", "flag"]
    oracle = pd.read_csv(reference_dir / "cytokine" / "oracles" /
                         "xponent_drlumi_plate1_long.csv")
    merged = conc.merge(oracle, on=["well", "analyte"], validate="one_to_one")
    numeric = merged[merged.result_flag.isna() & merged.result_value.notna()]
    rel = np.abs(numeric.concentration / numeric.result_value - 1)
    assert len(numeric) == 2580 and rel.max() <= 1e-5
    below = merged.flag.str.contains("<LLOQ|below_curve")
    assert below.any()
    curves = pd.read_csv(out / "standard_curves.csv").set_index("analyte")
    lloq = merged["analyte"].map(curves["lloq"]) * merged["dilution"]
    np.testing.assert_allclose(merged.loc[below, "concentration_reported"],
                               lloq[below] / 2, rtol=1e-12)
    assert curves.loc["IL1RA", "drug_readout"]  # the default --drug-readout IL-1RA

    prov = json.loads((out / "provenance.json").read_text())
    assert prov["parameters"]["lloq_policy"] == "half"
    assert prov["parameters"]["repair"] is True
    assert len(prov["plates"][0]["repairs"]) == 30  # the drLumi decimal-point defect
    assert {i["name"] for i in prov["inputs"]} == {xponent.name, junk.name}


def test_cytokines_command_usage_errors(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(cli, ["cytokines", str(tmp_path / "x.csv"), "--recovery", "eighty",
                              "--out", str(tmp_path / "o")])
    assert bad.exit_code == 2 and "--recovery" in bad.output
    missing = runner.invoke(cli, ["cytokines", str(tmp_path / "x.csv"), "--layout",
                                  str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 2 and "layout file not found" in missing.output
    choice = runner.invoke(cli, ["cytokines", "a.csv", "--model", "3pl"])
    assert choice.exit_code == 2


def test_cytokines_help_is_light():
    import subprocess
    import sys

    code = ("import sys; from click.testing import CliRunner; from immunoprofile.cli import cli; "
            "r = CliRunner().invoke(cli, ['cytokines', '--help']); assert r.exit_code == 0; "
            "assert '--lloq-policy' in r.output; "
            "print(' '.join(m for m in ('numpy', 'pandas', 'scipy', 'anndata') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.strip() == ""


def test_cytokines_command_example_trial_with_bridging(example_dir, tmp_path):
    plates = sorted((example_dir / "plates").glob("plate*.csv"))
    assert len(plates) == 2
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["cytokines", *map(str, plates), "--standards",
                                      str(example_dir / "standards.csv"), "--bridging",
                                      "BridgePool", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(out / "summary.csv")
    bridge = summary[(summary.sample_id == "BridgePool") & (summary.flag == "ok")]
    # after normalisation the bridging pool reads the same on both plates
    per_analyte = bridge.groupby("analyte").concentration_reported.agg(["min", "max", "size"])
    both = per_analyte[per_analyte["size"] == 2]
    assert len(both) >= 4
    np.testing.assert_allclose(both["min"], both["max"], rtol=1e-9)
    prov = json.loads((out / "provenance.json").read_text())
    factors = [f["factor"] for p in prov["plates"] for f in p["bridging"]]
    assert len(factors) == 20 and any(abs(f - 1) > 0.02 for f in factors)
    assert pd.read_csv(out / "failed.tsv", sep="\t").empty
