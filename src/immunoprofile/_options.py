"""One options model per stage: the function's defaults, the config schema and the CLI flags.

Contract: a stage's options are one :class:`StageOptions` (a frozen pydantic model: each field
carries its type, default, constraints and help text). From that one model come

- the stage function's keywords and their defaults (:func:`takes_options`: ``fn(...,
  options=None, **fields)``; ``inspect.signature`` shows every field with the model's default),
- the pipeline config section (``pipeline/config.py`` subclasses the model, adding only
  ``enabled`` and pipeline-only fields; the JSON Schema follows),
- the command's click options (:func:`click_options`: one ``--field-name`` per field, the
  model's default shown; the command receives ``options=Model(...)``).

A field's command-line form can be adjusted with :class:`Cli` in its ``Annotated`` metadata
(another flag name, a ``LOW,HIGH`` separator, or ``skip`` with the reason). Invalid values raise
:class:`~immunoprofile.errors.InputError` when a model is built directly (exit 2 on the command
line); nested in a config they are ``ValidationError`` details, so the config loader can report
every problem with its line.
"""

from __future__ import annotations

import functools
import inspect
import os
import textwrap
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo
from pydantic.fields import FieldInfo

from .errors import InputError

__all__ = ["Cli", "StageOptions", "takes_options", "click_options", "cli_fields",
           "resolve_path", "describe_errors"]

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound="StageOptions")


@dataclass(frozen=True)
class Cli:
    """How a field appears on the command line (put it in the field's ``Annotated`` metadata).

    Attributes
    ----------
    flag
        The option name (default ``--field-name``).
    secondary
        The off switch of a boolean (default ``--no-field-name``).
    separator
        A tuple field given as one ``a,b,c`` argument (default for tuples: a repeatable option).
    metavar, help
        Shown by ``--help`` (help defaults to the field's description).
    skip
        Not a command-line option; the reason (pinned by tests/test_options.py).
    """

    flag: str | None = None
    secondary: str | None = None
    separator: str | None = None
    metavar: str | None = None
    help: str | None = None
    skip: str | None = None


def describe_errors(exc: ValidationError, names: dict[str, str] | None = None) -> str:
    """A pydantic error as one line: ``field: message (got value)`` joined by ``;`` (a field
    shown as ``names[field]`` when given, e.g. its command-line flag)."""
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if not str(x).startswith("function")]
        if loc and names and loc[0] in names:
            loc = [names[loc[0]]]  # a flag takes one value: no item index
        where = ".".join(loc)
        if names and any(p.startswith(f"{where}:") for p in parts):
            continue  # one message per flag
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        value = err.get("input")
        shown = "" if isinstance(value, (dict, BaseModel)) else f" (got {value!r})"
        parts.append(f"{where}: {message}{shown}" if where else f"{message}{shown}")
    return "; ".join(parts)


class _OptionsMeta(type(BaseModel)):  # type: ignore[misc]
    # Only a direct call ``Model(...)`` passes here (a config validates nested sections without
    # it, keeping pydantic's per-field errors): a bad option is an InputError, as the contract
    # for user-supplied values says.
    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as exc:
            raise InputError(None, f"invalid {cls.__name__}: {describe_errors(exc)}") from None


class StageOptions(BaseModel, metaclass=_OptionsMeta):
    """Base of every stage's options: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True,
                              populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly values (provenance, cache keys)."""
        return self.model_dump(mode="json")

    @classmethod
    def merge(cls: type[M], options: BaseModel | None = None, /, **changes: Any) -> M:
        """``options`` (this model, a subclass such as a config section, or ``None`` for the
        defaults) with ``changes`` applied, validated. Fields ``cls`` does not have (a config
        section's ``enabled``) are dropped; an unknown keyword in ``changes`` is a TypeError."""
        unknown = sorted(set(changes) - set(cls.model_fields))
        if unknown:
            raise TypeError(f"{cls.__name__} has no option(s) {', '.join(unknown)}")
        if type(options) is cls and not changes:
            return options  # type: ignore[return-value]
        if options is not None and not isinstance(options, BaseModel):
            raise TypeError(f"options must be a {cls.__name__}, not {type(options).__name__}")
        # only what was set explicitly: a default stays a default (rules such as "naming a
        # bridging sample turns bridging on" look at what was given)
        base = {} if options is None else {k: getattr(options, k) for k in
                                           options.model_fields_set if k in cls.model_fields}
        return cls(**{**base, **changes})


def resolve_path(value: Any, info: ValidationInfo) -> Any:
    """A path relative to the config's folder (``context={"base_dir": ...}``) made absolute;
    outside a config it is left as given."""
    base = (info.context or {}).get("base_dir")
    path = Path(os.path.expanduser(str(value)))
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return Path(os.path.normpath(path))


# ----- the stage function's keywords -------------------------------------------------------------

