"""The CAP feed channel: Atom feeds of stored CAP messages, as aggregators read them."""

from __future__ import annotations

import dataclasses
import errno
import functools
import importlib.util
import multiprocessing
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from urllib.parse import urljoin

import pytest
from lxml import etree

from alerts.cap_parse import secure_parse, validate_cap
from alerts.channels.atom import (
    ATOM_NS,
    CAP_MEDIA_TYPE,
    FeedEntry,
    FeedFormatError,
    embedded_cap_bytes,
    parse_feed,
    render_atom_feed,
)
from alerts.channels.base import AlertContent, Channel
from alerts.channels.cap_feed import CapFeedChannel, CapFeedConfig, read_feed_entries
from alerts.errors import PermanentDispatchError, RetryableDispatchError
from alerts.model import ChannelKind, Level, MsgType


def _load_conftest() -> ModuleType:
    # The folder is not a package (importlib mode): load the helpers of conftest.py by path.
    name = "tocsin_tests_channels_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(
            "conftest.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_helpers = _load_conftest()
SENT: datetime = _helpers.SENT
MakeMessage = _helpers.MakeMessage
make_alert_content = _helpers.make_alert_content
CAP12_NS = "urn:oasis:names:tc:emergency:cap:1.2"
NOW = SENT + timedelta(minutes=30)
A = f"{{{ATOM_NS}}}"
C = f"{{{CAP12_NS}}}"


def fixed_clock(when: datetime = NOW) -> functools.partial[datetime]:
    # A partial of a builtin, not a lambda: the channel must pickle for 'spawn' workers.
    return functools.partial(datetime.fromisoformat, when.isoformat())


def channel_in(directory: Path, *, when: datetime = NOW, **settings: object) -> CapFeedChannel:
    return CapFeedChannel(CapFeedConfig(directory, **settings), clock=fixed_clock(when))


def event(name: str, **changes: object) -> AlertContent:
    return make_alert_content(event_id=f"flood_depth-20260512T0600Z-{name}", **changes)


def _one(parent: etree._Element, name: str, where: str,
         problems: list[str]) -> etree._Element | None:
    found = parent.findall(A + name)
    if len(found) != 1 or not (found[0].text or found[0].get("href") or "").strip():
        problems.append(f"{where}: {len(found)} non-empty atom:{name}, expected exactly 1")
        return None
    return found[0]


def _date(node: etree._Element | None, where: str, problems: list[str]) -> None:
    if node is not None and datetime.fromisoformat(node.text).utcoffset() is None:
        problems.append(f"{where}: {node.text} is not an RFC 3339 date-time")


def _entry_problems(entry: etree._Element, where: str) -> list[str]:
    problems: list[str] = []
    entry_id = _one(entry, "id", where, problems)
    if entry_id is not None and ":" not in entry_id.text:
        problems.append(f"{where}: id {entry_id.text} is not an IRI")
    _one(entry, "title", where, problems)
    _date(_one(entry, "updated", where, problems), f"{where} updated", problems)
    cap_links = [link for link in entry.findall(A + "link")
                 if link.get("rel") == "alternate" and link.get("type") == CAP_MEDIA_TYPE]
    if len(cap_links) != 1 or not cap_links[0].get("href"):
        problems.append(f"{where}: needs one alternate link to its CAP file")
    content = entry.find(A + "content")
    if content is None or content.get("type") != CAP_MEDIA_TYPE or len(content) != 1:
        problems.append(f"{where}: content must hold exactly one CAP element")
    return problems


def atom_problems(feed: etree._Element) -> list[str]:
    """RFC 4287's structural rules that aggregators rely on, checked by hand (no RELAX NG)."""
    if feed.tag != A + "feed":
        return [f"root is {feed.tag}"]
    problems: list[str] = []
    for name in ("id", "title"):
        _one(feed, name, "feed", problems)
    _date(_one(feed, "updated", "feed", problems), "feed updated", problems)
    entries = feed.findall(A + "entry")
    if feed.find(A + "author") is None and any(e.find(A + "author") is None for e in entries):
        problems.append("feed has no author and some entries have none")
    for index, entry in enumerate(entries):
        problems += _entry_problems(entry, f"entry {index}")
    ids = [entry.findtext(A + "id") for entry in entries]
    if len(set(ids)) != len(ids):
        problems.append("entry ids are not unique")
    return problems


def feed_of(directory: Path, feed_id: str = "public") -> etree._Element:
    return parse_feed((directory / f"{feed_id}.atom").read_bytes())


