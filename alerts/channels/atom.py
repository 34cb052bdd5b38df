"""Atom feeds of CAP 1.2 messages: one pure renderer and its reader (no file I/O here).

The form follows what CAP aggregators read in the real feeds: each ``entry`` carries the
Atom elements every feed has (``id``, ``title``, ``updated``, ``published``, ``author``,
``summary``), a ``link rel="alternate" type="application/cap+xml"`` to the CAP file (as the
National Weather Service index does), the ``cap:`` index elements that index feeds add
(``cap:event``, ``cap:effective``, ``cap:expires``, ``cap:status``, ``cap:msgType``,
``cap:urgency``/``severity``/``certainty``, ``cap:areaDesc``...), and the CAP message itself
inline in ``content`` (as the Pelmorex/NAAD and Amber feeds do). The ``cap:`` prefix is bound
to the CAP 1.2 namespace (the real index feeds predate 1.2 and use 1.1's).

Every field of :class:`FeedEntry` is written into its entry, so :func:`parse_atom_feed`
rebuilds the entries from the feed alone: the feed file is the durable state of the channel.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from lxml import etree

from alerts.cap import format_cap_datetime
from alerts.cap_parse import parse_cap, secure_parse
from alerts.cap_schema import CAP12_NS
from alerts.channels.base import AlertContent
from alerts.errors import AlertError
from alerts.model import Level, MsgType

ATOM_NS = "http://www.w3.org/2005/Atom"
XML_NS = "http://www.w3.org/XML/1998/namespace"
CAP_MEDIA_TYPE = "application/cap+xml"
LEVEL_SCHEME = "tocsin:level"
"""Scheme of the ``category`` holding Tocsin's level (the CAP parameter's own name)."""
HAZARD_CODE = "tocsin:hazard"
MAX_FEED_BYTES = 1 << 30
"""A feed embeds up to ``max_entries`` CAP messages, each up to 2 MB with its map."""

# Fixed namespace of the name-based (version 5) UUIDs used as Atom ids: ``urn:uuid`` is a
# registered URN form, and an id derived from the CAP sender and identifier never changes
# when the deployment's public URL does.
_ID_NAMESPACE = uuid.UUID("6f1c2a9e-3b7d-5e1a-9c4f-0d2b8e7a6c51")
_SLUG = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")
_DECLARATION = re.compile(rb"\s*(<\?xml[^>]*\?>)?\s*")
# How render_atom_feed writes each embedded CAP, so that its exact bytes can be cut out again.
_CONTENT_OPEN = f'<content type="{CAP_MEDIA_TYPE}">\n'.encode()
_CONTENT_CLOSE = b"\n    </content>"


class FeedFormatError(AlertError, ValueError):
    """A feed cannot be rendered or read back (unsafe name, altered CAP, foreign feed)."""


def is_safe_slug(name: str) -> bool:
    """True for a name usable as a file name and URL segment as it is.

    Letters, digits, ``-``, ``_`` and ``.``, at most 200 characters, no leading dot (so no
    ``..``, no hidden file), hence no path separator either.
    """
    return isinstance(name, str) and _SLUG.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One entry of a feed: one CAP message, with the fields aggregators index.

    Attributes:
        identifier: CAP identifier (also the CAP file name).
        event_id: Tocsin's event id (CAP ``incidents``): one entry per event.
        msg_type: Alert, Update or Cancel.
        level: Tocsin's level.
        sender: CAP sender.
        sent: CAP sent.
        expires: when the message expires; the entry is dropped after it.
        headline: CAP headline of the first ``info`` (the entry title).
        area_description: CAP ``areaDesc``.
        hazard_kind: Tocsin's hazard kind (``flood_depth``...).
        status: CAP status (Actual, Exercise, Test...).
        scope: CAP scope (Public, Restricted, Private).
        language: language of the first ``info``.
        event: CAP event.
        categories: CAP categories.
        urgency: CAP urgency.
        severity: CAP severity.
        certainty: CAP certainty.
        effective: CAP effective, or ``sent`` when the message has none (CAP's default).
        onset: CAP onset, if any.
        description: CAP description (the entry summary).
        sender_name: CAP senderName, if any (the entry author).
        cap_xml: the stored CAP bytes, embedded and linked byte for byte.
    """

    identifier: str
    event_id: str
    msg_type: MsgType
    level: Level
    sender: str
    sent: datetime
    expires: datetime
    headline: str
    area_description: str
    hazard_kind: str
    status: str
    scope: str
    language: str
    event: str
    categories: tuple[str, ...]
    urgency: str
    severity: str
    certainty: str
    effective: datetime
    onset: datetime | None
    description: str
    sender_name: str | None
    cap_xml: bytes = field(repr=False)

    @classmethod
    def from_alert(cls, alert: AlertContent) -> FeedEntry:
        """The entry of a stored alert; its CAP is validated (XSD and CAP rules) on the way.

        Raises:
            CapError: the CAP bytes are invalid.
            FeedFormatError: the CAP does not match the alert, or cannot be embedded as is.
        """
        event = parse_cap(alert.cap_xml)
        if (event.identifier, event.sender) != (alert.identifier, alert.sender):
            raise FeedFormatError(f"alert {alert.identifier} of {alert.sender} carries the CAP "
                                  f"of {event.identifier} of {event.sender}")
        info = event.infos[0]
        embeddable_root(alert.cap_xml)
        return cls(
            identifier=alert.identifier, event_id=alert.event_id, msg_type=alert.msg_type,
            level=alert.level, sender=alert.sender, sent=alert.sent, expires=alert.expires,
            headline=info.headline, area_description=alert.area_description,
            hazard_kind=alert.hazard_kind, status=event.status.value, scope=event.scope.value,
            language=info.language, event=info.event,
            categories=tuple(c.value for c in info.category), urgency=info.urgency.value,
            severity=info.severity.value, certainty=info.certainty.value,
            effective=info.effective or event.sent, onset=info.onset,
            description=info.description, sender_name=info.sender_name, cap_xml=alert.cap_xml,
        )


