"""Governance: import skills, the review queue, review decisions, scans and false positives (reviewers)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.api.deps import EmbedderDep, ReviewerKey, SessionDep
from app.api.pagination import decode_cursor, encode_cursor
from app.api.routes.skills import get_or_404, skill_out, version_or_404, version_out
from app.api.schemas.common import CURSOR_PATTERN, ERROR_RESPONSES, ErrorResponse
from app.api.schemas.skills import (
    AcceptIn,
    DecisionOut,
    FalsePositiveIn,
    FindingOut,
    ImportedOut,
    ImportOut,
    QueueItem,
    QueuePage,
    ReviewIn,
    ScanOut,
    SkillOut,
    SkillRef,
    TierIn,
    VersionRef,
)
from app.errors import BadRequest, InvalidArchive, SkillVersionNotFound
from app.governance import archive, review
from app.governance.archive import SkillPackage
from app.governance.review import Decision
from app.limits import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from app.skills import importer
from app.storage.models import Provenance, Skill, TrustTier
from app.storage.repositories import governance

MAX_SKILLS_PER_IMPORT = 100
ZIP_TYPES = frozenset({"application/zip", "application/x-zip-compressed", "application/octet-stream"})
IMPORT_DOC = (
    "Send a zip (`Content-Type: application/zip`; SKILL.md at its root or in one folder per skill), or "
    "`multipart/form-data` with the skill's files (each part's filename its path, SKILL.md at the root) "
    "or one `.zip` part. Refused: zip bombs, paths outside the folder, symlinks, binary files, more than "
    "400 files, a file over 1 MB or 8 MB in all, over 100 skills (`invalid_archive` and its codes). "
    "Each skill is validated, scanned and stored as `imported`: T1 (name and description served) or T0 "
    "when its risk is high."
)

router = APIRouter(tags=["governance"], responses=ERROR_RESPONSES)


@router.post(
    "/skills",
    status_code=201,
    description=IMPORT_DOC,
    responses={415: {"model": ErrorResponse, "description": "Not a zip or multipart upload."}},
)
async def import_skills(
    request: Request,
    session: SessionDep,
    reviewer: ReviewerKey,
    embedder: EmbedderDep,
    provenance: Provenance = Query(default=Provenance.IMPORTED, description="`imported` or `authored`."),
    domain: Annotated[str, Query(max_length=128)] | None = None,
) -> ImportOut:
    """Import one or more Agent Skills folders; each lands at T1, or T0 when the scanner blocks it."""
    if provenance == Provenance.DISTILLED:
        raise BadRequest("Only the evolver distills skills; import as `imported` or `authored`.")
    packages = await _packages(request)
    if len(packages) > MAX_SKILLS_PER_IMPORT:
        raise InvalidArchive(
            f"The upload holds {len(packages)} skills; import at most {MAX_SKILLS_PER_IMPORT} per request.",
            code="too_many_skills",
            detail={"skills": len(packages), "limit": MAX_SKILLS_PER_IMPORT},
        )

    def store() -> ImportOut:
        items = []
        for package in packages:
            done = importer.import_package(
                session,
                reviewer.tenant_id,
                package,
                actor=reviewer.actor,
                embedder=embedder,
                provenance=provenance,
                domain=domain,
            )
            items.append(
                ImportedOut(
                    skill=skill_out(done.skill),
                    version=done.version.version,
                    created=done.created,
                    unchanged=done.unchanged,
                    trust_tier=TrustTier(done.version.trust_tier).label,
                    is_head=done.version.version == done.skill.head_version,
                    malicious=done.version.scan_malicious,
                    risk_level=done.version.risk_level,
                    findings=done.version.findings_count,
                )
            )
        return ImportOut(items=items)

    return await run_in_threadpool(store)


@router.get("/review/queue")
def review_queue(
    session: SessionDep,
    reviewer: ReviewerKey,
    cursor: Annotated[str, Query(pattern=CURSOR_PATTERN, description="`next_cursor` of the previous page.")]
    | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
) -> QueuePage:
    """Proposals and quarantined versions awaiting a decision, oldest first."""
    rows, next_cursor = governance.review_queue(
        session, reviewer.tenant_id, cursor=decode_cursor(cursor), limit=limit
    )
    return QueuePage(
        items=[
            QueueItem(
                skill=SkillRef(id=skill.id, name=skill.name, level=skill.level),
                version=version.version,
                review=version.review,
                trust_tier=TrustTier(version.trust_tier).label,
                risk_level=version.risk_level,
                findings=version.findings_count,
                evidence_runs=version.evidence_runs,
                actor=version.actor,
                created_at=version.created_at,
            )
            for version, skill in rows
        ],
        next_cursor=encode_cursor(next_cursor) if next_cursor else None,
    )


@router.post("/skills/{skill_id}/versions/{v}/accept")
def accept_version(
    skill_id: uuid.UUID,
    v: VersionRef,
    body: AcceptIn,
    session: SessionDep,
    reviewer: ReviewerKey,
    embedder: EmbedderDep,
) -> DecisionOut:
    """Accept a proposal (T2) and by default publish it; wider tools wait for a second reviewer."""
    number = _number(session, reviewer.tenant_id, skill_id, v)
    decision = review.accept(
        session,
        reviewer.tenant_id,
        skill_id,
        number,
        actor=reviewer.actor,
        reason=body.reason,
        publish=body.publish,
        embedder=embedder,
    )
    return _decision(decision)


@router.post("/skills/{skill_id}/versions/{v}/reject")
def reject_version(
    skill_id: uuid.UUID, v: VersionRef, body: ReviewIn, session: SessionDep, reviewer: ReviewerKey
) -> SkillOut:
    """Reject a version; a rejected head gives way to the newest servable earlier version."""
    number = _number(session, reviewer.tenant_id, skill_id, v)
    skill = review.reject(
        session, reviewer.tenant_id, skill_id, number, actor=reviewer.actor, reason=body.reason
    )
    return skill_out(skill)


@router.post("/skills/{skill_id}/versions/{v}/publish")
def publish_version(
    skill_id: uuid.UUID,
    v: VersionRef,
    body: ReviewIn,
    session: SessionDep,
    reviewer: ReviewerKey,
    embedder: EmbedderDep,
) -> SkillOut:
    """Make an accepted version the one agents get; a withdrawn skill comes back."""
    number = _number(session, reviewer.tenant_id, skill_id, v)
    skill = review.publish(
        session,
        reviewer.tenant_id,
        skill_id,
        number,
        actor=reviewer.actor,
        reason=body.reason,
        embedder=embedder,
    )
    return skill_out(skill)


@router.post("/skills/{skill_id}/withdraw")
def withdraw_skill(
    skill_id: uuid.UUID, body: ReviewIn, session: SessionDep, reviewer: ReviewerKey
) -> SkillOut:
    """Stop serving a skill to agents; publishing a version brings it back."""
    return skill_out(
        review.withdraw(session, reviewer.tenant_id, skill_id, actor=reviewer.actor, reason=body.reason)
    )


@router.post("/skills/{skill_id}/versions/{v}/tier")
def change_tier(
    skill_id: uuid.UUID, v: VersionRef, body: TierIn, session: SessionDep, reviewer: ReviewerKey
) -> DecisionOut:
    """Move a version's tier: down at once; up by a reviewer who did not write it; T3/T4 by two."""
    number = _number(session, reviewer.tenant_id, skill_id, v)
    decision = review.set_tier(
        session,
        reviewer.tenant_id,
        skill_id,
        number,
        TrustTier.parse(body.tier),
        actor=reviewer.actor,
        reason=body.reason,
    )
    return _decision(decision)