def identifiers(directory: Path, feed_id: str = "public") -> list[str]:
    return [e.identifier for e in read_feed_entries(directory / f"{feed_id}.atom")]


# --- the document ---------------------------------------------------------------------


def test_the_feed_parses_with_the_hardened_parser_and_has_every_required_atom_element(
        tmp_path: Path, make_message: MakeMessage) -> None:
    channel = channel_in(tmp_path)
    channel.send(make_message(ChannelKind.CAP_FEED, "public",
                              alerts=(event("a"), event("b", level=Level.ORANGE))))

    data = (tmp_path / "public.atom").read_bytes()
    assert b"<!DOCTYPE" not in data and data.startswith(b"<?xml")
    feed = parse_feed(data)
    assert atom_problems(feed) == []
    assert feed.findtext(A + "title") == "Tocsin alerts: public"
    assert len(feed.findall(A + "entry")) == 2


def test_every_linked_and_embedded_cap_is_xsd_valid_and_equals_the_stored_bytes(
        tmp_path: Path, make_message: MakeMessage) -> None:
    sent = (event("a"), event("b", map_png=None))
    channel_in(tmp_path).send(make_message(ChannelKind.CAP_FEED, "public", alerts=sent))

    data = (tmp_path / "public.atom").read_bytes()
    feed = parse_feed(data)
    stored = {alert.identifier: alert.cap_xml for alert in sent}
    for entry, embedded in zip(feed.iterfind(A + "entry"), embedded_cap_bytes(data),
                               strict=True):
        identifier = entry.findtext(C + "identifier")
        href = entry.find(A + "link[@rel='alternate']").get("href")
        linked = (tmp_path / href).read_bytes()  # relative to the feed file
        assert linked == stored[identifier]
        assert validate_cap(linked) == []
        assert linked.startswith(b"<?xml") and linked.rstrip().endswith(embedded)
        assert validate_cap(embedded) == []
        assert secure_parse(embedded).findtext(C + "identifier") == identifier


def test_links_and_the_feed_id_use_the_base_url_when_one_is_configured(
        tmp_path: Path, make_message: MakeMessage) -> None:
    channel = channel_in(tmp_path, base_url="https://alerts.example.org/feeds/")
    channel.send(make_message(ChannelKind.CAP_FEED, "public"))

    feed = feed_of(tmp_path)
    assert feed.findtext(A + "id") == "https://alerts.example.org/feeds/public.atom"
    href = feed.find(f"{A}entry/{A}link").get("href")
    assert href == ("https://alerts.example.org/feeds/cap/"
                    "tocsin-flood_depth-20260512T0600Z-abc123-001.xml")
    # The path under the base URL is the file's path under the directory.
    relative = href.removeprefix("https://alerts.example.org/feeds/")
    assert (tmp_path / relative).read_bytes() == make_alert_content().cap_xml
    assert urljoin(feed.find(f"{A}link[@rel='self']").get("href"), "x") == (
        "https://alerts.example.org/feeds/x")


@pytest.mark.realdata
def test_our_entries_carry_what_the_real_feeds_give_aggregators(
        real_data: Path, tmp_path: Path, make_message: MakeMessage) -> None:
    channel_in(tmp_path).send(make_message(ChannelKind.CAP_FEED, "public"))
    ours = feed_of(tmp_path)
    our_entry = ours.find(A + "entry")
    our_atom = {etree.QName(c).localname for c in our_entry if c.tag.startswith(A)}
    our_cap = {etree.QName(c).localname for c in our_entry if c.tag.startswith(C)}

    real_atom: set[str] = set()
    for name in ("amber.atom", "weather_index.atom", "canada_signed.atom"):
        real = parse_feed((real_data / "cap" / "feeds" / name).read_bytes())
        assert etree.QName(real).namespace == etree.QName(ours).namespace == ATOM_NS
        for entry in real.iterfind(A + "entry"):
            real_atom |= {etree.QName(c).localname for c in entry if c.tag.startswith(A)}
    # Every Atom child any real feed gives its entries, ours gives too.
    assert real_atom <= our_atom, real_atom - our_atom
    assert {"id", "title", "updated", "link", "content"} <= real_atom

    index = parse_feed((real_data / "cap" / "feeds" / "weather_index.atom").read_bytes())
    cap11 = "{urn:oasis:names:tc:emergency:cap:1.1}"
    indexed = {etree.QName(c).localname for c in index.find(A + "entry")
               if c.tag.startswith(cap11)}
    # The NWS index elements (its geocode/parameter aside: ours index the hazard as an
    # eventCode), in CAP 1.2's namespace rather than 1.1's.
    assert indexed - {"geocode", "parameter"} <= our_cap
    assert {"event", "msgType", "areaDesc", "identifier", "sent"} <= our_cap
    # Like the real embedding feeds: the CAP alert is the single child of content.
    real_content = parse_feed((real_data / "cap" / "feeds" / "canada_signed.atom")
                              .read_bytes()).find(f"{A}entry/{A}content")
    assert [etree.QName(c).localname for c in real_content] == ["alert"]
    assert [etree.QName(c).localname for c in our_entry.find(A + "content")] == ["alert"]


