"""CAP 1.2 rendering: an :class:`AlertEvent` snapshot in, the exact bytes to send out.

A pure function over the immutable snapshot (never live tables), so what was sent can be
reproduced byte for byte. Every render is validated *as produced* against the official
schema and the rules the schema cannot check (Tocsin's profile, :mod:`alerts.cap_rules`):
a message that a receiver would reject is never emitted, :func:`render_cap` raises
instead.

Forms written: date-times ``YYYY-MM-DDThh:mm:ss+hh:mm`` (UTC as ``-00:00``, as the spec
asks; fractions of a second are dropped); references as space-separated
``sender,identifier,sent``; polygons as space-separated ``lat,lon`` pairs; circles as
``lat,lon radius_km``; resources with SHA-1 digest and base64 ``derefUri`` content.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Collection, Iterable
from datetime import datetime, timedelta

from lxml import etree

from alerts.cap_parse import validate_cap
from alerts.cap_schema import CAP12_NS
from alerts.errors import CapError
from alerts.model import AlertEvent, Area, ExposureSummary, Info, Priority, Resource
from geo.privacy import is_small_count

__all__ = ["exposure_parameters", "format_cap_datetime", "map_resource", "render_cap",
           "validate_cap"]

_XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
PARAMETER_PREFIX = "tocsin:"
"""Prefix of Tocsin's own ``parameter`` names, so receivers can tell them from others."""


def format_cap_datetime(value: datetime, *, field: str = "date-time") -> str:
    """Write a timezone-aware datetime in CAP form: ``2024-05-01T12:00:00+02:00``.

    Fractions of a second are dropped (CAP has none); a zero offset is written ``-00:00``
    as the CAP 1.2 data dictionary asks for UTC.

    Args:
        value: an aware datetime.
        field: the CAP field, for the error message.

    Returns:
        The CAP date-time string.

    Raises:
        CapError: naive datetime, or an offset with seconds (not expressible in CAP).
    """
    offset = value.utcoffset()
    if offset is None:
        raise CapError(f"{field} {value.isoformat()} has no time zone: CAP date-times need "
                       f"an explicit offset")
    if offset % timedelta(minutes=1):
        raise CapError(f"{field} offset {offset} has seconds; CAP offsets are hh:mm")
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes <= 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{value.replace(microsecond=0, tzinfo=None).isoformat()}{sign}{hours:02d}:{mins:02d}"


def _number(value: float) -> str:
    """Shortest exact decimal form of a coordinate or radius, never in exponent form."""
    text = repr(float(value))
    if "e" in text or "E" in text:
        text = f"{float(value):.17f}".rstrip("0").rstrip(".")
    return text


def _sub(parent: etree._Element, name: str, text: str | None) -> etree._Element | None:
    if text is None:
        return None
    child = etree.SubElement(parent, f"{{{CAP12_NS}}}{name}")
    child.text = text
    return child


def _pairs(parent: etree._Element, name: str, pairs: Iterable[tuple[str, str]]) -> None:
    for value_name, value in pairs:
        item = etree.SubElement(parent, f"{{{CAP12_NS}}}{name}")
        _sub(item, "valueName", value_name)
        _sub(item, "value", value)


def _add_resource(info: etree._Element, resource: Resource) -> None:
    element = etree.SubElement(info, f"{{{CAP12_NS}}}resource")
    _sub(element, "resourceDesc", resource.description)
    _sub(element, "mimeType", resource.mime_type)
    size = resource.size_bytes
    digest = resource.digest_sha1
    if resource.content is not None:
        # Filled in from the content when absent; a given value that disagrees with the
        # content is caught by the validation of the output (Tocsin profile).
        size = len(resource.content) if size is None else size
        digest = digest or hashlib.sha1(resource.content).hexdigest()
    _sub(element, "size", None if size is None else str(size))
    _sub(element, "uri", resource.uri)
    if resource.content is not None:
        _sub(element, "derefUri", base64.b64encode(resource.content).decode("ascii"))
    _sub(element, "digest", digest)


def _add_area(info: etree._Element, area: Area) -> None:
    element = etree.SubElement(info, f"{{{CAP12_NS}}}area")
    _sub(element, "areaDesc", area.description)
    for ring in area.polygons:
        _sub(element, "polygon", " ".join(f"{_number(lat)},{_number(lon)}" for lat, lon in ring))
    for (lat, lon), radius_km in area.circles:
        _sub(element, "circle", f"{_number(lat)},{_number(lon)} {_number(radius_km)}")
    _pairs(element, "geocode", area.geocodes)


def _add_info(alert: etree._Element, info: Info, where: str) -> None:
    element = etree.SubElement(alert, f"{{{CAP12_NS}}}info")
    _sub(element, "language", info.language)
    for category in info.category:
        _sub(element, "category", category.value)
    _sub(element, "event", info.event)
    for response in info.response_types:
        _sub(element, "responseType", response.value)
    _sub(element, "urgency", info.urgency.value)
    _sub(element, "severity", info.severity.value)
    _sub(element, "certainty", info.certainty.value)
    _pairs(element, "eventCode", info.event_codes)
    for name in ("effective", "onset", "expires"):
        value = getattr(info, name)
        if value is not None:
            _sub(element, name, format_cap_datetime(value, field=f"{where}/{name}"))
        elif name == "expires":
            raise CapError(f"{where} ({info.language}) has no expires: every message Tocsin "
                           f"sends says when it ends")
    _sub(element, "senderName", info.sender_name)
    _sub(element, "headline", info.headline or None)
    _sub(element, "description", info.description or None)
    _sub(element, "instruction", info.instruction or None)
    _sub(element, "web", info.web)
    _sub(element, "contact", info.contact)
    _pairs(element, "parameter", info.parameters)
    for resource in info.resources:
        _add_resource(element, resource)
    for area in info.areas:
        _add_area(element, area)


