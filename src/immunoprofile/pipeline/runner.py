"""Run a whole study from a :class:`~immunoprofile.pipeline.config.PipelineConfig`.

Contract: :func:`run_pipeline` runs gate → cytokines → assemble → compare → report, each stage by
calling its library function (no science here): the gate and cytokine stages are
:func:`immunoprofile.flow.gate_files` and :func:`immunoprofile.cytokine.quantify_files`, the
very functions ``immunoprofile gate``/``cytokines`` call, given the config's executor and this
module's content-addressed cache, so a re-run redoes only what changed; compare and report are
:func:`immunoprofile.study.compare_stage.compare_study` and
:func:`immunoprofile.report.build_report`, as for ``immunoprofile compare``/``report``. Every
stage writes into its folder of the run's :class:`~immunoprofile.layout.RunLayout`. Failed samples are listed
(``failed.tsv``), the rest go on. A stage is skipped only when the config disables it or has no
inputs for it; an option a stage function does not take is an error, never dropped. Same inputs
give the same output bytes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._stage import ProgressFactory, no_progress
from ..errors import InputError
from ..executors import ExecutorSpec
from ..layout import COMPENSATION_KEY, RunLayout
from ..provenance import sha256_file
from .cache import ResultCache, cache_key
from .config import PipelineConfig

__all__ = ["StageResult", "RunSummary", "run_pipeline", "ProgressFactory", "flow_samples",
           "clean_stale_temp_files"]

log = logging.getLogger("immunoprofile.run")


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
    def layout(self) -> RunLayout:
        """Where each stage's outputs are (:class:`~immunoprofile.layout.RunLayout`)."""
        return RunLayout(self.out_dir)

    @property
    def exit_code(self) -> int:
        """0 when everything succeeded, 1 when some samples failed."""
        return 1 if self.failures or any(s.status == "failed" for s in self.stages) else 0

    def stage(self, name: str) -> StageResult | None:
        """The result of stage ``name``."""
        return next((s for s in self.stages if s.name == name), None)


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
    design = config.study_design()  # before anything is written: there is no default protocol
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    cleaned = clean_stale_temp_files(out)
    if cleaned:
        log.info("removed %d temporary file(s) left by an interrupted run", cleaned)
    spec = ExecutorSpec(kind=executor or config.executor.kind,  # type: ignore[arg-type]
                        jobs=jobs if jobs is not None else config.executor.jobs,
                        address=address if address is not None else config.executor.address)
    progress = progress or no_progress
    summary = RunSummary(out_dir=out)

    from ..study.manifest import read_manifest

    manifest = read_manifest(config.inputs.manifest, design=design)
    log.info("manifest %s: %d sample(s)", config.inputs.manifest.name, len(manifest))

    stages: list[tuple[Callable[..., StageResult], tuple]] = [
        (_flow_stage, (config, manifest, spec, force, progress, summary)),
        (_cytokine_stage, (config, manifest, spec, force, progress, summary)),
        (_study_stage, (config, manifest, design, summary)),
        (_compare_stage, (config, summary)),
        (_report_stage, (config, summary)),
    ]
    for stage, args in stages:
        started = time.perf_counter()
        result = stage(*args)
        result.seconds = time.perf_counter() - started
        summary.stages.append(result)
    _write_failed(RunLayout(out).failed, summary.failures)
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

    From ``inputs.flow`` (files/folders) when given, else from the manifest's ``assay == flow``
    rows (paths relative to it); ids from the manifest by file name
    (:func:`immunoprofile.flow.stage.pair_samples`, the join ``immunoprofile gate`` uses).
    """
    from ..flow.batch import expand_fcs_inputs, sample_ids_from_manifest
    from ..flow.stage import pair_samples

    mapping = sample_ids_from_manifest(manifest, source=config.inputs.manifest)
    if config.inputs.flow:
        return pair_samples(expand_fcs_inputs(config.inputs.flow), mapping)
    base = config.inputs.manifest.parent
    rows = manifest[manifest["assay"].astype(str).str.lower() == "flow"]
    files = [Path(str(f)) for f in rows["file"]]
    return pair_samples([f if f.is_absolute() else base / f for f in files], mapping)


def _flow_stage(config: PipelineConfig, manifest: Any, spec: ExecutorSpec, force: bool,
                progress: ProgressFactory, summary: RunSummary) -> StageResult:
    if not config.flow.enabled:
        return StageResult("gate", "skipped", "disabled in the config")
    if config.inputs.strategy is None:
        return StageResult("gate", "skipped", "no inputs.strategy in the config")
    from ..flow.stage import gate_files

    pairs = flow_samples(config, manifest)
    if not pairs:
        return StageResult("gate", "skipped", "no flow samples in the manifest")
    out = RunLayout(config.out_dir).flow
    compensation: Any = config.flow.compensation
    parameters: dict[str, Any] = {}
    figures: list[tuple[Any, Path]] = []
    if compensation == "controls":
        control_sets = compensation_from_controls(config, out.compensation, figures=figures)
        compensation = functools.partial(matrix_for_sample, control_sets=control_sets)
        parameters = {COMPENSATION_KEY: "controls", "compensation_controls": [
            {"set": p.parent.name, "date": None if s.date is None else s.date.isoformat(),
             "matrix": str(p)} for s, p in control_sets]}
    # The controls' figures (seconds of matplotlib) are drawn while the workers gate.
    with _in_background(_draw_control_figures, figures):
        result = gate_files(
            [p for _, p in pairs], config.inputs.strategy, config.flow,
            sample_ids={p.name: s for s, p in pairs}, compensation=compensation,
            executor=spec, out_dir=out.dir, cache=_flow_cache(config, force), progress=progress,
            parameters=parameters, command=f"immunoprofile run {config.source}")
    summary.n_flow = len(result.samples)
    summary.n_flow_cached = result.n_cached
    summary.failures += result.failures
    message = f"{len(result.samples)}/{len(pairs)} file(s) gated ({result.n_cached} cached)"
    return StageResult("gate", "done", message, list(result.written.values()))


class _StageCache:
    """One stage's per-task results in the run's :class:`ResultCache`, keyed by content
    (``key_of(task)``); ``force``: every lookup misses, every result is still stored."""

    def __init__(self, config: PipelineConfig, kind: str, key_of: Callable[[Any], str], *,
                 force: bool) -> None:
        self.store = ResultCache(config.cache_dir)
        self.kind, self.key_of, self.force = kind, key_of, force
        self._keys: dict[int, str] = {}  # id(task) -> key: each task is hashed once

    def get(self, task: Any) -> Any | None:
        key = self._keys[id(task)] = self.key_of(task)
        return None if self.force else getattr(self.store, f"get_{self.kind}")(key)

    def put(self, task: Any, value: Any) -> None:
        key = self._keys.get(id(task)) or self.key_of(task)
        getattr(self.store, f"put_{self.kind}")(key, value)

    def writer(self, task: Any) -> Callable[[Any], None]:
        """A picklable ``store(value)`` for this task's entry (run where the task runs)."""
        key = self._keys.get(id(task)) or self.key_of(task)
        return functools.partial(_put_entry, ResultCache(self.store.root), self.kind, key)


