"""SQL the admin UI needs beyond the JSON API's: dashboard aggregates, a filtered review queue, labels."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Float, Select, cast, func, literal, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.storage.models import (
    Event,
    EventStatus,
    Experience,
    ItemKind,
    Outcome,
    Retrieval,
    RetrievalItem,
    ReviewState,
    RiskLevel,
    Skill,
    SkillApproval,
    SkillLevel,
    SkillStatus,
    SkillVersion,
    Trajectory,
    TrustTier,
)
from app.storage.repositories.trajectories import Cursor

UTC_HOUR = "hour"


@dataclass(frozen=True)
class LibraryCount:
    """How many skills of one level sit at one tier, by status."""

    level: SkillLevel
    tier: int
    status: SkillStatus
    count: int


@dataclass(frozen=True)
class DomainOutcomes:
    """Runs of one domain and how many ended in success (of those with a known outcome)."""

    domain: str
    runs: int
    known: int
    successes: int


@dataclass(frozen=True)
class LatencyBucket:
    """Retrieval latency of one hour (UTC, naive), or of the whole window when `hour` is None."""

    hour: datetime | None
    count: int
    p50: float | None
    p95: float | None


@dataclass(frozen=True)
class Uplift:
    """A skill's measured uplift: its success rate when listed minus when withheld."""

    skill_id: uuid.UUID
    name: str
    uplift: float
    rate_with: float
    rate_without: float
    n_with: int
    n_without: int


@dataclass(frozen=True)
class QueueFilter:
    """What the review queue page may filter on."""

    kind: str = "all"  # all / proposals / quarantined
    min_risk: RiskLevel | None = None
    level: SkillLevel | None = None
    name: str | None = None  # a substring of the skill's name


# --- dashboard -----------------------------------------------------------------------------------


def library_size(session: Session, tenant_id: uuid.UUID) -> list[LibraryCount]:
    """Skills by level, head tier and status."""
    rows = session.execute(
        select(Skill.level, Skill.trust_tier, Skill.status, func.count())
        .where(Skill.tenant_id == tenant_id, Skill.head_version > 0)
        .group_by(Skill.level, Skill.trust_tier, Skill.status)
    ).all()
    return [LibraryCount(level, int(tier), status, int(n)) for level, tier, status, n in rows]


def _utc_hour(column: InstrumentedAttribute[datetime]) -> ColumnElement[datetime]:
    """The UTC hour a timestamp falls in, as a naive timestamp (whatever the session's time zone)."""
    return func.date_trunc(UTC_HOUR, func.timezone("UTC", column))


def trajectories_per_hour(session: Session, tenant_id: uuid.UUID, since: datetime) -> dict[datetime, int]:
    """Trajectories stored per UTC hour since `since` (hours without any are absent)."""
    hour = _utc_hour(Trajectory.created_at)
    rows = session.execute(
        select(hour, func.count())
        .where(Trajectory.tenant_id == tenant_id, Trajectory.created_at >= since)
        .group_by(hour)
    ).all()
    return {h: int(n) for h, n in rows}


def outcomes_by_domain(session: Session, tenant_id: uuid.UUID, *, limit: int) -> list[DomainOutcomes]:
    """The `limit` busiest domains with their run counts and successes, all time."""
    domain = func.coalesce(Trajectory.domain, literal(""))
    rows = session.execute(
        select(
            domain,
            func.count(),
            func.count().filter(Trajectory.success.is_not(None)),
            func.count().filter(Trajectory.success.is_(True)),
        )
        .where(Trajectory.tenant_id == tenant_id)
        .group_by(domain)
        .order_by(func.count().desc(), domain)
        .limit(limit)
    ).all()
    return [DomainOutcomes(d, int(runs), int(known), int(ok)) for d, runs, known, ok in rows]


