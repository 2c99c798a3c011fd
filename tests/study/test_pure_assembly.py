"""Pure assembly (issue 13): ``assemble`` on in-memory tables gives the study that assembling the
stage output folders gives, so an analyst holding a statistics table need not write CSVs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from immunoprofile.errors import InputError
from immunoprofile.study import assemble, load_cytokine_results, load_flow_results
from immunoprofile.study.inputs import CytokineResults, FlowResults


def _same_values(a, b) -> None:
    assert list(a.obs_names) == list(b.obs_names) and list(a.var_names) == list(b.var_names)
    for layer in ("raw", "transformed", "flag", "censored", "change_from_baseline", "back_calculated"):
        np.testing.assert_array_equal(np.asarray(a.layers[layer]), np.asarray(b.layers[layer]))
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)


def test_tables_in_memory_give_the_folder_study(trial, study):
    pops = pd.read_csv(trial["flow"] / "populations.csv")
    conc = pd.read_csv(trial["cyto"] / "concentrations.csv")
    curves = pd.read_csv(trial["cyto"] / "standard_curves.csv")
    manifest = pd.read_csv(trial["manifest"])
    clinical = pd.read_csv(trial["clinical"])
    # the manifest's files are relative to its folder; with a DataFrame the join falls back
    # to plate + well, which this trial's manifest supports
    mem = assemble(manifest, design="example-trial", flow=pops, cytokines=conc, standard_curves=curves, clinical=clinical)
    _same_values(study, mem)
    assert mem.var.loc["IL-4|pg/mL", "log_floor"] == pytest.approx(2.0)  # curves reached it
    # the in-memory study records no input files: none were read
    assert json.loads(mem.uns["immunoprofile"]["provenance_json"])["inputs"] == []


def test_loaders_are_what_the_folder_shorthand_uses(trial, study):
    flow, cyto = load_flow_results(trial["flow"]), load_cytokine_results(trial["cyto"])
    assert isinstance(flow, FlowResults) and isinstance(cyto, CytokineResults)
    assert flow.source == trial["flow"] / "populations.csv"
    assert cyto.standard_curves is not None and len(cyto.standard_curves) == 8
    again = assemble(trial["manifest"], design="example-trial", flow=flow, cytokines=cyto, clinical=trial["clinical"])
    _same_values(study, again)
    inputs = json.loads(again.uns["immunoprofile"]["provenance_json"])["inputs"]
    assert sorted(r["name"] for r in inputs) == ["clinical.csv", "concentrations.csv", "manifest.csv",
                                                 "populations.csv", "standard_curves.csv"]


def test_bad_in_memory_tables_are_input_errors(trial):
    manifest = pd.read_csv(trial["manifest"])
    with pytest.raises(InputError, match="flow table: missing column"):
        assemble(manifest, design="example-trial", flow=pd.DataFrame({"sample_id": ["x"]}))
    with pytest.raises(InputError, match="cytokine table: missing column"):
        assemble(manifest, design="example-trial", cytokines=pd.DataFrame({"analyte": ["IL-6"]}))
    with pytest.raises(InputError, match="at least one"):
        assemble(manifest, design="example-trial")
    with pytest.raises(TypeError, match="not both"):
        assemble(manifest, design="example-trial", flow=pd.DataFrame(), flow_dir=trial["flow"])
