"""Where every stage's outputs live: the one description of a run folder.

Contract: each stage writes into one folder of its own with fixed file names — the folder
``immunoprofile <command> --out DIR`` writes, and the sub-folder of a run folder that
``immunoprofile run`` writes — and the report reads those same paths. Nothing searches for a
file by name. A run folder ``RUN`` (:class:`RunLayout`)::

    RUN/flow/          gate:      populations.csv, flow.h5ad, time_qc.csv, gate_positions.csv,
                                  fitted_gates/, membership/, compensation/<set>/, provenance.json,
                                  failed.tsv
    RUN/cytokines/     cytokines: concentrations.csv, standard_curves.csv, summary.csv,
                                  standard_levels.csv, plate_qc.csv, vendor_comparison.csv,
                                  cytokines.h5ad, provenance.json, failed.tsv
    RUN/study/         assemble:  study.h5ad, unmatched.tsv, ... , provenance.json
    RUN/compare/       compare:   comparisons.csv, analysis_plan.json, comparisons_notes.json,
                                  provenance.json
    RUN/report.html    report:    report.html, plots/, flow_qc_mqc.tsv, cytokine_qc_mqc.tsv
    RUN/failed.tsv, RUN/run.log, RUN/.cache/   (immunoprofile run)

The provenance parameters the report reads back are spelled once, here (:data:`STRATEGY_KEY`,
:data:`COMPENSATION_KEY`, :data:`COMPENSATION_BY_FILE_KEY`, :data:`TIME_QC_KEY`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunLayout", "GateOutputs", "CytokineOutputs", "StudyOutputs", "CompareOutputs",
           "ReportOutputs", "STRATEGY_KEY", "COMPENSATION_KEY", "COMPENSATION_BY_FILE_KEY",
           "TIME_QC_KEY"]

#: Gate provenance ``parameters``: the strategy file (absolute path).
STRATEGY_KEY = "strategy"
#: Gate provenance ``parameters``: the compensation choice (``fcs``, ``none``, a matrix path,
#: ``per file`` or ``controls``).
COMPENSATION_KEY = "compensation"
#: Gate provenance ``parameters``: file name -> matrix path when the matrix was chosen per file.
COMPENSATION_BY_FILE_KEY = "compensation_by_file"
#: Gate provenance ``parameters``: the time-QC options (``null`` when off).
TIME_QC_KEY = "time_qc"

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class GateOutputs:
    """The output folder of the gate stage (``immunoprofile gate --out DIR``)."""

    dir: Path

    @property
    def populations(self) -> Path:
        """The tidy statistics table."""
        return self.dir / "populations.csv"

    @property
    def h5ad(self) -> Path:
        """Samples × (population, statistic) AnnData."""
        return self.dir / "flow.h5ad"

    @property
    def time_qc(self) -> Path:
        """Per-sample time-QC traces (only with time QC)."""
        return self.dir / "time_qc.csv"

    @property
    def gate_positions(self) -> Path:
        """Fitted gate coordinates (only with data-driven gates)."""
        return self.dir / "gate_positions.csv"

    @property
    def fitted_gates(self) -> Path:
        """Folder of each sample's fitted gates as Gating-ML."""
        return self.dir / "fitted_gates"

    @property
    def membership(self) -> Path:
        """Folder of per-event membership Parquet files."""
        return self.dir / "membership"

    @property
    def compensation(self) -> Path:
        """Folder of the matrices computed from compensation controls (one folder per set)."""
        return self.dir / "compensation"

    @property
    def provenance(self) -> Path:
        """The stage's provenance."""
        return self.dir / "provenance.json"

    @property
    def failed(self) -> Path:
        """Files that could not be gated (only when some failed)."""
        return self.dir / "failed.tsv"


@dataclass(frozen=True)
class CytokineOutputs:
    """The output folder of the cytokine stage (``immunoprofile cytokines --out DIR``)."""

    dir: Path

    @property
    def concentrations(self) -> Path:
        """One row per well and analyte."""
        return self.dir / "concentrations.csv"

    @property
    def standard_curves(self) -> Path:
        """One row per plate and analyte: the fitted curve."""
        return self.dir / "standard_curves.csv"

    @property
    def summary(self) -> Path:
        """Per-sample summary."""
        return self.dir / "summary.csv"

    @property
    def standard_levels(self) -> Path:
        """Standards: expected vs back-calculated."""
        return self.dir / "standard_levels.csv"

    @property
    def plate_qc(self) -> Path:
        """Plate acceptance."""
        return self.dir / "plate_qc.csv"

    @property
    def vendor_comparison(self) -> Path:
        """Ours beside the export's own results (only when an export carries them)."""
        return self.dir / "vendor_comparison.csv"

    @property
    def h5ad(self) -> Path:
        """Samples × analytes AnnData."""
        return self.dir / "cytokines.h5ad"

    @property
    def provenance(self) -> Path:
        """The stage's provenance."""
        return self.dir / "provenance.json"

    @property
    def failed(self) -> Path:
        """Exports that could not be quantified."""
        return self.dir / "failed.tsv"


