"""Pipeline configs: one YAML file describing a study run, validated by pydantic models.

Contract: :func:`load_config` returns a :class:`PipelineConfig` whose paths are absolute (relative
ones are resolved against the config's folder), or raises :class:`ConfigError` listing *every*
problem at once, each with file, line, dotted path, the bad value, the allowed values and a
did-you-mean hint. :func:`config_json_schema` is the JSON Schema of the format.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from .._options import resolve_path
from ..cytokine.options import CytokineOptions
from ..errors import InputError
from ..flow.options import CompensateOptions, GateOptions, TimeQCSetting
from ..report.options import ReportOptions
from ..study.options import AnalysisPlanOptions, AssembleOptions, ComparisonOptions

__all__ = [
    "CONFIG_SCHEMA_VERSION", "Problem", "ConfigError", "PipelineConfig", "InputsConfig",
    "FlowConfig", "TimeQCConfig", "ControlSet", "CytokineConfig", "VisitWindow", "DesignConfig", "AssembleConfig", "CompareConfig", "AnalysisConfig", "ReportConfig",
    "OutputsConfig", "ExecutorConfig", "load_config", "parse_config", "config_json_schema",
]

#: The config format version this code reads.
CONFIG_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Problem:
    """One problem found in a config or its inputs (one line when printed).

    Attributes
    ----------
    file
        The file at fault (the config, the manifest, an FCS file ...).
    message
        What is wrong, with the bad value, allowed values and a hint where known.
    line
        1-based line in ``file`` when known.
    where
        Dotted path inside the config (``executor.kind``), or a row/column locator.
    """

    file: str
    message: str
    line: int | None = None
    where: str | None = None

    def __str__(self) -> str:
        location = self.file if self.line is None else f"{self.file}:{self.line}"
        where = f" {self.where}:" if self.where else ""
        return " ".join(f"{location}:{where} {self.message}".split())


class ConfigError(InputError):
    """A config with one or more problems; :attr:`problems` lists them all."""

    def __init__(self, path: str | os.PathLike[str], problems: list[Problem]) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        first = "; ".join(str(p) for p in self.problems[:3])
        more = f" (and {n - 3} more)" if n > 3 else ""
        super().__init__(path, f"{n} problem(s) in config: {first}{more}")

    def __reduce__(self):
        return (type(self), (self.path, self.problems))

    def __str__(self) -> str:  # the problems already name the file
        return self.reason


# ----- path handling ---------------------------------------------------------------------------

#: A path in the config: relative to the config's folder.
ConfigPath = Annotated[Path, AfterValidator(resolve_path)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class InputsConfig(_Model):
    """Input files. Flow files and plate files default to the manifest's ``file`` column."""

    manifest: ConfigPath = Field(description="Sample manifest CSV (sample_id, subject_id, visit, "
                                             "study_day, period, assay, file, plate, well).")
    strategy: ConfigPath | None = Field(None, description="Gating strategy (Gating-ML, FlowJo "
                                                          ".wsp or YAML).")
    flow: list[ConfigPath] = Field(default_factory=list,
                                   description="FCS files or folders; default: manifest rows "
                                               "with assay flow.")
    plates: list[ConfigPath] = Field(default_factory=list,
                                     description="Plate export files or folders.")
    layout: ConfigPath | None = Field(None, description="Plate layout CSV, when the exports "
                                                        "lack one.")
    standards: ConfigPath | None = Field(None, description="Standard concentrations CSV.")
    clinical: ConfigPath | None = Field(None, description="Clinical table CSV (by subject_id, "
                                                          "visit).")


#: ``flow.time_qc``: on/off and the thresholds (:class:`~immunoprofile.flow.options.TimeQCSetting`).
TimeQCConfig = TimeQCSetting


