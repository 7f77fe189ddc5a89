"""Background-job state."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from app.api.deps import CurrentKey, SessionDep
from app.api.schemas.common import ERROR_RESPONSES
from app.api.schemas.events import EventOut
from app.errors import EventNotFound
from app.storage.repositories import events

router = APIRouter(prefix="/events", tags=["events"], responses=ERROR_RESPONSES)


@router.get("/{event_id}")
def get_event(event_id: uuid.UUID, session: SessionDep, key: CurrentKey) -> EventOut:
    """Where a background job stands: PENDING, RUNNING, SUCCEEDED or FAILED (with the error)."""
    event = events.get(session, key.tenant_id, event_id)
    if event is None:
        raise EventNotFound(detail={"id": str(event_id)})
    return EventOut(
        id=event.id,
        kind=event.kind,
        status=event.status.value,
        attempts=event.attempts,
        error=event.error,
        result=event.result,
        created_at=event.created_at,
        started_at=event.started_at,
        finished_at=event.finished_at,
    )
