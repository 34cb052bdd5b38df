"""Build the channel registry and the dispatch policy of a deployment from its settings.

A channel is registered only when its server is configured (SMTP host, SMS gateway URL, MQTT
host); the CAP feed and the webhook always are. Deliveries on a channel that is not
configured fail permanently with a reason that says which setting to give.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from alerts.channels.base import ChannelRegistry
from alerts.channels.cap_feed import CapFeedChannel, CapFeedConfig
from alerts.channels.sms_gateway import (
    DEFAULT_BODY_TEMPLATE,
    BasicAuth,
    BearerAuth,
    HeaderAuth,
    NoAuth,
    SmsAuth,
    SmsGatewayChannel,
    SmsGatewayConfig,
)
from alerts.channels.smtp import EmailChannel, SmtpConfig
from alerts.channels.webhook import WebhookChannel, WebhookConfig
from workers.dispatch import DispatchPolicy
from workers.settings import Settings

WEBHOOK_SECRET_FILE = "webhook-secret"
"""Under the data directory: the generated master secret when none is configured."""


def dispatch_policy(settings: Settings) -> DispatchPolicy:
    """Lease, attempts and backoff from the settings."""
    return DispatchPolicy(lease_s=settings.dispatch_lease_s,
                          max_attempts=settings.dispatch_max_attempts,
                          retry_base_s=settings.dispatch_retry_base_s,
                          retry_max_s=max(settings.dispatch_retry_max_s,
                                          settings.dispatch_retry_base_s))


def webhook_master_secret(settings: Settings) -> bytes:
    """``TOCSIN_WEBHOOK_SECRET``, else a random secret generated once under the data dir.

    The generated file is readable by its owner only; every agency's signing secret is
    derived from it (``tocsin agency secret`` shows an agency its own). Workers on several
    machines must share one secret, so with a broker configured the setting is required.

    Raises:
        ValueError: a broker is configured but no secret.
    """
    configured = settings.webhook_secret.get_secret_value()
    if configured:
        return configured.encode("utf-8")
    if settings.broker_url:
        raise ValueError("TOCSIN_WEBHOOK_SECRET must be set when TOCSIN_BROKER_URL is: "
                         "workers on several machines must sign with the same secret")
    path = Path(settings.data_dir) / WEBHOOK_SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole to a temporary name, then linked into place: another process sees
        # either no file or the complete secret, never an empty one.
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".webhook-secret-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(secrets.token_hex(32))
            os.chmod(temp, 0o600)
            try:
                os.link(temp, path)
            except FileExistsError:
                pass  # another process generated it first: use theirs
        finally:
            os.unlink(temp)
    return path.read_text(encoding="utf-8").strip().encode("utf-8")


def sms_auth(value: str) -> SmsAuth:
    """Parse ``TOCSIN_SMS_GATEWAY_AUTH``: empty, basic, bearer or header credentials.

    The forms: ``basic:USER:PASS``, ``bearer:TOKEN``, ``header:NAME:VALUE``.

    Raises:
        ValueError: another form; the message shows the accepted ones.
    """
    if not value:
        return NoAuth()
    scheme, _, rest = value.partition(":")
    if scheme == "basic" and ":" in rest:
        user, _, password = rest.partition(":")
        return BasicAuth(user, password)
    if scheme == "bearer" and rest:
        return BearerAuth(rest)
    if scheme == "header" and ":" in rest:
        name, _, header_value = rest.partition(":")
        return HeaderAuth(name, header_value)
    raise ValueError("TOCSIN_SMS_GATEWAY_AUTH must be empty, basic:USER:PASS, bearer:TOKEN "
                     "or header:NAME:VALUE")


def build_registry(settings: Settings) -> ChannelRegistry:
    """Every configured channel of the deployment.

    Raises:
        ValueError: a channel setting is malformed (the message names it).
    """
    registry = ChannelRegistry()
    registry = registry.register(CapFeedChannel(CapFeedConfig(
        directory=settings.resolved_cap_feed_dir(),
        base_url=settings.cap_feed_base_url or None)))
    registry = registry.register(WebhookChannel(WebhookConfig(
        master_secret=webhook_master_secret(settings),
        allow_hosts=settings.webhook_allow_hosts, timeout_s=settings.webhook_timeout_s)))
    if settings.smtp_host:
        registry = registry.register(EmailChannel(SmtpConfig(
            host=settings.smtp_host, from_address=settings.smtp_from, port=settings.smtp_port,
            security=settings.smtp_security, username=settings.smtp_username or None,
            password=settings.smtp_password.get_secret_value() or None,
            tls_verify=settings.smtp_tls_verify, ca_file=settings.smtp_ca_file or None)))
    if settings.sms_gateway_url:
        registry = registry.register(SmsGatewayChannel(SmsGatewayConfig(
            url=settings.sms_gateway_url,
            auth=sms_auth(settings.sms_gateway_auth.get_secret_value()),
            body_template=settings.sms_body_template or DEFAULT_BODY_TEMPLATE,
            content_type=settings.sms_content_type, sender_id=settings.sms_sender_id,
            allow_hosts=settings.sms_allow_hosts)))
    if settings.mqtt_host:
        from alerts.channels.mqtt import MqttChannel, MqttConfig

        registry = registry.register(MqttChannel(MqttConfig(
            host=settings.mqtt_host, port=settings.mqtt_port,
            username=settings.mqtt_username or None,
            password=settings.mqtt_password.get_secret_value() or None,
            tls=settings.mqtt_tls, ca_file=settings.mqtt_ca_file or None)))
    return registry
