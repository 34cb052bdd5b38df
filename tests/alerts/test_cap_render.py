"""CAP 1.2 rendering: valid as produced, schema order, CAP forms, and a lossless round trip."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from lxml import etree

from alerts.cap import (
    exposure_parameters,
    format_cap_datetime,
    map_resource,
    render_cap,
    validate_cap,
)
from alerts.cap_parse import parse_cap
from alerts.cap_schema import CAP12_NS, schema_bytes
from alerts.errors import CapError
from alerts.model import (
    AlertEvent,
    Area,
    Category,
    Certainty,
    ClassExposure,
    ExposureSummary,
    FacilityHit,
    Info,
    Level,
    MsgType,
    Priority,
    Reference,
    ResponseType,
    Scope,
    Severity,
    Status,
    Urgency,
)

CEST = timezone(timedelta(hours=2))
SENT = datetime(2024, 5, 1, 12, 0, tzinfo=CEST)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))
SQUARE = ((46.0, 7.0), (46.0, 7.5), (46.5, 7.5), (46.5, 7.0), (46.0, 7.0))


def _info(language: str = "en-GB", **changes: object) -> Info:
    info = Info(
        language=language, category=(Category.MET, Category.INFRA), event="River flood",
        urgency=Urgency.EXPECTED, severity=Severity.SEVERE, certainty=Certainty.LIKELY,
        headline="Flood warning: Aare valley", description="Water up to 1.5 m & rising.",
        instruction="Move to higher ground <now>.", expires=SENT + timedelta(hours=6),
        response_types=(ResponseType.EVACUATE, ResponseType.MONITOR),
        sender_name="Tocsin test", effective=SENT, onset=SENT + timedelta(hours=1),
        web="https://example.org/a/1", contact="ops@example.org",
        event_codes=(("tocsin:kind", "flood_depth"),),
        parameters=(("tocsin:level", "orange"), ("tocsin:peopleExposed", "3120")),
        resources=(map_resource(PNG),),
        areas=(Area("Zone A", polygons=(SQUARE,), circles=(((46.2, 7.2), 2.5),),
                    geocodes=(("tocsin:zone", "Z1"),)),
               Area("Zone B", geocodes=(("tocsin:zone", "Z2"),))),
    )
    return replace(info, **changes)


def _event(msg_type: MsgType = MsgType.ALERT, status: Status = Status.ACTUAL,
           **changes: object) -> AlertEvent:
    references = () if msg_type is MsgType.ALERT else (
        Reference("tocsin@example.org", "tocsin-ev1-0", SENT - timedelta(hours=1)),
        Reference("tocsin@example.org", "tocsin-ev1-1", SENT - timedelta(minutes=30)))
    event = AlertEvent(
        identifier="tocsin-ev1-2", sender="tocsin@example.org", sent=SENT, status=status,
        msg_type=msg_type, scope=Scope.PUBLIC, infos=(_info(), _info("fr-CH")),
        references=references, codes=("tocsin:1.0",), note="test message",
        incidents="ev1")
    return replace(event, **changes)


@pytest.mark.parametrize("status", list(Status))
@pytest.mark.parametrize("msg_type", list(MsgType))
def test_every_msg_type_and_status_renders_valid_and_round_trips(
        msg_type: MsgType, status: Status) -> None:
    event = _event(msg_type, status)
    data = render_cap(event)
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<alert xmlns="' +
                           CAP12_NS.encode())
    assert validate_cap(data, profile="tocsin") == []
    assert parse_cap(data) == event


@pytest.mark.parametrize(("scope", "changes"), [
    (Scope.RESTRICTED, {"restriction": "emergency services only"}),
    (Scope.PRIVATE, {"addresses": "ops@example.org \"duty officer\""}),
])
def test_restricted_and_private_messages_round_trip(scope: Scope,
                                                    changes: dict[str, str]) -> None:
    event = _event(scope=scope, **changes)
    assert parse_cap(render_cap(event)) == event
    with pytest.raises(CapError, match=f"scope is {scope.value}"):
        render_cap(_event(scope=scope))


def test_a_cancel_without_info_round_trips() -> None:
    event = _event(MsgType.CANCEL, infos=())
    assert parse_cap(render_cap(event)) == event


def _sequence(xsd: etree._Element, parent: str) -> list[str]:
    xs = "{http://www.w3.org/2001/XMLSchema}"
    (decl,) = [e for e in xsd.iter(xs + "element") if e.get("name") == parent]
    sequence = decl.find(f"{xs}complexType/{xs}sequence")
    return [child.get("name") or child.get("ref", "").split(":")[-1]
            for child in sequence if child.tag == xs + "element"]


@pytest.mark.parametrize("parent", ["alert", "info", "resource", "area"])
def test_children_follow_the_order_of_the_schema_sequence(parent: str) -> None:
    order = _sequence(etree.fromstring(schema_bytes()), parent)
    root = etree.fromstring(render_cap(_event(MsgType.UPDATE)))
    elements = [root] if parent == "alert" else list(root.iter(f"{{{CAP12_NS}}}{parent}"))
    assert elements
    for element in elements:
        names = [etree.QName(child).localname for child in element]
        positions = [order.index(name) for name in names]
        assert positions == sorted(positions), names


def _text(data: bytes, path: str) -> list[str]:
    root = etree.fromstring(data)
    return [e.text for e in root.iterfind(path, {"c": CAP12_NS})]


def test_cap_forms_lat_lon_polygons_circles_references_and_offsets() -> None:
    data = render_cap(_event(MsgType.UPDATE))
    assert _text(data, "c:sent") == ["2024-05-01T12:00:00+02:00"]
    assert _text(data, "c:references") == [
        "tocsin@example.org,tocsin-ev1-0,2024-05-01T11:00:00+02:00 "
        "tocsin@example.org,tocsin-ev1-1,2024-05-01T11:30:00+02:00"]
    assert _text(data, "c:info/c:area/c:polygon")[0] == \
        "46.0,7.0 46.0,7.5 46.5,7.5 46.5,7.0 46.0,7.0"
    assert _text(data, "c:info/c:area/c:circle")[0] == "46.2,7.2 2.5"
    assert _text(data, "c:info/c:expires")[0] == "2024-05-01T18:00:00+02:00"


@pytest.mark.parametrize(("value", "expected"), [
    (datetime(2024, 5, 1, 12, 0, tzinfo=UTC), "2024-05-01T12:00:00-00:00"),
    (datetime(2024, 5, 1, 12, 0, 0, 999_999, tzinfo=UTC), "2024-05-01T12:00:00-00:00"),
    (datetime(2024, 5, 1, 5, 0, tzinfo=timezone(timedelta(hours=-7))),
     "2024-05-01T05:00:00-07:00"),
    (datetime(2024, 5, 1, 17, 45, tzinfo=timezone(timedelta(hours=5, minutes=45))),
     "2024-05-01T17:45:00+05:45"),
    (datetime(2024, 5, 1, 1, 0, tzinfo=timezone(timedelta(hours=-9, minutes=-30))),
     "2024-05-01T01:00:00-09:30"),
])
def test_date_times_have_an_explicit_offset_no_fraction_and_utc_as_minus_zero(
        value: datetime, expected: str) -> None:
    assert format_cap_datetime(value) == expected


def test_naive_or_second_offset_date_times_are_refused() -> None:
    with pytest.raises(CapError, match="sent .* has no time zone"):
        render_cap(_event(sent=datetime(2024, 5, 1, 12, 0)))
    odd = timezone(timedelta(hours=1, seconds=30))
    with pytest.raises(CapError, match="offset .* has seconds"):
        format_cap_datetime(datetime(2024, 5, 1, tzinfo=odd))


def test_an_info_without_expires_is_never_emitted() -> None:
    event = _event(infos=(_info(expires=None),))
    with pytest.raises(CapError, match=r"info\[1\] \(en-GB\) has no expires"):
        render_cap(event)


@pytest.mark.parametrize(("changes", "expected"), [
    ({"identifier": "tocsin ev1"}, "identifier 'tocsin ev1' contains"),
    ({"sender": "a,b"}, "sender 'a,b' contains"),
    ({"msg_type": MsgType.UPDATE, "references": ()}, "references is missing"),
    ({"infos": (_info(), _info())}, "one info per language"),
    ({"infos": (_info(areas=(Area("bad", polygons=(SQUARE[:-1],)),)),)}, "must be closed"),
    ({"infos": (_info(areas=(Area("swapped", polygons=(
        tuple((lon * 20, lat) for lat, lon in SQUARE),)),)),)}, "latitude 140.0"),
    ({"infos": (_info(resources=(replace(map_resource(PNG), digest_sha1="0" * 40),)),)},
     "is not the SHA-1 of the derefUri content"),
    ({"infos": (_info(category=()),)}, "schema: line"),
    ({"note": "bell \x07"}, "cannot be written"),
])
def test_a_message_that_would_be_rejected_is_never_emitted(
        changes: dict[str, object], expected: str) -> None:
    with pytest.raises(CapError, match=expected):
        render_cap(_event(**changes))


def test_the_map_is_a_resource_with_size_sha1_and_base64_content() -> None:
    resource = map_resource(PNG, description="Flood map")
    assert (resource.mime_type, resource.size_bytes) == ("image/png", 48)
    assert resource.digest_sha1 == hashlib.sha1(PNG).hexdigest()
    data = render_cap(_event())
    assert base64.b64decode(_text(data, "c:info/c:resource/c:derefUri")[0]) == PNG
    assert _text(data, "c:info/c:resource/c:size")[0] == "48"
    with pytest.raises(CapError, match="PNG"):
        map_resource(b"GIF89a")


def test_a_resource_given_without_size_or_digest_gets_them_from_its_content() -> None:
    bare = replace(map_resource(PNG), size_bytes=None, digest_sha1=None)
    parsed = parse_cap(render_cap(_event(infos=(_info(resources=(bare,)),))))
    assert parsed.infos[0].resources[0] == map_resource(PNG)


def test_exposure_parameters_carry_the_level_and_rounded_figures() -> None:
    priority = Priority(level=Level.RED, score=87.25, severity=Severity.EXTREME,
                        urgency=Urgency.IMMEDIATE, certainty=Certainty.OBSERVED,
                        reasons=("3,120 people with disabilities in the extreme class",
                                 "St Mary hospital cut off"), rules_version="2024.1")
    exposure = ExposureSummary(
        population=12_345.6, disability=3_120.4, older=2_000.5, electricity_dependent=41.2,
        cut_off_population=800.0, cut_off_disability=95.5, area_km2=12.34,
        facilities_hit=(FacilityHit("St Mary", "hospital", "1.5 m and above", True),),
        by_class=(ClassExposure(1, "0.15 to 0.5 m", 9000.0),
                  ClassExposure(3, "1.5 m and above", 3345.6)))
    params = dict(exposure_parameters(priority, exposure))
    assert params["tocsin:level"] == "red" and params["tocsin:score"] == "87.2"
    assert params["tocsin:peopleExposed"] == "12346"
    assert params["tocsin:peopleWithDisabilitiesExposed"] == "3120"
    assert params["tocsin:olderPeopleExposed"] == "2000"  # round half to even
    assert params["tocsin:peopleWithDisabilitiesCutOffFromCare"] == "96"
    assert params["tocsin:facilitiesHit"] == "1" and params["tocsin:areaKm2"] == "12.3"
    assert params["tocsin:class:1.5 m and above:peopleExposed"] == "3346"
    pairs = exposure_parameters(priority, exposure)
    assert [v for k, v in pairs if k == "tocsin:reason"] == list(priority.reasons)
    event = _event(infos=(_info(parameters=pairs),))
    assert parse_cap(render_cap(event)).infos[0].parameters == pairs


def test_coordinates_are_written_exactly_and_never_in_exponent_form() -> None:
    tiny = ((0.00001, 7.0), (0.00001, 7.5), (0.5, 7.5), (0.00001, 7.0))
    event = _event(infos=(_info(areas=(Area("near the equator", polygons=(tiny,)),)),))
    data = render_cap(event)
    assert _text(data, "c:info/c:area/c:polygon")[0].startswith("0.00001,7.0 ")
    assert parse_cap(data) == event
