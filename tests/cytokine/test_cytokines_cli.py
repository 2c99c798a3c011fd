"""End to end: ``immunoprofile cytokines`` on real plate exports, through click's CliRunner."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
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
    layout = tmp_path / "layout.csv"
    layout.write_text("well,sample,sample_type,dilution\nA1,S1,standard,-2\n")
    bad_layout = runner.invoke(cli, ["cytokines", str(tmp_path / "x.csv"), "--layout",
                                     str(layout), "--out", str(tmp_path / "o")])
    assert bad_layout.exit_code == 2 and "layout.csv" in bad_layout.output


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


def test_cytokines_command_generic_csv_with_layout(tmp_path):
    from immunoprofile.cytokine.curves import curve_from_params

    truth = curve_from_params(20.0, 18000.0, 400.0, -1.1, 1.0)  # a 4PL
    levels = 8000.0 / 3.0 ** np.arange(8)
    layout = ["well,sample,sample_type,dilution,expected_conc",
              "A1,Background0,background,,", "B1,Background0,background,,"]
    plate = ["well,analyte,mfi,count"]
    wells = iter(f"{r}{c}" for c in range(2, 13) for r in "ABCDEFGH")
    for k, level in enumerate(levels, start=1):
        for _ in range(2):
            well = next(wells)
            layout.append(f"{well},Standard{k},standard,1,{float(level)!r}")
            plate.append(f"{well},IL-13,{float(truth.predict([level])[0]) + 10.0!r},80")
    samples = {"AD01_week0": 250.0, "AD01_week12": 0.05}
    for name, conc in samples.items():
        for _ in range(2):
            well = next(wells)
            layout.append(f"{well},{name},unknown,2,")
            plate.append(f"{well},IL-13,{float(truth.predict([conc / 2])[0]) + 10.0!r},80")
    plate += ["A1,IL-13,10,80", "B1,IL-13,10,80"]  # background: Net MFI = MFI - 10
    (tmp_path / "plate.csv").write_text("\n".join(plate) + "\n")
    (tmp_path / "layout.csv").write_text("\n".join(layout) + "\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [
        "cytokines", str(tmp_path / "plate.csv"), "--layout", str(tmp_path / "layout.csv"),
        "--model", "4pl", "--weights", "power", "--lloq-policy", "na", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    conc = pd.read_csv(out / "concentrations.csv")
    unknown = conc[conc.sample_type == "unknown"].set_index("sample_id")
    np.testing.assert_allclose(unknown.loc["AD01_week0", "concentration"], 250.0, rtol=1e-6)
    assert (unknown.loc["AD01_week0", "flag"] == "ok").all()
    low = unknown.loc["AD01_week12"]
    assert low.flag.str.contains("<LLOQ").all() and low.concentration_reported.isna().all()
    curve = pd.read_csv(out / "standard_curves.csv").iloc[0]
    assert curve.model == "4pl" and curve.weights == "power(1.8)"
    assert curve.D == pytest.approx(-1.1, rel=1e-6) and curve.F == 1.0
    assert curve.lloq == pytest.approx(levels[-1]) and curve.uloq == pytest.approx(levels[0])
