"""Skills: read them, their versions and history (any key); roll back (reviewer); evolve (admin)."""

from __future__ import annotations

import io
import re
import uuid
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session

from app import skill_md
from app.api.deps import AdminKey, CurrentKey, Principal, ReviewerKey, SessionDep
from app.api.pagination import decode_cursor, encode_cursor
from app.api.schemas.common import CURSOR_PATTERN, ERROR_RESPONSES
from app.api.schemas.retrieve import ItemStatsOut, item_stats_out
from app.api.schemas.skills import (
    MAX_VERSION,
    TIER_DOC,
    TIER_PATTERN,
    EvidenceCounts,
    EvolveAccepted,
    HeadOut,
    HistoryEventOut,
    HistoryPage,
    RollbackIn,
    ScanSummary,
    SkillDetail,
    SkillOut,
    SkillPage,
    SkillRef,
    UtilityOut,
    VersionDetail,
    VersionEvidenceOut,
    VersionOut,
    VersionPage,
    VersionRef,
)
from app.errors import BadRequest, InvalidSkill, SkillNotFound, SkillVersionNotFound, TierWithholdsBody
from app.evolver import skill_cycle
from app.limits import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from app.skill_md import SKILL_FILE
from app.skills import service
from app.storage.models import (
    Scope,
    Skill,
    SkillEvent,
    SkillEventKind,
    SkillLevel,
    SkillStatus,
    SkillVersion,
    TrustTier,
)
from app.storage.repositories import retrievals, skills
from app.storage.repositories.skills import SkillFilter

MAX_EVIDENCE = 200
MAX_HISTORY_DIFF_CHARS = 20_000
# Events that wrote their `to_version`; the others (rolled_back, retired, rejected) only point at one.
VERSION_EVENTS = frozenset(
    {
        SkillEventKind.CREATED,
        SkillEventKind.IMPROVED,
        SkillEventKind.DESCRIPTION_OPTIMISED,
        SkillEventKind.REWRITTEN,
    }
)
_DIGITS = re.compile(r"[0-9]+")

router = APIRouter(tags=["skills"], responses=ERROR_RESPONSES)


@router.get("/skills")
def list_skills(
    session: SessionDep,
    key: CurrentKey,
    level: SkillLevel | None = None,
    domain: str | None = None,
    status: SkillStatus | None = Query(
        default=None, description="Default: every status for reviewers; agents see active skills only."
    ),
    tier: Annotated[str, Query(pattern=TIER_PATTERN, description=TIER_DOC)] | None = None,
    cursor: Annotated[str, Query(pattern=CURSOR_PATTERN, description="`next_cursor` of the previous page.")]
    | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
) -> SkillPage:
    """The tenant's skills, newest first, a page at a time (agents: active skills of T1 and above)."""
    trust_tier = int(TrustTier.parse(tier)) if tier is not None else None
    if reviews(key):
        filters = SkillFilter(level=level, domain=domain, status=status, trust_tier=trust_tier)
    elif status not in (None, SkillStatus.ACTIVE):
        return SkillPage(items=[], next_cursor=None)  # agents are served active skills only
    else:
        filters = SkillFilter(
            level=level,
            domain=domain,
            status=SkillStatus.ACTIVE,
            trust_tier=trust_tier,
            min_tier=int(TrustTier.UNVETTED),
        )
    rows, next_cursor = skills.page(
        session, key.tenant_id, filters, cursor=decode_cursor(cursor), limit=limit
    )
    return SkillPage(
        items=[skill_out(row) for row in rows],
        next_cursor=encode_cursor(next_cursor) if next_cursor else None,
    )


@router.get("/skills/{skill_id}")
def get_skill(skill_id: uuid.UUID, session: SessionDep, key: CurrentKey) -> SkillDetail:
    """One skill with its head version, parents and children."""
    return _detail(session, get_or_404(session, key, skill_id))


@router.get("/skills/{skill_id}/versions")
def list_versions(
    skill_id: uuid.UUID,
    session: SessionDep,
    key: CurrentKey,
    before: Annotated[int, Query(ge=1, le=MAX_VERSION, description="Versions below this number.")]
    | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
) -> VersionPage:
    """A skill's versions, newest first; a rollback hides none of them."""
    skill = get_or_404(session, key, skill_id)
    rows, next_before = skills.versions(session, skill.id, before=before, limit=limit)
    return VersionPage(items=[version_out(skill, row) for row in rows], next_before=next_before)


@router.get("/skills/{skill_id}/versions/{v}")
def get_version(skill_id: uuid.UUID, v: VersionRef, session: SessionDep, key: CurrentKey) -> VersionDetail:
    """One version (a number, `latest` or `head`): its SKILL.md, files, diff and evidence."""
    skill = get_or_404(session, key, skill_id)
    row = _served_version(session, key, skill, v)
    evidence = skills.evidence_of(session, row.id, MAX_EVIDENCE)
    return VersionDetail(
        **version_out(skill, row).model_dump(),
        content=row.content,
        files=dict(row.files),
        diff=row.diff,
        evidence_items=[
            VersionEvidenceOut(
                trajectory_id=e.trajectory_id, agent_id=e.agent_id, success=e.success, score=e.score
            )
            for e in evidence
        ],
    )


