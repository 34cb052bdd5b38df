"""``tocsin assess`` end to end on the sample region with a SQLite store.

The scripted flood: run 1 gives an Alert, the same file again gives nothing, run 2 (much
larger) gives an Update, run 3 (receded) gives a Cancel that references both earlier
messages. Agencies subscribe by zone codes and by polygons; a subscriber whose area the
flood never reaches gets nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lxml import etree
from pyproj import Transformer
from typer.testing import CliRunner

from feeds.region import load_region_pack
from feeds.sample import SampleRegion, build_sample_region
from workers.cli.main import app

runner = CliRunner()
CAP = "{urn:oasis:names:tc:emergency:cap:1.2}"


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleRegion:
    return build_sample_region(tmp_path_factory.mktemp("region"), seed=3, size=120)


def _lonlat_box(sample: SampleRegion, frac: tuple[float, float, float, float]) -> dict:
    grid = load_region_pack(sample.manifest).population.grid
    minx, miny, maxx, maxy = grid.bounds
    to_ll = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    x0, y0 = minx + frac[0] * (maxx - minx), miny + frac[1] * (maxy - miny)
    x1, y1 = minx + frac[2] * (maxx - minx), miny + frac[3] * (maxy - miny)
    ring = [to_ll.transform(x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))]
    return {"type": "Polygon", "coordinates": [ring]}


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def store_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sample: SampleRegion) -> Path:
    monkeypatch.setenv("TOCSIN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TOCSIN_DATABASE_URL", "")
    monkeypatch.setenv("TOCSIN_LANGUAGES", "en,fr")
    _ok(["agency", "add", "valley", "--name", "Valley civil protection"])
    _ok(["agency", "add", "county", "--name", "County health"])
    _ok(["agency", "add", "corner", "--name", "Corner village"])
    zones = ",".join(load_region_pack(sample.manifest).zones["zone_id"])
    _ok(["subscribe", "add", "valley-all", "--agency", "valley", "--zones", zones,
         "--region", str(sample.manifest), "--channel", "webhook:https://valley.example/hook",
         "--channel", "email:duty@valley.example", "--min-level", "yellow"])
    whole = tmp_path / "whole.geojson"
    whole.write_text(json.dumps(_lonlat_box(sample, (0.0, 0.0, 1.0, 1.0))), encoding="utf-8")
    _ok(["subscribe", "add", "county-box", "--agency", "county", "--area", str(whole),
         "--channel", "sms:+41790000000", "--hazard", "flood_depth"])
    return tmp_path


def _cap(identifier: str) -> etree._Element:
    result = runner.invoke(app, ["alerts", "show", identifier, "--cap"])
    assert result.exit_code == 0
    return etree.fromstring(result.stdout_bytes)


def _identifier(output: str) -> str:
    return output.split("Stored ", 1)[1].split(" ", 1)[0]


def test_a_flood_in_three_runs_gives_an_alert_an_update_and_a_cancel(
    sample: SampleRegion, store_env: Path
) -> None:
    feeds = sample.root / "feeds"
    region = ["--region", str(sample.manifest)]
    first = _ok(["assess", str(feeds / "flood_depth_run1.tif"), *region])
    assert "Decision: alert" in first
    again = _ok(["assess", str(feeds / "flood_depth_run1.tif"), *region])
    assert "Decision: none" in again and "already ingested" in again
    second = _ok(["assess", str(feeds / "flood_depth_run2.tif"), *region])
    assert "Decision: update" in second
    third = _ok(["assess", str(feeds / "flood_depth_run3.tif"), *region])
    assert "Decision: cancel" in third

    ids = [_identifier(out) for out in (first, second, third)]
    msg_types = [_cap(i).findtext(f"{CAP}msgType") for i in ids]
    assert msg_types == ["Alert", "Update", "Cancel"]
    references = _cap(ids[2]).findtext(f"{CAP}references")
    assert ids[0] in references and ids[1] in references
    languages = [e.text for e in _cap(ids[1]).iter(f"{CAP}language")]
    assert languages == ["en", "fr"]
    listing = _ok(["alerts", "list"])
    assert all(word in listing for word in ("Alert", "Update", "Cancel", "RED"))


def test_each_reached_agency_gets_the_figures_inside_its_own_area(
    sample: SampleRegion, store_env: Path
) -> None:
    out = _ok(["assess", str(sample.root / "feeds" / "flood_depth_run2.tif"),
               "--region", str(sample.manifest)])
    identifier = _identifier(out)
    shown = _ok(["alerts", "show", identifier])
    assert "reaches valley-all (valley)" in shown and "reaches county-box (county)" in shown
    # 2 channels of the valley + 1 of the county + the public CAP feed.
    assert "4 deliveries in the outbox" in shown


def test_a_subscription_for_another_hazard_kind_is_not_reached(
    sample: SampleRegion, store_env: Path
) -> None:
    out = _ok(["assess", str(sample.root / "feeds" / "shakemap_grid.xml"),
               "--region", str(sample.manifest)])
    identifier = _identifier(out)
    shown = _ok(["alerts", "show", identifier])
    assert "county-box" not in shown  # it wants floods only
    assert "valley-all" in shown


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--zones", "NOPE1"], "NOPE1"),
        (["--hazard", "meteor"], "meteor"),
        (["--channel", "webhook:ftp://x"], "webhook"),
    ],
)
def test_bad_subscriptions_are_refused_and_change_nothing(
    sample: SampleRegion, store_env: Path, args: list[str], message: str
) -> None:
    before = _ok(["subscribe", "list"])
    base = ["subscribe", "add", "bad", "--agency", "corner", "--region", str(sample.manifest)]
    if not any(a == "--channel" for a in args):
        base += ["--channel", "email:a@corner.example"]
    if not any(a == "--zones" for a in args):
        base += ["--zones", load_region_pack(sample.manifest).zones["zone_id"].iloc[0]]
    result = runner.invoke(app, [*base, *args])
    assert result.exit_code != 0
    assert message in result.output
    assert _ok(["subscribe", "list"]) == before


def test_a_duplicate_subscription_is_refused(sample: SampleRegion, store_env: Path) -> None:
    zones = ",".join(load_region_pack(sample.manifest).zones["zone_id"])
    result = runner.invoke(app, [
        "subscribe", "add", "valley-again", "--agency", "valley", "--zones", zones,
        "--region", str(sample.manifest), "--channel", "webhook:https://valley.example/hook",
        "--channel", "email:duty@valley.example"])
    assert result.exit_code != 0
    assert "duplicate" in result.output.lower()


def _cap_for(sample: SampleRegion, severity: str, zone: str, msg_type: str = "Alert",
             identifier: str = "ext-1", references: str = "") -> bytes:
    refs = f"<references>{references}</references>" if references else ""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>{identifier}</identifier><sender>met@agency.example</sender>
  <sent>2024-05-14T06:00:00-00:00</sent><status>Actual</status><msgType>{msg_type}</msgType>
  <scope>Public</scope>{refs}
  <info><category>Met</category><event>Storm</event><urgency>Immediate</urgency>
    <severity>{severity}</severity><certainty>Observed</certainty>
    <expires>2024-05-14T18:00:00-00:00</expires>
    <area><areaDesc>One zone</areaDesc><geocode><valueName>zone</valueName>
      <value>{zone}</value></geocode></area>
  </info>
</alert>""".encode()


