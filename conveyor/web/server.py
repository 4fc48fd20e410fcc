"""``create_app``: the Starlette application serving a conveyor App over HTTP: the JSON API under
``/api`` (one ``api_*`` module per resource group), its OpenAPI document (``/openapi.json``), a
public probe (``/healthz``), the dashboard (``/``, ``/static``) and the Prometheus metrics
(``/metrics``). Run it with uvicorn (``conveyor web myapp:app``), or mount it inside your own ASGI
app at a path::

    from starlette.applications import Starlette
    from starlette.routing import Mount
    from conveyor.web import create_app

    site = Starlette(routes=[Mount("/conveyor", app=create_app(app))])
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from ..app import App
from ..errors import StoreError
from . import api_accounts, api_events, api_jobs, api_notifications, api_ops, api_schedules, api_services, openapi
from .auth import Authenticator, AuthMiddleware
from .dashboard import routes as dashboard_routes
from .errors import answer_for, http_exception
from .metrics import routes as metrics_routes
from .routing import Call, Endpoint, Router, Settings, encoded, starlette_route
from .schemas import Healthz

log = logging.getLogger("conveyor.web")

MAX_BODY = 1_000_000  #: bytes a request body may hold by default

meta = Router("meta")


@meta.get("/openapi.json", answer=dict[str, Any], public=True)
def openapi_document(call: Call) -> dict[str, Any]:
    """This API's OpenAPI 3.1 document, generated from the types the handlers use."""
    root = str(call.request.scope.get("root_path", ""))
    cache: dict[str, dict[str, Any]] = call.settings.extra.setdefault("openapi", {})
    if root not in cache:
        app, extra = call.app, call.settings.extra
        names = {("EnqueueBody", "task"): list(app.tasks), ("ServiceBody", "service"): list(app.service_defs),
                 ("PipelineBody", "pipeline"): list(app.pipelines)}  # fmt: skip
        cache[root] = openapi.document(endpoints(), root_path=root, metrics=bool(extra.get("metrics")),
                                       metrics_public=bool(extra.get("metrics_public")), names=names)  # fmt: skip
    return cache[root]


@meta.get("/healthz", answer=Healthz, also=(503,), public=True)
def healthz(call: Call) -> Any:
    """The public probe: 200 when this server is up and its store reachable with a current schema.

    The full report (workers, queues, the leader) is ``GET /api/health``, for signed-in users."""
    try:
        current, latest = call.app.backend.schema_versions()
    except StoreError as exc:
        return encoded(Healthz(ok=False, message=f"store error: {type(exc).__name__}"), 503)
    if current != latest:
        return encoded(Healthz(ok=False, message=f"schema version {current}, this conveyor needs {latest}"), 503)
    return Healthz(ok=True)


def endpoints() -> list[Endpoint]:
    """Every API route, in the order they are matched and documented."""
    routers = (meta, api_accounts.router, api_jobs.router, api_notifications.router, api_ops.router,
               api_schedules.router, api_services.router, api_events.router)  # fmt: skip
    return [endpoint for router in routers for endpoint in router.endpoints]


def create_app(app: App, *, auth: bool = True, max_body: int = MAX_BODY, metrics_public: bool = False) -> Starlette:
    """The ASGI application serving ``app``: the API, its OpenAPI document, the dashboard, metrics.

    ``auth``: every request but the public ones needs ``Authorization: Bearer <token>`` (False: every
    request acts as a system user named ``local``, for a server on a loopback address only; ``conveyor
    web`` checks that). ``max_body``: the largest request body, in bytes (413 past it).
    ``metrics_public``: serve ``/metrics`` without a token."""
    if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1:
        raise ValueError(f"max_body must be an int >= 1 (bytes), got {max_body!r}")
    settings = Settings(app=app, auth=Authenticator(app, enabled=bool(auth)), max_body=max_body)
    routes: list[BaseRoute] = [starlette_route(endpoint, settings) for endpoint in endpoints()]
    metrics = metrics_routes(app, public=metrics_public)
    settings.extra.update(metrics=bool(metrics), metrics_public=metrics_public)
    routes += metrics + dashboard_routes()

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        """Open the store at start; stop the metrics' follower at the end."""
        try:  # open the store (and migrate it, if the app may) before the first request
            await run_in_threadpool(lambda: app.backend)
        except StoreError as exc:
            log.warning("the store cannot be opened yet (%s); requests will try again", exc)
        yield
        for route in metrics:  # stop the metrics' follower of the event log
            closer = getattr(getattr(getattr(route, "endpoint", None), "__self__", None), "close", None)
            if callable(closer):
                closer()

    server = Starlette(
        routes=routes,
        middleware=[Middleware(AuthMiddleware, auth=settings.auth)],
        exception_handlers={HTTPException: http_exception, Exception: _internal},
        lifespan=lifespan,
    )
    server.state.conveyor = settings
    return server


async def _internal(request: Request, exc: Exception) -> Response:
    """An error outside the API's routes (the dashboard's, the metrics'), in the one JSON shape."""
    return answer_for(exc)