@router.get(
    "/skills/{skill_id}/versions/{v}/content",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}, "description": "The skill folder, zipped."}},
)
def download_version(skill_id: uuid.UUID, v: VersionRef, session: SessionDep, key: CurrentKey) -> Response:
    """One version as a zip of its Agent Skills folder: `<name>/SKILL.md` and its files."""
    skill = get_or_404(session, key, skill_id)
    row = _served_version(session, key, skill, v)
    return Response(
        content=_zip(skill_md.parse(row.content).name, row),
        media_type="application/zip",
        headers={"Content-Disposition": _attachment(f"{skill.name}-v{row.version}.zip")},
    )


@router.post("/skills/{skill_id}/rollback")
def rollback_skill(
    skill_id: uuid.UUID, body: RollbackIn, session: SessionDep, reviewer: ReviewerKey
) -> SkillDetail:
    """Point the head back at an earlier version; later versions stay listed, and it is audited."""
    skill = service.rollback(
        session,
        reviewer.tenant_id,
        skill_id,
        to_version=body.to_version,
        expected_head=body.expected_head,
        actor=reviewer.actor,
        reason=body.reason,
    )
    return _detail(session, skill)


@router.get("/skills/{skill_id}/history")
def skill_history(
    skill_id: uuid.UUID,
    session: SessionDep,
    key: CurrentKey,
    cursor: Annotated[str, Query(pattern=CURSOR_PATTERN, description="`next_cursor` of the previous page.")]
    | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
) -> HistoryPage:
    """What happened to a skill, newest first, with the diff of each version written."""
    skill = get_or_404(session, key, skill_id)
    rows, next_cursor = skills.history(session, skill.id, cursor=decode_cursor(cursor), limit=limit)
    diffs = _diffs(session, skill, rows, bodies=reviews(key))
    return HistoryPage(
        items=[_event(row, diffs) for row in rows],
        next_cursor=encode_cursor(next_cursor) if next_cursor else None,
    )


@router.post("/evolve", status_code=202)
def evolve(session: SessionDep, admin: AdminKey) -> EvolveAccepted:
    """Queue a skill evolution cycle for the tenant; poll the event for its result."""
    event = skill_cycle.request(session, admin.tenant_id, actor=admin.actor)
    return EvolveAccepted(event_id=event.id)


def reviews(key: Principal) -> bool:
    """Whether the key may see what agents are not served (reviewers and admins)."""
    return bool(key.scopes & {Scope.REVIEWER, Scope.ADMIN})


def get_or_404(session: Session, key: Principal, skill_id: uuid.UUID) -> Skill:
    """The skill; for agents only an active one whose head is T1 or above (others do not exist for them)."""
    row = skills.get(session, key.tenant_id, skill_id)
    hidden = (
        row is not None
        and not reviews(key)
        and (row.status != SkillStatus.ACTIVE or row.trust_tier < TrustTier.UNVETTED)
    )
    if row is None or hidden:
        raise SkillNotFound(detail={"id": str(skill_id)})
    return row


def _served_version(session: Session, key: Principal, skill: Skill, v: str) -> SkillVersion:
    """A version whose body this key may read: reviewers any; agents a reviewed (T2+) one only."""
    row = version_or_404(session, skill, v)
    if not reviews(key) and row.trust_tier < TrustTier.REVIEWED:
        raise TierWithholdsBody(
            detail={"version": row.version, "trust_tier": TrustTier(row.trust_tier).label}
        )
    return row


def version_or_404(session: Session, skill: Skill, v: str) -> SkillVersion:
    number = _version_number(skill, v)
    row = skills.version(session, skill.id, number) if number is not None else None
    if row is None:
        raise SkillVersionNotFound(detail={"version": v, "latest": skill.latest_version})
    return row


def _version_number(skill: Skill, v: str) -> int | None:
    """The number `v` names; None for one no version can have; `invalid_version` (400) for a non-number."""
    if v == "latest":
        return skill.latest_version
    if v == "head":
        return skill.head_version
    if _DIGITS.fullmatch(v):
        # Past the column's range (or Python's int-parsing limit) no version exists; do not ask.
        return int(v) if len(v) <= len(str(MAX_VERSION)) and int(v) <= MAX_VERSION else None
    raise BadRequest(
        "A version is a number, `latest` or `head`.", code="invalid_version", detail={"version": v[:100]}
    )


def _diffs(session: Session, skill: Skill, rows: Sequence[SkillEvent], *, bodies: bool) -> dict[int, str]:
    """The diff of each version these events wrote, by version number (agents: reviewed versions only)."""
    wanted = {r.to_version for r in rows if r.kind in VERSION_EVENTS and r.to_version is not None}
    found = (skills.version(session, skill.id, number) for number in sorted(wanted))
    return {
        row.version: row.diff
        for row in found
        if row is not None and (bodies or row.trust_tier >= TrustTier.REVIEWED)
    }