class ControlSet(CompensateOptions):
    """Single-stain compensation controls of one acquisition day (``immunoprofile compensate``;
    how the matrix is computed: :class:`~immunoprofile.flow.options.CompensateOptions`)."""

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$",
                             description="Folder name of its outputs (default: the date, else "
                                         "set<k>).")
    date: _dt.date | None = Field(None, description="Acquisition day: samples use the latest "
                                                    "set dated on or before their $DATE (an "
                                                    "undated set serves every other sample).")
    controls: list[ConfigPath] = Field(min_length=1, description="Control FCS files or "
                                                                 "folders.")
    unstained: ConfigPath
    channels: ConfigPath | None = Field(None, description="CSV name, channel (stained detector "
                                                          "of each control).")
    gate: ConfigPath | None = Field(None, description="Scatter pre-gate strategy (default: "
                                                      "automatic).")


class FlowConfig(GateOptions):
    """The gate stage (:class:`~immunoprofile.flow.options.GateOptions`, whose fields and
    defaults these are) plus the pipeline's own: ``enabled`` and the compensation controls."""

    enabled: bool = True
    compensation_controls: list[ControlSet] = Field(
        default_factory=list, description="Single-stain controls, one set per acquisition day "
                                          "(used when compensation is controls).")

    @model_validator(mode="after")
    def _controls(self) -> FlowConfig:
        if self.compensation == "controls" and not self.compensation_controls:
            raise ValueError("compensation is 'controls' but compensation_controls is empty")
        names = [s.name or (s.date.isoformat() if s.date else None)
                 for s in self.compensation_controls]
        named = [n for n in names if n]
        if len(set(named)) != len(named) or names.count(None) > 1:
            raise ValueError("compensation_controls: two sets share a name or date (or more "
                             "than one is undated)")
        return self


class CytokineConfig(CytokineOptions):
    """The cytokine stage (:class:`~immunoprofile.cytokine.options.CytokineOptions`, whose
    fields and defaults these are) plus ``enabled``."""

    enabled: bool = True


class VisitWindow(_Model):
    """A protocol visit: nominal study day and the tolerated days before/after it."""

    day: int
    before: int = Field(3, ge=0)
    after: int = Field(3, ge=0)


class DesignConfig(_Model):
    """Study design (the protocol): a named ``protocol`` to start from, changed by the other
    keys, or — without one — every protocol fact (periods, visits, baseline and
    end-of-treatment visits, planned and minimum doses, responder threshold). There is no
    default protocol (:func:`immunoprofile.study.design.design_from_mapping`)."""

    protocol: str | None = Field(None, description="A known protocol to start from "
                                                   "(example-trial: the bundled example).")
    baseline_visit: str | None = Field(None, description="Each subject's pre-dose reference "
                                                         "visit.")
    end_of_treatment_visit: str | None = None
    periods: dict[Literal["run-in", "treatment", "post-treatment"], tuple[int, int]] | None = \
        Field(None, description="period -> [first study day, last study day], in order.")
    visits: dict[str, VisitWindow] | None = Field(None, description="visit -> window, in "
                                                                    "protocol order.")
    planned_doses: int | None = Field(None, ge=1, description="Doses planned over treatment.")
    min_doses: int | None = Field(None, ge=0, description="Doses that make a subject "
                                                          "evaluable.")
    responder_reduction_pct: float | None = Field(None, gt=0, le=100)
    tolerance_days: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> DesignConfig:
        try:
            self.to_study_design()
        except InputError as exc:  # overlapping periods, unknown baseline visit, missing facts
            raise ValueError(exc.reason) from None
        return self

    def to_study_design(self) -> Any:
        """The :class:`immunoprofile.study.design.StudyDesign` this describes."""
        from ..study.design import design_from_mapping

        return design_from_mapping(self.model_dump())


class CompareConfig(ComparisonOptions):
    """Options of the period comparison (``study.compare.compare_periods``)."""

    enabled: bool = True


class AnalysisConfig(AnalysisPlanOptions):
    """The analysis plan of the period comparison (populations, estimands, primary endpoints).

    Written with the results as ``analysis_plan.json``; see ``study.compare`` for the methods.
    """


class AssembleConfig(AssembleOptions):
    """The study matrix (``study.h5ad``: samples × features, joined with the manifest)."""

    enabled: bool = True


