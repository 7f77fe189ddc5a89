"""SQL of the evolver's distillation: situation embeddings, state clusters, experiences and evidence."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.storage.models import (
    Experience,
    ExperienceEvidence,
    Polarity,
    SituationEmbedding,
    StateCluster,
    Trajectory,
    TrajectoryStep,
    utcnow,
)


def cached_embeddings(
    session: Session, tenant_id: uuid.UUID, key_hashes: Iterable[str], model: str
) -> dict[str, list[float]]:
    """Embeddings of situations already seen by this tenant, by key hash."""
    hashes = list(set(key_hashes))
    if not hashes:
        return {}
    rows = session.execute(
        select(SituationEmbedding.key_hash, SituationEmbedding.embedding).where(
            SituationEmbedding.tenant_id == tenant_id,
            SituationEmbedding.embedding_model == model,
            SituationEmbedding.key_hash.in_(hashes),
        )
    ).all()
    return {row[0]: [float(x) for x in row[1]] for row in rows}


def store_embeddings(
    session: Session, tenant_id: uuid.UUID, vectors: dict[str, list[float]], model: str
) -> None:
    """Remember situation embeddings (a concurrent writer of the same key wins silently)."""
    if not vectors:
        return
    session.execute(
        insert(SituationEmbedding)
        .values(
            [
                {"tenant_id": tenant_id, "key_hash": key, "embedding_model": model, "embedding": vec}
                for key, vec in vectors.items()
            ]
        )
        .on_conflict_do_nothing()
    )


def lock_clusters(session: Session, tenant_id: uuid.UUID, domain: str) -> None:
    """Serialise cluster assignment per (tenant, domain) until the transaction ends."""
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": f"clusters:{tenant_id}:{domain}"}
    )
    # Filtered HNSW scans keep looking until they find enough rows of this tenant and domain.
    session.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))


# The nearest stored cluster of each vector: one HNSW scan each, all in one statement.
_NEAREST_MANY = """
SELECT q.ord, c.id, c.d
FROM unnest(CAST(:vectors AS vector[])) WITH ORDINALITY AS q(v, ord)
CROSS JOIN LATERAL (
    SELECT s.id, s.centroid <=> q.v AS d FROM state_cluster s
    WHERE s.tenant_id = :tenant AND s.domain = :domain
    ORDER BY s.centroid <=> q.v LIMIT 1
) c
"""


def nearest_clusters(
    session: Session, tenant_id: uuid.UUID, domain: str, vectors: Sequence[Sequence[float]]
) -> list[tuple[StateCluster, float] | None]:
    """For each vector, the tenant's stored cluster in `domain` closest to it and their cosine similarity.

    One round trip for all of them, answers in their order. Centroids moved in this transaction but not
    flushed are not seen; callers compare those themselves.
    """
    if not vectors:
        return []
    literal = "{" + ",".join('"[' + ",".join(repr(float(x)) for x in v) + ']"' for v in vectors) + "}"
    with session.no_autoflush:
        rows = session.execute(
            text(_NEAREST_MANY),
            {"vectors": literal, "tenant": tenant_id, "domain": domain},
        ).all()
        ids = {row[1] for row in rows}
        clusters = (
            {c.id: c for c in session.scalars(select(StateCluster).where(StateCluster.id.in_(ids))).all()}
            if ids
            else {}
        )
    found: list[tuple[StateCluster, float] | None] = [None] * len(vectors)
    for ordinal, cluster_id, distance in rows:
        found[int(ordinal) - 1] = (clusters[cluster_id], 1.0 - float(distance))
    return found


def new_cluster(
    session: Session,
    tenant_id: uuid.UUID,
    domain: str,
    vector: Sequence[float],
    representative: str,
    model: str,
) -> StateCluster:
    """Open a cluster around one observation."""
    cluster = StateCluster(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        domain=domain,
        centroid=list(vector),
        size=1,
        representative=representative,
        embedding_model=model,
    )
    session.add(cluster)
    return cluster


def absorb(cluster: StateCluster, vector: Sequence[float]) -> None:
    """Add one observation to a cluster: the centroid moves to the running mean, kept unit length."""
    old = np.asarray(cluster.centroid, dtype=np.float64)
    mean = (old * cluster.size + np.asarray(vector, dtype=np.float64)) / (cluster.size + 1)
    norm = float(np.linalg.norm(mean)) or 1.0
    cluster.centroid = (mean / norm).tolist()
    cluster.size += 1
    cluster.updated_at = utcnow()


@dataclass(frozen=True)
class StepSituation:
    """What distillation writes back onto a step."""

    step_id: uuid.UUID
    situation_key: str
    embedding: list[float]
    cluster_id: uuid.UUID


def set_situations(session: Session, situations: Sequence[StepSituation], model: str) -> None:
    """Store each step's situation key, embedding and cluster."""
    if not situations:
        return
    now = utcnow()
    table = TrajectoryStep.__table__
    session.connection().execute(
        update(table)  # type: ignore[arg-type]
        .where(table.c.id == bindparam("sid"))
        .values(
            situation_key=bindparam("key"),
            embedding=bindparam("vec"),
            cluster_id=bindparam("cid"),
            embedding_model=model,
            embedded_at=now,
        ),
        [
            {"sid": s.step_id, "key": s.situation_key, "vec": s.embedding, "cid": s.cluster_id}
            for s in situations
        ],
    )


