"""The shared schema (immunoprofile.schema) pinned: names, the flag codec, versions, migration.

Changing anything asserted here changes what stored files mean: bump SCHEMA_VERSION and teach
``migrate`` the old layout instead of editing these expectations.
"""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from immunoprofile import schema
from immunoprofile.errors import InputError
from immunoprofile.schema import (
    FLAG_BITS,
    SCHEMA_VERSION,
    canonical_flags,
    decode_flag_array,
    decode_flags,
    encode_flags,
    flag_table,
)
from immunoprofile.study import assemble, read_study, write_study
from immunoprofile.study.views import flag_labels

DATA = Path(__file__).parent / "data"
CYTOKINE_FIXTURE = Path(__file__).parents[1] / "cytokine" / "data" / "cytokines_schema1.h5ad"


def test_names_and_bits_are_pinned():
    assert SCHEMA_VERSION == "2"
    assert FLAG_BITS == {
        "failed_fit": 1, "below_curve": 2, "above_curve": 3, "<LLOQ": 4, ">ULOQ": 5,
        "extrapolated": 6, "low_beads": 7, "high_cv": 8, "missing": 9,
        "control_out_of_range": 10,
        "missing: visit not attended": 16, "missing: after dropout": 17,
        "missing: assay not scheduled at this visit": 18,
        "missing: sample listed in the manifest but absent from the results": 19,
        "missing: value not available for this sample": 20,
    }
    from immunoprofile.cytokine.quantify import FLAGS

    assert FLAGS == ("ok", *schema.QC_FLAGS)  # bit i = FLAGS[i]: cytokines.h5ad's old layout
    assert schema.STATISTICS == ("pct_parent", "pct_total", "count", "mfi", "gmean", "rcv",
                                 "concentration")
    assert schema.FEATURE_TYPES == ("frequency", "count", "mfi", "concentration")
    assert schema.STUDY_LAYERS == ("raw", "transformed", "flag", "change_from_baseline",
                                   "censored", "back_calculated")
    assert schema.CYTOKINE_LAYERS == ("raw", "cv", "flag")
    assert schema.flow_column("pct_parent") == ("frequency", "pct_parent", "")
    assert schema.flow_column("count") == ("count", "count", "")
    assert schema.flow_column("mfi_CD4") == ("mfi", "mfi", "CD4")
    assert schema.flow_column("gmean_CD4") == ("mfi", "gmean", "CD4")
    assert schema.flow_column("rcv_CD4") == ("mfi", "rcv", "CD4")
    assert schema.flow_column("population") is None and schema.flow_column("mfi_") is None
    assert schema.flow_feature("/Cells/CD3+", "pct_parent") == "/Cells/CD3+|pct_parent"
    assert schema.cytokine_feature("IL-13", "pg/mL") == "IL-13|pg/mL"
    assert schema.cytokine_feature("IL-13", "") == "IL-13|conc"
    series = schema.cytokine_feature(pd.Series(["IL-6", "IL-4"]), pd.Series(["pg/mL", ""]))
    assert list(series) == ["IL-6|pg/mL", "IL-4|conc"]


def test_flag_codec_round_trip():
    for text in ("ok", "below_curve", "below_curve;<LLOQ", "<LLOQ;extrapolated;high_cv",
                 "failed_fit;low_beads", "control_out_of_range", "missing: after dropout"):
        assert decode_flags(encode_flags(text)) == text
    assert encode_flags("ok") == 0 == encode_flags("")
    assert encode_flags("<LLOQ;below_curve") == (1 << 2) | (1 << 4)
    assert canonical_flags(["<LLOQ", "below_curve;ok", "ok"]) == "below_curve;<LLOQ"
    assert canonical_flags(["ok"]) == "ok"
    # flags outside the vocabulary: bits 24-30 in sorted order, named in the file's table
    table = flag_table(["zz_lab", "OOR<", "below_curve"])
    assert table["OOR<"] == 1 << 24 and table["zz_lab"] == 1 << 25 and table["ok"] == 0
    assert decode_flags(encode_flags("zz_lab;below_curve", table), table) == "below_curve;zz_lab"
    with pytest.raises(KeyError):
        encode_flags("zz_lab")  # not in the default table
    with pytest.raises(ValueError, match="at most 7"):
        flag_table(f"lab{i}" for i in range(8))
    codes = np.array([[0, 1 << 2], [1 << 16, (1 << 2) | (1 << 4)]], dtype=np.int32)
    assert decode_flag_array(codes, flag_table()).tolist() == [
        ["ok", "below_curve"], ["missing: visit not attended", "below_curve;<LLOQ"]]
    assert max(flag_table().values()) < 2 ** 31  # fits the int32 layer


