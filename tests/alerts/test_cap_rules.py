"""CAP rules the schema cannot check: one failing and one passing message per rule."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from lxml import etree

from alerts.cap_rules import check_rules, circle_problem, datetime_problem, polygon_problem
from alerts.cap_schema import CAP12_NS, schema_problems

HEAD = ("<identifier>{ident}</identifier><sender>{sender}</sender>"
        "<sent>{sent}</sent><status>Actual</status><msgType>{msg}</msgType><scope>{scope}</scope>")
INFO = ("<info>{lang}<category>Met</category><event>Flood</event><urgency>Expected</urgency>"
        "<severity>Severe</severity><certainty>Likely</certainty>{codes}{expires}"
        "{resource}{area}</info>")
EXPIRES = "<expires>2024-05-01T18:00:00-00:00</expires>"


def _alert(*, ident: str = "a1", sender: str = "s@example.org",
           sent: str = "2024-05-01T12:00:00+02:00", msg: str = "Alert", scope: str = "Public",
           extra: str = "", infos: str | None = None) -> etree._Element:
    if infos is None:
        infos = _info()
    xml = (f'<alert xmlns="{CAP12_NS}">'
           + HEAD.format(ident=ident, sender=sender, sent=sent, msg=msg, scope=scope)
           + extra + infos + "</alert>")
    return etree.fromstring(xml.encode())


def _info(*, lang: str = "", codes: str = "", expires: str = EXPIRES, resource: str = "",
          area: str = "") -> str:
    return INFO.format(lang=lang, codes=codes, expires=expires, resource=resource, area=area)


def _polygon_area(text: str) -> str:
    return f"<area><areaDesc>A</areaDesc><polygon>{text}</polygon></area>"


SQUARE = "46.0,7.0 46.0,7.5 46.5,7.5 46.5,7.0 46.0,7.0"


def test_a_well_formed_message_keeps_every_rule_of_every_profile() -> None:
    root = _alert(infos=_info(area=_polygon_area(SQUARE)))
    assert schema_problems(root) == []
    assert check_rules(root) == []
    assert check_rules(root, profile="tocsin") == []


@pytest.mark.parametrize(("field", "value"), [
    ("ident", "alert 1"), ("ident", "alert,1"), ("sender", "a&lt;b"), ("sender", "a&amp;b"),
])
def test_identifier_and_sender_refuse_spaces_commas_and_markup_characters(
        field: str, value: str) -> None:
    problems = check_rules(_alert(**{field: value}))
    name = "identifier" if field == "ident" else "sender"
    assert len(problems) == 1 and problems[0].startswith(name)


@pytest.mark.parametrize("value", ["2024-05-01T12:00:00,02:00", "2024-02-30T12:00:00+02:00",
                                   "2024-05-01T12:00:00Z", "2024-05-01T12:00:00.25+02:00"])
def test_date_times_need_a_signed_offset_no_fraction_and_a_real_date(value: str) -> None:
    assert datetime_problem("sent", value) is not None
    assert datetime_problem("sent", "2024-05-01T12:00:00-00:00") is None


def test_a_comma_offset_allowed_by_the_xsd_pattern_text_is_still_refused_by_the_rules() -> None:
    # The XSD pattern reads [-,+]; its dateTime base type happens to refuse the comma too,
    # but the rules must not depend on that.
    root = _alert(sent="2024-05-01T12:00:00,02:00")
    assert [p for p in check_rules(root) if p.startswith("sent ")]


@pytest.mark.parametrize(("scope", "extra", "n_problems"), [
    ("Restricted", "", 1), ("Restricted", "<restriction>staff only</restriction>", 0),
    ("Private", "", 1), ("Private", "<addresses>ops@example.org</addresses>", 0),
    ("Private", "<addresses></addresses>", 1),
])
def test_restricted_needs_a_restriction_and_private_needs_addresses(
        scope: str, extra: str, n_problems: int) -> None:
    assert len(check_rules(_alert(scope=scope, extra=extra))) == n_problems


@pytest.mark.parametrize("msg", ["Update", "Cancel", "Ack", "Error"])
def test_update_cancel_ack_and_error_must_name_earlier_messages(msg: str) -> None:
    assert "references is missing" in check_rules(_alert(msg=msg))[0]
    refs = "<references>s@example.org,a0,2024-05-01T11:00:00+02:00</references>"
    assert check_rules(_alert(msg=msg, extra=refs)) == []


@pytest.mark.parametrize(("refs", "expected"), [
    ("s@example.org,a0", "is not sender,identifier,sent"),
    ("s@example.org,a0,2024-05-01T11:00:00", "not a CAP date-time"),
    ("s@example.org,a1,2024-05-01T11:00:00+02:00", "names this message itself"),
])
def test_malformed_references_are_reported(refs: str, expected: str) -> None:
    problems = check_rules(_alert(msg="Update", extra=f"<references>{refs}</references>"))
    assert len(problems) == 1 and expected in problems[0]


@pytest.mark.parametrize(("text", "expected"), [
    ("46.0,7.0 46.0,7.5 46.5,7.5", "at least 4"),
    ("46.0,7.0 46.0,7.5 46.5,7.5 46.5,7.0", "must be closed"),
    ("7.0,95.0 7.5,95.0 7.5,95.5 7.0,95.0", None),
    ("95.0,7.0 95.0,7.5 95.5,7.5 95.0,7.0", "latitude 95.0"),
    ("46.0,190.0 46.0,7.5 46.5,7.5 46.0,190.0", "longitude 190.0"),
    ("46.0;7.0 46.0,7.5 46.5,7.5 46.0;7.0", "not a lat,lon pair"),
    # A bow tie: the edges (46,7)-(46.5,7.5) and (46,7.5)-(46.5,7) cross.
    ("46.0,7.0 46.5,7.5 46.0,7.5 46.5,7.0 46.0,7.0", "intersects itself"),
])
def test_polygons_are_closed_lat_lon_rings_of_four_pairs_that_do_not_cross(
        text: str, expected: str | None) -> None:
    problem = polygon_problem("p", text)
    assert (problem is None) if expected is None else (expected in problem)


def test_polygon_problems_say_where_they_are() -> None:
    root = _alert(infos=_info(area=_polygon_area("46.0,7.0 46.0,7.5 46.5,7.5 46.1,7.0")))
    assert check_rules(root)[0].startswith("info[1]/area[1]/polygon[1]: ")


@pytest.mark.parametrize(("text", "ok"), [
    ("32.9525,-115.5527 0", True), ("32.9525,-115.5527 12.5", True),
    ("32.9525,-115.5527", False), ("32.9525 -115.5527 10", False),
    ("32.9525,-115.5527 -1", False), ("-115.5527,32.9525 10", False),
])
def test_circles_are_lat_lon_then_a_radius_in_km(text: str, ok: bool) -> None:
    assert (circle_problem("c", text) is None) is ok


def test_ceiling_needs_altitude() -> None:
    area = "<area><areaDesc>A</areaDesc><ceiling>100</ceiling></area>"
    assert "ceiling" in check_rules(_alert(infos=_info(area=area)))[0]
    area = "<area><areaDesc>A</areaDesc><altitude>0</altitude><ceiling>100</ceiling></area>"
    assert check_rules(_alert(infos=_info(area=area))) == []


def _resource(content: bytes, digest: str, size: int) -> str:
    return (f"<resource><resourceDesc>map</resourceDesc><mimeType>image/png</mimeType>"
            f"<size>{size}</size><derefUri>{base64.b64encode(content).decode()}</derefUri>"
            f"<digest>{digest}</digest></resource>")


def test_resource_digests_must_be_sha1_and_match_the_content_in_tocsin_messages() -> None:
    content = b"abc"
    sha1 = hashlib.sha1(content).hexdigest()  # a9993e36...: the FIPS 180 test vector
    assert sha1 == "a9993e364706816aba3e25717850c26c9cd0d89d"
    good = _alert(infos=_info(resource=_resource(content, sha1, 3)))
    assert check_rules(good, profile="tocsin") == []
    wrong = _alert(infos=_info(resource=_resource(content, "0" * 40, 4)))
    assert check_rules(wrong) == []  # outside messages may describe the original file
    problems = check_rules(wrong, profile="tocsin")
    assert len(problems) == 2 and "digest" in problems[0] and "3 bytes" in problems[1]
    not_hex = _alert(infos=_info(resource=_resource(content, "xyz", 3)))
    assert "not a SHA-1" in check_rules(not_hex)[0]


def test_tocsin_profile_wants_expires_and_one_info_per_language() -> None:
    infos = _info(expires="") + _info(lang="<language>en-US</language>")
    root = _alert(infos=infos)
    assert check_rules(root) == []
    problems = check_rules(root, profile="tocsin")
    assert problems == [
        "info[1]: expires is missing; every info must say when it ends",
        "info[2]: language en-US already used by info[1]; one info per language",
    ]


def test_ipaws_profile_adds_its_errors() -> None:
    same = "<eventCode><valueName>SAME</valueName><value>FFW</value></eventCode>"
    area = _polygon_area(SQUARE)
    root = _alert(extra="<code>IPAWSv1.0</code>", infos=_info(codes=same, area=area))
    assert check_rules(root, profile="ipaws") == []
    bare = _alert(infos=_info())
    problems = check_rules(bare, profile="ipaws")
    assert problems == [
        "ipaws: code must contain IPAWSv1.0",
        "ipaws: info[1] needs exactly one eventCode SAME with a three-letter code, found []",
        "ipaws: info[1] has no area",
    ]


def test_an_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown CAP rule profile"):
        check_rules(_alert(), profile="uk")  # type: ignore[arg-type]


def test_the_canada_errors_sample_is_schema_valid_but_breaks_the_references_rule(
        real_data: Path) -> None:
    path = real_data / "cap" / "invalid" / "google-caplib-canada_errors.xml"
    root = etree.parse(str(path)).getroot()
    assert schema_problems(root) == []
    assert check_rules(root) == [
        "msgType is Update but references is missing or empty: it must name the earlier "
        "message(s) as sender,identifier,sent"]
