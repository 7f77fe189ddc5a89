"""Worker liveness in Redis: `/readyz` reports ready only while some worker has beaten recently."""

from __future__ import annotations

import socket
import time

import redis

HEARTBEAT_PREFIX = "skillfoundry:worker:heartbeat:"
INTERVAL_S = 10
TTL_S = 30


def beat(client: redis.Redis, worker_name: str | None = None) -> None:
    """Say this worker is alive for the next TTL_S seconds."""
    name = worker_name or f"{socket.gethostname()}:{id(client)}"
    client.set(HEARTBEAT_PREFIX + name, str(time.time()), ex=TTL_S)


def live_workers(client: redis.Redis) -> list[str]:
    """Names of workers that beat within TTL_S."""
    return sorted(
        key.decode()[len(HEARTBEAT_PREFIX) :] if isinstance(key, bytes) else str(key)[len(HEARTBEAT_PREFIX) :]
        for key in client.scan_iter(match=HEARTBEAT_PREFIX + "*", count=100)
    )
