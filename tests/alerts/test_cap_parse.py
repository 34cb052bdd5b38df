"""The hardened CAP 1.2 parser: the spec examples, hostile and invalid input, real messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from shapely import Point, box

from alerts.cap_geometry import UnknownGeocodeWarning, footprint_of
from alerts.cap_parse import parse_cap, secure_parse, validate_cap
from alerts.errors import CapError
from alerts.model import Category, Certainty, MsgType, Reference, Scope, Severity, Status

PDT = timezone(timedelta(hours=-7))


def _read(real_data: Path, folder: str, name: str) -> bytes:
    return (real_data / "cap" / folder / name).read_bytes()


def test_spec_example_a2_maps_every_field_and_its_polygon_is_lat_lon(real_data: Path) -> None:
    event = parse_cap(_read(real_data, "spec-examples", "A2_severe_thunderstorm_warning.xml"))
    assert (event.identifier, event.sender) == ("KSTO1055887203", "KSTO@NWS.NOAA.GOV")
    assert event.sent == datetime(2003, 6, 17, 14, 57, tzinfo=PDT)
    assert (event.status, event.msg_type, event.scope) == (Status.ACTUAL, MsgType.ALERT,
                                                           Scope.PUBLIC)
    (info,) = event.infos
    assert info.language == "en-US"  # absent in the file: CAP's default
    assert info.category == (Category.MET,) and info.severity is Severity.SEVERE
    assert info.certainty is Certainty.OBSERVED
    assert info.event_codes == (("SAME", "SVR"),)
    assert info.expires == datetime(2003, 6, 17, 16, 0, tzinfo=PDT)
    (area,) = info.areas
    assert area.polygons[0][0] == (38.47, -120.14)
    assert len(area.polygons[0]) == 5 and area.polygons[0][0] == area.polygons[0][-1]
    assert area.geocodes == (("SAME", "006109"), ("SAME", "006009"), ("SAME", "006003"))


def test_spec_example_a2_footprint_puts_the_first_vertex_at_lon_lat(real_data: Path) -> None:
    event = parse_cap(_read(real_data, "spec-examples", "A2_severe_thunderstorm_warning.xml"))
    with pytest.warns(UnknownGeocodeWarning, match="SAME:006109, SAME:006009, SAME:006003"):
        footprint = footprint_of(event)
    assert footprint.geom_type == "Polygon"
    assert footprint.boundary.distance(Point(-120.14, 38.47)) == 0
    # The swapped reading (lon 38.47, lat -120.14) is nowhere near it.
    assert footprint.distance(Point(38.47, -120.14)) > 100
    assert footprint.bounds == pytest.approx((-120.14, 38.34, -119.74, 38.62))


def test_geocodes_become_footprint_through_a_lookup_and_unknown_ones_are_reported(
        real_data: Path) -> None:
    event = parse_cap(_read(real_data, "spec-examples", "A2_severe_thunderstorm_warning.xml"))
    alpine = box(-120.1, 38.5, -119.5, 38.9)   # stand-ins for two counties
    calaveras = box(-121.0, 38.0, -120.3, 38.5)
    lookup = {"SAME:006003": alpine, "006009": calaveras}
    with pytest.warns(UnknownGeocodeWarning, match="SAME:006109") as caught:
        footprint = footprint_of(event, lookup)
    assert "006009" not in str(caught[0].message) and "006003" not in str(caught[0].message)
    assert footprint.covers(alpine) and footprint.covers(calaveras)
    assert footprint.covers(Point(-120.14, 38.47))


def test_spec_example_a3_is_an_update_with_a_reference_and_a_point_circle(
        real_data: Path) -> None:
    event = parse_cap(_read(real_data, "spec-examples", "A3_earthquake_report_update.xml"))
    assert event.msg_type is MsgType.UPDATE
    assert event.references == (Reference("trinet@caltech.edu", "TRI13970876.1",
                                          datetime(2003, 6, 11, 20, 30, tzinfo=PDT)),)
    (info,) = event.infos
    assert info.expires is None  # CAP allows it; Tocsin's own messages always have one
    assert info.areas[0].circles == (((32.9525, -115.5527), 0.0),)
    assert ("Magnitude", "3.4 Ml") in info.parameters
    assert footprint_of(event).equals(Point(-115.5527, 32.9525))  # radius 0: the centre


def test_spec_example_a4_has_one_info_per_language(real_data: Path) -> None:
    event = parse_cap(_read(real_data, "spec-examples", "A4_amber_alert_multilingual.xml"))
    assert [info.language for info in event.infos] == ["en-US", "es-US"]
    assert event.infos[0].event != event.infos[1].event


def test_spec_example_a1_area_is_words_only_and_its_footprint_is_empty(
        real_data: Path) -> None:
    event = parse_cap(_read(real_data, "spec-examples", "A1_homeland_security_advisory.xml"))
    (area,) = event.infos[0].areas
    assert area.description == "U.S. nationwide and interests worldwide"
    assert (area.polygons, area.circles, area.geocodes) == ((), (), ())
    assert footprint_of(event).is_empty


INVALID = {
    "google-caplib-invalid.xml": "Expected is one of .*scope",
    "google-caplib-earthquake-cap11.xml": "CAP 1.1 namespace .*only CAP 1.2 .* is accepted",
    "nws-cap11-5c2cf27b.xml": "CAP 1.1 namespace .*only CAP 1.2 .* is accepted",
    "google-caplib-xxe-attack.xml": "DOCTYPE declaration: DTDs and entities are refused",
    "google-caplib-canada_errors.xml": "msgType is Update but references is missing",
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_every_invalid_sample_is_refused_with_the_reason(real_data: Path, name: str) -> None:
    with pytest.raises(CapError, match=INVALID[name]):
        parse_cap(_read(real_data, "invalid", name))
    assert validate_cap(_read(real_data, "invalid", name))


def test_the_invalid_samples_folder_holds_exactly_the_files_checked(real_data: Path) -> None:
    assert sorted(p.name for p in (real_data / "cap" / "invalid").glob("*.xml")) == \
        sorted(INVALID)


REAL_WORLD = ["google-PAAQ-4-mg5a94.xml", "google-caplib-australia.xml",
              "google-caplib-canada.xml", "google-caplib-canada_signed.xml",
              "google-caplib-earthquake-iso8859-1.xml", "google-caplib-wcatwc-warning.xml",
              "ipaws-5e6dd964023f1930ef638846.xml", "ipaws-5e6dd9de023f1930ef6548d9.xml",
              "ipaws-5e6ddbad023f1930ef6c1a5a.xml", "ipaws-5e7e0fc5023f1930efcf3deb.xml",
              "ipaws-5ea321f39fc226a7b44b6874.xml", "pelmorex-naads-wind-warning.xml"]


@pytest.mark.parametrize("name", REAL_WORLD)
def test_every_real_world_message_parses_and_validates(real_data: Path, name: str) -> None:
    data = _read(real_data, "real-world", name)
    assert validate_cap(data) == []
    event = parse_cap(data)
    assert event.identifier and event.sent.utcoffset() is not None


def test_the_real_world_list_is_the_whole_folder(real_data: Path) -> None:
    found = sorted(p.name for p in (real_data / "cap" / "real-world").glob("*.xml"))
    assert found == sorted(REAL_WORLD)


def test_real_world_specifics_survive_parsing(real_data: Path) -> None:
    cancel = parse_cap(_read(real_data, "real-world", "ipaws-5e6dd9de023f1930ef6548d9.xml"))
    assert cancel.msg_type is MsgType.CANCEL and cancel.infos == () and cancel.references
    big = parse_cap(_read(real_data, "real-world", "ipaws-5ea321f39fc226a7b44b6874.xml"))
    (resource,) = big.infos[0].resources
    assert resource.content is not None and len(resource.content) == 335_735
    naads = parse_cap(_read(real_data, "real-world", "pelmorex-naads-wind-warning.xml"))
    assert [info.language for info in naads.infos] == ["fr-CA", "en-CA"]
    quake = parse_cap(_read(real_data, "real-world", "google-caplib-earthquake-iso8859-1.xml"))
    assert quake.sent == datetime(2012, 10, 14, 22, 53, 4, tzinfo=UTC)


def test_an_iso_8859_1_message_is_decoded_by_its_declaration(real_data: Path) -> None:
    text = _read(real_data, "spec-examples", "A2_severe_thunderstorm_warning.xml").decode()
    text = text.replace('encoding = "UTF-8"', 'encoding = "ISO-8859-1"').replace(
        "NATIONAL WEATHER SERVICE SACRAMENTO CA", "Météo à Genève")
    event = parse_cap(text.encode("iso-8859-1"))
    assert event.infos[0].sender_name == "Météo à Genève"


CAP = "urn:oasis:names:tc:emergency:cap:1.2"
BODY = (f'<alert xmlns="{CAP}"><identifier>a1</identifier><sender>s</sender>'
        "<sent>2024-05-01T12:00:00-00:00</sent><status>Actual</status><msgType>Alert</msgType>"
        "<scope>Public</scope><note>{note}</note></alert>")


def test_a_minimal_message_parses() -> None:
    assert parse_cap(BODY.format(note="hello").encode()).note == "hello"


def test_an_internal_entity_is_refused_before_anything_is_expanded() -> None:
    laughs = ('<?xml version="1.0"?><!DOCTYPE alert [<!ENTITY a "aaaaaaaaaa">'
              '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>' + BODY.format(note="&b;"))
    with pytest.raises(CapError, match="DOCTYPE declaration"):
        parse_cap(laughs.encode())


def test_a_utf16_doctype_that_hides_from_a_byte_scan_is_still_refused() -> None:
    hostile = ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE alert [<!ENTITY x SYSTEM '
               '"file:///etc/passwd">]>' + BODY.format(note="&x;"))
    data = hostile.encode("utf-16")
    assert b"<!DOCTYPE" not in data
    with pytest.raises(CapError, match="DOCTYPE") as caught:
        secure_parse(data)
    assert "root:" not in str(caught.value)  # nothing of /etc/passwd leaked


def test_a_message_over_the_size_limit_is_refused_before_parsing() -> None:
    data = BODY.format(note="x" * 2000).encode()
    with pytest.raises(CapError, match="over the 1,000-byte limit"):
        parse_cap(data, max_bytes=1000)
    assert parse_cap(data, max_bytes=len(data)).note == "x" * 2000


@pytest.mark.parametrize(("data", "expected"), [
    (b"not xml at all", "not well-formed XML"),
    (b'<alert xmlns="urn:example:other"/>', "expected 'alert' in the CAP 1.2 namespace"),
    (f'<message xmlns="{CAP}"/>'.encode(), "expected 'alert'"),
    (BODY.format(note="x").replace("Actual", "Real").encode(), "schema: line 1"),
])
def test_malformed_or_foreign_input_is_refused_with_a_clear_reason(
        data: bytes, expected: str) -> None:
    with pytest.raises(CapError, match=expected):
        parse_cap(data)


def test_text_input_is_refused_because_encoding_must_come_from_the_bytes() -> None:
    with pytest.raises(CapError, match="must be bytes"):
        parse_cap(BODY.format(note="x"))  # type: ignore[arg-type]
