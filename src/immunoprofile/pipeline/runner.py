"""Run a whole study from a :class:`~immunoprofile.pipeline.config.PipelineConfig`.

Contract: :func:`run_pipeline` runs gate → cytokines → assemble → compare → report, each stage by
calling its library function (no science here), per-sample tasks through
:func:`immunoprofile.executors.run_tasks`, flow samples and plates cached by content so a re-run
redoes only what changed. Failed samples are listed (``failed.tsv``), the rest go on; a stage whose module is
not installed is skipped with a logged message. Same inputs give the same output bytes.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..executors import ExecutorSpec, TaskOutcome, run_tasks
from ..provenance import sha256_file
from .cache import ResultCache, cache_key
from .config import PipelineConfig

__all__ = ["StageResult", "RunSummary", "run_pipeline", "ProgressFactory", "flow_samples",
           "expand_plate_inputs", "clean_stale_temp_files"]

log = logging.getLogger("immunoprofile.run")

#: ``progress(total, description)`` -> context manager yielding ``advance()``.
ProgressFactory = Callable[[int, str], contextlib.AbstractContextManager[Callable[[], None]]]

PLATE_SUFFIXES = (".csv", ".txt", ".xlsx", ".xls", ".xml", ".tsv")


@dataclass
class StageResult:
    """What one stage did: ``status`` ∈ done, skipped, failed; ``outputs`` written."""

    name: str
    status: str
    message: str = ""
    outputs: list[Path] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class RunSummary:
    """The outcome of :func:`run_pipeline`.

    Attributes
    ----------
    out_dir
        The output folder.
    stages
        One :class:`StageResult` per stage, in order.
    failures
        ``(input, reason)`` of every failed sample or plate (all stages).
    n_flow, n_flow_cached
        FCS files gated, and how many of them came from the cache.
    n_plates, n_plates_cached
        Plate exports quantified, and how many of them came from the cache.
    """

    out_dir: Path
    stages: list[StageResult] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    n_flow: int = 0
    n_flow_cached: int = 0
    n_plates: int = 0
    n_plates_cached: int = 0

    @property
    def exit_code(self) -> int:
        """0 when everything succeeded, 1 when some samples failed."""
        return 1 if self.failures or any(s.status == "failed" for s in self.stages) else 0

    def stage(self, name: str) -> StageResult | None:
        """The result of stage ``name``."""
        return next((s for s in self.stages if s.name == name), None)


@contextlib.contextmanager
def _no_progress(total: int, description: str) -> Iterator[Callable[[], None]]:
    yield lambda: None


def _optional_module(name: str) -> Any | None:
    """Import a stage's module, or ``None`` when it is not part of this installation yet."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            return None
        raise  # the module exists but one of *its* imports is missing: a real error


def clean_stale_temp_files(folder: Path) -> int:
    """Remove temporary files that a killed run left behind (``.<name>.*.tmp``)."""
    removed = 0
    if not folder.is_dir():
        return 0
    for tmp in folder.rglob(".*.tmp"):
        if tmp.is_file():
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed += 1
    return removed


