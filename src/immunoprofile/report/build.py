"""Assemble the report: load a run, compute QC tables, draw figures, render one HTML file."""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._options import takes_options
from .._io import atomic_path, write_csv_atomic, write_text_atomic
from ..errors import InputError
from ..layout import COMPENSATION_BY_FILE_KEY, TIME_QC_KEY, RunLayout
from .collect import RunData, collect_run
from .plots import curve_grid, figure_png, forest_plot, trajectory_grid
from .options import ReportOptions
from .qc import flow_sample_qc, plate_qc, robust_outliers
from .._frames import is_text_column
from ..schema import feature_labels  # noqa: F401 - public here too (report.build.feature_labels)

__all__ = ["build_report", "ReportSummary", "feature_labels"]

log = logging.getLogger(__name__)


@dataclass
class ReportSummary:
    """What was built: the HTML path, its size in bytes, seconds taken, PNGs written."""

    path: Path
    size_bytes: int
    seconds: float
    plots: list[Path]


class _Figures:
    """Figures drawn together on the run's worker processes (gating, curves, trajectories,
    forest), each task's PNG handed to its callback in task order (deterministic output)."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, tuple]] = []
        self.done: dict[str, Any] = {}

    def add(self, key: str, fn: Any, args: tuple, done: Any, on_error: Any = None) -> None:
        self.tasks.append((key, (fn, args)))
        self.done[key] = (done, on_error)

    def run(self, jobs: int) -> None:
        from ..executors import ExecutorSpec, run_tasks

        for outcome in run_tasks(_render, self.tasks, spec=ExecutorSpec("process", jobs=jobs)):
            done, on_error = self.done[outcome.key]
            if outcome.ok:
                done(outcome.value)
            elif on_error is not None:
                on_error(outcome.error)
            else:
                raise RuntimeError(f"report figure {outcome.key}: {outcome.error}")


def _render(fn: Any, args: tuple) -> bytes:
    """One figure task: ``fn(*args)`` returns PNG bytes (module-level: picklable)."""
    return fn(*args)


def _curves_png(plate: str, curves: pd.DataFrame, wells: pd.DataFrame) -> bytes:
    return figure_png(curve_grid(plate, curves, wells), tight=False)


def _trajectories_png(sub: pd.DataFrame, feats: list[str], title: str, log_y: bool,
                      labels: dict[str, str]) -> bytes:
    return figure_png(trajectory_grid(sub, feats, title=title, log_y=log_y, labels=labels),
                      tight=False)


def _forest_png(comp: pd.DataFrame, labels: dict[str, str]) -> bytes:
    return figure_png(forest_plot(comp, labels=labels), tight=False)


def _anchor(text: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", str(text)).strip("-") or "x"


def _tsv_link(frame: pd.DataFrame, name: str) -> str:
    """A download link carrying the table itself (data URI), so the numbers travel with the file."""
    data = frame.to_csv(sep="\t", index=False, lineterminator="\n").encode("utf-8")
    encoded = base64.b64encode(data).decode("ascii")
    return (f'<a class="tsv" download="{html.escape(name)}" '
            f'href="data:text/tab-separated-values;base64,{encoded}">TSV</a>')


def _table_html(frame: pd.DataFrame, *, row_ids: list[str] | None = None,
                flagged: list[bool] | None = None, link_col: str | None = None,
                link_prefix: str = "") -> str:
    """A plain HTML table; optional per-row anchors linking a column to the detail section."""
    head = "".join(f"<th class='text'>{html.escape(str(c))}</th>" if is_text_column(frame[c])
                   else f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for i, (_, row) in enumerate(frame.iterrows()):
        cells = []
        for column in frame.columns:
            value = row[column]
            if isinstance(value, float):
                text = "" if np.isnan(value) else (f"{value:.4g}" if abs(value) < 1e4 else
                                                   f"{value:.0f}")
            else:
                text = html.escape(str(value))
            if link_col == column:
                text = f"<a href='#{link_prefix}{_anchor(row[column])}'>{text}</a>"
            css = " class='text'" if is_text_column(frame[column]) else ""
            cells.append(f"<td{css}>{text}</td>")
        cls = " class='flagged'" if flagged and flagged[i] else ""
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


@takes_options(ReportOptions)
def build_report(run_dir: str | Path | RunLayout, out: str | Path | None = None,
                 options: ReportOptions | None = None) -> ReportSummary:
    """Build the self-contained HTML report of a run directory.

    Parameters
    ----------
    run_dir
        A run folder holding the outputs of ``gate``, ``cytokines``, ``assemble`` and/or
        ``compare`` in its stage folders (any subset; missing stages are left out of the
        report), the output folder of one stage command, or a
        :class:`~immunoprofile.layout.RunLayout` naming each stage's folder; see
        :func:`~immunoprofile.report.collect.collect_run`. The figures (``plots/``) and the
        MultiQC tables go to its root.
    out
        Where to write the HTML (default ``RUN_DIR/report.html``).
    options
        :class:`~immunoprofile.report.options.ReportOptions` (its fields may also be given as
        keywords, below).

    Returns
    -------
    ReportSummary
    """
    from jinja2 import Environment, PackageLoader, select_autoescape

    assert options is not None  # takes_options merged it
    max_gating_samples, gating = options.max_gating_samples, options.gating
    jobs, title = options.jobs, options.title
    started = time.perf_counter()
    layout = run_dir if isinstance(run_dir, RunLayout) else RunLayout.of_folder(run_dir)
    data = collect_run(layout)
    outputs = layout.report
    out_path = Path(out) if out is not None else outputs.html
    plots_dir = outputs.plots
    written: list[Path] = []

    def save_png(name: str, png: bytes, table: pd.DataFrame | None = None) -> str:
        path = plots_dir / f"{name}.png"
        with atomic_path(path) as tmp:
            tmp.write_bytes(png)
        written.append(path)
        if table is not None:
            write_csv_atomic(plots_dir / f"{name}.tsv", table, sep="\t")
        return _b64(png)

    context: dict[str, Any] = {"title": title or "immunoprofile report", "cards": [],
                               "failures": []}
    study = _read_study(data.study_path)
    order = _protocol_order(study)
    _summary(data, context)
    deferred = _Figures()
    outliers = pd.DataFrame(columns=["sample_id", "population"])
    if data.populations is not None and len(data.populations):
        outliers = robust_outliers(data.populations)
        time_qc_params = (data.flow_provenance.get("parameters") or {}).get(TIME_QC_KEY) or {}
        qc = flow_sample_qc(data.populations, outliers, max_time_qc_removed=float(
            time_qc_params.get("max_removed_pct", 10.0)) if isinstance(time_qc_params, dict)
            else 10.0)
        qc = qc.iloc[sorted(range(len(qc)), key=lambda i: order(qc["sample_id"].iloc[i]))]
        qc = qc.reset_index(drop=True)
        write_csv_atomic(outputs.flow_qc, qc.drop(columns=["file"], errors="ignore"),
                         sep="\t")
        context["sample_qc"] = {"html": _table_html(qc, flagged=list(qc["flag"] != "ok"),
                                                    link_col="sample_id", link_prefix="sample-"),
                                "tsv": _tsv_link(qc, "flow_sample_qc.tsv")}
        if gating:
            context["gating"], context["gating_note"] = _gating_figures(
                data, outliers, save_png, max_gating_samples, deferred, order)
    if data.time_qc is not None and len(data.time_qc):
        context["time_qc"], context["time_qc_note"] = _time_qc_figures(data, save_png)
    if data.curves is not None or data.concentrations is not None:
        pqc = plate_qc(data.curves, data.concentrations, data.plate_acceptance)
        write_csv_atomic(outputs.cytokine_qc, pqc, sep="\t")
        rejected = list(pqc["accepted"] == "no") if "accepted" in pqc else None
        context["plate_qc"] = {"html": _table_html(pqc, link_col="plate", link_prefix="plate-",
                                                   flagged=rejected),
                               "tsv": _tsv_link(pqc, "plate_qc.tsv")}
        context["plates"] = _curve_figures(data, save_png, deferred)
    context["results"] = _results(data, save_png, deferred, study)
    deferred.run(jobs)
    if context.get("gating_note") is not None:
        context["gating_note"] = context["gating_note"]()
    context["provenance"] = _provenance(data)
    env = Environment(loader=PackageLoader("immunoprofile.report", "templates"),
                      autoescape=select_autoescape(["html", "j2"]))
    page = env.get_template("report.html.j2").render(**context)
    write_text_atomic(out_path, page)
    seconds = time.perf_counter() - started
    size = out_path.stat().st_size
    log.info("report written to %s (%.1f MB, %.1f s)", out_path, size / 1e6, seconds)
    return ReportSummary(out_path, size, seconds, written)


def _summary(data: RunData, context: dict[str, Any]) -> None:
    cards = context["cards"]
    failures = context["failures"]
    for stage, failed in (("flow", data.flow_failed), ("cytokines", data.cytokine_failed)):
        if failed is not None:
            failures.extend({"stage": stage, **row} for row in failed.to_dict("records"))
    if data.populations is not None:
        cards.append({"value": data.populations["sample_id"].nunique(),
                      "label": "flow samples gated"})
        cards.append({"value": data.populations["population"].nunique(), "label": "populations"})
    if data.concentrations is not None:
        cards.append({"value": data.concentrations["plate"].nunique(), "label": "plates"})
        cards.append({"value": data.concentrations["analyte"].nunique(), "label": "analytes"})
    cards.append({"value": len(failures), "label": "failed inputs", "bad": bool(failures)})
    if data.comparisons is not None and "q" in data.comparisons:
        hits = int((data.comparisons["q"] < 0.05).sum())
        cards.append({"value": hits, "label": "contrasts with q < 0.05"})
    prov = data.flow_provenance
    context["subtitle"] = (f"run directory {data.run_dir.resolve()} · immunoprofile "
                           f"{prov.get('versions', {}).get('immunoprofile', '')}").strip(" ·")


def _natural(text: Any) -> tuple:
    """Sort key reading digit runs as numbers (week2 before week12, plate9 before plate10)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part.casefold())
                 for part in re.split(r"(\d+)", str(text)) if part)


