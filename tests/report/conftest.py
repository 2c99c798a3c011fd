"""A small synthetic run directory in the documented output formats (no FCS files needed)."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

VISITS = [("week0", 0, "run-in"), ("week4", 28, "treatment"), ("week12", 84, "treatment"),
          ("week24", 168, "post-treatment")]


@pytest.fixture()
def synthetic_run(tmp_path):
    rng = np.random.default_rng(7)
    run = tmp_path / "run"
    (run / "flow").mkdir(parents=True)
    (run / "cytokines").mkdir()
    (run / "study").mkdir()
    (run / "compare").mkdir()
    pops = ["/Cells", "/Cells/Singlets", "/Cells/Singlets/Live", "/Cells/Singlets/Live/CD3+"]
    rows = []
    for s in range(10):
        total = 8000
        count = total
        for depth, pop in enumerate(pops):
            pct = 80.0 + 0.6 * ((s * 7 + depth) % 5 - 2) if not (s == 9 and depth == 2) else 20.0  # s9 outlier
            new = int(count * pct / 100)
            rows.append({"sample_id": f"S{s:02d}", "file": f"S{s:02d}.fcs", "population": pop,
                         "parent": pops[depth - 1] if depth else "", "count": new,
                         "pct_parent": 100.0 * new / count, "pct_total": 100.0 * new / total,
                         "mfi_CD3": 1000.0 + s})
            count = new
    pd.DataFrame(rows).to_csv(run / "flow" / "populations.csv", index=False)
    (run / "flow" / "provenance.json").write_text(json.dumps({"inputs": [], "versions": {}}))
    (run / "flow" / "failed.tsv").write_text("input\treason\nbad.fcs\tbad.fcs: data segment truncated\n")

    A, B, C, D, F = 5.0, 20000.0, 300.0, -1.2, 0.9
    f = lambda x: A + (B - A) / (1 + (x / C) ** D) ** F  # noqa: E731
    wells = []
    for analyte in ("IL-13", "IL-6"):
        for k in range(8):
            conc = 10000 / 3 ** k
            wells.append({"sample_id": f"Standard{k + 1}", "plate": "P1", "well": f"A{k + 1}",
                          "analyte": analyte, "sample_type": "standard", "expected_conc": conc,
                          "mfi": f(conc) + 10, "net_mfi": f(conc), "concentration": conc,
                          "unit": "pg/mL", "dilution": 1, "flag": "ok"})
        for k in range(6):
            conc = 5 * 2 ** k
            wells.append({"sample_id": f"X{k}", "plate": "P1", "well": f"B{k + 1}",
                          "analyte": analyte, "sample_type": "unknown", "expected_conc": np.nan,
                          "mfi": f(conc) + 10, "net_mfi": f(conc), "concentration": conc * 2,
                          "unit": "pg/mL", "dilution": 2,
                          "flag": "<LLOQ" if k == 0 else ("ok;low_beads" if k == 1 else "ok")})
    pd.DataFrame(wells).to_csv(run / "cytokines" / "concentrations.csv", index=False)
    pd.DataFrame([{"plate": "P1", "analyte": a, "model": "5pl", "weights": "1/y2", "A": A, "B": B,
                   "C": C, "D": D, "F": F, "r2_weighted": 0.999, "lloq": 4.6, "uloq": 10000.0,
                   "converged": True, "standards_dropped": "Standard8" if a == "IL-6" else ""}
                  for a in ("IL-13", "IL-6")]).to_csv(run / "cytokines" / "standard_curves.csv",
                                                       index=False)
    subjects = [f"S{i:02d}" for i in range(1, 5)]
    obs = pd.DataFrame([{"subject_id": s, "visit": v, "study_day": d, "period": p}
                        for s in subjects for v, d, p in VISITS])
    obs.index = [f"{r.subject_id}|{r.visit}" for r in obs.itertuples()]
    var = pd.DataFrame({"feature_type": ["frequency", "concentration"]},
                       index=["/Cells/Singlets/Live/CD3+|pct_parent", "IL-13|pg/mL"])
    X = rng.normal(50, 5, size=(len(obs), 2))
    X[:, 1] = np.abs(X[:, 1])
    ad.AnnData(X=X, obs=obs, var=var).write_h5ad(run / "study" / "study.h5ad")
    pd.DataFrame([{"feature": feat, "family": fam, "contrast": c, "n": 4, "estimate": 0.3,
                   "ci_low": -0.1, "ci_high": 0.7, "fold_change": 2.0, "p_wilcoxon": 0.125,
                   "p_ttest": 0.04, "p_mixed": 0.05, "q": 0.1, "direction": "up", "note": ""}
                  for feat, fam in (("IL-13|pg/mL", "cytokine"),
                                    ("/Cells/Singlets/Live/CD3+|pct_parent", "flow"))
                  for c in ("run-in vs treatment", "treatment vs post-treatment")]
                 ).to_csv(run / "compare" / "comparisons.csv", index=False)
    return run
