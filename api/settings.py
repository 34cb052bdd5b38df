"""Settings of the HTTP API: the deployment's settings plus the API's own limits.

Every limit is enforced at the edge, before the store is touched; each can be set from the
environment (``TOCSIN_API_*``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from alerts.subscriptions import MAX_AREA_KM2
from workers.settings import Settings


class ApiSettings(Settings):
    """The API's settings (prefix ``TOCSIN_``, like the rest of the deployment).

    Attributes:
        api_rate_per_min: requests per minute allowed per API key (per client address for
            the public routes); 0 turns rate limiting off.
        api_rate_burst: requests a key may make at once before the rate applies.
        api_max_body_bytes: largest JSON request body.
        api_max_upload_bytes: largest uploaded hazard raster (overlay jobs).
        api_max_vertices: most vertices in one subscription's area.
        api_max_area_km2: largest area of one subscription polygon.
        api_page_max: most records on one page of a listing.
        region: the deployment's region pack manifest; subscriptions are checked against it
            (area overlaps it, zone codes exist). Zone codes need it.
        region_packs_dir: folder of named region packs for overlay jobs (``NAME/region.toml``).
    """

    api_rate_per_min: float = Field(default=600.0, ge=0)
    api_rate_burst: int = Field(default=60, ge=1)
    api_max_body_bytes: int = Field(default=1_000_000, ge=1_000)
    api_max_upload_bytes: int = Field(default=512_000_000, ge=1_000)
    api_max_vertices: int = Field(default=20_000, ge=4)
    api_max_area_km2: float = Field(default=MAX_AREA_KM2, gt=0)
    api_page_max: int = Field(default=500, ge=1)
    region: Path | None = None
    region_packs_dir: Path | None = None

    @field_validator("region", "region_packs_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    def resolved_region_packs_dir(self) -> Path:
        """Where the named region packs of overlay jobs are (default ``data_dir/regions``)."""
        return self.region_packs_dir or self.data_dir / "regions"

    def resolved_jobs_dir(self) -> Path:
        """Where overlay jobs keep their inputs and results (``data_dir/jobs``)."""
        return self.data_dir / "jobs"