def test_the_feed_reads_back_into_the_entries_it_was_built_from(
        tmp_path: Path, make_message: MakeMessage) -> None:
    alerts = (event("a"), event("b", map_png=None, level=Level.YELLOW))
    channel_in(tmp_path).send(make_message(ChannelKind.CAP_FEED, "public", alerts=alerts))

    expected = sorted((FeedEntry.from_alert(a) for a in alerts),
                      key=lambda e: e.identifier, reverse=True)
    assert read_feed_entries(tmp_path / "public.atom") == expected


def test_rendering_the_same_entries_gives_the_same_bytes() -> None:
    entries = [FeedEntry.from_alert(event("a")), FeedEntry.from_alert(event("b"))]

    def render() -> bytes:
        return render_atom_feed("public", "t", entries, updated=NOW, base_url=None)

    assert render() == render()


# --- entry semantics ----------------------------------------------------------------------


def test_an_update_leaves_one_entry_for_its_event_the_update(
        tmp_path: Path, make_message: MakeMessage) -> None:
    channel = channel_in(tmp_path, when=SENT + timedelta(hours=2))
    channel.send(make_message(ChannelKind.CAP_FEED, "public"))
    channel.send(make_message(ChannelKind.CAP_FEED, "public", msg_type=MsgType.UPDATE,
                              sequence=2))

    entries = read_feed_entries(tmp_path / "public.atom")
    assert [(e.identifier, e.msg_type) for e in entries] == [
        ("tocsin-flood_depth-20260512T0600Z-abc123-002", MsgType.UPDATE)]
    # The Alert's CAP file stays: stored messages are never removed.
    assert (tmp_path / "cap" / "tocsin-flood_depth-20260512T0600Z-abc123-001.xml").exists()


def test_an_alert_arriving_after_its_update_does_not_replace_it(
        tmp_path: Path, make_message: MakeMessage) -> None:
    channel = channel_in(tmp_path, when=SENT + timedelta(hours=2))
    channel.send(make_message(ChannelKind.CAP_FEED, "public", msg_type=MsgType.UPDATE,
                              sequence=2))
    channel.send(make_message(ChannelKind.CAP_FEED, "public"))

    assert identifiers(tmp_path) == ["tocsin-flood_depth-20260512T0600Z-abc123-002"]


def test_a_cancel_replaces_the_event_and_stays_until_it_expires(
        tmp_path: Path, make_message: MakeMessage) -> None:
    cancel = make_message(ChannelKind.CAP_FEED, "public", msg_type=MsgType.CANCEL,
                          sequence=3)
    for message in (make_message(ChannelKind.CAP_FEED, "public"),
                    make_message(ChannelKind.CAP_FEED, "public", msg_type=MsgType.UPDATE,
                                 sequence=2), cancel):
        channel_in(tmp_path, when=SENT + timedelta(hours=2)).send(message)
    assert [e.msg_type for e in read_feed_entries(tmp_path / "public.atom")] == [
        MsgType.CANCEL]

    # A retried Update after the Cancel does not bring the event back.
    channel_in(tmp_path, when=SENT + timedelta(hours=3)).send(
        make_message(ChannelKind.CAP_FEED, "public", msg_type=MsgType.UPDATE, sequence=2))
    assert [e.msg_type for e in read_feed_entries(tmp_path / "public.atom")] == [
        MsgType.CANCEL]

    expires = cancel.alert.expires
    other = make_message(ChannelKind.CAP_FEED, "public", alerts=(
        make_alert_content(event_id="other", sequence=5),))  # expires after the Cancel
    channel_in(tmp_path, when=expires).send(other)
    assert MsgType.CANCEL in [e.msg_type for e in read_feed_entries(tmp_path / "public.atom")]
    receipt = channel_in(tmp_path, when=expires + timedelta(seconds=1)).send(other)
    assert MsgType.CANCEL not in [e.msg_type
                                  for e in read_feed_entries(tmp_path / "public.atom")]
    assert receipt.detail == "public.atom (1 entries)"