def retrieval_latency(
    session: Session, tenant_id: uuid.UUID, since: datetime
) -> tuple[LatencyBucket, list[LatencyBucket]]:
    """p50 / p95 of `/v1/retrieve` latency since `since`: over the window, and per UTC hour."""
    p50 = func.percentile_cont(0.5).within_group(Retrieval.latency_ms)
    p95 = func.percentile_cont(0.95).within_group(Retrieval.latency_ms)
    where = (Retrieval.tenant_id == tenant_id, Retrieval.created_at >= since)
    n, whole50, whole95 = session.execute(select(func.count(), p50, p95).where(*where)).one()
    hour = _utc_hour(Retrieval.created_at)
    hours = session.execute(
        select(hour, func.count(), p50, p95).where(*where).group_by(hour).order_by(hour)
    ).all()
    return (
        LatencyBucket(None, int(n), _float(whole50), _float(whole95)),
        [LatencyBucket(h, int(c), _float(a), _float(b)) for h, c, a, b in hours],
    )


def event_counts(session: Session, tenant_id: uuid.UUID, since: datetime) -> dict[EventStatus, int]:
    """Background jobs waiting or running now, and those finished since `since`, by status."""
    open_ = Event.status.in_([EventStatus.PENDING, EventStatus.RUNNING])
    rows = session.execute(
        select(Event.status, func.count())
        .where(Event.tenant_id == tenant_id, open_ | (Event.created_at >= since))
        .group_by(Event.status)
    ).all()
    counts = dict.fromkeys(EventStatus, 0)
    counts.update({status: int(n) for status, n in rows})
    return counts


def recent_failures(session: Session, tenant_id: uuid.UUID, limit: int) -> Sequence[Event]:
    """The tenant's newest failed jobs."""
    return session.scalars(
        select(Event)
        .where(Event.tenant_id == tenant_id, Event.status == EventStatus.FAILED)
        .order_by(Event.created_at.desc(), Event.id.desc())
        .limit(limit)
    ).all()


def uplift_extremes(
    session: Session, tenant_id: uuid.UUID, *, limit: int
) -> tuple[list[Uplift], list[Uplift]]:
    """Skills with the highest and the lowest uplift, among those both listed and withheld with outcomes.

    The same counts as `retrievals.item_stats`, over every skill at once.
    """
    item, ret = RetrievalItem, Retrieval
    decided = ret.outcome.is_not(None)
    success = ret.outcome == Outcome.SUCCESS
    n_with = func.count().filter(item.withheld.is_(False), decided)
    s_with = func.count().filter(item.withheld.is_(False), success)
    n_without = func.count().filter(item.withheld.is_(True), decided)
    s_without = func.count().filter(item.withheld.is_(True), success)
    rate_with = cast(s_with, Float) / n_with
    rate_without = cast(s_without, Float) / n_without
    stats = (
        select(
            item.item_id.label("item_id"),
            n_with.label("n_with"),
            n_without.label("n_without"),
            rate_with.label("rate_with"),
            rate_without.label("rate_without"),
        )
        .join(ret, ret.id == item.retrieval_id)
        .where(ret.tenant_id == tenant_id, item.kind == ItemKind.SKILL)
        .group_by(item.item_id)
        .having(n_with > 0, n_without > 0)
        .subquery()
    )
    uplift = (stats.c.rate_with - stats.c.rate_without).label("uplift")
    base = (
        select(
            Skill.id,
            Skill.name,
            uplift,
            stats.c.rate_with,
            stats.c.rate_without,
            stats.c.n_with,
            stats.c.n_without,
        )
        .join(stats, stats.c.item_id == Skill.id)
        .where(Skill.tenant_id == tenant_id)
    )

    def fetch(order: ColumnElement[float]) -> list[Uplift]:
        rows = session.execute(base.order_by(order, Skill.name).limit(limit)).all()
        return [Uplift(i, n, float(u), float(a), float(b), int(c), int(d)) for i, n, u, a, b, c, d in rows]

    return fetch(uplift.desc()), fetch(uplift.asc())


# --- review ------------------------------------------------------------------------------------


