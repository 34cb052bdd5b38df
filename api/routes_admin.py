"""Admin routes: agencies and their API keys. An admin key never reads agencies' alerts."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from alerts.model import Agency
from api.errors import invalid, responses
from api.routes_agency import Db
from api.schemas import AgencyIn, AgencyOut, Identifier, KeyIn, KeyOut, NewKeyOut
from api.security import AdminKey, AnyKey
from store import api_store, repo

router = APIRouter(prefix="/v1", tags=["admin"])
_KEYED = (401, 403, 429, 503)


def key_out(key: api_store.ApiKey) -> KeyOut:
    """A key's public view."""
    return KeyOut(key_id=key.key_id, role=key.role,  # type: ignore[arg-type]
                  agency_id=key.agency_id, label=key.label, created_at=key.created_at,
                  expires_at=key.expires_at, revoked_at=key.revoked_at)


@router.get("/me", response_model=KeyOut, responses=responses(401, 429, 503))
def whoami(key: AnyKey) -> KeyOut:
    """The key the request was made with: its role and agency."""
    return key_out(key)


@router.post("/agencies", status_code=201, response_model=AgencyOut,
             responses=responses(*_KEYED, 409, 422))
def create_agency(body: AgencyIn, _admin: AdminKey, session: Db) -> AgencyOut:
    """Register an agency (then give it a key)."""
    repo.add_agency(session, Agency(body.agency_id, body.name, body.contact))
    return AgencyOut(agency_id=body.agency_id, name=body.name, contact=body.contact)


@router.get("/agencies", response_model=list[AgencyOut], responses=responses(*_KEYED))
def list_agencies(_admin: AdminKey, session: Db) -> list[AgencyOut]:
    """Every agency, by id."""
    return [AgencyOut(agency_id=a.agency_id, name=a.name, contact=a.contact)
            for a in repo.list_agencies(session)]


@router.post("/agencies/{agency_id}/keys", status_code=201, response_model=NewKeyOut,
             responses=responses(*_KEYED, 404, 422))
def create_agency_key(agency_id: Identifier, body: KeyIn, request: Request, _admin: AdminKey,
                      session: Db) -> NewKeyOut:
    """A new key for the agency; its token is in this answer only."""
    repo.get_agency(session, agency_id)
    now = request.app.state.clock()
    expires = now + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    key, token = api_store.create_api_key(session, role="agency", agency_id=agency_id,
                                          label=body.label, now=now, expires_at=expires)
    return NewKeyOut(**key_out(key).model_dump(), token=token)


@router.get("/agencies/{agency_id}/keys", response_model=list[KeyOut],
            responses=responses(*_KEYED, 404, 422))
def list_agency_keys(agency_id: Identifier, _admin: AdminKey, session: Db) -> list[KeyOut]:
    """The agency's keys (never their secrets), revoked ones included."""
    repo.get_agency(session, agency_id)
    return [key_out(k) for k in api_store.list_api_keys(session, agency_id)]


@router.delete("/keys/{key_id}", status_code=204, responses=responses(*_KEYED, 404, 422))
def revoke_key(key_id: Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")], request: Request,
               admin: AdminKey, session: Db) -> Response:
    """Revoke a key at once (every API process checks keys on each request)."""
    if key_id == admin.key_id:
        raise invalid("key_id", "an admin key cannot revoke itself; use another admin key "
                                "or `tocsin api-key revoke`")
    api_store.revoke_api_key(session, key_id, now=request.app.state.clock())
    return Response(status_code=204)
