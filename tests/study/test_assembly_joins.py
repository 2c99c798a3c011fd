"""Assembly cannot lose data silently: manifest styles, plate joins, unmatched.tsv, bridging.

On the bundled example trial's two plate exports (``immunoprofile cytokines`` with the bridging
pool): a one-row-per-well manifest and a manifest whose ``plate`` column holds a lab label
(``Plate1``) both join every cytokine result; anything that joins nothing is listed; when
nothing joins at all the error names both sides.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from immunoprofile.cli import cli
from immunoprofile.errors import InputError
from immunoprofile.study.manifest import ManifestError, read_manifest
from immunoprofile.study.matrix import assemble


@pytest.fixture(scope="module")
def plates(example_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cyto")
    files = sorted(str(p) for p in (example_dir / "plates").glob("*.csv"))
    run = CliRunner().invoke(cli, ["cytokines", *files, "--standards", str(example_dir / "standards.csv"),
                                   "--bridging", "BridgePool", "--out", str(out / "bridged"), "-q"])
    assert run.exit_code == 0, run.output
    return out / "bridged"


def cytokine_manifest(example_dir) -> pd.DataFrame:
    man = pd.read_csv(example_dir / "manifest.csv", keep_default_na=False, dtype=str)
    return man[man["assay"] == "cytokine"].reset_index(drop=True)


def write(frame: pd.DataFrame, folder) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.csv"
    frame.to_csv(path, index=False)
    return str(path)


def relocate(frame: pd.DataFrame, example_dir) -> pd.DataFrame:
    """The manifest's plate files as absolute paths (it is written elsewhere)."""
    return frame.assign(file=[str(example_dir / f) for f in frame["file"]])


def joined_everything(adata, manifest: pd.DataFrame) -> None:
    cyto = adata[:, adata.var["assay"] == "cytokine"]
    sids = set(adata.obs["cytokine_sample_id"].astype(str)) - {""}
    assert sids == set(manifest["sample_id"])
    has_value = np.isfinite(np.asarray(cyto.layers["transformed"])).any(axis=1)
    sampled = (adata.obs["cytokine_sample_id"].astype(str) != "").to_numpy()
    assert has_value[sampled].all()  # every manifest sample got its results
    unmatched = adata.uns["immunoprofile"]["unmatched"]
    assert set(unmatched["side"]) <= {"results"}  # no manifest row without a result
    assert set(unmatched["sample_id"]) == {"BridgePool"}  # only the QC pool, listed


def test_one_row_per_sample_reference(example_dir, plates):
    man = cytokine_manifest(example_dir)
    adata = assemble(example_dir / "manifest.csv", design="example-trial", cytokine_dir=plates)
    joined_everything(adata, man)


def test_one_row_per_well_manifest(example_dir, plates, tmp_path):
    man = cytokine_manifest(example_dir)
    per_well = man.assign(well=man["well"].str.split(";")).explode("well").reset_index(drop=True)
    assert len(per_well) == 2 * len(man)
    path = write(relocate(per_well, example_dir), tmp_path)
    parsed = read_manifest(path, design="example-trial")
    assert len(parsed) == len(man) and set(parsed["well"].str.count(";")) == {1}
    reference = assemble(example_dir / "manifest.csv", design="example-trial", cytokine_dir=plates)
    adata = assemble(path, design="example-trial", cytokine_dir=plates)
    joined_everything(adata, man)
    cols = (adata.var["assay"] == "cytokine").to_numpy()
    assert np.array_equal(np.asarray(adata.layers["raw"])[:, cols],
                          np.asarray(reference.layers["raw"])[:, cols], equal_nan=True)


def test_plate_label_manifest_joins_by_file_and_well(example_dir, plates, tmp_path, caplog):
    # the lab's plate label is not the export's batch name; the file column names the export
    man = cytokine_manifest(example_dir)
    labelled = man.assign(plate=man["plate"].str.replace("plate", "Plate"),
                          sample_id=man["sample_id"] + "_lab")  # the export's names differ too
    path = write(relocate(labelled, example_dir), tmp_path)
    adata = assemble(path, design="example-trial", cytokine_dir=plates)
    joined_everything(adata, labelled)
    assert "carry another name in the export" in caplog.text