def _read_study(path: Path | None):
    if path is None:
        return None
    import anndata as ad

    return ad.read_h5ad(path)


def _protocol_order(study) -> Any:
    """Sort key of sample ids in protocol order: subject, then study day (from the study's
    ``obs``), then the id read naturally; ids the study does not know sort by name alone."""
    known: dict[str, tuple] = {}
    if study is not None:
        obs = study.obs
        days = pd.to_numeric(obs.get("study_day"), errors="coerce") if "study_day" in obs \
            else pd.Series(np.nan, index=obs.index)
        for column in ("flow_sample_id", "cytokine_sample_id"):
            if column not in obs or "subject_id" not in obs:
                continue
            for sid, subject, day in zip(obs[column], obs["subject_id"], days):
                if isinstance(sid, str) and sid and sid != "nan":
                    known.setdefault(sid, (_natural(subject),
                                           float(day) if pd.notna(day) else np.inf))

    def key(sample_id: Any) -> tuple:
        hit = known.get(str(sample_id))
        return (0, *hit, _natural(sample_id)) if hit else (1, (), np.inf, _natural(sample_id))

    return key


def _gating_figures(data: RunData, outliers: pd.DataFrame, save_png, limit: int,
                    deferred: _Figures, order=None):
    from .gating_plots import locate_inputs, render_gating_png

    strategy_path, files, compensation = locate_inputs(data.flow_provenance)
    if strategy_path is None or not strategy_path.is_file():
        return [], lambda: "(Gating figures left out: the strategy file named in the provenance is absent.)"
    # compensation computed from controls: each file's own matrix (flow.compensation: controls)
    by_file = (data.flow_provenance.get("parameters") or {}).get(COMPENSATION_BY_FILE_KEY) or {}
    flagged = set(outliers["sample_id"])
    samples = data.populations[["sample_id", "file"]].drop_duplicates("sample_id")
    key = order or _protocol_order(None)
    samples = samples.iloc[sorted(range(len(samples)), key=lambda i: (
        samples["sample_id"].iloc[i] not in flagged, key(samples["sample_id"].iloc[i])))]
    tasks, missing = [], [0]
    for sample_id, file in zip(samples["sample_id"], samples["file"]):
        if len(tasks) >= limit:
            break
        path = Path(str(file))
        path = path if path.is_file() else files.get(path.name, path)
        if not path.is_file():
            missing[0] += 1
            continue
        tasks.append((str(sample_id), (str(sample_id), str(path), str(strategy_path),
                                       by_file.get(path.name, compensation),
                                       sample_id in flagged)))
    figures: list[dict[str, Any]] = []

    def done(sample_id: str, png: bytes) -> None:
        figures.append({"sample_id": sample_id, "anchor": _anchor(sample_id),
                        "png": save_png(f"gating_{_anchor(sample_id)}", png)})

    def failed(sample_id: str, error: str) -> None:
        log.warning("gating figure of %s skipped: %s", sample_id, error)
        missing[0] += 1

    for key, args in tasks:
        deferred.add(f"gating:{key}", render_gating_png, args,
                     lambda png, k=key: done(k, png), lambda err, k=key: failed(k, err))

    def note() -> str:  # known once the figures are drawn
        return (f"({missing[0]} samples without a figure: file not found or unreadable.)"
                if missing[0] else "")
    return figures, note


