"""One table from exceptions to HTTP status codes, and the one error body every route uses.

Routes raise the domain's own errors (the store's, the alerts', the feeds') or
:class:`ApiError`; nothing here decides per route. An error not in the table is a bug: Starlette
logs it with its traceback and answers 500 without details.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from alerts.errors import AlertError
from feeds.errors import FeedError
from geo.errors import GeoError
from store.api_store import BadCursorError, InvalidApiKeyError
from store.repo import DuplicateRecordError, RecordNotFoundError

log = logging.getLogger("tocsin.api")


class FieldProblem(BaseModel):
    """One problem with one field of the request."""

    field: str
    message: str


class ErrorBody(BaseModel):
    """Every error answer: what went wrong, and per field when the request was invalid."""

    detail: str
    errors: list[FieldProblem] = []


class ApiError(Exception):
    """An error a route raises with its status code (forbidden, too large, rate limited)."""

    def __init__(self, status_code: int, detail: str, *,
                 headers: dict[str, str] | None = None,
                 errors: list[FieldProblem] | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers
        self.errors = errors or []


# First match wins: subclasses before their bases.
ERROR_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (InvalidApiKeyError, 401),
    (BadCursorError, 400),
    (RecordNotFoundError, 404),
    (DuplicateRecordError, 409),
    (AlertError, 422),
    (GeoError, 422),
    (FeedError, 422),
    (LookupError, 404),
    (ValueError, 422),
    (OperationalError, 503),
)

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "A malformed request (bad cursor)."},
    401: {"model": ErrorBody, "description": "No API key, or one unknown, revoked or expired."},
    403: {"model": ErrorBody, "description": "The key may not do this."},
    404: {"model": ErrorBody, "description": "Not found (or not this agency's)."},
    409: {"model": ErrorBody, "description": "It would duplicate a stored record."},
    413: {"model": ErrorBody, "description": "The request body is too large."},
    415: {"model": ErrorBody, "description": "The content type is not accepted."},
    422: {"model": ErrorBody, "description": "A field is invalid (each one is named)."},
    429: {"model": ErrorBody, "description": "Too many requests for this key; see Retry-After."},
    503: {"model": ErrorBody, "description": "The store is unavailable; retry later."},
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of a route (for its OpenAPI ``responses``)."""
    return {code: ERROR_RESPONSES[code] for code in codes}


def status_for(exc: BaseException) -> int | None:
    """The status code the table gives ``exc``, or None when it is not in the table."""
    for kind, status in ERROR_STATUS:
        if isinstance(exc, kind):
            return status
    return None


def _body(detail: str, errors: list[FieldProblem] | None = None) -> dict[str, Any]:
    return ErrorBody(detail=detail, errors=errors or []).model_dump()


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error with :class:`ErrorBody` and the table's status code."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(_body(exc.detail, exc.errors), status_code=exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [FieldProblem(field=_field(tuple(e.get("loc", ()))),
                                 message=str(e.get("msg", "invalid"))) for e in exc.errors()]
        detail = "; ".join(f"{p.field}: {p.message}" for p in problems) or "invalid request"
        return JSONResponse(_body(detail, problems), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(_body(str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    async def _domain(request: Request, exc: Exception) -> JSONResponse:
        status = status_for(exc) or 500
        if status == 503:
            log.warning("store unavailable on %s: %s", request.url.path, exc)
            return JSONResponse(_body("the store is unavailable; retry later"), status_code=503,
                                headers={"Retry-After": "5"})
        return JSONResponse(_body(str(exc)), status_code=status)

    # Registered per class (not on Exception), so anything outside the table stays a 500
    # that Starlette logs with its traceback.
    for kind, _status in ERROR_STATUS:
        app.add_exception_handler(kind, _domain)
