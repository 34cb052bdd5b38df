"""Who is calling and how much: API-key authentication, roles, rate limits, body sizes.

Keys travel as ``Authorization: Bearer tsn_...``. A key is checked against the store on
every request, so a revocation takes effect at once in every API process. Rate limits are
token buckets per key (per client address on the public routes), kept in the process.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError
from store.api_store import ApiKey, InvalidApiKeyError, authenticate
from store.db import session_scope

bearer = HTTPBearer(auto_error=False, description="An API key: `Bearer tsn_<id>_<secret>`.")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RateLimiter:
    """Token buckets: ``burst`` requests at once, refilled at ``per_min`` a minute.

    At most ``max_buckets`` callers are remembered (the least recent are forgotten), so a
    flood of client addresses cannot grow memory without bound.
    """

    def __init__(self, per_min: float, burst: int, *, max_buckets: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s = per_min / 60.0
        self.burst = float(burst)
        self.max_buckets = max_buckets
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, who: str) -> None:
        """Take one token for ``who``.

        Raises:
            ApiError: 429 with ``Retry-After`` when the bucket is empty.
        """
        if self.per_s <= 0:
            return
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(who, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.per_s)
            allowed = tokens >= 1.0
            self._buckets[who] = (tokens - 1.0 if allowed else tokens, now)
            while len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
        if not allowed:
            wait_s = max(1, int((1.0 - tokens) / self.per_s + 0.999))
            raise ApiError(429, f"rate limit: at most {self.per_s * 60:g} requests a minute "
                                f"(bursts of {self.burst:g}); retry in {wait_s} s",
                           headers={"Retry-After": str(wait_s)})


def client_address(request: Request) -> str:
    """The caller's address as the server saw it (a proxy in front should set it right)."""
    return request.client.host if request.client else "unknown"


def public_rate_limit(request: Request) -> None:
    """Rate-limit an unauthenticated route per client address."""
    request.app.state.rate_limiter.check(f"ip:{client_address(request)}")


def current_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> ApiKey:
    """The valid API key of the request, rate-limited per key.

    Raises:
        ApiError: 401 without a key or with one that is malformed, unknown, revoked or
            expired; 429 over the key's rate (or, without a valid key, the address's).
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized(request, "an API key is required: Authorization: Bearer "
                                     "tsn_<id>_<secret>")
    state = request.app.state
    try:
        with session_scope(state.read_sessions) as session:
            key = authenticate(session, credentials.credentials, now=state.clock())
    except InvalidApiKeyError as exc:
        raise _unauthorized(request, str(exc)) from None
    state.rate_limiter.check(f"key:{key.key_id}")
    return key


def _unauthorized(request: Request, detail: str) -> ApiError:
    """The 401 to answer, after counting the refusal against the caller's address.

    Callers without a valid key are rate-limited per address, as on the public routes, so
    guessing keys (or flooding key look-ups) from one address soon earns 429s instead.
    """
    public_rate_limit(request)
    return ApiError(401, detail, headers={"WWW-Authenticate": 'Bearer realm="tocsin"'})


def agency_key(key: Annotated[ApiKey, Depends(current_key)]) -> ApiKey:
    """A key that speaks for an agency (its records only)."""
    if key.role != "agency" or key.agency_id is None:
        raise ApiError(403, "this route is for agency keys; an admin key manages agencies "
                            "and keys only")
    return key


def admin_key(key: Annotated[ApiKey, Depends(current_key)]) -> ApiKey:
    """A key with the admin role."""
    if key.role != "admin":
        raise ApiError(403, "this route needs an admin key")
    return key


AgencyKey = Annotated[ApiKey, Depends(agency_key)]
AdminKey = Annotated[ApiKey, Depends(admin_key)]
AnyKey = Annotated[ApiKey, Depends(current_key)]


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Refuse request bodies over a limit with 413, whether announced or streamed.

    Args:
        app: the ASGI application.
        max_bytes: the limit for every route ...
        upload_prefixes: ... except those under these path prefixes, which get
            ``max_upload_bytes``.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, max_upload_bytes: int,
                 upload_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes
        self.upload_prefixes = upload_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, counting its body; answer 413 once it is over the limit."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        limit = (self.max_upload_bytes if path.startswith(self.upload_prefixes)
                 else self.max_bytes)
        announced = _announced_problem(scope, limit)
        if announced is not None:
            await _send_error(send, *announced)
            return
        seen = 0
        started = too_large = False
        refusal = f"request body is over the limit of {limit} bytes"

        async def counting_receive() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    too_large = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # FastAPI turns an error while reading the body into its own answer (400): once
            # the body is over the limit, that answer is replaced by the 413.
            nonlocal started
            if too_large:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _send_error(send, 413, refusal)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _TooLarge:
            if not started:
                await _send_error(send, 413, refusal)


def _announced_problem(scope: Scope, limit: int) -> tuple[int, str] | None:
    """The refusal (status, detail) a request's Content-Length alone earns, if any."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                announced = int(value)
            except ValueError:
                return 400, "Content-Length is not a number"
            if announced > limit:
                return 413, f"request body of {announced} bytes is over the limit of {limit} bytes"
    return None


async def _send_error(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail, "errors": []}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