def takes_options(model: type[StageOptions]) -> Callable[[F], F]:
    """Let a stage function ``fn(..., options=None, ...)`` also take ``model``'s fields as
    keywords: the wrapper merges them into ``options`` (:meth:`StageOptions.merge`), so ``fn``
    always receives a validated model, and its signature and docstring list every field with
    the model's default."""

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn)
        if "options" not in sig.parameters:
            raise TypeError(f"{fn.__name__} has no 'options' parameter")
        fields = [n for n in model.model_fields if n not in sig.parameters]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            changes = {n: kwargs.pop(n) for n in fields if n in kwargs}
            bound = sig.bind(*args, **kwargs)
            bound.arguments["options"] = model.merge(bound.arguments.get("options"), **changes)
            return fn(*bound.args, **bound.kwargs)

        extra = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=_default(model, n),
                                   annotation=_type_name(model.model_fields[n].annotation))
                 for n in fields]
        params = list(sig.parameters.values())
        if params and params[-1].kind is inspect.Parameter.VAR_KEYWORD:  # ``**rest`` stays last
            extra.append(params.pop())
        wrapper.__signature__ = sig.replace(parameters=[*params, *extra])  # type: ignore[attr-defined]
        doc, extra_doc = fn.__doc__ or "", _fields_doc(model, fields)
        # numpydoc order: Other Parameters right after Parameters
        head, sep, tail = doc.partition("\n    Returns\n")
        wrapper.__doc__ = (head.rstrip() + extra_doc + "\n" + sep.lstrip("\n") + tail
                           if sep else doc + extra_doc)
        wrapper.options_model = model  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def _default(model: type[StageOptions], name: str) -> Any:
    return model.model_fields[name].get_default(call_default_factory=True)


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    return text or str(annotation).replace("typing.", "")


def _fields_doc(model: type[StageOptions], names: list[str]) -> str:
    lines = ["", "", "    Other Parameters", "    ----------------"]
    for name in names:
        field = model.model_fields[name]
        default = _default(model, name)
        shown = ("on" if default.enabled else "off") if _nested_switch(field.annotation) \
            else repr(default)
        text = " ".join(f"{field.description or ''} Default {shown}.".split())
        lines += [f"    {name}", *textwrap.wrap(text, 96, initial_indent=" " * 8,
                                                subsequent_indent=" " * 8)]
    lines.append(f"        (The fields of :class:`{model.__module__}.{model.__name__}`.)")
    return "\n".join(lines) + "\n"


# ----- the command's click options ---------------------------------------------------------------

def _cli_of(field: FieldInfo) -> Cli:
    return next((m for m in field.metadata if isinstance(m, Cli)), Cli())


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    args = get_args(annotation)
    if get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else annotation), True
    return annotation, False


def _nested_switch(annotation: Any) -> bool:
    """A nested options model with an ``enabled`` field: on the command line, its switch."""
    return isinstance(annotation, type) and issubclass(annotation, BaseModel) \
        and "enabled" in annotation.model_fields


def cli_fields(model: type[StageOptions]) -> dict[str, str]:
    """Field name -> its command-line flag (fields marked ``Cli(skip=...)`` left out)."""
    out = {}
    for name, field in model.model_fields.items():
        cli = _cli_of(field)
        if not cli.skip:
            out[name] = cli.flag or "--" + name.replace("_", "-")
    return out


def click_options(model: type[StageOptions]) -> Callable[[F], F]:
    """One click option per field of ``model`` (see :class:`Cli`); the command receives
    ``options=model(...)`` built from them (a bad value: InputError, exit 2)."""
    import click

    def decorate(fn: F) -> F:
        flags = cli_fields(model)
        names = list(flags)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {}
            for name in names:
                value = kwargs.pop(name)
                annotation, _ = _strip_optional(model.model_fields[name].annotation)
                sep = _cli_of(model.model_fields[name]).separator
                if sep is not None and isinstance(value, str):
                    value = tuple(x.strip() for x in value.split(sep) if x.strip())
                elif _nested_switch(annotation):
                    value = {"enabled": value}
                values[name] = value
            try:
                options = model.model_validate(values)
            except ValidationError as exc:  # exit 2, naming the flag
                raise click.UsageError(describe_errors(exc, flags)) from None
            return fn(*args, options=options, **kwargs)

        for name in reversed(names):
            wrapper = _click_option(click, model, name)(wrapper)
        return wrapper  # type: ignore[return-value]

    return decorate


def _click_option(click: Any, model: type[StageOptions], name: str) -> Callable[[F], F]:
    field = model.model_fields[name]
    cli = _cli_of(field)
    annotation, optional = _strip_optional(field.annotation)
    default = _default(model, name)
    flag = cli.flag or "--" + name.replace("_", "-")
    help_text = cli.help or field.description or ""
    kwargs: dict[str, Any] = {"help": help_text, "show_default": True}
    if cli.metavar:
        kwargs["metavar"] = cli.metavar
    if annotation is bool or _nested_switch(annotation):
        value = default.enabled if _nested_switch(annotation) else default
        secondary = cli.secondary or "--no-" + flag.removeprefix("--")
        kwargs["show_default"] = value is not None
        return click.option(f"{flag}/{secondary}", name, default=value, **kwargs)
    origin = get_origin(annotation)
    if origin is tuple:
        items = get_args(annotation)
        if cli.separator is not None:
            shown = cli.separator.join(_text(x) for x in default)
            return click.option(flag, name, default=shown, type=str, **kwargs)
        item = items[0]
        return click.option(flag, name, default=default, multiple=True,
                            type=_click_type(click, item), **kwargs)
    if default is None:
        kwargs["show_default"] = False
    return click.option(flag, name, default=default, type=_click_type(click, annotation),
                        **kwargs)


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _click_type(click: Any, annotation: Any) -> Any:
    if get_origin(annotation) is Literal:
        return click.Choice([str(a) for a in get_args(annotation)])
    if annotation in (int, float, str):
        return annotation
    return str  # anything else is given as text and validated by the model
