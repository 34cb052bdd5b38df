"""The e-mail channel: one accessible multipart mail per delivery, sent with :mod:`smtplib`.

The mail has the full text as plain text and as accessible HTML, the map inline, and the
stored CAP bytes as ``alert.cap.xml``; its Message-ID comes from the idempotency key, so a
retried attempt is recognisably the same mail. Connection trouble and 4xx replies are
retryable; 5xx replies, refused credentials and a server without the TLS asked for are
permanent (the channel never falls back to plaintext).
"""

from __future__ import annotations

import hashlib
import html
import re
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import format_datetime, parseaddr
from typing import Literal

from alerts.channels.base import AlertContent, OutgoingMessage, Receipt
from alerts.errors import DispatchError, PermanentDispatchError, RetryableDispatchError
from alerts.model import ChannelKind, Level

Clock = Callable[[], datetime]

# Words the channel itself adds (the alert text comes from the store). Languages not listed
# here get the English words; the alert text itself stays in the subscriber's language.
_LABELS: dict[str, dict[str, str]] = {
    "en": {
        "what": "What is happening",
        "escalated": "[Escalated]",
        "escalation_note": "Nobody acknowledged this alert on the first channel it was sent "
                           "on, so it is now sent to you by e-mail.",
        "digest_one": "Tocsin digest: 1 alert",
        "digest_many": "Tocsin digest: {n} alerts",
        "map_alt": "Map of the alert area: {area}",
    },
    "de": {
        "what": "Was geschieht",
        "escalated": "[Eskaliert]",
        "escalation_note": "Niemand hat diese Warnung auf dem ersten Kanal bestätigt, "
                           "deshalb erhalten Sie sie jetzt per E-Mail.",
        "digest_one": "Tocsin-Sammelmeldung: 1 Warnung",
        "digest_many": "Tocsin-Sammelmeldung: {n} Warnungen",
        "map_alt": "Karte des Warngebiets: {area}",
    },
    "fr": {
        "what": "Ce qui se passe",
        "escalated": "[Escaladé]",
        "escalation_note": "Personne n’a accusé réception de cette alerte sur le premier "
                           "canal ; elle vous est donc envoyée par e-mail.",
        "digest_one": "Résumé Tocsin : 1 alerte",
        "digest_many": "Résumé Tocsin : {n} alertes",
        "map_alt": "Carte de la zone d’alerte : {area}",
    },
}

# Badge colours (background, text); every pair is at least 4.5:1 (WCAG AA) and the badge
# always carries the level in words, so colour is never the only signal.
LEVEL_COLOURS: dict[Level, tuple[str, str]] = {
    Level.GREEN: ("#1b5e20", "#ffffff"),
    Level.YELLOW: ("#fdd835", "#000000"),
    Level.ORANGE: ("#f57c00", "#000000"),
    Level.RED: ("#b71c1c", "#ffffff"),
}
TEXT_COLOUR, BACKGROUND_COLOUR = "#1a1a1a", "#ffffff"
_SAFE_KEY = re.compile(r"[A-Za-z0-9._=-]{1,200}")
_QUEUE_ID = (re.compile(r"queued as ([A-Za-z0-9][\w.-]*)", re.I),
             re.compile(r"\bid=([A-Za-z0-9][\w.-]*)"))


class _MailPolicy(EmailPolicy):
    """SMTP's policy, except that the idempotency key header is never folded."""

    # Folding a key with no space puts it on a line of its own: readers that unfold
    # without stripping would see it with a leading space.

    def fold_binary(self, name: str, value: str) -> bytes:  # noqa: D102
        if name.lower() == "tocsin-idempotency-key" and _SAFE_KEY.fullmatch(value):
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


MAIL_POLICY = _MailPolicy(linesep="\r\n")


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """How to reach the outgoing mail server.

    Attributes:
        host: the SMTP server.
        from_address: the sender (``alerts@agency.example`` or ``Tocsin <alerts@...>``).
        port: 587 for STARTTLS submission, 465 for implicit TLS, 25 for a local relay.
        security: ``"starttls"`` (required, never falls back to plaintext), ``"tls"``
            (implicit TLS) or ``"none"`` (a trusted local relay only).
        username: log in with this user when set.
        password: the password for ``username``.
        timeout_s: connect and per-reply timeout.
        tls_verify: check the server's certificate and host name (turn off only for tests).
        ca_file: a PEM file of CA certificates to trust instead of the system ones
            (private CAs).
    """

    host: str
    from_address: str
    port: int = 587
    security: Literal["none", "starttls", "tls"] = "starttls"
    username: str | None = None
    password: str | None = None
    timeout_s: float = 15.0
    tls_verify: bool = True
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if self.security not in ("none", "starttls", "tls"):
            raise ValueError(f"SMTP security must be none, starttls or tls: {self.security!r}")
        if not parseaddr(self.from_address)[1]:
            raise ValueError(f"SMTP from_address {self.from_address!r} is not an address")

    def tls_context(self) -> ssl.SSLContext:
        """The TLS context for STARTTLS or implicit TLS."""
        context = ssl.create_default_context(cafile=self.ca_file)
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


