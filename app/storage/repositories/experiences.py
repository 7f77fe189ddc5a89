"""Experiences as reviewers see them: list, read with their evidence, retire, delete."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, literal_column, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ColumnClause

from app.storage.models import Experience, ExperienceEvidence, ExperienceStatus, Polarity, utcnow
from app.storage.repositories.trajectories import Cursor

# The text search configuration of the stored `text_tsv` column, rendered as a literal.
_ENGLISH: ColumnClause[str] = literal_column("'english'")


@dataclass(frozen=True)
class ExperienceFilter:
    """What `GET /v1/experiences` may filter on."""

    domain: str | None = None
    polarity: Polarity | None = None
    cluster_id: uuid.UUID | None = None
    status: ExperienceStatus | None = None
    query: str | None = None


def get(session: Session, tenant_id: uuid.UUID, experience_id: uuid.UUID) -> Experience | None:
    """The tenant's experience, if any."""
    return session.scalars(
        select(Experience).where(Experience.tenant_id == tenant_id, Experience.id == experience_id)
    ).one_or_none()


def page(
    session: Session, tenant_id: uuid.UUID, filters: ExperienceFilter, *, cursor: Cursor | None, limit: int
) -> tuple[Sequence[Experience], Cursor | None]:
    """One page of the tenant's experiences, newest first, and the cursor of the next page."""
    query = select(Experience).where(Experience.tenant_id == tenant_id)
    if filters.domain is not None:
        query = query.where(Experience.domain == filters.domain)
    if filters.polarity is not None:
        query = query.where(Experience.polarity == filters.polarity)
    if filters.cluster_id is not None:
        query = query.where(Experience.cluster_id == filters.cluster_id)
    if filters.status is not None:
        query = query.where(Experience.status == filters.status)
    if filters.query is not None:
        query = query.where(
            Experience.text_tsv.bool_op("@@")(func.websearch_to_tsquery(_ENGLISH, filters.query))
        )
    if cursor is not None:
        query = query.where(
            (Experience.created_at < cursor.created_at)
            | ((Experience.created_at == cursor.created_at) & (Experience.id < cursor.id))
        )
    rows = session.scalars(
        query.order_by(Experience.created_at.desc(), Experience.id.desc()).limit(limit + 1)
    ).all()
    if len(rows) > limit:
        last = rows[limit - 1]
        return rows[:limit], Cursor(last.created_at, last.id)
    return rows, None


def evidence_of(session: Session, experience_id: uuid.UUID, limit: int) -> Sequence[ExperienceEvidence]:
    """The steps supporting an experience, newest first, at most `limit`."""
    return session.scalars(
        select(ExperienceEvidence)
        .where(ExperienceEvidence.experience_id == experience_id)
        .order_by(ExperienceEvidence.created_at.desc(), ExperienceEvidence.step_id.desc())
        .limit(limit)
    ).all()


def update(
    row: Experience, *, status: ExperienceStatus | None = None, text: str | None = None
) -> dict[str, dict[str, Any]]:
    """Apply a reviewer's edit; returns `{field: {"from": old, "to": new}}` for what actually changed."""
    changes: dict[str, dict[str, Any]] = {}
    if status is not None and status != row.status:
        changes["status"] = {"from": row.status.value, "to": status.value}
        row.status = status
    if text is not None and text != row.text:
        changes["text"] = {"from": row.text, "to": text}
        row.text = text
        if row.text_source != "reviewer":
            changes["text_source"] = {"from": row.text_source, "to": "reviewer"}
            row.text_source = "reviewer"
    if changes:
        row.updated_at = utcnow()
    return changes


def delete(session: Session, row: Experience) -> None:
    """Delete an experience; its evidence goes with it (ON DELETE CASCADE)."""
    session.delete(row)
    session.flush()
