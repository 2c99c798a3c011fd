"""The assemble stage as one function: manifest + stage results -> the study and its views on disk.

Contract: :func:`assemble_study` assembles the study with
:func:`~immunoprofile.study.matrix.assemble` and, given ``out``, writes every assemble output
beside it through :func:`write_assemble_outputs`: ``study.h5ad`` (through
:func:`~immunoprofile.study.io.write_study`, with its key checks), optionally ``study.zarr``,
``study_by_visit/<visit>.h5ad``, ``period_means.h5ad``, ``study.parquet`` (tidy),
``unmatched.tsv`` and ``provenance.json``. ``immunoprofile assemble`` and the pipeline runner
both call it, so they write the same outputs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._options import takes_options
from .._stage import StageOutcome
from .options import AssembleOptions

if TYPE_CHECKING:  # pragma: no cover
    import anndata

__all__ = ["AssembleResult", "assemble_study", "write_assemble_outputs"]


@dataclass(kw_only=True)
class AssembleResult(StageOutcome):
    """What :func:`assemble_study` produced (``written``: output name -> path; see
    :class:`~immunoprofile._stage.StageOutcome`).

    Attributes
    ----------
    adata
        The study AnnData.
    """

    adata: anndata.AnnData

    @property
    def n_unmatched(self) -> int:
        """Results without a manifest row plus manifest rows without a result."""
        return len(self.adata.uns["immunoprofile"]["unmatched"])


@takes_options(AssembleOptions)
def assemble_study(manifest: Any, options: AssembleOptions | None = None, *,
                   out: str | os.PathLike[str] | None = None, **inputs: Any) -> AssembleResult:
    """Assemble a study and, given ``out``, write all assemble outputs.

    Parameters
    ----------
    manifest
        Manifest CSV path or validated DataFrame.
    options
        The stage's options (:class:`~immunoprofile.study.options.AssembleOptions`; its fields
        may also be given as keywords, below).
    out
        The study file to write (``study.h5ad``; a name without suffix gets ``.h5ad``); the other
        outputs go beside it. ``None``: write nothing.
    **inputs
        Passed to :func:`~immunoprofile.study.matrix.assemble` (``flow``/``flow_dir``,
        ``cytokines``/``cytokine_dir``, ``clinical``, ``design``, ``drug_readouts`` ...).

    Returns
    -------
    AssembleResult
        The study and what was written.
    """
    from .matrix import assemble

    assert options is not None  # takes_options merged it
    adata = assemble(manifest, cytokine_value=options.cytokine_value, **inputs)
    result = AssembleResult(adata=adata)
    if out is not None:
        result.written = write_assemble_outputs(adata, out, zarr=options.zarr)
    return result


def write_assemble_outputs(adata: anndata.AnnData, out: str | os.PathLike[str], *,
                           zarr: bool = False) -> dict[str, Path]:
    """Write a study and its views (see the module docstring), each atomically.

    Returns
    -------
    dict
        Output name (path relative to ``out``'s folder) -> path.
    """
    from .._io import write_csv_atomic, write_json_atomic, write_parquet_atomic
    from ..layout import StudyOutputs
    from ..provenance import build_provenance
    from .io import write_study
    from .views import period_means, split_by_visit, to_tidy

    out = Path(out)
    out = out if out.suffix else out.with_suffix(".h5ad")
    folder = out.parent
    beside = StudyOutputs(folder)  # the views' names, as the report and the runner know them
    written = [write_study(adata, out)]
    if zarr:
        written.append(write_study(adata, out.with_suffix(".zarr"), zarr=True))
    for visit, sub in split_by_visit(adata).items():
        written.append(write_study(sub, beside.by_visit / f"{visit}.h5ad"))
    written.append(write_study(period_means(adata), beside.period_means))
    unmatched_path = beside.unmatched
    write_csv_atomic(unmatched_path, adata.uns["immunoprofile"]["unmatched"], sep="\t")
    written.append(unmatched_path)
    tidy_path = out.with_suffix(".parquet")
    write_parquet_atomic(tidy_path, to_tidy(adata))
    written.append(tidy_path)
    names = {p.relative_to(folder).as_posix(): p for p in written}
    inner = json.loads(adata.uns["immunoprofile"]["provenance_json"])
    prov_path = beside.provenance
    write_json_atomic(prov_path, build_provenance(
        inputs=[p["path"] for p in inner.get("inputs", [])],
        parameters={**inner.get("parameters", {}), "zarr": zarr},
        extra={"outputs": sorted(names)}))
    names[prov_path.name] = prov_path
    return names