def success_actions(
    session: Session, tenant_id: uuid.UUID, cluster_ids: Iterable[uuid.UUID], limit_per_cluster: int = 50
) -> list[tuple[uuid.UUID, str, str]]:
    """(cluster, action, task) of steps that successful trajectories took in these clusters."""
    ids = list(set(cluster_ids))
    if not ids:
        return []
    ranked = (
        select(
            TrajectoryStep.cluster_id,
            TrajectoryStep.action,
            Trajectory.task,
            func.row_number()
            .over(partition_by=TrajectoryStep.cluster_id, order_by=Trajectory.created_at.desc())
            .label("n"),
        )
        .join(Trajectory, Trajectory.id == TrajectoryStep.trajectory_id)
        .where(
            TrajectoryStep.tenant_id == tenant_id,
            TrajectoryStep.cluster_id.in_(ids),
            Trajectory.success.is_(True),
            TrajectoryStep.error.is_(None),
        )
        .subquery()
    )
    rows = session.execute(
        select(ranked.c.cluster_id, ranked.c.action, ranked.c.task).where(ranked.c.n <= limit_per_cluster)
    ).all()
    return [(row[0], row[1], row[2]) for row in rows]


def experience_by_key(session: Session, tenant_id: uuid.UUID, dedup_key: str) -> Experience | None:
    """The experience with this exact (polarity, cluster, template) key."""
    return session.scalars(
        select(Experience).where(Experience.tenant_id == tenant_id, Experience.dedup_key == dedup_key)
    ).one_or_none()


def nearest_experience(
    session: Session,
    tenant_id: uuid.UUID,
    polarity: Polarity,
    cluster_id: uuid.UUID | None,
    vector: Sequence[float],
) -> tuple[Experience, float] | None:
    """The closest experience of the same polarity and cluster, with its cosine similarity."""
    distance = Experience.embedding.cosine_distance(vector)
    query = select(Experience, distance.label("distance")).where(
        Experience.tenant_id == tenant_id, Experience.polarity == polarity
    )
    query = query.where(
        Experience.cluster_id == cluster_id if cluster_id is not None else Experience.cluster_id.is_(None)
    )
    row = session.execute(query.order_by(distance).limit(1)).first()
    if row is None:
        return None
    return row[0], 1.0 - float(row[1])


def created_since(session: Session, tenant_id: uuid.UUID, window: timedelta) -> int:
    """How many experiences the tenant gained in the last `window` (for the rate limit)."""
    cutoff = utcnow() - window
    return int(
        session.scalar(
            select(func.count())
            .select_from(Experience)
            .where(Experience.tenant_id == tenant_id, Experience.created_at >= cutoff)
        )
        or 0
    )


def add_evidence(
    session: Session,
    experience: Experience,
    *,
    step_id: uuid.UUID,
    trajectory_id: uuid.UUID,
    agent_id: str,
    success: bool | None,
) -> bool:
    """Link a step to an experience and count its support; False if it was already linked."""
    inserted = session.execute(
        insert(ExperienceEvidence)
        .values(
            experience_id=experience.id,
            step_id=step_id,
            trajectory_id=trajectory_id,
            tenant_id=experience.tenant_id,
            agent_id=agent_id,
            success=success,
        )
        .on_conflict_do_nothing()
        .returning(ExperienceEvidence.step_id)
    ).first()
    if inserted is None:
        return False
    if success is True:
        experience.successes += 1
    elif success is False:
        experience.failures += 1
    experience.distinct_agents = int(
        session.scalar(
            select(func.count(func.distinct(ExperienceEvidence.agent_id))).where(
                ExperienceEvidence.experience_id == experience.id
            )
        )
        or 0
    )
    experience.updated_at = utcnow()
    return True


def move_evidence(session: Session, *, source: Experience, target: Experience) -> None:
    """Give `target` the evidence of `source` (a merge); counts are recomputed from the links."""
    links = session.execute(
        select(
            ExperienceEvidence.step_id,
            ExperienceEvidence.trajectory_id,
            ExperienceEvidence.agent_id,
            ExperienceEvidence.success,
        ).where(ExperienceEvidence.experience_id == source.id)
    ).all()
    for step_id, trajectory_id, agent_id, success in links:
        add_evidence(
            session, target, step_id=step_id, trajectory_id=trajectory_id, agent_id=agent_id, success=success
        )
