"""Review: accept, reject, publish, withdraw, change a tier, waive a finding. Every decision is audited.

Rules the server enforces, whatever a skill says about itself:
- nobody approves (accepts or promotes) a version they authored;
- a version whose risk is high or critical cannot be approved (waive false positives first);
- promotion to T3 or T4, and accepting a version that grants tools the last accepted one did not,
  need two different reviewers: the first approval is recorded and the action waits for a second;
- lowering a tier (down to T0) takes one reviewer, at once: safety first.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import skill_md
from app.embedding import Embedder
from app.errors import (
    FindingNotFound,
    ReviewConflict,
    RiskTooHigh,
    SelfApproval,
    SkillNotFound,
    SkillVersionNotFound,
)
from app.governance import gate, risk
from app.storage.models import (
    ReviewState,
    RiskLevel,
    Skill,
    SkillEventKind,
    SkillStatus,
    SkillVersion,
    TrustTier,
    utcnow,
)
from app.storage.repositories import audit, skills
from app.storage.repositories import governance as repo

APPLIED, AWAITING = "applied", "awaiting_second_approval"
ACCEPT = "accept"
TWO_PERSON_TIERS = frozenset({TrustTier.VETTED, TrustTier.CERTIFIED})


@dataclass(frozen=True)
class Decision:
    """What an approval did: applied, or recorded and waiting for a second reviewer."""

    skill: Skill
    version: SkillVersion
    state: str
    approvals: list[str] = field(default_factory=list)  # who approved, oldest first
    needs: int = 1  # approvals the action needs


def locked(
    session: Session, tenant_id: uuid.UUID, skill_id: uuid.UUID, number: int
) -> tuple[Skill, SkillVersion]:
    """The skill (locked for this transaction) and one of its versions; 404s otherwise."""
    skill = skills.get(session, tenant_id, skill_id)
    if skill is None:
        raise SkillNotFound(detail={"id": str(skill_id)})
    skills.lock_skill(session, skill.id)
    session.refresh(skill)
    version = skills.version(session, skill.id, number)
    if version is None:
        raise SkillVersionNotFound(detail={"version": number, "latest": skill.latest_version})
    return skill, version


def accept(
    session: Session,
    tenant_id: uuid.UUID,
    skill_id: uuid.UUID,
    number: int,
    *,
    actor: str,
    reason: str,
    publish: bool = True,
    embedder: Embedder | None = None,
) -> Decision:
    """Accept a proposal (T2, reviewed) and by default publish it; two reviewers if it widens tools."""
    skill, version = locked(session, tenant_id, skill_id, number)
    if version.review != ReviewState.PENDING:
        raise ReviewConflict(
            f"Version {number} is already {version.review.value}; only pending versions can be accepted.",
            detail={"review": version.review.value},
        )
    _approvable(version, actor)
    wider = risk.widens(_last_accepted_tools(session, skill), gate.declared_tools(version))
    needs = 2 if wider else 1
    approvals = _approve(session, skill, version, ACCEPT, actor=actor, reason=reason, needs=needs)
    if len(approvals) < needs:
        return Decision(skill, version, AWAITING, approvals, needs)
    _mark_accepted(version, approvals, reason)
    version.trust_tier = max(version.trust_tier, int(TrustTier.REVIEWED))
    _event(session, skill, version, SkillEventKind.ACCEPTED, actor, reason, approvers=approvals)
    tier = TrustTier(version.trust_tier).label
    _audit(session, skill, actor, "skill.accepted", version=version.version, reason=reason,
           approvers=approvals, widened_tools=sorted(wider), tier=tier)  # fmt: skip
    if publish:
        _publish(session, skill, version, actor=actor, reason=reason, embedder=embedder)
    gate.sync_head(skill, version)
    session.flush()
    return Decision(skill, version, APPLIED, approvals, needs)


def reject(
    session: Session, tenant_id: uuid.UUID, skill_id: uuid.UUID, number: int, *, actor: str, reason: str
) -> Skill:
    """Reject a version; if it was the head, the head falls back to the newest servable earlier one."""
    skill, version = locked(session, tenant_id, skill_id, number)
    if version.review == ReviewState.REJECTED:
        raise ReviewConflict(f"Version {number} is already rejected.", detail={"review": "rejected"})
    version.review = ReviewState.REJECTED
    version.reviewed_by = actor
    version.reviewed_at = utcnow()
    version.review_reason = reason
    _event(session, skill, version, SkillEventKind.REVIEW_REJECTED, actor, reason)
    _audit(session, skill, actor, "skill.rejected", version=version.version, reason=reason)
    if version.version == skill.head_version:
        fallback = _servable_before(session, skill, version.version)
        if fallback is None:
            _set_status(
                session, skill, SkillStatus.WITHDRAWN, actor, "its only servable version was rejected"
            )
        else:
            skill.head_version = fallback.version
            skill.description = skill_md.parse(fallback.content).description
            gate.sync_head(skill, fallback)
    session.flush()
    return skill


def publish(
    session: Session,
    tenant_id: uuid.UUID,
    skill_id: uuid.UUID,
    number: int,
    *,
    actor: str,
    reason: str,
    embedder: Embedder | None = None,
) -> Skill:
    """Serve an accepted version: the head moves to it and a withdrawn skill comes back."""
    skill, version = locked(session, tenant_id, skill_id, number)
    if version.review != ReviewState.ACCEPTED or version.trust_tier < TrustTier.REVIEWED:
        raise ReviewConflict(
            f"Version {number} is {version.review.value} at {TrustTier(version.trust_tier).label}; "
            "accept it before publishing.",
            detail={"review": version.review.value, "trust_tier": TrustTier(version.trust_tier).label},
        )
    _publish(session, skill, version, actor=actor, reason=reason, embedder=embedder)
    session.flush()
    return skill


def withdraw(
    session: Session, tenant_id: uuid.UUID, skill_id: uuid.UUID, *, actor: str, reason: str
) -> Skill:
    """Stop serving a skill to agents (its versions stay; publishing one brings it back)."""
    skill = skills.get(session, tenant_id, skill_id)
    if skill is None:
        raise SkillNotFound(detail={"id": str(skill_id)})
    skills.lock_skill(session, skill.id)
    session.refresh(skill)
    if skill.status == SkillStatus.WITHDRAWN:
        raise ReviewConflict("The skill is already withdrawn.", detail={"status": "withdrawn"})
    _set_status(session, skill, SkillStatus.WITHDRAWN, actor, reason)
    session.flush()
    return skill


def set_tier(
    session: Session,
    tenant_id: uuid.UUID,
    skill_id: uuid.UUID,
    number: int,
    tier: TrustTier,
    *,
    actor: str,
    reason: str,
) -> Decision:
    """Move a version to `tier`: down at once; up by a reviewer who did not author it; T3/T4 by two."""
    skill, version = locked(session, tenant_id, skill_id, number)
    current = TrustTier(version.trust_tier)
    if tier == current:
        return Decision(skill, version, APPLIED, [], 1)
    if tier > current:
        if version.review == ReviewState.REJECTED:
            raise ReviewConflict(f"Version {number} was rejected; it cannot be promoted.")
        _approvable(version, actor)
        needs = 2 if tier in TWO_PERSON_TIERS else 1
        approvals = _approve(
            session, skill, version, f"tier:{tier.label}", actor=actor, reason=reason, needs=needs
        )
        if len(approvals) < needs:
            return Decision(skill, version, AWAITING, approvals, needs)
        if tier >= TrustTier.REVIEWED and version.review == ReviewState.PENDING:
            _mark_accepted(version, approvals, reason)
    else:
        approvals = [actor]
    version.trust_tier = int(tier)
    _event(session, skill, version, SkillEventKind.TIER_CHANGED, actor, reason,
           from_tier=current.label, to_tier=tier.label, approvers=approvals)  # fmt: skip
    _audit(session, skill, actor, "skill.tier_changed", version=version.version, reason=reason,
           from_tier=current.label, to_tier=tier.label, approvers=approvals)  # fmt: skip
    gate.sync_head(skill, version)
    session.flush()
    return Decision(skill, version, APPLIED, approvals, 2 if tier in TWO_PERSON_TIERS else 1)


def mark_false_positive(
    session: Session,
    tenant_id: uuid.UUID,
    skill_id: uuid.UUID,
    number: int,
    rule_id: str,
    *,
    actor: str,
    reason: str,
) -> SkillVersion:
    """Waive one rule for this version's exact content; every version with that content is rescored.

    The tier does not move: a quarantined version whose risk drops still waits for a reviewer.
    """
    skill, version = locked(session, tenant_id, skill_id, number)
    scan = repo.latest_scan(session, version.id)
    if scan is None or not any(f.get("rule") == rule_id for f in scan.findings):
        raise FindingNotFound(detail={"rule": rule_id, "version": number})
    if repo.add_waiver(session, tenant_id, version.sha256, rule_id, actor=actor, reason=reason):
        _audit(session, skill, actor, "finding.waived", version=version.version, rule=rule_id,
               sha256=version.sha256, reason=reason)  # fmt: skip
    for same in repo.versions_with_hash(session, tenant_id, version.sha256):
        owner = skill if same.skill_id == skill.id else session.get(Skill, same.skill_id)
        if owner is not None:
            gate.scan_version(session, owner, same, trigger="waiver")
            gate.sync_head(owner, same)
    session.flush()
    return version


def _approvable(version: SkillVersion, actor: str) -> None:
    if version.actor == actor:
        raise SelfApproval(detail={"author": version.actor})
    if RiskLevel(version.risk_level).rank >= risk.BLOCKING.rank:
        raise RiskTooHigh(detail={"risk_level": version.risk_level.value, "findings": version.findings_count})


def _approve(
    session: Session, skill: Skill, version: SkillVersion, action: str, *, actor: str, reason: str, needs: int
) -> list[str]:
    """Record `actor`'s approval; the approvers so far, oldest first (all marked used once enough)."""
    if needs <= 1:
        return [actor]
    repo.add_approval(session, skill.tenant_id, version.id, action, actor=actor, reason=reason)
    approvals = list(repo.open_approvals(session, version.id, action))
    approvers = list(dict.fromkeys(a.actor for a in approvals))
    if len(approvers) >= needs:
        repo.apply_approvals(approvals)
    else:
        _audit(session, skill, actor, "skill.approval_recorded", version=version.version, approval=action,
               reason=reason, approvers=approvers, needs=needs)  # fmt: skip
    return approvers


