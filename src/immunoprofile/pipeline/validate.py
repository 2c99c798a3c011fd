"""Check a pipeline config and everything it points to, without computing anything.

Contract: :func:`validate_config` returns every :class:`~immunoprofile.pipeline.config.Problem`
it finds (an empty list means the run can start): the config itself, the manifest, that every
file exists and reads as its format (FCS HEADER/TEXT only), that every channel or marker the
strategy names is in every FCS file, that plate wells named by the manifest are on their plates,
and that each subject has a baseline sample.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InputError
from .config import ConfigError, PipelineConfig, Problem, load_config

__all__ = ["validate_config", "validate_loaded"]


def validate_config(path: str | os.PathLike[str]) -> list[Problem]:
    """All problems of the config at ``path`` and of its inputs (one line each when printed).

    Parameters
    ----------
    path
        The pipeline config (YAML).

    Returns
    -------
    list of Problem
        Empty when everything checks out. A config that does not validate stops there (its
        inputs cannot be known).
    """
    try:
        config = load_config(path)
    except ConfigError as exc:
        return list(exc.problems)
    except InputError as exc:
        return [Problem(str(path), exc.reason)]
    return validate_loaded(config)


def _problem(exc: InputError, fallback: Path | str) -> Problem:
    return Problem(exc.path or str(fallback), exc.reason)


def validate_loaded(config: PipelineConfig) -> list[Problem]:
    """The input checks of :func:`validate_config` for an already loaded config."""
    from ..study.manifest import ManifestError, read_manifest

    problems: list[Problem] = []
    try:
        design = config.study_design()
    except ConfigError as exc:  # without a design the manifest's visits cannot be checked
        return exc.problems
    manifest = None
    try:
        manifest = read_manifest(config.inputs.manifest, design=design)
    except ManifestError as exc:
        problems += [Problem(str(config.inputs.manifest), f"column {p.column!r}: {p.reason} "
                             f"(got {p.value!r})" + (f"; allowed: {p.allowed}" if p.allowed
                                                     else ""), p.line)
                     for p in exc.problems]
    except InputError as exc:
        problems.append(_problem(exc, config.inputs.manifest))

    for label, path in (("inputs.layout", config.inputs.layout),
                        ("inputs.standards", config.inputs.standards),
                        ("inputs.clinical", config.inputs.clinical)):
        if path is not None and not path.is_file():
            problems.append(Problem(str(path), "file not found", where=label))
    if config.inputs.clinical is not None and config.inputs.clinical.is_file():
        problems += _check_clinical(config, design)
    if manifest is not None:
        problems += _check_baselines(config, manifest, design)
        if config.flow.enabled:
            problems += _check_flow(config, manifest)
        if config.cytokine.enabled:
            problems += _check_plates(config, manifest)
    return problems


def _check_clinical(config: PipelineConfig, design: Any) -> list[Problem]:
    from ..study.clinical import read_clinical

    try:
        read_clinical(config.inputs.clinical, design=design)
    except InputError as exc:
        return [_problem(exc, config.inputs.clinical)]
    return []


def _check_baselines(config: PipelineConfig, manifest: Any, design: Any) -> list[Problem]:
    baseline = design.baseline_visit
    problems = []
    for subject, rows in manifest.groupby("subject_id", sort=True):
        if baseline not in set(rows["visit"].astype(str)):
            problems.append(Problem(str(config.inputs.manifest),
                                    f"subject {subject!r} has no baseline ({baseline}) sample"))
    return problems


def _check_flow(config: PipelineConfig, manifest: Any) -> list[Problem]:
    from ..flow.fcs import read_fcs_metadata
    from ..flow.gates import FCS_SPILLOVER
    from .runner import flow_samples

    try:
        pairs = flow_samples(config, manifest)
    except InputError as exc:
        return [_problem(exc, config.inputs.manifest)]
    if not pairs:
        return []
    problems: list[Problem] = []
    if config.inputs.strategy is None:
        return [Problem(str(config.source), "the manifest lists flow samples but the config "
                                            "has no strategy", where="inputs.strategy")]
    names: set[str] = set()
    uses_fcs = False
    try:
        from ..flow.strategy import load_strategy

        strategy = load_strategy(config.inputs.strategy, group=config.flow.group)
        names = strategy.channels_used()
        uses_fcs = any(getattr(d, "compensation", None) == FCS_SPILLOVER
                       for gate in strategy.iter_gates() for d in gate.dimensions)
    except InputError as exc:
        problems.append(_problem(exc, config.inputs.strategy))
    compensation = config.flow.compensation
    matrix = None
    for k, cset in enumerate(config.flow.compensation_controls):
        for item in [*cset.controls, cset.unstained,
                     *(p for p in (cset.channels, cset.gate) if p is not None)]:
            if not Path(item).exists():
                problems.append(Problem(str(item), "compensation control input not found",
                                        where=f"flow.compensation_controls[{k}]"))
    if compensation not in ("fcs", "none", "controls"):
        from ..flow.compensation import read_compensation_csv

        try:
            matrix = read_compensation_csv(compensation)
        except InputError as exc:
            problems.append(_problem(exc, compensation))
    for sid, path in pairs:
        if not path.is_file():
            problems.append(Problem(str(path), f"FCS file of sample {sid!r} not found"))
            continue
        try:
            meta = read_fcs_metadata(path)
        except InputError as exc:
            problems.append(_problem(exc, path))
            continue
        missing = []
        for name in sorted(names):
            try:
                meta.channel_index(name)
            except InputError:
                missing.append(name)
        if missing:
            problems.append(Problem(str(path), "channel(s)/marker(s) named by the strategy are "
                                               f"not in this file: {', '.join(missing)} "
                                               f"(file has: {', '.join(meta.channels)})"))
        if compensation == "fcs" and meta.spillover is None and uses_fcs:
            problems.append(Problem(str(path), "compensation is 'fcs' but the file carries no "
                                               "spillover matrix"))
        if matrix is not None:
            absent = [c for c in matrix.channels if c not in meta.channels]
            if absent:
                problems.append(Problem(str(path), "compensation matrix channel(s) not in this "
                                                   f"file: {', '.join(absent)}"))
    return problems


def _check_plates(config: PipelineConfig, manifest: Any) -> list[Problem]:
    from ..cytokine.readers import read_plate
    from .runner import _plate_files

    try:
        files = _plate_files(config, manifest)
    except InputError as exc:
        return [_problem(exc, config.source or "")]
    problems: list[Problem] = []
    wells_by_plate: dict[str, set[str]] = {}
    analytes: dict[str, list[str]] = {}
    for path in files:
        if not path.is_file():
            problems.append(Problem(str(path), "plate file not found"))
            continue
        try:
            plate = read_plate(path, layout=config.inputs.layout,
                               standards=config.inputs.standards, repair=config.cytokine.repair)
        except InputError as exc:
            problems.append(_problem(exc, path))
            continue
        for name in plate.plates:
            rows = plate.wells[plate.wells["plate"] == name]
            wells_by_plate[str(name)] = set(rows["well"].astype(str))
            analytes[str(name)] = list(dict.fromkeys(rows["analyte"]))
        by_file = plate.wells
        wells_by_plate.setdefault(path.name, set(by_file["well"].astype(str)))
        wells_by_plate.setdefault(path.stem, set(by_file["well"].astype(str)))
        if not (plate.wells["sample_type"] == "standard").any():
            problems.append(Problem(str(path), "no standard wells: concentrations cannot be "
                                               "computed (give a layout or standards)"))
    # analyte panels should agree across plates of one study
    panels = {tuple(sorted(a)) for a in analytes.values()}
    if len(panels) > 1:
        union = sorted(set().union(*panels))
        for name, found in sorted(analytes.items()):
            lacking = [a for a in union if a not in found]
            if lacking:
                problems.append(Problem(str(name), f"plate lacks analyte(s) other plates have: "
                                                   f"{', '.join(lacking)}"))
    if "plate" in manifest.columns and "well" in manifest.columns and wells_by_plate:
        rows = manifest[manifest["assay"].astype(str).str.lower() != "flow"]
        for _, row in rows.iterrows():
            plate_name, wells = str(row.get("plate", "")), str(row.get("well", ""))
            if not plate_name or plate_name not in wells_by_plate:
                if plate_name:
                    problems.append(Problem(str(config.inputs.manifest),
                                            f"sample {row['sample_id']!r}: plate {plate_name!r} "
                                            "is not among the plate files",
                                            _line(row)))
                continue
            for well in (w.strip() for w in wells.split(";") if w.strip()):
                if well not in wells_by_plate[plate_name]:
                    problems.append(Problem(str(config.inputs.manifest),
                                            f"sample {row['sample_id']!r}: well {well} is not "
                                            f"on plate {plate_name!r}", _line(row)))
    return problems


def _line(row: Any) -> int | None:
    value = row.get("line") if hasattr(row, "get") else None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
