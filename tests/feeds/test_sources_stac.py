"""The STAC source: a static catalog built with pystac, and a local STAC API server."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pystac
import pytest

from feeds.archive import Archive
from feeds.feed_config import FeedConfig, StacSourceConfig
from feeds.source_stac import StacSource
from feeds.sources import make_source

T0 = datetime(2024, 6, 1, tzinfo=UTC)
WEST, EAST = [0.0, 40.0, 10.0, 50.0], [20.0, 0.0, 30.0, 10.0]
# (item id, collection, datetime, bbox): three items in two collections, in no time order.
ITEMS = [
    ("rain-1", "rain", datetime(2024, 5, 1, tzinfo=UTC), WEST),
    ("rain-2", "rain", datetime(2024, 5, 3, tzinfo=UTC), EAST),
    ("flood-1", "flood", datetime(2024, 5, 2, tzinfo=UTC), WEST),
]


def polygon(bbox: list[float]) -> dict:
    minx, miny, maxx, maxy = bbox
    return {"type": "Polygon", "coordinates": [[[minx, miny], [maxx, miny], [maxx, maxy],
                                                [minx, maxy], [minx, miny]]]}


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """A self-contained catalog: collections rain (2 items) and flood (1), GeoTIFF-ish assets."""
    root = pystac.Catalog(id="hazards", description="test hazards")
    extent = pystac.Extent(pystac.SpatialExtent([[0.0, 0.0, 30.0, 50.0]]),
                           pystac.TemporalExtent([[ITEMS[0][2], ITEMS[1][2]]]))
    collections = {name: pystac.Collection(id=name, description=name, extent=extent)
                   for name in ("rain", "flood")}
    for collection in collections.values():
        root.add_child(collection)
    for item_id, collection, when, bbox in ITEMS:
        item = pystac.Item(id=item_id, geometry=polygon(bbox), bbox=bbox, datetime=when,
                           properties={})
        item.add_asset("thumbnail", pystac.Asset(href="./thumb.png", media_type="image/png"))
        item.add_asset("data", pystac.Asset(href="./data.tif", media_type=pystac.MediaType.COG))
        collections[collection].add_item(item)
    folder = tmp_path / "stac"
    root.normalize_hrefs(str(folder))
    root.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    for item_id, collection, _, _ in ITEMS:
        (folder / collection / item_id / "data.tif").write_bytes(f"II*\x00 {item_id}".encode())
    return folder / "catalog.json"


def stac_source(tmp_path: Path, **source: object) -> StacSource:
    feed = FeedConfig(id="stac-feed", source=StacSourceConfig(**source), poll_interval_s=600.0)
    made = make_source(feed, Archive(tmp_path / "archive"))
    assert isinstance(made, StacSource)
    return made


def test_every_item_is_archived_oldest_first_with_its_datetime(tmp_path, catalog):
    result = stac_source(tmp_path, catalog=str(catalog)).poll({}, now=T0)
    assert result.error is None
    assert [p.path.read_bytes() for p in result.payloads] == [
        b"II*\x00 rain-1", b"II*\x00 flood-1", b"II*\x00 rain-2"]
    first = result.payloads[0]
    assert first.issued_at == datetime(2024, 5, 1, tzinfo=UTC)
    assert first.source_uri == str(catalog.parent / "rain/rain-1/data.tif")
    assert first.media_type == pystac.MediaType.COG and first.original_name == "data.tif"
    assert result.next_poll_at == T0 + timedelta(seconds=600)
    json.dumps(result.state)


def test_an_item_is_seen_once(tmp_path, catalog):
    source = stac_source(tmp_path, catalog=str(catalog))
    first = source.poll({}, now=T0)
    again = source.poll(first.state, now=T0 + timedelta(minutes=10))
    assert again.payloads == [] and again.error is None


@pytest.mark.parametrize(("filters", "expected"), [
    ({"collections": ("rain",)}, ["rain-1", "rain-2"]),
    ({"bbox": (5.0, 45.0, 15.0, 55.0)}, ["rain-1", "flood-1"]),
    ({"datetime": "2024-05-02T00:00:00Z/..",
      "datetime_range": (datetime(2024, 5, 2, tzinfo=UTC), None)}, ["flood-1", "rain-2"]),
    ({"collections": ("rain",), "bbox": (19.0, -1.0, 21.0, 1.0)}, ["rain-2"]),
])
def test_items_are_filtered_by_collection_bbox_and_datetime(tmp_path, catalog, filters,
                                                            expected):
    result = stac_source(tmp_path, catalog=str(catalog), **filters).poll({}, now=T0)
    assert [p.path.read_bytes().decode()[5:] for p in result.payloads] == expected


def test_a_named_asset_is_read_and_items_without_it_are_noted_once(tmp_path, catalog):
    source = stac_source(tmp_path, catalog=str(catalog), asset="elevation")
    first = source.poll({}, now=T0)
    assert first.payloads == [] and len(first.notes) == 3
    assert "no asset elevation" in first.notes[0]
    assert source.poll(first.state, now=T0).notes == []


def test_the_limit_leaves_the_rest_for_the_next_poll(tmp_path, catalog):
    source = stac_source(tmp_path, catalog=str(catalog), limit=2)
    first = source.poll({}, now=T0)
    assert len(first.payloads) == 2 and first.next_poll_at == T0
    assert "1 more new item(s)" in first.notes[0]
    second = source.poll(first.state, now=T0)
    assert [p.path.read_bytes() for p in second.payloads] == [b"II*\x00 rain-2"]


def test_a_missing_catalog_is_an_error_then_the_feed_recovers(tmp_path, catalog):
    moved = catalog.parent.with_name("elsewhere")
    catalog.parent.rename(moved)
    source = stac_source(tmp_path, catalog=str(catalog))
    down = source.poll({}, now=T0)
    assert down.payloads == [] and "cannot read the STAC catalog" in down.error
    moved.rename(catalog.parent)
    assert len(source.poll(down.state, now=T0).payloads) == 3


def test_a_broken_catalog_is_an_error_not_an_exception(tmp_path, catalog):
    catalog.write_text("{not json")
    result = stac_source(tmp_path, catalog=str(catalog)).poll({}, now=T0)
    assert result.payloads == [] and "cannot read the STAC catalog" in result.error


def test_a_missing_asset_file_is_an_error_and_is_retried(tmp_path, catalog):
    asset = catalog.parent / "flood/flood-1/data.tif"
    asset.unlink()
    source = stac_source(tmp_path, catalog=str(catalog))
    first = source.poll({}, now=T0)
    assert len(first.payloads) == 2 and "item flood-1" in first.error
    asset.write_bytes(b"II*\x00 flood-1 late")
    retry = source.poll(first.state, now=T0 + timedelta(minutes=10))
    [late] = retry.payloads
    assert late.path.read_bytes() == b"II*\x00 flood-1 late" and retry.error is None
    # Issued 2024-05-02, after rain-2 (2024-05-03) was seen: out of time order.
    assert any("out of time order" in n for n in retry.notes)


def test_a_static_catalog_served_over_http_is_read_with_relative_asset_hrefs(tmp_path,
                                                                            catalog):
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(catalog.parent))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        result = stac_source(tmp_path, catalog=base + "/catalog.json",
                             collections=("flood",)).poll({}, now=T0)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert result.error is None
    [payload] = result.payloads
    assert payload.source_uri == base + "/flood/flood-1/data.tif"
    assert payload.path.read_bytes() == b"II*\x00 flood-1"


def test_an_asset_missing_for_good_is_given_up_after_a_few_polls(tmp_path, catalog):
    (catalog.parent / "flood/flood-1/data.tif").unlink()
    source = stac_source(tmp_path, catalog=str(catalog), collections=("flood",))
    state: dict = {}
    for _ in range(5):
        result = source.poll(state, now=T0)
        state = result.state
    assert result.error is None and "gave up after 5 failed fetches" in result.notes[0]
    assert source.poll(state, now=T0).notes == []


# --- a STAC API: the minimum pystac-client needs -------------------------------------------

CONFORMS_TO = ["https://api.stacspec.org/v1.0.0/core",
               "https://api.stacspec.org/v1.0.0/item-search"]


class Api:
    """State of the fake API: its base URL, and the searches it answered."""

    def __init__(self) -> None:
        self.base = ""
        self.searches: list[tuple[str, dict]] = []
        self.allow_post = True

    def item(self, item_id: str, collection: str, when: datetime, bbox: list[float]) -> dict:
        return {
            "type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": collection,
            "geometry": polygon(bbox), "bbox": bbox,
            "properties": {"datetime": when.isoformat().replace("+00:00", "Z")},
            "links": [], "assets": {"data": {"href": f"{self.base}/assets/{item_id}.tif",
                                             "type": "image/tiff; application=geotiff"}},
        }

    def search(self, params: dict) -> dict:
        found = []
        for item_id, collection, when, bbox in ITEMS:
            if params.get("collections") and collection not in params["collections"]:
                continue
            if params.get("datetime"):
                start = params["datetime"].split("/")[0]
                if start not in ("", "..") and when < datetime.fromisoformat(start):
                    continue
            found.append(self.item(item_id, collection, when, bbox))
        return {"type": "FeatureCollection", "features": found[: int(params.get("limit", 100))],
                "links": []}


def api_handler(api: Api) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == "/":
                self._json({"type": "Catalog", "stac_version": "1.0.0", "id": "api",
                            "description": "test API", "conformsTo": CONFORMS_TO, "links": [
                                {"rel": "self", "href": api.base + "/"},
                                {"rel": "root", "href": api.base + "/"},
                                {"rel": "search", "href": api.base + "/search",
                                 "type": "application/geo+json", "method": "GET"},
                                *([{"rel": "search", "href": api.base + "/search",
                                    "type": "application/geo+json", "method": "POST"}]
                                  if api.allow_post else [])]})
            elif parts.path == "/search":
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                if "collections" in query:
                    query["collections"] = query["collections"].split(",")
                api.searches.append(("GET", query))
                self._json(api.search(query))
            elif parts.path.startswith("/assets/"):
                body = f"II*\x00 {parts.path[8:-4]}".encode()
                self._send(200, "image/tiff", body)
            else:
                self._send(404, "text/plain", b"no")

        def do_POST(self) -> None:
            if urlsplit(self.path).path != "/search":
                self._send(404, "text/plain", b"no")
                return
            if not api.allow_post:
                self._send(405, "text/plain", b"GET only")
                return
            params = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            api.searches.append(("POST", params))
            self._json(api.search(params))

        def _json(self, doc: dict) -> None:
            self._send(200, "application/json", json.dumps(doc).encode())

        def _send(self, status: int, media_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", media_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture
def stac_api() -> Iterator[Api]:
    api = Api()
    server = ThreadingHTTPServer(("127.0.0.1", 0), api_handler(api))
    api.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_stac_api_search_passes_the_filters_and_assets_are_fetched_over_http(tmp_path,
                                                                              stac_api):
    source = stac_source(tmp_path, api=stac_api.base + "/", collections=("rain",),
                         bbox=(0.0, 0.0, 40.0, 60.0), datetime="2024-05-01T00:00:00Z/..",
                         limit=10)
    result = source.poll({}, now=T0)
    assert result.error is None
    assert [p.path.read_bytes() for p in result.payloads] == [b"II*\x00 rain-1",
                                                              b"II*\x00 rain-2"]
    assert result.payloads[0].source_uri == stac_api.base + "/assets/rain-1.tif"
    assert result.payloads[0].issued_at == datetime(2024, 5, 1, tzinfo=UTC)
    [(method, params)] = stac_api.searches
    assert method == "POST"
    assert params["collections"] == ["rain"]
    assert params["datetime"].startswith("2024-05-01T00:00:00")
    assert [float(v) for v in str(params["bbox"]).strip("[]").split(",")] == [0, 0, 40, 60]
    assert int(params["limit"]) <= 10
    again = source.poll(result.state, now=T0 + timedelta(minutes=10))
    assert again.payloads == [] and again.error is None


def test_an_api_that_offers_only_get_searches_is_searched_with_get(tmp_path, stac_api):
    stac_api.allow_post = False
    source = stac_source(tmp_path, api=stac_api.base + "/", collections=("flood",))
    result = source.poll({}, now=T0)
    assert result.error is None
    [payload] = result.payloads
    assert payload.path.read_bytes() == b"II*\x00 flood-1"
    assert stac_api.searches == [("GET", {"collections": ["flood"], "limit": "100"})]


def test_an_api_that_is_down_is_an_error_not_an_exception(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    result = stac_source(tmp_path, api=f"http://127.0.0.1:{port}/", timeout_s=1.0).poll(
        {}, now=T0)
    assert result.payloads == [] and "cannot read the STAC API" in result.error
