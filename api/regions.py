"""The region packs the API knows: the deployment's own, and named packs for overlay jobs.

Packs are read once per application and kept (they are large and do not change while the
API runs); named packs are folders ``NAME/region.toml`` under the packs folder, so a request
can only ever name a pack, never a path.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from fastapi import FastAPI

from api.errors import ApiError

_PACK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
_lock = threading.Lock()

Bounds = tuple[float, float, float, float]


def deployment_region(app: FastAPI) -> tuple[Bounds | None, set[str] | None]:
    """The deployment region's lon/lat bounds and zone ids (None, None without one)."""
    state = app.state
    with _lock:
        if not hasattr(state, "region_context"):
            region = state.settings.region
            if region is None:
                state.region_context = (None, None)
            else:
                from feeds.region import subscription_context

                state.region_context = subscription_context(Path(region))
    return state.region_context


def named_packs(packs_dir: Path) -> dict[str, Path]:
    """The named region packs: ``{name: manifest}`` for each ``NAME/region.toml``."""
    if not packs_dir.is_dir():
        return {}
    return {p.parent.name: p for p in sorted(packs_dir.glob("*/region.toml"))
            if _PACK_NAME.match(p.parent.name)}


def pack_manifest(packs_dir: Path, name: str) -> Path:
    """The manifest of the named pack.

    Raises:
        ApiError: 422 naming ``region`` and listing the packs there are.
    """
    packs = named_packs(packs_dir)
    if name not in packs:
        known = ", ".join(sorted(packs)) or "none are installed"
        raise ApiError(422, f"region: no region pack {name!r}; known packs: {known}")
    return packs[name]