def test_an_expired_entry_is_dropped_and_the_feed_updated_moves_on(
        tmp_path: Path, make_message: MakeMessage) -> None:
    old = event("old")
    channel_in(tmp_path).send(make_message(ChannelKind.CAP_FEED, "public", alerts=(old,)))
    later = old.expires + timedelta(minutes=1)

    receipt = channel_in(tmp_path, when=later).send(
        make_message(ChannelKind.CAP_FEED, "public",
                     alerts=(make_alert_content(event_id="flood_depth-x", sequence=13),)))

    assert identifiers(tmp_path) == ["tocsin-flood_depth-x-013"]
    assert receipt.detail == "public.atom (1 entries)"
    assert datetime.fromisoformat(feed_of(tmp_path).findtext(A + "updated")) == later
    assert atom_problems(feed_of(tmp_path)) == []


def test_an_already_expired_message_is_stored_but_not_listed(
        tmp_path: Path, make_message: MakeMessage) -> None:
    alert = event("a")
    receipt = channel_in(tmp_path, when=alert.expires + timedelta(days=1)).send(
        make_message(ChannelKind.CAP_FEED, "public", alerts=(alert,)))

    assert receipt.detail == "public.atom (0 entries)"
    assert identifiers(tmp_path) == []
    assert (tmp_path / "cap" / f"{alert.identifier}.xml").read_bytes() == alert.cap_xml
    assert atom_problems(feed_of(tmp_path)) == []


def test_entries_are_newest_first_and_at_most_max_entries(
        tmp_path: Path, make_message: MakeMessage) -> None:
    channel = channel_in(tmp_path, when=SENT + timedelta(hours=3), max_entries=3)
    for sequence in (1, 3, 2, 4):
        channel.send(make_message(ChannelKind.CAP_FEED, "public", alerts=(
            make_alert_content(event_id=f"ev{sequence}", sequence=sequence),)))

    assert identifiers(tmp_path) == ["tocsin-ev4-004", "tocsin-ev3-003", "tocsin-ev2-002"]


def test_sending_the_same_message_twice_leaves_every_file_byte_identical(
        tmp_path: Path, make_message: MakeMessage) -> None:
    message = make_message(ChannelKind.CAP_FEED, "public")
    first = channel_in(tmp_path).send(message)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    second = channel_in(tmp_path, when=NOW + timedelta(minutes=5)).send(message)

    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert first == second


def test_agency_feeds_and_the_public_feed_are_separate_files_sharing_the_cap_files(
        tmp_path: Path, make_message: MakeMessage) -> None:
    channel = channel_in(tmp_path)
    channel.send(make_message(ChannelKind.CAP_FEED, "public"))
    receipt = channel.send(make_message(ChannelKind.CAP_FEED, "canton-bern_civil.1",
                                        alerts=(event("a"), event("b"))))

    assert receipt.detail == "canton-bern_civil.1.atom (2 entries)"
    assert len(identifiers(tmp_path, "public")) == 1
    assert len(identifiers(tmp_path, "canton-bern_civil.1")) == 2
    assert len(list((tmp_path / "cap").iterdir())) == 3


def test_the_public_feed_refuses_a_message_that_is_not_public(
        tmp_path: Path, make_message: MakeMessage) -> None:
    alert = make_alert_content()
    restricted_xml = alert.cap_xml.replace(
        b"<scope>Public</scope>",
        b"<scope>Restricted</scope>\n  <restriction>Emergency services only</restriction>")
    assert validate_cap(restricted_xml) == []
    restricted = dataclasses.replace(alert, cap_xml=restricted_xml)

    with pytest.raises(PermanentDispatchError, match="scope Restricted"):
        channel_in(tmp_path).send(make_message(ChannelKind.CAP_FEED, "public",
                                               alerts=(restricted,)))
    channel_in(tmp_path).send(make_message(ChannelKind.CAP_FEED, "agency-1",
                                           alerts=(restricted,)))
    assert len(identifiers(tmp_path, "agency-1")) == 1


def test_the_channel_follows_the_channel_protocol(tmp_path: Path) -> None:
    channel = CapFeedChannel(CapFeedConfig(tmp_path))
    assert isinstance(channel, Channel)
    assert channel.kind is ChannelKind.CAP_FEED