def _queue_query(tenant_id: uuid.UUID, filters: QueueFilter) -> Select[SkillVersion, Skill]:
    proposal = SkillVersion.review == ReviewState.PENDING
    quarantined = SkillVersion.trust_tier == int(TrustTier.QUARANTINED)
    kind = {"proposals": proposal & ~quarantined, "quarantined": quarantined}.get(filters.kind)
    query = (
        select(SkillVersion, Skill)
        .join(Skill, Skill.id == SkillVersion.skill_id)
        .where(
            Skill.tenant_id == tenant_id,
            proposal | quarantined,
            SkillVersion.review != ReviewState.REJECTED,
        )
    )
    if kind is not None:
        query = query.where(kind)
    if filters.min_risk is not None:
        levels = [r for r in RiskLevel if r.rank >= filters.min_risk.rank]
        query = query.where(SkillVersion.risk_level.in_(levels))
    if filters.level is not None:
        query = query.where(Skill.level == filters.level)
    if filters.name:
        query = query.where(func.strpos(func.lower(Skill.name), filters.name.lower()) > 0)
    return query


def review_queue(
    session: Session, tenant_id: uuid.UUID, filters: QueueFilter, *, cursor: Cursor | None, limit: int
) -> tuple[Sequence[tuple[SkillVersion, Skill]], Cursor | None, int]:
    """Proposals and quarantined versions, oldest first, filtered; the next page's cursor; the total."""
    query = _queue_query(tenant_id, filters)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    if cursor is not None:
        query = query.where(
            (SkillVersion.created_at > cursor.created_at)
            | ((SkillVersion.created_at == cursor.created_at) & (SkillVersion.id > cursor.id))
        )
    ordered = query.order_by(SkillVersion.created_at, SkillVersion.id).limit(limit + 1)
    rows = [(version, skill) for version, skill in session.execute(ordered).all()]
    if len(rows) > limit:
        last = rows[limit - 1][0]
        return rows[:limit], Cursor(last.created_at, last.id), int(total)
    return rows, None, int(total)


def open_approvals(session: Session, version_id: uuid.UUID) -> Sequence[SkillApproval]:
    """Every approval of a version still waiting for a second reviewer, oldest first."""
    return session.scalars(
        select(SkillApproval)
        .where(SkillApproval.version_id == version_id, SkillApproval.applied_at.is_(None))
        .order_by(SkillApproval.created_at, SkillApproval.id)
    ).all()


# --- links -------------------------------------------------------------------------------------


def experiences_of_skill(
    session: Session, tenant_id: uuid.UUID, skill_id: uuid.UUID, limit: int
) -> Sequence[Experience]:
    """Experiences that refine a skill, newest first."""
    return session.scalars(
        select(Experience)
        .where(Experience.tenant_id == tenant_id, Experience.skill_id == skill_id)
        .order_by(Experience.created_at.desc(), Experience.id.desc())
        .limit(limit)
    ).all()


def item_labels(
    session: Session, tenant_id: uuid.UUID, ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, tuple[ItemKind, str]]:
    """The kind and a short label (a skill's name, an experience's text) of retrievable items."""
    if not ids:
        return {}
    wanted = list(ids)
    labels: dict[uuid.UUID, tuple[ItemKind, str]] = {}
    for skill_id, name in session.execute(
        select(Skill.id, Skill.name).where(Skill.tenant_id == tenant_id, Skill.id.in_(wanted))
    ):
        labels[skill_id] = (ItemKind.SKILL, name)
    for experience_id, text in session.execute(
        select(Experience.id, func.left(Experience.text, 160)).where(
            Experience.tenant_id == tenant_id, Experience.id.in_(wanted)
        )
    ):
        labels[experience_id] = (ItemKind.EXPERIENCE, text)
    return labels


def retrieval_items(
    session: Session, tenant_id: uuid.UUID, retrieval_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, list[RetrievalItem]]:
    """The items of several of the tenant's retrievals, in rank order, by retrieval id."""
    out: dict[uuid.UUID, list[RetrievalItem]] = {}
    if not retrieval_ids:
        return out
    rows = session.scalars(
        select(RetrievalItem)
        .join(Retrieval, Retrieval.id == RetrievalItem.retrieval_id)
        .where(Retrieval.tenant_id == tenant_id, Retrieval.id.in_(list(retrieval_ids)))
        .order_by(RetrievalItem.retrieval_id, RetrievalItem.rank)
    )
    for row in rows:
        out.setdefault(row.retrieval_id, []).append(row)
    return out


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
