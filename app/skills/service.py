"""Skill versions: write a new immutable version, roll back, export. One writer per skill at a time."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from app import skill_md
from app.errors import InvalidSkill, ReviewConflict, SkillNotFound, SkillVersionNotFound, VersionConflict
from app.governance import gate, risk
from app.skill_md import SkillDocument
from app.storage.models import ReviewState, Skill, SkillEventKind, SkillStatus, SkillVersion, TrustTier
from app.storage.repositories import audit
from app.storage.repositories import skills as repo
from app.storage.repositories.skills import EvidenceRow


@dataclass(frozen=True)
class Authorship:
    """Who made a version and how: the distiller, and for an LLM its model and prompt hash."""

    actor: str
    distiller: str
    llm_model: str | None = None
    prompt_hash: str | None = None


def lock(session: Session, skill: Skill) -> None:
    """Take the skill's advisory lock and re-read its head, so a writer sees the latest state."""
    repo.lock_skill(session, skill.id)
    session.refresh(skill)


def write_version(
    session: Session,
    skill: Skill,
    doc: SkillDocument,
    *,
    expected_head: int,
    change: SkillEventKind,
    author: Authorship,
    evidence: Sequence[EvidenceRow],
    files: Mapping[str, str] | None = None,
    rewrite_reason: str | None = None,
    known_skills: Sequence[str] | None = None,
    reason: str = "",
    content: str | None = None,
) -> SkillVersion | None:
    """Write `doc` as the skill's next version on top of `expected_head`; None if nothing changed.

    The caller holds the skill's lock (`lock`). A head that moved raises `VersionConflict`; a document
    that fails validation raises `InvalidSkill` and writes nothing. `content` stores an uploaded
    SKILL.md as it came (it must parse to `doc`) instead of rendering `doc`.

    The version is scanned here, in the same transaction (`gate`): a blocking risk puts it in T0. The
    head moves to it unless it is quarantined or the head was reviewed (T2+): then it is a proposal
    that waits for a reviewer, and agents keep getting the reviewed head.
    """
    if skill.head_version != expected_head:
        raise VersionConflict(detail={"expected_head": expected_head, "head": skill.head_version})
    files = dict(files or {})
    problems = skill_md.validate(doc, files=files, known_skills=known_skills)
    if problems:
        raise InvalidSkill(detail={"problems": problems})
    content = skill_md.render(doc) if content is None else content
    sha = skill_md.content_hash(content, files)
    head = repo.version(session, skill.id, skill.head_version) if skill.head_version else None
    if (head is not None and head.sha256 == sha) or repo.pending_with_hash(session, skill.id, sha):
        return None
    diff = ""
    share = 1.0
    if head is not None:
        diff = skill_md.unified_diff(
            head.content,
            content,
            old_label=f"v{head.version}/SKILL.md",
            new_label=f"v{skill.latest_version + 1}/SKILL.md",
        )
        share = skill_md.changed_share(skill_md.parse(head.content), doc)
    row = repo.add_version(
        session,
        skill,
        content=content,
        files=files,
        sha256=sha,
        diff=diff,
        changed_share=share,
        change=change,
        actor=author.actor,
        distiller=author.distiller,
        evidence=evidence,
        rewrite_reason=rewrite_reason,
        llm_model=author.llm_model,
        prompt_hash=author.prompt_hash,
    )
    assessment = gate.scan_version(session, skill, row, trigger="write")
    row.trust_tier = int(TrustTier.UNVETTED)  # the gate lowers it to T0 below when the risk blocks
    moves = not assessment.blocking and (head is None or head.trust_tier < TrustTier.REVIEWED)
    if moves or head is None:
        skill.head_version = row.version
        skill.description = doc.description
        gate.sync_head(skill, row)
    repo.add_event(
        session,
        skill,
        kind=change,
        actor=author.actor,
        from_version=row.parent_version,
        to_version=row.version,
        reason=rewrite_reason or reason,
        detail={
            "evidence_runs": row.evidence_runs,
            "evidence_successes": row.evidence_successes,
            "evidence_failures": row.evidence_failures,
            "changed_share": round(share, 3),
            "distiller": author.distiller,
            "risk_level": row.risk_level.value,
            "proposal": not moves,
        },
    )
    audit.record(
        session,
        skill.tenant_id,
        actor=author.actor,
        action=f"skill.{change.value}",
        target_type="skill",
        target_id=str(skill.id),
        detail={
            "from_version": row.parent_version,
            "to_version": row.version,
            "sha256": sha,
            "risk_level": row.risk_level.value,
            "head": skill.head_version,
        },
    )
    if risk.initial_tier(assessment) == TrustTier.QUARANTINED:
        gate.quarantine(
            session,
            skill,
            row,
            actor=gate.SCANNER,
            reason=f"the scanner found {assessment.risk.value} risk ({assessment.active} findings)",
        )
    return row


