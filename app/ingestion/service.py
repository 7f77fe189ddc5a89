"""Accept a batch of trajectories: idempotency, event, bulk insert, job after commit."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from app.errors import IdempotencyKeyReused
from app.evolver.dispatch import send_after_commit
from app.evolver.names import TaskName
from app.storage.repositories import events, idempotency, trajectories

INGEST_EVENT = "ingest"
ACCEPTED = 202


@dataclass(frozen=True)
class Accepted:
    """What the API answers: the stored ids and the event tracking their processing."""

    trajectory_ids: list[uuid.UUID]
    event_id: uuid.UUID
    replayed: bool = False

    def as_json(self) -> dict[str, Any]:
        """The wire form, also stored for idempotent replays."""
        return {
            "ids": [str(i) for i in self.trajectory_ids],
            "event_id": str(self.event_id),
            "status": "queued",
        }


def request_hash(items: list[dict[str, Any]]) -> str:
    """A stable hash of a request body, to tell a true retry from a reused key."""
    canonical = json.dumps(items, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def accept(
    session: Session,
    tenant_id: uuid.UUID,
    items: list[dict[str, Any]],
    *,
    idempotency_key: str | None = None,
    schedule: bool = True,
) -> Accepted:
    """Store `items` (dumped TrajectoryIn) and, unless told not to, send their processing job after commit.

    `schedule=False` is for callers that run the job themselves in-process (benchmarks, evaluations).
    """
    if idempotency_key is not None:
        digest = request_hash(items)
        previous = idempotency.claim(session, tenant_id, idempotency_key, digest)
        if previous is not None:
            if previous.request_hash != digest or previous.response is None:
                raise IdempotencyKeyReused(detail={"idempotency_key": idempotency_key})
            return Accepted(
                trajectory_ids=[uuid.UUID(i) for i in previous.response["ids"]],
                event_id=uuid.UUID(previous.response["event_id"]),
                replayed=True,
            )
    event = events.create(session, tenant_id, INGEST_EVENT)
    ids = trajectories.add_many(session, tenant_id, event.id, items)
    accepted = Accepted(trajectory_ids=ids, event_id=event.id)
    if idempotency_key is not None:
        idempotency.save_response(session, tenant_id, idempotency_key, ACCEPTED, accepted.as_json())
    if schedule:
        send_after_commit(session, TaskName.PROCESS_INGEST, event.id)
    return accepted
