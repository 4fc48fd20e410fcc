"""The app the API tests serve: a few tasks (one that adds, one that fails, one that takes keywords),
a pipeline that waits for a message, and a service that needs a parameter. ``build(url)`` declares
them on a new App (the test process and the server process each make their own, on the same store:
task names are given, so both agree); ``make_web()`` is uvicorn's factory (``--factory``), set up
from the environment by ``tests/web/conftest.py``:

- CONVEYOR_WEB_TEST_URL: the store (required)
- CONVEYOR_WEB_TEST_AUTH: "0" serves with authentication off
- CONVEYOR_WEB_TEST_MAX_BODY: the body limit in bytes
- CONVEYOR_WEB_TEST_MOUNT: a path to mount the API at, inside a host Starlette app (as a user would)
- CONVEYOR_WEB_TEST_METRICS_PUBLIC: "1" serves /metrics without a token
- CONVEYOR_WEB_TEST_KEEPALIVE: seconds between the event stream's keep-alive comments (15 by default)
"""

from __future__ import annotations

import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from conveyor import App, Message
from conveyor.web import create_app

QUEUE = "default"


def build(url: str) -> App:
    """An App on ``url`` with the test tasks, pipeline and service declared."""
    app = App(url, lease=1.0)

    @app.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="fail")
    def fail(reason: str = "it failed") -> None:
        raise RuntimeError(reason)

    @app.task(name="echo")
    def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"args": list(args), "kwargs": kwargs}

    @app.task(name="strict", queue="strict", max_retries=2, timeout=30.0)
    def strict(n: int) -> int:
        return n * 2

    app.pipeline(add.s(1, 2), Message("go"), echo.s(done=True), name="order")

    @app.service(name="ticker", autostart=False)
    def ticker(ctx: Any, every: float) -> None:
        while not ctx.wait(every):
            pass

    return app


def make_web() -> Starlette:
    """uvicorn's factory: the app from the environment, served by ``create_app`` (mounted at
    CONVEYOR_WEB_TEST_MOUNT inside a host app when that is set)."""
    app = build(os.environ["CONVEYOR_WEB_TEST_URL"])
    if os.environ.get("CONVEYOR_WEB_TEST_KEEPALIVE"):
        from conveyor.web import sse

        sse.KEEPALIVE = float(os.environ["CONVEYOR_WEB_TEST_KEEPALIVE"])
    options: dict[str, Any] = {
        "auth": os.environ.get("CONVEYOR_WEB_TEST_AUTH", "1") != "0",
        "metrics_public": os.environ.get("CONVEYOR_WEB_TEST_METRICS_PUBLIC") == "1",
    }
    if os.environ.get("CONVEYOR_WEB_TEST_MAX_BODY"):
        options["max_body"] = int(os.environ["CONVEYOR_WEB_TEST_MAX_BODY"])
    web = create_app(app, **options)
    mount = os.environ.get("CONVEYOR_WEB_TEST_MOUNT")
    if not mount:
        return web

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("the host app")

    return Starlette(routes=[Route("/", home), Mount(mount, app=web)])