def run_pipeline(
    config: PipelineConfig,
    *,
    force: bool = False,
    jobs: int | None = None,
    executor: str | None = None,
    address: str | None = None,
    progress: ProgressFactory | None = None,
) -> RunSummary:
    """Run every stage of a config.

    Parameters
    ----------
    config
        A loaded config (:func:`~immunoprofile.pipeline.config.load_config`).
    force
        Ignore cached per-sample results and recompute everything.
    jobs, executor, address
        Override ``config.executor`` (``--jobs``, ``--executor``, ``--scheduler``).
    progress
        ``progress(total, description)`` context manager yielding ``advance()``.

    Returns
    -------
    RunSummary
    """
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    cleaned = clean_stale_temp_files(out)
    if cleaned:
        log.info("removed %d temporary file(s) left by an interrupted run", cleaned)
    spec = ExecutorSpec(kind=executor or config.executor.kind,  # type: ignore[arg-type]
                        jobs=jobs if jobs is not None else config.executor.jobs,
                        address=address if address is not None else config.executor.address)
    progress = progress or _no_progress
    summary = RunSummary(out_dir=out)
    design = config.design.to_study_design()

    from ..study.manifest import read_manifest

    manifest = read_manifest(config.inputs.manifest, design=design)
    log.info("manifest %s: %d sample(s)", config.inputs.manifest.name, len(manifest))

    stages: list[tuple[Callable[..., StageResult], tuple]] = [
        (_flow_stage, (config, manifest, spec, force, progress, summary)),
        (_cytokine_stage, (config, manifest, spec, force, progress, summary)),
        (_study_stage, (config, manifest, design, summary)),
        (_compare_stage, (config, design, summary)),
        (_report_stage, (config, summary)),
    ]
    for stage, args in stages:
        started = time.perf_counter()
        result = stage(*args)
        result.seconds = time.perf_counter() - started
        summary.stages.append(result)
    _write_failed(out / "failed.tsv", summary.failures)
    return summary


def _write_failed(path: Path, failures: list[tuple[str, str]]) -> None:
    from .._io import write_text_atomic

    if failures:
        lines = ["input\treason"] + ["\t".join(" ".join(str(x).replace("\t", " ").split())
                                               for x in f) for f in sorted(failures)]
        write_text_atomic(path, "\n".join(lines) + "\n")
    elif path.exists():
        path.unlink()


# ----- flow ------------------------------------------------------------------------------------

def flow_samples(config: PipelineConfig, manifest: Any) -> list[tuple[str, Path]]:
    """``(sample_id, FCS path)`` of every flow sample, sorted by sample id.

    From ``inputs.flow`` (files/folders; ids from the manifest by file name, else the stem)
    when given, else from the manifest's ``assay == flow`` rows (paths relative to it).
    """
    from ..flow.batch import expand_fcs_inputs

    base = config.inputs.manifest.parent
    flow_rows = manifest[manifest["assay"].astype(str).str.lower() == "flow"]
    by_name = {Path(str(f)).name: str(s) for s, f in zip(flow_rows["sample_id"],
                                                        flow_rows["file"])}
    if config.inputs.flow:
        files = expand_fcs_inputs(config.inputs.flow)
        pairs = [(by_name.get(f.name, f.stem), f) for f in files]
    else:
        pairs = []
        for sid, file in zip(flow_rows["sample_id"], flow_rows["file"]):
            path = Path(str(file))
            pairs.append((str(sid), path if path.is_absolute() else base / path))
    seen: dict[str, Path] = {}
    for sid, path in pairs:
        if sid in seen:
            raise InputError(config.inputs.manifest, f"sample id {sid!r} names two FCS files "
                                                     f"({seen[sid].name}, {path.name})")
        seen[sid] = path
    return sorted(pairs)


