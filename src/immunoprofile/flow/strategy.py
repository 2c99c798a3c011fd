"""One entry point for gating strategies, whatever wrote them.

Contract: :func:`load_strategy` looks at a file's *content* (not its extension) and hands it to
the Gating-ML 2.0 reader, the FlowJo workspace reader or the YAML reader, returning a
:class:`~immunoprofile.flow.gates.Strategy`; anything else is an :class:`InputError`.
"""

from __future__ import annotations

import os

from .._xml import local_name, namespace_of, parse_xml
from ..errors import InputError
from .gates import Strategy

__all__ = ["load_strategy", "detect_strategy_format", "GATINGML_NAMESPACES"]

#: Root-element namespaces that mark a Gating-ML 2.0 document.
GATINGML_NAMESPACES = frozenset({"http://www.isac-net.org/std/Gating-ML/v2.0/gating"})
_SNIFF_BYTES = 4096


def detect_strategy_format(path: str | os.PathLike[str]) -> str:
    """``"gatingml"``, ``"flowjo"`` or ``"yaml"`` from the file's content.

    XML files are recognised by their root element (parsed safely): a Gating-ML 2.0 namespace
    or a FlowJo ``<Workspace>``. Any other text is taken as YAML (its reader then validates it).

    Raises
    ------
    InputError
        Missing/unreadable file, binary content, unsafe XML, or XML of another kind.
    """
    p = os.fspath(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except FileNotFoundError:
        raise InputError(p, "strategy file not found") from None
    except OSError as exc:
        raise InputError(p, f"cannot read strategy file ({exc.strerror or exc})") from None
    if b"\x00" in head:
        raise InputError(p, "not a gating strategy (binary content; expected Gating-ML, a "
                            "FlowJo .wsp or YAML)")
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text.startswith(b"<"):
        return "yaml"
    root = parse_xml(p)
    name, ns = local_name(root.tag), namespace_of(root.tag)
    if ns in GATINGML_NAMESPACES or name == "Gating-ML":
        if ns not in GATINGML_NAMESPACES:
            raise InputError(p, f"Gating-ML root in namespace {ns!r}; only Gating-ML 2.0 "
                                f"({sorted(GATINGML_NAMESPACES)[0]}) is supported")
        return "gatingml"
    if name == "Workspace":
        return "flowjo"
    raise InputError(p, f"XML root <{name}>{f' in namespace {ns!r}' if ns else ''} is neither "
                        "Gating-ML 2.0 nor a FlowJo workspace")


def load_strategy(path: str | os.PathLike[str], *, group: str | None = None,
                  sample: str | None = None) -> Strategy:
    """Load a gating strategy from Gating-ML 2.0, a FlowJo workspace (7.x-10.x) or YAML.

    Parameters
    ----------
    path
        The strategy file; its format is detected from the content.
    group
        FlowJo only: the sample group whose gates to use (default ``"All Samples"``).
    sample
        FlowJo only: one sample's gates (FlowJo id, name or file stem).

    Returns
    -------
    Strategy
        For a FlowJo workspace without ``sample``: a
        :class:`~immunoprofile.flow.flowjo.FlowJoStrategy`, which gates each file with its own
        workspace sample (matched by ``$FIL``, file name, sample name).

    Raises
    ------
    InputError
        Unrecognised or invalid file, a strategy without gates, or ``group``/``sample`` given
        for a non-FlowJo file.
    """
    kind = detect_strategy_format(path)
    if kind != "flowjo" and (group is not None or sample is not None):
        raise InputError(path, f"group/sample choose gates inside a FlowJo workspace; this is a "
                               f"{'Gating-ML' if kind == 'gatingml' else 'YAML'} strategy")
    strategy: Strategy
    if kind == "gatingml":
        from .gatingml import read_gatingml

        strategy = read_gatingml(path)
    elif kind == "flowjo":
        from .flowjo import read_flowjo_workspace, workspace_strategy

        workspace = read_flowjo_workspace(path)
        if sample is None:
            # gate every file with its own workspace sample (FlowJoStrategy.for_file)
            strategy = workspace_strategy(workspace, group)
        else:
            strategy = workspace.strategy(sample=sample, group=group or "All Samples")
    else:
        from .yaml_strategy import read_yaml_strategy

        strategy = read_yaml_strategy(path)
    if not strategy.gates and not getattr(strategy, "workspace", None):
        # nothing to evaluate: "gated N/N" with no population would be a silent wrong answer
        raise InputError(path, "the strategy defines no gates")
    return strategy
