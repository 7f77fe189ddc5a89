"""The API side: request-id and request-metrics middleware (pure ASGI), and GET /metrics."""

from __future__ import annotations

import hmac
import time
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import SecretStr
from starlette.datastructures import MutableHeaders
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.errors import Unauthorized
from app.observability import context
from app.observability.metrics import Metrics
from app.observability.state import Sources, StateCollector

UNMATCHED = "<unmatched>"
_HEADER = context.REQUEST_ID_HEADER.lower().encode("latin-1")


class RequestId:
    """Take a valid `X-Request-ID` or make one; make it current for the request and send it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = next((value for name, value in scope.get("headers", []) if name == _HEADER), None)
        request_id = context.valid_request_id(sent.decode("latin-1") if sent is not None else None)
        request_id = request_id or context.new_request_id()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[context.REQUEST_ID_HEADER] = request_id
            await send(message)

        with context.bound(request_id):
            await self.app(scope, receive, send_with_id)


class RequestMetrics:
    """Time every request into the app's histogram, labelled by route template (never the raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        root_path = scope.get("root_path", "")
        status = 500  # unless the app answers: an exception escaping it becomes a 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.metrics.observe_request(
                scope["method"], route_template(scope, root_path), status, time.perf_counter() - started
            )


def route_template(scope: Scope, root_path: str) -> str:
    """The template of the route that answered (`/v1/skills/{skill_id}`), with the prefix of any mount."""
    # A mount adds what it matched to root_path; the route inside it matched the rest.
    prefix = str(scope.get("root_path", ""))[len(root_path) :]
    route = scope.get("route")
    if route is None:
        return f"{prefix}/{{path}}" if prefix else _plain_route(scope)
    if isinstance(route, Mount):
        return f"{prefix}/{{path}}"
    # FastAPI keeps included routers nested: `route.path` is then relative to the routers' prefixes, and
    # the full template is on the route context FastAPI records in the scope (older versions flatten).
    fastapi_scope = scope.get("fastapi")
    effective = fastapi_scope.get("effective_route_context") if isinstance(fastapi_scope, dict) else None
    if effective is not None and getattr(effective, "original_route", None) is route:
        path = getattr(effective, "path_format", None)
    else:
        path = None
    path = path or getattr(route, "path_format", None) or getattr(route, "path", None)
    return prefix + str(path) if path else UNMATCHED


def _plain_route(scope: Scope) -> str:
    # FastAPI records no route for the plain Starlette ones it serves (/docs, /openapi.json): find it.
    endpoint = scope.get("endpoint")
    for route in getattr(scope.get("router"), "routes", ()) if endpoint is not None else ():
        if getattr(route, "endpoint", None) is endpoint:
            return str(route.path_format)
    return UNMATCHED


async def get_metrics(request: Request) -> Metrics:
    """The app's metrics."""
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_metric_sources(request: Request) -> Sources:
    """Where a scrape reads durable state (tests swap in their own transaction)."""
    engine = request.app.state.engine
    return Sources(connect=engine.connect, redis=request.app.state.redis)


MetricsDep = Annotated[Metrics, Depends(get_metrics)]
SourcesDep = Annotated[Sources, Depends(get_metric_sources)]

router = APIRouter(tags=["operations"])


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, metrics: MetricsDep, sources: SourcesDep) -> Response:
    """Prometheus text exposition; a bearer token if the settings name one."""
    secret: SecretStr | None = request.app.state.settings.metrics_token
    token = secret.get_secret_value() if secret is not None else ""
    if token:
        scheme, _, sent = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(), token.encode()):
            raise Unauthorized("GET /metrics needs `Authorization: Bearer <SKILLFOUNDRY_METRICS_TOKEN>`.")
    return Response(metrics.render(sources), media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI, settings: Settings) -> None:
    """Request ids on every request; metrics and /metrics unless the settings turn them off."""
    # Built either way, so routes may observe into it; only served (and fed by every request) when enabled.
    app.state.metrics = Metrics(StateCollector(tokens_per_day=settings.llm_skill_tokens_per_day))
    if settings.metrics_enabled:
        app.add_middleware(RequestMetrics, metrics=app.state.metrics)
        app.include_router(router)
    # Added last, so outermost: even a refused body (413) carries its id.
    app.add_middleware(RequestId)
