"""Real alert records for the worker tests: composed and rendered as ``tocsin assess`` does."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import shapely

from alerts.cap import render_cap
from alerts.compose import compose_alert
from alerts.model import (
    Certainty,
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
from store.models import AlertRecord

T0 = datetime(2026, 5, 12, 6, 0, tzinfo=UTC)
AREA = shapely.box(7.40, 46.90, 7.50, 46.97)
SUB_AREA = "POLYGON ((7.3 46.8, 7.6 46.8, 7.6 47.0, 7.3 47.0, 7.3 46.8))"


def compose_record(event_id: str, sequence: int, *, level: Level = Level.RED,
                   msg_type: MsgType = MsgType.ALERT, sent: datetime = T0,
                   languages: Sequence[str] = ("en", "fr")) -> AlertRecord:
    """A real alert record: composed, rendered to XSD-valid CAP, with its texts."""
    hazard = HazardSummary(
        kind="flood_depth", nature="forecast", units="m", n_classes=3, max_class=3,
        max_class_label="1.5 m and above", issued_at=sent, onset=sent + timedelta(hours=6),
        exceedance_share=None, source="flood.tif", checksum=f"sha256:{event_id}{sequence}",
    )
    exposure = ExposureSummary(population=12_400, disability=1_300, older=2_100,
                               area_km2=18.5, by_class=(ClassExposure(3, "1.5 m and above",
                                                                      12_400, area_km2=18.5),))
    priority = Priority(level=level, score=0.9, severity=Severity.EXTREME,
                        urgency=Urgency.EXPECTED, certainty=Certainty.LIKELY,
                        reasons=("12,400 people in deep water",), rules_version="v1")
    references = [Reference("tocsin@example.invalid", f"tocsin-{event_id}-{i:03d}",
                            sent - timedelta(minutes=sequence - i)) for i in range(1, sequence)]
    composed = compose_alert(
        event_id=event_id, sequence=sequence, sender="tocsin@example.invalid", sent=sent,
        msg_type=msg_type, hazard=hazard, exposure=exposure, priority=priority,
        footprint_lonlat=AREA, area_name="Aare valley", languages=languages,
        expires=sent + timedelta(hours=12), references=references,
        map_png=b"\x89PNG\r\n\x1a\n" + bytes(32),
    )
    return AlertRecord(identifier=composed.event.identifier, event_id=event_id,
                       sender="tocsin@example.invalid", msg_type=msg_type, priority=priority,
                       sent=sent, expires=sent + timedelta(hours=12),
                       cap_bytes=render_cap(composed.event), texts=composed.texts)
