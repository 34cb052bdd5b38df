"""``tocsin cap validate`` and ``tocsin cap geojson``, run as a user would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from workers.cli.main import app

runner = CliRunner()


def _cap(real_data: Path, folder: str, name: str = "") -> Path:
    return real_data / "cap" / folder / name


def test_validate_accepts_every_real_world_message_and_exits_0(real_data: Path) -> None:
    files = sorted(str(p) for p in _cap(real_data, "real-world").glob("*.xml"))
    result = runner.invoke(app, ["cap", "validate", *files])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert f"{len(files)} file(s) checked, 0 problem(s)" in result.output


def test_validate_prints_one_line_per_problem_and_exits_1(real_data: Path) -> None:
    invalid = sorted(_cap(real_data, "invalid").glob("*.xml"))
    valid = _cap(real_data, "spec-examples", "A2_severe_thunderstorm_warning.xml")
    result = runner.invoke(app, ["cap", "validate", str(valid), *map(str, invalid)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == len(invalid)  # each invalid sample has exactly one problem
    by_file = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in lines}
    assert str(valid) not in by_file
    folder = _cap(real_data, "invalid")
    assert "CAP 1.1 namespace" in by_file[str(folder / "nws-cap11-5c2cf27b.xml")]
    assert "references is missing" in by_file[str(folder / "google-caplib-canada_errors.xml")]
    assert "DOCTYPE" in by_file[str(folder / "google-caplib-xxe-attack.xml")]
    assert "scope" in by_file[str(folder / "google-caplib-invalid.xml")]


def test_validate_profiles_add_rules(real_data: Path) -> None:
    australia = str(_cap(real_data, "real-world", "google-caplib-australia.xml"))
    assert runner.invoke(app, ["cap", "validate", australia]).exit_code == 0
    result = runner.invoke(app, ["cap", "validate", "--profile", "tocsin", australia])
    assert result.exit_code == 1
    assert result.stdout.strip() == (f"{australia}: rule: info[2]: language en-AU already "
                                     "used by info[1]; one info per language")


def test_validate_reports_an_unreadable_file_as_a_problem(tmp_path: Path) -> None:
    result = runner.invoke(app, ["cap", "validate", str(tmp_path / "missing.xml")])
    assert result.exit_code == 1
    assert result.stdout.startswith(f"{tmp_path / 'missing.xml'}: cannot read the file")


def test_geojson_writes_areas_in_lon_lat(real_data: Path) -> None:
    path = _cap(real_data, "spec-examples", "A2_severe_thunderstorm_warning.xml")
    result = runner.invoke(app, ["cap", "geojson", str(path)])
    assert result.exit_code == 0, result.output
    collection = json.loads(result.stdout)
    assert collection["type"] == "FeatureCollection"
    (feature,) = collection["features"]
    assert feature["geometry"]["type"] == "Polygon"
    assert [-120.14, 38.47] in feature["geometry"]["coordinates"][0]
    props = feature["properties"]
    assert props["areaDesc"].startswith("EXTREME NORTH CENTRAL TUOLUMNE COUNTY")
    assert props["geocodes"][0] == {"valueName": "SAME", "value": "006109"}
    assert (props["event"], props["severity"], props["language"]) == (
        "SEVERE THUNDERSTORM", "Severe", "en-US")


def test_geojson_turns_a_zero_radius_circle_into_a_point_and_can_write_a_file(
        real_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "areas.geojson"
    path = _cap(real_data, "spec-examples", "A3_earthquake_report_update.xml")
    result = runner.invoke(app, ["cap", "geojson", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    (feature,) = json.loads(out.read_text(encoding="utf-8"))["features"]
    assert feature["geometry"] == {"type": "Point", "coordinates": [-115.5527, 32.9525]}
    assert feature["properties"]["circles"] == [
        {"lat": 32.9525, "lon": -115.5527, "radius_km": 0.0}]


def test_geojson_gives_a_geometry_less_feature_for_words_only_areas(real_data: Path) -> None:
    path = _cap(real_data, "spec-examples", "A1_homeland_security_advisory.xml")
    (feature,) = json.loads(runner.invoke(app, ["cap", "geojson", str(path)]).stdout)["features"]
    assert feature["geometry"] is None


@pytest.mark.parametrize("name", ["google-caplib-earthquake-cap11.xml",
                                  "google-caplib-xxe-attack.xml"])
def test_geojson_refuses_invalid_input_with_the_reason_and_exit_3(
        real_data: Path, name: str) -> None:
    result = runner.invoke(app, ["cap", "geojson", str(_cap(real_data, "invalid", name))])
    assert result.exit_code == 3
    assert result.stdout == ""
    assert name in result.output and ("CAP 1.1" in result.output or "DOCTYPE" in result.output)