def _build(event: AlertEvent) -> etree._Element:
    alert = etree.Element(f"{{{CAP12_NS}}}alert", nsmap={None: CAP12_NS})
    _sub(alert, "identifier", event.identifier)
    _sub(alert, "sender", event.sender)
    _sub(alert, "sent", format_cap_datetime(event.sent, field="sent"))
    _sub(alert, "status", event.status.value)
    _sub(alert, "msgType", event.msg_type.value)
    _sub(alert, "source", event.source or None)
    _sub(alert, "scope", event.scope.value)
    _sub(alert, "restriction", event.restriction)
    _sub(alert, "addresses", event.addresses)
    for code in event.codes:
        _sub(alert, "code", code)
    _sub(alert, "note", event.note)
    if event.references:
        _sub(alert, "references", " ".join(
            f"{ref.sender},{ref.identifier},"
            f"{format_cap_datetime(ref.sent, field='references sent')}"
            for ref in event.references))
    _sub(alert, "incidents", event.incidents)
    for i, info in enumerate(event.infos, start=1):
        _add_info(alert, info, f"info[{i}]")
    return alert


def render_cap(event: AlertEvent) -> bytes:
    """Render one CAP 1.2 message, validated as produced.

    Args:
        event: the immutable snapshot of the message.

    Returns:
        UTF-8 bytes with an XML declaration, elements in the schema's order.

    Raises:
        CapError: the snapshot cannot be written (naive datetime, missing ``expires``,
            characters XML cannot carry) or the output breaks the schema or a rule; the
            message lists every problem and nothing is returned.
    """
    try:
        root = _build(event)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, CapError):
            raise
        raise CapError(f"CAP message {event.identifier!r} cannot be written: {exc}") from exc
    data = _XML_DECLARATION + etree.tostring(root, encoding="UTF-8", pretty_print=True)
    problems = validate_cap(data, profile="tocsin")
    if problems:
        raise CapError(f"CAP message {event.identifier!r} would be invalid, not emitted: "
                       + "; ".join(problems))
    return data


# --- what Tocsin puts in a message ------------------------------------------------------


def map_resource(png: bytes, *, description: str = "Map of the affected area",
                 uri: str | None = None) -> Resource:
    """The map of an alert as a complete CAP resource (PNG content, size, SHA-1).

    Args:
        png: the PNG image bytes.
        description: ``resourceDesc``, plain words.
        uri: where the same image can also be fetched, if anywhere.

    Returns:
        A :class:`Resource` with ``mimeType`` image/png, size, digest and content.

    Raises:
        CapError: the bytes are not a PNG image.
    """
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise CapError("the map resource must be a PNG image (it lacks the PNG signature)")
    return Resource(description=description, mime_type="image/png", size_bytes=len(png),
                    uri=uri, digest_sha1=hashlib.sha1(png).hexdigest(), content=png)


def _people(value: float) -> str:
    return str(round(value))


def exposure_parameters(priority: Priority, exposure: ExposureSummary, *,
                        private_groups: Collection[str] = (), min_public_count: int = 5,
                        ) -> tuple[tuple[str, str], ...]:
    """CAP ``parameter`` pairs carrying the level and the exposure figures.

    People are rounded to whole persons, areas to 0.1 km²; counts of ``private_groups``
    (known from individual registries) between 1 and ``min_public_count - 1`` are written
    ``"<N"``. Names start with
    :data:`PARAMETER_PREFIX`. Reasons are repeated ``tocsin:reason`` parameters, most
    important first, so a receiver can show why without reading the free text.

    Args:
        priority: the decided level, score and reasons.
        exposure: the figures (event total or inside one subscriber's area).
        private_groups: groups known from individual registries.
        min_public_count: counts of those groups below this are written ``"<N"``.

    Returns:
        ``(valueName, value)`` pairs for :attr:`alerts.model.Info.parameters`.
    """
    p = PARAMETER_PREFIX
    private = set(private_groups)
    if "disability" in private:
        private.add("cut_off_disability")

    def count(field: str) -> str:
        # Registry groups: a small count could single people out; publish "<N" instead.
        value = float(getattr(exposure, field))
        if field in private and is_small_count(value, min_public_count):
            return f"<{min_public_count}"
        return _people(value)

    pairs = [
        (f"{p}level", priority.level.value),
        (f"{p}score", f"{priority.score:.1f}"),
        (f"{p}rulesVersion", priority.rules_version),
        (f"{p}peopleExposed", _people(exposure.population)),
        (f"{p}peopleWithDisabilitiesExposed", count("disability")),
        (f"{p}olderPeopleExposed", count("older")),
        (f"{p}electricityDependentPeopleExposed", count("electricity_dependent")),
        (f"{p}peopleCutOffFromCare", _people(exposure.cut_off_population)),
        (f"{p}peopleWithDisabilitiesCutOffFromCare", count("cut_off_disability")),
        (f"{p}facilitiesHit", str(len(exposure.facilities_hit))),
        (f"{p}areaKm2", f"{exposure.area_km2:.1f}"),
    ]
    pairs += [(f"{p}class:{c.label}:peopleExposed", _people(c.population))
              for c in exposure.by_class]
    pairs += [(f"{p}reason", reason) for reason in priority.reasons]
    return tuple(pairs)
