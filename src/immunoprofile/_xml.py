"""Safe XML parsing for untrusted Gating-ML, FlowJo and Bio-Plex files.

defusedxml refuses DTD entity declarations and external references (XXE, billion laughs)
before anything is expanded; we turn its exceptions into :class:`InputError`.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from .errors import InputError

__all__ = ["parse_xml", "local_name", "namespace_of"]


def parse_xml(path: str | os.PathLike[str]) -> ET.Element:
    """Parse an XML file safely and return its root element.

    Raises
    ------
    InputError
        If the file is missing, not well-formed, or carries entity declarations / external
        references (refused, never resolved).
    """
    try:
        tree = SafeET.parse(os.fspath(path), forbid_dtd=False, forbid_entities=True,
                            forbid_external=True)
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except DefusedXmlException as exc:
        raise InputError(path, f"refused unsafe XML ({type(exc).__name__}: entities or external "
                               "references are not allowed)") from None
    except ET.ParseError as exc:
        raise InputError(path, f"not well-formed XML ({exc})") from None
    except (OSError, UnicodeDecodeError, ValueError, LookupError) as exc:
        # LookupError: an unknown encoding in the XML declaration (e.g. encoding="ATF-8")
        raise InputError(path, f"cannot read XML ({exc})") from None
    return tree.getroot()


def local_name(tag: str) -> str:
    """``'{ns}rectangle'`` -> ``'rectangle'``."""
    return tag.rsplit("}", 1)[-1] if "}" in tag else tag.split(":")[-1]


def namespace_of(tag: str) -> str:
    """``'{ns}rectangle'`` -> ``'ns'`` (empty string without a namespace)."""
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""