def _time_qc_figures(data: RunData, save_png) -> tuple[list[dict[str, Any]], str]:
    from .plots import figure_png
    from .timeqc_plots import time_qc_figure, time_qc_samples

    traces = data.time_qc
    removed = {}
    if data.populations is not None and "pct_removed_time_qc" in data.populations:
        removed = data.populations.drop_duplicates("sample_id").set_index("sample_id")[
            "pct_removed_time_qc"].to_dict()
    chosen = time_qc_samples(traces)
    figures = []
    for sid in chosen:
        rows = traces[traces["sample_id"].astype(str) == sid]
        png = figure_png(time_qc_figure(sid, rows, pct_removed=removed.get(sid)), dpi=80)
        figures.append({"sample_id": sid, "anchor": _anchor(sid),
                        "png": save_png(f"time_qc_{_anchor(sid)}", png, rows)})
    n = traces["sample_id"].nunique()
    note = f"{n - len(chosen)} of {n} files lost no events." if n > len(chosen) else ""
    return figures, note


def _curve_figures(data: RunData, save_png, deferred: _Figures) -> list[dict[str, Any]]:
    if data.curves is None or data.concentrations is None:
        return []
    out = []
    for plate in sorted(data.curves["plate"].unique(), key=_natural):
        curves = data.curves[data.curves["plate"] == plate]
        wells = data.concentrations[data.concentrations["plate"] == plate]
        name = f"curves_{_anchor(plate)}"
        entry = {"plate": plate, "anchor": _anchor(plate), "png": "",
                 "tsv": _tsv_link(curves, f"{name}.tsv")}
        out.append(entry)
        deferred.add(name, _curves_png, (str(plate), curves, wells),
                     lambda png, e=entry, n=name, c=curves: e.update(png=save_png(n, png, c)))
    return out


