"""The admin UI's pages and forms: sign in, dashboard, review, skills, experiences, trajectories, audit, keys.

Each route reads or decides through the same services and repositories as the JSON API, in the request's
one transaction; a POST answers with a redirect (303) to the page that shows its effect.
"""

from __future__ import annotations

import enum
import uuid
from pathlib import Path
from typing import Annotated, TypeVar

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from app.admin import auth, views
from app.admin.auth import AdminOnly, AdminPost, Reviewer, ReviewerPost, SignerDep
from app.admin.web import LOGIN_REASONS, AdminRoute, page, see_other
from app.api.deps import EmbedderDep, Keys, SessionDep
from app.api.pagination import decode_cursor, encode_cursor
from app.errors import ApiKeyNotFound, BadRequest
from app.governance import review
from app.skills import service
from app.storage.models import (
    ExperienceStatus,
    Polarity,
    RiskLevel,
    Scope,
    SkillLevel,
    SkillStatus,
    TrustTier,
)
from app.storage.repositories import admin as admin_repo
from app.storage.repositories import audit, experiences, governance, skills, tenants, trajectories
from app.storage.repositories.experiences import ExperienceFilter
from app.storage.repositories.governance import AuditFilter
from app.storage.repositories.skills import SkillFilter
from app.storage.repositories.trajectories import TrajectoryFilter
from app.storage.session import enqueue_after_commit

PAGE_SIZE = 50
STATIC = Path(__file__).parent / "static"
STATIC_TYPES = {"htmx.min.js": "text/javascript", "admin.css": "text/css", "favicon.svg": "image/svg+xml"}
DONE = {
    "accepted": "Accepted: the version is reviewed (T2).",
    "awaiting": "Your approval is recorded; the action waits for a second reviewer.",
    "rejected": "Rejected.",
    "published": "Published: agents now get this version.",
    "withdrawn": "Withdrawn: agents no longer get this skill.",
    "rolled_back": "Rolled back: the head points at this version again.",
    "tier_changed": "Tier changed.",
    "waived": "Marked as a false positive for this exact content; the version was scored again.",
}
Reason = Annotated[str, Form(min_length=1, max_length=2000)]
E = TypeVar("E", bound=enum.Enum)

router = APIRouter(prefix=auth.PATH, route_class=AdminRoute, include_in_schema=False)


@router.get("/static/{name}")
def static(name: str) -> Response:
    """The vendored htmx and the stylesheet (nothing else is served from the folder)."""
    if name not in STATIC_TYPES:
        raise BadRequest("No such file.", status_code=404, code="not_found")
    return FileResponse(
        STATIC / name, media_type=STATIC_TYPES[name], headers={"Cache-Control": "max-age=3600"}
    )


# --- signing in --------------------------------------------------------------------------------


@router.get("/login")
def login_form(request: Request, signer: SignerDep, next: str = auth.PATH, reason: str = "") -> Response:
    """The sign-in form."""
    response = Response()
    token = auth.login_token(request, response, signer)
    shown = page(
        request,
        "login.html",
        None,
        csrf=token,
        next=_local(next),
        notice=LOGIN_REASONS.get(reason, ""),
        error="",
    )
    shown.raw_headers.extend(h for h in response.raw_headers if h[0] == b"set-cookie")
    return shown


@router.post("/login")
def login(
    request: Request,
    session: SessionDep,
    signer: SignerDep,
    key: Annotated[str, Form(max_length=256)] = "",
    csrf: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=2000)] = auth.PATH,
) -> Response:
    """Sign in with a reviewer or admin API key; agent keys are refused."""
    auth.check_login_token(request, signer, csrf)
    try:
        row = auth.sign_in(session, key)
    except auth.SignInRefused as refused:
        return page(
            request,
            "login.html",
            None,
            status_code=refused.status_code,
            csrf=csrf,
            next=_local(next),
            notice="",
            error=refused.message,
        )
    audit.record(
        session,
        row.tenant_id,
        actor=auth.principal_of(row).actor,
        action="admin.signed_in",
        target_type="api_key",
        target_id=str(row.id),
        detail={"name": row.name},
    )
    response = see_other(_local(next))
    auth.start_session(request, response, signer, row)
    return response


@router.post("/logout")
def logout(_admin: ReviewerPost) -> Response:
    """Sign out."""
    response = see_other(f"{auth.PATH}/login?reason=signed_out")
    auth.end_session(response)
    return response


# --- dashboard and review ------------------------------------------------------------------------


