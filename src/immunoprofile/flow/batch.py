"""Gate one FCS file into a small summary, and write a batch of summaries as the ``gate`` outputs.

Contract: :func:`gate_sample` reads, compensates, gates and summarises one file and returns a small,
picklable :class:`SampleGating` (no per-event data, except the optional membership Parquet it
writes itself); :func:`write_gate_outputs` turns the summaries of a batch into
``populations.csv``, ``flow.h5ad``, ``provenance.json`` and ``failed.tsv``, all written atomically
and deterministically (same inputs, same bytes).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..provenance import build_provenance, sha256_file
from .._frames import is_text_column
from ..schema import SCHEMA_VERSION, flow_column, flow_feature

if TYPE_CHECKING:  # pragma: no cover
    import anndata
    import pandas as pd

    from .gates import Strategy

__all__ = [
    "SampleGating", "KEYWORDS", "gate_sample", "write_gate_outputs",
    "gate_outputs_frame", "gate_anndata", "resolve_spillover", "expand_fcs_inputs",
    "sample_ids_from_manifest", "GATE_SCHEMA_VERSION", "gate_positions_frame",
    "write_fitted_gatingml", "time_qc_frame", "split_time_qc", "TraceChunk",
    "write_trace_chunk",
]

#: Layout version of ``flow.h5ad`` / ``populations.csv`` (bump when columns change meaning).
GATE_SCHEMA_VERSION = SCHEMA_VERSION  # the shared layout's version (immunoprofile.schema)

#: FCS keywords carried into ``obs`` (those present in a file; the rest are left blank).
KEYWORDS: tuple[str, ...] = ("$DATE", "$BTIM", "$ETIM", "$CYT", "$CYTSN", "$FIL", "$TOT",
                             "$SRC", "$OP", "$INST", "$PROJ", "$VOL")



@dataclass
class SampleGating:
    """The gating summary of one FCS file (small; crosses process boundaries).

    Attributes
    ----------
    sample_id
        The sample's id (file stem unless a manifest maps it).
    file
        The file's name (the path is in provenance).
    sha256
        SHA-256 of the file's bytes.
    stats
        :func:`immunoprofile.flow.stats.population_stats` table with a ``file`` column added.
    keywords
        The :data:`KEYWORDS` present in the file, as strings.
    n_events
        Events in the file (the data set that was gated).
    warnings
        Anything repaired or noteworthy while reading and gating.
    time_qc
        :meth:`immunoprofile.flow.timeqc.TimeQCResult.summary` when time QC ran (rate and
        signal traces, removed stretches), else ``None``.
    positions
        Fitted positions of the data-driven gates
        (:func:`immunoprofile.flow.adaptive_gates.position_rows`; empty when none).
    time_qc_trace
        The time-QC rate and signal bins (:func:`split_time_qc`), or a :class:`TraceChunk`
        (the same rows already formatted as ``time_qc.csv`` lines in a file), or ``None``.
    """

    sample_id: str
    file: str
    sha256: str
    stats: pd.DataFrame
    keywords: dict[str, str] = field(default_factory=dict)
    n_events: int = 0
    warnings: list[str] = field(default_factory=list)
    time_qc: dict[str, Any] | None = None
    positions: pd.DataFrame | None = None
    time_qc_trace: pd.DataFrame | TraceChunk | None = None


@dataclass(frozen=True)
class TraceChunk:
    """One sample's ``time_qc.csv`` rows, formatted (no header) in a file.

    A batch writes each sample's traces as the sample finishes, so its memory does not grow with
    the number of files; ``time_qc.csv`` is then these chunks in sample order under one header
    when every chunk has the same ``columns`` and ``dtypes`` (the usual case: one panel), else
    the chunks are read back (:meth:`frame`) and written as one table, as before.

    Attributes
    ----------
    path
        The file holding the formatted rows.
    columns, dtypes
        The columns of the rows, in ``time_qc.csv`` order, and their pandas dtypes (``str``).
    n_rows
        Rows in the chunk.
    """

    path: Path
    columns: tuple[str, ...]
    dtypes: tuple[str, ...]
    n_rows: int

    def frame(self) -> pd.DataFrame:
        """The rows as the table they were formatted from (same values, same dtypes; empty
        text reads back as missing, which CSV writes alike)."""
        import io

        import numpy as np
        import pandas as pd

        kinds = dict(zip(self.columns, self.dtypes))
        text = {c for c, d in kinds.items() if d in ("object", "str", "string")}
        frame = pd.read_csv(io.StringIO(self.path.read_bytes().decode("utf-8")), header=None,
                            names=list(self.columns),
                            dtype={c: (object if c in text else d) for c, d in kinds.items()
                                   if d != "bool"},
                            keep_default_na=False, na_values={c: [""] for c in kinds
                                                              if c not in text},
                            # exact floats (pandas 3 parses them exactly by default)
                            **({"float_precision": "round_trip"}
                               if int(pd.__version__.split(".")[0]) < 3 else {}))
        for c, d in kinds.items():
            if d == "bool":
                frame[c] = frame[c].map({"True": True, "False": False, True: True,
                                         False: False}).astype(bool)
            elif c in text:  # blanks were written for missing values
                frame[c] = frame[c].where(frame[c] != "", np.nan).astype(d)
        return frame


#: Leading columns of ``time_qc.csv`` (then each signal channel's ``level_<channel>``).
_TIME_QC_LEAD = ["sample_id", "kind", "t_start", "t_end", "count", "rate", "flagged", "removed",
                 "reason"]


def _trace_rows(trace: pd.DataFrame, sample_id: str) -> pd.DataFrame:
    """One sample's ``time_qc.csv`` rows: its trace with the sample id, in file column order."""
    import pandas as pd

    frame = trace.assign(sample_id=sample_id)
    for c in _TIME_QC_LEAD:
        if c not in frame.columns:
            frame[c] = pd.Series(dtype=object, index=frame.index)
    return frame[_TIME_QC_LEAD + [c for c in frame.columns if c not in _TIME_QC_LEAD]]


