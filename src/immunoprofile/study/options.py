"""The options of the study stages, one model each (see :mod:`immunoprofile._options`).

:class:`AssembleOptions` (the ``assemble`` stage: :func:`~immunoprofile.study.stage.
assemble_study`, ``immunoprofile assemble``, the config's ``assemble:`` section) and
:class:`CompareOptions` (the ``compare`` stage: :func:`~immunoprofile.study.compare_stage.
compare_study`, ``immunoprofile compare``; the config's ``compare:`` section is its
:class:`ComparisonOptions`, ``analysis:`` its :class:`AnalysisPlanOptions`). Light on
purpose (pydantic only): the config and the command build on it before numpy loads.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from .._options import Cli, StageOptions

__all__ = ["AssembleOptions", "CytokineValue", "ComparisonOptions", "AnalysisPlanOptions",
           "CompareOptions"]

#: Which ``concentrations.csv`` column is a cytokine feature's value.
CytokineValue = Literal["concentration", "concentration_reported"]


class AssembleOptions(StageOptions):
    """The study matrix (``study.h5ad``: samples × features, joined with the manifest)."""

    cytokine_value: CytokineValue = Field(
        "concentration_reported",
        description="Which concentrations.csv column is the value (concentration_reported: LLOQ "
                    "policy and bridging applied; the raw value stays as layer back_calculated).")
    zarr: bool = Field(False, description="Also write the study as a .zarr store.")


Pair = tuple[str, str]


class ComparisonOptions(StageOptions):
    """The period comparison's tests (a config's ``compare:`` section)."""

    layer: str = Field("transformed", description="Layer (scale) the tests run on.")
    contrasts: Annotated[tuple[Pair, ...] | None, Cli(skip="period pairs: a config's "
                                                         "compare.contrasts")] = Field(
        None, description="[first, second] period pairs; default: the protocol's contrasts.")
    mixed: bool = Field(True, description="Also fit the mixed model (sensitivity).")
    mixed_ddf: Annotated[Literal["satterthwaite", "kenward-roger"], Cli(flag="--ddf")] = Field(
        "satterthwaite", description="Mixed-model contrast df: Satterthwaite or Kenward-Roger.")
    min_subjects: int = Field(3, ge=1, description="Fewest complete pairs for a test (fewer: "
                                                   "reported in note).")
    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level of the primary "
                                                       "hierarchy.")


class AnalysisPlanOptions(StageOptions):
    """The analysis plan (populations, estimands, primary endpoints; a config's ``analysis:``
    section), written with the results as ``analysis_plan.json``."""

    populations: Annotated[tuple[Literal["evaluable", "all"], ...], Cli(flag="--population")] = \
        Field(("evaluable", "all"), description="Analysis populations reported; evaluable "
              "(>= min doses) is primary, all the sensitivity analysis.")
    estimands: Annotated[dict[str, tuple[str, ...]] | None, Cli(skip="period -> visits: a "
                                                                "config's analysis.estimands")] \
        = Field(None, description="period -> visits whose mean is the subject's period value; "
                "default every visit of the period (e.g. treatment: [week4, week8, week12]).")
    primary: tuple[str, ...] = Field((), description="Pre-specified primary features (var name, "
                                     "gate-path tail such as 'Th2|pct_parent', or analyte).")
    primary_contrasts: Annotated[tuple[Pair, ...] | None, Cli(
        skip="period pairs: a config's analysis.primary_contrasts")] = Field(
        None, description="Contrasts of the primary hierarchy (default: the first contrast).")
    hierarchy: Literal["gate", "fixed-sequence"] = Field(
        "gate", description="gate: Holm over primary Friedman p, then Holm over the primary "
                            "contrasts of the features that passed; fixed-sequence: in order.")
    primary_test: Literal["ttest", "wilcoxon", "mixed"] = Field(
        "ttest", description="The test of the primary contrasts.")
    qc_populations: Annotated[tuple[str, ...], Cli(flag="--qc-population")] = Field(
        ("TimeQC", "Cells", "Singlets", "Live"),
        description="Gating-QC gates: reported, not tested.")
    test_qc: bool = Field(False, description="Test the gating-QC gates as well.")
    censored_max_fraction: float = Field(
        0.5, ge=0, le=1, description="Above this fraction of censored values parametric "
                                     "estimates are not estimable.")


class CompareOptions(ComparisonOptions, AnalysisPlanOptions):
    """The compare stage (:func:`~immunoprofile.study.compare_stage.compare_study`, ``immunoprofile
    compare``): the tests and the analysis plan (a config's ``compare:`` and ``analysis:``)."""

    def settings(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~immunoprofile.study.compare.compare_periods` (a
        ``None`` contrasts: its default)."""
        out = {k: getattr(self, k) for k in type(self).model_fields}
        if out["contrasts"] is None:
            del out["contrasts"]
        return out

    @classmethod
    def from_sections(cls, compare: ComparisonOptions | None,
                      analysis: AnalysisPlanOptions | None) -> CompareOptions:
        """The stage's options from a config's ``compare:`` and ``analysis:`` sections (what
        each set explicitly; the rest the defaults)."""
        given: dict[str, Any] = {}
        for section, part in ((compare, ComparisonOptions), (analysis, AnalysisPlanOptions)):
            if section is not None:
                given.update({k: getattr(section, k) for k in section.model_fields_set
                              if k in part.model_fields})
        return cls(**given)