@dataclass(frozen=True, slots=True)
class AtomFeed:
    """A feed read back: its title, its ``updated`` and its entries in feed order."""

    title: str
    updated: datetime
    entries: tuple[FeedEntry, ...]


def entry_id(sender: str, identifier: str) -> str:
    """The Atom id of the entry of one CAP message: stable, derived from sender and id."""
    return f"urn:uuid:{uuid.uuid5(_ID_NAMESPACE, f'cap:{sender},{identifier}')}"


def feed_atom_id(feed_id: str, base_url: str | None) -> str:
    """The Atom id of a feed: its public URL when there is one, else a stable ``urn:uuid``."""
    if base_url:
        return f"{base_url.rstrip('/')}/{feed_id}.atom"
    return f"urn:uuid:{uuid.uuid5(_ID_NAMESPACE, f'feed:{feed_id}')}"


def cap_href(identifier: str, base_url: str | None) -> str:
    """Where the CAP file of ``identifier`` is served (relative to the feed without a URL)."""
    prefix = f"{base_url.rstrip('/')}/" if base_url else ""
    return f"{prefix}cap/{identifier}.xml"


def embeddable_root(cap_xml: bytes) -> tuple[etree._Element, bytes]:
    """The CAP root element and its bytes, when the element serializes to exactly the stored bytes.

    The stored message must be an optional XML declaration, the ``alert`` element and
    whitespace, and lxml must write the element back byte for byte: then the copy inside
    ``content`` is the stored message, not a re-encoding of it.

    Raises:
        FeedFormatError: anything else (comments, another encoding, entity references...).
    """
    try:
        root = secure_parse(cap_xml)
    except AlertError as exc:
        raise FeedFormatError(f"CAP cannot be embedded: {exc}") from exc
    written = _element_bytes(root)
    head = _DECLARATION.match(cap_xml)
    end = head.end() if head else 0
    if cap_xml[end:end + len(written)] != written or cap_xml[end + len(written):].strip():
        identifier = root.findtext(_c("identifier"))
        raise FeedFormatError(f"CAP {identifier} would not be embedded byte for byte "
                              "(comments, processing instructions, another encoding?)")
    return root, written