class EmailChannel:
    """Sends each delivery as one mail to the subscription's e-mail address."""

    kind = ChannelKind.EMAIL

    def __init__(self, config: SmtpConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self._clock = clock or (lambda: datetime.now(UTC))

    def send(self, message: OutgoingMessage) -> Receipt:
        """Send ``message`` by e-mail.

        Returns:
            A receipt whose detail is the server's reply to the mail data and whose
            ``remote_id`` is the server's queue id when its reply names one.

        Raises:
            RetryableDispatchError: connection refused, timed out or dropped, or a 4xx reply.
            PermanentDispatchError: a bad address, refused credentials, a 5xx reply, or no
                STARTTLS where it is required.
        """
        recipient = _recipient(message.channel.address)
        mail = build_email(message, from_address=self.config.from_address,
                           to_address=recipient, date=self._clock())
        raw = mail.as_bytes(policy=MAIL_POLICY)
        where = f"SMTP {self.config.host}:{self.config.port}"
        try:
            code, reply = self._deliver(recipient, raw)
        except DispatchError:
            raise
        except smtplib.SMTPNotSupportedError as exc:
            raise PermanentDispatchError(f"{where}: {exc}") from exc
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError) as exc:
            raise RetryableDispatchError(f"{where}: {exc}") from exc
        except smtplib.SMTPResponseException as exc:
            step = "login" if isinstance(exc, smtplib.SMTPAuthenticationError) else "command"
            raise _reply_error(f"{where} {step}", exc.smtp_code, exc.smtp_error) from exc
        except smtplib.SMTPException as exc:  # e.g. no authentication method in common
            raise PermanentDispatchError(f"{where}: {exc}") from exc
        except ssl.SSLCertVerificationError as exc:  # a configuration fault, not a blip
            raise PermanentDispatchError(f"{where}: TLS certificate not trusted: "
                                         f"{exc.verify_message}") from exc
        except OSError as exc:  # refused, timed out, unreachable, TLS handshake broken
            raise RetryableDispatchError(f"{where}: {type(exc).__name__}: {exc}") from exc
        return Receipt(channel=ChannelKind.EMAIL, address=recipient, detail=f"{code} {reply}",
                       remote_id=_queue_id(reply))

    def _deliver(self, recipient: str, raw: bytes) -> tuple[int, str]:
        """One SMTP session; returns the final reply to DATA."""
        cfg = self.config
        smtp: smtplib.SMTP | None = None
        try:
            # The host goes to the constructor: smtplib checks the certificate against it.
            if cfg.security == "tls":
                smtp = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout_s,
                                        context=cfg.tls_context())
            else:
                smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_s)
            smtp.ehlo_or_helo_if_needed()
            if cfg.security == "starttls":
                smtp.starttls(context=cfg.tls_context())  # raises when not offered
                smtp.ehlo()
            if cfg.username is not None:
                smtp.login(cfg.username, cfg.password or "")
            sender = parseaddr(cfg.from_address)[1]
            where = f"SMTP {cfg.host}:{cfg.port}"
            code, reply = smtp.mail(sender)
            if code != 250:
                raise _reply_error(f"{where} refused MAIL FROM:<{sender}>", code, reply)
            code, reply = smtp.rcpt(recipient)
            if code not in (250, 251):
                raise _reply_error(f"{where} refused RCPT TO:<{recipient}>", code, reply)
            code, reply = smtp.data(raw)
            if code != 250:
                raise _reply_error(f"{where} refused the mail", code, reply)
            return code, _text(reply)
        finally:
            if smtp is not None:
                _close(smtp)


def _close(smtp: smtplib.SMTP) -> None:
    # QUIT is a courtesy: the mail is already accepted (or refused), so its failure changes
    # nothing; close() always runs so no socket is left open.
    try:
        if smtp.sock is not None:
            smtp.quit()
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        smtp.close()


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())


