"""SQL of skills: task clusters, skills and their immutable versions, evidence, links and history."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.storage.models import (
    Experience,
    ExperienceStatus,
    Polarity,
    Provenance,
    ReviewState,
    Skill,
    SkillEvent,
    SkillEventKind,
    SkillLevel,
    SkillLink,
    SkillStatus,
    SkillVersion,
    SkillVersionEvidence,
    TaskCluster,
    Trajectory,
    TrajectoryStep,
    utcnow,
)
from app.storage.repositories.trajectories import Cursor


@dataclass(frozen=True)
class SkillFilter:
    """What `GET /v1/skills` may filter on."""

    level: SkillLevel | None = None
    domain: str | None = None
    status: SkillStatus | None = None
    trust_tier: int | None = None
    min_tier: int | None = None  # agents see nothing below T1


@dataclass(frozen=True)
class EvidenceRow:
    """One trajectory behind a version."""

    trajectory_id: uuid.UUID
    agent_id: str
    success: bool | None
    score: float | None


# --- task clusters -------------------------------------------------------------------------------


def lock_task_clusters(session: Session, tenant_id: uuid.UUID) -> None:
    """Serialise task-cluster assignment and skill distillation per tenant until the transaction ends."""
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": f"task-clusters:{tenant_id}"}
    )
    use_filtered_scans(session)


def use_filtered_scans(session: Session) -> None:
    """Filtered HNSW scans keep looking until they find enough rows of the tenant (this transaction)."""
    session.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))


def nearest_task_cluster(
    session: Session, tenant_id: uuid.UUID, domain: str, vector: Sequence[float]
) -> tuple[TaskCluster, float] | None:
    """The tenant's task cluster in `domain` closest to `vector`, with its cosine similarity."""
    distance = TaskCluster.centroid.cosine_distance(vector)
    row = session.execute(
        select(TaskCluster, distance.label("distance"))
        .where(TaskCluster.tenant_id == tenant_id, TaskCluster.domain == domain)
        .order_by(distance)
        .limit(1)
    ).first()
    if row is None:
        return None
    return row[0], 1.0 - float(row[1])


def new_task_cluster(
    session: Session, tenant_id: uuid.UUID, domain: str, vector: Sequence[float], task: str, model: str
) -> TaskCluster:
    """Open a task cluster around one task text."""
    cluster = TaskCluster(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        domain=domain,
        centroid=list(vector),
        size=0,
        representative=task,
        embedding_model=model,
    )
    session.add(cluster)
    session.flush()
    return cluster


def pending_trajectories(session: Session, tenant_id: uuid.UUID, limit: int) -> Sequence[Trajectory]:
    """Trajectories the skill evolver has not taken into account yet, oldest first."""
    return session.scalars(
        select(Trajectory)
        .where(Trajectory.tenant_id == tenant_id, Trajectory.skills_seen_at.is_(None))
        .order_by(Trajectory.created_at, Trajectory.id)
        .limit(limit)
    ).all()


def tenants_with_pending(session: Session) -> list[uuid.UUID]:
    """Tenants that have trajectories the skill evolver has not seen."""
    return list(
        session.scalars(select(Trajectory.tenant_id).where(Trajectory.skills_seen_at.is_(None)).distinct())
    )


def mark_seen(session: Session, trajectory_ids: Iterable[uuid.UUID]) -> None:
    """Record that the skill evolver took these trajectories into account."""
    ids = list(trajectory_ids)
    if ids:
        session.execute(update(Trajectory).where(Trajectory.id.in_(ids)).values(skills_seen_at=utcnow()))


def cluster_trajectories(
    session: Session, task_cluster_ids: Iterable[uuid.UUID], limit_per_cluster: int
) -> Sequence[Trajectory]:
    """The newest trajectories of each task cluster, at most `limit_per_cluster` each."""
    ids = list(task_cluster_ids)
    if not ids:
        return []
    ranked = (
        select(
            Trajectory.id,
            func.row_number()
            .over(
                partition_by=Trajectory.task_cluster_id,
                order_by=(Trajectory.created_at.desc(), Trajectory.id),
            )
            .label("rank"),
        )
        .where(Trajectory.task_cluster_id.in_(ids))
        .subquery()
    )
    return session.scalars(
        select(Trajectory)
        .join(ranked, ranked.c.id == Trajectory.id)
        .where(ranked.c.rank <= limit_per_cluster)
        .order_by(Trajectory.created_at, Trajectory.id)
    ).all()


