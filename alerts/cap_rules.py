"""CAP 1.2 rules that the XSD cannot check, as plain functions over a parsed message.

Passing the schema is necessary, not sufficient. The rules are summarised in the outside
data set's ``cap/RULES_NOT_IN_XSD.md`` (from the CAP 1.2 data dictionary and the IPAWS
profile v1.0). Three levels:

- ``core`` (always): what CAP 1.2 itself requires: identifier and sender characters,
  date-time form, restriction/addresses for Restricted/Private scope, references on
  Update/Cancel/Ack/Error, polygon and circle form, ceiling only with altitude, resource
  digest form and base64 content.
- ``tocsin``: core plus Tocsin's own rules for what it emits: ``expires`` in every
  ``info``, one ``info`` per language, a resource's ``digest`` and ``size`` matching its
  embedded content (real IPAWS messages describe the original file instead).
- ``ipaws``: core plus the errors of the US IPAWS profile v1.0 (its recommendations are
  not errors and are not reported).

Every problem is one line that names where it is (``info[1]/area[2]/polygon[1]``) and what
was expected, so a person can fix the message from the line alone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from datetime import datetime
from typing import Literal

from lxml import etree
from shapely import LinearRing

from alerts.cap_schema import CAP12_NS

Profile = Literal["core", "tocsin", "ipaws"]
PROFILES: tuple[str, ...] = ("core", "tocsin", "ipaws")

DATETIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[-+]\d\d:\d\d$")
"""CAP date-time: explicit offset, no fraction, no ``Z`` (the XSD pattern also allows ``,``)."""

_FORBIDDEN_ID_CHARS = re.compile(r"[\s,<&]")
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_PAIR_RE = re.compile(rf"^({_NUMBER}),({_NUMBER})$")
_CIRCLE_RE = re.compile(rf"^({_NUMBER}),({_NUMBER})\s+({_NUMBER})$")
_MIN_RING_PAIRS = 4
_NEEDS_REFERENCES = ("Update", "Cancel", "Ack", "Error")
_DEFAULT_LANGUAGE = "en-US"
_SAME_EVENT_RE = re.compile(r"^[A-Z]{3}$")


def _q(name: str) -> str:
    return f"{{{CAP12_NS}}}{name}"


def _text(parent: etree._Element, name: str) -> str | None:
    """Stripped text of the first child ``name``; None when absent, '' when empty."""
    child = parent.find(_q(name))
    if child is None:
        return None
    return (child.text or "").strip()


def check_rules(root: etree._Element, *, profile: Profile = "core") -> list[str]:
    """Check a parsed CAP 1.2 message against the rules the schema cannot express.

    Args:
        root: the ``alert`` element (already schema-valid; rules on a schema-invalid
            message are best effort).
        profile: ``"core"``, ``"tocsin"`` (core plus Tocsin's own rules) or ``"ipaws"``
            (core plus the IPAWS profile v1.0 errors).

    Returns:
        One line per problem; empty when the message keeps every rule.

    Raises:
        ValueError: unknown profile name.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown CAP rule profile {profile!r}; expected one of {PROFILES}")
    checks: list[Callable[[etree._Element], list[str]]] = [
        _check_ids, _check_datetimes, _check_scope, _check_references, _check_infos,
    ]
    if profile == "tocsin":
        checks += [_check_expires_everywhere, _check_one_info_per_language,
                   _check_resource_digests]
    elif profile == "ipaws":
        checks += [_check_expires_everywhere, _check_ipaws]
    problems: list[str] = []
    for check in checks:
        problems += check(root)
    return problems


# --- core --------------------------------------------------------------------------------


def id_problem(field: str, value: str) -> str | None:
    """Why ``value`` cannot be a CAP ``identifier``/``sender`` (None when it can)."""
    if not value:
        return f"{field} is empty"
    bad = sorted(set(_FORBIDDEN_ID_CHARS.findall(value)))
    if bad:
        return (f"{field} {value!r} contains {bad}: spaces, commas, '<' and '&' are not "
                f"allowed")
    return None


def _check_ids(root: etree._Element) -> list[str]:
    problems = []
    for field in ("identifier", "sender"):
        value = _text(root, field)
        if value is not None and (problem := id_problem(field, value)):
            problems.append(problem)
    return problems


def datetime_problem(where: str, value: str) -> str | None:
    """Why ``value`` is not a CAP date-time (None when it is)."""
    if not DATETIME_RE.match(value):
        return (f"{where} {value!r} is not a CAP date-time: expected YYYY-MM-DDThh:mm:ss"
                f"+hh:mm (explicit offset, no fractions, no Z; UTC is -00:00)")
    try:
        datetime.fromisoformat(value)
    except ValueError as exc:
        return f"{where} {value!r} is not a real date and time ({exc})"
    return None


def _check_datetimes(root: etree._Element) -> list[str]:
    places = [("sent", root)]
    for i, info in enumerate(root.iterfind(_q("info")), start=1):
        places += [(f"info[{i}]/{name}", info) for name in ("effective", "onset", "expires")]
    problems = []
    for where, parent in places:
        value = _text(parent, where.rsplit("/", 1)[-1])
        if value is not None and (problem := datetime_problem(where, value)):
            problems.append(problem)
    return problems


def _check_scope(root: etree._Element) -> list[str]:
    scope = _text(root, "scope")
    if scope == "Restricted" and not _text(root, "restriction"):
        return ["scope is Restricted but restriction is missing or empty: say who may "
                "receive the message"]
    if scope == "Private" and not _text(root, "addresses"):
        return ["scope is Private but addresses is missing or empty: list the recipients"]
    return []


def _check_references(root: etree._Element) -> list[str]:
    msg_type = _text(root, "msgType")
    references = _text(root, "references")
    if not references:
        if msg_type in _NEEDS_REFERENCES:
            return [f"msgType is {msg_type} but references is missing or empty: it must name "
                    f"the earlier message(s) as sender,identifier,sent"]
        return []
    problems = []
    own = (_text(root, "sender"), _text(root, "identifier"))
    for n, triple in enumerate(references.split(), start=1):
        parts = triple.split(",")
        if len(parts) != 3 or not all(parts):
            problems.append(f"references entry {n} {triple!r} is not sender,identifier,sent")
            continue
        if problem := datetime_problem(f"references entry {n} sent", parts[2]):
            problems.append(problem)
        if (parts[0], parts[1]) == own:
            problems.append(f"references entry {n} names this message itself")
    return problems


def _check_infos(root: etree._Element) -> list[str]:
    problems = []
    for i, info in enumerate(root.iterfind(_q("info")), start=1):
        for r, resource in enumerate(info.iterfind(_q("resource")), start=1):
            problems += _check_resource(f"info[{i}]/resource[{r}]", resource)
        for a, area in enumerate(info.iterfind(_q("area")), start=1):
            problems += _check_area(f"info[{i}]/area[{a}]", area)
    return problems


def _deref_content(resource: etree._Element) -> bytes | None:
    """The decoded derefUri content; None when absent; raises ValueError when not base64."""
    deref = _text(resource, "derefUri")
    if deref is None:
        return None
    try:
        return base64.b64decode("".join(deref.split()), validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from exc


def _check_resource(where: str, resource: etree._Element) -> list[str]:
    if not _text(resource, "mimeType"):
        return [f"{where}/mimeType is empty: a MIME type is required"]
    digest = _text(resource, "digest")
    if digest is not None and not re.fullmatch(r"[0-9a-fA-F]{40}", digest):
        return [f"{where}/digest {digest!r} is not a SHA-1 digest (40 hex digits)"]
    try:
        _deref_content(resource)
    except ValueError:
        return [f"{where}/derefUri is not valid base64 content"]
    return []


def _check_area(where: str, area: etree._Element) -> list[str]:
    problems = []
    for p, polygon in enumerate(area.iterfind(_q("polygon")), start=1):
        if problem := polygon_problem(f"{where}/polygon[{p}]", polygon.text or ""):
            problems.append(problem)
    for c, circle in enumerate(area.iterfind(_q("circle")), start=1):
        if problem := circle_problem(f"{where}/circle[{c}]", circle.text or ""):
            problems.append(problem)
    if area.find(_q("ceiling")) is not None and area.find(_q("altitude")) is None:
        problems.append(f"{where}: ceiling is given without altitude")
    return problems


def _lat_lon(where: str, text: str) -> tuple[float, float] | str:
    match = _PAIR_RE.match(text)
    if not match:
        return f"{where}: {text!r} is not a lat,lon pair"
    lat, lon = float(match[1]), float(match[2])
    if not -90.0 <= lat <= 90.0:
        return f"{where}: latitude {lat} in {text!r} is outside -90..90 (lat,lon order?)"
    if not -180.0 <= lon <= 180.0:
        return f"{where}: longitude {lon} in {text!r} is outside -180..180"
    return lat, lon


def polygon_problem(where: str, text: str) -> str | None:
    """Why ``text`` is not a CAP polygon (None when it is a valid one).

    A CAP polygon is at least 4 space-separated ``lat,lon`` WGS 84 pairs, latitude first,
    the first pair equal to the last, and (as Google's validator also requires) a ring that
    does not cross itself.
    """
    points: list[tuple[float, float]] = []
    for token in text.split():
        pair = _lat_lon(where, token)
        if isinstance(pair, str):
            return pair
        points.append(pair)
    if len(points) < _MIN_RING_PAIRS:
        return f"{where}: {len(points)} pairs; a polygon needs at least {_MIN_RING_PAIRS}"
    if points[0] != points[-1]:
        return (f"{where}: first pair {points[0]} differs from last {points[-1]}: the ring "
                f"must be closed")
    ring = LinearRing([(lon, lat) for lat, lon in points])
    if not ring.is_simple:
        return f"{where}: the ring intersects itself"
    return None


def circle_problem(where: str, text: str) -> str | None:
    """Why ``text`` is not a CAP circle ``lat,lon radius_km`` (None when it is)."""
    match = _CIRCLE_RE.match(text.strip())
    if not match:
        return f"{where}: {text.strip()!r} is not 'lat,lon radius' (radius in km)"
    pair = _lat_lon(where, f"{match[1]},{match[2]}")
    if isinstance(pair, str):
        return pair
    if float(match[3]) < 0:
        return f"{where}: radius {match[3]} km is negative"
    return None


# --- Tocsin's own rules -----------------------------------------------------------------


def _check_expires_everywhere(root: etree._Element) -> list[str]:
    return [f"info[{i}]: expires is missing; every info must say when it ends"
            for i, info in enumerate(root.iterfind(_q("info")), start=1)
            if not _text(info, "expires")]


def _check_resource_digests(root: etree._Element) -> list[str]:
    # Real IPAWS messages give the digest and size of the original file, not of the
    # re-encoded derefUri content, so only Tocsin's own output is held to this.
    problems = []
    for i, info in enumerate(root.iterfind(_q("info")), start=1):
        for r, resource in enumerate(info.iterfind(_q("resource")), start=1):
            try:
                content = _deref_content(resource)
            except ValueError:
                continue  # reported by the core check
            if content is None:
                continue
            where, digest, size = f"info[{i}]/resource[{r}]", _text(resource, "digest"), \
                _text(resource, "size")
            actual = hashlib.sha1(content).hexdigest()
            if digest is None or digest.lower() != actual:
                problems.append(f"{where}/digest {digest} is not the SHA-1 of the derefUri "
                                f"content ({actual})")
            if size is None or size != str(len(content)):
                problems.append(f"{where}/size {size} is not the derefUri content's "
                                f"{len(content)} bytes")
    return problems


def _check_one_info_per_language(root: etree._Element) -> list[str]:
    seen: dict[str, int] = {}
    problems = []
    for i, info in enumerate(root.iterfind(_q("info")), start=1):
        language = _text(info, "language") or _DEFAULT_LANGUAGE
        if language in seen:
            problems.append(f"info[{i}]: language {language} already used by "
                            f"info[{seen[language]}]; one info per language")
        seen.setdefault(language, i)
    return problems


# --- IPAWS profile v1.0 (errors only) ---------------------------------------------------


def _event_codes(info: etree._Element) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((_text(code, "valueName") or "", _text(code, "value") or "")
                        for code in info.iterfind(_q("eventCode"))))


def _check_ipaws(root: etree._Element) -> list[str]:
    problems = []
    codes = [(c.text or "").strip() for c in root.iterfind(_q("code"))]
    if not any("IPAWSv1.0" in code for code in codes):
        problems.append("ipaws: code must contain IPAWSv1.0")
    infos = list(root.iterfind(_q("info")))
    categories = {tuple(sorted((c.text or "").strip() for c in info.iterfind(_q("category"))))
                  for info in infos}
    if len(categories) > 1:
        problems.append("ipaws: every info must have the same category")
    if len({_event_codes(info) for info in infos}) > 1:
        problems.append("ipaws: every info must have the same eventCodes")
    for i, info in enumerate(infos, start=1):
        same = [value for name, value in _event_codes(info) if name == "SAME"]
        if len(same) != 1 or not _SAME_EVENT_RE.match(same[0]):
            problems.append(f"ipaws: info[{i}] needs exactly one eventCode SAME with a "
                            f"three-letter code, found {same}")
        if info.find(_q("area")) is None:
            problems.append(f"ipaws: info[{i}] has no area")
    return problems
