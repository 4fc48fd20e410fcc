"""How an API route is declared and served: each ``api_*`` module declares its routes with a
``Router`` (method, path, the body and query types it decodes, the type it answers, its status),
and ``starlette_route`` turns one into a Starlette route that authenticates the caller, reads and
decodes the body (within the size limit) and the query string, runs the handler in a thread (the
App's calls block) and encodes the answer with msgspec. ``conveyor.web.openapi`` reads the same
declarations, so the document and the handlers share their types.

A handler is a plain function of a ``Call`` (the app, the user, the decoded body and query, the path
parameters); an ``async`` handler (the event stream) is awaited on the loop instead."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..accounts import ANONYMOUS_SYSTEM
from .errors import BadRequest, TooLarge, answer_for

if TYPE_CHECKING:
    from ..accounts import User
    from ..app import App
    from .auth import Authenticator

log = logging.getLogger("conveyor.web")

Handler = Callable[["Call"], Any]


@dataclass(frozen=True)
class Endpoint:
    """One API route as declared: what it decodes and answers, for serving and for the OpenAPI
    document alike. ``errors``: the error statuses it may answer besides 400, 401 and 503."""

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    answer: Any = None  #: the type of the answer's body (None: a handler answering a Response itself)
    body: type[msgspec.Struct] | None = None
    query: type[msgspec.Struct] | None = None
    status: int = 200
    also: tuple[int, ...] = ()  #: other success statuses it may answer, with the same type
    public: bool = False  #: served without a user (the OpenAPI document, the probe)
    errors: tuple[int, ...] = ()
    media_type: str = "application/json"  #: the answer's type (text/event-stream for the stream)
    #: OpenAPI links from the answer to other operations: (name, operationId, parameter, JSON pointer in the answer)
    links: tuple[tuple[str, str, str, str], ...] = ()
    description: str = ""


class Router:
    """The routes of one resource group (an ``api_*`` module), declared with its decorators."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.endpoints: list[Endpoint] = []

    def route(self, method: str, path: str, **options: Any) -> Callable[[Handler], Handler]:
        """Declare the decorated function as the handler of ``method path``; its docstring's first
        line is the route's summary, the rest its description."""

        def register(handler: Handler) -> Handler:
            doc = inspect.cleandoc(handler.__doc__ or "")
            summary, _, description = doc.partition("\n")
            self.endpoints.append(Endpoint(method, path, handler, summary.strip(), self.tag,
                                           description=" ".join(description.split()), **options))  # fmt: skip
            return handler

        return register

    def get(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        """``route("GET", ...)``."""
        return self.route("GET", path, **options)

    def post(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        """``route("POST", ...)``."""
        return self.route("POST", path, **options)

    def delete(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        """``route("DELETE", ...)``."""
        return self.route("DELETE", path, **options)


@dataclass
class Settings:
    """What every route of one server shares: the app, the authenticator, the body limit."""

    app: App
    auth: Authenticator
    max_body: int
    extra: dict[str, Any] = field(default_factory=dict)  #: per-server caches (the event filter's owners)


@dataclass
class Call:
    """One request as a handler sees it, decoded and authenticated."""

    settings: Settings
    user: User
    body: Any
    query: Any
    params: dict[str, str]
    request: Request

    @property
    def app(self) -> App:
        """The conveyor App the server serves."""
        return self.settings.app

    def audit(self, action: str, target: str | None = None, data: dict[str, Any] | None = None) -> None:
        """Record a change this request made (who, what, on which row) in the audit log."""
        self.app.audit(self.user.name, action, target, data)


def starlette_route(endpoint: Endpoint, settings: Settings) -> Route:
    """The Starlette route serving ``endpoint``."""

    async def serve(request: Request) -> Response:
        try:
            return await _serve(endpoint, settings, request)
        except Exception as exc:  # every failure answers in the one JSON shape
            return answer_for(exc)

    serve.__name__ = endpoint.handler.__name__
    return Route(endpoint.path, serve, methods=[endpoint.method], name=f"{endpoint.tag}.{endpoint.handler.__name__}")


async def _serve(endpoint: Endpoint, settings: Settings, request: Request) -> Response:
    """Authenticate, decode, run the handler (in a thread unless it is async), encode its answer."""
    user = ANONYMOUS_SYSTEM if endpoint.public else await settings.auth.user(request)
    query = decode_query(request, endpoint.query) if endpoint.query is not None else None
    body = None
    if endpoint.body is not None:
        body = decode_body(await read_body(request, settings.max_body), endpoint.body)
    params = dict(request.path_params)
    if any("\x00" in value for value in params.values()):
        raise BadRequest("a path parameter holds a NUL character")
    call = Call(settings, user, body, query, params, request)
    if inspect.iscoroutinefunction(endpoint.handler):
        result = await endpoint.handler(call)
    else:
        result = await run_in_threadpool(endpoint.handler, call)
    if isinstance(result, Response):
        return result
    return encoded(result, endpoint.status)


def encoded(value: Any, status: int = 200) -> Response:
    """``value`` as a JSON answer (msgspec encodes structs, enums, lists and dicts)."""
    return Response(msgspec.json.encode(value), status_code=status, media_type="application/json")


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, refused (413) past ``limit`` bytes, whether it says its length or not."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise TooLarge(limit)
        except ValueError:
            raise BadRequest("the Content-Length header is not a number") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def decode_body(raw: bytes, kind: type[msgspec.Struct]) -> Any:
    """The body as ``kind``: an empty body is ``{}`` (every field left out); malformed JSON or a field
    of the wrong type is a 400 naming it."""
    if not raw.strip():
        raw = b"{}"
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"bad request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("the request body is nested too deeply") from None


def decode_query(request: Request, kind: type[msgspec.Struct]) -> Any:
    """The query string as ``kind`` (numbers and booleans from their text); unknown parameters are
    ignored, a bad value is a 400 naming it."""
    params = request.query_params
    given = {name: value for name, value in params.items() if name in kind.__struct_fields__}
    for name in given:
        if len(params.getlist(name)) > 1:
            raise BadRequest(f"bad query parameter: {name} is given more than once")
    try:
        decoded = msgspec.convert(given, kind, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc).replace("$.", "")
        raise BadRequest(f"bad query parameter: {message}") from None
    for name, value in given.items():  # 'null' would be None: a parameter left out is that, not a value
        if getattr(decoded, name) is None:
            raise BadRequest(f"bad query parameter: {name}={value!r}")
    return decoded
