"""Background-job state."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.storage.models import Event, EventStatus, utcnow


def create(session: Session, tenant_id: uuid.UUID, kind: str) -> Event:
    """A PENDING event for a job about to be sent."""
    event = Event(
        id=uuid.uuid4(), tenant_id=tenant_id, kind=kind, status=EventStatus.PENDING, attempts=0, result={}
    )
    session.add(event)
    session.flush()
    return event


def get(session: Session, tenant_id: uuid.UUID, event_id: uuid.UUID) -> Event | None:
    """The tenant's event, if any."""
    return session.scalars(
        select(Event).where(Event.tenant_id == tenant_id, Event.id == event_id)
    ).one_or_none()


def lock(session: Session, event_id: uuid.UUID) -> Event | None:
    """The event, row-locked so two deliveries of one job do not run it at once."""
    return session.scalars(select(Event).where(Event.id == event_id).with_for_update()).one_or_none()


def mark_running(event: Event) -> None:
    """Count an attempt and mark the event RUNNING."""
    event.status = EventStatus.RUNNING
    event.attempts += 1
    event.started_at = utcnow()
    event.error = None


def mark_succeeded(event: Event, result: dict[str, Any]) -> None:
    """Mark the event SUCCEEDED with what it did."""
    event.status = EventStatus.SUCCEEDED
    event.result = result
    event.finished_at = utcnow()


def mark_failed(event: Event, error: str) -> None:
    """Mark the event FAILED with a reason a person can read."""
    event.status = EventStatus.FAILED
    event.error = error[:4000]
    event.finished_at = utcnow()


def stale(session: Session, older_than: timedelta, limit: int = 500) -> Sequence[Event]:
    """Events still PENDING or RUNNING after `older_than`: their job was lost or its worker died."""
    cutoff = utcnow() - older_than
    return session.scalars(
        select(Event)
        .where(
            Event.status.in_([EventStatus.PENDING, EventStatus.RUNNING]),
            Event.created_at < cutoff,
            (Event.started_at.is_(None)) | (Event.started_at < cutoff),
        )
        .order_by(Event.created_at)
        .limit(limit)
    ).all()
