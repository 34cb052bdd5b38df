"""The SMS gateway channel against a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator
from urllib.parse import parse_qs

import httpx
import pytest
from tocsin_testing import http_receiver as rx

from alerts.channels.base import Channel
from alerts.channels.sms_gateway import (
    BasicAuth,
    BearerAuth,
    HeaderAuth,
    SmsGatewayChannel,
    SmsGatewayConfig,
)
from alerts.errors import PermanentDispatchError, RetryableDispatchError
from alerts.model import ChannelKind, Level
from alerts.sms import sms_segments

PHONE = "+41 79 123 45 67"
FORM = "To={to}&From={sender_id}&Body={text}&Ref={idempotency_key}&Coding={encoding}"




@pytest.fixture
def receiver() -> Iterator[rx.Receiver]:
    with rx.running_receiver() as server:
        yield server


@pytest.fixture
def gateway(receiver):
    """A factory of channels pointed at the receiver; each is closed after the test."""
    made: list[SmsGatewayChannel] = []

    def _make(**changes) -> SmsGatewayChannel:
        config = SmsGatewayConfig(**{"url": receiver.url + "/send", "allow_hosts": ("127.0.0.1",),
                                     "timeout_s": 0.5, **changes})
        made.append(SmsGatewayChannel(config))
        return made[-1]

    yield _make
    for channel in made:
        channel.close()


def _with_sms(message, sms: str):
    """``message`` with its alert's SMS text replaced (to put hostile characters in it)."""
    alert = message.alert
    return dataclasses.replace(message, alerts=(
        dataclasses.replace(alert, text=dataclasses.replace(alert.text, sms=sms)),))


def test_the_channel_follows_the_channel_protocol(gateway):
    channel = gateway()
    assert isinstance(channel, Channel) and channel.kind is ChannelKind.SMS


def test_an_alert_goes_as_its_own_sms_text_with_an_idempotency_key(
        receiver, gateway, make_message):
    message = make_message(ChannelKind.SMS, PHONE)
    receipt = gateway(sender_id="CivilProt").send(message)
    got = receiver.requests[0]
    assert got.path == "/send"
    assert got.headers["idempotency-key"] == "k" * 64
    assert got.headers["content-type"] == "application/json"
    assert json.loads(got.body) == {"to": "+41791234567", "from": "CivilProt",
                                    "text": message.alert.text.sms, "reference": "k" * 64}
    assert (receipt.channel, receipt.address, receipt.detail) == (
        ChannelKind.SMS, "+41791234567", "HTTP 200")


def test_a_quote_and_newline_in_the_text_leave_the_json_body_valid(
        receiver, gateway, make_message):
    hostile = 'Red alert: "x", "admin": true}\nnext line \\ end'
    gateway().send(_with_sms(make_message(ChannelKind.SMS, PHONE), hostile))
    body = json.loads(receiver.requests[0].body)
    assert body["text"] == hostile
    assert set(body) == {"to", "from", "text", "reference"}


def test_a_form_template_percent_encodes_every_value(receiver, gateway, make_message):
    hostile = "Red alert & more=yes\n+ \u00ea"
    gateway(body_template=FORM, content_type="application/x-www-form-urlencoded").send(
        _with_sms(make_message(ChannelKind.SMS, PHONE), hostile))
    got = receiver.requests[0]
    assert got.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(got.body.decode("ascii"), strict_parsing=True) == {
        "To": ["+41791234567"], "From": ["Tocsin"], "Body": [hostile], "Ref": ["k" * 64],
        "Coding": ["UCS-2"]}


def test_encoding_and_segments_placeholders_describe_the_text(receiver, gateway,
                                                              make_message):
    template = '{"to": "{to}", "text": "{text}", "coding": "{encoding}", "parts": {segments}}'
    message = make_message(ChannelKind.SMS, PHONE)
    gateway(body_template=template).send(message)
    body = json.loads(receiver.requests[0].body)
    expected = sms_segments(message.alert.text.sms)
    assert (body["coding"], body["parts"]) == (expected.encoding, expected.segments)


def test_an_unknown_placeholder_is_rejected_by_name():
    with pytest.raises(ValueError, match=r"\{phone\}"):
        SmsGatewayConfig(url="https://sms.example.org/",
                         body_template='{"to": "{phone}", "text": "{text}"}')


@pytest.mark.parametrize(("template", "content_type", "reason"), [
    ('{"to": "{to}", "text": {text}}', "application/json", "not valid JSON"),
    ('{"to": "{to}"}', "application/json", r"must contain \{text\}"),
    ('{"to": "{to}", "text": "{text}"}', "application/x-www-form-urlencoded", "name=value"),
])
def test_a_template_that_cannot_give_a_valid_body_is_rejected(template, content_type,
                                                              reason):
    with pytest.raises(ValueError, match=reason):
        SmsGatewayConfig(url="https://sms.example.org/", body_template=template,
                         content_type=content_type)  # type: ignore[arg-type]


