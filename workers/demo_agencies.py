"""The demo's agencies and feeds: three agencies that want different things, three folders.

- Valley civil protection: every zone of the region, every hazard, yellow and above, on a
  signed webhook, e-mail, its own CAP feed and (where a broker runs) MQTT.
- City health service: the city only, floods and earthquakes, orange and above, by e-mail
  and SMS, in French.
- County emergency desk: the whole county, rainfall, floods and earthquakes, yellow and
  above, on a signed webhook, in German.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import shapely
from pyproj import Transformer
from sqlalchemy.orm import Session

from alerts.model import Agency, ChannelAddress, ChannelKind, Level, Subscription
from alerts.subscriptions import validate_subscription
from feeds.region import load_region_pack
from store import repo

CITY_HALF_WIDTH_DEG = 0.04  # the city health service's area: about 6 km by 9 km


def _region_box(manifest: Path) -> tuple[tuple[float, float, float, float], list[str],
                                         tuple[float, float]]:
    """The region's lon/lat bounds, its zone ids, and its densest cell (the city centre)."""
    pack = load_region_pack(manifest)
    grid = pack.population.grid
    to_lonlat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    bounds = to_lonlat.transform_bounds(*grid.bounds)
    zones = list(pack.zones["zone_id"]) if pack.zones is not None else []
    row, col = np.unravel_index(int(np.ma.argmax(pack.population.data)), grid.shape)
    x, y = grid.transform @ (col + 0.5, row + 0.5)
    lon, lat = to_lonlat.transform(x, y)
    return bounds, zones, (float(lon), float(lat))


def demo_subscriptions(manifest: Path, base_url: str,
                       mqtt_root: str | None) -> list[tuple[Agency, Subscription]]:
    """The three agencies and what each subscribes to."""
    bounds, zones, (lon, lat) = _region_box(manifest)
    city = shapely.box(lon - CITY_HALF_WIDTH_DEG, lat - CITY_HALF_WIDTH_DEG,
                       lon + CITY_HALF_WIDTH_DEG, lat + CITY_HALF_WIDTH_DEG).wkt
    county = shapely.box(*bounds).buffer(0.02, join_style="mitre").wkt
    valley_channels = [ChannelAddress(ChannelKind.WEBHOOK, f"{base_url}/hook/valley"),
                       ChannelAddress(ChannelKind.EMAIL, "duty@valley-protection.example"),
                       ChannelAddress(ChannelKind.CAP_FEED, "valley")]
    if mqtt_root:
        valley_channels.append(ChannelAddress(ChannelKind.MQTT, f"{mqtt_root}/valley"))
    return [
        (Agency("valley-civil-protection", "Valley civil protection", "+41 31 000 00 00"),
         Subscription("valley-all-hazards", "valley-civil-protection", zone_codes=tuple(zones),
                      min_level=Level.YELLOW, channels=tuple(valley_channels),
                      languages=("en",))),
        (Agency("city-health", "City health service"),
         Subscription("city-health-floods-quakes", "city-health", areas_wkt=(city,),
                      hazard_kinds=frozenset({"flood_depth", "shaking_mmi"}),
                      min_level=Level.ORANGE,
                      channels=(ChannelAddress(ChannelKind.EMAIL, "garde@sante-ville.example"),
                                ChannelAddress(ChannelKind.SMS, "+41790000002")),
                      languages=("fr",))),
        (Agency("county-emergency", "County emergency desk"),
         Subscription("county-desk", "county-emergency", areas_wkt=(county,),
                      hazard_kinds=frozenset({"rainfall", "probability", "flood_depth",
                                              "shaking_mmi"}),
                      min_level=Level.YELLOW,
                      channels=(ChannelAddress(ChannelKind.WEBHOOK,
                                               f"{base_url}/hook/county"),),
                      languages=("de",))),
    ]


def register_agencies(session: Session, manifest: Path, base_url: str,
                      mqtt_root: str | None) -> list[Subscription]:
    """Store the demo's agencies and subscriptions (validated as `tocsin subscribe` does)."""
    bounds, zones, _city = _region_box(manifest)
    added = []
    for agency, sub in demo_subscriptions(manifest, base_url, mqtt_root):
        repo.add_agency(session, agency)
        validate_subscription(sub, region_bounds_lonlat=bounds, zone_ids=set(zones),
                              existing=repo.list_subscriptions(session))
        repo.add_subscription(session, sub)
        added.append(sub)
    return added


def write_feeds_file(path: Path | None, manifest: Path, incoming: Path, *,
                     rain_threshold_mm: float) -> None:
    """The demo's feeds TOML: three watched folders, polled every second."""
    assert path is not None
    for name in ("river-forecast", "rain-ensemble", "shakemap"):
        (incoming / name).mkdir(parents=True, exist_ok=True)
    path.write_text(f'''# The demo's feeds: three folders the workers watch (docs/feeds.md).
region = "{manifest.resolve()}"

[[feed]]
id = "river-forecast"
kind = "flood_depth"
poll_interval_s = 1
[feed.source]
type = "directory"
path = "{(incoming / 'river-forecast').resolve()}"
pattern = "*.tif"
settle_s = 0.5

[[feed]]
id = "rain-ensemble"
variable = "precipitation_amount"
time = 0
reduce = "exceedance"
threshold = {rain_threshold_mm}
poll_interval_s = 1
[feed.source]
type = "directory"
path = "{(incoming / 'rain-ensemble').resolve()}"
pattern = "*.nc"
settle_s = 0.5

[[feed]]
id = "shakemap"
variable = "MMI"
poll_interval_s = 1
[feed.source]
type = "directory"
path = "{(incoming / 'shakemap').resolve()}"
pattern = "*.xml"
settle_s = 0.5
''', encoding="utf-8")