def render_atom_feed(feed_id: str, title: str, entries: Sequence[FeedEntry], *,
                     updated: datetime, base_url: str | None,
                     author_name: str = "Tocsin") -> bytes:
    """Render an Atom feed of CAP messages; the same arguments always give the same bytes.

    Args:
        feed_id: the feed's name (a safe slug): its file is ``{feed_id}.atom``.
        title: the feed title.
        entries: the entries, in the order they are written (newest first by convention).
        updated: the feed's ``updated`` (timezone-aware).
        base_url: public URL of the folder holding the feed, for links and ids; None writes
            links relative to the feed file.
        author_name: the feed author (entries without a CAP senderName inherit it).

    Returns:
        The UTF-8 feed document.

    Raises:
        FeedFormatError: unsafe feed id or CAP identifier, or a CAP that would not be
            embedded byte for byte.
    """
    if not is_safe_slug(feed_id):
        raise FeedFormatError(f"feed id {feed_id!r} is not a safe name")
    feed = etree.Element(_a("feed"), nsmap={None: ATOM_NS, "cap": CAP12_NS})
    _sub(feed, _a("id"), feed_atom_id(feed_id, base_url))
    _sub(feed, _a("title"), title)
    _sub(feed, _a("updated"), _atom_time(updated))
    _sub(_sub(feed, _a("author")), _a("name"), author_name)
    _sub(feed, _a("generator"), "Tocsin")
    _sub(feed, _a("link"), rel="self", type="application/atom+xml",
         href=f"{base_url.rstrip('/')}/{feed_id}.atom" if base_url else f"{feed_id}.atom")
    embedded = [_add_entry(feed, entry, base_url, f"@{i}@") for i, entry in enumerate(entries)]
    _indent(feed, 0)
    data = etree.tostring(feed, encoding="UTF-8", xml_declaration=True) + b"\n"
    # The stored CAP bytes are spliced in where the placeholder is, rather than the parsed
    # element appended: lxml would rewrite the element into the feed's ``cap:`` prefix.
    # The opening tag cannot be forged by text (text and attributes escape "<").
    for i, written in enumerate(embedded):
        marker = _CONTENT_OPEN.rstrip(b"\n") + f"@{i}@</content>".encode()
        if data.count(marker) != 1:
            raise FeedFormatError(f"feed {feed_id}: cannot place the CAP of entry {i}")
        data = data.replace(marker, _CONTENT_OPEN + written + _CONTENT_CLOSE)
    # Belt and braces: the document parses, has one CAP per entry, and the copies read back
    # from its bytes are the stored messages byte for byte.
    copies = parse_feed(data).findall(f"{_a('entry')}/{_a('content')}/{_c('alert')}")
    if len(copies) != len(embedded) or embedded_cap_bytes(data) != embedded:
        raise FeedFormatError(f"feed {feed_id}: an embedded CAP differs from the stored bytes")
    return data


