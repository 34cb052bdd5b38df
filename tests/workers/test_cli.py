"""The ``tocsin`` command line, run as a user would, on a small sample region."""

from __future__ import annotations

import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from typer.testing import CliRunner

from feeds.sample import SampleRegion, build_sample_region
from workers.cli.main import EXIT_INPUT_ERROR, EXIT_OVERLAY_ERROR, app

runner = CliRunner()


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleRegion:
    return build_sample_region(tmp_path_factory.mktemp("region"), seed=3, size=120)


def _flood(sample: SampleRegion, run: int = 2) -> Path:
    return sample.root / "feeds" / f"flood_depth_run{run}.tif"


def test_help_explains_every_command_and_the_exit_codes() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for word in ("overlay", "region", "demo", "Exit codes"):
        assert word in result.output


def test_overlay_on_a_region_pack_writes_every_output(sample: SampleRegion, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["overlay", str(_flood(sample)), "--region",
                                 str(sample.manifest), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("exposure.csv", "access.csv", "footprint.gpkg", "map.png", "report.html"):
        assert (out / name).stat().st_size > 0, name
    exposure = pd.read_csv(out / "exposure.csv")
    for column in ("zone_id", "class", "lower", "upper", "population", "disability", "older",
                   "electricity_dependent", "hospital", "cut_off_hospital_population"):
        assert column in exposure.columns
    with rasterio.open(sample.root / "population.tif") as src:
        total = float(np.nansum(src.read(1, masked=True).filled(0)))
    assert exposure["population"].sum() == pytest.approx(total, rel=1e-6)
    footprint = gpd.read_file(out / "footprint.gpkg")
    assert set(footprint["class"]) <= {1, 2, 3} and footprint.is_valid.all()
    assert (out / "map.png").read_bytes().startswith(b"\x89PNG")
    assert "People" in result.output and "0.5 to 1.5 m" in result.output


def test_the_report_is_accessible_and_self_contained(sample: SampleRegion, tmp_path: Path) -> None:
    runner.invoke(app, ["overlay", str(_flood(sample)), "--region", str(sample.manifest),
                        "--out", str(tmp_path)])
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert '<html lang="en">' in page
    assert page.count("<caption>") >= 4
    assert 'scope="col"' in page and 'scope="row"' in page
    alt = re.search(r'<img src="data:image/png;base64,[^"]+" alt="([^"]+)"', page)
    assert alt is not None and "km²" in alt.group(1)
    assert "http://" not in page and "https://" not in page  # nothing fetched when opened


def test_public_outputs_hide_small_registry_counts_and_owner_outputs_do_not(
    sample: SampleRegion, tmp_path: Path
) -> None:
    args = ["overlay", str(_flood(sample)), "--region", str(sample.manifest), "--out"]
    runner.invoke(app, [*args, str(tmp_path / "public")])
    runner.invoke(app, [*args, str(tmp_path / "owner"), "--audience", "owner"])
    public = pd.read_csv(tmp_path / "public" / "exposure.csv")["electricity_dependent"]
    owner = pd.read_csv(tmp_path / "owner" / "exposure.csv")["electricity_dependent"]
    small = (owner.round() > 0) & (owner.round() < 5)
    assert small.any(), "the sample should hold some small registry counts"
    assert public[small].isna().all()
    assert (public[~small].fillna(-1) == owner[~small].round().fillna(-1)).all()


def test_loose_layers_and_explicit_breaks_work_without_a_region_pack(
    sample: SampleRegion, tmp_path: Path
) -> None:
    result = runner.invoke(app, [
        "overlay", str(_flood(sample)), "--population", str(sample.root / "population.tif"),
        "--zones", str(sample.root / "zones.gpkg"), "--breaks", "0.3,1", "--out", str(tmp_path),
    ])
    assert result.exit_code == 0, result.output
    exposure = pd.read_csv(tmp_path / "exposure.csv")
    assert sorted(exposure["class"].unique()) == [0, 1, 2]
    assert exposure.loc[exposure["class"] == 2, "lower"].iloc[0] == 1.0
    assert (tmp_path / "region.toml").exists()


def test_an_unreadable_hazard_exits_3_naming_the_file(sample: SampleRegion, tmp_path: Path) -> None:
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 40)
    result = runner.invoke(app, ["overlay", str(bad), "--region", str(sample.manifest),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == EXIT_INPUT_ERROR
    assert "broken.tif" in result.output


def test_a_hazard_that_misses_the_region_exits_4(sample: SampleRegion, tmp_path: Path) -> None:
    far = tmp_path / "far.tif"
    with rasterio.open(far, "w", driver="GTiff", height=5, width=5, count=1, dtype="float32",
                       crs="EPSG:3035", transform=Affine(100, 0, 100_000, 0, -100, 100_000)) as dst:
        dst.write(np.ones((1, 5, 5), dtype="float32"))
    result = runner.invoke(app, ["overlay", str(far), "--kind", "flood_depth", "--region",
                                 str(sample.manifest), "--out", str(tmp_path / "out")])
    assert result.exit_code == EXIT_OVERLAY_ERROR
    assert "overlap" in result.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--breaks", "1,abc"], "--breaks"), (["--audience", "press"], "--audience")],
)
def test_bad_options_exit_2_with_a_message(
    sample: SampleRegion, tmp_path: Path, extra: list[str], message: str
) -> None:
    result = runner.invoke(app, ["overlay", str(_flood(sample)), "--region",
                                 str(sample.manifest), "--out", str(tmp_path), *extra])
    assert result.exit_code == 2
    assert message in result.output


def test_decreasing_breaks_exit_4_saying_what_is_expected(
    sample: SampleRegion, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["overlay", str(_flood(sample)), "--region",
                                 str(sample.manifest), "--out", str(tmp_path),
                                 "--breaks", "1,0.5"])
    assert result.exit_code == EXIT_OVERLAY_ERROR
    assert "strictly increasing" in result.output


def test_region_sample_builds_a_pack_that_lists_its_feeds(tmp_path: Path) -> None:
    result = runner.invoke(app, ["region", "sample", "--out", str(tmp_path), "--size", "60"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "region.toml").exists()
    assert "flood_depth_run1.tif" in result.output and "wind_gust.grib2" in result.output


def test_a_window_by_window_overlay_counts_the_same_people_as_the_in_memory_one(
    sample: SampleRegion, tmp_path: Path
) -> None:
    args = ["overlay", str(_flood(sample)), "--population", str(sample.root / "population.tif"),
            "--zones", str(sample.root / "zones.gpkg"), "--out"]
    assert runner.invoke(app, [*args, str(tmp_path / "mem")]).exit_code == 0
    result = runner.invoke(app, [*args, str(tmp_path / "win"), "--windowed"])
    assert result.exit_code == 0, result.output
    keys = ["zone_id", "class"]
    mem = pd.read_csv(tmp_path / "mem" / "exposure.csv").set_index(keys)["population"]
    win = pd.read_csv(tmp_path / "win" / "exposure.csv").set_index(keys)["population"]
    pd.testing.assert_series_equal(win.sort_index(), mem.sort_index(), rtol=1e-6)
    assert (tmp_path / "win" / "report.html").exists()