def _csv_body(frame: pd.DataFrame) -> str | None:
    """``frame.to_csv(index=False, header=False, lineterminator="\\n")``, the same text ~3x
    faster, for columns of float64, int64, bool and text (else ``None``: use pandas).

    pandas formats float64 with numpy's ``astype(str)`` (the shortest repr that round-trips,
    as Python's ``repr``), missing values as empty fields, and writes the rows with
    :mod:`csv` (minimal quoting); so does this, column by column instead of cell by cell.
    """
    import csv
    import io
    import math

    from .._frames import is_text_column

    columns = []
    for name in frame.columns:
        col = frame[name]
        kind = col.dtype.kind if not is_text_column(col) else "O"
        if kind == "f" and col.dtype.itemsize == 8:
            columns.append(["" if v != v else repr(v) for v in col.tolist()])
        elif kind in "ib" and col.dtype.itemsize in (1, 8):
            columns.append([str(v) for v in col.tolist()])
        elif kind == "O":
            values = col.tolist()
            if not all(v is None or isinstance(v, str) or isinstance(v, float) and math.isnan(v)
                       for v in values):
                return None
            columns.append(["" if not isinstance(v, str) else v for v in values])
        else:
            return None
    out = io.StringIO()
    csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL).writerows(zip(*columns))
    return out.getvalue()


def write_trace_chunk(sample: SampleGating, path: str | os.PathLike[str]) -> SampleGating:
    """Write a sample's time-QC traces as ``time_qc.csv`` rows to ``path``; the same sample
    with a :class:`TraceChunk` in place of the table (unchanged when it has no table)."""
    trace = sample.time_qc_trace
    if trace is None or isinstance(trace, TraceChunk) or not len(trace):
        return sample
    rows = _trace_rows(trace, sample.sample_id)
    path = Path(path)
    text = _csv_body(rows)
    if text is None:
        text = rows.to_csv(index=False, header=False, lineterminator="\n")
    path.write_bytes(text.encode("utf-8"))
    chunk = TraceChunk(path=path, columns=tuple(map(str, rows.columns)),
                       dtypes=tuple(str(t) for t in rows.dtypes), n_rows=len(rows))
    return dataclasses.replace(sample, time_qc_trace=chunk)


