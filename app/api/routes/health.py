"""Liveness and readiness, without auth, for load balancers and `skillfoundry up`."""

from __future__ import annotations

from typing import Any

import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.evolver import heartbeat

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A dependency is down; `checks` says which."}})
def readyz(request: Request) -> JSONResponse:
    """Ready when the database and broker answer and a worker beat within the last 30 s."""
    checks: dict[str, Any] = {}
    try:
        with request.app.state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except SQLAlchemyError as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    client: redis.Redis | None = request.app.state.redis
    try:
        if client is None:
            raise redis.ConnectionError("REDIS_URL is not set")
        client.ping()
        checks["broker"] = "ok"
        workers = heartbeat.live_workers(client)
        checks["worker"] = "ok" if workers else "error: no worker heartbeat in the last 30 s"
        checks["workers"] = workers
    except redis.RedisError as exc:
        checks["broker"] = f"error: {exc}"
        checks["worker"] = "unknown: broker unreachable"
    ready = all(checks[name] == "ok" for name in ("database", "broker", "worker"))
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks}, status_code=200 if ready else 503
    )