@router.get("")
def dashboard(request: Request, session: SessionDep, admin: Reviewer) -> Response:
    """Library size, ingestion, outcomes, retrieval latency, the evolver's queue and uplift, as charts."""
    return page(request, "dashboard.html", admin, board=views.dashboard(session, admin.principal.tenant_id))


@router.get("/review")
def review_queue(
    request: Request,
    session: SessionDep,
    admin: Reviewer,
    kind: str = "all",
    risk: str = "",
    level: str = "",
    name: str = "",
    cursor: str = "",
) -> Response:
    """Proposals and quarantined versions, oldest first, with their risk, findings and evidence."""
    filters = admin_repo.QueueFilter(
        kind=kind if kind in ("all", "proposals", "quarantined") else "all",
        min_risk=_enum(RiskLevel, risk),
        level=_enum(SkillLevel, level),
        name=name.strip()[:64] or None,
    )
    rows, next_cursor, total = admin_repo.review_queue(
        session, admin.principal.tenant_id, filters, cursor=decode_cursor(cursor), limit=PAGE_SIZE
    )
    return page(
        request,
        "review.html",
        admin,
        rows=rows,
        total=total,
        filters=filters,
        next_cursor=encode_cursor(next_cursor) if next_cursor else "",
    )


@router.get("/skills")
def skill_list(
    request: Request,
    session: SessionDep,
    admin: Reviewer,
    level: str = "",
    status: str = "",
    tier: str = "",
    cursor: str = "",
) -> Response:
    """Every skill, newest first, filtered by level, status and tier."""
    filters = SkillFilter(
        level=_enum(SkillLevel, level),
        status=_enum(SkillStatus, status),
        trust_tier=_tier(tier) if tier else None,
    )
    rows, next_cursor = skills.page(
        session, admin.principal.tenant_id, filters, cursor=decode_cursor(cursor), limit=PAGE_SIZE
    )
    return page(
        request,
        "skills.html",
        admin,
        rows=rows,
        level=level,
        status=status,
        tier=tier,
        next_cursor=encode_cursor(next_cursor) if next_cursor else "",
    )


@router.get("/skills/{skill_id}")
def skill_detail(
    request: Request,
    skill_id: uuid.UUID,
    session: SessionDep,
    admin: Reviewer,
    v: int | None = None,
    a: int | None = None,
    b: int | None = None,
    done: str = "",
) -> Response:
    """A skill: a version's files with findings, versions and diffs, evidence, usage, links, actions."""
    compare = (a, b) if a is not None and b is not None else None
    shown = views.skill_page(session, admin.principal.tenant_id, skill_id, number=v, compare=compare)
    return page(request, "skill.html", admin, view=shown, done=DONE.get(done, ""))


