"""The admin web UI at /admin: server-rendered pages (Jinja2) with htmx, over the same services as /v1."""

from __future__ import annotations

from fastapi import FastAPI

from app.admin.routes import router


def install(app: FastAPI) -> None:
    """Serve the admin UI from `app`."""
    app.include_router(router)