def _flow_stage(config: PipelineConfig, manifest: Any, spec: ExecutorSpec, force: bool,
                progress: ProgressFactory, summary: RunSummary) -> StageResult:
    if not config.flow.enabled:
        return StageResult("gate", "skipped", "disabled in the config")
    if config.inputs.strategy is None:
        return StageResult("gate", "skipped", "no inputs.strategy in the config")
    from ..flow.batch import gate_task, write_gate_outputs
    from ..flow.strategy import load_strategy

    pairs = flow_samples(config, manifest)
    if not pairs:
        return StageResult("gate", "skipped", "no flow samples in the manifest")
    strategy_path = config.inputs.strategy
    if not strategy_path.is_file():
        raise InputError(strategy_path, "strategy file not found")
    strategy = load_strategy(strategy_path, group=config.flow.group)
    compensation = config.flow.compensation
    time_qc = config.flow.time_qc.options()
    hashes = {"strategy": sha256_file(strategy_path),
              "strategy_matrices": _matrices_digest(strategy)}
    out = config.out_dir / "flow"
    control_sets: list[tuple[Any, Path]] = []
    if compensation == "controls":
        control_sets = compensation_from_controls(config, out / "compensation")
    elif compensation not in ("fcs", "none"):
        if not Path(compensation).is_file():
            raise InputError(compensation, "compensation matrix file not found")
        hashes["compensation"] = sha256_file(compensation)
    cache = ResultCache(config.cache_dir)
    cache.clean_stale()

    samples: dict[str, Any] = {}
    failures: list[tuple[str, str]] = []
    tasks: list[tuple[str, tuple]] = []
    keys: dict[str, str] = {}
    paths: dict[str, Path] = {}
    matrix_of_file: dict[str, str] = {}
    for sid, path in pairs:
        paths[sid] = path
        if not path.is_file():
            failures.append((str(path), f"{path}: FCS file not found"))
            continue
        sample_comp = compensation
        sample_hashes = dict(hashes)
        if control_sets:
            try:
                sample_comp = str(matrix_for_sample(path, control_sets))
            except InputError as exc:
                failures.append((str(path), str(exc)))
                continue
            sample_hashes["compensation"] = sha256_file(sample_comp)
            matrix_of_file[path.name] = sample_comp
        key = cache_key(kind="flow",
                        input_hashes={**sample_hashes, "fcs": sha256_file(path)},
                        parameters={"sample_id": sid, "file": path.name,
                                    "compensation": compensation if compensation in
                                    ("fcs", "none") else "matrix",
                                    "group": config.flow.group,
                                    "statistics": sorted(config.flow.statistics),
                                    "time_qc": None if time_qc is None else time_qc.to_dict()})
        keys[sid] = key
        member = out / "membership" / f"{sid}.parquet" if config.flow.membership else None
        # data-driven gates: each sample's fitted gates as fixed Gating-ML (replayable)
        fitted = out / "fitted_gates" / f"{sid}.gatingml.xml" if strategy.fits else None
        cached = None if force else cache.get_gating(key)
        if cached is not None and all(p is None or p.is_file() for p in (member, fitted)):
            samples[sid] = cached
            continue
        tasks.append((sid, (str(path), strategy, sample_comp, sid,
                            None if member is None else str(member),
                            tuple(config.flow.statistics),
                            None if fitted is None else str(fitted), time_qc)))
    summary.n_flow_cached = len(samples)
    log.info("gate: %d FCS file(s), %d from the cache, %d to compute (%s, %d job(s))",
             len(pairs), len(samples), len(tasks), spec.effective_kind(len(tasks)), spec.jobs)

    with progress(len(tasks), "gating") as advance:
        def on_done(outcome: TaskOutcome) -> None:
            # store each sample as it finishes: a run killed now keeps what is done
            if outcome.ok:
                cache.put_gating(keys[outcome.key], outcome.value)
            else:
                log.warning("%s: %s", outcome.key, outcome.error)
                if outcome.details:
                    log.debug(outcome.details)
            advance()

        outcomes = run_tasks(gate_task, tasks, spec=spec, on_done=on_done) if tasks else []
    for outcome in outcomes:
        if outcome.ok:
            samples[outcome.key] = outcome.value
        else:
            failures.append((str(paths[outcome.key]), outcome.error or "failed"))
    written = write_gate_outputs(
        out, list(samples.values()), failures, strategy=strategy,
        parameters={"strategy": str(strategy_path), "compensation": compensation,
                    "group": config.flow.group, "membership": config.flow.membership,
                    "statistics": list(config.flow.statistics), "config": config.source,
                    "time_qc": None if time_qc is None else time_qc.to_dict(),
                    "compensation_controls": [
                        {"set": p.parent.name, "date": None if s.date is None
                         else s.date.isoformat(), "matrix": str(p)} for s, p in control_sets],
                    **({"compensation_by_file": dict(sorted(matrix_of_file.items()))}
                       if matrix_of_file else {})},
        inputs=[*(p for p in paths.values() if p.is_file()), strategy_path,
                *([Path(compensation)] if compensation not in ("fcs", "none", "controls")
                  else []), *(p for _, p in control_sets)],
        command=f"immunoprofile run {config.source}")
    summary.n_flow = len(samples)
    summary.failures += failures
    message = f"{len(samples)}/{len(pairs)} file(s) gated ({summary.n_flow_cached} cached)"
    return StageResult("gate", "done", message, list(written.values()))