def resolve_spillover(compensation: Any, fcs: Any) -> Any:
    """Turn a ``--comp`` choice into the ``spillover`` argument of ``engine.evaluate``.

    Parameters
    ----------
    compensation
        ``"fcs"``/``"file"`` (the file's own spillover), ``"none"`` (no compensation), a path to
        a FlowJo/CSV matrix, or an already-parsed ``Spillover``.
    fcs
        The file being gated (the matrix's channels are matched to it).

    Returns
    -------
    Compensation
        The sample's resolved :class:`~immunoprofile.flow.compensation.Compensation` (a missing
        matrix file is named as a ``--comp`` choice).
    """
    from .compensation import sample_compensation

    if compensation is None:
        compensation = "file"
    if (isinstance(compensation, (str, os.PathLike))
            and str(compensation).strip().lower() not in ("fcs", "file", "none")
            and not Path(compensation).is_file()):
        raise InputError(compensation, "compensation matrix file not found "
                                       "(--comp takes fcs, none or a matrix file)")
    return sample_compensation(compensation, fcs)


def _keywords(text: Mapping[str, Any]) -> dict[str, str]:
    upper = {str(k).upper(): v for k, v in text.items()}
    return {k: " ".join(str(upper[k]).split()) for k in KEYWORDS if k in upper}


def gate_sample(
    path: str | os.PathLike[str],
    strategy: Strategy | str | os.PathLike[str],
    *,
    compensation: Any = "fcs",
    sample_id: str | None = None,
    membership_path: str | os.PathLike[str] | None = None,
    group: str | None = None,
    statistics: Sequence[str] | None = None,
    time_qc: Any = None,
    fitted_gatingml_path: str | os.PathLike[str] | None = None,
) -> SampleGating:
    """Read, compensate, gate and summarise one FCS file.

    Parameters
    ----------
    path
        The FCS file.
    strategy
        A :class:`~immunoprofile.flow.gates.Strategy`, or a strategy file (Gating-ML, FlowJo
        workspace or YAML) loaded with ``load_strategy``. A FlowJo workspace gates the file with
        its own workspace sample (``$FIL``, file name, sample name; no match is an
        InputError) and ``stats`` gains a ``workspace_sample`` column.
    compensation
        A :data:`~immunoprofile.flow.compensation.CompensationSpec`: ``"fcs"``/``"file"`` (the
        file's spillover), ``"none"``, a matrix file, or a ``Spillover``; gates and statistics
        both use it.
    sample_id
        The sample's id; the file stem when ``None``.
    membership_path
        When given, write a Parquet file there: one boolean column per population path, one row
        per event, in file order.
    group
        FlowJo sample group, when ``strategy`` is a workspace path.
    statistics
        Marker statistics to compute (see :data:`immunoprofile.flow.stats.STATISTICS`);
        ``None`` = all of them.
    time_qc
        Acquisition QC over time: ``None``/``False`` (off), ``True`` (default options) or a
        :class:`~immunoprofile.flow.timeqc.TimeQCOptions`. When on, bad stretches are removed as
        the root population ``TimeQC`` every population sits under, and the table gets
        ``pct_removed_time_qc``.
    fitted_gatingml_path
        When given and the strategy has data-driven gates, write this sample's fitted gates
        there as Gating-ML 2.0 (fixed coordinates: re-gating with it replays this result).

    Returns
    -------
    SampleGating
    """
    import numpy as np

    from .engine import evaluate
    from .fcs import read_fcs
    from .stats import STATISTICS, population_stats

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "FCS file not found")
    if not hasattr(strategy, "gates"):
        from .strategy import load_strategy

        strategy = load_strategy(strategy, group=group)
    sid = sample_id if sample_id is not None else path.stem
    fcs = read_fcs(path, sha256=True)  # one read of the file: events and provenance digest
    digest = fcs.sha256 or sha256_file(path)
    workspace_sample = None
    if hasattr(strategy, "for_file"):
        # a FlowJo workspace: this file's own workspace sample (raises when none matches)
        strategy, workspace_sample = strategy.for_file(path, fcs.text)
    spillover = resolve_spillover(compensation, fcs)  # resolved once for the sample
    qc = None
    if time_qc:
        from .timeqc import TimeQCOptions, apply_root_gate
        from .timeqc import time_qc as run_time_qc

        qc = run_time_qc(fcs, time_qc if isinstance(time_qc, TimeQCOptions) else None)
        kept = dataclasses.replace(fcs, events=np.ascontiguousarray(fcs.events[qc.keep]))
        result = apply_root_gate(evaluate(strategy, kept, spillover=spillover), qc.keep)
    else:
        result = evaluate(strategy, fcs, spillover=spillover)
    # the statistics use the compensation the result was gated with (result.compensation)
    stats = population_stats(result, fcs, sample_id=sid,
                             statistics=STATISTICS if statistics is None else statistics)
    stats = stats.copy()
    if "file" in stats.columns:
        stats["file"] = path.name
    else:
        stats.insert(1, "file", path.name)
    if qc is not None:
        stats.insert(stats.columns.get_loc("pct_total") + 1, "pct_removed_time_qc",
                     round(qc.pct_removed, 4))
    if workspace_sample is not None:
        stats.insert(list(stats.columns).index("file") + 1, "workspace_sample", workspace_sample)
    if membership_path is not None:
        _write_membership(membership_path, result)
    warnings = [str(w) for w in getattr(fcs, "warnings", [])]
    warnings += [str(w) for w in getattr(result, "warnings", [])]
    if qc is not None:
        warnings += [f"time QC: {w}" for w in qc.warnings]
    positions = None
    if result.fits:
        import pandas as pd

        from .adaptive_gates import position_rows

        positions = pd.DataFrame(position_rows(result.fits, result.paths, str(sid)))
        warnings += [f"data-driven gate {result.paths.get(gid, gid)} fell back to its stated "
                     f"coordinates: {rec.reason}" for gid, rec in result.fits.items()
                     if rec.fallback]
        if fitted_gatingml_path is not None:
            warnings += write_fitted_gatingml(strategy, result, fitted_gatingml_path)
    summary, trace = split_time_qc(None if qc is None else qc.summary())
    return SampleGating(sample_id=str(sid), file=path.name, sha256=digest, stats=stats,
                        keywords=_keywords(fcs.text), n_events=int(fcs.n_events),
                        warnings=warnings, positions=positions, time_qc=summary,
                        time_qc_trace=trace)