def rollback(
    session: Session,
    tenant_id: uuid.UUID,
    skill_id: uuid.UUID,
    *,
    to_version: int,
    expected_head: int | None,
    actor: str,
    reason: str = "",
) -> Skill:
    """Move the head pointer back to `to_version`; nothing is deleted, and a later version stays listed."""
    skill = repo.get(session, tenant_id, skill_id)
    if skill is None:
        raise SkillNotFound()
    lock(session, skill)
    if expected_head is not None and skill.head_version != expected_head:
        raise VersionConflict(detail={"expected_head": expected_head, "head": skill.head_version})
    target = repo.version(session, skill.id, to_version)
    if target is None:
        raise SkillVersionNotFound(detail={"version": to_version, "latest": skill.latest_version})
    if target.review == ReviewState.REJECTED or target.trust_tier == TrustTier.QUARANTINED:
        state = "rejected" if target.review == ReviewState.REJECTED else "quarantined"
        raise ReviewConflict(
            f"Version {to_version} is {state}; a rollback can only go to a version agents may be served.",
            detail={"review": target.review.value, "trust_tier": TrustTier(target.trust_tier).label},
        )
    previous = skill.head_version
    if previous == to_version:
        return skill
    skill.head_version = to_version
    skill.description = skill_md.parse(target.content).description
    gate.sync_head(skill, target)
    if skill.status == SkillStatus.RETIRED:
        skill.status = SkillStatus.ACTIVE
    repo.add_event(
        session,
        skill,
        kind=SkillEventKind.ROLLED_BACK,
        actor=actor,
        from_version=previous,
        to_version=to_version,
        reason=reason,
    )
    audit.record(
        session,
        tenant_id,
        actor=actor,
        action="skill.rolled_back",
        target_type="skill",
        target_id=str(skill.id),
        detail={"from_version": previous, "to_version": to_version, "reason": reason},
    )
    session.flush()
    return skill


def retire(session: Session, skill: Skill, *, actor: str, reason: str, detail: dict[str, object]) -> None:
    """Take a skill out of circulation (its versions stay; rollback brings it back)."""
    if skill.status == SkillStatus.RETIRED:
        return
    skill.status = SkillStatus.RETIRED
    repo.add_event(
        session,
        skill,
        kind=SkillEventKind.RETIRED,
        actor=actor,
        from_version=skill.head_version,
        to_version=skill.head_version,
        reason=reason,
        detail=detail,
    )
    audit.record(
        session,
        skill.tenant_id,
        actor=actor,
        action="skill.retired",
        target_type="skill",
        target_id=str(skill.id),
        detail={"reason": reason, **detail},
    )


def head(session: Session, skill: Skill) -> SkillVersion:
    """The version the head pointer names."""
    row = repo.version(session, skill.id, skill.head_version)
    if row is None:  # pragma: no cover - add_version and rollback keep the pointer valid
        raise SkillVersionNotFound(detail={"version": skill.head_version})
    return row


def export(
    session: Session, tenant_id: uuid.UUID, root: Path, *, include_retired: bool = False
) -> list[Path]:
    """Write the head version of every skill as an Agent Skills folder under `root`; returns the folders."""
    status = None if include_retired else SkillStatus.ACTIVE
    folders: list[Path] = []
    for skill in repo.all_of(session, tenant_id, status=status):
        version = head(session, skill)
        doc = skill_md.parse(version.content)
        folders.append(skill_md.write_folder(root, doc, version.files))
    return folders
