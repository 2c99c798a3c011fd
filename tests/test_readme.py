"""The README's Python examples run as written (issue 13: the notebook section uses the namespaced
API). Each ```python block of the "From a notebook" section is run, in order, as one script from
the repository root (where its relative ``example_data/`` paths point), under the
``if __name__ == "__main__":`` guard the README asks scripts to use for the process pool, with
FutureWarnings as errors (so the examples never use a moved name). Checks appended to the script
look at what the examples produced."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECKS = """
# -- the test's checks on what the README's examples produced --
import pandas as pd
assert not gated.failures, gated.failures
assert gated.adata.n_obs == 75 and gated.table["sample_id"].nunique() == 75
assert (gated.table.loc[gated.table["population"] == "TimeQC", "pct_removed_time_qc"] > 0).any()
assert not plates.failures and len(plates.concentrations) > 0
assert set(plates.results[0].curves["model"]) == {"5pl"}
# the one-file sequence gives the numbers gate_files gives for that file without time QC
batch = ip.flow.gate_files(["example_data/flow/AD01_week0_flow.fcs"],
                           "example_data/strategy.yaml").table
cols = ["population", "count", "pct_parent"]
pd.testing.assert_frame_equal(table[cols].reset_index(drop=True),
                              batch[cols].reset_index(drop=True), check_dtype=False)
print("README examples ok")
"""


def _notebook_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## From a notebook", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_notebook_section_uses_the_namespaces():
    blocks = _notebook_blocks()
    assert len(blocks) >= 2
    code = "\n".join(blocks)
    assert "ip.flow.gate_files" in code and "ip.cytokine.quantify_files" in code
    assert "immunoprofile.executors" not in code  # plumbing stays out of the examples


@pytest.mark.slow
def test_the_readme_notebook_examples_run(tmp_path):
    body = "\n".join(_notebook_blocks()) + CHECKS
    script = tmp_path / "readme_examples.py"
    script.write_text('if __name__ == "__main__":\n' + textwrap.indent(body, "    "),
                      encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-W", "error::FutureWarning:__main__", str(script)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "README examples ok" in proc.stdout
