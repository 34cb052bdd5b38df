"""``tocsin demo``, the README's main job: the live pipeline end to end on the sample region.

It starts real workers and a beat on the local broker, plays five feed files through them
and checks what the three agencies' receivers got: the flood's Alert, Update and Cancel in
that order, the rainfall and earthquake alerts, each on the channels each agency chose,
signed webhooks verified, and a map and report for each event.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from alerts.channels.cap_feed import read_feed_entries
from workers.demo import run_demo


def test_the_demo_plays_every_feed_through_the_live_workers_to_every_agency(
    tmp_path: Path,
) -> None:
    console = Console(record=True, width=120)
    result = run_demo(tmp_path, console=console)
    text = console.export_text()
    lines = [line for line in text.splitlines() if line.startswith(("flood", "rainfall",
                                                                    "earthquake"))]
    assert [line.split(":")[1].split(",")[0].strip() for line in lines] == [
        "Alert", "Update", "Cancel", "Alert", "Alert"]
    assert all("ack" in line and "error" not in line for line in lines), lines
    for agency in ("Valley civil protection", "City health service", "County emergency desk"):
        assert agency in text
    assert "BAD SIGNATURE" not in text and "signature verified" in text
    # Valley (webhook) and county (webhook) every message they subscribe to; the city by
    # e-mail and SMS only for floods and earthquakes.
    assert result.webhooks >= 8 and result.sms == 4 and result.mails >= 9
    assert len(result.reports) == 3 and all(p.stat().st_size > 10_000 for p in result.reports)
    public = next(p for p in result.cap_feeds if p.name == "public.atom")
    kinds = sorted(e.msg_type.value for e in read_feed_entries(public))
    assert kinds == ["Alert", "Alert", "Cancel"]  # one entry per event: its latest message
