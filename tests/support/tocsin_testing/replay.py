"""Material for the replay tests: a sample region, its feed files, a feeds TOML, a live store.

``make_material(root)`` builds, under ``root``: the deterministic sample region (seed 3,
80 cells a side: flood runs 1-3, a rainfall ensemble and a ShakeMap); a folder of feed
files with one subfolder per feed (the replay's directory source); the demo's feeds TOML
(three feeds, as ``tocsin demo`` watches them); and a live store holding the demo's three
agencies and subscriptions. ``replay_env`` is the environment a replay command runs in.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from feeds.sample import SampleRegion, build_sample_region
from store.db import make_engine, session_scope, upgrade
from workers.demo_agencies import register_agencies, write_feeds_file

FEED_FILES = {
    "river-forecast": ("flood_depth_run1.tif", "flood_depth_run2.tif", "flood_depth_run3.tif"),
    "rain-ensemble": ("rain_forecast.nc",),
    "shakemap": ("shakemap_grid.xml",),
}
WINDOW = ("2024-05-01", "2024-06-01")


@dataclass(frozen=True, slots=True)
class ReplayMaterial:
    """Paths of the replay test material."""

    root: Path
    sample: SampleRegion
    source: Path
    feeds_toml: Path
    live_url: str

    def feed_file(self, name: str) -> Path:
        """A sample feed file by name."""
        return self.sample.root / "feeds" / name


def make_material(root: Path, *, size: int = 80) -> ReplayMaterial:
    """Build the region, the feed folder, the feeds TOML and the live store under ``root``."""
    sample = build_sample_region(root / "region", seed=3, size=size)
    source = root / "source"
    for feed_id, names in FEED_FILES.items():
        (source / feed_id).mkdir(parents=True)
        for name in names:
            shutil.copyfile(sample.root / "feeds" / name, source / feed_id / name)
    feeds_toml = root / "feeds.toml"
    write_feeds_file(feeds_toml, sample.manifest, root / "incoming", rain_threshold_mm=50.0)
    live_url = f"sqlite:///{root / 'live.db'}"
    upgrade(live_url)
    engine = make_engine(live_url)
    with session_scope(engine) as session:
        register_agencies(session, sample.manifest, "https://hooks.example.org", None)
    engine.dispose()
    return ReplayMaterial(root, sample, source, feeds_toml, live_url)


def replay_env(material: ReplayMaterial, **extra: str) -> dict[str, str]:
    """The ``TOCSIN_*`` environment of a replay: the live store, the feeds file."""
    return {"TOCSIN_DATA_DIR": str(material.root / "data"),
            "TOCSIN_DATABASE_URL": material.live_url,
            "TOCSIN_FEEDS_CONFIG": str(material.feeds_toml), "TOCSIN_BROKER_URL": "",
            **extra}


def replay_args(source: Path, out: Path, *more: str) -> list[str]:
    """``replay --archive SOURCE --from .. --to .. --out OUT ...`` over the sample window."""
    return ["replay", "--archive", str(source), "--from", WINDOW[0], "--to", WINDOW[1],
            "--out", str(out), *more]


def cap_files(run_dir: Path) -> dict[str, bytes]:
    """Every CAP message a run wrote, by file name."""
    return {p.name: p.read_bytes() for p in sorted((run_dir / "outputs" / "cap").glob("*.xml"))}