# --- several workers ----------------------------------------------------------------------


def test_concurrent_sends_from_four_processes_lose_no_entry(
        tmp_path: Path, make_message: MakeMessage) -> None:
    channel = channel_in(tmp_path, when=SENT + timedelta(hours=1))
    messages = [make_message(ChannelKind.CAP_FEED, "public", key=f"{i:064d}",
                             alerts=(event(f"p{i // 10}-a{i % 10}"),)) for i in range(40)]

    with multiprocessing.get_context("spawn").Pool(4) as pool:
        receipts = pool.map(channel.send, messages, chunksize=10)

    assert len(receipts) == 40
    assert sorted(identifiers(tmp_path)) == sorted(m.alert.identifier for m in messages)
    assert atom_problems(feed_of(tmp_path)) == []
    assert not [p for p in tmp_path.rglob("*.tmp")]


# --- failures -----------------------------------------------------------------------------


@pytest.mark.parametrize("feed_id", ["../x", "a/b", "", ".hidden", "..", "a\\b", "a b",
                                     "x" * 201])
def test_a_feed_id_that_is_not_a_safe_name_is_a_permanent_error(
        tmp_path: Path, make_message: MakeMessage, feed_id: str) -> None:
    with pytest.raises(PermanentDispatchError, match="not a safe name"):
        channel_in(tmp_path / "feeds").send(make_message(ChannelKind.CAP_FEED, feed_id))
    assert not (tmp_path / "feeds").exists()
    assert not list(tmp_path.parent.glob("x.atom"))


def test_an_unwritable_directory_is_a_retryable_error_naming_the_path(
        tmp_path: Path, make_message: MakeMessage) -> None:
    # A file where the folder should be: refused even to root, unlike a chmod.
    (tmp_path / "blocked").write_text("not a folder")

    with pytest.raises(RetryableDispatchError, match="blocked"):
        channel_in(tmp_path / "blocked" / "feeds").send(
            make_message(ChannelKind.CAP_FEED, "public"))


def test_a_feed_path_that_cannot_be_replaced_is_a_retryable_error(
        tmp_path: Path, make_message: MakeMessage) -> None:
    (tmp_path / "public.atom").mkdir()

    with pytest.raises(RetryableDispatchError, match="public.atom"):
        channel_in(tmp_path).send(make_message(ChannelKind.CAP_FEED, "public"))
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_full_disk_is_a_retryable_error_and_leaves_no_temporary_file(
        tmp_path: Path, make_message: MakeMessage, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(RetryableDispatchError, match="No space left"):
        channel_in(tmp_path).send(make_message(ChannelKind.CAP_FEED, "public"))
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".lock"]


def test_a_cap_file_already_stored_with_other_bytes_is_a_permanent_error(
        tmp_path: Path, make_message: MakeMessage) -> None:
    alert = make_alert_content()
    (tmp_path / "cap").mkdir()
    (tmp_path / "cap" / f"{alert.identifier}.xml").write_bytes(alert.cap_xml + b"\n")

    with pytest.raises(PermanentDispatchError, match="other bytes"):
        channel_in(tmp_path).send(make_message(ChannelKind.CAP_FEED, "public"))
    assert not (tmp_path / "public.atom").exists()


def test_invalid_cap_is_a_permanent_error(tmp_path: Path, make_message: MakeMessage) -> None:
    alert = make_alert_content()
    broken = dataclasses.replace(alert, cap_xml=alert.cap_xml.replace(b"<status>Actual",
                                                                      b"<status>Maybe"))
    with pytest.raises(PermanentDispatchError, match="cannot go into a feed"):
        channel_in(tmp_path).send(make_message(ChannelKind.CAP_FEED, "public",
                                               alerts=(broken,)))


def test_a_cap_file_altered_after_the_feed_was_written_is_detected(
        tmp_path: Path, make_message: MakeMessage) -> None:
    channel_in(tmp_path).send(make_message(ChannelKind.CAP_FEED, "public"))
    stored = tmp_path / "cap" / f"{make_alert_content().identifier}.xml"
    stored.write_bytes(stored.read_bytes().replace(b"Aare valley", b"Rhone valley"))

    with pytest.raises(FeedFormatError, match="differs from the stored file"):
        read_feed_entries(tmp_path / "public.atom")
    with pytest.raises(RetryableDispatchError, match="cannot be read back"):
        channel_in(tmp_path).send(make_message(ChannelKind.CAP_FEED, "public",
                                               alerts=(event("b"),)))