def domain_cluster_ids(session: Session, tenant_id: uuid.UUID, domain: str) -> list[uuid.UUID]:
    """Every task cluster of a tenant's domain."""
    return list(
        session.scalars(
            select(TaskCluster.id).where(TaskCluster.tenant_id == tenant_id, TaskCluster.domain == domain)
        )
    )


def steps_of(session: Session, trajectory_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[TrajectoryStep]]:
    """The steps of several trajectories, in order, by trajectory id."""
    ids = list(trajectory_ids)
    out: dict[uuid.UUID, list[TrajectoryStep]] = {i: [] for i in ids}
    if not ids:
        return out
    for step in session.scalars(
        select(TrajectoryStep)
        .where(TrajectoryStep.trajectory_id.in_(ids))
        .order_by(TrajectoryStep.trajectory_id, TrajectoryStep.idx)
    ):
        out[step.trajectory_id].append(step)
    return out


def active_avoid_experiences(session: Session, tenant_id: uuid.UUID, domain: str) -> Sequence[Experience]:
    """The tenant's active `avoid` lessons in a domain (atomic skills turn them into pitfalls)."""
    return session.scalars(
        select(Experience).where(
            Experience.tenant_id == tenant_id,
            Experience.domain == domain,
            Experience.polarity == Polarity.AVOID,
            Experience.status == ExperienceStatus.ACTIVE,
        )
    ).all()


def link_experiences(session: Session, skill_id: uuid.UUID, experience_ids: Iterable[uuid.UUID]) -> None:
    """Mark experiences as refining a skill."""
    ids = list(experience_ids)
    if ids:
        session.execute(update(Experience).where(Experience.id.in_(ids)).values(skill_id=skill_id))


# --- skills and versions -----------------------------------------------------------------------


def lock_skill(session: Session, skill_id: uuid.UUID) -> None:
    """Serialise writers of one skill until the transaction ends."""
    session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": f"skill:{skill_id}"})


def get(session: Session, tenant_id: uuid.UUID, skill_id: uuid.UUID) -> Skill | None:
    """The tenant's skill, if any."""
    return session.scalars(
        select(Skill).where(Skill.tenant_id == tenant_id, Skill.id == skill_id)
    ).one_or_none()


def active_strategy(session: Session, tenant_id: uuid.UUID, task_cluster_id: uuid.UUID) -> Skill | None:
    """The active strategy skill of a task cluster, if any."""
    return session.scalars(
        select(Skill)
        .where(
            Skill.tenant_id == tenant_id,
            Skill.level == SkillLevel.STRATEGY,
            Skill.task_cluster_id == task_cluster_id,
            Skill.status == SkillStatus.ACTIVE,
            Skill.head_version > 0,
        )
        .order_by(Skill.created_at, Skill.id)
        .limit(1)
    ).first()


def by_source_key(session: Session, tenant_id: uuid.UUID, source_key: str) -> Skill | None:
    """The skill distilled from `source_key` (a task cluster, a pattern, a verb), if any."""
    return session.scalars(
        select(Skill).where(Skill.tenant_id == tenant_id, Skill.source_key == source_key)
    ).one_or_none()


def by_name(session: Session, tenant_id: uuid.UUID, name: str) -> Skill | None:
    """The tenant's skill called `name`, if any."""
    return session.scalars(
        select(Skill).where(Skill.tenant_id == tenant_id, Skill.name == name)
    ).one_or_none()


def name_taken(session: Session, tenant_id: uuid.UUID, name: str) -> bool:
    """Whether the tenant already has a skill called `name`."""
    return (
        session.scalar(select(func.count()).where(Skill.tenant_id == tenant_id, Skill.name == name)) or 0
    ) > 0