def split_time_qc(summary: dict[str, Any] | None) -> tuple[dict[str, Any] | None,
                                                           pd.DataFrame | None]:
    """A time-QC summary without its per-bin traces, and the traces as one columnar table.

    The traces (thousands of bins per file) as lists of dicts cost ~1.5 MB of Python objects a
    sample; kept columnar they are a few hundred kB, so a batch's memory stays flat.
    """
    import pandas as pd

    if summary is None:
        return None, None
    small = {k: v for k, v in summary.items() if k not in ("rate_bins", "signal_bins")}
    rows = [{"kind": "rate", **b} for b in summary.get("rate_bins", [])]
    for b in summary.get("signal_bins", []):
        b = dict(b)
        rows.append({"kind": "signal", "count": b.pop("n"), "removed": b["flagged"], **b})
    return small, (pd.DataFrame(rows) if rows else None)

def write_fitted_gatingml(strategy: Strategy, result: Any,
                          path: str | os.PathLike[str]) -> list[str]:
    """Write one sample's fitted data-driven gates as a fixed Gating-ML 2.0 strategy.

    Returns
    -------
    list of str
        Warnings (a gate type Gating-ML cannot express, e.g. ``density``: nothing written).
    """
    from .adaptive_gates import fitted_strategy
    from .gatingml import write_gatingml

    fixed = fitted_strategy(strategy, {gid: rec.fitted for gid, rec in result.fits.items()})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        write_gatingml(fixed, path)
    except (InputError, ValueError) as exc:
        return [f"fitted gates not written as Gating-ML: {exc}"]
    return []


def gate_positions_frame(samples: Sequence[SampleGating]) -> pd.DataFrame | None:
    """``gate_positions.csv``: fitted positions of every sample, flagged against the batch
    median (``None`` when no sample has data-driven gates)."""
    import pandas as pd

    from .adaptive_gates import flag_positions

    parts = [s.positions for s in samples if s.positions is not None and len(s.positions)]
    if not parts:
        return None
    return flag_positions(pd.concat(parts, ignore_index=True))


def _write_membership(destination: str | os.PathLike[str], result: Any) -> None:
    import pandas as pd

    from .._io import write_parquet_atomic

    columns = {result.paths[pid]: result.masks[pid].astype(bool, copy=False)
               for pid in result.paths}
    write_parquet_atomic(destination, pd.DataFrame(columns))


