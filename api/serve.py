"""The application object uvicorn imports (``api.serve:app``), built from the environment."""

from __future__ import annotations

from api.app import create_app

# The schema was migrated by `tocsin serve` (or the compose `migrate` service) beforehand.
app = create_app(migrate=False)
