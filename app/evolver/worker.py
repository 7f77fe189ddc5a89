"""Worker-process housekeeping: the model loaded at start, memory kept bounded, a heartbeat for /readyz."""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

import redis
from celery.signals import task_postrun, worker_process_init, worker_ready, worker_shutdown

from app.config import get_settings
from app.embedded import die_with_parent
from app.embedding import get_embedder
from app.evolver import heartbeat, memory

log = logging.getLogger(__name__)

_stop = threading.Event()


def _housekeeping() -> None:
    client = redis.Redis.from_url(
        get_settings().require_redis_url(), socket_timeout=5, socket_connect_timeout=5
    )
    name = f"{socket.gethostname()}:{os.getpid()}"
    while not _stop.is_set():
        try:
            heartbeat.beat(client, name)
        except redis.RedisError as exc:
            log.warning("worker heartbeat could not reach Redis: %s", exc)
        _stop.wait(heartbeat.INTERVAL_S)


@worker_process_init.connect
def _init_pool_process(**_: Any) -> None:
    # A pool process outlives a hard-killed worker unless told to follow it.
    die_with_parent()
    # Before the model first runs: torch's per-shape kernel cache grew the process by hundreds of MiB.
    memory.bound_shape_caches()
    # Load the model when the process starts, so the first job does not pay for it.
    get_embedder().warm()


@task_postrun.connect
def _release_memory(**_: Any) -> None:
    # Runs before Celery weighs this process against `worker_max_memory_mb` (after this, once the job's
    # result is in). Much of an over-limit RSS can be heap the job freed and glibc kept: given back, the
    # process may stay under the limit and keep its loaded model. Under the limit nothing is done: giving
    # it back after every job costs 5-8% CPU, the next job faulting it in again (docs/deployment.md).
    memory.release_if_over(get_settings().worker_max_memory_mb)


@worker_ready.connect
def _start_housekeeping(**_: Any) -> None:
    _stop.clear()
    threading.Thread(target=_housekeeping, name="sf-housekeeping", daemon=True).start()


@worker_shutdown.connect
def _stop_housekeeping(**_: Any) -> None:
    _stop.set()
