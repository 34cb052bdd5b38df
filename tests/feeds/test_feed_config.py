"""The feeds TOML loader: every field read, every mistake named by file, feed and field."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from feeds.base import ReadOptions
from feeds.errors import FeedConfigError, FeedError, FeedNotFoundError
from feeds.feed_config import (
    DirectorySourceConfig,
    HttpSourceConfig,
    StacSourceConfig,
    load_feed_config,
    to_read_options,
)
from geo.types import HazardKind, Nature

FULL = """
region = "region.toml"

[[feed]]
id = "river-gauge"
kind = "flood_depth"
nature = "observed"
units = "m"
variable = "depth"
breaks = [0.1, 0.5, 1.5]
poll_interval_s = 120
[feed.source]
type = "http"
url = "https://example.org/depth.tif"
min_interval_s = 30
timeout_s = 5
headers = { Authorization = "Bearer x" }
max_backoff_s = 600

[[feed]]
id = "drop-box"
member = 3
time = "2024-05-01T00:00:00Z"
enabled = false
region = "other/region.toml"
[feed.source]
type = "directory"
path = "incoming"
pattern = "*.nc"
settle_s = 5

[[feed]]
id = "stac-rain"
kind = "rainfall"
nature = "forecast"
reduce = "exceedance"
threshold = 50.0
[feed.source]
type = "stac"
catalog = "stac/catalog.json"
collections = ["rain"]
bbox = [0, 40, 10, 50]
datetime = "2024-05-01T00:00:00Z/.."
asset = "data"
limit = 10
"""


def write(tmp_path: Path, text: str, name: str = "feeds.toml") -> Path:
    (tmp_path / "region.toml").write_text("[region]\nname = 'x'\n")
    (tmp_path / "other").mkdir(exist_ok=True)
    (tmp_path / "other" / "region.toml").write_text("[region]\nname = 'y'\n")
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def one_feed(source: str, extra: str = "", feed_id: str = "f1") -> str:
    return f'[[feed]]\nid = "{feed_id}"\n{extra}\nsource = {source}\n'


DIR = '{ type = "directory", path = "in" }'


def test_a_full_file_loads_every_field_with_paths_resolved_against_its_folder(tmp_path):
    config = load_feed_config(write(tmp_path, FULL))
    assert config.region == (tmp_path / "region.toml").resolve()
    gauge, box, rain = config.feeds
    assert gauge.kind is HazardKind.FLOOD_DEPTH and gauge.nature is Nature.OBSERVED
    assert gauge.breaks == (0.1, 0.5, 1.5) and gauge.poll_interval_s == 120.0
    assert gauge.region == config.region
    assert gauge.source == HttpSourceConfig(
        url="https://example.org/depth.tif", min_interval_s=30.0, timeout_s=5.0,
        headers={"Authorization": "Bearer x"}, max_backoff_s=600.0)
    assert isinstance(box.source, DirectorySourceConfig)
    assert box.source.path == (tmp_path / "incoming").resolve()
    assert box.source.pattern == "*.nc" and box.source.settle_s == 5.0
    assert box.enabled is False and box.member == 3
    assert box.region == (tmp_path / "other" / "region.toml").resolve()
    assert isinstance(rain.source, StacSourceConfig)
    assert rain.source.catalog == str((tmp_path / "stac" / "catalog.json").resolve())
    assert rain.source.collections == ("rain",) and rain.source.bbox == (0.0, 40.0, 10.0, 50.0)
    assert rain.source.datetime_range == (datetime(2024, 5, 1, tzinfo=UTC), None)
    assert config.get("stac-rain") is rain


def test_defaults_fill_what_a_feed_leaves_out(tmp_path):
    feed = load_feed_config(write(tmp_path, one_feed(DIR))).feeds[0]
    assert feed.source == DirectorySourceConfig(path=(tmp_path / "in").resolve())
    assert feed.source.pattern == "*" and feed.source.settle_s == 2.0
    assert feed.enabled is True and feed.region is None and feed.kind is None


def test_reader_options_carry_the_feeds_reading_fields(tmp_path):
    rain = load_feed_config(write(tmp_path, FULL)).get("stac-rain")
    assert to_read_options(rain) == ReadOptions(
        kind=HazardKind.RAINFALL, nature=Nature.FORECAST, reduce="exceedance", threshold=50.0)


def test_an_unknown_feed_key_is_refused_by_name(tmp_path):
    path = write(tmp_path, one_feed(DIR, "poll_intervall_s = 60"))
    with pytest.raises(FeedConfigError, match="poll_intervall_s") as info:
        load_feed_config(path)
    assert "feeds.toml" in str(info.value) and "'f1'" in str(info.value)


def test_an_unknown_source_key_is_refused_by_name(tmp_path):
    path = write(tmp_path, one_feed('{ type = "directory", path = "in", setle_s = 3 }'))
    with pytest.raises(FeedConfigError, match=r"source\.setle_s"):
        load_feed_config(path)


def test_an_unknown_top_level_key_is_refused(tmp_path):
    with pytest.raises(FeedConfigError, match="feeds"):
        load_feed_config(write(tmp_path, "[[feeds]]\nid = 'x'\n"))


@pytest.mark.parametrize(("source", "extra", "field", "expected"), [
    ('{ type = "http", url = "ftp://example.org/x" }', "", "source.url", "http(s) URL"),
    ('{ type = "http" }', "", "source.url", "missing"),
    ('{ type = "http", url = "https://e.org/x", min_interval_s = -1 }', "",
     "source.min_interval_s", ">= 0"),
    ('{ type = "http", url = "https://e.org/x", timeout_s = 0 }', "", "source.timeout_s", "> 0"),
    ('{ type = "http", url = "https://e.org/x", max_backoff_s = "1h" }', "",
     "source.max_backoff_s", "> 0"),
    ('{ type = "http", url = "https://e.org/x", headers = { A = 1 } }', "", "source.headers",
     "table of text"),
    ('{ type = "http", url = "https://e.org/x", max_body_bytes = 0 }', "",
     "source.max_body_bytes", "> 0"),
    ('{ type = "ftp" }', "", "source.type", '"directory", "http" or "stac"'),
    ('"in"', "", "source", "table"),
    ('{ type = "directory" }', "", "source.path", "missing"),
    ('{ type = "directory", path = "in", pattern = "" }', "", "source.pattern", "non-empty"),
    ('{ type = "directory", path = "in", settle_s = -2 }', "", "source.settle_s", ">= 0"),
    ('{ type = "stac" }', "", "source.catalog", "exactly one of"),
    ('{ type = "stac", catalog = "c.json", api = "https://e.org" }', "", "source.catalog",
     "exactly one of"),
    ('{ type = "stac", api = "s3://bucket" }', "", "source.api", "http(s) URL"),
    ('{ type = "stac", catalog = "c.json", collections = "rain" }', "", "source.collections",
     "list of collection ids"),
    ('{ type = "stac", catalog = "c.json", bbox = [10, 0, 0, 5] }', "", "source.bbox",
     "min < max"),
    ('{ type = "stac", catalog = "c.json", datetime = "yesterday" }', "", "source.datetime",
     "RFC 3339"),
    ('{ type = "stac", catalog = "c.json", datetime = "2024-05-02T00:00:00Z/2024-05-01T00:00:00Z"'
     ' }', "", "source.datetime", "ends before it starts"),
    ('{ type = "stac", catalog = "c.json", limit = 0 }', "", "source.limit", ">= 1"),
    ('{ type = "stac", catalog = "c.json", asset = 3 }', "", "source.asset", "non-empty text"),
    (DIR, 'kind = "lava"', "kind", "flood_depth"),
    (DIR, 'nature = "guessed"', "nature", "observed"),
    (DIR, "breaks = [1, 1]", "breaks", "strictly increasing"),
    (DIR, "breaks = []", "breaks", "strictly increasing"),
    (DIR, "poll_interval_s = 0", "poll_interval_s", "> 0"),
    (DIR, 'enabled = "yes"', "enabled", "true or false"),
    (DIR, "units = 5", "units", "non-empty text"),
    (DIR, 'variable = ""', "variable", "non-empty text"),
    (DIR, "time = true", "time", "ISO time"),
    (DIR, "member = 1.5", "member", "index or a member label"),
    (DIR, 'reduce = "median"', "reduce", "exceedance"),
    (DIR, 'reduce = "exceedance"', "reduce", "needs a threshold"),
    (DIR, 'threshold = "high"', "threshold", "a number"),
    (DIR, 'nodata = "none"', "nodata", "a number"),
    (DIR, 'region = "missing.toml"', "region", "existing region manifest"),
])
def test_every_field_error_names_the_file_the_feed_and_the_field(
    tmp_path, source, extra, field, expected
):
    path = write(tmp_path, one_feed(source, extra, feed_id="river-gauge"))
    with pytest.raises(FeedConfigError) as info:
        load_feed_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: feed 'river-gauge' {field}:"), message
    assert expected in message
    assert info.value.feed_id == "river-gauge" and info.value.field == field


def test_a_feed_id_that_is_not_a_slug_is_refused(tmp_path):
    with pytest.raises(FeedConfigError, match=r"feed #1 id: expected a slug"):
        load_feed_config(write(tmp_path, one_feed(DIR, feed_id="River Gauge")))


def test_two_feeds_with_the_same_id_are_refused(tmp_path):
    text = one_feed(DIR, feed_id="twice") + one_feed(DIR, feed_id="twice")
    with pytest.raises(FeedConfigError, match="'twice' id: duplicate"):
        load_feed_config(write(tmp_path, text))


def test_a_missing_top_level_region_is_named(tmp_path):
    with pytest.raises(FeedConfigError, match="region: expected an existing region manifest"):
        load_feed_config(write(tmp_path, 'region = "nowhere.toml"\n' + one_feed(DIR)))


def test_invalid_toml_is_a_feed_config_error(tmp_path):
    with pytest.raises(FeedConfigError, match="not valid TOML"):
        load_feed_config(write(tmp_path, "[[feed]\n"))


def test_a_missing_file_is_a_not_found_feed_error(tmp_path):
    with pytest.raises(FeedNotFoundError):
        load_feed_config(tmp_path / "none.toml")
    assert issubclass(FeedConfigError, FeedError) and issubclass(FeedConfigError, ValueError)


def test_a_stac_catalog_url_and_an_open_start_interval_are_kept_as_given(tmp_path):
    source = ('{ type = "stac", catalog = "https://e.org/catalog.json", '
              'datetime = "../2024-05-01T00:00:00Z" }')
    feed = load_feed_config(write(tmp_path, one_feed(source))).feeds[0]
    assert feed.source.catalog == "https://e.org/catalog.json"
    assert feed.source.datetime == "../2024-05-01T00:00:00Z"
    assert feed.source.datetime_range == (None, datetime(2024, 5, 1, tzinfo=UTC))


def test_an_unknown_feed_id_lookup_lists_the_feeds(tmp_path):
    config = load_feed_config(write(tmp_path, one_feed(DIR)))
    with pytest.raises(KeyError, match="f1"):
        config.get("nope")