# ----- batch outputs ---------------------------------------------------------------------------

def gate_outputs_frame(samples: Sequence[SampleGating]) -> pd.DataFrame:
    """The tidy ``populations.csv`` table: samples sorted by id, populations in strategy order."""
    import pandas as pd

    ordered = sorted(samples, key=lambda s: (s.sample_id, s.file))
    if not ordered:
        return pd.DataFrame(columns=["sample_id", "file", "population", "parent", "count",
                                     "pct_parent", "pct_total"])
    frame = pd.concat([s.stats for s in ordered], ignore_index=True, sort=False)
    lead = ["sample_id", "file", "workspace_sample", "population", "parent", "count",
            "pct_parent", "pct_total", "pct_removed_time_qc"]
    rest = [c for c in frame.columns if c not in lead]
    stat_order = {"mfi": 0, "gmean": 1, "rcv": 2}
    rest.sort(key=lambda c: (stat_order.get(c.split("_", 1)[0], 3), _marker_rank(frame, c)))
    return frame[[c for c in lead if c in frame.columns] + rest]


def _marker_rank(frame: pd.DataFrame, column: str) -> int:
    # keep the first-seen order of markers (panel order), not alphabetical
    markers = list(dict.fromkeys(c.split("_", 1)[1] for c in frame.columns if "_" in c
                                 and c.split("_", 1)[0] in ("mfi", "gmean", "rcv")))
    name = column.split("_", 1)[1] if "_" in column else column
    return markers.index(name) if name in markers else len(markers)


def gate_anndata(samples: Sequence[SampleGating], *, strategy: Strategy | None = None,
                 provenance: Mapping[str, Any] | None = None,
                 failures: Sequence[tuple[str, str]] = ()) -> anndata.AnnData:
    """The ``flow.h5ad`` AnnData: obs = samples, var = population × statistic features.

    ``var`` columns: ``population`` (ordered categorical, strategy order), ``statistic``
    (count, pct_parent, pct_total, mfi), ``feature_type`` (count, frequency, mfi), ``marker``
    (blank unless mfi), ``parent``. ``var_names`` read ``/Cells/Singlets/CD3+|pct_parent`` and
    ``/Cells/Singlets/CD3+|mfi_CD4``. Everything of ours is under ``uns["immunoprofile"]``.
    """
    import anndata as ad

    X, obs, var, uns = _gate_parts(samples, strategy=strategy, provenance=provenance,
                                   failures=failures)
    return ad.AnnData(X=X, obs=obs, var=var, uns=uns)


