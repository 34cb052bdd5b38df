"""Public routes: the CAP feed byte for byte (with validators and gzip), each CAP, health."""

from __future__ import annotations

import gzip

from tocsin_testing.api import NOW, ApiWorld

from alerts.channels.base import AlertContent, OutgoingMessage
from alerts.channels.cap_feed import CapFeedChannel, CapFeedConfig
from alerts.model import ChannelAddress, ChannelKind
from store import repo
from store.db import session_scope


def _publish(world: ApiWorld, identifier: str) -> bytes:
    """Write the public feed with the real CAP feed channel; the file's bytes."""
    with session_scope(world.sessions) as session:
        record = repo.get_alert(session, identifier)
    content = AlertContent(
        identifier=record.identifier, event_id=record.event_id, sender=record.sender,
        msg_type=record.msg_type, level=record.level, hazard_kind="flood_depth",
        area_description="Aare valley", sent=record.sent, expires=record.expires,
        cap_xml=record.cap_bytes, text=record.texts[0], map_png=None)
    folder = world.data_dir / "cap-feed"
    CapFeedChannel(CapFeedConfig(folder), clock=lambda: NOW).send(OutgoingMessage(
        idempotency_key="k" * 64, channel=ChannelAddress(ChannelKind.CAP_FEED, "public"),
        agency_id=None, subscription_id=None, language="en", alerts=(content,)))
    return (folder / "public.atom").read_bytes()


def test_the_feed_is_the_channels_file_byte_for_byte(world: ApiWorld) -> None:
    written = _publish(world, world.north_alert)
    answer = world.client.get("/feed/public.atom", headers={"Accept-Encoding": "identity"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/atom+xml"
    assert answer.content == written
    assert world.north_alert.encode() in answer.content


def test_a_poller_with_the_current_etag_gets_304_and_a_new_file_a_new_etag(
        world: ApiWorld) -> None:
    _publish(world, world.north_alert)
    first = world.client.get("/feed/public.atom")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    again = world.client.get("/feed/public.atom", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    since = world.client.get("/feed/public.atom", headers={"If-Modified-Since": modified})
    assert since.status_code == 304
    written = _publish(world, world.south_alert)
    changed = world.client.get("/feed/public.atom", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert changed.content == written


def test_the_feed_is_gzipped_when_the_client_accepts_it(world: ApiWorld) -> None:
    written = _publish(world, world.north_alert)
    raw = world.client.get("/feed/public.atom", headers={"Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip" and raw.headers["vary"] == "Accept-Encoding"
    # httpx undoes the encoding: the decoded bytes are the file's.
    assert raw.content == written
    assert len(gzip.compress(written)) < len(written)


def test_before_any_alert_the_feed_is_an_empty_valid_atom_feed(world: ApiWorld) -> None:
    answer = world.client.get("/feed/public.atom")
    assert answer.status_code == 200 and b"<feed" in answer.content
    assert b"<entry" not in answer.content


def test_each_alerts_cap_is_public_byte_for_byte(world: ApiWorld) -> None:
    answer = world.client.get(f"/cap/{world.south_alert}.xml")
    with session_scope(world.sessions) as session:
        assert answer.content == repo.get_alert(session, world.south_alert).cap_bytes
    assert answer.headers["content-type"] == "application/cap+xml"
    assert world.client.get("/cap/tocsin-nothing-001.xml").status_code == 404


def test_health_and_metrics_answer_from_the_store(world: ApiWorld) -> None:
    assert world.client.get("/health").json() == {"status": "ok", "store": "ok"}
    metrics = world.client.get("/metrics").text
    # Seeded: two red Alerts (the floods) and one orange Alert (the earthquake).
    assert 'tocsin_alerts_total{level="red",msg_type="Alert"} 2.0' in metrics
    assert 'tocsin_alerts_total{level="orange",msg_type="Alert"} 1.0' in metrics
    assert "tocsin_store_up 1.0" in metrics