@router.post("/skills/{skill_id}/versions/{number}/accept")
def accept(
    skill_id: uuid.UUID,
    number: int,
    session: SessionDep,
    admin: ReviewerPost,
    embedder: EmbedderDep,
    reason: Reason,
    publish: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    """Accept a version (T2), publishing it if asked; wider tools wait for a second reviewer."""
    decision = review.accept(
        session,
        admin.principal.tenant_id,
        skill_id,
        number,
        actor=admin.principal.actor,
        reason=reason,
        publish=bool(publish),
        embedder=embedder,
    )
    return _done(skill_id, number, "awaiting" if decision.state == review.AWAITING else "accepted")


@router.post("/skills/{skill_id}/versions/{number}/reject")
def reject(
    skill_id: uuid.UUID, number: int, session: SessionDep, admin: ReviewerPost, reason: Reason
) -> Response:
    """Reject a version."""
    review.reject(
        session, admin.principal.tenant_id, skill_id, number, actor=admin.principal.actor, reason=reason
    )
    return _done(skill_id, number, "rejected")


@router.post("/skills/{skill_id}/versions/{number}/publish")
def publish(
    skill_id: uuid.UUID,
    number: int,
    session: SessionDep,
    admin: ReviewerPost,
    embedder: EmbedderDep,
    reason: Reason,
) -> Response:
    """Serve an accepted version."""
    review.publish(
        session,
        admin.principal.tenant_id,
        skill_id,
        number,
        actor=admin.principal.actor,
        reason=reason,
        embedder=embedder,
    )
    return _done(skill_id, number, "published")


@router.post("/skills/{skill_id}/versions/{number}/tier")
def change_tier(
    skill_id: uuid.UUID,
    number: int,
    session: SessionDep,
    admin: ReviewerPost,
    reason: Reason,
    tier: Annotated[str, Form(max_length=16)],
) -> Response:
    """Move a version's tier: down at once; T3 and T4 once two reviewers approved."""
    decision = review.set_tier(
        session,
        admin.principal.tenant_id,
        skill_id,
        number,
        TrustTier(_tier(tier)),
        actor=admin.principal.actor,
        reason=reason,
    )
    return _done(skill_id, number, "awaiting" if decision.state == review.AWAITING else "tier_changed")


@router.post("/skills/{skill_id}/versions/{number}/false-positive")
def mark_false_positive(
    skill_id: uuid.UUID,
    number: int,
    session: SessionDep,
    admin: ReviewerPost,
    reason: Reason,
    rule: Annotated[str, Form(min_length=1, max_length=64)],
) -> Response:
    """Waive one rule's findings for this exact content; the version is scored again."""
    review.mark_false_positive(
        session, admin.principal.tenant_id, skill_id, number, rule, actor=admin.principal.actor, reason=reason
    )
    return _done(skill_id, number, "waived")


@router.post("/skills/{skill_id}/withdraw")
def withdraw(skill_id: uuid.UUID, session: SessionDep, admin: ReviewerPost, reason: Reason) -> Response:
    """Stop serving a skill to agents."""
    skill = review.withdraw(
        session, admin.principal.tenant_id, skill_id, actor=admin.principal.actor, reason=reason
    )
    return _done(skill_id, skill.head_version, "withdrawn")


@router.post("/skills/{skill_id}/rollback")
def rollback(
    skill_id: uuid.UUID,
    session: SessionDep,
    admin: ReviewerPost,
    reason: Reason,
    to_version: Annotated[int, Form(ge=1)],
    expected_head: Annotated[int, Form(ge=0)],
) -> Response:
    """Point the head back at an earlier version (409 if someone moved it since the page was shown)."""
    service.rollback(
        session,
        admin.principal.tenant_id,
        skill_id,
        to_version=to_version,
        expected_head=expected_head,
        actor=admin.principal.actor,
        reason=reason,
    )
    return _done(skill_id, to_version, "rolled_back")


# --- experiences, trajectories, audit ------------------------------------------------------------


@router.get("/experiences")
def experience_list(
    request: Request,
    session: SessionDep,
    admin: Reviewer,
    q: str = "",
    domain: str = "",
    polarity: str = "",
    status: str = "",
    cursor: str = "",
) -> Response:
    """Experiences, newest first: full-text search and filters."""
    filters = ExperienceFilter(
        domain=domain.strip() or None,
        polarity=_enum(Polarity, polarity),
        status=_enum(ExperienceStatus, status),
        query=q.strip()[:1000] or None,
    )
    rows, next_cursor = experiences.page(
        session, admin.principal.tenant_id, filters, cursor=decode_cursor(cursor), limit=PAGE_SIZE
    )
    return page(
        request,
        "experiences.html",
        admin,
        rows=rows,
        q=q,
        domain=domain,
        polarity=polarity,
        status=status,
        next_cursor=encode_cursor(next_cursor) if next_cursor else "",
    )


@router.get("/experiences/{experience_id}")
def experience_detail(
    request: Request, experience_id: uuid.UUID, session: SessionDep, admin: Reviewer
) -> Response:
    """One experience with the steps behind it and its usage."""
    shown = views.experience_page(session, admin.principal.tenant_id, experience_id)
    return page(request, "experience.html", admin, view=shown)


@router.get("/trajectories")
def trajectory_list(
    request: Request,
    session: SessionDep,
    admin: Reviewer,
    agent_id: str = "",
    session_id: str = "",
    domain: str = "",
    outcome: str = "",
    cursor: str = "",
) -> Response:
    """Trajectories, newest first, filtered by agent, session, domain and outcome."""
    filters = TrajectoryFilter(
        agent_id=agent_id.strip() or None,
        session_id=session_id.strip() or None,
        domain=domain.strip() or None,
        success={"success": True, "failure": False}.get(outcome),
        outcome_unknown=outcome == "unknown",
    )
    rows, next_cursor = trajectories.page(
        session, admin.principal.tenant_id, filters, cursor=decode_cursor(cursor), limit=PAGE_SIZE
    )
    return page(
        request,
        "trajectories.html",
        admin,
        rows=rows,
        agent_id=agent_id,
        session_id=session_id,
        domain=domain,
        outcome=outcome,
        next_cursor=encode_cursor(next_cursor) if next_cursor else "",
    )


@router.get("/trajectories/{trajectory_id}")
def trajectory_detail(
    request: Request, trajectory_id: uuid.UUID, session: SessionDep, admin: Reviewer
) -> Response:
    """A trajectory step by step: observation, action, and the retrieved items each step used."""
    shown = views.trajectory_page(session, admin.principal.tenant_id, trajectory_id)
    return page(request, "trajectory.html", admin, view=shown)


@router.get("/audit")
def audit_log(
    request: Request,
    session: SessionDep,
    admin: Reviewer,
    actor: str = "",
    action: str = "",
    target_type: str = "",
    target_id: str = "",
    before: int | None = None,
) -> Response:
    """The append-only audit log, newest first, filtered by actor, action (or a `prefix.`) and target."""
    filters = AuditFilter(
        actor=actor.strip() or None,
        action=action.strip() or None,
        target_type=target_type.strip() or None,
        target_id=target_id.strip() or None,
    )
    rows, next_before = governance.audit_page(
        session, admin.principal.tenant_id, filters, before=before, limit=PAGE_SIZE
    )
    return page(
        request,
        "audit.html",
        admin,
        rows=rows,
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        next_before=next_before,
    )


# --- API keys (admin) -----------------------------------------------------------------------------


@router.get("/keys")
def key_list(request: Request, session: SessionDep, admin: AdminOnly) -> Response:
    """The tenant's API keys, revoked ones too."""
    return _keys_page(request, session, admin, created=None)


@router.post("/keys")
def create_key(
    request: Request,
    session: SessionDep,
    admin: AdminPost,
    name: Annotated[str, Form(min_length=1, max_length=128)],
    scope: Annotated[Scope, Form()],
) -> Response:
    """Create a key; its plaintext is on this page only."""
    row, plaintext = tenants.create_key(session, admin.principal.tenant_id, name, [scope])
    audit.record(
        session,
        admin.principal.tenant_id,
        actor=admin.principal.actor,
        action="api_key.create",
        target_type="api_key",
        target_id=str(row.id),
        detail={"name": row.name, "scopes": row.scopes},
    )
    return _keys_page(request, session, admin, created=(row.name, plaintext))


@router.post("/keys/{key_id}/revoke")
def revoke_key(key_id: uuid.UUID, session: SessionDep, admin: AdminPost, keys: Keys) -> Response:
    """Revoke a key at once (in other API processes within the key cache's TTL)."""
    row = tenants.get_key(session, admin.principal.tenant_id, key_id)
    if row is None:
        raise ApiKeyNotFound(detail={"id": str(key_id)})
    tenants.revoke_key(row)
    key_hash = row.key_hash
    enqueue_after_commit(session, lambda: keys.forget(key_hash))
    audit.record(
        session,
        admin.principal.tenant_id,
        actor=admin.principal.actor,
        action="api_key.revoke",
        target_type="api_key",
        target_id=str(row.id),
        detail={"name": row.name},
    )
    return see_other(f"{auth.PATH}/keys")


# --- helpers -------------------------------------------------------------------------------------


def _keys_page(
    request: Request, session: Session, admin: auth.Admin, *, created: tuple[str, str] | None
) -> Response:
    rows = tenants.list_keys(session, admin.principal.tenant_id, include_revoked=True)
    return page(
        request,
        "keys.html",
        admin,
        rows=rows,
        created=created,
        scopes=list(Scope),
        status_code=201 if created else 200,
    )


def _done(skill_id: uuid.UUID, number: int, what: str) -> Response:
    return see_other(f"{auth.PATH}/skills/{skill_id}?v={number}&done={what}")


def _enum(kind: type[E], value: str) -> E | None:
    """A filter's value as `kind`, or None when empty or unknown (a filter form may send '')."""
    try:
        return kind(value) if value else None
    except ValueError:
        return None


def _tier(value: str) -> int:
    try:
        return int(TrustTier.parse(value))
    except (ValueError, KeyError) as exc:
        raise BadRequest("A tier is T0 to T4.", code="invalid_tier", detail={"tier": value[:16]}) from exc


def _local(url: str) -> str:
    """`url` if it is a path of the admin UI, else the dashboard (no open redirects)."""
    if url.startswith(auth.PATH) and not url.startswith("//") and "\\" not in url and "\n" not in url:
        return url
    return auth.PATH