def _gate_parts(samples: Sequence[SampleGating], *, strategy: Strategy | None,
                provenance: Mapping[str, Any] | None,
                failures: Sequence[tuple[str, str]]) -> tuple[Any, Any, Any, dict[str, Any]]:
    """``X, obs, var, uns`` of :func:`gate_anndata` (plain numpy/pandas: no anndata)."""
    import numpy as np
    import pandas as pd

    table = gate_outputs_frame(samples)
    ordered = sorted(samples, key=lambda s: (s.sample_id, s.file))
    populations = list(dict.fromkeys(table["population"])) if len(table) else []
    parents = dict(zip(table["population"], table["parent"])) if len(table) else {}
    stat_columns = [c for c in ("count", "pct_parent", "pct_total") if c in table.columns]
    stat_columns += [c for c in table.columns if c.startswith("mfi_")]

    var_rows = []
    for pop in populations:
        for column in stat_columns:
            feature_type, statistic, marker = flow_column(column)  # type: ignore[misc]
            var_rows.append({"name": flow_feature(pop, column), "population": pop,
                             "parent": "" if pd.isna(parents.get(pop)) else str(parents[pop]),
                             "statistic": statistic, "feature_type": feature_type,
                             "marker": marker, "column": column})
    var = pd.DataFrame(var_rows, columns=["name", "population", "parent", "statistic",
                                          "feature_type", "marker", "column"])
    var.index = pd.Index(var.pop("name").astype(str).tolist())
    sample_ids = [s.sample_id for s in ordered]
    X = np.full((len(ordered), len(var)), np.nan, dtype=np.float64)
    if len(table) and len(var):
        row_of = {sid: i for i, sid in enumerate(sample_ids)}
        long = table.melt(id_vars=["sample_id", "population"], value_vars=stat_columns,
                          var_name="column", value_name="value")
        names = flow_feature(long["population"].astype(str), long["column"].astype(str))
        col_of = {name: j for j, name in enumerate(var.index)}
        rows = long["sample_id"].map(row_of).to_numpy()
        cols = names.map(col_of).to_numpy()
        X[rows.astype(int), cols.astype(int)] = pd.to_numeric(long["value"],
                                                              errors="coerce").to_numpy(float)
    var = var.drop(columns="column")
    var["population"] = pd.Categorical(var["population"], categories=populations, ordered=True)
    var["statistic"] = pd.Categorical(var["statistic"],
                                      categories=["count", "pct_parent", "pct_total", "mfi"],
                                      ordered=True)
    var["feature_type"] = pd.Categorical(var["feature_type"],
                                         categories=["count", "frequency", "mfi"])
    for column in ("parent", "marker"):
        var[column] = var[column].astype(str)

    obs = pd.DataFrame({
        "file": [s.file for s in ordered],
        "sha256": [s.sha256 for s in ordered],
        "n_events": np.array([s.n_events for s in ordered], dtype=np.int64),
        "n_warnings": np.array([len(s.warnings) for s in ordered], dtype=np.int64),
    }, index=pd.Index(sample_ids, name=None))
    if any(s.time_qc is not None for s in ordered):
        obs["pct_removed_time_qc"] = np.array(
            [np.nan if s.time_qc is None else float(s.time_qc["pct_removed"]) for s in ordered])
    for key in KEYWORDS:
        if any(key in s.keywords for s in ordered):
            obs[key] = [s.keywords.get(key, "") for s in ordered]
    for column in obs.columns:
        if is_text_column(obs[column]):
            obs[column] = obs[column].astype(str)

    uns: dict[str, Any] = {
        "schema_version": GATE_SCHEMA_VERSION,
        "assay": "flow",
        # JSON strings: gate ids and paths may contain "/", which must never be a uns key.
        "strategy_json": json.dumps(strategy.to_dict() if strategy is not None else {},
                                    sort_keys=True, default=str),
        "population_order": np.array(populations, dtype=object).astype(str),
        "warnings_json": json.dumps({s.sample_id: s.warnings for s in ordered}, sort_keys=True),
        "failed_json": json.dumps([list(f) for f in sorted(failures)]),
    }
    if provenance is not None:
        uns["provenance_json"] = json.dumps(_stable_provenance(provenance), sort_keys=True,
                                            default=str)
    positions = gate_positions_frame(samples)
    if positions is not None:  # data-driven gates: where each sample's gates were fitted
        uns["gate_positions_json"] = positions.to_json(orient="records")
        flagged = positions[positions["flag"] != ""].groupby("sample_id")["population"].nunique()
        obs["n_gate_flags"] = np.array([int(flagged.get(s, 0)) for s in obs.index],
                                       dtype=np.int64)
    return X, obs, var, {"immunoprofile": uns}


def _stable_provenance(provenance: Mapping[str, Any]) -> dict[str, Any]:
    # Inside the h5ad keep only what does not change from run to run (no timestamp).
    return {k: v for k, v in provenance.items() if k != "created"}


