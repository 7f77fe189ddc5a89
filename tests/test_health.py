"""Liveness and readiness."""

from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from app.config import Settings
from app.evolver import heartbeat


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    """A client on the test Redis with no worker heartbeats, restored to none afterwards."""
    client = redis.Redis.from_url(settings.require_redis_url())
    _clear_heartbeats(client)
    yield client
    _clear_heartbeats(client)
    client.close()


def _clear_heartbeats(client: redis.Redis) -> None:
    for key in client.scan_iter(match=heartbeat.HEARTBEAT_PREFIX + "*"):
        client.delete(key)


class TestHealth:
    def test_healthz_answers_without_auth(self, client: TestClient) -> None:
        """/healthz needs no key."""
        assert client.get("/healthz").json() == {"status": "ok"}

    def test_readyz_is_503_without_a_worker(self, client: TestClient, redis_client: redis.Redis) -> None:
        """No heartbeat: not ready, and the body says the worker check failed."""
        response = client.get("/readyz")
        assert response.status_code == 503
        checks = response.json()["checks"]
        assert checks["database"] == "ok"
        assert checks["broker"] == "ok"
        assert checks["worker"].startswith("error")

    def test_readyz_is_200_with_a_worker_heartbeat(
        self, client: TestClient, redis_client: redis.Redis
    ) -> None:
        """A fresh heartbeat makes the service ready."""
        heartbeat.beat(redis_client, "test-worker")
        response = client.get("/readyz")
        assert response.status_code == 200
        assert response.json()["checks"]["workers"] == ["test-worker"]
