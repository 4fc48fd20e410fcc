"""conveyor over HTTP: ``create_app(app)`` is the ASGI application (Starlette) serving the JSON API,
its OpenAPI document, the dashboard and the Prometheus metrics; ``conveyor web myapp:app`` runs it on
uvicorn. Needs the web extra: ``pip install 'conveyor[web]'``."""

from __future__ import annotations

from .server import create_app

__all__ = ["create_app"]