def write_gate_outputs(
    out_dir: str | os.PathLike[str],
    samples: Sequence[SampleGating],
    failures: Sequence[tuple[str, str]],
    *,
    strategy: Strategy | None,
    parameters: Mapping[str, Any],
    inputs: Sequence[str | os.PathLike[str]] = (),
    command: str | None = None,
) -> dict[str, Path]:
    """Write the outputs of a gating batch, each atomically.

    Parameters
    ----------
    out_dir
        Output folder (created).
    samples
        The successful samples (any order; outputs are sorted by sample id).
    failures
        ``(input, reason)`` pairs; written to ``failed.tsv`` when any (a stale ``failed.tsv``
        from an earlier run is removed when there are none).
    strategy
        The strategy used (summarised in provenance and ``uns``).
    parameters
        Options that shaped the results (compensation, group ...).
    inputs
        Files that went in (FCS files, strategy, matrices), recorded with their SHA-256.
    command
        The command line, for provenance.

    Returns
    -------
    dict
        Output name -> path written.
    """
    from .._io import write_csv_atomic, write_json_atomic, write_text_atomic
    from ..layout import GateOutputs

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = GateOutputs(out)
    written: dict[str, Path] = {}
    table = gate_outputs_frame(samples)
    write_csv_atomic(paths.populations, table)
    written["populations"] = paths.populations
    time_qc_path = paths.time_qc
    if any(s.time_qc is not None for s in samples):
        _write_time_qc(time_qc_path, samples)
        written["time_qc"] = time_qc_path
    elif time_qc_path.exists():
        time_qc_path.unlink()  # stale traces of an earlier run with time QC
    extra = {
        "strategy": strategy.to_dict() if strategy is not None else None,
        "samples": {s.sample_id: {"file": s.file, "sha256": s.sha256, "n_events": s.n_events,
                                  "warnings": s.warnings,
                                  **({} if s.time_qc is None else {"time_qc": {
                                      k: v for k, v in s.time_qc.items()
                                      if k not in ("rate_bins", "signal_bins")}})}
                    for s in sorted(samples, key=lambda s: s.sample_id)},
        "failed": [{"input": str(i), "reason": r} for i, r in sorted(failures)],
    }
    provenance = build_provenance(inputs=inputs, parameters=dict(parameters), command=command,
                                  extra=json.loads(json.dumps(extra, default=str)),
                                  sha256=_known_digests(inputs, samples))
    positions = gate_positions_frame(samples)
    positions_path = paths.gate_positions
    if positions is not None:
        write_csv_atomic(positions_path, positions)
        written["gate_positions"] = positions_path
    elif positions_path.exists():
        positions_path.unlink()  # a stale table from an earlier run would be a lie now
    _write_flow_h5ad(paths.h5ad, samples, strategy=strategy, provenance=provenance,
                     failures=failures)
    written["h5ad"] = paths.h5ad
    write_json_atomic(paths.provenance, provenance)
    written["provenance"] = paths.provenance
    failed_path = paths.failed
    if failures:
        lines = ["input\treason"] + [f"{_one_line(i)}\t{_one_line(r)}"
                                     for i, r in sorted(failures)]
        write_text_atomic(failed_path, "\n".join(lines) + "\n")
        written["failed"] = failed_path
    elif failed_path.exists():
        failed_path.unlink()  # a stale list from an earlier run would be a lie now
    return written


def time_qc_frame(samples: Sequence[SampleGating]) -> pd.DataFrame:
    """The ``time_qc.csv`` traces: one row per sample and bin.

    Columns: ``sample_id, kind`` (``rate`` bins of :func:`~immunoprofile.flow.timeqc.time_qc`,
    ``signal`` chunks), ``t_start, t_end, count`` (events), ``rate`` (events per Time unit, rate
    bins), ``flagged`` (the bin itself departs), ``removed`` (its events were removed),
    ``reason`` and ``level_<channel>`` (signal chunks: mean asinh value).
    """
    import pandas as pd

    frames = []
    for s in sorted(samples, key=lambda s: (s.sample_id, s.file)):
        trace = s.time_qc_trace
        if trace is None and s.time_qc is not None:  # a summary that still holds its traces
            trace = split_time_qc(s.time_qc)[1]
        if isinstance(trace, TraceChunk):
            frames.append(trace.frame())
            continue
        if trace is None or not len(trace):
            continue
        frames.append(trace.assign(sample_id=s.sample_id))
    lead = _TIME_QC_LEAD
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    for c in lead:
        if c not in frame.columns:
            frame[c] = pd.Series(dtype=object)
    return frame[lead + [c for c in frame.columns if c not in lead]]


