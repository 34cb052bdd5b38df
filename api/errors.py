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
from starlette.routing import Match

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


def invalid(field: str, message: str) -> ApiError:
    """A 422 naming the one field of the request that is wrong (``channels.1.address``)."""
    return ApiError(422, f"{field}: {message}", errors=[FieldProblem(field=field, message=message)])


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
    """The documented error answers of a route (for its OpenAPI ``responses``).

    413 is always among them: the body limit answers it on any route, before routing.
    """
    return {code: ERROR_RESPONSES[code] for code in sorted({*codes, 413})}


def status_for(exc: BaseException) -> int | None:
    """The status code the table gives ``exc``, or None when it is not in the table."""
    for kind, status in ERROR_STATUS:
        if isinstance(exc, kind):
            return status
    return None


def _body(detail: str, errors: list[FieldProblem] | None = None) -> dict[str, Any]:
    return ErrorBody(detail=detail, errors=errors or []).model_dump()


_UNREADABLE_BODY = "There was an error parsing the body"  # FastAPI's words


def _problem(error: dict[str, Any]) -> FieldProblem:
    """One pydantic/FastAPI validation error as the field it names and what is wrong."""
    loc = tuple(error.get("loc", ()))
    message = str(error.get("msg", "invalid"))
    if error.get("type") == "json_invalid":
        # loc is ("body", character offset): the field is the body itself.
        reason = (error.get("ctx") or {}).get("error", "")
        where = f" at character {loc[-1]}" if len(loc) > 1 else ""
        return FieldProblem(field="body", message=f"not valid JSON{where}: {reason}".rstrip(": "))
    parts = [str(p) for p in loc if p != "body"]
    return FieldProblem(field=".".join(parts) or "body", message=message)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route answers at the request's path (Starlette names one route's)."""
    return [method for method in _METHODS
            if any(route.matches({**request.scope, "method": method})[0] is Match.FULL
                   for route in request.app.router.routes)]


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error with :class:`ErrorBody` and the table's status code."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(_body(exc.detail, exc.errors), status_code=exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [_problem(e) for e in exc.errors()]
        detail = "; ".join(f"{p.field}: {p.message}" for p in problems) or "invalid request"
        return JSONResponse(_body(detail, problems), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == _UNREADABLE_BODY:
            # FastAPI's answer to a body json cannot read (not UTF-8, nested too deep, an
            # integer too long): as invalid as a JSON syntax error, so 422 as that is.
            problem = FieldProblem(field="body", message="not a JSON document this API reads "
                                                         f"({type(exc.__cause__).__name__})")
            return JSONResponse(_body(f"body: {problem.message}", [problem]), status_code=422)
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse(_body(str(exc.detail)), status_code=exc.status_code,
                            headers=headers or None)

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
