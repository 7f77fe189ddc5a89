"""Experiences: list and read them (any key), edit them (reviewer), delete them (admin)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from app.api.deps import AdminKey, CurrentKey, Principal, ReviewerKey, SessionDep
from app.api.pagination import decode_cursor, encode_cursor
from app.api.schemas.common import CURSOR_PATTERN, ERROR_RESPONSES
from app.api.schemas.experiences import (
    ActionOut,
    EvidenceOut,
    ExperienceDetail,
    ExperienceOut,
    ExperiencePage,
    ExperiencePatch,
    SupportOut,
    UtilityOut,
)
from app.api.schemas.retrieve import ItemStatsOut, item_stats_out
from app.errors import ExperienceNotFound
from app.limits import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from app.storage.models import Experience, ExperienceStatus, Polarity
from app.storage.repositories import audit, experiences, retrievals
from app.storage.repositories.experiences import ExperienceFilter

MAX_PROVENANCE = 200

router = APIRouter(prefix="/experiences", tags=["experiences"], responses=ERROR_RESPONSES)


@router.get("")
def list_experiences(
    session: SessionDep,
    key: CurrentKey,
    domain: str | None = None,
    polarity: Polarity | None = None,
    cluster_id: uuid.UUID | None = None,
    status: ExperienceStatus | None = Query(default=None, description="Default: active and retired."),
    q: Annotated[str, Query(min_length=1, max_length=1000, description="Full-text query on the text.")]
    | None = None,
    cursor: Annotated[str, Query(pattern=CURSOR_PATTERN, description="`next_cursor` of the previous page.")]
    | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
) -> ExperiencePage:
    """The tenant's experiences, newest first, a page at a time."""
    filters = ExperienceFilter(
        domain=domain, polarity=polarity, cluster_id=cluster_id, status=status, query=q
    )
    rows, next_cursor = experiences.page(
        session, key.tenant_id, filters, cursor=decode_cursor(cursor), limit=limit
    )
    return ExperiencePage(
        items=[_experience(row) for row in rows],
        next_cursor=encode_cursor(next_cursor) if next_cursor else None,
    )


@router.get("/{experience_id}")
def get_experience(experience_id: uuid.UUID, session: SessionDep, key: CurrentKey) -> ExperienceDetail:
    """One experience with the steps that support it (the newest 200)."""
    row = _get_or_404(session, key, experience_id)
    evidence = experiences.evidence_of(session, row.id, MAX_PROVENANCE)
    return ExperienceDetail(
        **_experience(row).model_dump(),
        provenance=[
            EvidenceOut(
                trajectory_id=e.trajectory_id,
                step_id=e.step_id,
                agent_id=e.agent_id,
                success=e.success,
                created_at=e.created_at,
            )
            for e in evidence
        ],
    )


@router.patch("/{experience_id}")
def update_experience(
    experience_id: uuid.UUID, body: ExperiencePatch, session: SessionDep, reviewer: ReviewerKey
) -> ExperienceOut:
    """Retire, reactivate or reword an experience; every change is audited."""
    row = _get_or_404(session, reviewer, experience_id)
    changes = experiences.update(row, status=body.status, text=body.text)
    if changes:
        audit.record(
            session,
            reviewer.tenant_id,
            actor=reviewer.actor,
            action="experience.update",
            target_type="experience",
            target_id=str(row.id),
            detail={"changes": changes},
        )
    return _experience(row)


@router.delete("/{experience_id}", status_code=204)
def delete_experience(experience_id: uuid.UUID, session: SessionDep, admin: AdminKey) -> None:
    """Delete an experience and its evidence for good (retiring it is usually enough)."""
    row = _get_or_404(session, admin, experience_id)
    detail = {"text": row.text, "polarity": row.polarity.value, "domain": row.domain}
    experiences.delete(session, row)
    audit.record(
        session,
        admin.tenant_id,
        actor=admin.actor,
        action="experience.delete",
        target_type="experience",
        target_id=str(experience_id),
        detail=detail,
    )


def _get_or_404(session: Session, key: Principal, experience_id: uuid.UUID) -> Experience:
    row = experiences.get(session, key.tenant_id, experience_id)
    if row is None:
        raise ExperienceNotFound(detail={"id": str(experience_id)})
    return row


def _experience(row: Experience) -> ExperienceOut:
    return ExperienceOut(
        id=row.id,
        text=row.text,
        polarity=row.polarity,
        status=row.status,
        domain=row.domain or None,
        cluster_id=row.cluster_id,
        action=ActionOut(template=row.action_template, example=row.action_example, slots=list(row.slots)),
        situation=row.situation,
        task=row.task,
        reason=row.reason,
        support=SupportOut(
            successes=row.successes, failures=row.failures, distinct_agents=row.distinct_agents
        ),
        utility=UtilityOut(alpha=row.alpha, beta=row.beta, mean=_mean(row.alpha, row.beta)),
        text_source=row.text_source,
        llm_model=row.llm_model,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _mean(alpha: float, beta: float) -> float:
    # Beta(alpha, beta) has positive parameters; 0.5 only guards a corrupt row against a 500.
    total = alpha + beta
    return alpha / total if total > 0 else 0.5


@router.get("/{experience_id}/stats")
def experience_stats(experience_id: uuid.UUID, session: SessionDep, key: CurrentKey) -> ItemStatsOut:
    """How often retrieval listed, withheld and used this experience, how it went, and its uplift."""
    row = _get_or_404(session, key, experience_id)
    stats = retrievals.item_stats(session, key.tenant_id, row.id)
    return item_stats_out(stats, alpha=row.alpha, beta=row.beta)