def _put_entry(store: ResultCache, kind: str, key: str, value: Any) -> None:
    getattr(store, f"put_{kind}")(key, value)


def _flow_cache(config: PipelineConfig, force: bool) -> _StageCache:
    """Gating results keyed by the FCS file, the strategy (and the matrices it carries), the
    sample's compensation matrix and the options that shape the result."""
    digests: dict[Any, str] = {}  # the strategy file and each strategy object, hashed once

    def key_of(task: Any) -> str:
        if "file" not in digests:
            digests["file"] = sha256_file(config.inputs.strategy)
        if id(task.strategy) not in digests:
            digests[id(task.strategy)] = _matrices_digest(task.strategy)
        comp = task.compensation
        hashes = {"strategy": digests["file"], "strategy_matrices": digests[id(task.strategy)],
                  "fcs": sha256_file(task.path)}
        if isinstance(comp, str) and comp not in ("fcs", "none"):
            if ("matrix", comp) not in digests:  # one matrix serves many files
                digests[("matrix", comp)] = sha256_file(comp)
            hashes["compensation"] = digests[("matrix", comp)]
        return cache_key(kind="flow", input_hashes=hashes, parameters={
            "sample_id": task.sample_id, "file": task.path.name,
            "compensation": comp if comp in ("fcs", "none") else "matrix",
            "group": config.flow.group, "statistics": sorted(task.statistics),
            "time_qc": None if task.time_qc is None else task.time_qc.to_dict()})

    cache = _StageCache(config, "gating", key_of, force=force)
    cache.store.clean_stale()
    return cache


@contextlib.contextmanager
def _in_background(fn: Callable[..., Any], *args: Any):
    """Run ``fn(*args)`` in a thread for the duration of the block; its error is raised at the
    end of the block (after the block's own, which takes precedence)."""
    import threading

    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="immunoprofile-background", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()
    if errors:
        raise errors[0]


def _draw_control_figures(figures: list[tuple[Any, Path]]) -> None:
    from ..flow.spillover_estimation import plot_controls

    for estimate, path in figures:
        plot_controls(estimate, path)


