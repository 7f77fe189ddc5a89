"""SQL of governance: scans, waivers, approvals, the review queue and the audit log's pages."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.storage.models import (
    AuditLog,
    FindingWaiver,
    ReviewState,
    Skill,
    SkillApproval,
    SkillScan,
    SkillVersion,
    TrustTier,
    utcnow,
)
from app.storage.repositories.trajectories import Cursor


@dataclass(frozen=True)
class AuditFilter:
    """What `GET /v1/audit` may filter on."""

    actor: str | None = None
    action: str | None = None  # exact, or a prefix ending in `.` (`skill.`)
    target_type: str | None = None
    target_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def add_scan(session: Session, tenant_id: uuid.UUID, version_id: uuid.UUID, **values: Any) -> SkillScan:
    """Record one scan of a version."""
    row = SkillScan(id=uuid.uuid4(), tenant_id=tenant_id, version_id=version_id, **values)
    session.add(row)
    return row


def latest_scan(session: Session, version_id: uuid.UUID) -> SkillScan | None:
    """The newest scan of a version."""
    return session.scalars(
        select(SkillScan)
        .where(SkillScan.version_id == version_id)
        .order_by(SkillScan.created_at.desc(), SkillScan.id.desc())
        .limit(1)
    ).first()


def waived_rules(session: Session, tenant_id: uuid.UUID, sha256: str) -> frozenset[str]:
    """Rules a reviewer marked as false positives for this content."""
    rows = session.scalars(
        select(FindingWaiver.rule_id).where(
            FindingWaiver.tenant_id == tenant_id, FindingWaiver.sha256 == sha256
        )
    )
    return frozenset(rows)


def add_waiver(
    session: Session, tenant_id: uuid.UUID, sha256: str, rule_id: str, *, actor: str, reason: str
) -> bool:
    """Record a waiver; False when this rule was already waived for this content."""
    result = session.execute(
        insert(FindingWaiver)
        .values(tenant_id=tenant_id, sha256=sha256, rule_id=rule_id, actor=actor, reason=reason)
        .on_conflict_do_nothing()
        .returning(FindingWaiver.rule_id)
    )
    return result.first() is not None


def versions_with_hash(session: Session, tenant_id: uuid.UUID, sha256: str) -> Sequence[SkillVersion]:
    """Every version of the tenant with this content (a waiver applies to all of them)."""
    return session.scalars(
        select(SkillVersion)
        .join(Skill, Skill.id == SkillVersion.skill_id)
        .where(Skill.tenant_id == tenant_id, SkillVersion.sha256 == sha256)
    ).all()


def stale_versions(session: Session, ruleset: str, limit: int) -> Sequence[SkillVersion]:
    """Versions last scanned by another rule set (or never), oldest first."""
    return session.scalars(
        select(SkillVersion)
        .where(SkillVersion.scan_ruleset != ruleset)
        .order_by(SkillVersion.created_at, SkillVersion.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()


def open_approvals(session: Session, version_id: uuid.UUID, action: str) -> Sequence[SkillApproval]:
    """Approvals of `action` on a version that have not been applied yet, oldest first."""
    return session.scalars(
        select(SkillApproval)
        .where(
            SkillApproval.version_id == version_id,
            SkillApproval.action == action,
            SkillApproval.applied_at.is_(None),
        )
        .order_by(SkillApproval.created_at, SkillApproval.id)
    ).all()


def add_approval(
    session: Session, tenant_id: uuid.UUID, version_id: uuid.UUID, action: str, *, actor: str, reason: str
) -> None:
    """One reviewer's approval (a repeat by the same reviewer is a no-op)."""
    session.execute(
        insert(SkillApproval)
        .values(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            version_id=version_id,
            action=action,
            actor=actor,
            reason=reason,
        )
        .on_conflict_do_nothing(
            index_elements=["version_id", "action", "actor"], index_where=SkillApproval.applied_at.is_(None)
        )
    )
    session.flush()


def apply_approvals(approvals: Sequence[SkillApproval]) -> None:
    """Mark approvals as used by the action they approved."""
    now = utcnow()
    for approval in approvals:
        approval.applied_at = now


def review_queue(
    session: Session, tenant_id: uuid.UUID, *, cursor: Cursor | None, limit: int
) -> tuple[Sequence[tuple[SkillVersion, Skill]], Cursor | None]:
    """Proposals and quarantined versions, oldest first, with their skills."""
    query = (
        select(SkillVersion, Skill)
        .join(Skill, Skill.id == SkillVersion.skill_id)
        .where(
            Skill.tenant_id == tenant_id,
            (SkillVersion.review == ReviewState.PENDING)
            | (SkillVersion.trust_tier == int(TrustTier.QUARANTINED)),
            SkillVersion.review != ReviewState.REJECTED,
        )
    )
    if cursor is not None:
        query = query.where(
            (SkillVersion.created_at > cursor.created_at)
            | ((SkillVersion.created_at == cursor.created_at) & (SkillVersion.id > cursor.id))
        )
    ordered = query.order_by(SkillVersion.created_at, SkillVersion.id).limit(limit + 1)
    rows = [(version, skill) for version, skill in session.execute(ordered).all()]
    if len(rows) > limit:
        last = rows[limit - 1][0]
        return rows[:limit], Cursor(last.created_at, last.id)
    return rows, None


def audit_page(
    session: Session, tenant_id: uuid.UUID, filters: AuditFilter, *, before: int | None, limit: int
) -> tuple[Sequence[AuditLog], int | None]:
    """One page of the tenant's audit log, newest first, and the `before` of the next page."""
    query = select(AuditLog).where(AuditLog.tenant_id == tenant_id)
    if filters.actor is not None:
        query = query.where(AuditLog.actor == filters.actor)
    if filters.action is not None:
        if filters.action.endswith("."):
            query = query.where(func.starts_with(AuditLog.action, filters.action))
        else:
            query = query.where(AuditLog.action == filters.action)
    if filters.target_type is not None:
        query = query.where(AuditLog.target_type == filters.target_type)
    if filters.target_id is not None:
        query = query.where(AuditLog.target_id == filters.target_id)
    if filters.since is not None:
        query = query.where(AuditLog.created_at >= filters.since)
    if filters.until is not None:
        query = query.where(AuditLog.created_at < filters.until)
    if before is not None:
        query = query.where(AuditLog.seq < before)
    rows = session.scalars(query.order_by(AuditLog.seq.desc()).limit(limit + 1)).all()
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].seq
    return rows, None
