"""The CAP 1.2 schema comes from a dependency and is the official one, element for element."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from alerts.cap_schema import CAP12_NS, load_schema, schema_bytes, schema_problems

XS = "{http://www.w3.org/2001/XMLSchema}"


def _declarations(root: etree._Element) -> list[tuple[str, tuple[tuple[str, str], ...], str]]:
    """Every schema element in document order: tag, attributes (name, type, occurs...), text."""
    return [(el.tag, tuple(sorted(el.attrib.items())), (el.text or "").strip())
            for el in root.iter() if isinstance(el.tag, str)]


def test_the_shipped_schema_equals_the_official_xsd_element_for_element(
        real_data: Path) -> None:
    shipped = etree.fromstring(schema_bytes())
    official = etree.parse(str(real_data / "cap" / "schema" / "CAP-v1.2.xsd")).getroot()
    shipped_decls, official_decls = _declarations(shipped), _declarations(official)
    assert len(shipped_decls) == len(official_decls)
    for ours, theirs in zip(shipped_decls, official_decls, strict=True):
        assert ours == theirs
    # The comparison sees the element declarations themselves, in order.
    names = [dict(attrs).get("name") for tag, attrs, _ in shipped_decls if tag == XS + "element"]
    assert names[:6] == ["alert", "identifier", "sender", "sent", "status", "msgType"]
    assert "polygon" in names and "circle" in names and "derefUri" in names


def test_the_schema_is_compiled_once_and_targets_cap_1_2() -> None:
    assert load_schema() is load_schema()
    assert etree.fromstring(schema_bytes()).get("targetNamespace") == CAP12_NS


def _alert(body: str) -> etree._Element:
    return etree.fromstring(f'<alert xmlns="{CAP12_NS}">{body}</alert>'.encode())


MINIMAL = ("<identifier>a1</identifier><sender>s@example.org</sender>"
           "<sent>2024-05-01T12:00:00-00:00</sent><status>Actual</status>"
           "<msgType>Alert</msgType><scope>Public</scope>")


def test_a_minimal_message_is_schema_valid() -> None:
    assert schema_problems(_alert(MINIMAL)) == []


@pytest.mark.parametrize(("body", "expected"), [
    (MINIMAL.replace("<scope>Public</scope>", ""), "scope"),
    (MINIMAL.replace("Actual", "Real"), "status"),
    (MINIMAL.replace("12:00:00-00:00", "12:00:00Z"), "sent"),
    (MINIMAL.replace("12:00:00-00:00", "12:00:00.5-00:00"), "sent"),
])
def test_schema_errors_name_the_element_at_fault(body: str, expected: str) -> None:
    problems = schema_problems(_alert(body))
    assert problems and expected in problems[0] and problems[0].startswith("schema: line")
