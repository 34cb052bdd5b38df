"""Settings of a Tocsin deployment, from the environment (prefix ``TOCSIN_``) or ``.env``.

The embedded default needs nothing: data under ``./tocsin-data`` and a SQLite database
there. Production sets ``TOCSIN_DATABASE_URL`` to PostgreSQL + PostGIS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from alerts.model import Level


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

    @field_validator("languages", mode="before")
    @classmethod
    def _split_languages(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("sender")
    @classmethod
    def _sender_is_cap_safe(cls, value: str) -> str:
        if not value or any(c in value for c in " ,<&"):
            raise ValueError("sender must be non-empty, without spaces, commas, '<' or '&'")
        return value

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file under ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'tocsin.db').resolve()}"