def _mark_accepted(version: SkillVersion, approvers: list[str], reason: str) -> None:
    version.review = ReviewState.ACCEPTED
    version.reviewed_by = ", ".join(approvers)[:256]
    version.reviewed_at = utcnow()
    version.review_reason = reason


def _publish(
    session: Session,
    skill: Skill,
    version: SkillVersion,
    *,
    actor: str,
    reason: str,
    embedder: Embedder | None,
) -> None:
    previous = skill.head_version
    doc = skill_md.parse(version.content)
    skill.head_version = version.version
    if doc.description != skill.description:
        skill.description = doc.description
        if embedder is not None:
            skill.embedding = embedder.embed_documents([f"{doc.name}: {doc.description}"])[0]
    gate.sync_head(skill, version)
    if skill.status != SkillStatus.ACTIVE:
        skill.status = SkillStatus.ACTIVE
    skills.add_event(
        session, skill, kind=SkillEventKind.PUBLISHED, actor=actor, from_version=previous,
        to_version=version.version, reason=reason,
    )  # fmt: skip
    _audit(session, skill, actor, "skill.published", from_version=previous, to_version=version.version,
           reason=reason)  # fmt: skip


def _set_status(session: Session, skill: Skill, status: SkillStatus, actor: str, reason: str) -> None:
    skill.status = status
    skills.add_event(
        session, skill, kind=SkillEventKind.WITHDRAWN, actor=actor, from_version=skill.head_version,
        to_version=skill.head_version, reason=reason,
    )  # fmt: skip
    _audit(session, skill, actor, "skill.withdrawn", version=skill.head_version, reason=reason)


