"""The example-trial simulator and the committed example_data/ it generated.

The committed folder must be exactly what the documented command produces, every file must read
back with the package's own readers, and gating it with the bundled strategy must recover the
simulated truth.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from immunoprofile.flow.fcs import read_fcs
from immunoprofile.simulate import flow as sim_flow
from immunoprofile.simulate import plates as sim_plates
from immunoprofile.simulate import simulate_trial
from immunoprofile.simulate.__main__ import main as simulate_main
from immunoprofile.simulate.trial import PERIOD_OF_VISIT, VISITS

EXAMPLE_EVENTS = 6000  # the README's command


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    """example_data regenerated with the command written in its README."""
    out = tmp_path_factory.mktemp("example")
    simulate_trial(out, n_events=EXAMPLE_EVENTS)
    return out


@pytest.fixture(scope="module")
def manifest(example_dir) -> pd.DataFrame:
    return pd.read_csv(example_dir / "manifest.csv", dtype=str, keep_default_na=False)


# --- determinism and the committed data ---------------------------------------------------------

def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    a = simulate_trial(tmp_path / "a", seed=7, n_events=400, n_subjects=3)
    b = simulate_trial(tmp_path / "b", seed=7, n_events=400, n_subjects=3)
    c = simulate_trial(tmp_path / "c", seed=8, n_events=400, n_subjects=3)
    files_a, files_b, files_c = _files(a), _files(b), _files(c)
    assert files_a == files_b
    assert files_a.keys() == files_c.keys()
    assert files_a["flow/AD01_week0_flow.fcs"] != files_c["flow/AD01_week0_flow.fcs"]
    assert files_a["plates/plate1.csv"] != files_c["plates/plate1.csv"]


def test_committed_example_data_is_what_the_readme_command_makes(example_dir, regenerated):
    readme = (example_dir / "README.md").read_text()
    assert f"python -m immunoprofile.simulate example_data --seed 20261124 --events " \
           f"{EXAMPLE_EVENTS}" in readme
    committed, fresh = _files(example_dir), _files(regenerated)
    assert sorted(committed) == sorted(fresh)
    # strategy.gatingml.xml is written by flow.gatingml.write_gatingml, whose formatting may
    # evolve; it is compared by meaning here and by counts in the gating test below.
    differing = [name for name in fresh if committed[name] != fresh[name]
                 and name != "strategy.gatingml.xml"]
    assert differing == []
    from immunoprofile.flow.gatingml import read_gatingml

    old = read_gatingml(example_dir / "strategy.gatingml.xml")
    new = read_gatingml(regenerated / "strategy.gatingml.xml")
    assert sorted(old.paths().values()) == sorted(new.paths().values())


def test_example_data_size_limit(example_dir):
    total = sum(p.stat().st_size for p in example_dir.rglob("*") if p.is_file())
    assert total <= 30 * 1024 * 1024


def test_command_line_entry_point(tmp_path, capsys):
    assert simulate_main([str(tmp_path / "cli"), "--seed", "3", "--events", "300",
                          "--subjects", "2"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli")
    fcs = read_fcs(tmp_path / "cli" / "flow" / "AD01_week24_flow.fcs")
    assert fcs.n_events == 300
    one = simulate_trial(tmp_path / "one", seed=3, n_events=100, n_subjects=1)
    visits = pd.read_csv(one / "manifest.csv").query("assay == 'flow'").visit
    assert len(visits) == 10  # a single subject neither misses a visit nor drops out
    with pytest.raises(SystemExit):
        simulate_main([str(tmp_path / "bad"), "--subjects", "9"])


# --- manifest, files, clinical ------------------------------------------------------------------

def test_manifest_matches_files_and_design(example_dir, manifest):
    from immunoprofile.study.manifest import read_manifest

    checked = read_manifest(example_dir / "manifest.csv", design="example-trial")  # the study module's own validation
    assert len(checked) == len(manifest)
    flow = manifest[manifest.assay == "flow"]
    on_disk = sorted(p.relative_to(example_dir).as_posix()
                     for p in (example_dir / "flow").glob("*.fcs"))
    assert sorted(flow.file) == on_disk
    assert (flow.sample_id + ".fcs").tolist() == [Path(f).name for f in flow.file]
    assert manifest.sample_id.is_unique
    # 8 subjects x 10 visits, minus one missed visit and 4 visits after a week-8 dropout.
    assert len(flow) == 75
    per_subject = flow.groupby("subject_id").visit.apply(set)
    all_visits = {v[0] for v in VISITS}
    missing = {s: all_visits - v for s, v in per_subject.items() if v != all_visits}
    assert missing == {"AD05": {"week4"}, "AD07": {"week12", "week16", "week20", "week24"}}
    windows = {name: (day + lo, day + hi) for name, day, lo, hi in VISITS}
    for row in manifest.itertuples():
        lo, hi = windows[row.visit]
        assert lo <= int(row.study_day) <= hi
        assert row.period == PERIOD_OF_VISIT[row.visit]
    # The same subject-visit has the same study day in both assays and in the clinical table.
    clinical = pd.read_csv(example_dir / "clinical.csv", dtype={"study_day": str})
    days = {(r.subject_id, r.visit): r.study_day for r in manifest.itertuples()}
    assert all(days[(r.subject_id, r.visit)] == r.study_day for r in clinical.itertuples())


def test_flow_files_read_back_with_panel_and_spillover(example_dir, manifest):
    flow = manifest[manifest.assay == "flow"]
    acquisition = pd.read_csv(example_dir / "truth" / "time_anomalies.csv")
    burst = acquisition[acquisition.kind == "clog_burst"].set_index("sample_id")["n_events"]
    for row in flow.itertuples():
        fcs = read_fcs(example_dir / row.file)
        # a clog's burst adds junk events to the tube's own (truth/time_anomalies.csv)
        assert fcs.n_events == EXAMPLE_EVENTS + int(burst.get(row.sample_id, 0))
        assert list(fcs.channels) == list(sim_flow.CHANNELS)
        assert list(fcs.markers) == list(sim_flow.MARKERS)
        assert fcs.text["$SMNO"] == row.sample_id and fcs.text["$SRC"] == row.subject_id
        assert re.fullmatch(r"\d\d-[A-Z]{3}-20\d\d", fcs.text["$DATE"])
        assert tuple(fcs.spillover.channels) == sim_flow.FLUOR_CHANNELS
        np.testing.assert_array_equal(fcs.spillover.matrix, sim_flow.SPILLOVER_MATRIX)
        assert fcs.warnings == []


def test_spillover_is_applied_and_compensation_removes_it():
    """FITC (CD3) spills ~15 % into PE (CRTH2): raw PE of CD3+ non-Th2 cells is inflated, and
    compensating with the stored matrix brings it back to the level of CD3- cells."""
    rng = np.random.default_rng(11)
    sample = sim_flow.simulate_flow_sample(rng, 20_000, sim_flow.FlowParams(th2=0.05, treg=0.06))
    pe = sim_flow.CHANNELS.index("PE-A")
    fluor = [sim_flow.CHANNELS.index(c) for c in sim_flow.FLUOR_CHANNELS]
    t_not_th2 = (sample.labels == sim_flow.T_CELL) & (sample.cd4_lineage != 1)
    non_t = sample.labels == sim_flow.NON_T_LYMPH
    raw = sample.events.astype(float)
    comp = raw.copy()
    comp[:, fluor] = raw[:, fluor] @ np.linalg.inv(sim_flow.SPILLOVER_MATRIX)
    raw_gap = np.median(raw[t_not_th2, pe]) - np.median(raw[non_t, pe])
    comp_gap = np.median(comp[t_not_th2, pe]) - np.median(comp[non_t, pe])
    assert raw_gap > 1000          # 15 % of a ~9,000 CD3 signal
    assert abs(comp_gap) < 60      # gone after compensation (noise only)


def test_clinical_table(example_dir):
    from immunoprofile.study.clinical import clinical_summary, read_clinical

    clinical = read_clinical(example_dir / "clinical.csv", design="example-trial")
    summary = clinical_summary(clinical, design="example-trial")
    assert summary.evaluable.sum() == 7 and not summary.loc["AD07", "evaluable"]
    assert summary.loc["AD07", "total_doses"] < 67
    responders = summary.responder.fillna(False).astype(bool)
    assert 2 <= responders.sum() <= 6
    assert (clinical.groupby("subject_id").doses_received.apply(
        lambda d: d.is_monotonic_increasing)).all()


# --- truth --------------------------------------------------------------------------------------

def test_truth_tables_are_consistent_with_design(example_dir):
    truth = pd.read_csv(example_dir / "truth" / "flow_truth.csv")
    effects = pd.read_csv(example_dir / "truth" / "effects.csv")
    period = truth.visit.map(PERIOD_OF_VISIT)
    means = truth.assign(period=period).pivot_table(index=["subject_id", "name"], columns="period",
                                                    values="true_pct_parent")
    th2 = means.xs("Th2", level="name")
    treg = means.xs("Treg", level="name")
    cd8 = means.xs("CD4-CD8+", level="name")
    assert (th2["treatment"] < th2["run-in"]).all()
    assert (th2["post-treatment"].dropna() > th2["treatment"].dropna().loc[
        th2["post-treatment"].dropna().index]).all()
    assert (treg["treatment"] > treg["run-in"]).all()
    assert ((cd8["treatment"] / cd8["run-in"] - 1).abs() < 0.05).all()
    by_feature = effects.set_index("feature")
    assert by_feature.loc["Th2", "runin_vs_treatment"] == "down"
    assert by_feature.loc["IL-1RA", "runin_vs_treatment"] == "up"
    assert set(by_feature.index[by_feature.negative_control]) == {"CD4-CD8+", "IL-4", "IL-6"}
    cyto = pd.read_csv(example_dir / "truth" / "cytokine_truth.csv")
    il1ra = cyto[cyto.analyte == "IL-1RA"].assign(period=lambda d: d.visit.map(PERIOD_OF_VISIT))
    fold = il1ra.groupby(["subject_id", "period"]).concentration.mean().unstack()
    assert (fold["treatment"] / fold["run-in"] > 5).all()


@pytest.fixture(scope="module")
def undrifted(tmp_path_factory) -> Path:
    """The example trial without acquisition drift (what the fixed strategy was drawn on)."""
    out = tmp_path_factory.mktemp("undrifted")
    simulate_trial(out, n_events=EXAMPLE_EVENTS, acquisition_drift=None)
    return out


def _anomalous(root: Path) -> set[str]:
    """Files with a simulated clog or signal drift (truth/time_anomalies.csv)."""
    path = root / "truth" / "time_anomalies.csv"
    return set(pd.read_csv(path)["sample_id"]) if path.is_file() else set()


def _evaluate(strategy, fcs, anomalous: bool):
    """Gate a file; one with a clog or drift on what time QC keeps: its truth is the tube's own
    cells, which is what is left once the bad stretch (a clog's burst is junk) is removed."""
    from immunoprofile.flow.engine import evaluate
    from immunoprofile.flow.timeqc import apply_root_gate, time_qc

    if not anomalous:
        return evaluate(strategy, fcs)
    keep = time_qc(fcs).keep
    kept = dataclasses.replace(fcs, events=fcs.events[keep])
    return apply_root_gate(evaluate(strategy, kept), keep)


def _gating_errors(root: Path, strategy, manifest: pd.DataFrame, other=None) -> np.ndarray:
    """|% of parent - realized truth| for every population of every flow file (pp)."""
    truth = pd.read_csv(root / "truth" / "flow_truth.csv")
    anomalous = _anomalous(root)
    errors = []
    for row in manifest[manifest.assay == "flow"].itertuples():
        fcs = read_fcs(root / row.file)
        gated = _evaluate(strategy, fcs, row.sample_id in anomalous)
        by_path = {gated.paths[k]: v for k, v in gated.counts.items()}
        if other is not None:
            again = _evaluate(other, fcs, row.sample_id in anomalous)
            assert by_path == {again.paths[k]: v for k, v in again.counts.items()}
        parent_path = {gated.paths[k]: gated.paths[p] for k, p in gated.parents.items() if p}
        for t in truth[truth.sample_id == row.sample_id].itertuples():
            pct = 100.0 * by_path[t.population] / by_path[parent_path[t.population]]
            errors.append(pct - t.realized_pct_parent)
    return np.abs(np.array(errors))


def test_acquisition_drift_is_in_the_truth_and_leaves_the_rest_unchanged(example_dir, manifest,
                                                                        undrifted):
    drift = pd.read_csv(example_dir / "truth" / "acquisition.csv")
    flow = manifest[manifest.assay == "flow"]
    assert sorted(drift.sample_id) == sorted(flow.sample_id)
    assert drift.fluorescence_factor.between(0.8, 1.25).all()
    assert drift.fluorescence_factor.max() > 1.15 and drift.fluorescence_factor.min() < 0.85
    assert not (undrifted / "truth" / "acquisition.csv").exists()
    fluor = [sim_flow.CHANNELS.index(c) for c in sim_flow.FLUOR_CHANNELS]
    rest = [i for i in range(len(sim_flow.CHANNELS)) if i not in fluor]
    for row in drift.head(5).itertuples():
        a = read_fcs(example_dir / "flow" / f"{row.sample_id}.fcs").events
        b = read_fcs(undrifted / "flow" / f"{row.sample_id}.fcs").events
        np.testing.assert_array_equal(a[:, rest], b[:, rest])
        np.testing.assert_allclose(a[:, fluor], np.minimum(b[:, fluor] * np.float32(
            row.fluorescence_factor), 262143), rtol=1e-6)
    # the drift has its own stream: every other file of the trial is the same bytes
    same = [p for p in ("manifest.csv", "clinical.csv", "plates/plate1.csv", "plates/plate2.csv",
                        "truth/flow_truth.csv", "truth/cytokine_truth.csv")
            if (example_dir / p).read_bytes() == (undrifted / p).read_bytes()]
    assert len(same) == 6


def test_data_driven_strategy_recovers_truth_on_the_drifted_trial(example_dir, manifest):
    """Issue 16's bar: every population of every drifted file within 1 pp of the event truth,
    median <= 0.3 pp, with the gates placed on each file's own events."""
    from immunoprofile.flow.strategy import load_strategy

    strategy = load_strategy(example_dir / "strategy_adaptive.yaml")
    assert strategy.fits and strategy.meta["units"] == "data"
    errors = _gating_errors(example_dir, strategy, manifest)
    assert len(errors) == 75 * 12
    assert errors.max() < 1.0
    assert np.median(errors) <= 0.3


def test_gating_recovers_truth_and_gatingml_equals_yaml(example_dir, manifest, undrifted):
    """The fixed-coordinate strategy on the trial as acquired without drift (the coordinates
    were drawn for it); the drifted files are gated with it in the next test."""
    from immunoprofile.flow.engine import evaluate
    from immunoprofile.flow.strategy import load_strategy

    yaml_strategy = load_strategy(example_dir / "strategy.yaml")
    gml_strategy = load_strategy(example_dir / "strategy.gatingml.xml")
    assert gml_strategy.format == "gatingml"
    truth = pd.read_csv(undrifted / "truth" / "flow_truth.csv")
    anomalous = _anomalous(undrifted)
    errors = []
    for row in manifest[manifest.assay == "flow"].itertuples():
        fcs = read_fcs(undrifted / row.file)
        gated = _evaluate(yaml_strategy, fcs, row.sample_id in anomalous)
        gml = _evaluate(gml_strategy, fcs, row.sample_id in anomalous)
        by_path = {gated.paths[k]: v for k, v in gated.counts.items()}
        assert by_path == {gml.paths[k]: v for k, v in gml.counts.items()}
        parent_path = {gated.paths[k]: gated.paths[p] for k, p in gated.parents.items() if p}
        for t in truth[truth.sample_id == row.sample_id].itertuples():
            pct = 100.0 * by_path[t.population] / by_path[parent_path[t.population]]
            errors.append(pct - t.realized_pct_parent)
    errors = np.abs(np.array(errors))
    assert len(errors) == 75 * 12
    assert errors.max() < 1.0   # percentage points, for every population of every file
    assert np.median(errors) < 0.1


def _percentages(root: Path, strategy, manifest: pd.DataFrame) -> tuple[pd.Series, dict]:
    """% of parent of every truth population of every flow file, and each file's fit records."""
    from immunoprofile.flow.engine import evaluate

    truth = pd.read_csv(root / "truth" / "flow_truth.csv")
    pct, fits = {}, {}
    for row in manifest[manifest.assay == "flow"].itertuples():
        gated = evaluate(strategy, read_fcs(root / row.file))
        by_path = {gated.paths[k]: v for k, v in gated.counts.items()}
        parent_path = {gated.paths[k]: gated.paths[p] for k, p in gated.parents.items() if p}
        for t in truth[truth.sample_id == row.sample_id].itertuples():
            pct[(row.sample_id, t.name)] = 100.0 * by_path[t.population] / by_path[
                parent_path[t.population]]
        fits[row.sample_id] = gated.fits
    return pd.Series(pct), fits


def test_drift_biases_the_fixed_strategy_and_the_landmark_cuts_follow_it(example_dir, manifest,
                                                                         undrifted):
    """How much the day's fluorescence gain moves the fixed strategy's results, and that the
    data-driven strategy on the drifted files gives what the fixed one gives without drift.

    Oracle: the same events without drift (the drift is an exact per-day gain, so each file's
    undrifted twin is the same cells). Measured (issue 16): the fixed gates' per-file % moves
    by up to 0.15 pp, with the day's gain (naive CD4 % r = +0.52, effector memory r = -0.51
    against log gain); the landmark cuts' results differ by < 0.14 pp (Treg; the landmark's own
    per-file noise) and not with the gain (|r| < 0.25 for every population).
    """
    from immunoprofile.flow.strategy import load_strategy

    gain = pd.read_csv(example_dir / "truth" / "acquisition.csv").set_index(
        "sample_id").fluorescence_factor
    fixed = load_strategy(example_dir / "strategy.yaml")
    adaptive = load_strategy(example_dir / "strategy_adaptive.yaml")
    base, _ = _percentages(undrifted, fixed, manifest)
    drifted, _ = _percentages(example_dir, fixed, manifest)
    followed, fits = _percentages(example_dir, adaptive, manifest)
    _, fits_undrifted = _percentages(undrifted, adaptive, manifest)
    log_gain = np.log(gain.reindex(base.index.get_level_values(0)).to_numpy())

    def by_population(delta: pd.Series) -> pd.DataFrame:
        frame = pd.DataFrame({"delta": delta.to_numpy(), "log_gain": log_gain,
                              "name": delta.index.get_level_values(1)})
        return frame.groupby("name").apply(lambda g: pd.Series({
            "max": g.delta.abs().max(),
            "r": np.corrcoef(g.log_gain, g.delta)[0, 1] if g.delta.std() > 0 else 0.0}),
            include_groups=False)

    bias = by_population(drifted - base)
    assert 0.1 < bias["max"].max() < 0.2          # pp, the fixed strategy's drift bias
    assert bias.loc["Naive", "r"] > 0.4 and bias.loc["CM", "r"] > 0.4
    assert bias.loc["EM", "r"] < -0.4 and bias.loc["Memory", "r"] < -0.4
    residual = by_population(followed - base)
    assert residual["max"].max() < 0.15           # per-file landmark noise, same order ...
    assert residual["r"].abs().max() < 0.25       # ... but not with the day's gain
    # each landmark's centre moved by exactly the day's gain (within 2 %)
    ratios = []
    for sid, records in fits.items():
        for gid, rec in records.items():
            for name, value in rec.data_values.items():
                if name.endswith("landmark"):
                    ratios.append(value / fits_undrifted[sid][gid].data_values[name] / gain[sid])
    assert len(ratios) == 75 * 9
    np.testing.assert_allclose(ratios, 1.0, atol=0.02)


def test_example_time_qc_removes_clogs_keeps_good_events(example_dir, manifest):
    """Issue 12's oracle on the example trial: >= 95 % of clog events removed, <= 2 % of the
    good events (neither clog nor drift), drift below 0.6 of the level mostly removed."""
    from immunoprofile.flow.timeqc import time_qc

    acquisition = pd.read_csv(example_dir / "truth" / "time_anomalies.csv")
    assert set(acquisition.kind) == {"clog_gap", "clog_burst", "drift", "drift_below_0.6"}
    totals = {"clog": [0, 0], "good": [0, 0], "severe": [0, 0]}
    for row in manifest[manifest.assay == "flow"].itertuples():
        fcs = read_fcs(example_dir / row.file)
        removed = ~time_qc(fcs).keep
        marks = {k: np.zeros(fcs.n_events, dtype=bool) for k in ("clog", "drift", "severe")}
        for t in acquisition[acquisition.sample_id == row.sample_id].itertuples():
            key = {"clog_burst": "clog", "drift": "drift", "drift_below_0.6": "severe"}.get(t.kind)
            if key:
                marks[key][int(t.first_event):int(t.last_event) + 1] = True
        good = ~marks["clog"] & ~marks["drift"]
        for key, mask in (("clog", marks["clog"]), ("good", good), ("severe", marks["severe"])):
            totals[key][0] += int(removed[mask].sum())
            totals[key][1] += int(mask.sum())
    assert totals["clog"][1] == 1000 and totals["clog"][0] / totals["clog"][1] >= 0.95
    assert totals["good"][0] / totals["good"][1] <= 0.02
    assert totals["severe"][0] / totals["severe"][1] >= 0.6


def test_example_controls_give_the_true_spillover(example_dir):
    from immunoprofile.flow.spillover_estimation import estimate_spillover

    controls = example_dir / "controls"
    est = estimate_spillover(sorted(controls.glob("*.fcs")),
                             unstained=controls / "Unstained.fcs",
                             channels=controls / "channels.csv")
    assert est.detectors == sim_flow.FLUOR_CHANNELS and len(est.controls) == 9
    assert np.abs(est.spillover.matrix - sim_flow.SPILLOVER_MATRIX).max() <= 0.005


def test_new_features_leave_everything_else_unchanged(tmp_path):
    """Controls and anomalies draw from their own streams: with them off, the same files."""
    on = simulate_trial(tmp_path / "on", n_events=400, n_subjects=2)
    off = simulate_trial(tmp_path / "off", n_events=400, n_subjects=2, controls=False,
                         anomalies=False)
    changed = set(pd.read_csv(on / "truth" / "time_anomalies.csv")["sample_id"])
    assert changed == {"AD02_week4_flow"}
    for path in sorted(off.rglob("*")):
        if path.is_file() and path.name != "README.md":
            same = path.read_bytes() == (on / path.relative_to(off)).read_bytes()
            assert same == (path.stem not in changed), path
    assert (on / "controls" / "channels.csv").is_file() and not (off / "controls").exists()


# --- plates -------------------------------------------------------------------------------------

def test_plate_layout_structure():
    layout = sim_plates.plate_layout([f"S{i}" for i in range(36)])
    assert len(layout) == 96 and len({w.well for w in layout}) == 96
    assert [w.well for w in layout[:3]] == ["A1", "B1", "C1"]  # column-major acquisition order
    by_sample: dict[str, list[str]] = {}
    for w in layout:
        by_sample.setdefault(w.sample, []).append(w.well)
    assert all(len(v) == 2 for v in by_sample.values())
    assert all(a[0] == b[0] for a, b in by_sample.values())  # duplicates side by side
    assert by_sample["Background0"] == ["A1", "A2"]
    with pytest.raises(ValueError, match="do not fit"):
        sim_plates.plate_layout([f"S{i}" for i in range(37)])


def _first_cells(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return [row[0] if row else "" for row in csv.reader(handle)]


def test_plate_export_follows_xponent_42_layout(example_dir, reference_dir):
    real = (reference_dir / "cytokine" / "xponent"
            / "serolyzer_MAGPIX_xPONENT4.2_Chul_IgG3_1_quoted.csv")
    ours, theirs = _first_cells(example_dir / "plates" / "plate1.csv"), _first_cells(real)
    header_end = theirs.index("Results")
    calibrator_values = theirs.index("Lot") + 1  # a data row (lot number), not a key
    keep = [i for i in range(header_end + 1) if i != calibrator_values]
    assert [ours[i] for i in keep] == [theirs[i] for i in keep]  # same header keys and order

    def blocks(cells: list[str], path: Path) -> list[str]:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return [row[1] for row in csv.reader(handle) if row and row[0] == "DataType:"]

    assert blocks(ours, example_dir / "plates" / "plate1.csv") == blocks(theirs, real)
    raw = (example_dir / "plates" / "plate1.csv").read_bytes()
    assert b"\r\n" in raw and raw.rstrip().splitlines()[-2] == b"-- CRC --"


def test_plates_read_back_and_match_manifest(example_dir, manifest):
    from immunoprofile.cytokine.readers import read_plate

    cyto = manifest[manifest.assay == "cytokine"]
    for plate, rows in cyto.groupby("plate"):
        data = read_plate(example_dir / "plates" / f"{plate}.csv",
                          standards=example_dir / "standards.csv")
        wells = data.wells
        assert set(wells.plate) == {plate}
        assert sorted(wells.analyte.unique()) == sorted(a.name for a in sim_plates.ANALYTES)
        unknown = wells[wells.sample_type == "unknown"]
        assert set(unknown["sample"]) == set(rows.sample_id) | {sim_plates.BRIDGE_NAME}
        for row in rows.itertuples():
            got = sorted(unknown.loc[unknown["sample"] == row.sample_id, "well"].unique())
            assert got == sorted(row.well.split(";"))
        standards = wells[wells.sample_type == "standard"]
        assert standards.expected_conc.notna().all() and standards["sample"].nunique() == 8
        assert (wells[wells.sample_type == "background"].well.unique() == ["A1", "A2"]).all()
        assert (wells["count"] < 35).sum() >= 1           # a few low-bead wells
        assert set(unknown.dilution) == {sim_plates.SAMPLE_DILUTION}


def test_quantified_plates_recover_true_concentrations(example_dir):
    from immunoprofile.cytokine.quantify import quantify_plate
    from immunoprofile.cytokine.readers import read_plate

    truth = pd.read_csv(example_dir / "truth" / "cytokine_truth.csv")
    results = [quantify_plate(read_plate(example_dir / "plates" / f"plate{i}.csv",
                                         standards=example_dir / "standards.csv"))
               for i in (1, 2)]
    conc = pd.concat([r.concentrations for r in results])
    merged = conc.merge(truth, on=["sample_id", "analyte"], suffixes=("", "_true"))
    ok = merged[merged.flag == "ok"]
    ratio = ok.concentration / ok.concentration_true
    for analyte in ("IL-1RA", "IL-13", "CCL17", "TNF-a"):
        r = ratio[ok.analyte == analyte]
        assert len(r) > 80, analyte
        assert 0.9 < r.median() < 1.1, analyte
    # plate2's standards are 8 % too concentrated (truth/plates.csv): its results read ~7 % low.
    per_plate = ratio.groupby(ok.plate).median()
    expected = pd.read_csv(example_dir / "truth" / "plates.csv").set_index("plate")
    assert expected.loc["plate2", "expected_result_factor"] == pytest.approx(1 / 1.08, abs=1e-4)
    assert 0.95 < per_plate["plate1"] < 1.05
    assert 0.88 < per_plate["plate2"] / per_plate["plate1"] < 0.98
    # IL-4 is mostly below the kit's range, as designed.
    il4 = merged[merged.analyte == "IL-4"]
    assert (il4.flag != "ok").mean() > 0.8


def test_flowkit_gates_example_files_identically(example_dir, manifest, tmp_path):
    """Independent oracle: FlowKit evaluates strategy.gatingml.xml on the example files to the
    same counts as our engine. FlowKit 1.3 cannot place a Boolean gate that has a parent_id, so
    the Memory gate is removed for FlowKit and checked as CD4+CD8- minus Naive instead."""
    import flowkit as fk

    from immunoprofile.flow.engine import evaluate
    from immunoprofile.flow.strategy import load_strategy

    xml = (example_dir / "strategy.gatingml.xml").read_text(encoding="utf-8")
    without_boolean = re.sub(r"<gating:BooleanGate.*?</gating:BooleanGate>", "", xml, flags=re.S)
    assert without_boolean != xml
    (tmp_path / "s.xml").write_text(without_boolean, encoding="utf-8")
    flowkit_strategy = fk.parse_gating_xml(str(tmp_path / "s.xml"))
    ours_strategy = load_strategy(example_dir / "strategy.gatingml.xml")
    files = manifest[manifest.assay == "flow"].file.tolist()
    for name in (files[0], files[len(files) // 2], files[-1]):
        report = flowkit_strategy.gate_sample(fk.Sample(str(example_dir / name))).report
        theirs = dict(zip(report.gate_name, report["count"].astype(int), strict=True))
        ours = evaluate(ours_strategy, read_fcs(example_dir / name))
        by_path = {ours.paths[k]: v for k, v in ours.counts.items()}
        assert len(theirs) == 14   # every population but the boolean one
        assert {k: ours.counts[k] for k in theirs} == theirs
        cd4 = "/Cells/Singlets/Live/CD3+/CD4+CD8-"
        assert by_path[f"{cd4}/Memory"] == by_path[cd4] - by_path[f"{cd4}/Naive"]
