"""Loading region packs from TOML manifests, on tiny layers with hand-computed answers.

Default fixture: a 3 x 3 population raster of 1 km cells in EPSG:3035 (upper-left corner
4,000,000 E 3,000,000 N), two zones splitting it at x = 4,001,500 ("A" west, "B" east).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine

from feeds.errors import FeedNotFoundError, ManifestError, MissingCRSError
from feeds.region import load_region_pack
from geo.errors import GeometryRepairedWarning, LayerKindError
from geo.types import Group

X0, Y0 = 4_000_000.0, 3_000_000.0
PEOPLE = np.array([[10.0, 20.0, 30.0], [0.0, 100.0, 5.0], [1.0, 2.0, 3.0]], dtype="float32")


def write_tif(path: Path, values: np.ndarray, *, crs: str | None = "EPSG:3035",
              transform: Affine | None = None, nodata: float | None = None) -> Path:
    profile = {"driver": "GTiff", "height": values.shape[0], "width": values.shape[1],
               "count": 1, "dtype": values.dtype.name, "nodata": nodata,
               "transform": transform or Affine(1000.0, 0.0, X0, 0.0, -1000.0, Y0)}
    if crs is not None:
        profile["crs"] = crs
    with rasterio.Env(), rasterio.open(path, "w", **profile) as dst:
        dst.write(values, 1)
    return path


def write_zones(path: Path, *, crs: str | None = "EPSG:3035", **columns: list) -> Path:
    data = {"zone_id": ["A", "B"], "name": ["West", "East"], "disab": [0.2, 0.1],
            "eld_pct": [25.0, 12.5]}
    data.update(columns)
    geoms = [shapely.box(X0, Y0 - 3000, X0 + 1500, Y0), shapely.box(X0 + 1500, Y0 - 3000,
                                                                    X0 + 3000, Y0)]
    gpd.GeoDataFrame(data, geometry=geoms[: len(data["zone_id"])], crs=crs).to_file(path)
    return path


def write_manifest(folder: Path, body: str, *, population: str = "") -> Path:
    """A manifest with [region] and [population] (override the latter with ``population``)."""
    pop = population or '[population]\npath = "population.tif"\nkind = "counts"\n'
    path = folder / "region.toml"
    path.write_text('[region]\nname = "Tiny"\n\n' + pop + "\n" + body, encoding="utf-8")
    return path


@pytest.fixture
def pack_dir(tmp_path: Path) -> Path:
    write_tif(tmp_path / "population.tif", PEOPLE)
    write_zones(tmp_path / "zones.gpkg")
    return tmp_path


ZONES = '[zones]\npath = "zones.gpkg"\nid = "zone_id"\nname = "name"\n'


def _zone_area_km2(south: float, north: float, dlon: float) -> float:
    """Area of a lat/lon cell on the WGS84 ellipsoid, closed form (authalic zone formula)."""
    a, f = 6378137.0, 1 / 298.257223563
    b, e = a * (1 - f), math.sqrt(f * (2 - f))

    def band(lat: float) -> float:  # area from the equator to ``lat``, all longitudes
        s = math.sin(math.radians(lat))
        return math.pi * b * b * (s / (1 - e * e * s * s)
                                  + math.log((1 + e * s) / (1 - e * s)) / (2 * e))

    return (band(north) - band(south)) * dlon / 360.0 / 1e6


def test_density_on_a_lat_lon_grid_becomes_counts_with_true_cell_areas(tmp_path: Path) -> None:
    # 0.1 degree cells from 46.0 to 46.3 N: about 7.7 km x 11.1 km = 85.7 km2, a little
    # smaller in the northern row. counts = density x area of the cell's row.
    density = np.array([[10, 20, 30], [0, 100, 5], [1, 2, 3]], dtype="float32")
    write_tif(tmp_path / "population.tif", density, crs="EPSG:4326",
              transform=Affine(0.1, 0.0, 7.0, 0.0, -0.1, 46.3))
    manifest = write_manifest(tmp_path, "", population=(
        '[population]\npath = "population.tif"\nkind = "density"\n'))
    pack = load_region_pack(manifest)
    rows_km2 = [_zone_area_km2(46.2, 46.3, 0.1), _zone_area_km2(46.1, 46.2, 0.1),
                _zone_area_km2(46.0, 46.1, 0.1)]
    assert rows_km2[0] == pytest.approx(85.6, abs=0.2)
    expected = density * np.array(rows_km2)[:, None]
    # Grid.cell_areas_m2 closes each cell with geodesic edges rather than parallels: the
    # difference from the zone formula is ~1e-7 relative.
    np.testing.assert_allclose(pack.population.filled(), expected, rtol=1e-6)
    assert pack.population.units == "people"


def test_counts_are_kept_as_they_are(pack_dir: Path) -> None:
    pack = load_region_pack(write_manifest(pack_dir, ""))
    np.testing.assert_array_equal(pack.population.filled(), PEOPLE)
    assert pack.zones is None and pack.facilities is None and pack.friction is None
    assert pack.min_public_count == 5 and pack.access_threshold_min == 60.0


def test_nodata_cells_stay_masked(tmp_path: Path) -> None:
    values = PEOPLE.copy()
    values[0, 0] = -1
    write_tif(tmp_path / "population.tif", values, nodata=-1)
    pack = load_region_pack(write_manifest(tmp_path, ""))
    assert pack.population.data.mask[0, 0] and pack.population.valid_count == 8
    assert float(pack.population.data.sum()) == pytest.approx(PEOPLE.sum() - 10)


def test_counts_declared_as_density_on_large_cells_raise_layer_kind_error(tmp_path) -> None:
    # 10 km cells (100 km2) holding 500,000 people each: read as people/km2 that is a
    # population-weighted density of 500,000/km2, over the 100,000 limit.
    write_tif(tmp_path / "population.tif", np.full((3, 3), 5e5, dtype="float32"),
              transform=Affine(10_000.0, 0.0, X0, 0.0, -10_000.0, Y0))
    pop = '[population]\npath = "population.tif"\nkind = "{}"\n'
    with pytest.raises(LayerKindError, match="look like counts"):
        load_region_pack(write_manifest(tmp_path, "", population=pop.format("density")))
    pack = load_region_pack(write_manifest(tmp_path, "", population=pop.format("counts")))
    assert float(pack.population.data.sum()) == pytest.approx(4.5e6)  # 5,000/km2: plausible


def test_density_declared_as_counts_on_small_cells_raise_layer_kind_error(tmp_path) -> None:
    # 100 m cells (0.01 km2) of 5,000 people/km2: read as counts, 5,000 people per cell is
    # 500,000 people/km2. Read as a density, each cell holds 5000 x 0.01 = 50 people.
    write_tif(tmp_path / "population.tif", np.full((3, 3), 5000.0, dtype="float32"),
              transform=Affine(100.0, 0.0, X0, 0.0, -100.0, Y0))
    pop = '[population]\npath = "population.tif"\nkind = "{}"\n'
    with pytest.raises(LayerKindError, match="look like density"):
        load_region_pack(write_manifest(tmp_path, "", population=pop.format("counts")))
    pack = load_region_pack(write_manifest(tmp_path, "", population=pop.format("density")))
    np.testing.assert_allclose(pack.population.filled(), 50.0, rtol=1e-6)
    raised = pop.format("counts") + "max_density_km2 = 1000000\n"
    assert load_region_pack(write_manifest(tmp_path, "", population=raised)).population


def test_negative_population_is_refused(tmp_path: Path) -> None:
    write_tif(tmp_path / "population.tif", -PEOPLE)
    with pytest.raises(ManifestError, match=r"\[population\].*negative"):
        load_region_pack(write_manifest(tmp_path, ""))


def test_raster_without_crs_needs_one_from_the_manifest(tmp_path: Path) -> None:
    write_tif(tmp_path / "population.tif", PEOPLE, crs=None)
    with pytest.raises(MissingCRSError, match=r"population.tif.*has no CRS"):
        load_region_pack(write_manifest(tmp_path, ""))
    with_crs = '[population]\npath = "population.tif"\ncrs = "EPSG:3035"\n'
    assert load_region_pack(write_manifest(tmp_path, "", population=with_crs)
                            ).population.grid.crs.to_epsg() == 3035
    default = tmp_path / "default.toml"
    default.write_text('[region]\nname = "T"\ncrs = "EPSG:3035"\n[population]\n'
                       'path = "population.tif"\n', encoding="utf-8")
    assert load_region_pack(default).population.grid.crs.to_epsg() == 3035


def test_a_manifest_crs_contradicting_the_file_is_refused(pack_dir: Path) -> None:
    pop = '[population]\npath = "population.tif"\ncrs = "EPSG:4326"\n'
    with pytest.raises(ManifestError, match=r"\[population\] crs = 'EPSG:4326', but "
                       r"population.tif declares EPSG:3035"):
        load_region_pack(write_manifest(pack_dir, "", population=pop))


def test_missing_file_manifest_and_section_are_named(tmp_path: Path) -> None:
    with pytest.raises(FeedNotFoundError, match="manifest not found"):
        load_region_pack(tmp_path / "nothing.toml")
    manifest = write_manifest(tmp_path, "")
    with pytest.raises(ManifestError, match=r"region.toml: \[population\] path = "
                       r"'population.tif': file not found"):
        load_region_pack(manifest)
    manifest.write_text('[region]\nname = "x"\n', encoding="utf-8")
    with pytest.raises(ManifestError, match=r"\[population\] section is missing"):
        load_region_pack(manifest)
    manifest.write_text("[region\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="not valid TOML"):
        load_region_pack(manifest)


def test_unknown_fields_and_kinds_are_refused_with_the_allowed_ones(pack_dir: Path) -> None:
    typo = '[population]\npath = "population.tif"\nknid = "counts"\n'
    with pytest.raises(ManifestError, match=r"unknown field\(s\) \['knid'\]; allowed"):
        load_region_pack(write_manifest(pack_dir, "", population=typo))
    bad = '[population]\npath = "population.tif"\nkind = "people"\n'
    with pytest.raises(ManifestError, match="kind must be 'counts' or 'density'"):
        load_region_pack(write_manifest(pack_dir, "", population=bad))


def test_zones_are_loaded_with_text_ids_in_the_population_crs(pack_dir: Path) -> None:
    pack = load_region_pack(write_manifest(pack_dir, ZONES))
    assert list(pack.zones.columns) == ["zone_id", "name", "geometry"]
    assert pack.zones["zone_id"].tolist() == ["A", "B"]
    assert pack.zones["name"].tolist() == ["West", "East"]
    assert pack.zones.crs.to_epsg() == 3035
    assert pack.zones.area.tolist() == [4.5e6, 4.5e6]


def test_zones_in_another_crs_are_reprojected(pack_dir: Path) -> None:
    zones = gpd.read_file(pack_dir / "zones.gpkg").to_crs("EPSG:4326")
    zones.to_file(pack_dir / "zones_ll.gpkg")
    body = ZONES.replace("zones.gpkg", "zones_ll.gpkg")
    pack = load_region_pack(write_manifest(pack_dir, body))
    assert pack.zones.crs.to_epsg() == 3035
    np.testing.assert_allclose(pack.zones.total_bounds, [X0, Y0 - 3000, X0 + 3000, Y0],
                               atol=1e-3)


def test_shapefile_without_prj_needs_the_crs_in_the_manifest(pack_dir: Path) -> None:
    write_zones(pack_dir / "zones.shp")
    (pack_dir / "zones.prj").unlink()
    body = ZONES.replace("zones.gpkg", "zones.shp")
    with pytest.raises(MissingCRSError, match=r"zones.shp: has no CRS; set crs in \[zones\]"):
        load_region_pack(write_manifest(pack_dir, body))
    pack = load_region_pack(write_manifest(pack_dir, body + 'crs = "EPSG:3035"\n'))
    assert pack.zones.crs.to_epsg() == 3035


def test_missing_id_column_lists_the_columns_that_exist(pack_dir: Path) -> None:
    body = ZONES.replace('id = "zone_id"', 'id = "code"')
    with pytest.raises(ManifestError, match=r"\[zones\] id = 'code': no such column; the "
                       r"columns are \['zone_id', 'name', 'disab', 'eld_pct'\]"):
        load_region_pack(write_manifest(pack_dir, body))


def test_duplicate_zone_ids_are_refused(pack_dir: Path) -> None:
    write_zones(pack_dir / "zones.gpkg", zone_id=["A", "A"])
    with pytest.raises(ManifestError, match=r"unique; 'zone_id' repeats \['A'\]"):
        load_region_pack(write_manifest(pack_dir, ZONES))


def test_invalid_zone_is_repaired_with_a_warning_naming_it(pack_dir: Path) -> None:
    # A bow-tie: two triangles of 1.5 km x 1.5 km / 4 = 0.5625 km2 each after make_valid.
    bowtie = shapely.Polygon([(X0, Y0), (X0 + 1500, Y0 - 1500), (X0 + 1500, Y0),
                              (X0, Y0 - 1500)])
    frame = gpd.GeoDataFrame({"zone_id": ["A", "B"], "name": ["W", "E"]},
                             geometry=[bowtie, shapely.box(X0 + 1500, Y0 - 3000, X0 + 3000, Y0)],
                             crs="EPSG:3035")
    frame.to_file(pack_dir / "zones.gpkg")
    with pytest.warns(GeometryRepairedWarning, match=r"repaired 1 invalid geometry.*\['A'\]"):
        pack = load_region_pack(write_manifest(pack_dir, ZONES))
    assert pack.zones.is_valid.all()
    assert pack.zones.area.iloc[0] == pytest.approx(2 * 0.5625e6)


def test_zones_outside_the_population_raster_are_refused(pack_dir: Path) -> None:
    far = gpd.read_file(pack_dir / "zones.gpkg")
    far["geometry"] = far.translate(xoff=1e6)
    far.to_file(pack_dir / "zones.gpkg")
    with pytest.raises(ManifestError, match="no zone overlaps the population raster"):
        load_region_pack(write_manifest(pack_dir, ZONES))


def test_rates_from_a_share_column_and_a_percent_column(pack_dir: Path) -> None:
    body = ZONES + ('[groups.disability]\nrate_column = "disab"\n'
                    '[groups.older]\nrate_column = "eld_pct"\nrate_unit = "percent"\n')
    pack = load_region_pack(write_manifest(pack_dir, body))
    assert pack.groups[Group.DISABILITY].rate_by_zone.to_dict() == {"A": 0.2, "B": 0.1}
    assert pack.groups[Group.OLDER].rate_by_zone.to_dict() == {"A": 0.25, "B": 0.125}
    assert not pack.groups[Group.OLDER].is_registry


@pytest.mark.parametrize(
    ("values", "unit", "message"),
    [
        ([0.2, 1.5], "share", r"within 0..1 \(share\); got \[1.5\] for zones \['B'\]$"),
        ([20.0, 12.0], "share", "look like percentages"),
        ([20.0, 120.0], "percent", r"within 0..100 \(percent\); got \[120.0\]"),
        ([-0.1, 0.1], "share", r"got \[-0.1\] for zones \['A'\]"),
    ],
)
def test_rates_out_of_range_are_refused_naming_the_zones(pack_dir, values, unit, message):
    write_zones(pack_dir / "zones.gpkg", disab=values)
    body = ZONES + f'[groups.disability]\nrate_column = "disab"\nrate_unit = "{unit}"\n'
    with pytest.raises(ManifestError, match=r"\[groups.disability\] rate_column: .*" + message):
        load_region_pack(write_manifest(pack_dir, body))


def test_empty_rates_pass_as_gaps_but_text_is_refused(pack_dir: Path) -> None:
    write_zones(pack_dir / "zones.gpkg", disab=[0.2, None])
    body = ZONES + '[groups.disability]\nrate_column = "disab"\n'
    rates = load_region_pack(write_manifest(pack_dir, body)).groups[Group.DISABILITY]
    assert rates.rate_by_zone["A"] == 0.2 and np.isnan(rates.rate_by_zone["B"])
    write_zones(pack_dir / "zones.gpkg", disab=["0.2", "n/a"])
    with pytest.raises(ManifestError, match=r"rates must be numbers; got \['n/a'\] for zones "
                       r"\['B'\]"):
        load_region_pack(write_manifest(pack_dir, body))


def test_rates_from_a_table_must_cover_every_zone(pack_dir: Path) -> None:
    (pack_dir / "rates.csv").write_text("zone_id,rate\nA,0.3\nB,0.05\n", encoding="utf-8")
    body = ZONES + '[groups.disability]\nrate_table = "rates.csv"\n'
    pack = load_region_pack(write_manifest(pack_dir, body))
    assert pack.groups[Group.DISABILITY].rate_by_zone.to_dict() == {"A": 0.3, "B": 0.05}
    (pack_dir / "rates.csv").write_text("zone_id,rate\nA,0.3\nC,0.05\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"unknown zone ids \['C'\], zones without a rate "
                       r"\['B'\]"):
        load_region_pack(write_manifest(pack_dir, body))


def test_rate_raster_must_be_on_the_population_grid(pack_dir: Path) -> None:
    write_tif(pack_dir / "older.tif", np.full((3, 3), 0.2, dtype="float32"))
    body = '[groups.older]\nrate_raster = "older.tif"\n'
    layer = load_region_pack(write_manifest(pack_dir, body)).groups[Group.OLDER]
    np.testing.assert_allclose(layer.rate_raster.filled(), 0.2, rtol=1e-6)
    write_tif(pack_dir / "older.tif", np.full((2, 2), 0.2, dtype="float32"))
    with pytest.raises(ValueError, match=r"\[groups.older\] rate_raster older.tif is on a "
                       "different grid"):
        load_region_pack(write_manifest(pack_dir, body))


def test_group_rates_need_zones_and_a_known_group_name(pack_dir: Path) -> None:
    with pytest.raises(ManifestError, match=r"rate_column gives rates per zone, but there is "
                       r"no \[zones\]"):
        load_region_pack(write_manifest(pack_dir, '[groups.older]\nrate_column = "x"\n'))
    with pytest.raises(ManifestError, match=r"unknown group 'children'; allowed: "
                       r"\['disability', 'older', 'electricity_dependent'\]"):
        load_region_pack(write_manifest(pack_dir, '[groups.children]\nrate_column = "x"\n'))


def test_registry_records_are_counted_per_population_cell(pack_dir: Path) -> None:
    # Cell (row 0, col 0) spans x 4,000,000-4,001,000, y 2,999,000-3,000,000.
    (pack_dir / "registry.csv").write_text(
        "record_id,x,y,crs\n1,4000500,2999500,EPSG:3035\n2,4000900,2999100,EPSG:3035\n"
        "3,4002500,2997500,EPSG:3035\n", encoding="utf-8")
    body = '[groups.electricity_dependent]\nregistry = "registry.csv"\n'
    layer = load_region_pack(write_manifest(pack_dir, body)).groups[Group.ELECTRICITY_DEPENDENT]
    assert layer.is_registry
    np.testing.assert_array_equal(layer.registry_counts.filled(),
                                  [[2, 0, 0], [0, 0, 0], [0, 0, 1]])


def test_registry_problems_are_reported_with_the_section(pack_dir: Path) -> None:
    (pack_dir / "registry.csv").write_text("id,x,y\n1,4000500,2999500\n", encoding="utf-8")
    body = '[groups.electricity_dependent]\nregistry = "registry.csv"\n'
    with pytest.raises(ManifestError, match=r"\[groups.electricity_dependent\] registry: .*"
                       "need a CRS"):
        load_region_pack(write_manifest(pack_dir, body))


def _facilities(folder: Path, types: list[str]) -> None:
    points = [shapely.Point(X0 + 500 + 900 * i, Y0 - 500) for i in range(len(types))]
    gpd.GeoDataFrame({"fid_": [f"F{i}" for i in range(len(types))], "kind": types,
                      "label": [f"Place {i}" for i in range(len(types))]},
                     geometry=points, crs="EPSG:3035").to_file(folder / "fac.gpkg")


FACILITIES = '[facilities]\npath = "fac.gpkg"\nid = "fid_"\ntype = "kind"\nname = "label"\n'


def test_facility_types_are_normalised_and_mapped(pack_dir: Path) -> None:
    _facilities(pack_dir, ["hospital", "Care Home", "nursing home"])
    body = FACILITIES + '[facilities.type_map]\n"nursing home" = "care_home"\n'
    fac = load_region_pack(write_manifest(pack_dir, body)).facilities
    assert fac["type"].tolist() == ["hospital", "care_home", "care_home"]
    assert fac["facility_id"].tolist() == ["F0", "F1", "F2"]
    assert list(fac.columns) == ["facility_id", "name", "type", "geometry"]


def test_unknown_facility_type_is_refused_naming_the_allowed_ones(pack_dir: Path) -> None:
    _facilities(pack_dir, ["hospital", "clinic"])
    with pytest.raises(ManifestError, match=r"unknown value\(s\) \['clinic'\]; allowed: "
                       r"\['hospital', 'care_home', 'shelter', 'school'\]"):
        load_region_pack(write_manifest(pack_dir, FACILITIES))


def test_friction_in_seconds_per_metre_is_converted_and_must_be_positive(pack_dir) -> None:
    write_tif(pack_dir / "friction.tif", np.full((3, 3), 0.72, dtype="float32"))  # 5 km/h
    body = '[friction]\npath = "friction.tif"\nunits = "s/m"\n'
    friction = load_region_pack(write_manifest(pack_dir, body)).friction
    np.testing.assert_allclose(friction.filled(), 0.012, rtol=1e-6)
    assert friction.units == "min/m"
    write_tif(pack_dir / "friction.tif", np.zeros((3, 3), dtype="float32"))
    with pytest.raises(ManifestError, match="friction must be positive"):
        load_region_pack(write_manifest(pack_dir, body))


def test_a_clean_pack_loads_without_any_warning(pack_dir: Path) -> None:
    _facilities(pack_dir, ["school"])
    body = ZONES + '[groups.disability]\nrate_column = "disab"\n' + FACILITIES
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pack = load_region_pack(write_manifest(pack_dir, body))
    assert pack.source.endswith("region.toml") and pack.name == "Tiny"
