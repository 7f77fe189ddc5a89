"""Thin Celery tasks: they take ids, open one unit of work and call the pipeline."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError

from app.embedding import get_embedder
from app.evolver import pipeline
from app.evolver.names import Queue, TaskName
from app.storage.session import session_scope

log = logging.getLogger(__name__)

STALE_AFTER = timedelta(minutes=2)


@shared_task(
    name=TaskName.EMBED_INGEST,
    bind=True,
    acks_late=True,
    soft_time_limit=600,
    time_limit=660,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
def embed_ingest_event(self: object, event_id: str) -> None:  # noqa: ARG001
    """Embed the step observations of one ingest event (idempotent)."""
    try:
        with session_scope() as session:
            pipeline.embed_ingest(session, uuid.UUID(event_id), embedder=get_embedder())
    except pipeline.EventMissing:
        log.warning("ingest event %s does not exist; dropping the job", event_id)
    except (OperationalError, SoftTimeLimitExceeded):
        raise
    except Exception as exc:
        # A bug or bad data, not a transient fault: record why, so the client sees FAILED.
        log.exception("ingest event %s failed", event_id)
        with session_scope() as session:
            pipeline.fail_event(session, uuid.UUID(event_id), f"{type(exc).__name__}: {exc}")


@shared_task(name=TaskName.SWEEP_STALE_EVENTS, acks_late=True, soft_time_limit=60, expires=120)
def sweep_stale_events() -> int:
    """Send again the jobs of events that never finished; returns how many."""
    with session_scope() as session:
        stale = pipeline.stale_event_ids(session, STALE_AFTER)
    for event_id in stale:
        embed_ingest_event.apply_async(args=(str(event_id),), queue=Queue.INGEST)
    if stale:
        log.info("re-sent %d stale ingest jobs", len(stale))
    return len(stale)