def test_a_digest_lists_its_alerts_in_words_and_fits_max_segments(
        receiver, gateway, make_message):
    from_conftest = make_message(ChannelKind.SMS, PHONE).alert
    levels = [Level.YELLOW, Level.GREEN, Level.RED, Level.YELLOW, Level.ORANGE] * 3
    alerts = [dataclasses.replace(from_conftest, level=level, text=dataclasses.replace(
        from_conftest.text, level_text=f"{level.value.capitalize()} alert"))
        for level in levels]
    for max_segments in (1, 2):
        gateway(max_segments=max_segments).send(make_message(
            ChannelKind.SMS, PHONE, alerts=alerts, message_kind="digest"))
        text = json.loads(receiver.requests[-1].body)["text"]
        assert sms_segments(text).segments <= max_segments
        assert text.startswith("Tocsin (15): Red alert: ")
        assert text.endswith("...")
    assert len(json.loads(receiver.requests[1].body)["text"]) > 160


@pytest.mark.parametrize(("answer", "field", "remote_id"), [
    (b'{"id": "msg-123", "status": "queued"}', "id", "msg-123"),
    (b'{"sid": 98765}', "sid", "98765"),
    (b'{"status": "queued"}', "id", None),
    (b"OK", "id", None),
    (b'{"id": "msg-1"}', None, None),
])
def test_the_gateways_message_id_is_read_into_the_receipt(
        receiver, gateway, make_message, answer, field, remote_id):
    receiver.script[:] = [rx.Reply(201, answer, {"Content-Type": "application/json"})]
    receipt = gateway(message_id_field=field).send(make_message(ChannelKind.SMS, PHONE))
    assert receipt.remote_id == remote_id and receipt.detail == "HTTP 201"


@pytest.mark.parametrize(("auth", "header", "value"), [
    (BasicAuth("acct", "pw:1"), "authorization",
     "Basic " + base64.b64encode(b"acct:pw:1").decode()),
    (BearerAuth("tok-1"), "authorization", "Bearer tok-1"),
    (HeaderAuth("X-API-Key", "key-1"), "x-api-key", "key-1"),
])
def test_the_configured_credentials_are_sent_and_never_shown(
        receiver, gateway, make_message, auth, header, value):
    channel = gateway(auth=auth)
    channel.send(make_message(ChannelKind.SMS, PHONE))
    assert receiver.requests[0].headers[header] == value
    assert not any(secret in repr(channel.config) for secret in ("pw:1", "tok-1", "key-1"))


def test_an_auth_header_may_not_replace_one_tocsin_sets():
    with pytest.raises(ValueError, match="set by Tocsin"):
        HeaderAuth("Idempotency-Key", "x")


def test_a_failing_gateway_is_retried_with_its_retry_after(receiver, gateway, make_message):
    receiver.script[:] = [rx.Reply(500), rx.Reply(429, headers={"Retry-After": "7"}),
                          rx.Reply(200, delay_s=5)]
    channel, message = gateway(), make_message(ChannelKind.SMS, PHONE)
    with pytest.raises(RetryableDispatchError, match="HTTP 500"):
        channel.send(message)
    with pytest.raises(RetryableDispatchError) as limited:
        channel.send(message)
    assert limited.value.retry_after_s == 7.0
    with pytest.raises(RetryableDispatchError, match="timed out"):
        channel.send(message)


@pytest.mark.parametrize(("reply", "reason"), [
    (rx.Reply(400, b'{"error": "invalid number"}'), 'HTTP 400: {"error": "invalid number"}'),
    (rx.Reply(401, b"bad credentials"), "HTTP 401: bad credentials"),
    (rx.Reply(302, headers={"Location": "http://10.0.0.1/"}), "HTTP 302.*not followed"),
])
def test_a_gateway_refusing_the_message_fails_permanently_with_its_reason(
        receiver, gateway, make_message, reply, reason):
    receiver.script[:] = [reply]
    with pytest.raises(PermanentDispatchError, match=reason):
        gateway().send(make_message(ChannelKind.SMS, PHONE))
    assert len(receiver.requests) == 1


def test_a_gateway_url_outside_the_rules_is_refused_before_any_connection(make_message):
    seen: list[httpx.Request] = []
    with httpx.Client(transport=httpx.MockTransport(
            lambda request: seen.append(request) or httpx.Response(200))) as client:
        for url in ("http://93.184.216.34/send", "https://192.168.0.10/send"):
            channel = SmsGatewayChannel(SmsGatewayConfig(url=url), client=client)
            with pytest.raises(PermanentDispatchError):
                channel.send(make_message(ChannelKind.SMS, PHONE))
        allowed = SmsGatewayChannel(SmsGatewayConfig(
            url="http://192.168.0.10/send", allow_hosts=("192.168.0.0/16",)), client=client)
        assert allowed.send(make_message(ChannelKind.SMS, PHONE)).detail == "HTTP 200"
    assert [str(r.url) for r in seen] == ["http://192.168.0.10/send"]


def test_an_address_that_is_not_a_phone_number_fails_permanently(receiver, gateway,
                                                                 make_message):
    with pytest.raises(PermanentDispatchError, match="not a phone number"):
        gateway().send(make_message(ChannelKind.SMS, "call me maybe"))
    assert receiver.requests == []