def page(
    session: Session, tenant_id: uuid.UUID, filters: SkillFilter, *, cursor: Cursor | None, limit: int
) -> tuple[Sequence[Skill], Cursor | None]:
    """One page of the tenant's skills, newest first, and the cursor of the next page."""
    query = select(Skill).where(Skill.tenant_id == tenant_id)
    if filters.level is not None:
        query = query.where(Skill.level == filters.level)
    if filters.domain is not None:
        query = query.where(Skill.domain == filters.domain)
    if filters.status is not None:
        query = query.where(Skill.status == filters.status)
    if filters.trust_tier is not None:
        query = query.where(Skill.trust_tier == filters.trust_tier)
    if filters.min_tier is not None:
        query = query.where(Skill.trust_tier >= filters.min_tier)
    if cursor is not None:
        query = query.where(
            (Skill.created_at < cursor.created_at)
            | ((Skill.created_at == cursor.created_at) & (Skill.id < cursor.id))
        )
    rows = session.scalars(query.order_by(Skill.created_at.desc(), Skill.id.desc()).limit(limit + 1)).all()
    if len(rows) > limit:
        last = rows[limit - 1]
        return rows[:limit], Cursor(last.created_at, last.id)
    return rows, None


def all_of(session: Session, tenant_id: uuid.UUID, *, status: SkillStatus | None = None) -> Sequence[Skill]:
    """Every skill of a tenant (for export), by level then name."""
    query = select(Skill).where(Skill.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Skill.status == status)
    return session.scalars(query.order_by(Skill.level, Skill.name)).all()


def version(session: Session, skill_id: uuid.UUID, number: int) -> SkillVersion | None:
    """One version of a skill."""
    return session.scalars(
        select(SkillVersion).where(SkillVersion.skill_id == skill_id, SkillVersion.version == number)
    ).one_or_none()


def versions(
    session: Session, skill_id: uuid.UUID, *, before: int | None, limit: int
) -> tuple[Sequence[SkillVersion], int | None]:
    """Versions newest first, below `before` if given, and the `before` of the next page."""
    query = select(SkillVersion).where(SkillVersion.skill_id == skill_id)
    if before is not None:
        query = query.where(SkillVersion.version < before)
    rows = session.scalars(query.order_by(SkillVersion.version.desc()).limit(limit + 1)).all()
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].version
    return rows, None


def evidence_of(session: Session, version_id: uuid.UUID, limit: int) -> Sequence[SkillVersionEvidence]:
    """The trajectories behind a version, at most `limit`."""
    return session.scalars(
        select(SkillVersionEvidence)
        .where(SkillVersionEvidence.version_id == version_id)
        .order_by(SkillVersionEvidence.trajectory_id)
        .limit(limit)
    ).all()


def add_skill(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    domain: str,
    name: str,
    level: SkillLevel,
    source_key: str,
    task_cluster_id: uuid.UUID | None,
    description: str,
    embedding: Sequence[float],
    embedding_model: str,
    provenance: Provenance = Provenance.DISTILLED,
) -> Skill:
    """A new skill with no versions yet (`add_version` writes version 1)."""
    skill = Skill(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        domain=domain,
        name=name,
        level=level,
        source_key=source_key,
        task_cluster_id=task_cluster_id,
        head_version=0,
        latest_version=0,
        description=description,
        embedding=list(embedding),
        embedding_model=embedding_model,
        status=SkillStatus.ACTIVE,
        provenance=provenance,
        trust_tier=1,
        alpha=1.0,
        beta=1.0,
    )
    session.add(skill)
    session.flush()
    return skill