class ReportConfig(ReportOptions):
    """The HTML report."""

    enabled: bool = True


class OutputsConfig(_Model):
    """Where results go."""

    dir: ConfigPath = Field(Path("output"), description="Output folder (relative to the config).")
    cache_dir: ConfigPath | None = Field(None, description="Per-sample cache; default "
                                                           "<dir>/.cache.")


class ExecutorConfig(_Model):
    """How per-sample tasks run.

    With a remote Dask scheduler the workers open the input files and write membership files
    themselves, so inputs and outputs must sit on a file system the workers share; results
    (small tables) come back to this process, which writes every other output and the cache.
    """

    kind: Literal["process", "serial", "dask"] = "process"
    jobs: int = Field(1, ge=1, description="Workers (process pool or local Dask cluster).")
    address: str | None = Field(None, pattern=r"^(tcp|tls|inproc|ucx)://\S+$",
                                description="Dask scheduler address; none starts a local "
                                            "cluster.")


class PipelineConfig(_Model):
    """A whole study run."""

    schema_version: Literal[1] = Field(description="Config format version (1).")
    name: str = ""
    description: str = ""
    inputs: InputsConfig
    flow: FlowConfig = Field(default_factory=FlowConfig)
    cytokine: CytokineConfig = Field(default_factory=CytokineConfig)
    design: DesignConfig | None = Field(None, description="The study design (required by "
                                       "immunoprofile run: there is no default protocol).")
    assemble: AssembleConfig = Field(default_factory=AssembleConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    source: str | None = Field(None, exclude=True, description="(set by load_config)")

    @property
    def out_dir(self) -> Path:
        """The output folder."""
        return self.outputs.dir

    def study_design(self) -> Any:
        """The study design the config names
        (:class:`~immunoprofile.study.design.StudyDesign`).

        Raises
        ------
        ConfigError
            When the config has no ``design:`` section (there is no default protocol).
        """
        if self.design is None:
            raise ConfigError(self.source or "config", [Problem(
                str(self.source or "config"), "no study design: add a design section naming "
                "the protocol (design: {protocol: example-trial}) or giving periods, visits, "
                "baseline_visit, end_of_treatment_visit, planned_doses, min_doses and "
                "responder_reduction_pct", where="design")])
        return self.design.to_study_design()

    @property
    def cache_dir(self) -> Path:
        """The cache folder (``<outputs.dir>/.cache`` unless set)."""
        from ..layout import RunLayout

        return self.outputs.cache_dir or RunLayout(self.outputs.dir).cache


# ----- loading with all-errors-at-once reporting -------------------------------------------------

def config_json_schema() -> dict[str, Any]:
    """The JSON Schema of pipeline configs (``immunoprofile schema``)."""
    schema = PipelineConfig.model_json_schema(mode="validation")
    schema["properties"].pop("source", None)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "immunoprofile pipeline config"
    return schema


def load_config(path: str | os.PathLike[str]) -> PipelineConfig:
    """Read and validate a pipeline config.

    Parameters
    ----------
    path
        The YAML file. Relative paths inside it are resolved against its folder.

    Returns
    -------
    PipelineConfig

    Raises
    ------
    ConfigError
        Listing every problem (file, line, dotted path, value, allowed values, hint).
    InputError
        When the file is missing or is not YAML at all.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read config ({exc})") from exc
    return parse_config(text, source=path)


def parse_config(text: str, *, source: str | os.PathLike[str]) -> PipelineConfig:
    """Validate config ``text`` as if read from ``source`` (its folder is the base for paths)."""
    source = Path(source)
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [Problem(str(source), f"not valid YAML: {problem}",
                                           line)]) from exc
    except RecursionError:  # brackets nested thousands deep
        raise ConfigError(source, [Problem(str(source), "not valid YAML: nested too deeply")]
                          ) from None
    except ValueError:  # an integer of more than 4300 digits (Python's conversion limit)
        raise ConfigError(source, [Problem(str(source), "not valid YAML: a number with "
                                                        "thousands of digits")]) from None
    if not isinstance(data, dict):
        raise ConfigError(source, [Problem(str(source), "a config must be a mapping of keys "
                                                        "(schema_version, inputs, ...)", 1)])
    problems = _duplicate_keys(root, source)
    base = source.resolve().parent
    try:
        config = PipelineConfig.model_validate(data, context={"base_dir": base})
    except ValidationError as exc:
        problems += [_problem_from_error(err, root, source) for err in exc.errors()]
        problems.sort(key=lambda p: (p.line or 0, p.where or ""))
        raise ConfigError(source, problems) from None
    if problems:
        raise ConfigError(source, problems)
    return config.model_copy(update={"source": str(source.resolve())})


def _duplicate_keys(node: Any, source: Path, where: str = "",
                    visited: set[int] | None = None) -> list[Problem]:
    # YAML aliases share nodes: walking each node once keeps an alias bomb linear
    visited = set() if visited is None else visited
    if id(node) in visited:
        return []
    visited.add(id(node))
    problems: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value)
            here = f"{where}.{name}" if where else name
            if name in seen:
                problems.append(Problem(str(source), f"key given twice (first on line "
                                                     f"{seen[name]}); the last one would win",
                                        key.start_mark.line + 1, here))
            seen.setdefault(name, key.start_mark.line + 1)
            problems += _duplicate_keys(value, source, here, visited)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            problems += _duplicate_keys(item, source, f"{where}[{i}]", visited)
    return problems


def _locate(root: Any, loc: tuple[Any, ...]) -> tuple[int | None, list[Any]]:
    """Follow ``loc`` through the YAML node tree: (1-based line of the deepest node, real path)."""
    node = root
    line = root.start_mark.line + 1 if root is not None else None
    real: list[Any] = []
    for item in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if str(k.value) == str(item)), None)
            if match is None:
                if isinstance(item, str) and "[" in item:
                    continue  # a pydantic union/validator tag, not a key
                real.append(item)  # a missing key: report on its parent's line
                break
            real.append(item)
            node = match[1]
            line = match[0].start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(item, int):
            if item >= len(node.value):
                break
            real.append(item)
            node = node.value[item]
            line = node.start_mark.line + 1
        else:
            if not (isinstance(item, str) and "[" in item):
                real.append(item)
            break
    return line, real


def _dotted(parts: list[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _allowed_fields(loc: list[Any]) -> list[str]:
    """Field names allowed at the model that ``loc`` (a parent path) points to."""
    model: Any = PipelineConfig
    for item in loc:
        if isinstance(item, int):
            continue
        field = getattr(model, "model_fields", {}).get(item)
        if field is None:
            return []
        annotation = field.annotation
        model = next((a for a in (annotation, *getattr(annotation, "__args__", ()))
                      if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return [name for name in getattr(model, "model_fields", {}) if name != "source"]


def _problem_from_error(err: dict[str, Any], root: Any, source: Path) -> Problem:
    line, real = _locate(root, tuple(err.get("loc", ())))
    kind = err.get("type", "")
    value = err.get("input")
    where = _dotted(real) or None
    message = err.get("msg", "invalid value")
    hint = ""
    if kind == "extra_forbidden":
        key = str(real[-1]) if real else "?"
        allowed = _allowed_fields(real[:-1])
        message = f"unknown key {key!r}"
        if allowed:
            message += f" (allowed: {', '.join(allowed)})"
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
    elif kind == "missing":
        message = "required key missing"
    else:
        allowed = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
        shown = value if not isinstance(value, (dict, list)) else type(value).__name__
        if allowed:
            message = f"invalid value {shown!r} (allowed: {', '.join(allowed)})"
        elif kind == "value_error":
            message = message.removeprefix("Value error, ")
        else:
            message = f"{message} (got {shown!r})"
        if allowed and isinstance(value, str):
            close = difflib.get_close_matches(value, allowed, n=1, cutoff=0.5)
            if not close:
                close = [a for a in allowed if a.lower() == value.lower()]
            hint = f"; did you mean {close[0]!r}?" if close else ""
    return Problem(str(source), message + hint, line, where)