def compensation_from_controls(config: PipelineConfig, out_dir: Path, *,
                               figures: list[tuple[Any, Path]] | None = None
                               ) -> list[tuple[Any, Path]]:
    """Compute the spillover matrix of every ``flow.compensation_controls`` set.

    Each set's outputs (``spillover.csv``, ``spillover.txt``, ``controls.csv``, figure,
    provenance) go to ``out_dir/<name>/`` (name: the set's ``name``, else its date, else
    ``set<k>``). With ``figures`` (a list) the figures are not drawn here: each set's
    ``(estimate, png path)`` is appended for the caller to draw.

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
        estimate = estimate_spillover(files, cset, unstained=cset.unstained,
                                      channels=cset.channels, gate=cset.gate)
        written = write_spillover_outputs(
            out_dir / name, estimate, command=f"immunoprofile run {config.source}",
            inputs=[p for p in (cset.channels, cset.gate) if p is not None],
            figure=figures is None)
        if figures is not None:
            figures.append((estimate, out_dir / name / "compensation_controls.png"))
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

def _plate_files(config: PipelineConfig, manifest: Any) -> list[Path]:
    """The plate exports: ``inputs.plates`` (folders expanded), else the manifest's files."""
    if config.inputs.plates:
        from ..cytokine.readers import expand_plate_paths

        return expand_plate_paths(config.inputs.plates)
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
    from ..cytokine.stage import quantify_files

    plates = _plate_files(config, manifest)
    if not plates:
        return StageResult("cytokines", "skipped", "no plate files")
    result = quantify_files(
        plates, config.cytokine, layout=config.inputs.layout, standards=config.inputs.standards,
        executor=spec, out_dir=RunLayout(config.out_dir).cytokines.dir,
        cache=_plate_cache(config, force), progress=progress,
        command=f"immunoprofile run {config.source}")
    summary.n_plates = len(result.results)
    summary.n_plates_cached = result.n_cached
    summary.failures += result.failures
    n_files = len(result.results) + len(result.failures)
    return StageResult("cytokines", "done", f"{len(result.results)}/{n_files} plate(s) "
                       "quantified", list(result.written.values()))


def _plate_cache(config: PipelineConfig, force: bool) -> _StageCache:
    """Plate results keyed by the export, the layout and standards files and the options."""

    def key_of(task: Any) -> str:
        shared = {name: sha256_file(path) for name, path in (("layout", task.layout),
                                                            ("standards", task.standards))
                  if path is not None}
        return cache_key(kind="plate", input_hashes={**shared, "plate": sha256_file(task.path)},
                         parameters={"options": task.options.to_dict(), "file": task.path.name,
                                     "repair": task.repair})

    return _StageCache(config, "plate", key_of, force=force)


# ----- study -----------------------------------------------------------------------------------

def _study_stage(config: PipelineConfig, manifest: Any, design: Any,
                 summary: RunSummary) -> StageResult:
    if not config.assemble.enabled:
        return StageResult("assemble", "skipped", "disabled in the config")
    from ..study.stage import assemble_study

    layout = RunLayout(config.out_dir)
    flow_dir, cytokine_dir = layout.flow.dir, layout.cytokines.dir
    kwargs = {
        "flow_dir": flow_dir if layout.flow.populations.is_file() else None,
        "cytokine_dir": cytokine_dir if layout.cytokines.concentrations.is_file() else None,
        "clinical": config.inputs.clinical,
        "design": design,
        "drug_readouts": tuple(config.cytokine.drug_readouts),
    }
    # the manifest's path, not the table read from it: relative plate files resolve against its
    # folder and it is recorded in the provenance, as `immunoprofile assemble` does
    result = assemble_study(config.inputs.manifest, config.assemble, out=layout.study.h5ad,
                            **kwargs)
    adata = result.adata
    summary_msg = f"{adata.n_obs} sample(s) × {adata.n_vars} feature(s)"
    return StageResult("assemble", "done", summary_msg, list(result.written.values()))


def _compare_stage(config: PipelineConfig, summary: RunSummary) -> StageResult:
    if not config.compare.enabled:
        return StageResult("compare", "skipped", "disabled in the config")
    layout = RunLayout(config.out_dir)
    if not layout.study.h5ad.is_file():
        log.warning("compare: skipped (no %s)", layout.study.h5ad)
        return StageResult("compare", "skipped", f"no {layout.study.h5ad}")
    from ..study.compare_stage import compare_study

    from ..study.options import CompareOptions

    result = compare_study(layout.study.h5ad,
                           CompareOptions.from_sections(config.compare, config.analysis),
                           out_dir=layout.compare.dir,
                           command=f"immunoprofile run {config.source}")
    return StageResult("compare", "done", f"{len(result.table)} comparison(s)",
                       list(result.written.values()))


def _report_stage(config: PipelineConfig, summary: RunSummary) -> StageResult:
    if not config.report.enabled:
        return StageResult("report", "skipped", "disabled in the config")
    from ..report import build_report

    layout = RunLayout(config.out_dir)
    built = build_report(layout, layout.report.html,
                         title=config.report.title or config.name or None, options=config.report)
    return StageResult("report", "done", f"report in {built.path.name}", [built.path])