def _add_entry(feed: etree._Element, entry: FeedEntry, base_url: str | None,
               placeholder: str) -> bytes:
    if not is_safe_slug(entry.identifier):
        raise FeedFormatError(f"CAP identifier {entry.identifier!r} is not a safe file name")
    written = embeddable_root(entry.cap_xml)[1]
    node = _sub(feed, _a("entry"))
    node.set(f"{{{XML_NS}}}lang", entry.language)
    _sub(node, _a("id"), entry_id(entry.sender, entry.identifier))
    # Tocsin's headlines are never empty; another sender's may be, and Atom needs a title.
    _sub(node, _a("title"), entry.headline or f"{entry.event} ({entry.msg_type.value})")
    _sub(node, _a("updated"), _atom_time(entry.sent))
    _sub(node, _a("published"), _atom_time(entry.sent))
    if entry.sender_name:
        _sub(_sub(node, _a("author")), _a("name"), entry.sender_name)
    _sub(node, _a("link"), rel="alternate", type=CAP_MEDIA_TYPE,
         href=cap_href(entry.identifier, base_url))
    _sub(node, _a("category"), scheme=LEVEL_SCHEME, term=entry.level.value,
         label=f"{entry.level.value.capitalize()} alert")
    if entry.description:
        _sub(node, _a("summary"), entry.description)
    for name, value in (("identifier", entry.identifier), ("sender", entry.sender),
                        ("sent", format_cap_datetime(entry.sent)), ("status", entry.status),
                        ("msgType", entry.msg_type.value), ("scope", entry.scope),
                        ("incidents", entry.event_id), ("event", entry.event)):
        _sub(node, _c(name), value)
    for category in entry.categories:
        _sub(node, _c("category"), category)
    for name, value in (("urgency", entry.urgency), ("severity", entry.severity),
                        ("certainty", entry.certainty),
                        ("effective", format_cap_datetime(entry.effective))):
        _sub(node, _c(name), value)
    if entry.onset is not None:
        _sub(node, _c("onset"), format_cap_datetime(entry.onset))
    _sub(node, _c("expires"), format_cap_datetime(entry.expires))
    _sub(node, _c("areaDesc"), entry.area_description)
    code = _sub(node, _c("eventCode"))
    _sub(code, _c("valueName"), HAZARD_CODE)
    _sub(code, _c("value"), entry.hazard_kind)
    # RFC 4287 4.1.3.3: a content type ending in "+xml" holds its document inline as the
    # single child element (not escaped, not base64), which is also how the real feeds
    # embed CAP. The link above points at the stored file itself, the reference copy.
    _sub(node, _a("content"), placeholder, type=CAP_MEDIA_TYPE)
    return written


def embedded_cap_bytes(data: bytes) -> list[bytes]:
    """The exact bytes of each CAP element embedded in a feed rendered here, in feed order.

    A parsed element cannot give them back (lxml writes a sub-element with every namespace
    declared above it), so they are cut out of the document between the markers
    :func:`render_atom_feed` writes.
    """
    copies, start = [], data.find(_CONTENT_OPEN)
    while start >= 0:
        start += len(_CONTENT_OPEN)
        end = data.find(_CONTENT_CLOSE, start)
        if end < 0:
            raise FeedFormatError("feed has an embedded CAP without its closing tag")
        copies.append(data[start:end])
        start = data.find(_CONTENT_OPEN, end)
    return copies


def parse_feed(data: bytes, *, max_bytes: int = MAX_FEED_BYTES) -> etree._Element:
    """Parse a feed document with the same hardening as CAP input (no DTD, no entities).

    Raises:
        FeedFormatError: too large, a DTD, not well-formed, or not an Atom feed.
    """
    if len(data) > max_bytes:
        raise FeedFormatError(f"feed is {len(data):,} bytes, over the {max_bytes:,} limit")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise FeedFormatError("feed contains a DTD or entity declaration")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=False, dtd_validation=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise FeedFormatError(f"feed is not well-formed XML: {exc}") from exc
    if root.getroottree().docinfo.internalDTD is not None or root.tag != _a("feed"):
        raise FeedFormatError(f"root element is {root.tag!r}, not an Atom feed")
    return root