def _write_time_qc(path: Path, samples: Sequence[SampleGating]) -> None:
    """``time_qc.csv``: when every sample's traces are :class:`TraceChunk` files of one layout,
    their lines under one header (streamed: no table of the whole batch in memory); else
    :func:`time_qc_frame` written as one table. Both give the same bytes."""
    import pandas as pd

    from .._io import atomic_open, write_csv_atomic

    ordered = sorted(samples, key=lambda s: (s.sample_id, s.file))
    traces = [s.time_qc_trace for s in ordered]
    chunks = [t for t in traces if isinstance(t, TraceChunk) or t is not None and len(t)]
    if (not chunks or not all(isinstance(c, TraceChunk) for c in chunks)
            or len({(c.columns, c.dtypes) for c in chunks}) != 1
            or any(s.time_qc_trace is None and s.time_qc is not None
                   and split_time_qc(s.time_qc)[1] is not None for s in ordered)):
        write_csv_atomic(path, time_qc_frame(samples))
        return
    header = chunks[0].columns
    with atomic_open(path, "w") as handle:
        # the header exactly as pandas writes it (quoting names that need it)
        handle.write(pd.DataFrame(columns=list(header)).to_csv(index=False,
                                                                lineterminator="\n"))
        for chunk in chunks:
            handle.write(chunk.path.read_bytes().decode("utf-8"))


def _write_flow_h5ad(path: Path, samples: Sequence[SampleGating], **parts: Any) -> None:
    """``flow.h5ad`` through the h5py-only writer (importing anndata costs ~1 s a process);
    through anndata for anything that writer does not cover."""
    from .._h5ad import write_h5ad
    from .._io import atomic_path, write_h5ad_atomic

    X, obs, var, uns = _gate_parts(samples, **parts)
    try:
        with atomic_path(path) as tmp:
            write_h5ad(tmp, X=X, obs=obs, var=var, uns=uns)
    except TypeError:
        import anndata as ad

        write_h5ad_atomic(path, ad.AnnData(X=X, obs=obs, var=var, uns=uns))


def _known_digests(inputs: Sequence[str | os.PathLike[str]],
                   samples: Sequence[SampleGating]) -> dict[str, str]:
    """Digests the samples computed while reading, for inputs whose file name identifies one
    sample unambiguously (others are hashed again by ``build_provenance``)."""
    by_name: dict[str, list[str]] = {}
    for s in samples:
        by_name.setdefault(s.file, []).append(s.sha256)
    names = [Path(p).name for p in inputs]
    return {os.fspath(p): by_name[name][0] for p, name in zip(inputs, names)
            if len(by_name.get(name, ())) == 1 and names.count(name) == 1 and by_name[name][0]}


def _one_line(value: Any) -> str:
    return " ".join(str(value).replace("\t", " ").split())


# ----- inputs ----------------------------------------------------------------------------------

def expand_fcs_inputs(items: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files as given; folders expanded to their ``*.fcs`` files (sorted, case-insensitive).

    Raises
    ------
    InputError
        When an item does not exist or a folder holds no FCS file.
    """
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".fcs")
            if not found:
                raise InputError(path, "folder contains no .fcs files")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise InputError(path, "no such file or folder")
    unique = list(dict.fromkeys(p.resolve() for p in files))
    return unique


def sample_ids_from_manifest(manifest: str | os.PathLike[str] | pd.DataFrame, *,
                             source: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Map FCS file names to sample ids using a manifest's ``file`` and ``sample_id`` columns.

    ``manifest`` is a CSV path or an already-read table (``source``: its file, for messages).
    Rows whose ``assay`` (when present) is not ``flow`` are ignored. Keys are file names
    (basename), so the manifest may give paths relative to anywhere; the ids are given to
    :func:`immunoprofile.flow.stage.pair_samples`.
    """
    import pandas as pd

    if isinstance(manifest, pd.DataFrame):
        path = Path(source) if source is not None else None
        frame = manifest.astype(object).where(manifest.notna(), "").astype(str)
    else:
        path = Path(manifest)
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise InputError(path, f"cannot read manifest ({' '.join(str(exc).split())})") from exc
    missing = [c for c in ("sample_id", "file") if c not in frame.columns]
    if missing:
        raise InputError(path, f"manifest lacks column(s) {', '.join(missing)}")
    if "assay" in frame.columns:
        frame = frame[frame["assay"].str.lower().isin(["flow", ""])]
    mapping: dict[str, str] = {}
    for sid, file in zip(frame["sample_id"], frame["file"]):
        if not file:
            continue
        name = Path(file).name
        if name in mapping and mapping[name] != sid:
            raise InputError(path, f"file {name!r} is listed for two sample ids "
                                   f"({mapping[name]!r}, {sid!r})")
        mapping[name] = sid
    return mapping
