"""One error shape for every failure: `{"error": {"code", "message", "detail"}}`."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import (
    AppError,
    DatabaseBusy,
    DatabaseUnavailable,
    InvalidJson,
    LimitExceeded,
    MethodNotAllowed,
    NotFound,
    ValidationFailed,
)

log = logging.getLogger(__name__)

# Validation error types that mean "over a size limit": answered 413 with their own code.
_LIMIT_CODES = {"string_too_long": "field_too_long", "field_too_long": "field_too_long"}


def render(error: AppError) -> JSONResponse:
    """The JSON response for an AppError."""
    body = {"error": {"code": error.code, "message": error.message, "detail": error.detail}}
    return JSONResponse(body, status_code=error.status_code, headers=error.headers)


def _clean_loc(loc: tuple[Any, ...] | list[Any]) -> list[Any]:
    # Drop the discriminator tags ("one"/"many") that pydantic adds to a union's path.
    return [part for part in loc if part not in ("one", "many")]


def _limit_code(error: dict[str, Any]) -> str | None:
    kind = error.get("type", "")
    if kind in _LIMIT_CODES:
        return _LIMIT_CODES[kind]
    if kind == "too_long":
        loc = _clean_loc(error.get("loc", ()))
        if loc and loc[-1] == "steps":
            return "too_many_steps"
        if loc == ["body"]:
            return "too_many_trajectories"
        return "too_many_items"
    return None


def validation_error(exc: RequestValidationError) -> AppError:
    """Map pydantic's errors to invalid JSON (400), a size limit (413) or a schema error (422)."""
    errors = [
        {"loc": _clean_loc(e.get("loc", ())), "type": e.get("type"), "msg": e.get("msg")}
        for e in exc.errors()
    ]
    if any(e["type"] == "json_invalid" for e in errors):
        return InvalidJson(detail=errors)
    for raw in exc.errors():
        code = _limit_code(raw)
        if code is not None:
            where = ".".join(map(str, _clean_loc(raw["loc"])))
            return LimitExceeded(f"Over a size limit at {where}: {raw['msg']}.", code=code, detail=errors)
    return ValidationFailed(detail=errors)


def _template(path: str) -> re.Pattern[str]:
    """A path template (`/v1/skills/{skill_id}`) as a regex matching its paths."""
    parts = ("[^/]+" if p.startswith("{") and p.endswith("}") else re.escape(p) for p in path.split("/"))
    return re.compile("^" + "/".join(parts) + "$")


def allowed_methods(request: Request) -> list[str]:
    """The methods the API schema documents for this request's path (empty for paths outside it)."""
    table: list[tuple[re.Pattern[str], list[str]]] | None = getattr(
        request.app.state, "allowed_methods", None
    )
    if table is None:
        table = [
            (_template(path), sorted(method.upper() for method in item))
            for path, item in request.app.openapi().get("paths", {}).items()
        ]
        request.app.state.allowed_methods = table
    return next((methods for pattern, methods in table if pattern.match(request.url.path)), [])


def install(app: FastAPI) -> None:
    """Register the handlers on `app`."""

    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return render(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return render(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return render(NotFound("No such endpoint; see /docs for the API."))
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route on this path; list those of all of them.
            headers["Allow"] = ", ".join(allowed_methods(request)) or headers.get("Allow", "")
            return render(
                MethodNotAllowed(
                    f"{request.method} is not allowed here; use {headers['Allow']}.", headers=headers
                )
            )
        return render(
            AppError(str(exc.detail), code="http_error", status_code=exc.status_code, headers=headers)
        )

    @app.exception_handler(PoolTimeout)
    async def _busy(_: Request, exc: PoolTimeout) -> JSONResponse:
        log.warning("no database connection free: %s", exc)
        return render(DatabaseBusy(headers={"Retry-After": "1"}))

    @app.exception_handler(DBAPIError)
    async def _db(_: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated or "connection" in str(exc.orig).lower():
            log.warning("database unavailable: %s", exc.orig)
            return render(DatabaseUnavailable())
        if "cannot contain NUL" in str(exc.orig) or "\\u0000 cannot be converted" in str(exc.orig):
            # PostgreSQL text holds no U+0000; the request's transaction was rolled back whole.
            return render(
                ValidationFailed("Text may not contain the NUL character (U+0000).", code="nul_in_text")
            )
        raise exc
