"""The dependency rule of the design, checked by parsing imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE_PACKAGES = ["geo"]
# The pure part of alerts/: everything but the channel adapters (they do I/O).
FORBIDDEN_IN_CORE = {
    "celery", "kombu", "fastapi", "starlette", "sqlalchemy", "geoalchemy2", "alembic",
    "requests", "httpx", "urllib3", "boto3", "paho", "feeds", "workers", "store", "api",
    "rasterio.io", "typer", "rich",
}


def _core_files() -> list[Path]:
    files = [p for pkg in CORE_PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    files += [p for p in (ROOT / "alerts").rglob("*.py") if "channels" not in p.parts]
    return files


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_modules_import_no_adapter_or_wiring_library(path: Path) -> None:
    bad = {
        name
        for name in _imported_modules(path)
        for forbidden in FORBIDDEN_IN_CORE
        if name == forbidden or name.startswith(forbidden + ".")
    }
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}, which the core may not"


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_modules_never_read_the_clock_or_open_rasters(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    for needle in ("datetime.now(", "datetime.utcnow(", "time.time(", "rasterio.open("):
        assert needle not in source, f"{path.relative_to(ROOT)} calls {needle}"