def _reply_error(step: str, code: int, reply: bytes | str) -> DispatchError:
    """4xx (and anything unexpected short of 5xx) is retryable; 5xx is permanent."""
    words = f"{step}: {code} {_text(reply)}"
    if 500 <= code < 600:
        return PermanentDispatchError(words)
    return RetryableDispatchError(words)


def _queue_id(reply: str) -> str | None:
    for pattern in _QUEUE_ID:
        match = pattern.search(reply)
        if match:
            return match.group(1).rstrip(".")
    return None


def _recipient(address: str) -> str:
    addr = parseaddr(address)[1]
    if "@" not in addr or not addr.isascii() or any(c in addr for c in "\r\n "):
        raise PermanentDispatchError(f"{address!r} is not an e-mail address it can send to")
    return addr


def message_id(idempotency_key: str) -> str:
    """The Message-ID of a delivery: the same on every attempt, so a resend is recognisable.

    Keys with characters a Message-ID may not hold are hashed.
    """
    local = idempotency_key if _SAFE_KEY.fullmatch(idempotency_key) else hashlib.sha256(
        idempotency_key.encode("utf-8")).hexdigest()
    return f"<{local}@tocsin.invalid>"


def _labels(language: str) -> dict[str, str]:
    return _LABELS.get(language.split("-")[0].lower(), _LABELS["en"])


def _is_digest(message: OutgoingMessage) -> bool:
    return message.kind == "digest" or len(message.alerts) > 1


def _digest_title(message: OutgoingMessage) -> str:
    n, labels = len(message.alerts), _labels(message.language)
    return labels["digest_one"] if n == 1 else labels["digest_many"].format(n=n)


def email_subject(message: OutgoingMessage) -> str:
    """The subject: the headline or a digest count, after an escalation marker."""
    subject = _digest_title(message) if _is_digest(message) else message.alert.text.headline
    if message.kind == "escalation":
        subject = f"{_labels(message.language)['escalated']} {subject}"
    return " ".join(subject.split())  # a header is one line


def _with_level(alert: AlertContent) -> str:
    text = alert.text
    if text.level_text.casefold() in text.headline.casefold():
        return text.headline
    return f"{text.level_text}: {text.headline}"


def _file_names(message: OutgoingMessage, stem: str, suffix: str) -> list[str]:
    if len(message.alerts) == 1:
        return [f"{stem}{suffix}"]
    return [f"{stem}-{i}{suffix}" for i in range(1, len(message.alerts) + 1)]


def plain_body(message: OutgoingMessage) -> str:
    """The plain-text part: the full text (a digest lists its alerts first)."""
    parts = [_labels(message.language)["escalation_note"]] if message.kind == "escalation" else []
    if _is_digest(message):
        parts.append(_digest_title(message))
        parts.append("\n".join(f"- {_with_level(a)}" for a in message.alerts))
        parts.extend(f"{'=' * 40}\n\n{a.text.full}" for a in message.alerts)
    else:
        parts.append(message.alert.text.full)
    return "\n\n".join(parts) + "\n"


def html_body(message: OutgoingMessage, map_cids: list[str | None]) -> str:
    """The HTML part: the same text, with headings, the level in words, high contrast.

    Args:
        message: the delivery.
        map_cids: per alert, the Content-ID (without angle brackets) of its inline map.
    """
    labels = _labels(message.language)
    esc = html.escape
    several = _is_digest(message)
    body: list[str] = []
    if message.kind == "escalation":
        body.append(f'<p style="border:3px solid #000000;padding:8px"><strong>'
                    f'{esc(labels["escalation_note"])}</strong></p>')
    if several:
        body.append(f"<h1>{esc(_digest_title(message))}</h1>")
        body.append("<ul>" + "".join(f"<li>{esc(_with_level(a))}</li>"
                                     for a in message.alerts) + "</ul>")
    for alert, cid in zip(message.alerts, map_cids, strict=True):
        body.append(_alert_html(alert, cid, labels, top=2 if several else 1))
    lang = esc(message.alert.text.language or message.language)
    title = esc(email_subject(message))
    style = (f"margin:0;padding:16px;background:{BACKGROUND_COLOUR};color:{TEXT_COLOUR};"
             "font-family:Arial,Helvetica,sans-serif;font-size:16px;line-height:1.5")
    return (f'<!DOCTYPE html>\n<html lang="{lang}">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{title}</title>\n</head>\n<body style=\"{style}\">\n"
            '<main style="max-width:40em">\n' + "\n".join(body) + "\n</main>\n</body>\n</html>\n")


