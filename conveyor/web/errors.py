"""The API's errors: one JSON shape, ``{"error": code, "message": text}``, and the status each
failure answers with. Handlers raise ``ApiError`` (or let conveyor's own exceptions through:
``answer_for`` maps them), so a request that fails says why, in one line, and stores nothing."""

from __future__ import annotations

import logging

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..app_accounts import UserNotFound
from ..app_schedules import ScheduleNotFound
from ..codec import ArgumentError
from ..errors import DuplicateJob, InvalidTransition, JobNotFound, StoreUnavailable
from ..services import ServiceNotFound, UnknownService

log = logging.getLogger("conveyor.web")


class Error(msgspec.Struct, kw_only=True, frozen=True):
    """The body of every error answer."""

    error: str  #: bad_request, unauthorized, forbidden, not_found, conflict, too_large, invalid, unavailable...
    message: str  #: what went wrong, for a person


#: The code each error status answers with.
CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "invalid",
    500: "internal",
    503: "unavailable",
}


class ApiError(Exception):
    """A request that cannot be done: its HTTP status and a message for the caller."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or CODES.get(status, "error")
        self.message = message


class BadRequest(ApiError):
    """400: malformed JSON, a field of the wrong type, a bad query parameter."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


class Unauthorized(ApiError):
    """401: no token, or one that is unknown, revoked or malformed."""

    def __init__(self, message: str) -> None:
        super().__init__(401, message)


class Forbidden(ApiError):
    """403: the user may see the row (or route) but not do this."""

    def __init__(self, message: str) -> None:
        super().__init__(403, message)


class NotFound(ApiError):
    """404: no such row, or one the user may not see (the same answer, on purpose)."""

    def __init__(self, message: str) -> None:
        super().__init__(404, message)


class Conflict(ApiError):
    """409: the row is not in a state that allows it (retry a running job, cancel a finished one)."""

    def __init__(self, message: str) -> None:
        super().__init__(409, message)


class TooLarge(ApiError):
    """413: the body is over the server's limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than the limit of {limit} bytes")


class Invalid(ApiError):
    """422: well-formed, but refused by the app's own checks (unknown task, bad arguments)."""

    def __init__(self, message: str) -> None:
        super().__init__(422, message)


def error_response(
    status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    """An error answer in the one JSON shape."""
    body = msgspec.json.encode(Error(error=code or CODES.get(status, "error"), message=message))
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def answer_for(exc: BaseException) -> Response:
    """The answer to an exception raised while serving a request: ApiError as it says; conveyor's
    not-found errors 404; a state that does not allow the change 409; values the app refused 422;
    an unreachable store 503; anything else 500 (logged, its details not shown)."""
    if isinstance(exc, ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, exc.message, exc.code, headers)
    if isinstance(exc, (JobNotFound, ServiceNotFound, UserNotFound, ScheduleNotFound)):
        return error_response(404, _line(exc))
    if isinstance(exc, (InvalidTransition, DuplicateJob)):
        return error_response(409, _line(exc))
    if isinstance(exc, (UnknownService, ArgumentError, ValueError, TypeError, LookupError)):
        return error_response(422, _line(exc))
    if isinstance(exc, StoreUnavailable):
        return error_response(503, f"the store is unavailable: {_line(exc)}", headers={"Retry-After": "5"})
    log.exception("error serving a request", exc_info=exc)
    return error_response(500, "internal error (the server's log has the details)")


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (an unknown path, a method not allowed) in the one JSON shape."""
    assert isinstance(exc, HTTPException)
    message = {404: f"no such route: {request.url.path}", 405: f"method {request.method} not allowed here"}.get(
        exc.status_code, str(exc.detail)
    )
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # every method of every route of this path, not only the first route's
        headers["Allow"] = ", ".join(allowed_methods(request))
    return error_response(exc.status_code, message, headers=headers or None)


def allowed_methods(request: Request) -> list[str]:
    """The methods the routes matching the request's path answer."""
    from starlette.routing import Match, Route

    methods: set[str] = set()
    for route in getattr(request.app, "routes", []):
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    return sorted(methods)


def _line(exc: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__
