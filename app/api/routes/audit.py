"""The audit log: append-only, newest first, filterable (reviewers and admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import ReviewerKey, SessionDep
from app.api.schemas.audit import AuditEntryOut, AuditPage
from app.api.schemas.common import ERROR_RESPONSES, Timestamp
from app.limits import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from app.storage.repositories import governance
from app.storage.repositories.governance import AuditFilter

MAX_SEQ = 2**63 - 1  # audit_log.seq is a PostgreSQL bigint

router = APIRouter(tags=["audit"], responses=ERROR_RESPONSES)


@router.get("/audit")
def list_audit(
    session: SessionDep,
    reviewer: ReviewerKey,
    actor: Annotated[str, Query(max_length=256)] | None = None,
    action: Annotated[
        str,
        Query(max_length=64, description="Exact (`skill.accepted`) or a prefix ending in `.` (`skill.`)."),
    ]
    | None = None,
    target_type: Annotated[str, Query(max_length=64)] | None = None,
    target_id: Annotated[str, Query(max_length=128)] | None = None,
    since: Timestamp | None = Query(default=None, description="Entries at or after this time."),
    until: Timestamp | None = Query(default=None, description="Entries before this time."),
    before: Annotated[int, Query(ge=1, le=MAX_SEQ, description="Entries below this `seq` (the next page).")]
    | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
) -> AuditPage:
    """Who did what to which object, newest first; entries are never changed or removed."""
    filters = AuditFilter(
        actor=actor, action=action, target_type=target_type, target_id=target_id, since=since, until=until
    )
    rows, next_before = governance.audit_page(
        session, reviewer.tenant_id, filters, before=before, limit=limit
    )
    return AuditPage(
        items=[
            AuditEntryOut(
                seq=row.seq,
                id=row.id,
                actor=row.actor,
                action=row.action,
                target_type=row.target_type,
                target_id=row.target_id,
                detail=row.detail,
                created_at=row.created_at,
            )
            for row in rows
        ],
        next_before=next_before,
    )