def _alert_html(alert: AlertContent, cid: str | None, labels: dict[str, str], *,
                top: int) -> str:
    """One alert: level badge, headline, then each section of the full text."""
    esc = html.escape
    text = alert.text
    bg, fg = LEVEL_COLOURS.get(alert.level, (TEXT_COLOUR, BACKGROUND_COLOUR))
    out = [f'<article lang="{esc(text.language)}">',
           f'<p style="display:inline-block;margin:0 0 8px 0;padding:4px 10px;'
           f'background:{bg};color:{fg};border:2px solid #000000;font-weight:bold">'
           f"{esc(text.level_text)}</p>",
           f"<h{top}>{esc(text.headline)}</h{top}>"]
    # The full text is the headline, the description, then sections that open with their
    # own heading line ("What to do:"); render each with a real heading.
    sections = [s.strip() for s in text.full.split("\n\n") if s.strip()]
    sub = top + 1
    for i, section in enumerate(sections[1:] or [text.description]):
        lines = section.splitlines()
        if i == 0 and len(lines) == 1:
            out += [f"<h{sub}>{esc(labels['what'])}</h{sub}>", f"<p>{esc(section)}</p>"]
        elif len(lines) > 1:
            out.append(f"<h{sub}>{esc(lines[0].rstrip(' :' + chr(0xa0)))}</h{sub}>")
            rest = lines[1:]
            if all(line.startswith("- ") for line in rest):
                out.append("<ul>" + "".join(f"<li>{esc(line[2:])}</li>" for line in rest)
                           + "</ul>")
            else:
                out.extend(f"<p>{esc(line)}</p>" for line in rest)
        else:
            out.append(f"<p>{esc(section)}</p>")
    if cid is not None:
        alt = labels["map_alt"].format(area=alert.area_description)
        out.append(f'<p><img src="cid:{esc(cid)}" alt="{esc(alt)}" width="600" '
                   'style="max-width:100%;height:auto;border:1px solid #000000"></p>')
    out.append("</article>")
    return "\n".join(out)


def build_email(message: OutgoingMessage, *, from_address: str, to_address: str,
                date: datetime) -> EmailMessage:
    """The complete mail for ``message``.

    Structure: ``multipart/mixed`` [ ``multipart/alternative`` [ text/plain,
    ``multipart/related`` [ text/html, map PNGs ] ], CAP XML attachments ]. One alert gives
    ``map.png`` and ``alert.cap.xml``; a digest numbers them (``alert-1.cap.xml``...) in the
    order the body lists the alerts.

    Args:
        message: the delivery.
        from_address: the From header.
        to_address: the recipient.
        date: the Date header (timezone-aware).
    """
    key_local = message_id(message.idempotency_key)[1:-1].split("@")[0]
    map_cids = [f"map-{i}.{key_local}@tocsin.invalid" if a.map_png is not None else None
                for i, a in enumerate(message.alerts, start=1)]
    mail = EmailMessage(policy=MAIL_POLICY)
    mail["Subject"] = email_subject(message)
    mail["From"] = from_address
    mail["To"] = to_address
    mail["Date"] = format_datetime(date)
    mail["Message-ID"] = message_id(message.idempotency_key)
    mail["Tocsin-Idempotency-Key"] = message.idempotency_key
    mail["Auto-Submitted"] = "auto-generated"
    if message.top_level is Level.RED:
        mail["Importance"] = "high"
        mail["X-Priority"] = "1"
    # quoted-printable keeps the mail 7-bit clean, so no 8BITMIME server is needed.
    mail.set_content(plain_body(message), subtype="plain", charset="utf-8",
                     cte="quoted-printable")
    mail.add_alternative(html_body(message, map_cids), subtype="html", charset="utf-8",
                         cte="quoted-printable")
    html_part = next(p for p in mail.iter_parts() if p.get_content_type() == "text/html")
    for alert, cid, name in zip(message.alerts, map_cids, _file_names(message, "map", ".png"),
                                strict=True):
        if alert.map_png is not None and cid is not None:
            html_part.add_related(alert.map_png, maintype="image", subtype="png",
                                  cid=f"<{cid}>", filename=name, disposition="inline")
    for alert, name in zip(message.alerts, _file_names(message, "alert", ".cap.xml"),
                           strict=True):
        mail.add_attachment(alert.cap_xml, maintype="application", subtype="cap+xml",
                            filename=name)
    # Last: making the mail multipart moves every Content-* header into the first part.
    mail["Content-Language"] = message.alert.text.language or message.language
    return mail
