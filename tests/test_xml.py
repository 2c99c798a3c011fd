"""Untrusted XML: entities and external references are refused before anything is read."""

from __future__ import annotations

import pytest

from immunoprofile._xml import local_name, parse_xml
from immunoprofile.errors import InputError

XXE = """<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<gating:Gating-ML xmlns:gating="http://www.isac-net.org/std/Gating-ML/v2.0/gating">&xxe;</gating:Gating-ML>
"""

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Workspace>&lol3;</Workspace>
"""


@pytest.mark.parametrize("payload", [XXE, BILLION_LAUGHS], ids=["xxe", "billion-laughs"])
def test_entity_payloads_are_refused(tmp_path, payload):
    path = tmp_path / "evil.xml"
    path.write_text(payload)
    with pytest.raises(InputError) as info:
        parse_xml(path)
    assert str(path) in str(info.value) and "unsafe XML" in str(info.value)
    assert "root:" not in str(info.value)  # /etc/passwd content never read


def test_malformed_and_missing(tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text("<a><b></a>")
    with pytest.raises(InputError, match="not well-formed"):
        parse_xml(bad)
    with pytest.raises(InputError, match="file not found"):
        parse_xml(tmp_path / "absent.xml")


def test_plain_xml_parses_and_local_name():
    assert local_name("{http://x}rectangle") == "rectangle"
    assert local_name("gating:Polygon") == "Polygon"
