"""The replay plan: what may run in parallel, in which order, and what is left out.

Items are hand-made scans: a kind, a time and a footprint (unit squares in lon/lat).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import shapely

from workers.replay_manifest import ReplayUsageError, choose_rules, parse_time
from workers.replay_plan import ItemScan, ReplayPlan, plan_replay

T0 = datetime(2024, 5, 14, tzinfo=UTC)
WINDOW = timedelta(hours=48)
SINCE, UNTIL = datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)


def scan(item_id: int, *, hours: float = 0, x: float = 0, kind: str = "flood_depth",
         source: str | None = None, checksum: str | None = None, empty: bool = False,
         quarantined: str | None = None) -> ItemScan:
    at = (T0 + timedelta(hours=hours)).isoformat()
    box = shapely.Polygon() if empty else shapely.box(x, 0, x + 1, 1)
    return ItemScan(item_id, "feed", checksum or f"sha256:{item_id:064x}", replay_at=at,
                    time_from="file", event_at=at, kind=kind, source_event_id=source,
                    footprint_wkt=box.wkt, quarantined=quarantined)


def plan(*scans: ItemScan) -> ReplayPlan:
    return plan_replay(scans, since=SINCE, until=UNTIL, window=WINDOW)


def test_items_whose_footprints_are_apart_run_in_separate_partitions() -> None:
    assert plan(scan(1), scan(2, x=5), scan(3, x=10)).partitions == ((1,), (2,), (3,))


def test_items_whose_footprints_touch_run_in_one_partition_in_event_time_order() -> None:
    got = plan(scan(1, hours=12, x=0), scan(2, hours=0, x=1), scan(3, hours=6, x=2.5))
    # 1 touches 2 (the edge x=1), in event-time order; 3 touches neither.
    assert got.partitions == ((2, 1), (3,))


def test_footprint_links_are_transitive() -> None:
    got = plan(scan(1, x=0), scan(2, hours=1, x=0.9), scan(3, hours=2, x=1.8))
    assert got.partitions == ((1, 2, 3),)


def test_other_hazard_kinds_never_share_a_partition() -> None:
    got = plan(scan(1), scan(2, hours=1, kind="rainfall"))
    assert got.partitions == ((1,), (2,))


def test_a_gap_longer_than_the_event_window_cuts_a_chain() -> None:
    got = plan(scan(1, hours=0), scan(2, hours=48), scan(3, hours=97))
    assert got.partitions == ((1, 2), (3,))  # 48 h apart still matches; 49 h does not


def test_the_same_producer_event_id_joins_whatever_the_gap_or_footprint() -> None:
    got = plan(scan(1, source="us7000abcd"), scan(2, hours=200, x=30, source="us7000abcd"),
               scan(3, hours=1, x=60))
    assert got.partitions == ((1, 2), (3,))


def test_items_without_a_footprint_stand_alone_unless_their_producer_id_joins_them() -> None:
    got = plan(scan(1), scan(2, hours=1, empty=True), scan(3, hours=2, empty=True, source="e"),
               scan(4, hours=3, source="e", x=20))
    assert got.partitions == ((1,), (2,), (3, 4))


def test_ties_in_time_are_ordered_by_checksum() -> None:
    got = plan(scan(1, checksum="sha256:" + "b" * 64), scan(2, checksum="sha256:" + "a" * 64))
    assert got.partitions == ((2, 1),)


def test_the_same_bytes_twice_are_assessed_once_and_the_repeat_says_so() -> None:
    got = plan(scan(1, checksum="sha256:" + "c" * 64),
               scan(2, hours=1, x=40, checksum="sha256:" + "c" * 64))
    assert got.partitions == ((1,),)
    assert got.excluded[2][0] == "skipped" and "the same bytes as item 1" in got.excluded[2][1]


def test_items_outside_the_window_and_unreadable_ones_are_left_out_with_reasons() -> None:
    late = ItemScan(9, "feed", "sha256:" + "9" * 64, replay_at="2025-02-01T00:00:00+00:00",
                    time_from="source")
    got = plan(scan(1), late, scan(2, x=9, quarantined="cannot read x.tif: not a GeoTIFF"))
    assert got.partitions == ((1,),)
    assert got.excluded[9] == ("skipped", "outside the window (2025-02-01T00:00:00+00:00, "
                                          "from the source time)")
    assert got.excluded[2] == ("quarantined", "cannot read x.tif: not a GeoTIFF")


def test_a_plan_reads_back_as_written_and_knows_each_items_predecessor() -> None:
    got = plan(scan(1), scan(2, hours=1), scan(3, x=5), scan(4, x=9, quarantined="bad"))
    again = ReplayPlan.from_json(got.to_json())
    assert again == got
    assert again.previous() == {1: None, 2: 1, 3: None}


def test_rules_are_chosen_by_shipped_version_or_by_file(tmp_path) -> None:  # noqa: ANN001
    assert choose_rules("1").version == choose_rules("v1").version == "1"
    assert choose_rules(None).origin == "alerts/rules/priority-v1.toml"
    text = choose_rules("1").text.replace('version = "1"', 'version = "trial"')
    (tmp_path / "trial.toml").write_text(text, encoding="utf-8")
    trial = choose_rules(str(tmp_path / "trial.toml"))
    assert trial.version == "trial" and trial.sha256 != choose_rules("1").sha256
    with pytest.raises(ReplayUsageError, match="no shipped rule table"):
        choose_rules("9")
    (tmp_path / "bad.toml").write_text(text.replace("[people]", "[peeple]"), encoding="utf-8")
    with pytest.raises(ReplayUsageError, match="peeple"):
        choose_rules(str(tmp_path / "bad.toml"))


def test_times_are_iso_8601_and_naive_ones_are_utc() -> None:
    assert parse_time("2024-05-14", "--from") == T0
    assert parse_time("2024-05-14T02:00:00+02:00", "--from") == T0
    with pytest.raises(ReplayUsageError, match="--to 'May 14'"):
        parse_time("May 14", "--to")


def test_the_pool_sends_steps_again_when_nothing_progresses(monkeypatch, tmp_path) -> None:  # noqa: ANN001
    # A serverless broker may lose a message; the waiting command then sends the pending
    # steps again (they are idempotent), and stops once everything is done.
    from workers import replay_pool

    monkeypatch.setattr(replay_pool, "STALL_RESEND_S", 0.05)
    monkeypatch.setattr(replay_pool, "POLL_S", 0.01)
    pool = replay_pool.ReplayPool(tmp_path, None, app=object(), procs=[])  # type: ignore[arg-type]
    state = {"done": 0, "resent": 0}

    def resend() -> None:
        state["resent"] += 1
        state["done"] = 3

    seen: list[tuple[str, int, int]] = []
    pool.wait(lambda: (state["done"], 3), "assessing", lambda *a: seen.append(a), resend)
    assert state["resent"] == 1 and seen[-1] == ("assessing", 3, 3)


def test_an_unreadable_item_is_quarantined_unless_the_source_time_puts_it_outside() -> None:
    # A corrupt file in a folder has only its mtime (a copy: "now"): that says nothing of
    # the payload, so it is set aside as unreadable, not skipped as out of the window.
    copied = ItemScan(7, "feed", "sha256:" + "7" * 64, replay_at="2026-12-01T00:00:00+00:00",
                      time_from="fetched", quarantined="cannot read bad.xml: not a grid")
    stated = ItemScan(8, "feed", "sha256:" + "8" * 64, replay_at="2025-02-01T00:00:00+00:00",
                      time_from="source", quarantined="cannot read old.tif: truncated")
    got = plan(scan(1), copied, stated)
    assert got.excluded[7] == ("quarantined", "cannot read bad.xml: not a grid")
    assert got.excluded[8][0] == "skipped" and "outside the window" in got.excluded[8][1]


def _tiny(item_id: int, x: float, *, hours: float = 0) -> ItemScan:
    at = (T0 + timedelta(hours=hours)).isoformat()
    return ItemScan(item_id, "feed", f"sha256:{item_id:064x}", replay_at=at, time_from="file",
                    event_at=at, kind="flood_depth",
                    footprint_wkt=shapely.box(x, 0, x + 0.001, 0.001).wkt)


def test_items_that_could_open_events_under_one_id_share_a_partition() -> None:
    # Disjoint footprints, centroids 0.003 degree apart, the same second: new_event_id
    # would give both new events one id, so they must run in one fixed order.
    assert plan(_tiny(1, 0.0), _tiny(2, 0.003)).partitions == ((1, 2),)
    assert plan(_tiny(1, 0.0), _tiny(2, 0.003, hours=1)).partitions == ((1,), (2,))
    assert plan(_tiny(1, 0.0), _tiny(2, 0.5)).partitions == ((1,), (2,))