def test_every_file_stamps_the_version_and_one_vocabulary(study, tmp_path):
    from immunoprofile.cytokine.quantify import to_anndata
    from immunoprofile.flow.batch import gate_anndata

    meta = study.uns["immunoprofile"]
    assert meta["schema_version"] == SCHEMA_VERSION
    assert gate_anndata([]).uns["immunoprofile"]["schema_version"] == SCHEMA_VERSION
    cyto = to_anndata([])
    assert cyto.uns["immunoprofile"]["schema_version"] == SCHEMA_VERSION
    assert dict(cyto.uns["immunoprofile"]["flag_bits"]) == dict(meta["flag_bits"]) == flag_table()
    assert tuple(study.var.columns) == schema.STUDY_VAR_COLUMNS
    assert set(study.var["statistic"].astype(str)) <= set(schema.STATISTICS)
    assert "median" not in set(study.var["statistic"].astype(str))
    assert set(study.var["feature_type"].astype(str)) <= set(schema.FEATURE_TYPES)
    assert set(schema.layer_names(study)) == set(schema.STUDY_LAYERS)
    # the drug readout: one matcher (schema.is_drug_readout) in cytokines.h5ad and study.h5ad
    assert bool(study.var.loc["IL-1RA|pg/mL", "drug_readout"])
    assert not study.var.loc[study.var["analyte"].astype(str) != "IL-1RA", "drug_readout"].any()
    from immunoprofile.cytokine import quantify

    assert quantify.is_drug_readout is schema.is_drug_readout
    assert schema.is_drug_readout("Hu IL-1ra (25)", schema.DEFAULT_DRUG_READOUTS)
    # the flag layer decodes through the stored table after a round trip
    back = ad.read_h5ad(write_study(study, tmp_path / "s.h5ad"))
    assert (flag_labels(back) == flag_labels(study)).all()


def _fresh_like_the_fixture(trial_factory, tmp_path):
    """The inputs behind study_schema1_censored.h5ad, assembled by today's code."""
    p = trial_factory(tmp_path / "trial")
    return assemble(p["manifest"], design="example-trial", flow_dir=p["flow"], cytokine_dir=p["cyto"],
                    clinical=p["clinical"], flow_statistics=("pct_parent", "mfi"))


def test_schema1_study_migrates_to_what_assemble_writes_today(trial_factory, tmp_path):
    """study_schema1_censored.h5ad was written by the schema-1 code (main before this change) from
    tests/study/conftest.py's trial: read_study must give today's study of the same inputs."""
    raw = ad.read_h5ad(DATA / "study_schema1_censored.h5ad")
    assert raw.uns["immunoprofile"]["schema_version"] == "1"
    assert "flag_codes" in raw.uns["immunoprofile"]
    assert "median" in set(raw.var["statistic"].astype(str))
    old = read_study(DATA / "study_schema1_censored.h5ad")
    new = _fresh_like_the_fixture(trial_factory, tmp_path)
    assert old.uns["immunoprofile"]["schema_version"] == SCHEMA_VERSION
    assert old.uns["immunoprofile"]["migrated_from"] == "1"
    assert "flag_codes" not in old.uns["immunoprofile"]
    assert list(old.obs_names) == list(new.obs_names)
    assert list(old.var_names) == list(new.var_names)
    assert set(schema.layer_names(old)) == set(schema.layer_names(new))
    for layer in schema.layer_names(new):
        x, y = np.asarray(old.layers[layer]), np.asarray(new.layers[layer])
        if np.issubdtype(y.dtype, np.integer):  # flag, censored: exactly
            np.testing.assert_array_equal(x, y, err_msg=layer)
        else:  # the fixture's numbers came from pandas 2: pandas 3's means differ in the last bit
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12, equal_nan=True, err_msg=layer)
    assert old.layers["flag"].dtype == np.int32
    pd.testing.assert_frame_equal(old.obs, new.obs, check_exact=False, rtol=1e-12)
    pd.testing.assert_frame_equal(old.var, new.var, check_exact=False, rtol=1e-12)
    uo, un = dict(old.uns["immunoprofile"]), dict(new.uns["immunoprofile"])
    assert set(uo) - {"migrated_from"} == set(un)
    assert {k: int(v) for k, v in uo["flag_bits"].items()} == un["flag_bits"]
    for key in ("unmatched", "qc_samples", "standard_curves", "gating"):
        pd.testing.assert_frame_equal(uo[key], un[key], check_dtype=False)
    assert json.loads(uo["provenance_json"])["parameters"]["flow_statistics"] == ["pct_parent", "mfi"]
    # and it decodes: S03 missed week 2; odd subjects' IL-4 is below the curve
    labels = pd.DataFrame(flag_labels(old), index=old.obs_names, columns=old.var_names)
    assert labels.loc["S03|week2", "IL-13|pg/mL"] == "missing: visit not attended"
    assert labels.loc["S02|week0", "IL-4|pg/mL"] == "below_curve"


def test_flag_labels_of_an_unmigrated_schema1_file_still_decode():
    raw = ad.read_h5ad(DATA / "study_schema1_censored.h5ad")
    migrated = schema.migrate(ad.read_h5ad(DATA / "study_schema1_censored.h5ad"))
    assert (flag_labels(raw) == flag_labels(migrated)).all()


def test_schema1_cytokines_h5ad_migrates():
    old = ad.read_h5ad(CYTOKINE_FIXTURE)
    flags = np.asarray(old.layers["flag"]).copy()
    stored = dict(old.uns["immunoprofile"]["flag_bits"])
    schema.migrate(old)
    assert old.uns["immunoprofile"]["schema_version"] == SCHEMA_VERSION
    np.testing.assert_array_equal(old.layers["flag"], flags)  # the same bit mask already
    bits = dict(old.uns["immunoprofile"]["flag_bits"])
    assert {k: int(bits[k]) for k in stored} == {k: int(v) for k, v in stored.items()}
    assert "below_curve" in {decode_flags(c, bits) for c in flags.ravel()}


def test_a_newer_schema_is_refused_not_guessed(study, tmp_path):
    future = study.copy()
    future.uns["immunoprofile"] = {**dict(study.uns["immunoprofile"]), "schema_version": "99"}
    path = write_study(future, tmp_path / "future.h5ad")
    with pytest.raises(InputError, match="schema version '99'"):
        read_study(path)