def _study_tidy(adata) -> tuple[pd.DataFrame, pd.DataFrame]:
    X = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X, dtype=float)
    obs = adata.obs.reset_index(drop=True)
    frame = pd.DataFrame(X, columns=list(adata.var_names))
    frame["subject_id"] = obs["subject_id"].astype(str).to_numpy()
    frame["study_day"] = pd.to_numeric(obs["study_day"], errors="coerce").to_numpy()
    frame["period"] = obs["period"].astype(str).to_numpy() if "period" in obs else "unknown"
    tidy = frame.melt(id_vars=["subject_id", "study_day", "period"], var_name="feature",
                      value_name="value").dropna(subset=["value", "study_day"])
    return tidy, adata.var.reset_index(names="feature")


def _pick(features: list[str], comparisons: pd.DataFrame | None, n: int) -> list[str]:
    if comparisons is not None and "q" in comparisons:
        q = comparisons.groupby("feature")["q"].min()
        return sorted(features, key=lambda f: (q.get(f, np.inf), f))[:n]
    return features[:n]


def _results(data: RunData, save_png, deferred: _Figures, study=None) -> dict[str, Any] | None:
    figures = []
    labels: dict[str, str] = {}
    if study is not None:
        tidy, var = _study_tidy(study)
        labels = feature_labels(var.set_index("feature"))
        ftype = var.get("feature_type", pd.Series(["unknown"] * len(var)))
        groups = [
            ("Cell populations (% of parent) per subject", "frequency", False, 12),
            ("Cytokines (concentration) per subject", "concentration", True, 12),
        ]
        for title, kind, log_y, n in groups:
            feats = var.loc[ftype == kind, "feature"].tolist()
            if kind == "frequency":
                feats = [f for f in feats if f.endswith("pct_parent")] or feats
            feats = _pick(feats, data.comparisons, n)
            if not feats:
                continue
            sub = tidy[tidy["feature"].isin(feats)]
            name = f"trajectories_{kind}"
            entry = {"title": title, "png": "", "tsv": _tsv_link(sub, f"{name}.tsv")}
            figures.append(entry)
            deferred.add(name, _trajectories_png, (sub, feats, title, log_y, labels),
                         lambda png, e=entry, n=name, t=sub: e.update(png=save_png(n, png, t)))
    result: dict[str, Any] = {"figures": figures}
    if data.comparisons is not None and len(data.comparisons):
        comp = data.comparisons
        if "population" in comp:  # one population per plot/table: the plan's primary one
            primary = data.analysis_plan.get("primary_population") or str(comp["population"].iloc[0])
            comp = comp[comp["population"] == primary]
        entry = {"title": "Period contrasts (forest plot, features with the smallest q)",
                 "png": "", "tsv": _tsv_link(comp, "forest.tsv")}
        figures.append(entry)
        deferred.add("forest", _forest_png, (comp, labels),
                     lambda png, e=entry, t=comp: e.update(png=save_png("forest", png, t)))
        shown = [c for c in ("population", "feature", "family", "role", "contrast", "n", "estimate",
                             "ci_low", "ci_high", "fold_change", "p_wilcoxon", "p_ttest", "p_mixed",
                             "q", "p_adjusted", "direction", "note") if c in comp]
        table = comp[shown].copy()
        if "feature" in table and labels:
            table.insert(0, "label", [labels.get(str(f), str(f)) for f in table["feature"]])
        result["table"] = _table_html(table, flagged=list(table.get("q", pd.Series(
            np.ones(len(table)))).fillna(1) < 0.05))
        result["table_tsv"] = _tsv_link(comp, "comparisons.tsv")
        n_max = int(pd.to_numeric(comp.get("n"), errors="coerce").max()) if "n" in comp else 0
        floor = 2.0 / 2 ** n_max if n_max else float("nan")
        result["note"] = (f"With at most {n_max} paired subjects the exact two-sided Wilcoxon p "
                          f"cannot go below {floor:.4f}; q = Benjamini–Hochberg within family. "
                          "Highlighted rows: q < 0.05.")
        if data.analysis_plan:
            plan = data.analysis_plan
            pops = plan.get("populations", {})
            result["note"] += (f" Population shown: {plan.get('primary_population', '')} ("
                               + "; ".join(f"{k}: {len(v.get('subjects', []))} subjects"
                                           + (f", excludes {', '.join(v['excluded'])}" if v.get("excluded") else "")
                                           for k, v in pops.items()) + "); all rows in comparisons.csv.")
            result["plan"] = json.dumps(plan, indent=1, default=str)
    return result if (figures or "table" in result) else None


def _provenance(data: RunData) -> dict[str, Any]:
    prov = data.flow_provenance or {}
    inputs = [{"name": i.get("name", ""), "sha256": i.get("sha256", "")}
              for i in prov.get("inputs", [])]
    versions = ", ".join(f"{k} {v}" for k, v in sorted(prov.get("versions", {}).items()))
    return {"inputs": inputs, "versions": versions}
