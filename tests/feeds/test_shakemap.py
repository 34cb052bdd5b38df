"""ShakeMap grid.xml reader on a hand-written 3 x 4 grid (see conftest.SHAKEMAP_3x4)."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from feeds.base import ReadOptions
from feeds.errors import FeedCorruptError, FeedFormatError, FeedNotFoundError, UnknownVariableError
from feeds.shakemap import read_shakemap
from geo.types import HazardKind, Nature


def test_mmi_is_read_north_row_first_on_cell_centred_grid(shakemap_xml: Path) -> None:
    hazard = read_shakemap(shakemap_xml)
    np.testing.assert_allclose(hazard.values_2d(), [[4.0, 4.1, 4.2, 4.3],
                                                    [5.0, 5.1, 7.5, 5.3],
                                                    [6.0, 6.1, 6.2, 6.3]])
    # points are centres: lon -122.2..-121.9 and lat 38.1..37.9, 0.1-degree cells
    assert hazard.grid.bounds == pytest.approx((-122.25, 37.85, -121.85, 38.15))
    assert hazard.grid.crs.to_epsg() == 4326
    assert hazard.data.x.values[2] == pytest.approx(-122.0)
    assert hazard.data.y.values[1] == pytest.approx(38.0)
    assert hazard.kind == HazardKind.SHAKING_MMI and hazard.units == "MMI"
    assert hazard.nature == Nature.OBSERVED and hazard.event_id == "test01"
    assert hazard.issued_at == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert hazard.valid_at == datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
    assert hazard.attrs["magnitude"] == "6.1"


@pytest.mark.parametrize(("field", "kind", "units", "first"), [
    ("pga", HazardKind.SHAKING_PGA, "%g", 1.0),
    ("PGV", HazardKind.SHAKING_PGV, "cm/s", 2.0),
])
def test_pga_and_pgv_fields_are_chosen_case_insensitively(
    shakemap_xml: Path, field: str, kind: HazardKind, units: str, first: float
) -> None:
    hazard = read_shakemap(shakemap_xml, ReadOptions(variable=field))
    assert hazard.kind == kind and hazard.units == units
    assert hazard.values_2d()[0, 0] == first and hazard.values_2d()[2, 3] == first + 2.3


def test_gzipped_grid_is_read_like_the_plain_one(shakemap_xml: Path, tmp_path: Path) -> None:
    gz = tmp_path / "grid.xml.gz"
    gz.write_bytes(gzip.compress(shakemap_xml.read_bytes()))
    np.testing.assert_array_equal(read_shakemap(gz).values_2d(),
                                  read_shakemap(shakemap_xml).values_2d())


def test_unknown_field_lists_the_fields(shakemap_xml: Path) -> None:
    with pytest.raises(UnknownVariableError, match=r"'PSA30'.*\['LON', 'LAT', 'PGA'"):
        read_shakemap(shakemap_xml, ReadOptions(variable="PSA30"))


def test_truncated_grid_and_gzip_are_feed_corrupt(shakemap_xml: Path, tmp_path: Path,
                                                  truncate) -> None:
    gz = tmp_path / "grid.xml.gz"
    gz.write_bytes(gzip.compress(shakemap_xml.read_bytes()))
    with pytest.raises(FeedCorruptError, match="gzip"):
        read_shakemap(truncate(gz, 0.6))
    with pytest.raises(FeedCorruptError, match="not closed|holds"):
        read_shakemap(truncate(shakemap_xml, 0.8))


def test_short_table_is_feed_corrupt(shakemap_xml: Path) -> None:
    text = shakemap_xml.read_text().replace("-121.9 37.9 3.3 4.3 6.3\n", "")
    shakemap_xml.write_text(text)
    with pytest.raises(FeedCorruptError, match="55 numbers; expected 12 points x 5 fields"):
        read_shakemap(shakemap_xml)


def test_entity_declarations_are_refused(shakemap_xml: Path) -> None:
    text = shakemap_xml.read_text().replace(
        "<shakemap_grid", '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>\n<shakemap_grid'
    )
    shakemap_xml.write_text(text)
    with pytest.raises(FeedFormatError, match="DOCTYPE"):
        read_shakemap(shakemap_xml)


def test_other_files_are_format_or_not_found_errors(tmp_path: Path) -> None:
    with pytest.raises(FeedNotFoundError):
        read_shakemap(tmp_path / "grid.xml")
    other = tmp_path / "other.xml"
    other.write_text("<?xml version='1.0'?><alert/>")
    with pytest.raises(FeedFormatError, match="not a ShakeMap"):
        read_shakemap(other)