def test_nothing_joins_is_an_input_error_naming_both_sides(example_dir, plates, tmp_path):
    man = cytokine_manifest(example_dir)
    wrong = man.assign(plate="PX", file="elsewhere/other.csv", sample_id=man["sample_id"] + "_x")
    path = write(wrong, tmp_path)
    with pytest.raises(InputError) as info:
        assemble(path, design="example-trial", cytokine_dir=plates)
    text = str(info.value)
    assert "plate1" in text and "plate2" in text and "PX" in text and "other.csv" in text
    run = CliRunner().invoke(cli, ["assemble", "--design", "example-trial", "--manifest", path, "--cytokines", str(plates),
                                   "--out", str(tmp_path / "s" / "study.h5ad")])
    assert run.exit_code == 2 and "joined a manifest row" in run.output


def test_unmatched_results_and_rows_are_listed(example_dir, plates, tmp_path):
    man = cytokine_manifest(example_dir)
    dropped = man.iloc[1:]  # the first sample's wells now join no manifest row
    extra = man.iloc[[0]].assign(sample_id="AD01_ghost", visit="week20", study_day="140",
                                 period="post-treatment", well="H11;H12")  # no such result
    path = write(relocate(pd.concat([dropped, extra]), example_dir), tmp_path)
    out = tmp_path / "study" / "study.h5ad"
    run = CliRunner().invoke(cli, ["assemble", "--design", "example-trial", "--manifest", path, "--cytokines", str(plates),
                                   "--out", str(out)])
    assert run.exit_code == 0, run.output
    listed = pd.read_csv(out.parent / "unmatched.tsv", sep="\t")
    assert "AD01_ghost" in set(listed.loc[listed["side"] == "manifest", "sample_id"])
    assert man["sample_id"].iloc[0] in set(listed.loc[listed["side"] == "results", "sample_id"])
    assert "unmatched" in run.output


def test_manifest_errors_one_line_per_problem(tmp_path):
    rows = "".join(f"s{i},S01,wk{i},0,,flow,f{i}.fcs,,\n" for i in range(30))
    path = tmp_path / "manifest.csv"
    path.write_text("sample_id,subject_id,visit,study_day,period,assay,file,plate,well\n" + rows)
    with pytest.raises(ManifestError) as info:
        read_manifest(path, design="example-trial")
    assert len(info.value.problems) == 30
    assert "\n" not in str(info.value) and len(str(info.value)) < 400
    run = CliRunner().invoke(cli, ["assemble", "--design", "example-trial", "--manifest", str(path), "--flow", str(tmp_path),
                                   "--out", str(tmp_path / "o.h5ad")])
    assert run.exit_code == 2
    lines = [ln for ln in run.output.splitlines() if ln.strip()]
    assert sum("unknown visit" in ln for ln in lines) == 21  # the summary line + the first 20
    assert lines[-1].strip() == "... and 10 more problem(s)"


def test_bridging_reaches_the_study(example_dir, plates):
    adata = assemble(example_dir / "manifest.csv", design="example-trial", cytokine_dir=plates)
    norm = adata.uns["immunoprofile"]["cytokine_normalisation"]
    assert norm["value"] == "concentration_reported" and norm["bridging_applied"]
    factors = norm["bridging_factors"]
    f = float(factors[(factors["plate"] == "plate2") & (factors["analyte"] == "IL-13")]["bridging_factor"].iloc[0])
    assert abs(f - 1) > 0.03  # plate2 reads ~7 % low before normalisation
    j = list(adata.var_names).index("IL-13|pg/mL")
    on2 = (adata.obs["cytokine_plate"].astype(str) == "plate2").to_numpy()
    raw, back = np.asarray(adata.layers["raw"])[:, j], np.asarray(adata.layers["back_calculated"])[:, j]
    ok = on2 & np.isfinite(raw) & np.isfinite(back)
    assert ok.sum() > 10 and np.allclose(raw[ok], back[ok] * f)
    unbridged = assemble(example_dir / "manifest.csv", design="example-trial", cytokine_dir=plates, cytokine_value="concentration")
    assert np.allclose(np.asarray(unbridged.layers["raw"])[ok, j], back[ok])
    assert not unbridged.uns["immunoprofile"]["cytokine_normalisation"]["bridging_applied"]
    # the censoring level is in the value's units: bridged LLOQs for bridged values
    lloq = adata.uns["immunoprofile"]["standard_curves"]
    plate_lloq = lloq[lloq["analyte"] == "IL-13"].set_index("plate")["lloq"].astype(float)
    f1 = float(factors[(factors["plate"] == "plate1") & (factors["analyte"] == "IL-13")]["bridging_factor"].iloc[0])
    assert adata.var.loc["IL-13|pg/mL", "log_floor"] == pytest.approx(
        2 * max(plate_lloq["plate1"] * f1, plate_lloq["plate2"] * f))
    assert unbridged.var.loc["IL-13|pg/mL", "log_floor"] == pytest.approx(2 * plate_lloq.max())