@router.get("/skills/{skill_id}/versions/{v}/scan")
def version_scan(skill_id: uuid.UUID, v: VersionRef, session: SessionDep, reviewer: ReviewerKey) -> ScanOut:
    """The version's latest scan: every finding with its file, line and snippet, waived ones marked."""
    skill = get_or_404(session, reviewer, skill_id)
    version = version_or_404(session, skill, v)
    scan = governance.latest_scan(session, version.id)
    if scan is None:
        raise SkillVersionNotFound("This version has not been scanned yet; the rescan task will scan it.")
    return ScanOut(
        version=version.version,
        sha256=version.sha256,
        ruleset=scan.ruleset,
        trigger=scan.trigger,
        malicious=scan.malicious,
        score=scan.score,
        risk_level=scan.risk_level,
        findings=[FindingOut.model_validate(f) for f in scan.findings],
        created_at=scan.created_at,
    )


@router.post("/skills/{skill_id}/versions/{v}/false-positives")
def mark_false_positive(
    skill_id: uuid.UUID, v: VersionRef, body: FalsePositiveIn, session: SessionDep, reviewer: ReviewerKey
) -> ScanOut:
    """Mark one rule's findings as false positives for this exact content; the risk is scored again."""
    number = _number(session, reviewer.tenant_id, skill_id, v)
    review.mark_false_positive(
        session, reviewer.tenant_id, skill_id, number, body.rule, actor=reviewer.actor, reason=body.reason
    )
    return version_scan(skill_id, str(number), session, reviewer)


def _number(session: Session, tenant_id: uuid.UUID, skill_id: uuid.UUID, v: str) -> int:
    """The version number `v` names (a number, `latest` or `head`)."""
    skill = session.get(Skill, skill_id)
    if skill is None or skill.tenant_id != tenant_id:
        return int(v) if v.isdigit() else 0  # the service answers 404 for the skill
    return version_or_404(session, skill, v).version


def _decision(decision: Decision) -> DecisionOut:
    return DecisionOut(
        state="applied" if decision.state == review.APPLIED else "awaiting_second_approval",
        approvals=decision.approvals,
        needs=decision.needs,
        skill=skill_out(decision.skill),
        version=version_out(decision.skill, decision.version),
    )


async def _packages(request: Request) -> list[SkillPackage]:
    """The skill packages of an import request: a zip body, or multipart files (or one zip part)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ZIP_TYPES:
        return await run_in_threadpool(archive.from_zip, await request.body())
    if content_type == "multipart/form-data":
        form = await request.form(max_files=archive.ArchiveLimits().max_files, max_fields=10)
        parts: list[tuple[str, bytes]] = []
        for value in form.multi_items():
            upload = value[1]
            if isinstance(upload, str):
                continue
            parts.append((upload.filename or value[0], await upload.read()))
        await form.close()
        if len(parts) == 1 and parts[0][0].lower().endswith(".zip"):
            return await run_in_threadpool(archive.from_zip, parts[0][1])
        if not parts:
            raise BadRequest(
                "The form holds no files; send the skill's files as file parts.", code="no_files"
            )
        return [await run_in_threadpool(archive.from_files, parts)]
    raise BadRequest(
        "Send the skill as `application/zip` or as `multipart/form-data` files.",
        code="unsupported_media_type",
        status_code=415,
        detail={"content_type": content_type[:100]},
    )