def compensation_from_controls(config: PipelineConfig, out_dir: Path) -> list[tuple[Any, Path]]:
    """Compute the spillover matrix of every ``flow.compensation_controls`` set.

    Each set's outputs (``spillover.csv``, ``spillover.txt``, ``controls.csv``, figure,
    provenance) go to ``out_dir/<name>/`` (name: the set's ``name``, else its date, else
    ``set<k>``).

    Returns
    -------
    list of (ControlSet, Path)
        Each set with its ``spillover.csv``.
    """
    from ..flow.batch import expand_fcs_inputs
    from ..flow.spillover_estimation import estimate_spillover, write_spillover_outputs

    done = []
    for k, cset in enumerate(config.flow.compensation_controls, start=1):
        name = cset.name or (cset.date.isoformat() if cset.date else f"set{k}")
        files = expand_fcs_inputs(cset.controls)
        estimate = estimate_spillover(files, unstained=cset.unstained, channels=cset.channels,
                                      gate=cset.gate)
        written = write_spillover_outputs(
            out_dir / name, estimate, command=f"immunoprofile run {config.source}",
            inputs=[p for p in (cset.channels, cset.gate) if p is not None])
        log.info("compensation: %s: %d controls -> %s", name, len(estimate.controls),
                 written["spillover"])
        done.append((cset, written["spillover"]))
    return done


def matrix_for_sample(path: Path, control_sets: list[tuple[Any, Path]]) -> Path:
    """The matrix of the latest control set dated on or before the file's ``$DATE``; an undated
    set serves files without a dated match.

    Raises
    ------
    InputError
        When no set fits the file's acquisition day.
    """
    from ..flow.fcs import read_fcs_metadata
    from ..flow.spillover_estimation import acquisition_date

    undated = [p for s, p in control_sets if s.date is None]
    dated = sorted(((s.date, p) for s, p in control_sets if s.date is not None))
    day = acquisition_date(read_fcs_metadata(path).text) if dated else None
    fits = [p for d, p in dated if day is not None and d <= day]
    if fits:
        return fits[-1]
    if undated:
        return undated[0]
    raise InputError(path, f"no compensation controls acquired on or before this file's $DATE "
                           f"({day or 'missing'})")


def _matrices_digest(strategy: Any) -> str:
    """Digest of the compensation matrices a strategy carries (a YAML strategy may name a CSV
    file whose content the strategy file's own hash does not cover)."""
    import hashlib

    import numpy as np

    digest = hashlib.sha256()
    for cid in sorted(strategy.compensations):
        spill = strategy.compensations[cid]
        digest.update(cid.encode())
        digest.update("\0".join(getattr(spill, "channels", ())).encode())
        digest.update(np.ascontiguousarray(getattr(spill, "matrix", np.zeros(0)),
                                           dtype=np.float64).tobytes())
    return digest.hexdigest()


# ----- cytokines -------------------------------------------------------------------------------

def expand_plate_inputs(items: list[Path]) -> list[Path]:
    """Plate files as given; folders expanded to their plate exports (sorted)."""
    files: list[Path] = []
    for item in items:
        if item.is_dir():
            files += sorted(p for p in item.iterdir()
                            if p.is_file() and p.suffix.lower() in PLATE_SUFFIXES
                            and not p.name.startswith("."))
        elif item.exists():
            files.append(item)
        else:
            raise InputError(item, "no such plate file or folder")
    return list(dict.fromkeys(files))


