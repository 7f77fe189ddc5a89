"""Trajectories and their steps."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from app.storage.models import Trajectory, TrajectoryStep, utcnow


@dataclass(frozen=True)
class TrajectoryFilter:
    """What `GET /v1/trajectories` may filter on."""

    agent_id: str | None = None
    session_id: str | None = None
    domain: str | None = None
    success: bool | None = None
    outcome_unknown: bool = False
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class Cursor:
    """Position after the last row of a page (rows run newest first)."""

    created_at: datetime
    id: uuid.UUID


def add_many(
    session: Session, tenant_id: uuid.UUID, event_id: uuid.UUID, items: Sequence[dict[str, Any]]
) -> list[uuid.UUID]:
    """Insert trajectories and all their steps in two bulk statements; returns their ids in order."""
    now = utcnow()
    rows: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    for item in items:
        trajectory_id = uuid.uuid4()
        outcome = item.get("outcome") or {}
        rows.append(
            {
                "id": trajectory_id,
                "tenant_id": tenant_id,
                "event_id": event_id,
                "task": item["task"],
                "domain": item.get("domain"),
                "agent_id": item["agent_id"],
                "session_id": item.get("session_id"),
                "success": outcome.get("success"),
                "score": outcome.get("score"),
                "meta": item.get("metadata") or {},
                "step_count": len(item["steps"]),
                "created_at": now,
            }
        )
        steps.extend(
            {
                "id": uuid.uuid4(),
                "tenant_id": tenant_id,
                "trajectory_id": trajectory_id,
                "idx": idx,
                "observation": step["observation"],
                "action": step["action"],
                "tool": step.get("tool"),
                "tool_input": step.get("tool_input"),
                "tool_output": step.get("tool_output"),
                "error": step.get("error"),
                "reward": step.get("reward"),
                "retrieval_id": step.get("retrieval_id"),
                "used_item_ids": step.get("used_item_ids") or [],
            }
            for idx, step in enumerate(item["steps"])
        )
    session.execute(insert(Trajectory), rows)
    if steps:
        session.execute(insert(TrajectoryStep), steps)
    return [row["id"] for row in rows]


def get(session: Session, tenant_id: uuid.UUID, trajectory_id: uuid.UUID) -> Trajectory | None:
    """The tenant's trajectory, if any."""
    return session.scalars(
        select(Trajectory).where(Trajectory.tenant_id == tenant_id, Trajectory.id == trajectory_id)
    ).one_or_none()


def steps_of(session: Session, trajectory_id: uuid.UUID) -> Sequence[TrajectoryStep]:
    """A trajectory's steps in order."""
    return session.scalars(
        select(TrajectoryStep)
        .where(TrajectoryStep.trajectory_id == trajectory_id)
        .order_by(TrajectoryStep.idx)
    ).all()


def page(
    session: Session, tenant_id: uuid.UUID, filters: TrajectoryFilter, *, cursor: Cursor | None, limit: int
) -> tuple[Sequence[Trajectory], Cursor | None]:
    """One page of the tenant's trajectories, newest first, and the cursor of the next page."""
    query = select(Trajectory).where(Trajectory.tenant_id == tenant_id)
    if filters.agent_id is not None:
        query = query.where(Trajectory.agent_id == filters.agent_id)
    if filters.session_id is not None:
        query = query.where(Trajectory.session_id == filters.session_id)
    if filters.domain is not None:
        query = query.where(Trajectory.domain == filters.domain)
    if filters.outcome_unknown:
        query = query.where(Trajectory.success.is_(None))
    elif filters.success is not None:
        query = query.where(Trajectory.success.is_(filters.success))
    if filters.since is not None:
        query = query.where(Trajectory.created_at >= filters.since)
    if filters.until is not None:
        query = query.where(Trajectory.created_at < filters.until)
    if cursor is not None:
        query = query.where(
            (Trajectory.created_at < cursor.created_at)
            | ((Trajectory.created_at == cursor.created_at) & (Trajectory.id < cursor.id))
        )
    rows = session.scalars(
        query.order_by(Trajectory.created_at.desc(), Trajectory.id.desc()).limit(limit + 1)
    ).all()
    if len(rows) > limit:
        last = rows[limit - 1]
        return rows[:limit], Cursor(last.created_at, last.id)
    return rows, None


def ids_of_event(session: Session, event_id: uuid.UUID) -> Sequence[uuid.UUID]:
    """The trajectories an ingest event stored."""
    return session.scalars(select(Trajectory.id).where(Trajectory.event_id == event_id)).all()


def unembedded_steps(
    session: Session, trajectory_ids: Sequence[uuid.UUID], model_name: str
) -> Sequence[tuple[uuid.UUID, str]]:
    """(step id, observation) of steps not yet embedded by `model_name`."""
    rows = session.execute(
        select(TrajectoryStep.id, TrajectoryStep.observation)
        .where(
            TrajectoryStep.trajectory_id.in_(trajectory_ids),
            (TrajectoryStep.embedding_model.is_(None)) | (TrajectoryStep.embedding_model != model_name),
        )
        .order_by(TrajectoryStep.trajectory_id, TrajectoryStep.idx)
    ).all()
    return [(row[0], row[1]) for row in rows]


def set_embeddings(
    session: Session, vectors: Sequence[tuple[uuid.UUID, Sequence[float]]], model_name: str
) -> None:
    """Store step embeddings, recording the model that made them."""
    if not vectors:
        return
    now = utcnow()
    session.connection().execute(
        update(TrajectoryStep.__table__)  # type: ignore[arg-type]
        .where(TrajectoryStep.__table__.c.id == bindparam("step_id"))
        .values(embedding=bindparam("vec"), embedding_model=model_name, embedded_at=now),
        [{"step_id": step_id, "vec": list(vec)} for step_id, vec in vectors],
    )
