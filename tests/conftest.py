"""Shared fixtures: the real outside data set, and tiny hand-checkable grids."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _real_data_dir() -> Path | None:
    configured = os.environ.get("TOCSIN_REAL_DATA")
    candidate = Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real outside data set (``TOCSIN_REAL_DATA``); skips outside CI when absent."""
    found = _real_data_dir()
    if found is None:
        msg = "real data set not found: set TOCSIN_REAL_DATA to the shared data folder"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " (it is required in CI)")
        pytest.skip(msg)
    return found
