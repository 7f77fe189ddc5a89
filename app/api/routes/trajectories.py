"""Trajectories: post them, read them back, list them."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Header, Query, Response

from app.api.deps import CurrentAgent, CurrentKey, SessionDep
from app.api.pagination import decode_cursor, encode_cursor
from app.api.schemas.common import CURSOR_PATTERN, ERROR_RESPONSES, Timestamp
from app.api.schemas.trajectories import (
    OutcomeOut,
    StepOut,
    TrajectoriesAccepted,
    TrajectoryBatch,
    TrajectoryOut,
    TrajectoryPage,
    TrajectorySummary,
)
from app.errors import TrajectoryNotFound
from app.ingestion import service as ingestion
from app.limits import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from app.storage.models import Trajectory, TrajectoryStep
from app.storage.repositories import trajectories
from app.storage.repositories.trajectories import TrajectoryFilter

router = APIRouter(prefix="/trajectories", tags=["trajectories"], responses=ERROR_RESPONSES)


@router.post("", status_code=202)
def create_trajectories(
    body: Annotated[TrajectoryBatch, Body()],
    session: SessionDep,
    agent: CurrentAgent,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=256)] = None,
) -> TrajectoriesAccepted:
    """Store one trajectory or a list of them; their processing is queued after commit."""
    items = [t.model_dump() for t in (body if isinstance(body, list) else [body])]
    accepted = ingestion.accept(session, agent.tenant_id, items, idempotency_key=idempotency_key)
    if accepted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return TrajectoriesAccepted(ids=accepted.trajectory_ids, event_id=accepted.event_id)


@router.get("")
def list_trajectories(
    session: SessionDep,
    key: CurrentKey,
    agent_id: str | None = None,
    session_id: str | None = None,
    domain: str | None = None,
    outcome: Literal["success", "failure", "unknown"] | None = None,
    since: Timestamp | None = Query(default=None, description="Created at or after (ISO 8601)."),
    until: Timestamp | None = Query(default=None, description="Created before (ISO 8601)."),
    cursor: Annotated[str, Query(pattern=CURSOR_PATTERN, description="`next_cursor` of the previous page.")]
    | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
) -> TrajectoryPage:
    """The tenant's trajectories, newest first, a page at a time."""
    filters = TrajectoryFilter(
        agent_id=agent_id,
        session_id=session_id,
        domain=domain,
        success={"success": True, "failure": False}.get(outcome or ""),
        outcome_unknown=outcome == "unknown",
        since=since,
        until=until,
    )
    rows, next_cursor = trajectories.page(
        session, key.tenant_id, filters, cursor=decode_cursor(cursor), limit=limit
    )
    return TrajectoryPage(
        items=[_summary(row) for row in rows],
        next_cursor=encode_cursor(next_cursor) if next_cursor else None,
    )


@router.get("/{trajectory_id}")
def get_trajectory(
    trajectory_id: uuid.UUID, session: SessionDep, key: CurrentKey, include_embeddings: bool = False
) -> TrajectoryOut:
    """One trajectory with its steps."""
    row = trajectories.get(session, key.tenant_id, trajectory_id)
    if row is None:
        raise TrajectoryNotFound(detail={"id": str(trajectory_id)})
    steps = trajectories.steps_of(session, row.id)
    return TrajectoryOut(
        **_summary(row).model_dump(), steps=[_step(s, include_embeddings=include_embeddings) for s in steps]
    )


def _summary(row: Trajectory) -> TrajectorySummary:
    return TrajectorySummary(
        id=row.id,
        task=row.task,
        domain=row.domain,
        agent_id=row.agent_id,
        session_id=row.session_id,
        outcome=OutcomeOut(success=row.success, score=row.score),
        metadata=row.meta,
        step_count=row.step_count,
        event_id=row.event_id,
        created_at=row.created_at,
    )


def _step(row: TrajectoryStep, *, include_embeddings: bool) -> StepOut:
    embedding = (
        [float(x) for x in row.embedding] if include_embeddings and row.embedding is not None else None
    )
    return StepOut(
        idx=row.idx,
        observation=row.observation,
        action=row.action,
        tool=row.tool,
        tool_input=row.tool_input,
        tool_output=row.tool_output,
        error=row.error,
        reward=row.reward,
        retrieval_id=row.retrieval_id,
        used_item_ids=list(row.used_item_ids or []),
        embedding_model=row.embedding_model,
        embedding=embedding,
    )