def _zip(name: str, row: SkillVersion) -> bytes:
    """The skill folder (named as its frontmatter says, as the spec wants) zipped in memory.

    Every member carries the version's time, so the same version always gives the same bytes.
    """
    members = {SKILL_FILE: row.content}
    for path, data in sorted(row.files.items()):
        members[_member_path(path)] = data
    stamp = row.created_at.timetuple()[:6]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, data in members.items():
            info = zipfile.ZipInfo(f"{name}/{path}", date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data.encode("utf-8", "surrogatepass"))
    return buffer.getvalue()


def _attachment(filename: str) -> str:
    # Skill names may hold any lowercase letter; a header is latin-1, so others go as RFC 5987.
    if filename.isascii():
        return f'attachment; filename="{filename}"'
    return f"attachment; filename*=UTF-8''{quote(filename)}"


def _member_path(path: str) -> str:
    # A stored path that would land outside the folder (or on SKILL.md) must not reach a client's unzip.
    pure = PurePosixPath(path)
    if not path or "\\" in path or pure.is_absolute() or ".." in pure.parts or str(pure) == SKILL_FILE:
        raise InvalidSkill("This version holds a file path outside its folder.", detail={"path": path[:200]})
    return str(pure)


def skill_out(row: Skill) -> SkillOut:
    return SkillOut(
        id=row.id,
        name=row.name,
        description=row.description,
        domain=row.domain or None,
        level=row.level,
        status=row.status,
        trust_tier=TrustTier(row.trust_tier).label,
        risk_level=row.risk_level,
        provenance=row.provenance,
        head_version=row.head_version,
        latest_version=row.latest_version,
        utility=UtilityOut(alpha=row.alpha, beta=row.beta, mean=_mean(row.alpha, row.beta)),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _detail(session: Session, skill: Skill) -> SkillDetail:
    head = service.head(session, skill)
    return SkillDetail(
        **skill_out(skill).model_dump(),
        head=HeadOut(
            version=head.version,
            sha256=head.sha256,
            distiller=head.distiller,
            evidence=_counts(head),
            created_at=head.created_at,
        ),
        parents=[_ref(s) for s in skills.parents(session, skill.id)],
        children=[_ref(s) for s in skills.children(session, skill.id)],
    )


def version_out(skill: Skill, row: SkillVersion) -> VersionOut:
    return VersionOut(
        version=row.version,
        parent_version=row.parent_version,
        sha256=row.sha256,
        change=row.change,
        changed_share=row.changed_share,
        rewrite_reason=row.rewrite_reason,
        distiller=row.distiller,
        llm_model=row.llm_model,
        prompt_hash=row.prompt_hash,
        actor=row.actor,
        evidence=_counts(row),
        is_head=row.version == skill.head_version,
        trust_tier=TrustTier(row.trust_tier).label,
        risk_level=row.risk_level,
        review=row.review,
        reviewed_by=row.reviewed_by,
        reviewed_at=row.reviewed_at,
        review_reason=row.review_reason,
        scan=ScanSummary(
            ruleset=row.scan_ruleset,
            malicious=row.scan_malicious,
            score=row.scan_score,
            findings=row.findings_count,
        ),
        created_at=row.created_at,
    )


def _event(row: SkillEvent, diffs: Mapping[int, str]) -> HistoryEventOut:
    wrote = row.kind in VERSION_EVENTS and row.to_version is not None
    diff = diffs.get(row.to_version) if wrote and row.to_version is not None else None
    truncated = diff is not None and len(diff) > MAX_HISTORY_DIFF_CHARS
    return HistoryEventOut(
        id=row.id,
        kind=row.kind,
        actor=row.actor,
        from_version=row.from_version,
        to_version=row.to_version,
        reason=row.reason,
        detail=row.detail,
        diff=diff[:MAX_HISTORY_DIFF_CHARS] if diff is not None else None,
        diff_truncated=truncated,
        created_at=row.created_at,
    )


def _counts(row: SkillVersion) -> EvidenceCounts:
    return EvidenceCounts(
        runs=row.evidence_runs, successes=row.evidence_successes, failures=row.evidence_failures
    )


def _ref(row: Skill) -> SkillRef:
    return SkillRef(id=row.id, name=row.name, level=row.level)


def _mean(alpha: float, beta: float) -> float:
    total = alpha + beta
    return alpha / total if total > 0 else 0.5


@router.get("/skills/{skill_id}/stats")
def skill_stats(skill_id: uuid.UUID, session: SessionDep, key: CurrentKey) -> ItemStatsOut:
    """How often retrieval listed, withheld and used this skill, how it went, and its uplift."""
    skill = get_or_404(session, key, skill_id)
    stats = retrievals.item_stats(session, key.tenant_id, skill.id)
    return item_stats_out(stats, alpha=skill.alpha, beta=skill.beta)
