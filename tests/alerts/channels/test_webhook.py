"""The webhook channel against a real HTTP receiver on 127.0.0.1, and the SSRF guard."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from tocsin_testing import http_receiver as rx

from alerts.channels._http import (
    HttpRetryableError,
    check_destination,
    retry_after_seconds,
)
from alerts.channels.base import Channel
from alerts.channels.webhook import (
    WebhookChannel,
    WebhookConfig,
    verify_signature,
    webhook_secret_for,
)
from alerts.errors import PermanentDispatchError, RetryableDispatchError
from alerts.model import ChannelKind

NOW = datetime(2026, 5, 12, 6, 30, tzinfo=UTC)
MASTER = b"master-secret-for-tests"
HERE = Path(__file__).resolve().parent




@pytest.fixture
def receiver() -> Iterator[rx.Receiver]:
    with rx.running_receiver() as server:
        yield server


@pytest.fixture
def channel() -> Iterator[WebhookChannel]:
    config = WebhookConfig(master_secret=MASTER, allow_hosts=("127.0.0.1",), timeout_s=0.5)
    with WebhookChannel(config, clock=lambda: NOW) as webhook:
        yield webhook


def _refusing_channel(allow_hosts: tuple[str, ...] = ()) -> tuple[WebhookChannel, list]:
    """A channel whose transport records any request: a refused one never reaches it."""
    seen: list[httpx.Request] = []
    client = httpx.Client(transport=httpx.MockTransport(
        lambda request: seen.append(request) or httpx.Response(200)))
    config = WebhookConfig(master_secret=MASTER, allow_hosts=allow_hosts)
    return WebhookChannel(config, client=client, clock=lambda: NOW), seen


def test_the_channel_follows_the_channel_protocol(channel):
    assert isinstance(channel, Channel)
    assert channel.kind is ChannelKind.WEBHOOK


def test_a_delivery_verifies_with_the_agencys_secret_and_not_with_another_agencys(
        receiver, channel, make_message):
    receipt = channel.send(make_message(ChannelKind.WEBHOOK, receiver.url + "/hook",
                                        agency_id="ag-1"))
    got = receiver.requests[0]
    args = (got.headers["tocsin-timestamp"], got.headers["tocsin-signature"], got.body)
    assert verify_signature(webhook_secret_for(MASTER, "ag-1"), *args, now=NOW)
    assert not verify_signature(webhook_secret_for(MASTER, "ag-2"), *args, now=NOW)
    assert receipt.detail == "HTTP 200" and receipt.address == receiver.url + "/hook"
    assert got.path == "/hook"


def test_a_stale_or_tampered_request_does_not_verify(receiver, channel, make_message):
    channel.send(make_message(ChannelKind.WEBHOOK, receiver.url))
    got = receiver.requests[0]
    secret = webhook_secret_for(MASTER, "ag-1")
    stamp, signature = got.headers["tocsin-timestamp"], got.headers["tocsin-signature"]
    assert stamp == str(int(NOW.timestamp()))
    assert re.fullmatch(rf"t={stamp},v1=[0-9a-f]{{64}}", signature)
    assert not verify_signature(secret, stamp, signature, got.body,
                                now=NOW + timedelta(seconds=301))
    assert not verify_signature(secret, stamp, signature, got.body + b" ", now=NOW)
    assert not verify_signature(secret, str(int(stamp) + 1), signature, got.body, now=NOW)
    assert not verify_signature(secret, None, signature, got.body, now=NOW)


def test_the_documented_verification_snippet_accepts_a_real_request(
        receiver, channel, make_message):
    docs = (HERE.parents[2] / "docs" / "webhooks.md").read_text(encoding="utf-8")
    snippet = re.search(r"```python\n(.*?)```", docs, re.S)
    assert snippet is not None
    namespace: dict = {}
    exec(snippet.group(1), namespace)  # noqa: S102 - the docs' own code, run as agencies would
    channel.send(make_message(ChannelKind.WEBHOOK, receiver.url))
    got = receiver.requests[0]
    headers = {"Tocsin-Timestamp": got.headers["tocsin-timestamp"],
               "Tocsin-Signature": got.headers["tocsin-signature"]}
    assert namespace["verify"](webhook_secret_for(MASTER, "ag-1"), headers, got.body,
                               now=NOW.timestamp())
    assert not namespace["verify"](webhook_secret_for(MASTER, "ag-2"), headers, got.body,
                                   now=NOW.timestamp())


def test_two_sends_of_the_same_message_have_byte_identical_bodies(
        receiver, channel, make_message):
    message = make_message(ChannelKind.WEBHOOK, receiver.url)
    channel.send(message)
    channel.send(message)
    first, second = receiver.requests
    assert first.body == second.body
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"] == "k" * 64


def test_the_body_carries_the_delivery_and_each_alert_with_its_cap_xml(
        receiver, channel, make_message):
    message = make_message(ChannelKind.WEBHOOK, receiver.url, attempt=2, subscription_id="s9")
    channel.send(message)
    got = receiver.requests[0]
    assert got.headers["content-type"] == "application/json"
    payload = json.loads(got.body)
    assert {k: payload[k] for k in ("idempotency_key", "kind", "agency_id",
                                    "subscription_id", "language", "attempt")} == {
        "idempotency_key": "k" * 64, "kind": "alert", "agency_id": "ag-1",
        "subscription_id": "s9", "language": "en", "attempt": 2}
    alert, = payload["alerts"]
    sent = message.alert
    assert alert["cap_xml"].encode("utf-8") == sent.cap_xml
    assert alert["level"] == "red" and alert["msg_type"] == "Alert"
    assert datetime.fromisoformat(alert["sent"]) == sent.sent
    assert datetime.fromisoformat(alert["expires"]) == sent.expires
    assert alert["headline"] == sent.text.headline
    assert set(alert) == {"identifier", "event_id", "sender", "msg_type", "level",
                          "hazard_kind", "area_description", "sent", "expires", "headline",
                          "description", "instruction", "references", "cap_xml"}
    assert got.body == json.dumps(payload, sort_keys=True, separators=(",", ":"),
                                  ensure_ascii=False).encode("utf-8")


def test_a_receiver_answering_500_twice_is_retried_until_it_accepts(
        receiver, channel, make_message):
    receiver.script[:] = [rx.Reply(500, b"boom"), rx.Reply(503), rx.Reply(200)]
    message = make_message(ChannelKind.WEBHOOK, receiver.url)
    with pytest.raises(RetryableDispatchError, match="HTTP 500: boom") as first:
        channel.send(message)
    assert first.value.status == 500 and first.value.retry_after_s is None
    with pytest.raises(RetryableDispatchError, match="HTTP 503"):
        channel.send(message)
    assert channel.send(message).detail == "HTTP 200"
    assert len(receiver.requests) == 3


def test_a_receiver_that_does_not_answer_in_time_is_retried(receiver, channel, make_message):
    receiver.script[:] = [rx.Reply(200, delay_s=5)]
    with pytest.raises(RetryableDispatchError, match="timed out"):
        channel.send(make_message(ChannelKind.WEBHOOK, receiver.url))


def test_a_receiver_that_refuses_connections_is_retried(channel, make_message):
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(RetryableDispatchError, match="could not be reached"):
        channel.send(make_message(ChannelKind.WEBHOOK, f"http://127.0.0.1:{port}/"))


def test_a_429_with_retry_after_is_retryable_after_that_delay(receiver, channel, make_message):
    receiver.script[:] = [rx.Reply(429, headers={"Retry-After": "120"})]
    with pytest.raises(HttpRetryableError) as caught:
        channel.send(make_message(ChannelKind.WEBHOOK, receiver.url))
    assert caught.value.status == 429 and caught.value.retry_after_s == 120.0


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after_seconds("30") == 30.0
    assert retry_after_seconds("Tue, 12 May 2026 06:32:00 GMT", now=NOW) == 120.0
    assert retry_after_seconds("Tue, 12 May 2026 06:00:00 GMT", now=NOW) == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


@pytest.mark.parametrize(("status", "body", "reason"), [
    (410, b"subscription deleted", r"HTTP 410: subscription deleted \(gone: stop sending"),
    (400, b"missing field\n  alerts", "HTTP 400: missing field alerts"),
    (401, b"x" * 300, "HTTP 401: " + "x" * 200 + "$"),
])
def test_a_receiver_answering_4xx_fails_permanently_with_its_reason(
        receiver, channel, make_message, status, body, reason):
    receiver.script[:] = [rx.Reply(status, body)]
    with pytest.raises(PermanentDispatchError, match=reason) as caught:
        channel.send(make_message(ChannelKind.WEBHOOK, receiver.url + "/secret-token"))
    assert caught.value.status == status
    assert "secret-token" not in str(caught.value)


def test_a_redirect_is_not_followed_and_fails_permanently(receiver, channel, make_message):
    receiver.script[:] = [rx.Reply(302, headers={"Location": receiver.url + "/elsewhere"})]
    with pytest.raises(PermanentDispatchError, match="HTTP 302.*not followed"):
        channel.send(make_message(ChannelKind.WEBHOOK, receiver.url + "/hook"))
    assert [r.path for r in receiver.requests] == ["/hook"]


def test_plain_http_to_a_public_ip_is_refused_before_any_connection(make_message):
    webhook, seen = _refusing_channel()
    with webhook, pytest.raises(PermanentDispatchError, match="https is required"):
        webhook.send(make_message(ChannelKind.WEBHOOK, "http://93.184.216.34/h"))
    assert seen == []


@pytest.mark.parametrize("url", [
    "https://10.0.0.1/", "https://127.0.0.1/", "https://169.254.169.254/latest/meta-data",
    "https://[::1]/", "https://[::ffff:10.0.0.1]/", "https://0.0.0.0/", "https://224.0.0.1/",
    "https://100.64.0.1/", "https://[fe80::1]/", "https://[fc00::1]/",
])
def test_private_and_special_addresses_are_refused_unless_allow_listed(url, make_message):
    webhook, seen = _refusing_channel()
    with webhook, pytest.raises(PermanentDispatchError, match="not a public address"):
        webhook.send(make_message(ChannelKind.WEBHOOK, url))
    assert seen == []
    host = httpx.URL(url).host
    webhook, seen = _refusing_channel(allow_hosts=(host,))
    with webhook:
        assert webhook.send(make_message(ChannelKind.WEBHOOK, url)).detail == "HTTP 200"
    assert len(seen) == 1


def test_a_cidr_in_the_allow_list_admits_the_addresses_it_covers():
    check_destination("https://10.20.30.40/", ["10.0.0.0/8"])
    check_destination("http://10.20.30.40/", ["10.0.0.0/8"])
    check_destination("https://[fd00::5]/", ["fd00::/8"])
    with pytest.raises(PermanentDispatchError, match="192.168.1.1"):
        check_destination("https://192.168.1.1/", ["10.0.0.0/8"])


def test_a_public_https_address_passes_the_guard():
    check_destination("https://93.184.216.34/h", [])
    check_destination("https://[2606:2800:220:1:248:1893:25c8:1946]/", [])


def test_a_host_name_is_judged_by_every_address_it_resolves_to():
    def resolve(host: str, port: int) -> list[str]:
        assert (host, port) == ("hooks.example.org", 443)
        return ["93.184.216.34", "10.1.2.3"]

    with pytest.raises(PermanentDispatchError, match="10.1.2.3 is not a public address"):
        check_destination("https://hooks.example.org/h", [], resolve=resolve)
    check_destination("https://hooks.example.org/h", ["10.1.0.0/16"], resolve=resolve)
    check_destination("http://HOOKS.example.org./h", ["hooks.example.org"], resolve=resolve)
    with pytest.raises(PermanentDispatchError, match="https is required"):
        check_destination("http://hooks.example.org/h", ["10.1.0.0/16"], resolve=resolve)


def test_an_unresolvable_host_is_retried_because_dns_may_come_back():
    def resolve(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(RetryableDispatchError, match="does not resolve"):
        check_destination("https://gone.example.org/", [], resolve=resolve)


@pytest.mark.parametrize("url", ["ftp://93.184.216.34/", "https:///path", "not a url",
                                 "https://xn--.example/hook"])
def test_a_destination_that_is_not_an_http_url_is_refused(url):
    with pytest.raises(PermanentDispatchError):
        check_destination(url, [])


def test_a_config_without_a_master_secret_is_refused_and_never_shows_it():
    with pytest.raises(ValueError, match="master_secret"):
        WebhookConfig(master_secret=b"")
    assert "master-secret" not in repr(WebhookConfig(master_secret=MASTER))