def _plate_files(config: PipelineConfig, manifest: Any) -> list[Path]:
    if config.inputs.plates:
        return expand_plate_inputs(list(config.inputs.plates))
    base = config.inputs.manifest.parent
    rows = manifest[manifest["assay"].astype(str).str.lower() != "flow"]
    files = []
    for file in dict.fromkeys(str(f) for f in rows["file"] if str(f)):
        path = Path(file)
        files.append(path if path.is_absolute() else base / path)
    return sorted(files)


def _cytokine_stage(config: PipelineConfig, manifest: Any, spec: ExecutorSpec, force: bool,
                    progress: ProgressFactory, summary: RunSummary) -> StageResult:
    if not config.cytokine.enabled:
        return StageResult("cytokines", "skipped", "disabled in the config")
    quantify = _optional_module("immunoprofile.cytokine.quantify")
    if quantify is None:
        log.warning("cytokines: skipped (immunoprofile.cytokine.quantify is not available)")
        return StageResult("cytokines", "skipped", "cytokine.quantify not available")
    plates = _plate_files(config, manifest)
    if not plates:
        return StageResult("cytokines", "skipped", "no plate files")
    options = config.cytokine.quantify_options()
    layout = None if config.inputs.layout is None else str(config.inputs.layout)
    standards = None if config.inputs.standards is None else str(config.inputs.standards)
    # Bridging normalises plates on each other, so then every plate is recomputed together.
    cache = None if (force or options.bridging) else ResultCache(config.cache_dir)
    shared = {name: sha256_file(path) for name, path in (("layout", layout),
                                                        ("standards", standards))
              if path is not None and Path(path).is_file()}
    cached: dict[str, Any] = {}
    keys: dict[str, str] = {}
    tasks = []
    for p in plates:
        if not p.is_file():
            tasks.append((str(p), (str(p), layout, standards, config.cytokine.repair,
                                   None if options.bridging else options)))
            continue
        keys[str(p)] = cache_key(kind="plate", input_hashes={**shared, "plate": sha256_file(p)},
                                 parameters={"options": options.to_dict(), "file": p.name,
                                             "repair": config.cytokine.repair})
        hit = cache.get_plate(keys[str(p)]) if cache is not None else None
        if hit is not None:
            cached[str(p)] = hit
            continue
        tasks.append((str(p), (str(p), layout, standards, config.cytokine.repair,
                               None if options.bridging else options)))
    log.info("cytokines: %d plate file(s), %d from the cache", len(plates), len(cached))
    store = ResultCache(config.cache_dir)
    with progress(len(tasks), "plates") as advance:
        def on_done(outcome: TaskOutcome) -> None:
            if not outcome.ok:
                log.warning("%s: %s", outcome.key, outcome.error)
            elif not options.bridging and outcome.key in keys:
                store.put_plate(keys[outcome.key], outcome.value)
            advance()

        outcomes = run_tasks(plate_task, tasks, spec=spec, on_done=on_done) if tasks else []
    done = {o.key: o for o in outcomes}
    results = [cached[str(p)] if str(p) in cached else done[str(p)].value for p in plates
               if str(p) in cached or done[str(p)].ok]
    failures = [(o.key, o.error or "failed") for o in outcomes if not o.ok]
    if options.bridging and results:
        # bridging normalises plates on each other: the tasks only read, all are quantified here
        results = quantify.quantify_plates(results, options)
    out = config.out_dir / "cytokines"
    written = quantify.write_cytokine_outputs(out, results, failures,
                                              **_accepted(quantify.write_cytokine_outputs, {
                                                  "options": options,
                                                  "inputs": [*plates, *_existing(
                                                      config.inputs.layout,
                                                      config.inputs.standards)],
                                                  "command": f"immunoprofile run {config.source}",
                                              }))
    summary.n_plates = len(results)
    summary.n_plates_cached = len(cached)
    summary.failures += failures
    outputs = list(written.values()) if isinstance(written, dict) else []
    return StageResult("cytokines", "done", f"{len(results)}/{len(plates)} plate(s) quantified",
                       outputs)


