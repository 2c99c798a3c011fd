"""Quantification, QC flags, LLOQ policy, bridging and outputs of cytokine plates."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from immunoprofile._frames import layer_names
from immunoprofile.cytokine.curves import curve_from_params
from immunoprofile.cytokine.quantify import (CONCENTRATION_COLUMNS, FLAGS, QuantifyOptions,
                                             decode_flags, flag_code, is_drug_readout,
                                             quantify_plate, quantify_plates,
                                             write_cytokine_outputs)
from immunoprofile.cytokine.readers import WELL_COLUMNS, PlateData, read_plate
from immunoprofile.errors import InputError

CONTRACT = ["sample_id", "plate", "well", "analyte", "mfi", "net_mfi", "concentration", "unit",
            "dilution", "flag"]


@pytest.fixture(scope="module")
def oracles(reference_dir):
    return reference_dir / "cytokine" / "oracles"


def _sample_type(name: str) -> str:
    for prefix, kind in (("Background", "background"), ("Standard", "standard"),
                         ("Control", "control")):
        if name.startswith(prefix):
            return kind
    return "unknown"


@pytest.fixture(scope="module")
def drlumi_plate(oracles) -> PlateData:
    """PlateData built straight from the oracle table (independent of the reader)."""
    long = pd.read_csv(oracles / "xponent_drlumi_plate1_long.csv")
    wells = pd.DataFrame({
        "plate": "plate1", "well": long.well, "sample": long["sample"],
        "sample_type": long["sample"].map(_sample_type), "analyte": long.analyte,
        "bead_region": pd.NA, "median_mfi": long.median_mfi, "net_mfi": long.net_mfi,
        "count": long.bead_count.astype(float), "dilution": long.dilution_factor.fillna(1.0),
        "expected_conc": long.expected_conc, "unit": "pg/mL",
    })
    return PlateData(wells=wells.loc[:, list(WELL_COLUMNS)], path="drlumi_oracle", format="test")


@pytest.fixture(scope="module")
def drlumi_result(drlumi_plate):
    return quantify_plate(drlumi_plate, options=QuantifyOptions())


# ---------------------------------------------------------------- xPONENT oracle
def test_xponent_results_and_markers(drlumi_result, oracles):
    long = pd.read_csv(oracles / "xponent_drlumi_plate1_long.csv")
    conc = drlumi_result.concentrations
    assert list(conc.columns[:10]) == CONTRACT
    merged = conc.merge(long[["well", "analyte", "result_value", "result_flag"]],
                        on=["well", "analyte"], validate="one_to_one")
    numeric = merged[merged.result_flag.isna() & merged.result_value.notna()]
    rel = np.abs(numeric.concentration / numeric.result_value - 1)
    per_analyte = rel.groupby(numeric.analyte).max()
    assert len(numeric) == 2580
    assert (per_analyte <= 1e-5).sum() >= 28, per_analyte.sort_values().tail()
    # xPONENT's '<' / '>' are exactly our below_curve / above_curve (it prints none for
    # background wells, which we flag as well)
    not_bg = merged.sample_type != "background"
    for marker, flag in (("<", "below_curve"), (">", "above_curve")):
        theirs = merged.result_flag == marker
        ours = merged.flag.str.contains(flag, regex=False)
        assert theirs.sum() == {"<": 208, ">": 32}[marker]
        assert (theirs == ours)[not_bg].all()
        assert merged.loc[ours, "concentration"].isna().all()
    # % Recovery = 100 × Result / Expected, printed with 2 decimals
    rec = merged.merge(long[["well", "analyte", "pct_recovery_reported"]], on=["well", "analyte"])
    rec = rec[rec.pct_recovery_reported.notna() & (rec.sample_type == "standard")]
    assert len(rec) == 480
    np.testing.assert_allclose(rec.recovery, rec.pct_recovery_reported, atol=0.0051)
    # xPONENT extrapolates silently inside the asymptotes: we flag those results
    assert merged.flag.str.contains("extrapolated").sum() >= 96 + 105


def test_xponent_replicate_summaries(drlumi_result, oracles):
    reps = pd.read_csv(oracles / "xponent_drlumi_plate1_replicate_summaries.csv")
    reps["avg_result"] = pd.to_numeric(reps.avg_result, errors="coerce")  # "> 18300" etc.
    summary = drlumi_result.summary
    merged = summary.merge(reps, left_on=["sample_id", "analyte"],
                           right_on=["sample", "analyte"], validate="one_to_one")
    full = merged[(merged.n_replicates >= 2) & merged.pct_cv_replicates.notna()
                  & merged.avg_result.notna() & ~merged.flag.str.contains("curve")]
    assert len(full) > 100
    np.testing.assert_allclose(full.concentration, full.avg_result, rtol=1e-5)
    np.testing.assert_allclose(full.cv, full.pct_cv_replicates, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(merged.mean_net_mfi, merged.avg_net_mfi, rtol=1e-9)
    high = full[full.cv > 20]
    assert high.flag.str.contains("high_cv").all()


def test_xponent_loq_from_recovery(drlumi_result, drlumi_plate):
    curves = drlumi_result.curves.set_index("analyte")
    assert curves.converged.all() and len(curves) == 30
    conc = drlumi_result.concentrations
    for analyte in ("IL10", "FGF", "EOTAXIN"):
        std = conc[(conc.analyte == analyte) & (conc.sample_type == "standard")]
        levels = std.groupby("expected_conc").agg(
            rec=("concentration", lambda c: 100 * c.mean()), n=("concentration", "size"),
            ok=("concentration", lambda c: np.isfinite(c).all()), cv=("replicate_cv", "first"))
        levels["rec"] = levels["rec"] / levels.index
        good = levels[levels.ok & levels.rec.between(80, 120)
                      & ~(levels.cv > 20)].index
        assert curves.loc[analyte, "lloq"] == pytest.approx(good.min())
        assert curves.loc[analyte, "uloq"] == pytest.approx(good.max())
        inside = conc[(conc.analyte == analyte) & conc.concentration.notna()]
        below = inside.concentration / inside.dilution < good.min()
        assert inside.loc[below, "flag"].str.contains("<LLOQ").all()
        assert not inside.loc[~below, "flag"].str.contains("<LLOQ").any()


def test_reader_integration_drlumi(reference_dir):
    path = reference_dir / "cytokine" / "xponent" / \
        "drLumi_plate1_LX200_xPONENT3.1_analysisON_5PL.csv"
    plate = read_plate(path)
    result = quantify_plate(plate)
    assert result.repairs and result.repairs == plate.repairs
    vendor = plate.vendor
    merged = result.concentrations.merge(vendor, on=["plate", "well", "analyte"],
                                         suffixes=("", "_v"))
    ok = merged[merged.flag_v == "ok"]
    rel = np.abs(ok.concentration / ok.concentration_v - 1)
    assert len(ok) == 2580 and rel.max() <= 1e-5
    # controls carry the kit's expected concentration in this export: % Recovery as printed
    oracle = pd.read_csv(reference_dir / "cytokine" / "oracles" /
                         "xponent_drlumi_plate1_long.csv")
    controls = merged[merged.sample_type == "control"].merge(
        oracle[["well", "analyte", "pct_recovery_reported"]], on=["well", "analyte"])
    controls = controls[controls.pct_recovery_reported.notna()]
    assert len(controls) == 180
    np.testing.assert_allclose(controls.recovery, controls.pct_recovery_reported, atol=0.0051)


def test_bioplex_4pl_power_through_reader(reference_dir):
    plate = read_plate(reference_dir / "cytokine" / "bioplex" / "labkey_pnLINCO20070302A.xls")
    result = quantify_plate(plate, options=QuantifyOptions(model="4pl", weights="power"))
    merged = result.concentrations.merge(plate.vendor, on=["plate", "well", "analyte"],
                                         suffixes=("", "_v"))
    ok = merged[(merged.flag_v == "ok") & (merged.sample_type != "standard")]
    rel = np.abs(ok.concentration / ok.concentration_v - 1)
    assert len(ok) > 500
    assert np.median(rel) <= 1e-3
    assert (result.curves.weights == "power(1.8)").all()


# ---------------------------------------------------------------- synthetic plates
TRUE = curve_from_params(2.0, 20000.0, 300.0, -1.2, 0.9)
LEVELS = 5000.0 / 4.0 ** np.arange(7)  # 5000 ... 1.22


def _plate(*, scale: float = 1.0, plate: str = "P1", extra: list[dict] | None = None,
           bad_level: float | None = None, analyte: str = "IL-6") -> PlateData:
    rows = []
    wells = iter(f"{r}{c}" for c in range(1, 13) for r in "ABCDEFGH")
    for _ in range(2):
        rows.append(dict(sample="Background0", sample_type="background", expected_conc=np.nan,
                         net_mfi=0.0))
    for level in LEVELS:
        for rep in range(2):
            y = float(TRUE.predict([level])[0])
            if level == bad_level:
                y *= 0.5 if rep == 0 else 1.5  # replicate CV far above 20 %
            rows.append(dict(sample=f"Standard{int(np.where(LEVELS == level)[0][0]) + 1}",
                             sample_type="standard", expected_conc=level, net_mfi=y))
    for r in extra or []:
        rows.append(dict(sample_type="unknown", expected_conc=np.nan, **r))
    df = pd.DataFrame(rows)
    df["net_mfi"] = df["net_mfi"] * np.where(df.sample_type == "standard", 1.0, scale)
    df["plate"] = plate
    df["well"] = [next(wells) for _ in range(len(df))]
    df["analyte"] = analyte
    df["bead_region"] = pd.NA
    df["median_mfi"] = df["net_mfi"] + 10
    df["count"] = df.get("count", pd.Series(100.0, index=df.index)).fillna(100.0)
    df["dilution"] = df.get("dilution", pd.Series(1.0, index=df.index)).fillna(1.0)
    df["unit"] = "pg/mL"
    return PlateData(wells=df.loc[:, list(WELL_COLUMNS)], path=f"{plate}.csv", format="test")


def _mfi(conc: float) -> float:
    return float(TRUE.predict([conc])[0])


def test_flags_on_a_known_curve():
    extra = [
        dict(sample="S_ok", net_mfi=_mfi(100.0), dilution=2.0),
        dict(sample="S_ok", net_mfi=_mfi(100.0), dilution=2.0),
        dict(sample="S_low", net_mfi=_mfi(0.5)),                # extrapolated + <LLOQ
        dict(sample="S_high", net_mfi=_mfi(9000.0)),            # extrapolated + >ULOQ
        dict(sample="S_neg", net_mfi=-5.0),                     # below the curve
        dict(sample="S_sat", net_mfi=25000.0),                  # above the curve
        dict(sample="S_beads", net_mfi=_mfi(50.0), count=12.0),
        dict(sample="S_cv", net_mfi=_mfi(40.0)),
        dict(sample="S_cv", net_mfi=_mfi(80.0)),
        dict(sample="S_nan", net_mfi=np.nan),
    ]
    result = quantify_plate(_plate(extra=extra),
                            options=QuantifyOptions(model="5pl", weights="1/y2"))
    curve = result.curves.iloc[0]
    assert curve.converged and curve.n_standards_used == 14
    assert curve.lloq == pytest.approx(LEVELS[-1]) and curve.uloq == pytest.approx(LEVELS[0])
    c = result.concentrations.set_index("sample_id")
    flags = c.groupby(level=0)["flag"].agg(lambda f: set(";".join(f).split(";")))
    assert flags["S_ok"] == {"ok"}
    fit = result.fits[("P1", "IL-6")]
    np.testing.assert_allclose(c.loc["S_ok", "concentration"],
                               2 * fit.inverse([_mfi(100.0)])[0], rtol=1e-12)
    np.testing.assert_allclose(c.loc["S_ok", "concentration"], 200.0, rtol=0.15)
    assert (c.loc["S_ok", "dilution"] == 2.0).all()
    assert {"<LLOQ", "extrapolated"} <= flags["S_low"]
    assert {">ULOQ", "extrapolated"} <= flags["S_high"]
    assert flags["S_neg"] == {"below_curve"} and math.isnan(c.loc["S_neg", "concentration"])
    assert flags["S_sat"] == {"above_curve"} and math.isnan(c.loc["S_sat", "concentration"])
    assert "low_beads" in flags["S_beads"]
    assert "high_cv" in flags["S_cv"]
    assert flags["S_nan"] == {"missing"}
    assert (c.loc["S_cv", "replicate_cv"] > 20).all()
    s = result.summary.set_index("sample_id")
    assert s.loc["S_ok", "n_replicates"] == 2 and s.loc["S_ok", "flag"] == "ok"
    assert s.loc["S_ok", "lloq"] == pytest.approx(2 * curve.lloq)


def test_noisy_standard_level_does_not_define_lloq():
    result = quantify_plate(_plate(bad_level=LEVELS[-1]))
    curve = result.curves.iloc[0]
    std = result.concentrations[result.concentrations.sample_type == "standard"]
    assert (std.loc[std.expected_conc == LEVELS[-1], "replicate_cv"] > 20).all()
    assert curve.lloq == pytest.approx(LEVELS[-2])
    assert curve.uloq == pytest.approx(LEVELS[0])
    worst = std[std.expected_conc == LEVELS[-1]]
    assert worst.flag.str.contains("high_cv").all()


@pytest.mark.parametrize("policy,factor", [("keep", None), ("half", 0.5),
                                           ("sqrt2", 1 / math.sqrt(2)), ("na", math.nan)])
def test_lloq_policy(policy, factor):
    extra = [dict(sample="low", net_mfi=_mfi(0.4), dilution=4.0),
             dict(sample="neg", net_mfi=-3.0, dilution=4.0),
             dict(sample="mid", net_mfi=_mfi(300.0), dilution=4.0)]
    result = quantify_plate(_plate(extra=extra), options=QuantifyOptions(lloq_policy=policy))
    lloq = result.curves.lloq.iat[0]
    c = result.concentrations.set_index("sample_id")
    raw_low = c.loc["low", "concentration"]
    assert raw_low == pytest.approx(1.6, rel=0.05)  # raw value is always kept
    mid = c.loc["mid"]
    assert mid.concentration_reported == mid.concentration
    if policy == "keep":
        assert c.loc["low", "concentration_reported"] == raw_low
        assert math.isnan(c.loc["neg", "concentration_reported"])
    elif policy == "na":
        assert math.isnan(c.loc["low", "concentration_reported"])
        assert math.isnan(c.loc["neg", "concentration_reported"])
    else:
        for name in ("low", "neg"):
            assert c.loc[name, "concentration_reported"] == pytest.approx(lloq * 4.0 * factor)


def test_failed_fit_is_flagged_not_raised():
    plate = _plate(extra=[dict(sample="U1", net_mfi=500.0)])
    wells = plate.wells.copy()
    wells.loc[wells.sample_type == "standard", "expected_conc"] = np.nan  # analysis off
    result = quantify_plate(PlateData(wells=wells, path="noexp.csv", format="test"))
    assert not result.curves.converged.iat[0]
    assert "no expected concentrations" in result.curves.message.iat[0]
    assert (result.concentrations.flag.str.startswith("failed_fit")).all()
    assert result.concentrations.concentration.isna().all()
    assert any("standard curve failed" in w for w in result.warnings)


def test_bridging_normalisation():
    bridge = [dict(sample="Bridge", net_mfi=_mfi(150.0)), dict(sample="Bridge",
                                                               net_mfi=_mfi(150.0)),
              dict(sample="U", net_mfi=_mfi(60.0))]
    # plate 2 reads unknowns higher (a per-plate shift its standards do not show)
    p1 = _plate(plate="P1", extra=bridge)
    p2 = _plate(plate="P2", extra=bridge, scale=1.3)
    options = QuantifyOptions(bridging=True, bridging_sample="Bridge")
    r1, r2 = quantify_plates([p1, p2], options)
    b1 = r1.summary.set_index("sample_id").loc["Bridge", "concentration"]
    b2 = r2.summary.set_index("sample_id").loc["Bridge", "concentration"]
    target = math.sqrt(b1 * b2)
    for r, b in ((r1, b1), (r2, b2)):
        s = r.summary.set_index("sample_id")
        assert s.loc["Bridge", "concentration_reported"] == pytest.approx(target)
        assert s.loc["Bridge", "bridging_factor"] == pytest.approx(target / b)
        assert s.loc["U", "concentration_reported"] == pytest.approx(
            s.loc["U", "concentration"] * target / b)
        assert r.bridging.factor.iat[0] == pytest.approx(target / b)
    assert b2 > b1 * 1.2
    with pytest.raises(InputError):
        QuantifyOptions(bridging=True)


def test_bridging_ignores_unquantifiable_bridge_values():
    ok = [dict(sample="Bridge", net_mfi=_mfi(150.0)), dict(sample="Bridge", net_mfi=_mfi(150.0))]
    low = [dict(sample="Bridge", net_mfi=_mfi(0.3)), dict(sample="Bridge", net_mfi=_mfi(0.3))]
    r1, r2, r3 = quantify_plates([_plate(plate="P1", extra=ok),
                                  _plate(plate="P2", extra=ok, scale=1.2),
                                  _plate(plate="P3", extra=low)],
                                 QuantifyOptions(bridging=True, bridging_sample="Bridge"))
    assert (r3.concentrations.bridging_factor == 1.0).all()
    assert any("no usable bridging value" in w for w in r3.warnings)
    b1 = r1.summary.set_index("sample_id").loc["Bridge", "concentration"]
    b2 = r2.summary.set_index("sample_id").loc["Bridge", "concentration"]
    assert r1.bridging.factor.iat[0] == pytest.approx(math.sqrt(b1 * b2) / b1)


def test_bridging_sample_missing_warns():
    r1, r2 = quantify_plates([_plate(plate="P1"), _plate(plate="P2")],
                             QuantifyOptions(bridging=True, bridging_sample="Nope"))
    assert any("not found" in w for w in r1.warnings)
    assert (r1.concentrations.bridging_factor == 1.0).all()


def test_options_validation():
    for bad in (dict(model="3pl"), dict(weights="x"), dict(lloq_policy="zero"),
                dict(recovery_range=(120, 80)), dict(max_cv=0), dict(min_beads=-1)):
        with pytest.raises(InputError):
            QuantifyOptions(**bad)
    assert QuantifyOptions().to_dict()["recovery_range"] == [80.0, 120.0]


def test_flag_codes_round_trip():
    for flags in ("ok", "below_curve", "<LLOQ;extrapolated;high_cv", "failed_fit;low_beads"):
        assert decode_flags(flag_code(flags)) == flags
    assert flag_code("ok") == 0 and FLAGS[:9] == (
        "ok", "failed_fit", "below_curve", "above_curve", "<LLOQ", ">ULOQ", "extrapolated",
        "low_beads", "high_cv")  # bit positions are part of the stored h5ad layout


def test_drug_readout_matching():
    for name in ("IL-1RA", "IL1RA", "Hu IL-1ra (25)", "il-1ra"):
        assert is_drug_readout(name, ["IL-1RA"])
    assert not is_drug_readout("IL-1b (1)", ["IL-1RA"])


def test_write_outputs_and_h5ad_round_trip(tmp_path):
    import anndata as ad

    extra = [dict(sample="U1", net_mfi=_mfi(100.0)), dict(sample="U1", net_mfi=_mfi(110.0)),
             dict(sample="U2", net_mfi=-4.0), dict(sample="Control1", net_mfi=_mfi(500.0))]
    p1 = _plate(plate="P1", extra=extra, analyte="IL-1RA")
    p1.repairs.append({"plate": "P1", "well": "A5", "analyte": "IL-1RA", "old": 215625.0,
                       "new": 215.625, "reason": "decimal point lost"})
    p2 = _plate(plate="P1", extra=extra, analyte="IL-13")
    wells = pd.concat([p1.wells, p2.wells], ignore_index=True)
    wells.loc[wells["sample"] == "Control1", "sample_type"] = "control"
    plate = PlateData(wells=wells, repairs=p1.repairs, path="plate.csv", format="test")
    options = QuantifyOptions(lloq_policy="half")
    results = quantify_plates([plate], options)
    paths = write_cytokine_outputs(tmp_path, results, [("bad.csv", "not a plate export")],
                                   options=options, inputs=[])
    conc = pd.read_csv(paths["concentrations"])
    assert list(conc.columns) == list(CONCENTRATION_COLUMNS)
    curves = pd.read_csv(paths["standard_curves"])
    assert set(curves.analyte) == {"IL-1RA", "IL-13"}
    assert curves.set_index("analyte").loc["IL-1RA", "drug_readout"]
    failed = pd.read_csv(paths["failed"], sep="\t")
    assert failed.to_dict("records") == [{"input": "bad.csv", "reason": "not a plate export"}]
    prov = json.loads(paths["provenance"].read_text())
    assert prov["plates"][0]["repairs"][0]["new"] == 215.625
    assert prov["parameters"]["lloq_policy"] == "half"

    adata = ad.read_h5ad(paths["h5ad"])
    assert list(adata.obs_names) == ["P1|U1", "P1|U2", "P1|Control1"]
    assert list(adata.var_names) == ["IL-1RA", "IL-13"]
    assert set(adata.obs.sample_type) == {"unknown", "control"}
    assert adata.var.loc["IL-1RA", "drug_readout"] and not adata.var.loc["IL-13", "drug_readout"]
    summary = results[0].summary.set_index(["sample_id", "analyte"])
    assert adata["P1|U1", "IL-13"].X[0, 0] == pytest.approx(
        summary.loc[("U1", "IL-13"), "concentration_reported"])
    # U2 is below the curve: raw NaN, reported LLOQ/2 (half policy), flag decodes
    j = list(adata.var_names).index("IL-13")
    i = list(adata.obs_names).index("P1|U2")
    assert math.isnan(adata.layers["raw"][i, j])
    assert adata.X[i, j] == pytest.approx(adata.var.loc["IL-13", "lloq"] / 2)
    assert decode_flags(adata.layers["flag"][i, j]) == "below_curve"
    meta = adata.uns["immunoprofile"]
    assert meta["flag_bits"]["below_curve"] == 1 << FLAGS.index("below_curve")
    assert len(meta["standard_curves"]) == 2


def _legacy_plates() -> list[PlateData]:
    """The input behind tests/cytokine/data/cytokines_schema1.h5ad (written by schema 1)."""
    extra = [dict(sample="U1", net_mfi=_mfi(100.0)), dict(sample="U1", net_mfi=_mfi(130.0)),
             dict(sample="U2", net_mfi=-4.0), dict(sample="U3", net_mfi=_mfi(0.5), dilution=2.0)]
    return [_plate(plate="P1", extra=extra, analyte="IL-1RA"),
            _plate(plate="P2", extra=extra, analyte="IL-13", scale=1.1)]


def test_schema1_h5ad_still_reads_and_means_the_same():
    import anndata as ad

    from immunoprofile.cytokine.quantify import to_anndata

    path = Path(__file__).parent / "data" / "cytokines_schema1.h5ad"
    old = ad.read_h5ad(path)
    assert old.uns["immunoprofile"]["schema_version"] == "1"
    options = QuantifyOptions(lloq_policy="half")
    new = to_anndata(quantify_plates(_legacy_plates(), options), options=options)
    assert list(old.obs_names) == list(new.obs_names) == [
        "P1|U1", "P1|U2", "P1|U3", "P2|U1", "P2|U2", "P2|U3"]
    assert list(old.var_names) == list(new.var_names) == ["IL-1RA", "IL-13"]
    assert list(old.obs.columns) == list(new.obs.columns)
    assert list(old.var.columns) == list(new.var.columns)
    assert set(layer_names(old)) == set(layer_names(new)) == {"raw", "cv", "flag"}
    np.testing.assert_allclose(old.X, new.X, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(old.layers["raw"], new.layers["raw"], rtol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(old.layers["flag"], new.layers["flag"])
    old_bits = dict(old.uns["immunoprofile"]["flag_bits"])
    new_bits = dict(new.uns["immunoprofile"]["flag_bits"])
    assert {k: new_bits[k] for k in old_bits} == old_bits  # flags are only ever appended
    flags = {decode_flags(c) for c in np.asarray(old.layers["flag"]).ravel()}
    assert "below_curve" in flags


def test_quantification_is_deterministic():
    a = quantify_plates(_legacy_plates(), QuantifyOptions())
    b = quantify_plates(_legacy_plates(), QuantifyOptions())
    for ra, rb in zip(a, b):
        pd.testing.assert_frame_equal(ra.concentrations, rb.concentrations)
        pd.testing.assert_frame_equal(ra.curves, rb.curves)
        pd.testing.assert_frame_equal(ra.summary, rb.summary)


def test_drop_low_bead_standards():
    plate = _plate()
    wells = plate.wells.copy()
    std = wells.index[wells.sample_type == "standard"]
    wells.loc[std[3], "count"] = 10.0
    wells.loc[std[3], "net_mfi"] *= 3.0  # a bad well that only the bead count reveals
    plate = PlateData(wells=wells, path="p.csv", format="test")
    kept = quantify_plate(plate).curves.iloc[0]
    dropped = quantify_plate(plate, options=QuantifyOptions(drop_low_bead_standards=True)
                             ).curves.iloc[0]
    assert kept.n_standards_used == 14 and kept.standards_dropped == ""
    assert dropped.n_standards_used == 13
    assert dropped.standards_dropped == wells.loc[std[3], "well"]
    assert dropped.r2_weighted > kept.r2_weighted