def parse_atom_feed(data: bytes, load_cap: Callable[[str], bytes]) -> AtomFeed:
    """Read back a feed written by :func:`render_atom_feed`.

    Args:
        data: the feed document.
        load_cap: returns the stored CAP bytes of an identifier; every embedded copy is
            checked against them byte for byte.

    Raises:
        FeedFormatError: not such a feed, or an embedded CAP differs from the stored one.
    """
    feed = parse_feed(data)
    nodes, copies = feed.findall(_a("entry")), embedded_cap_bytes(data)
    if len(nodes) != len(copies):
        raise FeedFormatError(f"feed has {len(nodes)} entries but {len(copies)} embedded CAP")
    try:
        entries = tuple(_read_entry(node, copy, load_cap)
                        for node, copy in zip(nodes, copies, strict=True))
        return AtomFeed(title=_text(feed, _a("title")),
                        updated=datetime.fromisoformat(_text(feed, _a("updated"))),
                        entries=entries)
    except FeedFormatError:
        raise
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise FeedFormatError(f"feed entry cannot be read back: {exc!r}") from exc


def _read_entry(node: etree._Element, embedded: bytes,
                load_cap: Callable[[str], bytes]) -> FeedEntry:
    identifier = _cap(node, "identifier")
    cap_xml = load_cap(identifier)
    if embedded != embeddable_root(cap_xml)[1]:
        raise FeedFormatError(f"entry {identifier}: embedded CAP differs from the stored file")
    level = node.find(f"{_a('category')}[@scheme='{LEVEL_SCHEME}']")
    onset = node.findtext(_c("onset"))
    return FeedEntry(
        identifier=identifier, event_id=_cap(node, "incidents"),
        msg_type=MsgType(_cap(node, "msgType")), level=Level(level.get("term")),
        sender=_cap(node, "sender"), sent=datetime.fromisoformat(_cap(node, "sent")),
        expires=datetime.fromisoformat(_cap(node, "expires")),
        headline=_text(node, _a("title")),
        area_description=_cap(node, "areaDesc"),
        hazard_kind=_text(node, f"{_c('eventCode')}/{_c('value')}"),
        status=_cap(node, "status"), scope=_cap(node, "scope"),
        language=node.get(f"{{{XML_NS}}}lang"), event=_cap(node, "event"),
        categories=tuple(c.text or "" for c in node.iterfind(_c("category"))),
        urgency=_cap(node, "urgency"), severity=_cap(node, "severity"),
        certainty=_cap(node, "certainty"),
        effective=datetime.fromisoformat(_cap(node, "effective")),
        onset=None if onset is None else datetime.fromisoformat(onset),
        description=node.findtext(_a("summary")) or "",
        sender_name=node.findtext(f"{_a('author')}/{_a('name')}"), cap_xml=cap_xml,
    )


# --- small helpers ------------------------------------------------------------------------


def _a(name: str) -> str:
    return f"{{{ATOM_NS}}}{name}"


def _c(name: str) -> str:
    return f"{{{CAP12_NS}}}{name}"


def _text(node: etree._Element, path: str) -> str:
    found = node.find(path)
    if found is None:
        raise FeedFormatError(f"element {path} is missing")
    return found.text or ""


def _cap(node: etree._Element, name: str) -> str:
    return _text(node, _c(name))


def _sub(parent: etree._Element, tag: str, text: str | None = None,
         **attributes: str) -> etree._Element:
    child = etree.SubElement(parent, tag, attributes)
    child.text = text
    return child


def _element_bytes(element: etree._Element) -> bytes:
    # with_tail=False: the whitespace after the element belongs to the document around it.
    return etree.tostring(element, encoding="UTF-8", with_tail=False)


def _atom_time(value: datetime) -> str:
    if value.utcoffset() is None:
        raise FeedFormatError(f"{value.isoformat()} has no time zone")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _indent(element: etree._Element, depth: int) -> None:
    """Indent the Atom elements two spaces a level (the CAP is spliced in afterwards)."""
    children = list(element)
    if not children:
        return
    inner = "\n" + "  " * (depth + 1)
    element.text = inner
    for child in children:
        child.tail = inner
        _indent(child, depth + 1)
    children[-1].tail = "\n" + "  " * depth
