"""Ingest processing: embed the observations of every step an ingest event stored."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from sqlalchemy.orm import Session

from app.embedding import Embedder
from app.storage.models import EventStatus
from app.storage.repositories import events, trajectories

log = logging.getLogger(__name__)

EMBED_CHUNK = 256
# Observations longer than this are cut before embedding: the model reads 256 word pieces anyway.
EMBED_TEXT_CHARS = 2000


class EventMissing(Exception):
    """The job names an event that is not in the database."""


def embed_ingest(session: Session, event_id: uuid.UUID, *, embedder: Embedder) -> dict[str, int]:
    """Embed the steps of an ingest event and mark it SUCCEEDED (idempotent: done steps are skipped)."""
    event = events.lock(session, event_id)
    if event is None:
        raise EventMissing(str(event_id))
    if event.status == EventStatus.SUCCEEDED:
        return dict(event.result)
    events.mark_running(event)
    session.flush()

    trajectory_ids = trajectories.ids_of_event(session, event_id)
    todo = trajectories.unembedded_steps(session, trajectory_ids, embedder.model_name)
    for start in range(0, len(todo), EMBED_CHUNK):
        chunk = todo[start : start + EMBED_CHUNK]
        vectors = embedder.embed_documents([text[:EMBED_TEXT_CHARS] for _, text in chunk])
        trajectories.set_embeddings(
            session,
            [(step_id, vec) for (step_id, _), vec in zip(chunk, vectors, strict=True)],
            embedder.model_name,
        )
    result = {"trajectories": len(trajectory_ids), "steps_embedded": len(todo)}
    events.mark_succeeded(event, result)
    return result


def fail_event(session: Session, event_id: uuid.UUID, reason: str) -> None:
    """Mark an event FAILED with a reason (after its retries ran out)."""
    event = events.lock(session, event_id)
    if event is not None and event.status != EventStatus.SUCCEEDED:
        events.mark_failed(event, reason)


def stale_event_ids(session: Session, older_than: timedelta) -> list[uuid.UUID]:
    """Ingest events whose job was lost (Redis down at send time, or a worker killed mid-task)."""
    return [e.id for e in events.stale(session, older_than) if e.kind == "ingest"]