def add_version(
    session: Session,
    skill: Skill,
    *,
    content: str,
    files: dict[str, str],
    sha256: str,
    diff: str,
    changed_share: float,
    change: SkillEventKind,
    actor: str,
    distiller: str,
    evidence: Sequence[EvidenceRow],
    rewrite_reason: str | None = None,
    llm_model: str | None = None,
    prompt_hash: str | None = None,
) -> SkillVersion:
    """Write the next version and its evidence; the caller decides whether the head moves to it."""
    number = skill.latest_version + 1
    row = SkillVersion(
        id=uuid.uuid4(),
        skill_id=skill.id,
        version=number,
        parent_version=skill.head_version or None,
        content=content,
        files=files,
        sha256=sha256,
        diff=diff,
        changed_share=changed_share,
        change=change,
        rewrite_reason=rewrite_reason,
        distiller=distiller,
        llm_model=llm_model,
        prompt_hash=prompt_hash,
        actor=actor,
        evidence_runs=len(evidence),
        evidence_successes=sum(1 for e in evidence if e.success),
        evidence_failures=sum(1 for e in evidence if e.success is False),
    )
    session.add(row)
    session.flush()
    if evidence:
        session.execute(
            insert(SkillVersionEvidence)
            .values(
                [
                    {
                        "version_id": row.id,
                        "trajectory_id": e.trajectory_id,
                        "agent_id": e.agent_id,
                        "success": e.success,
                        "score": e.score,
                    }
                    for e in evidence
                ]
            )
            .on_conflict_do_nothing()
        )
    skill.latest_version = number
    skill.updated_at = utcnow()
    return row


def pending_with_hash(session: Session, skill_id: uuid.UUID, sha256: str) -> bool:
    """Whether a proposal with exactly this content already awaits review."""
    found = session.scalar(
        select(SkillVersion.id)
        .where(
            SkillVersion.skill_id == skill_id,
            SkillVersion.sha256 == sha256,
            SkillVersion.review == ReviewState.PENDING,
        )
        .limit(1)
    )
    return found is not None


def add_event(
    session: Session,
    skill: Skill,
    *,
    kind: SkillEventKind,
    actor: str,
    from_version: int | None,
    to_version: int | None,
    reason: str = "",
    detail: dict[str, object] | None = None,
) -> SkillEvent:
    """Append to a skill's history."""
    event = SkillEvent(
        id=uuid.uuid4(),
        tenant_id=skill.tenant_id,
        skill_id=skill.id,
        kind=kind,
        actor=actor,
        from_version=from_version,
        to_version=to_version,
        reason=reason,
        detail=detail or {},
    )
    session.add(event)
    return event


def history(
    session: Session, skill_id: uuid.UUID, *, cursor: Cursor | None, limit: int
) -> tuple[Sequence[SkillEvent], Cursor | None]:
    """A skill's events, newest first."""
    query = select(SkillEvent).where(SkillEvent.skill_id == skill_id)
    if cursor is not None:
        query = query.where(
            (SkillEvent.created_at < cursor.created_at)
            | ((SkillEvent.created_at == cursor.created_at) & (SkillEvent.id < cursor.id))
        )
    rows = session.scalars(
        query.order_by(SkillEvent.created_at.desc(), SkillEvent.id.desc()).limit(limit + 1)
    ).all()
    if len(rows) > limit:
        last = rows[limit - 1]
        return rows[:limit], Cursor(last.created_at, last.id)
    return rows, None


def set_links(session: Session, parent_id: uuid.UUID, child_ids: Sequence[uuid.UUID]) -> None:
    """Replace a skill's children, in order."""
    session.execute(delete(SkillLink).where(SkillLink.parent_id == parent_id))
    unique = list(dict.fromkeys(c for c in child_ids if c != parent_id))
    if unique:
        session.execute(
            insert(SkillLink).values(
                [{"parent_id": parent_id, "child_id": c, "position": n} for n, c in enumerate(unique)]
            )
        )


def children(session: Session, skill_id: uuid.UUID) -> Sequence[Skill]:
    """A skill's children, in order."""
    return session.scalars(
        select(Skill)
        .join(SkillLink, SkillLink.child_id == Skill.id)
        .where(SkillLink.parent_id == skill_id)
        .order_by(SkillLink.position)
    ).all()


def parents(session: Session, skill_id: uuid.UUID) -> Sequence[Skill]:
    """The skills that name this one as a child."""
    return session.scalars(
        select(Skill).join(SkillLink, SkillLink.parent_id == Skill.id).where(SkillLink.child_id == skill_id)
    ).all()
