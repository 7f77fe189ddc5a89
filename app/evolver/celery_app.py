"""The Celery application: configured from settings when first asked for."""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

from app.config import Settings, broker_url, get_settings
from app.evolver.names import TASK_ROUTES, Queue, TaskName
from app.observability.jobs import connect_worker_signals


def create_celery(settings: Settings) -> Celery:
    """A Celery app on the settings' Redis; tasks ack late so a killed worker's job is redone."""
    celery = Celery("skillfoundry", include=["app.evolver.tasks", "app.evolver.worker"])
    connect_worker_signals()  # a job's log lines carry the id of the request that sent it
    celery.conf.update(
        broker_url=broker_url(settings.require_redis_url()),
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        # A job whose worker died is delivered again once unacknowledged for the visibility timeout;
        # the worker looks for such jobs at start and every tenth of it (at most every minute).
        broker_transport_options={
            "visibility_timeout": settings.broker_visibility_timeout_s,
            "unacked_restore_interval": max(1.0, min(60.0, settings.broker_visibility_timeout_s / 10)),
            "unacked_restore_throttle": 1,
            "socket_timeout": 5,
        },
        task_routes=TASK_ROUTES,
        task_default_queue="ingest",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5},
        worker_prefetch_multiplier=1,
        # Checked by a pool process after each job, once its result is sent (KiB; None: never replaced).
        worker_max_memory_per_child=settings.worker_max_memory_mb * 1024 or None,
        # Each worker process loads the embedding model at start (several seconds on a small CPU).
        worker_proc_alive_timeout=120,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        enable_utc=True,
        # Every periodic send expires, so a backlog after downtime does not replay stale runs.
        beat_schedule={
            "sweep-stale-events": {
                "task": TaskName.SWEEP_STALE_EVENTS.value,
                "schedule": settings.sweep_every_s,
                "options": {"expires": settings.sweep_every_s, "queue": Queue.MAINTENANCE.value},
            },
            "consolidate-experiences": {
                "task": TaskName.CONSOLIDATE.value,
                "schedule": 600.0,
                "options": {"expires": 600, "queue": Queue.MAINTENANCE.value},
            },
            # A new scanner rule set rescans the library; a no-op (one indexed query) otherwise.
            "rescan-skills": {
                "task": TaskName.RESCAN_SKILLS.value,
                "schedule": 300.0,
                "options": {"expires": 300, "queue": Queue.MAINTENANCE.value},
            },
            # Retention: removes raw trajectories older than `retention_days` (none when it is 0).
            "expire-trajectories": {
                "task": TaskName.EXPIRE_TRAJECTORIES.value,
                "schedule": 3600.0,
                "options": {"expires": 3600, "queue": Queue.MAINTENANCE.value},
            },
            "evolve-skills": {
                "task": TaskName.EVOLVE_ALL_SKILLS.value,
                "schedule": settings.skill_evolve_every_s,
                "options": {"expires": settings.skill_evolve_every_s, "queue": Queue.SKILLS.value},
            },
        },
    )
    return celery


@lru_cache
def get_celery() -> Celery:
    """The process's Celery app."""
    return create_celery(get_settings())
