"""``tocsin serve`` (the HTTP API under uvicorn) and ``tocsin api-key`` (keys, by an operator).

The first admin key can only be made here: the API itself never hands out admin keys.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Column, Table

from store import api_store
from store.db import session_scope
from workers.cli.store_cmds import _fail, console, open_store

api_key_app = typer.Typer(help="API keys: one or more per agency, and admin keys.",
                          no_args_is_help=True)


def _api_settings():  # noqa: ANN202 - ApiSettings, imported late (FastAPI is not small)
    from api.settings import ApiSettings

    try:
        return ApiSettings()
    except ValidationError as exc:
        problems = "; ".join(f"TOCSIN_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
                             for e in exc.errors())
        raise _fail(f"bad setting: {problems}") from exc


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 in a container).")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Server processes.")] = 1,
    proxy_headers: Annotated[bool, typer.Option(
        help="Trust X-Forwarded-For from a reverse proxy (client addresses for rate limits)."
    )] = False,
) -> None:
    """Serve the HTTP API (agencies, analysts, the public CAP feed) with uvicorn."""
    import uvicorn

    settings = _api_settings()
    open_store(settings)  # migrate once here, not in every server process
    uvicorn.run("api.serve:app", factory=False, host=host, port=port, workers=workers,
                proxy_headers=proxy_headers, forwarded_allow_ips="*" if proxy_headers else None,
                log_level="info")


@api_key_app.command("create")
def api_key_create(
    agency: Annotated[str | None, typer.Option(help="The agency the key speaks for.")] = None,
    admin: Annotated[bool, typer.Option(help="An admin key (manages agencies and keys).")
                     ] = False,
    label: Annotated[str, typer.Option(help="What the key is for (shown in listings).")
                     ] = "cli",
    expires_in_days: Annotated[float | None, typer.Option(help="Days until it expires.")
                               ] = None,
) -> None:
    """Make a key and print its token once (only a hash of it is stored)."""
    if admin == (agency is not None):
        raise _fail("give either --agency ID or --admin")
    now = datetime.now(UTC)
    expires = now + timedelta(days=expires_in_days) if expires_in_days else None
    try:
        with session_scope(open_store()) as session:
            key, token = api_store.create_api_key(
                session, role="admin" if admin else "agency", agency_id=agency, label=label,
                now=now, expires_at=expires)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    console.print(f"key {key.key_id} ({key.role}{' of ' + agency if agency else ''}); "
                  "the token is shown once:")
    typer.echo(token)


@api_key_app.command("list")
def api_key_list(agency: Annotated[str | None, typer.Option(help="Only this agency.")] = None,
                 ) -> None:
    """List keys (never their secrets)."""
    with session_scope(open_store()) as session:
        keys = api_store.list_api_keys(session, agency)
    table = Table("Role", "Agency", "Label", "Created", "Expires", "Revoked")
    table.columns.insert(0, Column("Key", no_wrap=True, min_width=16))
    for k in keys:
        table.add_row(k.key_id, k.role, k.agency_id or "", k.label, f"{k.created_at:%Y-%m-%d}",
                      f"{k.expires_at:%Y-%m-%d}" if k.expires_at else "",
                      f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "")
    console.print(table)


@api_key_app.command("revoke")
def api_key_revoke(key_id: Annotated[str, typer.Argument(help="The key's id.")]) -> None:
    """Revoke a key at once, in every API process."""
    try:
        with session_scope(open_store()) as session:
            api_store.revoke_api_key(session, key_id, now=datetime.now(UTC))
    except LookupError as exc:
        raise _fail(str(exc), 1) from exc
    console.print(f"key {key_id} revoked")


__all__ = ["api_key_app", "serve"]
