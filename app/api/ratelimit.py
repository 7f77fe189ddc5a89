"""A fixed-window request limit per API key, counted in Redis."""

from __future__ import annotations

import logging
import time

import redis

from app.errors import RateLimited

log = logging.getLogger(__name__)

WINDOW_S = 60


class RateLimiter:
    """At most `per_minute` requests per key per minute; fails open if Redis is down."""

    def __init__(self, client: redis.Redis | None, per_minute: int) -> None:
        self._client = client
        self._per_minute = per_minute

    def check(self, key_id: str) -> None:
        """Count one request for `key_id`; raise RateLimited once over the limit."""
        if self._client is None or self._per_minute <= 0:
            return
        now = time.time()
        window = int(now // WINDOW_S)
        bucket = f"skillfoundry:ratelimit:{key_id}:{window}"
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.incr(bucket)
            pipe.expire(bucket, WINDOW_S * 2)
            count, _ = pipe.execute()
        except redis.RedisError as exc:
            # Ingest must keep working while Redis is down; the limit is a guard, not a gate.
            log.warning("rate limiter could not reach Redis, letting the request through: %s", exc)
            return
        if int(count) > self._per_minute:
            retry_after = max(1, int((window + 1) * WINDOW_S - now) + 1)
            raise RateLimited(
                detail={"limit_per_minute": self._per_minute, "retry_after_s": retry_after},
                headers={"Retry-After": str(retry_after)},
            )