def test_an_external_cap_alert_enters_the_same_pipeline_by_its_areas(
    sample: SampleRegion, store_env: Path, tmp_path: Path
) -> None:
    zones = load_region_pack(sample.manifest).zones
    zone = zones["zone_id"].iloc[len(zones) // 2]
    message = tmp_path / "external.xml"
    message.write_bytes(_cap_for(sample, "Extreme", zone))
    out = _ok(["assess", str(message), "--region", str(sample.manifest)])
    assert "Decision: alert" in out
    assert "reaches valley-all" in _ok(["alerts", "show", _identifier(out)])


def test_a_cap_1_1_alert_is_refused_with_its_reason(
    sample: SampleRegion, store_env: Path, tmp_path: Path
) -> None:
    message = tmp_path / "old.xml"
    message.write_bytes(_cap_for(sample, "Extreme", "Z001").replace(b"cap:1.2", b"cap:1.1"))
    result = runner.invoke(app, ["assess", str(message), "--region", str(sample.manifest)])
    assert result.exit_code == 3
    assert "1.1" in result.output


def test_a_failed_assessment_leaves_the_file_unseen_so_a_retry_assesses_it(
    sample: SampleRegion, store_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workers.assess_job as job
    from alerts.errors import CapError

    real = job.render_cap

    def broken(event: object) -> bytes:
        raise CapError("simulated failure while rendering")

    monkeypatch.setattr(job, "render_cap", broken)
    hazard = str(sample.root / "feeds" / "flood_depth_run2.tif")
    failed = runner.invoke(app, ["assess", hazard, "--region", str(sample.manifest)])
    assert failed.exit_code == 4 and "simulated failure" in failed.output
    monkeypatch.setattr(job, "render_cap", real)
    retried = _ok(["assess", hazard, "--region", str(sample.manifest)])
    assert "Decision: alert" in retried
    assert "Decision: none" in _ok(["assess", hazard, "--region", str(sample.manifest)])


def test_the_public_cap_message_never_shows_a_small_registry_count(
    sample: SampleRegion, store_env: Path
) -> None:
    # The sample's electricity-dependent people come from an individual registry.
    identifier = _identifier(_ok(["assess", str(sample.root / "feeds" / "flood_depth_run1.tif"),
                                  "--region", str(sample.manifest)]))
    root = _cap(identifier)
    params = {p.findtext(f"{CAP}valueName"): p.findtext(f"{CAP}value")
              for p in root.iter(f"{CAP}parameter")}
    value = params["tocsin:electricityDependentPeopleExposed"]
    assert value == "<5" or int(value) == 0 or int(value) >= 5
    reasons = [p.findtext(f"{CAP}value") for p in root.iter(f"{CAP}parameter")
               if p.findtext(f"{CAP}valueName") == "tocsin:reason"]
    assert reasons
    for reason in reasons:
        if "electricity" in reason:
            numbers = [int(w.replace(",", "")) for w in reason.split() if w.replace(",", "")
                       .isdigit()]
            assert all(n == 0 or n >= 5 for n in numbers), reason


def test_zone_codes_without_a_region_to_check_them_are_refused(
    sample: SampleRegion, store_env: Path
) -> None:
    result = runner.invoke(app, ["subscribe", "add", "z", "--agency", "corner", "--zones", "ZZZ",
                                 "--channel", "email:a@corner.example"])
    assert result.exit_code == 2
    assert "--region" in result.output


def test_an_external_cap_cancel_closes_the_event_its_alert_opened(
    sample: SampleRegion, store_env: Path, tmp_path: Path
) -> None:
    zones = load_region_pack(sample.manifest).zones
    zone = zones["zone_id"].iloc[len(zones) // 2]
    alert = tmp_path / "alert.xml"
    alert.write_bytes(_cap_for(sample, "Extreme", zone))
    cancel = tmp_path / "cancel.xml"
    cancel.write_bytes(_cap_for(sample, "Extreme", zone, "Cancel", "ext-2",
                                "met@agency.example,ext-1,2024-05-14T06:00:00-00:00"))
    first = _ok(["assess", str(alert), "--region", str(sample.manifest)])
    assert "Decision: alert" in first
    second = _ok(["assess", str(cancel), "--region", str(sample.manifest)])
    assert "Decision: cancel" in second
    assert first.split("for event ")[1].split(";")[0] in second
