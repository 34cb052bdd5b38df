"""A hardened CAP 1.2 parser: untrusted bytes in, a validated :class:`AlertEvent` out.

CAP arrives from outside (other agencies' feeds), so the parser assumes hostile input:

- a size limit checked before parsing;
- no DTD at all: a ``<!DOCTYPE`` or ``<!ENTITY`` declaration is refused outright, before
  and after parsing (entities are never expanded, nothing is fetched: the lxml parser runs
  with ``resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False``);
- only the CAP 1.2 namespace: CAP 1.1 and anything else is refused by name;
- the official schema and the rules the schema cannot check (:mod:`alerts.cap_rules`).

XML signatures (``ds:Signature``) are allowed by the schema and ignored here.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime

from lxml import etree

from alerts.cap_rules import Profile, check_rules
from alerts.cap_schema import CAP12_NS, schema_problems
from alerts.errors import CapError
from alerts.model import (
    AlertEvent,
    Area,
    Category,
    Certainty,
    Info,
    MsgType,
    Reference,
    Resource,
    ResponseType,
    Scope,
    Severity,
    Status,
    Urgency,
)

MAX_CAP_BYTES = 2_000_000
"""Default size limit: the largest real IPAWS message seen (embedded map) is ~0.5 MB."""

CAP11_NS = "urn:oasis:names:tc:emergency:cap:1.1"
_DTD_MARKERS = (b"<!DOCTYPE", b"<!ENTITY")
_DEFAULT_LANGUAGE = "en-US"


def _hardened_parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           huge_tree=False, dtd_validation=False, remove_comments=True,
                           remove_pis=True)


def secure_parse(data: bytes, *, max_bytes: int = MAX_CAP_BYTES) -> etree._Element:
    """Parse untrusted bytes into the ``alert`` element of a CAP 1.2 message.

    Args:
        data: the raw message (any encoding its XML declaration names).
        max_bytes: refuse anything larger.

    Returns:
        The root ``alert`` element (not yet schema-validated).

    Raises:
        CapError: too large, has a DTD or entity declaration, is not well-formed XML, or
            is not in the CAP 1.2 namespace (the message says which).
    """
    if not isinstance(data, bytes | bytearray):
        raise CapError(f"CAP input must be bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise CapError(f"CAP message is {len(data):,} bytes, over the {max_bytes:,}-byte limit")
    for marker in _DTD_MARKERS:
        if marker in data:
            raise CapError(f"CAP message contains a {marker.decode()} declaration: DTDs and "
                           f"entities are refused (no entity is resolved, nothing is fetched)")
    try:
        root = etree.fromstring(bytes(data), _hardened_parser())
    except etree.XMLSyntaxError as exc:
        raise CapError(f"CAP message is not well-formed XML: {exc}") from exc
    # A UTF-16 document hides its markers from the byte scan above: check what lxml saw.
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise CapError("CAP message has a DOCTYPE declaration: DTDs and entities are refused")
    namespace = etree.QName(root).namespace
    if namespace == CAP11_NS:
        raise CapError(f"CAP 1.1 namespace {CAP11_NS}; only CAP 1.2 ({CAP12_NS}) is accepted")
    if namespace != CAP12_NS or etree.QName(root).localname != "alert":
        raise CapError(f"root element is {root.tag!r}; expected 'alert' in the CAP 1.2 "
                       f"namespace {CAP12_NS}")
    return root


def validate_cap(data: bytes, *, profile: Profile = "core",
                 max_bytes: int = MAX_CAP_BYTES) -> list[str]:
    """List every reason a CAP message would be rejected (empty when it is valid).

    Args:
        data: the message bytes, exactly as sent or received.
        profile: rule level of :func:`alerts.cap_rules.check_rules` (``core``, ``tocsin``,
            ``ipaws``).
        max_bytes: size limit.

    Returns:
        Problems: hardening refusals, schema errors, then rule breaks, one line each.
    """
    try:
        root = secure_parse(data, max_bytes=max_bytes)
    except CapError as exc:
        return [str(exc)]
    problems = schema_problems(root)
    return problems + [f"rule: {problem}" for problem in check_rules(root, profile=profile)]


def parse_cap(data: bytes, *, max_bytes: int = MAX_CAP_BYTES,
              profile: Profile = "core") -> AlertEvent:
    """Parse, validate and map an untrusted CAP 1.2 message to an :class:`AlertEvent`.

    Args:
        data: the message bytes.
        max_bytes: size limit, checked before parsing.
        profile: rule level the message must keep (``core`` for outside messages).

    Returns:
        The message as an immutable snapshot. An ``info`` without ``expires`` (CAP allows
        it) gets ``expires=None``; a missing ``language`` is CAP's default ``en-US``;
        ``altitude``, ``ceiling`` and ``audience`` are not kept (the model has no field).

    Raises:
        CapError: refused by the hardening, the schema or the rules; the message lists
            every problem.
    """
    root = secure_parse(data, max_bytes=max_bytes)
    problems = schema_problems(root)
    problems += [f"rule: {problem}" for problem in check_rules(root, profile=profile)]
    if problems:
        raise CapError("invalid CAP 1.2 message: " + "; ".join(problems))
    return _to_event(root)


# --- mapping a validated tree to the model ----------------------------------------------


def _q(name: str) -> str:
    return f"{{{CAP12_NS}}}{name}"


def _token(parent: etree._Element, name: str) -> str | None:
    child = parent.find(_q(name))
    if child is None or not (child.text or "").strip():
        return None
    return child.text.strip()


def _required(parent: etree._Element, name: str) -> str:
    value = _token(parent, name)
    if value is None:  # the schema requires it; kept explicit for a clear error anyway
        raise CapError(f"CAP element {name} is missing or empty")
    return value


def _free_text(parent: etree._Element, name: str) -> str | None:
    child = parent.find(_q(name))
    return None if child is None else (child.text or "")


def _all(parent: etree._Element, name: str) -> tuple[str, ...]:
    return tuple((child.text or "").strip() for child in parent.iterfind(_q(name)))


def _pairs(parent: etree._Element, name: str) -> tuple[tuple[str, str], ...]:
    return tuple(((_token(item, "valueName") or ""), (_free_text(item, "value") or "").strip())
                 for item in parent.iterfind(_q(name)))


def parse_datetime(text: str | None) -> datetime | None:
    """A CAP date-time string as an aware datetime (``-00:00`` is UTC); None stays None."""
    return None if text is None else datetime.fromisoformat(text)


def _to_event(root: etree._Element) -> AlertEvent:
    sent = datetime.fromisoformat(_required(root, "sent"))
    return AlertEvent(
        identifier=_token(root, "identifier") or "",
        sender=_token(root, "sender") or "",
        sent=sent,
        status=Status(_required(root, "status")),
        msg_type=MsgType(_required(root, "msgType")),
        scope=Scope(_required(root, "scope")),
        infos=tuple(_to_info(info) for info in root.iterfind(_q("info"))),
        references=_to_references(_token(root, "references")),
        restriction=_free_text(root, "restriction"),
        addresses=_free_text(root, "addresses"),
        codes=_all(root, "code"),
        note=_free_text(root, "note"),
        incidents=_free_text(root, "incidents"),
        source=_free_text(root, "source") or "",
    )


def _to_references(text: str | None) -> tuple[Reference, ...]:
    if not text:
        return ()
    references = []
    for triple in text.split():
        sender, identifier, sent = triple.split(",")
        references.append(Reference(sender, identifier, datetime.fromisoformat(sent)))
    return tuple(references)


def _to_info(info: etree._Element) -> Info:
    return Info(
        language=_token(info, "language") or _DEFAULT_LANGUAGE,
        category=tuple(Category(value) for value in _all(info, "category")),
        event=_free_text(info, "event") or "",
        urgency=Urgency(_required(info, "urgency")),
        severity=Severity(_required(info, "severity")),
        certainty=Certainty(_required(info, "certainty")),
        headline=_free_text(info, "headline") or "",
        description=_free_text(info, "description") or "",
        instruction=_free_text(info, "instruction") or "",
        # CAP allows an info without expires; Tocsin's own messages always carry one.
        expires=parse_datetime(_token(info, "expires")),
        response_types=tuple(ResponseType(value) for value in _all(info, "responseType")),
        sender_name=_free_text(info, "senderName"),
        effective=parse_datetime(_token(info, "effective")),
        onset=parse_datetime(_token(info, "onset")),
        web=_token(info, "web"),
        contact=_free_text(info, "contact"),
        event_codes=_pairs(info, "eventCode"),
        parameters=_pairs(info, "parameter"),
        resources=tuple(_to_resource(item) for item in info.iterfind(_q("resource"))),
        areas=tuple(_to_area(item) for item in info.iterfind(_q("area"))),
    )


def _to_resource(resource: etree._Element) -> Resource:
    deref = _token(resource, "derefUri")
    size = _token(resource, "size")
    return Resource(
        description=_free_text(resource, "resourceDesc") or "",
        mime_type=_token(resource, "mimeType") or "",
        size_bytes=None if size is None else int(size),
        uri=_token(resource, "uri"),
        digest_sha1=_token(resource, "digest"),
        content=None if deref is None else base64.b64decode("".join(deref.split())),
    )


def _floats(text: str) -> list[float]:
    return [float(part) for part in re.split(r"[,\s]+", text.strip()) if part]


def _to_area(area: etree._Element) -> Area:
    polygons = []
    for polygon in area.iterfind(_q("polygon")):
        values = _floats(polygon.text or "")
        polygons.append(tuple(zip(values[0::2], values[1::2], strict=True)))
    circles = []
    for circle in area.iterfind(_q("circle")):
        lat, lon, radius_km = _floats(circle.text or "")
        circles.append(((lat, lon), radius_km))
    return Area(
        description=_free_text(area, "areaDesc") or "",
        polygons=tuple(polygons),
        circles=tuple(circles),
        geocodes=_pairs(area, "geocode"),
    )
