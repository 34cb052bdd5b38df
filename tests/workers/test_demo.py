"""``tocsin demo``, the README's main job, end to end on the default sample region."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from workers.cli.main import app


def test_the_demo_overlays_every_sample_feed_and_writes_a_report_for_each(
    tmp_path: Path,
) -> None:
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    overlays = tmp_path / "overlays"
    names = sorted(p.name for p in overlays.iterdir())
    assert names == ["flood_depth_run1", "flood_depth_run2", "flood_depth_run3",
                     "rain_forecast", "shakemap_grid", "wind_gust"]
    for name in names:
        assert (overlays / name / "report.html").stat().st_size > 10_000
    people = {
        name: pd.read_csv(overlays / name / "exposure.csv").query("`class` > 0")["population"].sum()
        for name in names
    }
    # The scripted flood grows from run 1 to run 2, then recedes in run 3.
    assert people["flood_depth_run2"] > people["flood_depth_run1"] > people["flood_depth_run3"]
    assert people["shakemap_grid"] > 0 and people["wind_gust"] > 0
    assert "Cut off from the nearest hospital" in result.output