def _servable_before(session: Session, skill: Skill, number: int) -> SkillVersion | None:
    """The newest version below `number` that is neither rejected nor quarantined."""
    return session.scalars(
        select(SkillVersion)
        .where(
            SkillVersion.skill_id == skill.id,
            SkillVersion.version < number,
            SkillVersion.review != ReviewState.REJECTED,
            SkillVersion.trust_tier > int(TrustTier.QUARANTINED),
        )
        .order_by(SkillVersion.version.desc())
        .limit(1)
    ).first()


def _last_accepted_tools(session: Session, skill: Skill) -> str:
    row = session.scalars(
        select(SkillVersion)
        .where(SkillVersion.skill_id == skill.id, SkillVersion.review == ReviewState.ACCEPTED)
        .order_by(SkillVersion.version.desc())
        .limit(1)
    ).first()
    return gate.declared_tools(row) if row is not None else ""


def _event(
    session: Session, skill: Skill, version: SkillVersion, kind: SkillEventKind, actor: str, reason: str,
    **detail: object,
) -> None:  # fmt: skip
    skills.add_event(
        session, skill, kind=kind, actor=actor, from_version=version.version, to_version=version.version,
        reason=reason, detail=dict(detail),
    )  # fmt: skip


def _audit(session: Session, skill: Skill, actor: str, action: str, **detail: object) -> None:
    audit.record(
        session, skill.tenant_id, actor=actor, action=action, target_type="skill", target_id=str(skill.id),
        detail=dict(detail),
    )  # fmt: skip
