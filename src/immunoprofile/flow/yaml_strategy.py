"""The readable YAML gating-strategy format (``docs/strategy_yaml.md``) <-> :class:`Strategy`.

Contract: :func:`read_yaml_strategy` loads a strategy file with ``yaml.safe_load`` and returns a
``Strategy`` (``format="yaml"``) or raises one :class:`InputError` that names the file, the gate
path and the offending key or value (unknown keys come with a did-you-mean hint).
:func:`write_yaml_strategy` writes a strategy whose dimensions are plain channels back out.
Gate ids are the population path joined by ``::`` (as for FlowJo workspaces); dimensions keep the
channel or marker name as written, the engine resolves it per file.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InputError
from .gates import (
    FCS_SPILLOVER,
    UNCOMPENSATED,
    BooleanGate,
    CutFit,
    DensityGate,
    Dimension,
    EllipseGate,
    Gate,
    GateFit,
    PolygonGate,
    Quadrant,
    QuadrantDivider,
    QuadrantGate,
    RatioDimension,
    RectangleGate,
    Strategy,
)

__all__ = ["read_yaml_strategy", "write_yaml_strategy", "parse_yaml_strategy", "FORMAT_TAG",
           "MAX_GATES"]

#: Value of the optional top-level ``format`` key.
FORMAT_TAG = "immunoprofile-strategy/1"
#: Refuse strategies with more gates than this (YAML aliases can multiply a small file).
MAX_GATES = 10_000
_MAX_DEPTH = 64

_TOP_KEYS = ("format", "name", "description", "compensation", "transforms", "units", "gates")
_COMMON = ("name", "type", "children", "units")
_FITTED = ("max_shift",)
_GATE_KEYS: dict[str, tuple[str, ...]] = {
    "rectangle": (*_COMMON, *_FITTED, "bounds"),
    "range": (*_COMMON, *_FITTED, "channel", "min", "max"),
    "polygon": (*_COMMON, "x", "y", "vertices"),
    "ellipse": (*_COMMON, "x", "y", "mean", "covariance", "distance_square"),
    "quadrant": (*_COMMON, *_FITTED, "x", "y", "at", "quadrants"),
    "boolean": ("name", "type", "children", "op", "of", "parent"),
    # data-driven gates (fitted per sample; flow/adaptive_gates.py)
    "threshold": (*_COMMON, *_FITTED, "channel", "side", "method", "search", "fallback",
                  "adjust", "min_peak", "fraction", "q"),
    "cluster": (*_COMMON, *_FITTED, "x", "y", "dims", "components", "reference", "probability",
                "seed", "search", "fallback"),
    "singlets": (*_COMMON, *_FITTED, "x", "y", "width", "x_range", "fallback"),
    "density": (*_COMMON, *_FITTED, "x", "y", "fraction", "bins", "range", "sigma", "fallback"),
}
#: Keys of a fitted coordinate (``min: {method: density_minimum, search: [..], fallback: ..}``).
_CUT_KEYS = ("method", "search", "fallback", "adjust", "min_peak", "fraction", "q")
_UNITS = ("transformed", "data")
_TRANSFORM_PARAMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # type: (required, optional)
    "linear": (("T",), ("A",)),
    "log": (("T", "M"), ()),
    "asinh": (("T", "M"), ("A",)),
    "hyperlog": (("T", "W", "M"), ("A",)),
    "logicle": (("T", "W", "M"), ("A",)),
    "biex": (("negative", "width", "positive", "max_value"), ("length",)),
}
# Channels never compensated (scatter and time); everything else follows ``compensation``.
_NOT_FLUORESCENCE = re.compile(r"^(FSC|SSC|TIME)([-_ ].*)?$", re.IGNORECASE)
_SEP = "::"


class _Problem(Exception):
    """Internal: a located problem, turned into one InputError line at the top."""


def _hint(key: str, allowed: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(allowed)})"


def _check_keys(where: str, mapping: Mapping[Any, Any], allowed: tuple[str, ...]) -> None:
    for key in mapping:
        if key not in allowed:
            raise _Problem(f"{where}: unknown key {key!r}{_hint(str(key), allowed)}")


def _number(where: str, key: str, value: Any, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Problem(f"{where}: {key} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise _Problem(f"{where}: {key} must be finite, got {value!r}")
    return out


def _name(where: str, key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or str(value) == "":
        raise _Problem(f"{where}: {key} must be a non-empty name, got {value!r}")
    return str(value)


def _pair(where: str, key: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _Problem(f"{where}: {key} must be a pair [x, y], got {value!r}")
    x, y = _number(where, key, value[0]), _number(where, key, value[1])
    if x is None or y is None:  # cannot happen: allow_none is off (keeps type checkers calm)
        raise _Problem(f"{where}: {key} must be a pair of numbers, got {value!r}")
    return (x, y)


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------
def read_yaml_strategy(path: str | os.PathLike[str]) -> Strategy:
    """Read a YAML gating strategy (format: ``docs/strategy_yaml.md``).

    Parameters
    ----------
    path
        The ``.yaml`` file. A ``compensation:`` CSV path is relative to this file's folder.

    Returns
    -------
    Strategy
        ``format="yaml"``; gate ids are population paths joined by ``::``.

    Raises
    ------
    InputError
        Unreadable file, unsafe or invalid YAML, or any invalid key/value (the message names the
        gate path and the key).
    """
    import yaml

    p = os.fspath(path)
    try:
        with open(p, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise InputError(p, "file not found") from None
    except OSError as exc:
        raise InputError(p, f"cannot read file ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(p, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(p, f"invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise InputError(p, "invalid YAML: nested too deeply") from None
    except ValueError:  # an integer of more than 4300 digits (Python's conversion limit)
        raise InputError(p, "invalid YAML: a number with thousands of digits") from None
    return parse_yaml_strategy(doc, source=p, base_dir=Path(p).resolve().parent)


def parse_yaml_strategy(doc: Any, *, source: str | None = None,
                        base_dir: str | os.PathLike[str] | None = None) -> Strategy:
    """Build a :class:`Strategy` from an already loaded YAML document (a mapping).

    Parameters
    ----------
    doc
        The loaded document.
    source
        Its file, for messages and ``Strategy.source``.
    base_dir
        Folder that a relative ``compensation`` CSV path is relative to (default: cwd).

    Returns
    -------
    Strategy
    """
    try:
        return _Builder(source, Path(base_dir) if base_dir is not None else Path.cwd()).build(doc)
    except _Problem as exc:
        raise InputError(source, str(exc)) from None
    except RecursionError:
        raise InputError(source, "strategy nested too deeply") from None


class _Builder:
    def __init__(self, source: str | None, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir
        self.transforms: dict[str, Any] = {}
        self.transform_specs: dict[str, Any] = {}
        self.compensations: dict[str, Any] = {}
        self.compensation = FCS_SPILLOVER
        self.gates: list[Gate] = []
        self.names: dict[str, tuple[str, ...]] = {}   # population id -> names from the root
        self.booleans: list[tuple[str, dict[str, Any], tuple[str, ...]]] = []
        self.count = 0
        self.not_populations: set[str] = set()
        self.fits: dict[str, GateFit] = {}
        self.units = "transformed"

    # top level --------------------------------------------------------------------------------
    def build(self, doc: Any) -> Strategy:
        if not isinstance(doc, Mapping):
            raise _Problem("a strategy file must be a YAML mapping with a 'gates' list, got "
                           f"{type(doc).__name__}")
        _check_keys("top level", doc, _TOP_KEYS)
        fmt = doc.get("format", FORMAT_TAG)
        if fmt != FORMAT_TAG:
            raise _Problem(f"format: unsupported {fmt!r} (expected {FORMAT_TAG!r})")
        self.read_compensation(doc.get("compensation", "fcs"))
        self.read_transforms(doc.get("transforms"))
        self.units = self.read_units("units", doc.get("units", "transformed"))
        gates = doc.get("gates")
        if not isinstance(gates, list) or not gates:
            raise _Problem("gates: must be a non-empty list of gates")
        self.read_level(gates, (), None, "gates", 0)
        self.resolve_booleans()
        from .flowjo import order_gates

        try:
            ordered = order_gates(self.gates)
        except ValueError as exc:
            raise _Problem(f"gates: {exc}") from None
        meta: dict[str, Any] = {"compensation": doc.get("compensation", "fcs"),
                                "units": self.units}
        for key in ("name", "description"):
            if key in doc:
                if not isinstance(doc[key], (str, int, float)) or isinstance(doc[key], bool):
                    raise _Problem(f"{key}: must be text, got {doc[key]!r}")
                meta[key] = str(doc[key])
        return Strategy(gates=ordered, transforms=self.transforms,
                        compensations=self.compensations, source=self.source, format="yaml",
                        meta=meta, fits=self.fits)

    @staticmethod
    def read_units(where: str, value: Any) -> str:
        if value not in _UNITS:
            raise _Problem(f"{where}: units must be 'transformed' or 'data', got {value!r}")
        return str(value)

    def read_compensation(self, value: Any) -> None:
        if not isinstance(value, str) or not value.strip():
            raise _Problem(f"compensation: must be 'fcs', 'none' or a CSV path, got {value!r}")
        if value.lower() == "fcs":
            self.compensation = FCS_SPILLOVER
        elif value.lower() == "none":
            self.compensation = UNCOMPENSATED
        else:
            from .compensation import read_compensation_csv

            csv = Path(value)
            if not csv.is_absolute():
                csv = self.base_dir / csv
            if not csv.is_file():
                raise _Problem(f"compensation: matrix file {value!r} not found (looked for "
                               f"{csv})")
            try:
                spill = read_compensation_csv(csv)
            except InputError as exc:
                raise _Problem(f"compensation: {exc}") from None
            self.compensation = f"csv:{csv.name}"
            self.compensations[self.compensation] = spill

    def read_transforms(self, value: Any) -> None:
        if value is None:
            return
        if not isinstance(value, Mapping):
            raise _Problem(f"transforms: must be a mapping of channel -> transform, got "
                           f"{type(value).__name__}")
        from . import transforms as tr

        for key, spec in value.items():
            chan = _name("transforms", "channel", key)
            where = f"transforms/{chan}"
            if spec is None or (isinstance(spec, str) and spec.lower() == "none"):
                self.transform_specs[chan] = "none"
                continue
            if not isinstance(spec, Mapping):
                raise _Problem(f"{where}: must be 'none' or a mapping with a 'type', got {spec!r}")
            kind = spec.get("type")
            kinds = (*_TRANSFORM_PARAMS, "none")
            if not isinstance(kind, str) or kind not in kinds:
                raise _Problem(f"{where}: unknown transform type {kind!r}"
                               f"{_hint(str(kind), kinds)}")
            if kind == "none":
                _check_keys(where, spec, ("type",))
                self.transform_specs[chan] = "none"
                continue
            required, optional = _TRANSFORM_PARAMS[kind]
            _check_keys(where, spec, ("type", *required, *optional))
            missing = [k for k in required if k not in spec]
            if missing:
                raise _Problem(f"{where}: {kind} transform needs {', '.join(missing)}")
            params = {k: _number(where, k, spec[k]) for k in (*required, *optional) if k in spec}
            try:
                if kind == "linear":
                    obj = tr.LinearTransform(params["T"], params.get("A", 0.0))
                elif kind == "log":
                    obj = tr.LogTransform(params["T"], params["M"])
                elif kind == "asinh":
                    obj = tr.AsinhTransform(params["T"], params["M"], params.get("A", 0.0))
                elif kind == "hyperlog":
                    obj = tr.HyperlogTransform(params["T"], params["W"], params["M"],
                                               params.get("A", 0.0))
                elif kind == "logicle":
                    obj = tr.LogicleTransform(params["T"], params["W"], params["M"],
                                              params.get("A", 0.0))
                else:
                    obj = tr.FlowJoBiexTransform(params["negative"], params["width"],
                                                 params["positive"], params["max_value"],
                                                 length=int(params.get("length", 256)))
            except (ValueError, ZeroDivisionError, OverflowError, ArithmeticError) as exc:
                raise _Problem(f"{where}: invalid {kind} parameters ({exc})") from None
            self.transforms[chan] = obj
            self.transform_specs[chan] = dict(spec)

    # dimensions -------------------------------------------------------------------------------
    def dim(self, where: str, key: str, value: Any) -> Dimension:
        chan = _name(where, key, value)
        spec = self.transform_specs.get(chan, self.transform_specs.get("default"))
        if spec is None or spec == "none":
            xform = None
        else:
            xform = chan if chan in self.transforms else "default"
        comp = UNCOMPENSATED if _NOT_FLUORESCENCE.match(chan) else self.compensation
        return Dimension(channel=chan, compensation=comp, transform=xform)

    # gates ------------------------------------------------------------------------------------
    def read_level(self, items: Any, parent_names: tuple[str, ...], parent_id: str | None,
                   where: str, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise _Problem(f"{where}: gates nested deeper than {_MAX_DEPTH} levels")
        if not isinstance(items, list):
            raise _Problem(f"{where}: children must be a list of gates, got "
                           f"{type(items).__name__}")
        for index, item in enumerate(items):
            self.count += 1
            if self.count > MAX_GATES:
                raise _Problem(f"{where}: more than {MAX_GATES} gates")
            if not isinstance(item, Mapping):
                raise _Problem(f"{where}[{index}]: a gate must be a mapping, got {item!r}")
            if "name" not in item:
                raise _Problem(f"{where}[{index}]: gate has no 'name'")
            name = _name(f"{where}[{index}]", "name", item["name"])
            gpath = "/" + "/".join((*parent_names, name))
            kind = item.get("type")
            if not isinstance(kind, str) or kind not in _GATE_KEYS:
                raise _Problem(f"{gpath}: unknown gate type {kind!r}"
                               f"{_hint(str(kind), tuple(_GATE_KEYS))}")
            _check_keys(gpath, item, _GATE_KEYS[kind])
            if kind == "boolean":
                if "children" in item:
                    raise _Problem(f"{gpath}: boolean gates cannot have children in this format; "
                                   "give the children 'parent:' paths instead")
                # Resolved after the whole tree is known (operands may come later).
                self.booleans.append((gpath, dict(item), parent_names))
                continue
            names = (*parent_names, name)
            gid = self.claim(names, gpath)
            gate, child_parent = self.shape(kind, item, gid, name, parent_id, gpath)
            self.gates.append(gate)
            if kind == "quadrant":
                continue  # quadrant children are read in shape()
            if "children" in item and item["children"] is not None:
                self.read_level(item["children"], names, child_parent, gpath, depth + 1)

    def claim(self, names: tuple[str, ...], gpath: str) -> str:
        gid = _SEP.join(names)
        if gid in self.names:
            raise _Problem(f"{gpath}: duplicate gate name among siblings")
        self.names[gid] = names
        return gid

    # coordinates: units and fitted values -----------------------------------------------------
    def transform_obj(self, dim: Dimension) -> Any:
        return None if dim.transform is None else self.transforms.get(dim.transform)

    def to_scale(self, where: str, key: str, dim: Dimension, value: float | None,
                 units: str) -> float | None:
        """A coordinate in transformed units (converted when the gate gives data units)."""
        if value is None or units == "transformed":
            return value
        transform = self.transform_obj(dim)
        if transform is None:
            return value
        import numpy as np

        with np.errstate(all="ignore"):
            out = float(np.asarray(transform.apply(np.array([value], dtype=float)))[0])
        if not math.isfinite(out):
            raise _Problem(f"{where}: {key} {value:g} (data units) has no value on the "
                           f"{type(transform).__name__} scale of {dim.channel!r}")
        return out

    def data_value(self, dim: Dimension, value: float) -> float | None:
        """A transformed coordinate in data units (``None`` for untransformed axes)."""
        transform = self.transform_obj(dim)
        if transform is None:
            return None
        import numpy as np

        with np.errstate(all="ignore"):
            return float(np.asarray(transform.inverse(np.array([value], dtype=float)))[0])

    def fmt(self, dim: Dimension, value: float) -> str:
        """``0.452 (= 1000 in data units)``: a transformed coordinate in both units."""
        data = self.data_value(dim, value)
        return f"{value}" if data is None else f"{value:.4g} (= {data:.4g} in data units)"

    def coord(self, where: str, key: str, raw: Any, dim: Dimension, units: str, *,
              allow_none: bool = True) -> tuple[float | None, dict[str, Any] | None]:
        """A number, or a fitted-coordinate mapping -> (fallback value, fit arguments)."""
        if not isinstance(raw, Mapping):
            value = _number(where, key, raw, allow_none=allow_none)
            return self.to_scale(where, key, dim, value, units), None
        spot = f"{where} {key}"
        _check_keys(spot, raw, _CUT_KEYS)
        method = raw.get("method")
        from .adaptive_gates import CUT_METHODS

        if method not in CUT_METHODS:
            raise _Problem(f"{spot}: method must be one of {', '.join(CUT_METHODS)}, got "
                           f"{method!r}")
        if "fallback" not in raw:
            raise _Problem(f"{spot}: a fitted coordinate needs 'fallback' (used when the fit "
                           "fails)")
        fallback = self.to_scale(spot, "fallback", dim,
                                 _number(spot, "fallback", raw["fallback"]), units)
        search = None
        if raw.get("search") is not None:
            lo, hi = _pair(spot, "search", raw["search"])
            lo_t = self.to_scale(spot, "search", dim, lo, units)
            hi_t = self.to_scale(spot, "search", dim, hi, units)
            if lo_t is None or hi_t is None or lo_t >= hi_t:
                raise _Problem(f"{spot}: search must be [low, high] with low < high, got "
                               f"{raw['search']!r}")
            search = (lo_t, hi_t)
            if fallback is not None and not lo_t <= fallback <= hi_t:
                raise _Problem(f"{spot}: fallback {self.fmt(dim, fallback)} lies outside the "
                               f"search range [{self.fmt(dim, lo_t)}, {self.fmt(dim, hi_t)}]")
        options = []
        for opt in ("adjust", "min_peak", "fraction", "q"):
            if opt in raw:
                v = _number(spot, opt, raw[opt])
                if v is None or v <= 0 or (opt in ("min_peak", "fraction", "q") and v >= 1):
                    raise _Problem(f"{spot}: {opt} must be > 0{' and < 1' if opt != 'adjust' else ''}, "
                                   f"got {raw[opt]!r}")
                options.append((opt, v))
        if method == "quantile" and "q" not in raw:
            raise _Problem(f"{spot}: method quantile needs 'q' (0-1)")
        return fallback, {"method": method, "search": search, "options": tuple(options)}

    def gate_units(self, gpath: str, item: Mapping[str, Any]) -> str:
        return self.read_units(f"{gpath}: units", item.get("units", self.units))

    def max_shift(self, gpath: str, item: Mapping[str, Any]) -> float | None:
        if item.get("max_shift") is None:
            return None
        value = _number(gpath, "max_shift", item["max_shift"])
        if value is None or value <= 0:
            raise _Problem(f"{gpath}: max_shift must be > 0 (transformed units), got "
                           f"{item['max_shift']!r}")
        return value

    def add_fit(self, gpath: str, gid: str, item: Mapping[str, Any], kind: str,
                cuts: tuple[CutFit, ...] = (), **options: Any) -> None:
        self.fits[gid] = GateFit(kind=kind, cuts=cuts, options=tuple(options.items()),
                                 max_shift=self.max_shift(gpath, item))

    def points(self, gpath: str, key: str, raw: Any, dims: tuple[Dimension, Dimension],
               units: str, minimum: int = 3) -> tuple[tuple[float, float], ...]:
        if not isinstance(raw, list) or len(raw) < minimum:
            raise _Problem(f"{gpath}: {key} must be a list of at least {minimum} [x, y] pairs")
        out = []
        for i, v in enumerate(raw):
            x, y = _pair(gpath, f"{key}[{i}]", v)
            out.append((self.to_scale(gpath, f"{key}[{i}]", dims[0], x, units),
                        self.to_scale(gpath, f"{key}[{i}]", dims[1], y, units)))
        return tuple(out)  # type: ignore[return-value]

    def shape(self, kind: str, item: Mapping[str, Any], gid: str, name: str,
              parent: str | None, gpath: str) -> tuple[Gate, str]:
        def need(key: str) -> Any:
            if key not in item:
                raise _Problem(f"{gpath}: {kind} gate needs '{key}'")
            return item[key]

        units = self.gate_units(gpath, item)
        if kind == "rectangle":
            bounds = need("bounds")
            if not isinstance(bounds, Mapping) or not bounds:
                raise _Problem(f"{gpath}: bounds must map channel -> [min, max], got {bounds!r}")
            dims, mins, maxs, cuts = [], [], [], []
            for axis, (chan, pair) in enumerate(bounds.items()):
                dim = self.dim(gpath, "bounds", chan)
                dims.append(dim)
                if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                    raise _Problem(f"{gpath}: bounds of {chan!r} must be [min, max] (null = "
                                   f"open), got {pair!r}")
                lo, fit_lo = self.coord(gpath, f"bounds {chan!r} min", pair[0], dim, units)
                hi, fit_hi = self.coord(gpath, f"bounds {chan!r} max", pair[1], dim, units)
                self.check_interval(gpath, dim, lo, hi)
                cuts += [CutFit(target=(axis, side), **f) for side, f in
                         (("min", fit_lo), ("max", fit_hi)) if f is not None]
                mins.append(lo)
                maxs.append(hi)
            if cuts:
                self.add_fit(gpath, gid, item, "cuts", tuple(cuts))
            return RectangleGate(id=gid, parent=parent, name=name, dims=tuple(dims),
                                 mins=tuple(mins), maxs=tuple(maxs)), gid
        if kind in ("range", "threshold"):
            dim = self.dim(gpath, "channel", need("channel"))
            if kind == "threshold":
                side = item.get("side", "above")
                if side not in ("above", "below"):
                    raise _Problem(f"{gpath}: side must be 'above' (events >= the cut) or "
                                   f"'below' (events < the cut), got {side!r}")
                spec = {k: item[k] for k in _CUT_KEYS if k in item}
                value, fit = self.coord(gpath, "threshold", spec, dim, units)
                lo, hi = (value, None) if side == "above" else (None, value)
                fit_lo, fit_hi = (fit, None) if side == "above" else (None, fit)
            else:
                lo, fit_lo = self.coord(gpath, "min", item.get("min"), dim, units)
                hi, fit_hi = self.coord(gpath, "max", item.get("max"), dim, units)
            if lo is None and hi is None:
                raise _Problem(f"{gpath}: range gate needs 'min' and/or 'max'")
            self.check_interval(gpath, dim, lo, hi)
            cuts = tuple(CutFit(target=(0, side), **f) for side, f in
                         (("min", fit_lo), ("max", fit_hi)) if f is not None)
            if cuts:
                self.add_fit(gpath, gid, item, "cuts", cuts)
            return RectangleGate(id=gid, parent=parent, name=name, dims=(dim,), mins=(lo,),
                                 maxs=(hi,)), gid
        if kind in ("polygon", "singlets", "density"):
            dx, dy = self.dim(gpath, "x", need("x")), self.dim(gpath, "y", need("y"))
            if kind == "polygon":
                vertices = self.points(gpath, "vertices", need("vertices"), (dx, dy), units)
                return PolygonGate(id=gid, parent=parent, name=name, dims=(dx, dy),
                                   vertices=vertices), gid
            if kind == "singlets":
                return self.singlets(gpath, item, gid, name, parent, (dx, dy), units), gid
            return self.density(gpath, item, gid, name, parent, (dx, dy), units), gid
        if kind == "cluster":
            return self.cluster(gpath, item, gid, name, parent, units), gid
        if kind == "ellipse":
            dx, dy = self.dim(gpath, "x", need("x")), self.dim(gpath, "y", need("y"))
            mx, my = _pair(gpath, "mean", need("mean"))
            mean = (self.to_scale(gpath, "mean", dx, mx, units),
                    self.to_scale(gpath, "mean", dy, my, units))
            cov = need("covariance")
            rows = self.covariance(gpath, cov, 2)
            dsq = _number(gpath, "distance_square", item.get("distance_square", 1.0))
            if dsq is None or dsq <= 0:
                raise _Problem(f"{gpath}: distance_square must be > 0, got {dsq!r}")
            return EllipseGate(id=gid, parent=parent, name=name, dims=(dx, dy), mean=mean,
                               covariance=rows, distance_square=dsq), gid
        # quadrant
        dx, dy = self.dim(gpath, "x", need("x")), self.dim(gpath, "y", need("y"))
        at_raw = need("at")
        if not isinstance(at_raw, (list, tuple)) or len(at_raw) != 2:
            raise _Problem(f"{gpath}: at must be a pair [x, y], got {at_raw!r}")
        at_x, fit_x = self.coord(gpath, "at[0]", at_raw[0], dx, units, allow_none=False)
        at_y, fit_y = self.coord(gpath, "at[1]", at_raw[1], dy, units, allow_none=False)
        at = (float(at_x), float(at_y))  # type: ignore[arg-type]
        cuts = tuple(CutFit(target=(f"{gid}{_SEP}{axis}", "value"), **f) for axis, f in
                     (("x", fit_x), ("y", fit_y)) if f is not None)
        if cuts:
            self.add_fit(gpath, gid, item, "cuts", cuts)
        quads = need("quadrants")
        if not isinstance(quads, Mapping) or not quads:
            raise _Problem(f"{gpath}: quadrants must map name -> [x side, y side] (+ or -)")
        parent_names = self.names[gid][:-1]
        dividers = (QuadrantDivider(id=f"{gid}{_SEP}x", dimension=dx, values=(at[0],)),
                    QuadrantDivider(id=f"{gid}{_SEP}y", dimension=dy, values=(at[1],)))
        quadrants: list[Quadrant] = []
        seen_sides: dict[tuple[str, str], str] = {}
        pending_children: list[tuple[Any, tuple[str, ...], str, str]] = []
        for qname_raw, spec in quads.items():
            qname = _name(gpath, "quadrant name", qname_raw)
            qpath = "/" + "/".join((*parent_names, qname))
            children = None
            if isinstance(spec, Mapping):
                _check_keys(qpath, spec, ("position", "children"))
                children = spec.get("children")
                spec = spec.get("position")
            sides = self.sides(qpath, spec)
            if sides in seen_sides:
                raise _Problem(f"{qpath}: same quadrant {list(sides)} as {seen_sides[sides]!r}")
            seen_sides[sides] = qname
            qnames = (*parent_names, qname)
            qid = self.claim(qnames, qpath)
            offset_x = 1.0 if sides[0] == "+" else -1.0
            offset_y = 1.0 if sides[1] == "+" else -1.0
            quadrants.append(Quadrant(id=qid, name=qname, positions=(
                (dividers[0].id, at[0] + offset_x), (dividers[1].id, at[1] + offset_y))))
            if children is not None:
                pending_children.append((children, qnames, qid, qpath))
        gate = QuadrantGate(id=gid, parent=parent, name=name, dividers=dividers,
                            quadrants=tuple(quadrants))
        # The quadrant gate itself is no population (its quadrants are): operands and
        # parents cannot name it. Its children come after it thanks to order_gates().
        self.not_populations.add(gid)
        for children, qnames, qid, qpath in pending_children:
            self.read_level(children, qnames, qid, qpath, len(qnames))
        return gate, gid

    @staticmethod
    def sides(where: str, spec: Any) -> tuple[str, str]:
        ok = ("+", "-")
        if not isinstance(spec, (list, tuple)) or len(spec) != 2 or \
                any(s not in ok for s in spec):
            raise _Problem(f"{where}: quadrant position must be [x side, y side] with + or -, "
                           f"got {spec!r}")
        return (spec[0], spec[1])

    def check_interval(self, where: str, dim: Dimension, lo: float | None,
                       hi: float | None) -> None:
        if lo is not None and hi is not None and lo >= hi:
            lo_d, hi_d = self.data_value(dim, lo), self.data_value(dim, hi)
            both = "" if lo_d is None or hi_d is None else \
                f" (in data units: {lo_d:.4g} and {hi_d:.4g})"
            raise _Problem(f"{where}: min {lo} must be below max {hi} on {dim.channel!r}{both}")

    @staticmethod
    def covariance(gpath: str, cov: Any, ndim: int) -> tuple[tuple[float, ...], ...]:
        """A symmetric positive definite ``ndim`` × ``ndim`` matrix (transformed units)."""
        import numpy as np

        if not isinstance(cov, list) or len(cov) != ndim or \
                any(not isinstance(r, list) or len(r) != ndim for r in cov):
            shape = "[[a, b], [b, c]]" if ndim == 2 else f"{ndim} rows of {ndim}"
            raise _Problem(f"{gpath}: covariance must be a {ndim}x{ndim} matrix {shape}")
        rows = tuple(tuple(float(_number(gpath, f"covariance[{i}]", v)) for v in r)  # type: ignore[arg-type]
                     for i, r in enumerate(cov))
        m = np.asarray(rows)
        if not np.allclose(m, m.T, rtol=1e-9, atol=1e-12):
            raise _Problem(f"{gpath}: covariance must be symmetric, got {cov!r}")
        if not np.all(np.linalg.eigvalsh(m) > 0):
            raise _Problem(f"{gpath}: covariance must be positive definite, got {cov!r}")
        return rows

    # data-driven gates ------------------------------------------------------------------------
    def singlets(self, gpath: str, item: Mapping[str, Any], gid: str, name: str,
                 parent: str | None, dims: tuple[Dimension, Dimension], units: str) -> Gate:
        if "fallback" not in item:
            raise _Problem(f"{gpath}: singlets gate needs 'fallback' (polygon vertices used "
                           "when the fit fails)")
        vertices = self.points(gpath, "fallback", item["fallback"], dims, units)
        width = _number(gpath, "width", item.get("width", 4.0))
        if width is None or width <= 0:
            raise _Problem(f"{gpath}: width must be > 0 (robust SDs of y/x), got {width!r}")
        options: dict[str, Any] = {"width": width}
        if item.get("x_range") is not None:
            lo, hi = _pair(gpath, "x_range", item["x_range"])
            lo_t = self.to_scale(gpath, "x_range", dims[0], lo, units)
            hi_t = self.to_scale(gpath, "x_range", dims[0], hi, units)
            if not (lo_t is not None and hi_t is not None and 0 < lo_t < hi_t):
                raise _Problem(f"{gpath}: x_range must be [low, high] with 0 < low < high")
            options["x_range"] = (lo_t, hi_t)
        self.add_fit(gpath, gid, item, "singlets", **options)
        return PolygonGate(id=gid, parent=parent, name=name, dims=dims, vertices=vertices)

    def density(self, gpath: str, item: Mapping[str, Any], gid: str, name: str,
                parent: str | None, dims: tuple[Dimension, Dimension], units: str) -> Gate:
        import numpy as np

        fraction = _number(gpath, "fraction", item.get("fraction"))
        if fraction is None or not 0 < fraction <= 1:
            raise _Problem(f"{gpath}: density gate needs fraction (0 < fraction <= 1), got "
                           f"{item.get('fraction')!r}")
        bins = item.get("bins", 1024)
        bins = [bins, bins] if not isinstance(bins, list) else bins
        if len(bins) != 2 or any(isinstance(b, bool) or not isinstance(b, int) or not
                                 2 <= b <= 4096 for b in bins):
            raise _Problem(f"{gpath}: bins must be an integer 2-4096 or [nx, ny], got "
                           f"{item.get('bins')!r}")
        ranges = item.get("range", [[0.0, 1.0], [0.0, 1.0]])
        if not isinstance(ranges, list) or len(ranges) != 2:
            raise _Problem(f"{gpath}: range must be [[x low, x high], [y low, y high]]")
        edges = []
        for axis, (dim, r, nb) in enumerate(zip(dims, ranges, bins)):
            lo, hi = _pair(gpath, f"range[{axis}]", r)
            lo_t = self.to_scale(gpath, "range", dim, lo, units)
            hi_t = self.to_scale(gpath, "range", dim, hi, units)
            if lo_t is None or hi_t is None or lo_t >= hi_t:
                raise _Problem(f"{gpath}: range[{axis}] must be [low, high] with low < high")
            edges.append(tuple(float(v) for v in np.linspace(lo_t, hi_t, nb + 1)))
        sigma = _number(gpath, "sigma", item.get("sigma", 10.0))
        if sigma is None or sigma < 0:
            raise _Problem(f"{gpath}: sigma must be >= 0 (bins), got {sigma!r}")
        self.add_fit(gpath, gid, item, "density", fraction=fraction, sigma=sigma,
                     x_edges=edges[0], y_edges=edges[1])
        if item.get("fallback") is not None:
            vertices = self.points(gpath, "fallback", item["fallback"], dims, units)
            return PolygonGate(id=gid, parent=parent, name=name, dims=dims, vertices=vertices)
        # no stated fallback: a failed fit keeps no events (and is flagged)
        return DensityGate(id=gid, parent=parent, name=name, dims=dims, x_edges=edges[0],
                           y_edges=edges[1], accepted=())

    def cluster(self, gpath: str, item: Mapping[str, Any], gid: str, name: str,
                parent: str | None, units: str) -> Gate:
        if "dims" in item:
            if "x" in item or "y" in item:
                raise _Problem(f"{gpath}: give either x/y or dims, not both")
            raw = item["dims"]
            if not isinstance(raw, list) or len(raw) < 2:
                raise _Problem(f"{gpath}: dims must list at least two channels")
            dims = tuple(self.dim(gpath, "dims", c) for c in raw)
        else:
            for key in ("x", "y"):
                if key not in item:
                    raise _Problem(f"{gpath}: cluster gate needs 'x' and 'y' (or 'dims')")
            dims = (self.dim(gpath, "x", item["x"]), self.dim(gpath, "y", item["y"]))
        nd = len(dims)

        def point(key: str, raw: Any) -> tuple[float, ...]:
            if not isinstance(raw, list) or len(raw) != nd:
                raise _Problem(f"{gpath}: {key} must list {nd} numbers (one per dimension)")
            return tuple(float(self.to_scale(gpath, key, d,  # type: ignore[arg-type]
                                              _number(gpath, key, v), units))
                         for d, v in zip(dims, raw))

        if "reference" not in item:
            raise _Problem(f"{gpath}: cluster gate needs 'reference' (a point near the wanted "
                           "population)")
        reference = point("reference", item["reference"])
        components = item.get("components", 3)
        if isinstance(components, bool) or not isinstance(components, int) or \
                not 1 <= components <= 20:
            raise _Problem(f"{gpath}: components must be an integer 1-20, got {components!r}")
        probability = _number(gpath, "probability", item.get("probability", 0.95))
        if probability is None or not 0 < probability < 1:
            raise _Problem(f"{gpath}: probability must be between 0 and 1, got "
                           f"{item.get('probability')!r}")
        seed = item.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise _Problem(f"{gpath}: seed must be a non-negative integer, got {seed!r}")
        search = None
        if item.get("search") is not None:
            raw = item["search"]
            if not isinstance(raw, list) or len(raw) != nd:
                raise _Problem(f"{gpath}: search must give [low, high] per dimension")
            search = []
            for d, pair in zip(dims, raw):
                lo, hi = _pair(gpath, "search", pair)
                search.append((self.to_scale(gpath, "search", d, lo, units),
                               self.to_scale(gpath, "search", d, hi, units)))
            search = tuple(search)
        fallback = item.get("fallback")
        if not isinstance(fallback, Mapping) or "mean" not in fallback or \
                "covariance" not in fallback:
            raise _Problem(f"{gpath}: cluster gate needs fallback: {{mean: [...], covariance: "
                           "[[...]]}} (transformed-unit covariance; used when the fit fails)")
        _check_keys(f"{gpath} fallback", fallback, ("mean", "covariance"))
        from scipy.stats import chi2

        dsq = float(chi2.ppf(probability, df=nd))
        self.add_fit(gpath, gid, item, "cluster", reference=reference, components=components,
                     probability=probability, seed=seed, search=search)
        return EllipseGate(id=gid, parent=parent, name=name, dims=dims,
                           mean=point("fallback mean", fallback["mean"]),
                           covariance=self.covariance(gpath, fallback["covariance"], nd),
                           distance_square=dsq)

    # booleans ---------------------------------------------------------------------------------
    def lookup(self, where: str, ref: str) -> str:
        """A population id from a full path (``/A/B``) or a unique bare name."""
        ref = ref.strip()
        if ref.startswith("/"):
            names = tuple(part for part in ref.split("/") if part)
            gid = _SEP.join(names)
            if gid in self.names and gid not in self.not_populations:
                return gid
            close = difflib.get_close_matches(ref, ["/" + "/".join(n) for n in
                                                    self.names.values()], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _Problem(f"{where}: boolean operand {ref!r} not found{hint}")
        hits = [gid for gid, names in self.names.items()
                if names[-1] == ref and gid not in self.not_populations]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            paths = ", ".join("/" + "/".join(self.names[h]) for h in hits)
            raise _Problem(f"{where}: boolean operand {ref!r} is ambiguous ({paths}); use a path")
        close = difflib.get_close_matches(ref, sorted({n[-1] for n in self.names.values()}), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise _Problem(f"{where}: boolean operand {ref!r} not found{hint}")

    def resolve_booleans(self) -> None:
        # Boolean gates may refer to each other: register every id first, then resolve.
        planned: list[tuple[str, dict[str, Any], tuple[str, ...], str | None, str]] = []
        for gpath, item, parent_names, in self.booleans:
            name = str(item["name"])
            parent_id: str | None = _SEP.join(parent_names) if parent_names else None
            if item.get("parent") is not None:
                parent_ref = item["parent"]
                if not isinstance(parent_ref, str):
                    raise _Problem(f"{gpath}: parent must be a population path, got "
                                   f"{parent_ref!r}")
                parent_id = self.lookup(gpath, parent_ref)
                parent_names = self.names[parent_id]
            gpath = "/" + "/".join((*parent_names, name))
            gid = self.claim((*parent_names, name), gpath)
            planned.append((gpath, item, parent_names, parent_id, gid))
        for gpath, item, _names, parent_id, gid in planned:
            op = item.get("op")
            if op not in ("and", "or", "not"):
                raise _Problem(f"{gpath}: op must be and, or or not, got {op!r}")
            of = item.get("of")
            if isinstance(of, str):
                of = [of]
            if not isinstance(of, list) or not of:
                raise _Problem(f"{gpath}: 'of' must list the operand populations")
            operands = []
            for ref in of:
                if not isinstance(ref, str) or not ref.strip():
                    raise _Problem(f"{gpath}: boolean operand must be a population path or "
                                   f"name, got {ref!r}")
                text = ref.strip()
                complement = False
                if text.lower().startswith("not "):
                    complement, text = True, text[4:]
                target = self.lookup(gpath, text)
                if target == gid:
                    raise _Problem(f"{gpath}: boolean gate refers to itself")
                operands.append((target, complement))
            if op == "not" and len(operands) != 1:
                raise _Problem(f"{gpath}: op 'not' takes exactly one operand, got "
                               f"{len(operands)}")
            if op in ("and", "or") and len(operands) < 2:
                raise _Problem(f"{gpath}: op {op!r} needs at least two operands")
            self.gates.append(BooleanGate(id=gid, parent=parent_id, name=str(item["name"]),
                                          op=op, operands=tuple(operands)))


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------
def _transform_spec(obj: Any) -> dict[str, Any]:
    from . import transforms as tr

    kinds = [(tr.LinearTransform, "linear", ("T", "A")), (tr.LogTransform, "log", ("T", "M")),
             (tr.AsinhTransform, "asinh", ("T", "M", "A")),
             (tr.HyperlogTransform, "hyperlog", ("T", "W", "M", "A")),
             (tr.LogicleTransform, "logicle", ("T", "W", "M", "A")),
             (tr.FlowJoBiexTransform, "biex",
              ("negative", "width", "positive", "max_value", "length"))]
    for cls, kind, params in kinds:
        if type(obj) is cls:
            spec: dict[str, Any] = {"type": kind}
            for p in params:
                value = getattr(obj, p)
                spec[p] = int(value) if p == "length" else float(value)
            return spec
    raise ValueError(f"transform {obj!r} has no YAML form")


def write_yaml_strategy(strategy: Strategy, path: str | os.PathLike[str]) -> None:
    """Write a strategy in the YAML format (atomically).

    Only strategies whose dimensions are plain channels (no ratio dimensions), all under the same
    compensation (file spillover or none; scatter/time uncompensated), with one transform per
    channel can be written; anything else raises ``ValueError`` naming the gate.

    Parameters
    ----------
    strategy
        The strategy (from any source).
    path
        Output ``.yaml`` file.
    """
    import yaml

    from .._io import atomic_open

    comps: set[str] = set()
    chan_xform: dict[str, Any] = {}

    def dim_name(gate: Gate, dim: Any) -> str:
        if isinstance(dim, RatioDimension):
            raise ValueError(f"gate {gate.id!r}: ratio dimensions have no YAML form")
        if dim.compensation not in (FCS_SPILLOVER, UNCOMPENSATED):
            raise ValueError(f"gate {gate.id!r}: compensation {dim.compensation!r} (a stored "
                             "matrix) has no YAML form")
        if not _NOT_FLUORESCENCE.match(dim.channel):
            comps.add(dim.compensation)
        elif dim.compensation != UNCOMPENSATED:
            raise ValueError(f"gate {gate.id!r}: scatter/time channel {dim.channel!r} is "
                             "compensated")
        spec = "none" if dim.transform is None else \
            _transform_spec(strategy.transforms[dim.transform])
        if chan_xform.setdefault(dim.channel, spec) != spec:
            raise ValueError(f"gate {gate.id!r}: channel {dim.channel!r} is used with two "
                             "different transforms")
        return dim.channel

    def children_of(pid: str | None) -> list[Gate]:
        return [g for g in strategy.gates.values() if g.parent == pid]

    def ref(pid: str) -> str:
        return strategy.path_of(pid)

    def emit(gate: Gate) -> dict[str, Any]:
        out: dict[str, Any] = {"name": gate.name}
        if isinstance(gate, BooleanGate):
            out["type"] = "boolean"
            out["op"] = gate.op
            out["of"] = [("not " if comp else "") + ref(op) for op, comp in gate.operands]
            if gate.parent is not None:
                out["parent"] = ref(gate.parent)
            return out
        if isinstance(gate, RectangleGate):
            if len(gate.dims) == 1:
                out.update(type="range", channel=dim_name(gate, gate.dims[0]))
                if gate.mins[0] is not None:
                    out["min"] = gate.mins[0]
                if gate.maxs[0] is not None:
                    out["max"] = gate.maxs[0]
            else:
                out["type"] = "rectangle"
                out["bounds"] = {dim_name(gate, d): [lo, hi] for d, lo, hi in
                                 zip(gate.dims, gate.mins, gate.maxs)}
        elif isinstance(gate, PolygonGate):
            out.update(type="polygon", x=dim_name(gate, gate.dims[0]),
                       y=dim_name(gate, gate.dims[1]),
                       vertices=[[float(x), float(y)] for x, y in gate.vertices])
        elif isinstance(gate, EllipseGate):
            if len(gate.dims) != 2:
                raise ValueError(f"gate {gate.id!r}: only 2-D ellipses have a YAML form")
            out.update(type="ellipse", x=dim_name(gate, gate.dims[0]),
                       y=dim_name(gate, gate.dims[1]), mean=[float(v) for v in gate.mean],
                       covariance=[[float(v) for v in row] for row in gate.covariance],
                       distance_square=float(gate.distance_square))
        elif isinstance(gate, QuadrantGate):
            if len(gate.dividers) != 2 or any(len(d.values) != 1 for d in gate.dividers):
                raise ValueError(f"gate {gate.id!r}: only 2-divider, one-cut quadrant gates "
                                 "have a YAML form")
            dx, dy = gate.dividers
            quads: dict[str, Any] = {}
            for q in gate.quadrants:
                pos = dict(q.positions)
                sides = ["+" if pos[dx.id] >= dx.values[0] else "-",
                         "+" if pos[dy.id] >= dy.values[0] else "-"]
                kids = [emit(c) for c in children_of(q.id) if not isinstance(c, BooleanGate)]
                quads[q.name or q.id] = {"position": sides, "children": kids} if kids else sides
            out.update(type="quadrant", x=dim_name(gate, dx.dimension),
                       y=dim_name(gate, dy.dimension), at=[dx.values[0], dy.values[0]],
                       quadrants=quads)
            return out
        else:
            raise ValueError(f"gate {gate.id!r}: {type(gate).__name__} has no YAML form")
        kids = [emit(c) for c in children_of(gate.id) if not isinstance(c, BooleanGate)]
        if kids:
            out["children"] = kids
        return out

    tree = [emit(g) for g in children_of(None) if not isinstance(g, BooleanGate)]
    tree += [emit(g) for g in strategy.gates.values() if isinstance(g, BooleanGate)]
    if len(comps) > 1:
        raise ValueError("gates use different compensations; the YAML form has one")
    comp = "none" if comps == {UNCOMPENSATED} else "fcs"
    doc: dict[str, Any] = {"format": FORMAT_TAG}
    if strategy.meta.get("name"):
        doc["name"] = str(strategy.meta["name"])
    doc["compensation"] = comp
    doc["transforms"] = {chan: spec for chan, spec in sorted(chan_xform.items())}
    doc["gates"] = tree
    with atomic_open(path, "w") as fh:
        yaml.safe_dump(doc, fh, sort_keys=False, allow_unicode=True, default_flow_style=None)
