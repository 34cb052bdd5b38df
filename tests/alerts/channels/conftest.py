"""Channel fixtures: real messages (composed and rendered as the pipeline does) to send.

``make_message`` builds an :class:`OutgoingMessage` whose CAP bytes are a real, XSD-valid
CAP 1.2 message and whose text comes from the shipped templates, so every channel test sends
what production would.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import shapely

from alerts.cap import render_cap
from alerts.channels.base import AlertContent, OutgoingMessage
from alerts.compose import compose_alert
from alerts.model import (
    Certainty,
    ChannelAddress,
    ChannelKind,
    ClassExposure,
    ExposureSummary,
    HazardSummary,
    Level,
    MsgType,
    Priority,
    Reference,
    Severity,
    Urgency,
)

SENT = datetime(2026, 5, 12, 6, 0, tzinfo=UTC)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
AREA = shapely.box(7.40, 46.90, 7.50, 46.97)


def make_alert_content(
    *,
    level: Level = Level.RED,
    msg_type: MsgType = MsgType.ALERT,
    language: str = "en",
    event_id: str = "flood_depth-20260512T0600Z-abc123",
    sequence: int = 1,
    kind: str = "flood_depth",
    map_png: bytes | None = PNG,
) -> AlertContent:
    """A real alert: composed, rendered to valid CAP, with its text in ``language``."""
    hazard = HazardSummary(
        kind=kind, nature="forecast", units="m", n_classes=3, max_class=3,
        max_class_label="1.5 m and above", issued_at=SENT, onset=SENT + timedelta(hours=6),
        exceedance_share=None, source="flood.tif", checksum="sha256:00",
    )
    exposure = ExposureSummary(
        population=12_400, disability=1_300, older=2_100, electricity_dependent=40,
        area_km2=18.5, by_class=(ClassExposure(3, "1.5 m and above", 12_400, area_km2=18.5),),
    )
    severity = {Level.RED: Severity.EXTREME, Level.ORANGE: Severity.SEVERE}.get(
        level, Severity.MODERATE)
    priority = Priority(level=level, score=0.9, severity=severity, urgency=Urgency.EXPECTED,
                        certainty=Certainty.LIKELY, reasons=("12,400 people in deep water",),
                        rules_version="v1")
    references = () if sequence == 1 else tuple(
        Reference("tocsin@example.invalid", f"tocsin-{event_id}-{i:03d}", SENT)
        for i in range(1, sequence))
    sent = SENT + timedelta(hours=sequence - 1)
    composed = compose_alert(
        event_id=event_id, sequence=sequence, sender="tocsin@example.invalid", sent=sent,
        msg_type=msg_type, hazard=hazard, exposure=exposure, priority=priority,
        footprint_lonlat=AREA, area_name="Aare valley", languages=(language,),
        expires=sent + timedelta(hours=12), references=references, map_png=map_png,
    )
    return AlertContent(
        identifier=composed.event.identifier, event_id=event_id,
        sender="tocsin@example.invalid", msg_type=msg_type, level=level, hazard_kind=kind,
        area_description="Aare valley", sent=sent, expires=sent + timedelta(hours=12),
        cap_xml=render_cap(composed.event), text=composed.texts[0], map_png=map_png,
        references=tuple(r.identifier for r in references),
    )


MakeMessage = Callable[..., OutgoingMessage]


@pytest.fixture
def make_message() -> MakeMessage:
    """A factory of outgoing messages: ``make_message(ChannelKind.WEBHOOK, address, ...)``."""

    def _make(kind: ChannelKind, address: str, *, key: str = "k" * 64, agency_id: str = "ag-1",
              subscription_id: str = "sub-1", language: str = "en", alerts: Any = None,
              message_kind: str = "alert", attempt: int = 1, **alert_changes: Any
              ) -> OutgoingMessage:
        carried = alerts if alerts is not None else (
            make_alert_content(language=language, **alert_changes),)
        return OutgoingMessage(
            idempotency_key=key, channel=ChannelAddress(kind, address), agency_id=agency_id,
            subscription_id=subscription_id, language=language, alerts=tuple(carried),
            kind=message_kind, attempt=attempt,  # type: ignore[arg-type]
        )

    return _make
