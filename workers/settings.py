"""Settings of a Tocsin deployment, from the environment (prefix ``TOCSIN_``) or ``.env``.

The embedded default needs nothing: data under ``./tocsin-data`` and a SQLite database
there. Production sets ``TOCSIN_DATABASE_URL`` to PostgreSQL + PostGIS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from alerts.model import Level
from store.db import DEFAULT_DB_FILENAME


class Settings(BaseSettings):
    """One deployment's settings; build it once and pass it down (no module singletons).

    Attributes:
        data_dir: where the database, archives and outputs live by default.
        database_url: SQLAlchemy URL; empty means SQLite at ``data_dir/tocsin.db``.
        sender: CAP ``sender`` of the messages this deployment issues (no spaces or commas).
        languages: languages every alert is written in, first preferred.
        alert_lifetime_h: hours until an alert expires unless updated.
        event_window_h: successive feed runs within this many hours can be one event.
        material_change_share: relative change in people or area that warrants an Update.
        cancel_below_level: an open event whose level falls below this is cancelled (and a
            new event below it raises no alert).
        cap_feed_public: every alert also goes to the public CAP feed (``public.atom``).
        broker_url: Celery broker (``redis://...``, ``amqp://...``); empty: the filesystem
            transport under ``data_dir`` (no server).
        dispatch_*: delivery lease, attempts, backoff and sweep interval (seconds).
        webhook_*, smtp_*, sms_*, mqtt_*, cap_feed_*: the channels; see docs/dispatch.md.
        feeds_config: the feeds TOML of the live pipeline (docs/feeds.md).
        feeds_tick_s: how often the beat looks for feeds due for a poll.
        archive_dir: the payload archive (default ``data_dir/archive``).
    """

    model_config = SettingsConfigDict(env_prefix="TOCSIN_", env_file=".env", extra="ignore")

    data_dir: Path = Path("tocsin-data")
    database_url: str = ""
    sender: str = "tocsin@example.invalid"
    languages: Annotated[tuple[str, ...], NoDecode] = ("en", "fr")
    alert_lifetime_h: float = Field(default=12.0, gt=0)
    event_window_h: float = Field(default=48.0, gt=0)
    material_change_share: float = Field(default=0.2, gt=0, lt=10)
    cancel_below_level: Level = Level.YELLOW
    cap_feed_public: bool = True

    # Dispatch. Empty broker URL: kombu's filesystem transport under data_dir (no server).
    broker_url: str = ""
    dispatch_lease_s: float = Field(default=120.0, gt=0)
    dispatch_max_attempts: int = Field(default=12, ge=1)
    dispatch_retry_base_s: float = Field(default=2.0, gt=0)
    dispatch_retry_max_s: float = Field(default=600.0, gt=0)
    dispatch_sweep_interval_s: float = Field(default=15.0, gt=0)

    # Channels. A channel whose server setting is empty is not configured: its deliveries
    # fail permanently with that reason (visible in `tocsin deliveries list`).
    webhook_secret: SecretStr = SecretStr("")
    webhook_allow_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_security: Literal["none", "starttls", "tls"] = "starttls"
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_from: str = "Tocsin <tocsin@localhost>"
    smtp_tls_verify: bool = True
    smtp_ca_file: str = ""
    sms_gateway_url: str = ""
    sms_gateway_auth: SecretStr = SecretStr("")
    sms_body_template: str = ""
    sms_content_type: Literal["application/json", "application/x-www-form-urlencoded"] = \
        "application/json"
    sms_sender_id: str = "Tocsin"
    sms_allow_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    mqtt_host: str = ""
    mqtt_port: int = 1883
    mqtt_username: str = ""
    mqtt_password: SecretStr = SecretStr("")
    mqtt_tls: bool = False
    mqtt_ca_file: str = ""
    cap_feed_dir: Path | None = None
    cap_feed_base_url: str = ""

    # Live pipeline: the feeds file, how often the beat looks for due feeds, the archive.
    feeds_config: Path | None = None
    feeds_tick_s: float = Field(default=5.0, gt=0)
    archive_dir: Path | None = None

    @field_validator("languages", "webhook_allow_hosts", "sms_allow_hosts", mode="before")
    @classmethod
    def _split_languages(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("feeds_config", "archive_dir", "cap_feed_dir", mode="before")
    @classmethod
    def _empty_path_is_none(cls, value: object) -> object:
        # An empty TOCSIN_FEEDS_CONFIG means "not set", not the current folder.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("sender")
    @classmethod
    def _sender_is_cap_safe(cls, value: str) -> str:
        if not value or any(c in value for c in " ,<&"):
            raise ValueError("sender must be non-empty, without spaces, commas, '<' or '&'")
        return value

    def resolved_archive_dir(self) -> Path:
        """Where every ingested payload is archived (default: ``data_dir/archive``)."""
        return self.archive_dir or self.data_dir / "archive"

    def resolved_cap_feed_dir(self) -> Path:
        """Where the CAP feed files are written (default: ``data_dir/cap-feed``)."""
        return self.cap_feed_dir or self.data_dir / "cap-feed"

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file under ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / DEFAULT_DB_FILENAME).resolve()}"
