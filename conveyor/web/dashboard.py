"""The dashboard's routes: its shell page at ``/`` and its assets under ``/static``.

The dashboard is one static page and a script (``static/app.js``, no build step, nothing from a CDN)
that reads the JSON API with the token the user pastes in, sent as ``Authorization: Bearer`` on every
request; the live view reads ``/api/events/stream`` the same way. So neither route here holds any data
and neither needs a user: all data, and every check of who may see it, is the API's. URLs in the page
are relative, so the whole server can be mounted at any path of another ASGI app.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

#: The page's files, shipped in the package (pyproject's package data includes them).
STATIC = Path(__file__).parent / "static"

#: The shell page's security headers: nothing but this origin's own script, styles and API; never framed.
SHELL_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


async def shell(request: Request) -> Response:
    """The dashboard's page: markup only; its script fetches everything else with the user's token."""
    return Response((STATIC / "index.html").read_bytes(), media_type="text/html; charset=utf-8", headers=SHELL_HEADERS)


class _Assets(StaticFiles):
    """The static files, sent with ``nosniff`` and revalidated on each load (they change with the package)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"cache-control", b"no-cache"))
                message = {**message, "headers": headers}
            await send(message)

        await super().__call__(scope, receive, send_with_headers)


def routes() -> list[BaseRoute]:
    """``GET /`` (the shell page) and ``/static`` (its script and styles), for ``create_app`` to mount."""
    return [
        Route("/", shell, methods=["GET", "HEAD"], name="dashboard"),
        Mount("/static", app=_Assets(directory=STATIC), name="static"),
    ]
