"""The e-mail channel against a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import email
import ipaddress
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import replace
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from alerts.channels.smtp import (
    BACKGROUND_COLOUR,
    LEVEL_COLOURS,
    TEXT_COLOUR,
    EmailChannel,
    SmtpConfig,
)
from alerts.errors import PermanentDispatchError, RetryableDispatchError
from alerts.model import ChannelKind, Level

TO = "duty-officer@agency.example"
FROM = "Tocsin <alerts@tocsin.example>"


class Recorder:
    """An aiosmtpd handler that records accepted mail and can answer with a set reply."""

    def __init__(self, rcpt_reply: str | None = None,
                 data_reply: str = "250 Message accepted for delivery") -> None:
        self.rcpt_reply = rcpt_reply
        self.data_reply = data_reply
        self.envelopes: list[Any] = []
        self.tls_sessions: list[bool] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          rcpt_options: list[str]) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.data_reply.startswith("2"):
            self.envelopes.append(envelope)
            self.tls_sessions.append(server.transport.get_extra_info("ssl_object") is not None)
        return self.data_reply

    def mails(self) -> list[EmailMessage]:
        return [email.message_from_bytes(e.content, policy=policy.default)  # type: ignore[misc]
                for e in self.envelopes]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


StartServer = Callable[..., tuple[Recorder, int]]


@pytest.fixture
def smtp_server() -> Iterator[StartServer]:
    """Start real SMTP servers: ``start(port=None, handler=None, **controller_kwargs)``."""
    controllers: list[Controller] = []

    def start(port: int | None = None, handler: Recorder | None = None,
              **kwargs: Any) -> tuple[Recorder, int]:
        handler = handler or Recorder()
        port = port or free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
        controller.start()
        controllers.append(controller)
        return handler, port

    yield start
    for controller in controllers:
        controller.stop()


def channel(port: int, **changes: Any) -> EmailChannel:
    config = SmtpConfig(host="127.0.0.1", port=port, security="none", from_address=FROM,
                        timeout_s=5.0)
    return EmailChannel(replace(config, **changes),
                        clock=lambda: dt.datetime(2026, 5, 12, 6, 1, tzinfo=dt.UTC))


def content(part: EmailMessage) -> str:
    """A text part's content with the wire's CRLF line ends read as newlines."""
    return str(part.get_content()).replace("\r\n", "\n")


def parts(mail: EmailMessage) -> dict[str, list[EmailMessage]]:
    found: dict[str, list[EmailMessage]] = {}
    for part in mail.walk():
        found.setdefault(part.get_content_type(), []).append(part)  # type: ignore[arg-type]
    return found


def test_an_alert_mail_has_a_plain_and_an_accessible_html_part(smtp_server, make_message):
    server, port = smtp_server()
    message = make_message(ChannelKind.EMAIL, TO)
    channel(port).send(message)
    (mail,) = server.mails()
    assert server.envelopes[0].rcpt_tos == [TO]
    assert server.envelopes[0].mail_from == "alerts@tocsin.example"
    assert mail.get_content_type() == "multipart/mixed"
    alternative = mail.get_payload()[0]
    assert alternative.get_content_type() == "multipart/alternative"
    plain, related = alternative.get_payload()
    assert plain.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    assert related.get_payload()[0].get_content_type() == "text/html"
    text = message.alert.text
    assert content(plain).strip() == text.full.strip()
    page = content(related.get_payload()[0])
    assert '<html lang="en">' in page
    assert f"<h1>{text.headline}</h1>" in page
    assert f">{text.level_text}</p>" in page  # the level in words, not by colour alone
    assert "<h2>What is happening</h2>" in page
    assert "<h2>What to do</h2>" in page
    assert mail["Subject"] == text.headline


def test_the_html_part_escapes_every_text(smtp_server, make_message):
    server, port = smtp_server()
    alert = make_message(ChannelKind.EMAIL, TO).alert
    hostile = "Flood <script>alert('x')</script> & \"more\""
    alert = replace(alert, text=replace(alert.text, headline=hostile,
                                        full=f"{hostile}\n\n<b>bold</b> & more"))
    channel(port).send(make_message(ChannelKind.EMAIL, TO, alerts=[alert]))
    page = content(parts(server.mails()[0])["text/html"][0])
    assert "<script>" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;more&quot;" in page
    assert "<p>&lt;b&gt;bold&lt;/b&gt; &amp; more</p>" in page


def test_the_map_is_inline_with_an_alt_text_and_the_cap_is_attached_unchanged(
        smtp_server, make_message):
    server, port = smtp_server()
    message = make_message(ChannelKind.EMAIL, TO)
    channel(port).send(message)
    found = parts(server.mails()[0])
    (image,) = found["image/png"]
    assert image.get_filename() == "map.png"
    assert image.get_content() == message.alert.map_png
    cid = image["Content-ID"].strip("<>")
    page = content(found["text/html"][0])
    assert re.search(rf'<img src="cid:{re.escape(cid)}" alt="Map of the alert area: Aare '
                     r'valley"', page)
    (cap,) = found["application/cap+xml"]
    assert cap.get_filename() == "alert.cap.xml"
    assert cap.get_content_disposition() == "attachment"
    assert cap.get_payload(decode=True) == message.alert.cap_xml


def test_an_alert_without_a_map_has_no_image(smtp_server, make_message):
    server, port = smtp_server()
    channel(port).send(make_message(ChannelKind.EMAIL, TO, map_png=None))
    found = parts(server.mails()[0])
    assert "image/png" not in found
    assert "<img" not in content(found["text/html"][0])


def test_a_resent_attempt_keeps_the_message_id_of_the_first(smtp_server, make_message):
    server, port = smtp_server()
    sender = channel(port)
    sender.send(make_message(ChannelKind.EMAIL, TO, key="a1b2" * 16, attempt=1))
    sender.send(make_message(ChannelKind.EMAIL, TO, key="a1b2" * 16, attempt=2))
    sender.send(make_message(ChannelKind.EMAIL, TO, key="c3d4" * 16))
    first, second, other = server.mails()
    assert first["Message-ID"] == second["Message-ID"] == f"<{'a1b2' * 16}@tocsin.invalid>"
    assert first["Tocsin-Idempotency-Key"] == "a1b2" * 16
    assert other["Message-ID"] != first["Message-ID"]


def test_a_red_alert_is_marked_important_and_every_mail_as_automatic(smtp_server,
                                                                      make_message):
    server, port = smtp_server()
    channel(port).send(make_message(ChannelKind.EMAIL, TO, language="de"))
    channel(port).send(make_message(ChannelKind.EMAIL, TO, level=Level.YELLOW))
    red, yellow = server.mails()
    assert red["Content-Language"] == "de"
    assert '<html lang="de">' in content(parts(red)["text/html"][0])
    assert red["Auto-Submitted"] == yellow["Auto-Submitted"] == "auto-generated"
    assert (red["Importance"], red["X-Priority"]) == ("high", "1")
    assert yellow["Importance"] is None and yellow["X-Priority"] is None


def test_a_digest_lists_every_alert_with_its_level_in_words(smtp_server, make_message):
    server, port = smtp_server()
    alerts = [make_message(ChannelKind.EMAIL, TO, level=level, event_id=f"ev-{i}",
                           map_png=None).alert
              for i, level in enumerate((Level.YELLOW, Level.GREEN, Level.YELLOW))]
    channel(port).send(make_message(ChannelKind.EMAIL, TO, alerts=alerts,
                                    message_kind="digest"))
    (mail,) = server.mails()
    assert mail["Subject"] == "Tocsin digest: 3 alerts"
    plain = content(parts(mail)["text/plain"][0])
    for alert in alerts:
        assert alert.text.level_text in alert.text.headline
        assert f"- {alert.text.headline}" in plain
        assert alert.text.instruction in plain
    page = content(parts(mail)["text/html"][0])
    assert "<h1>Tocsin digest: 3 alerts</h1>" in page
    assert page.count("<h2>") == 3
    caps = parts(mail)["application/cap+xml"]
    assert [c.get_filename() for c in caps] == ["alert-1.cap.xml", "alert-2.cap.xml",
                                                "alert-3.cap.xml"]
    assert [c.get_payload(decode=True) for c in caps] == [a.cap_xml for a in alerts]


def test_an_escalation_is_marked_and_says_nobody_acknowledged_it(smtp_server, make_message):
    server, port = smtp_server()
    message = make_message(ChannelKind.EMAIL, TO, message_kind="escalation")
    channel(port).send(message)
    (mail,) = server.mails()
    assert mail["Subject"] == f"[Escalated] {message.alert.text.headline}"
    assert "Nobody acknowledged this alert on the first channel" in (
        content(parts(mail)["text/plain"][0]))
    assert "Nobody acknowledged" in content(parts(mail)["text/html"][0])


def test_the_receipt_gives_the_server_reply_and_its_queue_id(smtp_server, make_message):
    _, port = smtp_server(handler=Recorder(data_reply="250 2.0.0 Ok: queued as 4XyZ12AbC"))
    receipt = channel(port).send(make_message(ChannelKind.EMAIL, TO))
    assert receipt.channel is ChannelKind.EMAIL and receipt.address == TO
    assert receipt.detail == "250 2.0.0 Ok: queued as 4XyZ12AbC"
    assert receipt.remote_id == "4XyZ12AbC"
    _, port = smtp_server()
    receipt = channel(port).send(make_message(ChannelKind.EMAIL, TO))
    assert (receipt.detail, receipt.remote_id) == ("250 Message accepted for delivery", None)


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                   auth_data: Any) -> AuthResult:
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == b"tocsin"
          and auth_data.password == b"s3cret")
    return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535


# The test server warns that AUTH without TLS is unsafe: true, and this test server only.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_a_login_with_the_right_password_delivers(smtp_server, make_message):
    server, port = smtp_server(auth_require_tls=False, authenticator=_authenticator,
                               auth_required=True)
    channel(port, username="tocsin", password="s3cret").send(
        make_message(ChannelKind.EMAIL, TO))
    assert len(server.envelopes) == 1


# The test server warns that AUTH without TLS is unsafe: true, and this test server only.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_a_wrong_password_fails_permanently(smtp_server, make_message):
    server, port = smtp_server(auth_require_tls=False, authenticator=_authenticator,
                               auth_required=True)
    with pytest.raises(PermanentDispatchError, match="535"):
        channel(port, username="tocsin", password="wrong").send(
            make_message(ChannelKind.EMAIL, TO))
    assert server.envelopes == []


@pytest.mark.parametrize(("rcpt_reply", "data_reply"), [
    (None, "451 try later"),
    ("452 4.2.2 mailbox full", "250 OK"),
    ("450 4.2.0 greylisted", "250 OK"),
    ("421 4.3.2 closing down", "250 OK"),
])
def test_a_server_asking_to_try_later_is_retried(smtp_server, make_message, rcpt_reply,
                                                 data_reply):
    _, port = smtp_server(handler=Recorder(rcpt_reply=rcpt_reply, data_reply=data_reply))
    with pytest.raises(RetryableDispatchError, match=(rcpt_reply or data_reply)[:3]):
        channel(port).send(make_message(ChannelKind.EMAIL, TO))


def test_a_mailbox_that_does_not_exist_fails_permanently(smtp_server, make_message):
    _, port = smtp_server(handler=Recorder(rcpt_reply="550 no such user"))
    with pytest.raises(PermanentDispatchError, match="550 no such user"):
        channel(port).send(make_message(ChannelKind.EMAIL, TO))


def test_a_mail_the_server_rejects_fails_permanently(smtp_server, make_message):
    _, port = smtp_server(handler=Recorder(data_reply="554 5.7.1 message refused"))
    with pytest.raises(PermanentDispatchError, match="554 5.7.1 message refused"):
        channel(port).send(make_message(ChannelKind.EMAIL, TO))


def test_an_address_that_is_not_one_fails_permanently(make_message):
    with pytest.raises(PermanentDispatchError, match="not an e-mail address it can send to"):
        channel(free_port()).send(make_message(ChannelKind.EMAIL, "not an address"))


def test_a_server_that_is_down_is_retried_and_delivers_once_it_is_up(smtp_server,
                                                                     make_message):
    port = free_port()
    message = make_message(ChannelKind.EMAIL, TO)
    with pytest.raises(RetryableDispatchError, match="ConnectionRefusedError"):
        channel(port).send(message)
    server, _ = smtp_server(port=port)
    channel(port).send(replace(message, attempt=2))
    assert len(server.envelopes) == 1


def test_a_server_that_never_greets_times_out_and_is_retried(make_message):
    with socket.socket() as listener:  # accepts TCP connections but never says a word
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with pytest.raises(RetryableDispatchError, match="timed out"):
            channel(listener.getsockname()[1], timeout_s=0.3).send(
                make_message(ChannelKind.EMAIL, TO))


def _luminance(colour: str) -> float:
    def linear(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(int(colour[i:i + 2], 16)) for i in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast(a: str, b: str) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_the_level_badges_and_the_text_have_sufficient_contrast():
    assert set(LEVEL_COLOURS) == set(Level)
    for background, foreground in LEVEL_COLOURS.values():
        assert _contrast(background, foreground) >= 4.5
    assert _contrast(BACKGROUND_COLOUR, TEXT_COLOUR) >= 7


# --- TLS -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1, made offline."""
    pytest.importorskip("cryptography", reason="the cryptography package makes the test CA")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def cert(subject: str, key: Any, issuer: str, issuer_key: Any, *, ca: bool) -> Any:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                 x509.DNSName("localhost")]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    ca_cert = cert("Tocsin test CA", ca_key, "Tocsin test CA", ca_key, ca=True)
    server_cert = cert("127.0.0.1", server_key, "Tocsin test CA", ca_key, ca=False)
    folder = tmp_path_factory.mktemp("tls")
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (folder / "server.pem").write_bytes(server_cert.public_bytes(pem))
    (folder / "server.key").write_bytes(server_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


@pytest.fixture
def server_tls(tls_files: tuple[Path, Path, Path]) -> ssl.SSLContext:
    _, certificate, key = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    return context


def test_starttls_with_a_private_ca_delivers_over_tls(smtp_server, make_message, tls_files,
                                                      server_tls):
    server, port = smtp_server(tls_context=server_tls, require_starttls=True,
                               auth_require_tls=True, authenticator=_authenticator)
    channel(port, security="starttls", ca_file=str(tls_files[0]), username="tocsin",
            password="s3cret").send(make_message(ChannelKind.EMAIL, TO))
    assert server.tls_sessions == [True]


def test_starttls_without_verification_delivers_to_a_self_signed_server(
        smtp_server, make_message, server_tls):
    server, port = smtp_server(tls_context=server_tls, require_starttls=True)
    channel(port, security="starttls", tls_verify=False).send(
        make_message(ChannelKind.EMAIL, TO))
    assert server.tls_sessions == [True]


def test_implicit_tls_delivers(smtp_server, make_message, tls_files, server_tls):
    server, port = smtp_server(ssl_context=server_tls)
    channel(port, security="tls", ca_file=str(tls_files[0])).send(
        make_message(ChannelKind.EMAIL, TO))
    assert server.tls_sessions == [True]


def test_a_server_without_starttls_fails_permanently_when_starttls_is_required(
        smtp_server, make_message):
    server, port = smtp_server()
    with pytest.raises(PermanentDispatchError, match="STARTTLS"):
        channel(port, security="starttls").send(make_message(ChannelKind.EMAIL, TO))
    assert server.envelopes == []  # never fell back to plaintext


def test_a_certificate_from_an_unknown_ca_fails_permanently(smtp_server, make_message,
                                                            server_tls):
    server, port = smtp_server(tls_context=server_tls)
    with pytest.raises(PermanentDispatchError, match="certificate not trusted"):
        channel(port, security="starttls").send(make_message(ChannelKind.EMAIL, TO))
    assert server.envelopes == []
