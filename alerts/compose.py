"""Compose the CAP message of one event decision: the :class:`AlertEvent` snapshot.

Pure: the caller passes the time, the identifiers of earlier messages and the map; this
module picks CAP category and response, writes one ``info`` per language from the text
templates, and draws the area from the footprint (simplified without shrinking).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from shapely.geometry.base import BaseGeometry

from alerts.cap import exposure_parameters, map_resource
from alerts.cap_geometry import cap_polygons
from alerts.errors import AlertError
from alerts.model import (
    AlertEvent,
    Area,
    Category,
    ExposureSummary,
    HazardSummary,
    Info,
    Level,
    MsgType,
    Priority,
    Reference,
    ResponseType,
    Scope,
    Status,
)
from alerts.text import MessageText, render_text

_CATEGORY = {
    "flood_depth": Category.MET,
    "rainfall": Category.MET,
    "wind_gust": Category.MET,
    "wave_height": Category.MET,
    "heat": Category.MET,
    "cold": Category.MET,
    "probability": Category.MET,
    "shaking_mmi": Category.GEO,
    "shaking_pga": Category.GEO,
    "shaking_pgv": Category.GEO,
    "fire": Category.FIRE,
}

# What people should do, by kind, at orange and red; lower levels prepare or monitor.
_RESPONSE_HIGH = {
    "flood_depth": ResponseType.EVACUATE,
    "rainfall": ResponseType.PREPARE,
    "wind_gust": ResponseType.SHELTER,
    "shaking_mmi": ResponseType.ASSESS,
    "shaking_pga": ResponseType.ASSESS,
    "shaking_pgv": ResponseType.ASSESS,
    "fire": ResponseType.EVACUATE,
    "heat": ResponseType.PREPARE,
}


@dataclass(frozen=True, slots=True)
class ComposedAlert:
    """The message snapshot and the text variants per language it was written from."""

    event: AlertEvent
    texts: tuple[MessageText, ...]


def message_identifier(event_id: str, sequence: int) -> str:
    """The CAP identifier of the ``sequence``-th message (1-based) of an event.

    Deterministic, so a replay of the same feeds gives the same identifiers.
    """
    if sequence < 1:
        raise AlertError(f"message sequence numbers start at 1, got {sequence}")
    return f"tocsin-{event_id}-{sequence:03d}"


def response_for(kind: str, level: Level, msg_type: MsgType) -> ResponseType:
    """CAP ``responseType`` for a hazard kind and level; AllClear for a cancel."""
    if msg_type is MsgType.CANCEL:
        return ResponseType.ALL_CLEAR
    if level.at_least(Level.ORANGE):
        return _RESPONSE_HIGH.get(kind, ResponseType.PREPARE)
    return ResponseType.PREPARE if level is Level.YELLOW else ResponseType.MONITOR


def compose_alert(
    *,
    event_id: str,
    sequence: int,
    sender: str,
    sent: datetime,
    msg_type: MsgType,
    hazard: HazardSummary,
    exposure: ExposureSummary,
    priority: Priority,
    footprint_lonlat: BaseGeometry,
    area_name: str,
    languages: Sequence[str],
    expires: datetime,
    references: Sequence[Reference] = (),
    map_png: bytes | None = None,
    tz: str = "UTC",
    status: Status = Status.ACTUAL,
    note: str | None = None,
    private_groups: Sequence[str] = (),
    min_public_count: int = 5,
) -> ComposedAlert:
    """Compose the CAP message of one decision (Alert, Update or Cancel) of one event.

    Args:
        event_id: Tocsin's event id (CAP ``incidents``).
        sequence: 1 for the first message of the event, then 2, 3...
        sender: CAP sender of this deployment.
        sent: when the message is sent (timezone-aware).
        msg_type: Alert, Update or Cancel.
        hazard: the hazard summary.
        exposure: the exposure figures the message carries.
        priority: the level, CAP triple and reasons.
        footprint_lonlat: the area (EPSG:4326); for a cancel, the last footprint sent.
        area_name: plain words for the area (``areaDesc``).
        languages: one ``info`` per language, in this order.
        expires: when the message expires (always set).
        references: every earlier message of the event (required on Update and Cancel).
        map_png: the map, attached as a resource when given.
        tz: time zone for times written in the text.
        status: CAP status (Actual, Exercise, Test...).
        note: CAP note (e.g. why a message was cancelled).
        private_groups: groups known from individual registries: their small counts are
            not published (the message text already rounds counts under 10).
        min_public_count: counts of those groups below this are hidden.

    Raises:
        AlertError: an Update or Cancel without references, an empty area, no language.
    """
    if msg_type in (MsgType.UPDATE, MsgType.CANCEL) and not references:
        raise AlertError(f"a {msg_type.value} must reference the earlier messages of the event")
    if not languages:
        raise AlertError("at least one language is needed")
    if footprint_lonlat.is_empty:
        raise AlertError(f"event {event_id} has an empty footprint: nothing to draw an area from")
    area = Area(description=area_name, polygons=cap_polygons(footprint_lonlat))
    resources = (map_resource(map_png),) if map_png is not None else ()
    parameters = exposure_parameters(priority, exposure, private_groups=private_groups,
                                     min_public_count=min_public_count)
    texts = []
    infos = []
    for language in dict.fromkeys(languages):  # each language once, order kept
        text = render_text(hazard, exposure, priority, language=language, area_name=area_name,
                           msg_type=msg_type, expires=expires, tz=tz)
        texts.append(text)
        infos.append(Info(
            language=text.language,
            category=(_CATEGORY.get(hazard.kind, Category.OTHER),),
            event=text.event,
            urgency=priority.urgency,
            severity=priority.severity,
            certainty=priority.certainty,
            headline=text.headline,
            description=text.description,
            instruction=text.instruction,
            expires=expires,
            response_types=(response_for(hazard.kind, priority.level, msg_type),),
            sender_name="Tocsin",
            onset=hazard.onset,
            event_codes=(("tocsin:hazard", hazard.kind),),
            parameters=parameters,
            resources=resources,
            areas=(area,),
        ))
    snapshot = AlertEvent(
        identifier=message_identifier(event_id, sequence),
        sender=sender,
        sent=sent,
        status=status,
        msg_type=msg_type,
        scope=Scope.PUBLIC,
        infos=_one_per_language(infos),
        references=tuple(references),
        note=note,
        incidents=event_id,
    )
    return ComposedAlert(snapshot, tuple(texts))


def _one_per_language(infos: list[Info]) -> tuple[Info, ...]:
    """Drop an info whose language repeats (a fallback to English next to English)."""
    seen: set[str] = set()
    kept = []
    for info in infos:
        if info.language not in seen:
            seen.add(info.language)
            kept.append(info)
    return tuple(kept)