@dataclass(frozen=True)
class StudyOutputs:
    """The output folder of the assemble stage (the folder of ``assemble --out FILE``)."""

    dir: Path

    @property
    def h5ad(self) -> Path:
        """The study AnnData (subject-visits × features)."""
        return self.dir / "study.h5ad"

    @property
    def unmatched(self) -> Path:
        """Results without a manifest row and manifest rows without a result."""
        return self.dir / "unmatched.tsv"

    @property
    def provenance(self) -> Path:
        """The stage's provenance."""
        return self.dir / "provenance.json"


@dataclass(frozen=True)
class CompareOutputs:
    """The output folder of the compare stage (``immunoprofile compare --out DIR``)."""

    dir: Path

    @property
    def comparisons(self) -> Path:
        """One row per population × feature × contrast."""
        return self.dir / "comparisons.csv"

    @property
    def analysis_plan(self) -> Path:
        """The plan the comparisons follow."""
        return self.dir / "analysis_plan.json"

    @property
    def notes(self) -> Path:
        """What n allows, methods."""
        return self.dir / "comparisons_notes.json"

    @property
    def provenance(self) -> Path:
        """The stage's provenance."""
        return self.dir / "provenance.json"


@dataclass(frozen=True)
class ReportOutputs:
    """Where the report writes (the run folder itself)."""

    dir: Path

    @property
    def html(self) -> Path:
        """The self-contained report."""
        return self.dir / "report.html"

    @property
    def plots(self) -> Path:
        """Every figure as PNG, with its numbers as TSV."""
        return self.dir / "plots"

    @property
    def flow_qc(self) -> Path:
        """Per-sample flow QC for MultiQC."""
        return self.dir / "flow_qc_mqc.tsv"

    @property
    def cytokine_qc(self) -> Path:
        """Per-plate QC for MultiQC."""
        return self.dir / "cytokine_qc_mqc.tsv"


#: Stage -> (sub-folder of a run folder, the file that marks the stage's output folder).
_STAGE_FOLDERS = {"flow": ("flow", "populations.csv"),
                  "cytokines": ("cytokines", "concentrations.csv"),
                  "study": ("study", "study.h5ad"),
                  "compare": ("compare", "comparisons.csv")}


@dataclass(frozen=True)
class RunLayout:
    """A run folder: ``root`` with one sub-folder per stage (module docstring).

    ``flow_dir``, ``cytokines_dir``, ``study_dir`` and ``compare_dir`` put a stage's folder
    elsewhere (the report's ``--flow`` … options); by default it is ``root/<stage>``.
    """

    root: Path
    flow_dir: Path | None = None
    cytokines_dir: Path | None = None
    study_dir: Path | None = None
    compare_dir: Path | None = None

    def __post_init__(self) -> None:
        for name in ("root", "flow_dir", "cytokines_dir", "study_dir", "compare_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))

    @classmethod
    def of_folder(cls, folder: PathLike, **stage_dirs: PathLike | None) -> RunLayout:
        """The layout of a folder the report is pointed at: a run folder, or the output folder
        of one stage command (``immunoprofile gate --out DIR``; ``immunoprofile report DIR``).

        A stage's folder is the one given in ``stage_dirs`` (``flow_dir=`` …), else ``folder``
        itself when it directly holds that stage's main file (``populations.csv``,
        ``concentrations.csv``, ``study.h5ad``, ``comparisons.csv``), else ``folder/<stage>``.
        """
        root = Path(folder)
        resolved: dict[str, Path | None] = {}
        for stage, (_, marker) in _STAGE_FOLDERS.items():
            given = stage_dirs.pop(f"{stage}_dir", None)
            resolved[f"{stage}_dir"] = (Path(given) if given is not None
                                        else root if (root / marker).is_file() else None)
        if stage_dirs:
            raise TypeError(f"unknown stage folder(s): {', '.join(sorted(stage_dirs))}")
        return cls(root, **resolved)

    def _stage_dir(self, stage: str) -> Path:
        given = getattr(self, f"{stage}_dir")
        return given if given is not None else self.root / _STAGE_FOLDERS[stage][0]

    @property
    def flow(self) -> GateOutputs:
        """The gate stage's folder."""
        return GateOutputs(self._stage_dir("flow"))

    @property
    def cytokines(self) -> CytokineOutputs:
        """The cytokine stage's folder."""
        return CytokineOutputs(self._stage_dir("cytokines"))

    @property
    def study(self) -> StudyOutputs:
        """The assemble stage's folder."""
        return StudyOutputs(self._stage_dir("study"))

    @property
    def compare(self) -> CompareOutputs:
        """The compare stage's folder."""
        return CompareOutputs(self._stage_dir("compare"))

    @property
    def report(self) -> ReportOutputs:
        """Where the report goes (the run folder)."""
        return ReportOutputs(self.root)

    @property
    def failed(self) -> Path:
        """Every failed input of a run (all stages)."""
        return self.root / "failed.tsv"

    @property
    def log(self) -> Path:
        """The run's log."""
        return self.root / "run.log"

    @property
    def cache(self) -> Path:
        """The default per-sample cache folder."""
        return self.root / ".cache"
