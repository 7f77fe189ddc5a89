"""The in-flight limit: requests past the limit wait their turn, and one that waits too long gets 503."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from app.api.middleware import InFlightLimit


def slow_app(active: list[int], peak: list[int]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        await asyncio.sleep(0.05)
        active[0] -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


@pytest.mark.parametrize("limit", [1, 3])
def test_never_more_than_the_limit_inside_and_nobody_dropped(limit: int) -> None:
    active, peak = [0], [0]
    app = InFlightLimit(slow_app(active, peak), limit=limit, wait_s=5.0, exempt=("/healthz",))

    async def main() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            answers = await asyncio.gather(*(client.get("/v1/x") for _ in range(10)))
        return [a.status_code for a in answers]

    assert asyncio.run(main()) == [200] * 10
    assert peak[0] == limit


def test_a_request_that_waits_too_long_gets_503_overloaded_and_exempt_paths_pass() -> None:
    active, peak = [0], [0]
    app = InFlightLimit(slow_app(active, peak), limit=1, wait_s=0.01, exempt=("/healthz",))

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return list(
                await asyncio.gather(client.get("/v1/a"), client.get("/v1/b"), client.get("/healthz"))
            )

    first, second, health = asyncio.run(main())
    assert first.status_code == 200 and health.status_code == 200
    assert second.status_code == 503 and second.headers["retry-after"] == "1"
    assert second.json()["error"]["code"] == "overloaded"
