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

__all__ = ["RunLayout", "MAIN_FILES", "GateOutputs", "CytokineOutputs", "StudyOutputs", "CompareOutputs",
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


class _File:
    """A stage folder's file (or sub-folder): ``outputs.<attribute>`` is ``outputs.dir / name``."""

    def __init__(self, name: str, doc: str) -> None:
        self.name, self.__doc__ = name, f"{doc} (``{name}``)"

    def __get__(self, outputs: object, owner: type | None = None) -> Path:
        if outputs is None:  # the class attribute: for documentation
            return self  # type: ignore[return-value]
        return outputs.dir / self.name  # type: ignore[attr-defined]


@dataclass(frozen=True)
class GateOutputs:
    """The output folder of the gate stage (``immunoprofile gate --out DIR``)."""

    dir: Path

    populations = _File("populations.csv", "The tidy statistics table.")
    h5ad = _File("flow.h5ad", "Samples × (population, statistic) AnnData.")
    time_qc = _File("time_qc.csv", "Per-sample time-QC traces (only with time QC).")
    gate_positions = _File("gate_positions.csv",
                            "Fitted gate coordinates (only with data-driven gates).")
    fitted_gates = _File("fitted_gates", "Folder of each sample's fitted gates as Gating-ML.")
    membership = _File("membership", "Folder of per-event membership Parquet files.")
    compensation = _File("compensation", "Folder of the matrices computed from compensation "
                                         "controls (one folder per set).")
    provenance = _File("provenance.json", "The stage's provenance.")
    failed = _File("failed.tsv", "Files that could not be gated (only when some failed).")


@dataclass(frozen=True)
class CytokineOutputs:
    """The output folder of the cytokine stage (``immunoprofile cytokines --out DIR``)."""

    dir: Path

    concentrations = _File("concentrations.csv", "One row per well and analyte.")
    standard_curves = _File("standard_curves.csv",
                             "One row per plate and analyte: the fitted curve.")
    summary = _File("summary.csv", "Per-sample summary.")
    standard_levels = _File("standard_levels.csv", "Standards: expected vs back-calculated.")
    plate_qc = _File("plate_qc.csv", "Plate acceptance.")
    vendor_comparison = _File("vendor_comparison.csv",
                               "Ours beside the export's own results (only when an export "
                               "carries them).")
    h5ad = _File("cytokines.h5ad", "Samples × analytes AnnData.")
    provenance = _File("provenance.json", "The stage's provenance.")
    failed = _File("failed.tsv", "Exports that could not be quantified.")


@dataclass(frozen=True)
class StudyOutputs:
    """The output folder of the assemble stage (the folder of ``assemble --out FILE``)."""

    dir: Path

    h5ad = _File("study.h5ad", "The study AnnData (subject-visits × features).")
    zarr = _File("study.zarr", "The same as a zarr store (``assemble --zarr``).")
    parquet = _File("study.parquet", "The same as one tidy table.")
    by_visit = _File("study_by_visit", "Folder of one study file per visit.")
    period_means = _File("period_means.h5ad", "Subject × period means.")
    unmatched = _File("unmatched.tsv",
                       "Results without a manifest row and manifest rows without a result.")
    provenance = _File("provenance.json", "The stage's provenance.")


@dataclass(frozen=True)
class CompareOutputs:
    """The output folder of the compare stage (``immunoprofile compare --out DIR``)."""

    dir: Path

    comparisons = _File("comparisons.csv", "One row per population × feature × contrast.")
    analysis_plan = _File("analysis_plan.json", "The plan the comparisons follow.")
    notes = _File("comparisons_notes.json", "What n allows, methods.")
    provenance = _File("provenance.json", "The stage's provenance.")


@dataclass(frozen=True)
class ReportOutputs:
    """Where the report writes (the run folder itself)."""

    dir: Path

    html = _File("report.html", "The self-contained report.")
    plots = _File("plots", "Every figure as PNG, with its numbers as TSV.")
    flow_qc = _File("flow_qc_mqc.tsv", "Per-sample flow QC for MultiQC.")
    cytokine_qc = _File("cytokine_qc_mqc.tsv", "Per-plate QC for MultiQC.")


#: Stage folder -> the file that marks it (a stage's main output).
MAIN_FILES = {"flow": GateOutputs.populations.name, "cytokines": CytokineOutputs.concentrations.name,
              "study": StudyOutputs.h5ad.name, "compare": CompareOutputs.comparisons.name}


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
        for stage, marker in MAIN_FILES.items():
            given = stage_dirs.pop(f"{stage}_dir", None)
            resolved[f"{stage}_dir"] = (Path(given) if given is not None
                                        else root if (root / marker).is_file() else None)
        if stage_dirs:
            raise TypeError(f"unknown stage folder(s): {', '.join(sorted(stage_dirs))}")
        return cls(root, **resolved)

    def _stage_dir(self, stage: str) -> Path:
        given = getattr(self, f"{stage}_dir")
        return given if given is not None else self.root / stage

    def main_output(self, stage: str) -> Path:
        """Where the main file of ``stage`` (a key of :data:`MAIN_FILES`) is."""
        return self._stage_dir(stage) / MAIN_FILES[stage]

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
