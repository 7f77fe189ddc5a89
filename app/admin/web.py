"""Templates, security headers and error pages of the admin UI."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, StrictUndefined

from app.admin import auth, render
from app.admin.auth import Admin
from app.errors import AppError
from app.storage.models import TrustTier

log = logging.getLogger(__name__)

# No inline script or style anywhere: a skill that smuggles markup past the sanitiser still cannot run.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
LOGIN_REASONS = {
    "revoked": "Your API key was revoked; you have been signed out.",
    "expired": "Your session expired; sign in again.",
    "scope": "Your API key may no longer review; you have been signed out.",
    "signed_out": "You are signed out.",
}


def when(value: datetime | None) -> str:
    """A timestamp as UTC, to the second."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def tier(value: int) -> str:
    """`T0` .. `T4`."""
    return TrustTier(value).label


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The Jinja environment: autoescaped, strict about undefined names, with the UI's filters."""
    env = Environment(
        loader=PackageLoader("app.admin", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        reveal=render.reveal,
        when=when,
        tier=tier,
        clip=render.clip,
        json=render.pretty_json,
        compact=render.compact_json,
        md=render.markdown,
    )
    return env


def page(
    request: Request, template: str, admin: Admin | None, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """A full page rendered from `template`."""
    html = (
        environment()
        .get_template(template)
        .render(request=request, admin=admin, path=request.url.path, **context)
    )
    return HTMLResponse(html, status_code=status_code)


def see_other(url: str) -> RedirectResponse:
    """Redirect after a POST, so a reload does not send it again."""
    return RedirectResponse(url, status_code=303)


def secure(response: Response, *, cache: bool = False) -> Response:
    """Add the admin pages' security headers (CSP and friends; no caching unless `cache`)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if not cache:
        response.headers["Cache-Control"] = "no-store"
    return response


def error_page(request: Request, status_code: int, message: str, detail: Any = None) -> HTMLResponse:
    """An error as a page, with a way back."""
    return page(
        request,
        "error.html",
        None,
        status_code=status_code,
        message=message,
        detail=detail,
        back=_back(request.url.path),
    )


def _back(path: str) -> str:
    parts = path.rstrip("/").split("/")
    # /admin/skills/<id>/... leads back to the skill; anything else to its section.
    if len(parts) >= 4 and parts[2] in {"skills", "experiences", "trajectories"}:
        return "/".join(parts[:4])
    return "/".join(parts[:3]) if len(parts) >= 3 else auth.PATH


def login_redirect(request: Request, reason: str) -> Response:
    """Send the browser to the sign-in page (and back here after), forgetting a dead session."""
    target = request.url.path if request.method == "GET" else auth.PATH
    url = f"{auth.PATH}/login?next={quote(target)}"
    if reason:
        url += f"&reason={quote(reason)}"
    response = see_other(url)
    if reason:
        auth.end_session(response)
    return response


class AdminRoute(APIRoute):
    """Every admin response gets the security headers; errors become pages, a missing session a sign-in."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        static = self.path.startswith(f"{auth.PATH}/static/")

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except auth.LoginRequired as exc:
                response = login_redirect(request, exc.reason)
            except AppError as exc:
                response = error_page(request, exc.status_code, exc.message, exc.detail)
            except RequestValidationError as exc:
                problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
                response = error_page(request, 422, "Some fields of this request are not valid.", problems)
            return secure(response, cache=static)

        return route
