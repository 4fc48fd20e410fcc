"""Who is calling: ``Authorization: Bearer <token>`` -> the user (``app.authenticate``: the token's
secret is compared in constant time against its stored SHA-256). No cookies anywhere: a token in a
header is CSRF-safe by construction (a page of another site cannot make the browser send it).

Lookups are cached for ``ttl`` seconds (5 by default) to spare the store a read per request: a
revoked token or a removed user stops working within that, and at once on this server when the
change is made through its own API (``forget``). With authentication off every request acts as
``accounts.ANONYMOUS_SYSTEM`` (``conveyor web`` allows that on a loopback address only)."""

from __future__ import annotations

import hashlib
import threading
import time
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from ..accounts import ANONYMOUS_SYSTEM, User
from .errors import Unauthorized

if TYPE_CHECKING:
    from ..app import App

CACHE_TTL = 5.0  #: seconds a token's user is remembered
CACHE_SIZE = 10_000  #: tokens remembered at most (past it, the expired ones are dropped, else all)


class Authenticator:
    """Finds the user of a request's token, with a short cache; ``enabled=False``: everyone is
    ``ANONYMOUS_SYSTEM``."""

    def __init__(self, app: App, *, enabled: bool = True, ttl: float = CACHE_TTL) -> None:
        self.app = app
        self.enabled = enabled
        self.ttl = ttl
        self._cache: dict[str, tuple[float, User | None]] = {}
        self._lock = threading.Lock()

    async def user(self, request: HTTPConnection) -> User:
        """The request's user (as the middleware found it, or found now). Raises Unauthorized (401)
        for no token, a malformed header, or a token that is unknown, revoked or whose user is gone;
        or the store's error if it could not be asked."""
        found = request.scope.get("state", {})
        if "user" in found:
            user, problem = found["user"], found.get("auth_problem")
        else:
            user, problem = await self.identify(request.headers)
        if user is None:
            raise problem or Unauthorized("no user")
        assert isinstance(user, User)
        return user

    async def identify(self, headers: Headers) -> tuple[User | None, Exception | None]:
        """The user of a request's headers, or None and why not (Unauthorized, or the store's error)."""
        if not self.enabled:
            return ANONYMOUS_SYSTEM, None
        try:
            user = await self.lookup(bearer_token(headers.get("authorization")))
        except Exception as exc:  # an unreachable store is told to the route, which answers 503
            return None, exc
        if user is None:
            return None, Unauthorized("the token is not valid: unknown, revoked, or its user was removed")
        return user, None

    async def lookup(self, token: str) -> User | None:
        """The user of ``token`` (None: not a valid one), from the cache or the store."""
        if not self.enabled:
            return ANONYMOUS_SYSTEM
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        user = await run_in_threadpool(self.app.authenticate, token)
        with self._lock:
            if len(self._cache) >= CACHE_SIZE:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
                if len(self._cache) >= CACHE_SIZE:
                    self._cache.clear()
            self._cache[key] = (now + self.ttl, user)
        return user

    def forget(self) -> None:
        """Drop every cached lookup: a token revoked or a user changed through this server takes
        effect at once here."""
        with self._lock:
            self._cache.clear()


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header. Raises Unauthorized."""
    if not header:
        raise Unauthorized("no token: send the header Authorization: Bearer <token> (conveyor tokens create NAME)")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be: Bearer <token>")
    return token.strip()


class AuthMiddleware:
    """Puts the request's user in ``request.state.user`` (None without a valid token; the reason in
    ``request.state.auth_problem``) for every route: the API's routes answer 401 without one, the
    public ones (the dashboard's shell, the probe) ignore it, ``/metrics`` reads it."""

    def __init__(self, app: ASGIApp, auth: Authenticator) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            state = scope.setdefault("state", {})
            state["user"], state["auth_problem"] = await self.auth.identify(Headers(scope=scope))
        await self.app(scope, receive, send)
