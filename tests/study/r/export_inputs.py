"""Write the inputs of the R reference (run by hand, then run make_reference.R).

    PYTHONPATH=src python tests/study/r/export_inputs.py RUN_DIR

RUN_DIR is the output folder of ``immunoprofile run pipelines/example_trial.yaml`` (its
``study.h5ad``). Writes ``tests/study/data/r_reference/{example_trial,edge_cases}_{long,clinical}.csv``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import anndata as ad  # noqa: E402

from study_long_format import clinical_from_study, edge_case_long, long_from_study  # noqa: E402

PRIMARY = ["Th2|pct_parent", "Treg|pct_parent", "IL-13", "CCL17"]


def main(run_dir: str) -> None:
    out = HERE.parent / "data" / "r_reference"
    out.mkdir(parents=True, exist_ok=True)
    adata = ad.read_h5ad(Path(run_dir) / "study" / "study.h5ad")  # RunLayout(run_dir).study.h5ad
    long_from_study(adata, PRIMARY).to_csv(out / "example_trial_long.csv", index=False,
                                           float_format="%.17g")
    clinical_from_study(adata).to_csv(out / "example_trial_clinical.csv", index=False,
                                      float_format="%.17g")
    long, clinical = edge_case_long()
    long.to_csv(out / "edge_cases_long.csv", index=False, float_format="%.17g")
    clinical.to_csv(out / "edge_cases_clinical.csv", index=False, float_format="%.17g")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1])