def _existing(*paths: Path | None) -> list[Path]:
    return [p for p in paths if p is not None and p.is_file()]


def _accepted(fn: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``fn`` accepts (stages evolve independently of the runner)."""
    import inspect

    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def plate_task(path: str, layout: str | None, standards: str | None, repair: bool,
               options: Any) -> Any:
    """Read one plate file and quantify it (a :func:`run_tasks` task).

    With ``options=None`` the plate is only read (returns the ``PlateData``), for bridging
    normalisation that needs every plate at once.
    """
    from ..cytokine.quantify import quantify_plate
    from ..cytokine.readers import read_plate

    plate = read_plate(path, layout=layout, standards=standards, repair=repair)
    return plate if options is None else quantify_plate(plate, options=options)


# ----- study -----------------------------------------------------------------------------------

def _study_stage(config: PipelineConfig, manifest: Any, design: Any,
                 summary: RunSummary) -> StageResult:
    if not config.assemble.enabled:
        return StageResult("assemble", "skipped", "disabled in the config")
    matrix = _optional_module("immunoprofile.study.matrix")
    if matrix is None:
        log.warning("assemble: skipped (immunoprofile.study.matrix is not available)")
        return StageResult("assemble", "skipped", "study.matrix not available")
    from .._io import write_h5ad_atomic

    flow_dir = config.out_dir / "flow"
    cytokine_dir = config.out_dir / "cytokines"
    kwargs = {
        "flow_dir": flow_dir if (flow_dir / "populations.csv").is_file() else None,
        "cytokine_dir": cytokine_dir if (cytokine_dir / "concentrations.csv").is_file() else None,
        "clinical": config.inputs.clinical,
        "design": design,
        "drug_readouts": tuple(config.cytokine.drug_readouts),
    }
    adata = matrix.assemble(manifest, **_accepted(matrix.assemble, kwargs))
    path = config.out_dir / "study.h5ad"
    write_h5ad_atomic(path, adata)
    summary_msg = f"{adata.n_obs} sample(s) × {adata.n_vars} feature(s)"
    return StageResult("assemble", "done", summary_msg, [path])


def _compare_stage(config: PipelineConfig, design: Any, summary: RunSummary) -> StageResult:
    if not config.compare.enabled:
        return StageResult("compare", "skipped", "disabled in the config")
    study_path = config.out_dir / "study.h5ad"
    compare = _optional_module("immunoprofile.study.compare")
    if compare is None or not study_path.is_file():
        why = ("study.compare not available" if compare is None else "no study.h5ad")
        log.warning("compare: skipped (%s)", why)
        return StageResult("compare", "skipped", why)
    import anndata as ad

    from .._io import write_csv_atomic

    adata = ad.read_h5ad(study_path)
    table = compare.compare_periods(adata, **_accepted(compare.compare_periods,
                                                       config.compare.kwargs()))
    path = config.out_dir / "comparisons.csv"
    write_csv_atomic(path, table)
    return StageResult("compare", "done", f"{len(table)} comparison(s)", [path])


def _report_stage(config: PipelineConfig, summary: RunSummary) -> StageResult:
    if not config.report.enabled:
        return StageResult("report", "skipped", "disabled in the config")
    report = _optional_module("immunoprofile.report")
    build = getattr(report, "build_report", None) if report is not None else None
    if build is None:
        log.warning("report: skipped (immunoprofile.report.build_report is not available)")
        return StageResult("report", "skipped", "report.build_report not available")
    path = config.out_dir / "report.html"
    result = build(config.out_dir, **_accepted(build, {"out": path, "title": config.report.title
                                                       or config.name or None}))
    outputs = [Path(result)] if isinstance(result, (str, os.PathLike)) else [path]
    return StageResult("report", "done", f"report in {outputs[0].name}", outputs)
