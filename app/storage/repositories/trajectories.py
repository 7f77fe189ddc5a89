"""Trajectories and their steps."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
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


TRAJECTORY_COPY_COLUMNS = (
    ("id", "uuid"), ("tenant_id", "uuid"), ("event_id", "uuid"), ("task", "text"), ("domain", "text"),
    ("agent_id", "text"), ("session_id", "text"), ("success", "bool"), ("score", "float8"),
    ("metadata", "jsonb"), ("step_count", "int4"), ("created_at", "timestamptz"),
)  # fmt: skip
STEP_COPY_COLUMNS = (
    ("id", "uuid"), ("tenant_id", "uuid"), ("trajectory_id", "uuid"), ("idx", "int4"),
    ("observation", "text"), ("action", "text"), ("tool", "text"), ("tool_input", "jsonb"),
    ("tool_output", "jsonb"), ("error", "text"), ("reward", "float8"), ("retrieval_id", "text"),
    ("used_item_ids", "text[]"),
)  # fmt: skip


def _copy(
    session: Session, table: str, columns: tuple[tuple[str, str], ...], rows: Iterable[tuple[Any, ...]]
) -> None:
    # COPY is several times faster than INSERT for thousands of rows, and runs in the session's transaction.
    connection = session.connection()
    raw = connection.connection.driver_connection
    if raw is None:
        raise RuntimeError("the session's connection is closed")
    names = ", ".join(name for name, _ in columns)
    try:
        with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            copy.set_types([kind for _, kind in columns])
            for row in rows:
                copy.write_row(row)
    except psycopg.Error as error:
        # Raised as SQLAlchemy raises driver errors, so the app's handlers (503 on a lost database)
        # and the pool's invalidation treat COPY like any other statement.
        if raw.closed:
            connection.invalidate(error)
        raise DBAPIError.instance(
            f"COPY {table}", None, error, psycopg.Error, connection_invalidated=bool(raw.closed)
        ) from error


def _json(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)


def add_many(
    session: Session, tenant_id: uuid.UUID, event_id: uuid.UUID, items: Sequence[dict[str, Any]]
) -> list[uuid.UUID]:
    """Insert trajectories and all their steps with one COPY each; returns their ids in order."""
    now = utcnow()
    ids = [uuid.uuid4() for _ in items]
    _copy(
        session,
        Trajectory.__tablename__,
        TRAJECTORY_COPY_COLUMNS,
        (
            (
                trajectory_id,
                tenant_id,
                event_id,
                item["task"],
                item.get("domain"),
                item["agent_id"],
                item.get("session_id"),
                (item.get("outcome") or {}).get("success"),
                (item.get("outcome") or {}).get("score"),
                Jsonb(item.get("metadata") or {}),
                len(item["steps"]),
                now,
            )  # fmt: skip
            for trajectory_id, item in zip(ids, items, strict=True)
        ),
    )
    _copy(
        session,
        TrajectoryStep.__tablename__,
        STEP_COPY_COLUMNS,
        (
            (
                uuid.uuid4(),
                tenant_id,
                trajectory_id,
                idx,
                step["observation"],
                step["action"],
                step.get("tool"),
                _json(step.get("tool_input")),
                _json(step.get("tool_output")),
                step.get("error"),
                step.get("reward"),
                step.get("retrieval_id"),
                step.get("used_item_ids") or [],
            )  # fmt: skip
            for trajectory_id, item in zip(ids, items, strict=True)
            for idx, step in enumerate(item["steps"])
        ),
    )
    return ids


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


def of_event(session: Session, event_id: uuid.UUID) -> Sequence[Trajectory]:
    """The trajectories an ingest event stored, in insertion order."""
    return session.scalars(
        select(Trajectory)
        .where(Trajectory.event_id == event_id)
        .order_by(Trajectory.created_at, Trajectory.id)
    ).all()


def steps_of_many(session: Session, trajectory_ids: Sequence[uuid.UUID]) -> Sequence[TrajectoryStep]:
    """The steps of these trajectories, grouped by trajectory and in order."""
    if not trajectory_ids:
        return []
    return session.scalars(
        select(TrajectoryStep)
        .where(TrajectoryStep.trajectory_id.in_(trajectory_ids))
        .order_by(TrajectoryStep.trajectory_id, TrajectoryStep.idx)
    ).all()
