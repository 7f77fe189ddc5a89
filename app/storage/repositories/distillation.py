"""SQL of the evolver's distillation: situation embeddings, state clusters, experiences and evidence."""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
from pgvector.sqlalchemy import Vector
from psycopg.abc import Buffer
from psycopg.adapt import Dumper
from psycopg.pq import Format
from sqlalchemy import BindParameter, Cast, Text, bindparam, cast, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session
from sqlalchemy.types import NullType

from app.storage.models import (
    EMBEDDING_DIM,
    Experience,
    ExperienceEvidence,
    Polarity,
    SituationEmbedding,
    StateCluster,
    Trajectory,
    TrajectoryStep,
    utcnow,
)


def vector_text(values: Iterable[float]) -> str:
    """pgvector's text form of a vector, with the numbers pgvector's own adapter writes (`str(float(v))`)."""
    return repr(list(map(float, values)))


class _VectorBytes:
    """A vector in pgvector's binary form, sent as a binary parameter."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class _VectorBytesDumper(Dumper):
    """Binary format, type left to the server (a CAST or the column says which)."""

    format = Format.BINARY

    def dump(self, obj: Any) -> Buffer | None:
        data: bytes = obj.data
        return data


def _binary_parameters(session: Session) -> None:
    """Let this connection send `_VectorBytes` (a dumper for that class only)."""
    driver: Any = session.connection().connection.dbapi_connection
    driver.adapters.register_dumper(_VectorBytes, _VectorBytesDumper)


def _vector_bytes(values: Sequence[float]) -> bytes | None:
    """pgvector's binary form of a vector, or None where only the text form gives the same vector.

    The text form of a float64 number is rounded to float32 by the server; rounding it here gives the
    same float32, except for a number exactly halfway between two float32 values (never so for the
    model's float32 outputs): there the digits of the text form decide, so text is kept.
    """
    exact = np.asarray(values, dtype=np.float64)
    single = exact.astype(np.float32)
    back = single.astype(np.float64)
    if not np.array_equal(exact, back):
        away = np.nextafter(single, np.where(exact > back, np.float32(np.inf), np.float32(-np.inf)))
        if np.any(exact == (back + away.astype(np.float64)) / 2):
            return None
    return struct.pack(">HH", len(single), 0) + single.astype(">f4").tobytes()


def _vector_value(values: Sequence[float]) -> _VectorBytes | str:
    """A vector parameter for `_vector_param`: binary where exact, else text."""
    data = _vector_bytes(values)
    return vector_text(values) if data is None else _VectorBytes(data)


def _vector_param(name: str) -> Cast[Any]:
    """A bound vector given as `_vector_value` (no per-number conversion by pgvector's SQLAlchemy type)."""
    param: BindParameter[Any] = bindparam(name, type_=NullType())
    return cast(param, Vector(EMBEDDING_DIM))


def _vector_array(session: Session, vectors: Sequence[Sequence[float]]) -> _VectorBytes | str:
    """A `vector[]` parameter: PostgreSQL's binary array of pgvector's binary vectors, or text."""
    elements = [_vector_bytes(v) for v in vectors]
    if any(e is None for e in elements):
        return "{" + ",".join(f'"{vector_text(v)}"' for v in vectors) + "}"
    info = session.connection().info
    if "vector_oid" not in info:
        info["vector_oid"] = int(session.execute(text("SELECT 'vector'::regtype::oid")).scalar_one())
    header = struct.pack(">iiIii", 1, 0, info["vector_oid"], len(elements), 1)
    return _VectorBytes(header + b"".join(struct.pack(">i", len(e)) + e for e in elements if e is not None))


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
    table = SituationEmbedding.__table__
    _binary_parameters(session)
    session.connection().execute(
        insert(table).values(embedding=_vector_param("vec")).on_conflict_do_nothing(),  # type: ignore[arg-type]
        [
            {"tenant_id": tenant_id, "key_hash": key, "embedding_model": model, "vec": _vector_value(vec)}
            for key, vec in vectors.items()
        ],
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


@dataclass(eq=False)
class ClusterState:
    """A state cluster as one assignment pass works on it: read once, moved in memory, written at the end."""

    id: uuid.UUID
    centroid: list[float]
    size: int
    # Set for a cluster this pass opened (it is inserted, not updated).
    representative: str | None = None
    created: bool = field(default=False)


def nearest_clusters(
    session: Session, tenant_id: uuid.UUID, domain: str, vectors: Sequence[Sequence[float]]
) -> list[tuple[ClusterState, float] | None]:
    """For each vector, the tenant's stored cluster in `domain` closest to it and their cosine similarity.

    One round trip for all of them, answers in their order; a cluster that answers several vectors is
    one object. Clusters moved in this pass but not yet written are not seen; callers compare those.
    """
    if not vectors:
        return []
    with session.no_autoflush:
        _binary_parameters(session)
        rows = session.execute(
            text(_NEAREST_MANY),
            {"vectors": _vector_array(session, vectors), "tenant": tenant_id, "domain": domain},
        ).all()
        ids = {row[1] for row in rows}
        clusters = (
            {
                cid: ClusterState(cid, json.loads(centroid, parse_int=float), size)
                for cid, size, centroid in session.execute(
                    select(StateCluster.id, StateCluster.size, cast(StateCluster.centroid, Text)).where(
                        StateCluster.id.in_(ids)
                    )
                )
            }
            if ids
            else {}
        )
    found: list[tuple[ClusterState, float] | None] = [None] * len(vectors)
    for ordinal, cluster_id, distance in rows:
        found[int(ordinal) - 1] = (clusters[cluster_id], 1.0 - float(distance))
    return found


def new_cluster(vector: Sequence[float], representative: str) -> ClusterState:
    """Open a cluster around one observation (written by `write_clusters`)."""
    return ClusterState(uuid.uuid4(), list(vector), 1, representative=representative, created=True)


def absorb(cluster: ClusterState, vector: Sequence[float]) -> None:
    """Add one observation to a cluster: the centroid moves to the running mean, kept unit length."""
    old = np.asarray(cluster.centroid, dtype=np.float64)
    mean = (old * cluster.size + np.asarray(vector, dtype=np.float64)) / (cluster.size + 1)
    norm = float(np.linalg.norm(mean)) or 1.0
    cluster.centroid = (mean / norm).tolist()
    cluster.size += 1


def write_clusters(
    session: Session, tenant_id: uuid.UUID, domain: str, clusters: Sequence[ClusterState], model: str
) -> None:
    """Insert the clusters a pass opened and update the ones it moved, one statement each."""
    now = utcnow()
    table = StateCluster.__table__
    opened = [
        {
            "id": c.id,
            "tenant_id": tenant_id,
            "domain": domain,
            "vec": _vector_value(c.centroid),
            "size": c.size,
            "representative": c.representative,
            "embedding_model": model,
            "created_at": now,
            "updated_at": now,
        }
        for c in clusters
        if c.created
    ]
    moved = [{"cid": c.id, "vec": _vector_value(c.centroid), "n": c.size} for c in clusters if not c.created]
    _binary_parameters(session)
    connection = session.connection()
    if opened:
        connection.execute(insert(table).values(centroid=_vector_param("vec")), opened)  # type: ignore[arg-type]
    if moved:
        connection.execute(
            update(table)  # type: ignore[arg-type]
            .where(table.c.id == bindparam("cid"))
            .values(centroid=_vector_param("vec"), size=bindparam("n"), updated_at=now),
            moved,
        )
        moved_ids = [c.id for c in clusters if not c.created]
        _expire_loaded(session, StateCluster, moved_ids, ["centroid", "size", "updated_at"])


def _expire_loaded(session: Session, model: type[Any], ids: Iterable[uuid.UUID], fields: list[str]) -> None:
    """Rows written without the ORM: instances of them already loaded read the new values on next access."""
    for row_id in ids:
        loaded = session.identity_map.get(session.identity_key(model, row_id))
        if loaded is not None:
            session.expire(loaded, fields)


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
    _binary_parameters(session)
    session.connection().execute(
        update(table)  # type: ignore[arg-type]
        .where(table.c.id == bindparam("sid"))
        .values(
            situation_key=bindparam("key"),
            embedding=_vector_param("vec"),
            cluster_id=bindparam("cid"),
            embedding_model=model,
            embedded_at=now,
        ),
        [
            {"sid": s.step_id, "key": s.situation_key, "vec": _vector_value(s.embedding), "cid": s.cluster_id}
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


def experiences_by_key(
    session: Session, tenant_id: uuid.UUID, dedup_keys: Iterable[str]
) -> dict[str, uuid.UUID]:
    """Ids of the experiences with these exact (polarity, cluster, template) keys, by key."""
    keys = list(set(dedup_keys))
    if not keys:
        return {}
    rows = session.execute(
        select(Experience.dedup_key, Experience.id).where(
            Experience.tenant_id == tenant_id, Experience.dedup_key.in_(keys)
        )
    ).all()
    return {row[0]: row[1] for row in rows}


def nearest_experience_id(
    session: Session,
    tenant_id: uuid.UUID,
    polarity: Polarity,
    cluster_id: uuid.UUID | None,
    vector: Sequence[float],
) -> tuple[uuid.UUID, float] | None:
    """`nearest_experience`, the id only: the same query, without loading the row."""
    distance = Experience.embedding.cosine_distance(_vector_param("query"))
    query = select(Experience.id, distance.label("distance")).where(
        Experience.tenant_id == tenant_id, Experience.polarity == polarity
    )
    query = query.where(
        Experience.cluster_id == cluster_id if cluster_id is not None else Experience.cluster_id.is_(None)
    )
    _binary_parameters(session)
    row = session.execute(query.order_by(distance).limit(1), {"query": _vector_value(vector)}).first()
    if row is None:
        return None
    return row[0], 1.0 - float(row[1])


def insert_experience(
    session: Session, values: dict[str, Any], embedding: Sequence[float], task_embedding: Sequence[float]
) -> None:
    """Insert one experience row (column values, its embedding and its task's) without the ORM."""
    table = Experience.__table__
    _binary_parameters(session)
    session.connection().execute(
        insert(table).values(  # type: ignore[arg-type]
            embedding=_vector_param("vec"), task_embedding=_vector_param("task_vec")
        ),
        {**values, "vec": _vector_value(embedding), "task_vec": _vector_value(task_embedding)},
    )


@dataclass(frozen=True)
class Support:
    """A step that supports an experience, and how its trajectory ended."""

    experience_id: uuid.UUID
    step_id: uuid.UUID
    trajectory_id: uuid.UUID
    agent_id: str
    success: bool | None


# Rows per INSERT of evidence (seven parameters each, far below PostgreSQL's 65535).
EVIDENCE_CHUNK = 1000


def add_support(session: Session, tenant_id: uuid.UUID, supports: Sequence[Support]) -> None:
    """`add_evidence` for many links at once: insert them, then recount the experiences that gained some.

    Counts end as they would one link at a time: successes and failures grow by the links that were
    new, distinct agents are counted from all links. Loaded experience rows see the new counts.
    """
    if not supports:
        return
    session.flush()
    evidence = ExperienceEvidence.__table__
    now = utcnow()
    gained: dict[uuid.UUID, list[int]] = {}
    for start in range(0, len(supports), EVIDENCE_CHUNK):
        chunk = supports[start : start + EVIDENCE_CHUNK]
        inserted = (
            session.connection()
            .execute(
                insert(evidence)  # type: ignore[arg-type]
                .values(
                    [
                        {
                            "experience_id": s.experience_id,
                            "step_id": s.step_id,
                            "trajectory_id": s.trajectory_id,
                            "tenant_id": tenant_id,
                            "agent_id": s.agent_id,
                            "success": s.success,
                            "created_at": now,
                        }
                        for s in chunk
                    ]
                )
                .on_conflict_do_nothing()
                .returning(evidence.c.experience_id, evidence.c.success)
            )
            .all()
        )
        for experience_id, success in inserted:
            counts = gained.setdefault(experience_id, [0, 0])
            counts[0] += success is True
            counts[1] += success is False
    if not gained:
        return
    agents = dict(
        session.execute(
            select(ExperienceEvidence.experience_id, func.count(func.distinct(ExperienceEvidence.agent_id)))
            .where(ExperienceEvidence.experience_id.in_(list(gained)))
            .group_by(ExperienceEvidence.experience_id)
        ).all()
    )
    table = Experience.__table__
    session.connection().execute(
        update(table)  # type: ignore[arg-type]
        .where(table.c.id == bindparam("eid"))
        .values(
            successes=table.c.successes + bindparam("ds"),
            failures=table.c.failures + bindparam("df"),
            distinct_agents=bindparam("n"),
            updated_at=now,
        ),
        [{"eid": eid, "ds": s, "df": f, "n": int(agents[eid])} for eid, (s, f) in gained.items()],
    )
    _expire_loaded(session, Experience, gained, ["successes", "failures", "distinct_agents", "updated_at"])


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
