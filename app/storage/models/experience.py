"""Step-level experiences and the state clusters they are indexed by."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    Boolean,
    Computed,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column

from app.storage.models.base import EMBEDDING_DIM, Base, CreatedAt, UUIDPk, str_enum, utcnow


class Polarity(enum.StrEnum):
    DO = "do"
    AVOID = "avoid"


class ExperienceStatus(enum.StrEnum):
    ACTIVE = "active"
    RETIRED = "retired"


class StateCluster(UUIDPk, CreatedAt, Base):
    """Observations whose normalised embeddings are close: one situation an agent can be in."""

    __tablename__ = "state_cluster"
    __table_args__ = (
        Index("ix_state_cluster_tenant_id_domain", "tenant_id", "domain"),
        Index(
            "ix_state_cluster_centroid_hnsw",
            "centroid",
            postgresql_using="hnsw",
            postgresql_with={"m": 16, "ef_construction": 64},
            postgresql_ops={"centroid": "vector_cosine_ops"},
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    # '' stands for "no domain", so (tenant, domain) is always a usable key.
    domain: Mapped[str] = mapped_column(String(128), default="")
    centroid: Mapped[list[float]] = mapped_column(Vector(EMBEDDING_DIM))
    size: Mapped[int] = mapped_column(Integer, default=1)
    representative: Mapped[str] = mapped_column(Text)
    embedding_model: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), default=utcnow
    )


class SituationEmbedding(Base):
    """Embeddings of normalised observations, so a situation seen before is not encoded again."""

    __tablename__ = "situation_embedding"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenant.id", ondelete="CASCADE"), primary_key=True
    )
    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    embedding_model: Mapped[str] = mapped_column(String(128), primary_key=True)
    embedding: Mapped[list[float]] = mapped_column(Vector(EMBEDDING_DIM))


class Experience(UUIDPk, CreatedAt, Base):
    """A short lesson: in a situation like this, do or avoid that action, and why."""

    __tablename__ = "experience"
    __table_args__ = (
        # Exact duplicates (same tenant, polarity, cluster and action template) never appear twice.
        Index("uq_experience_tenant_id_dedup_key", "tenant_id", "dedup_key", unique=True),
        Index("ix_experience_tenant_id_domain_status", "tenant_id", "domain", "status"),
        Index("ix_experience_cluster_id", "cluster_id"),
        Index("ix_experience_skill_id", "skill_id"),
        Index(
            "ix_experience_embedding_hnsw",
            "embedding",
            postgresql_using="hnsw",
            postgresql_with={"m": 16, "ef_construction": 64},
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
        Index("ix_experience_text_tsv", "text_tsv", postgresql_using="gin"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    domain: Mapped[str] = mapped_column(String(128), default="")
    cluster_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("state_cluster.id", ondelete="SET NULL"))
    # The skill this lesson refines (an atomic skill for its verb, or the strategy of its task cluster).
    skill_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("skill.id", ondelete="SET NULL"))
    polarity: Mapped[Polarity] = mapped_column(str_enum(Polarity, "polarity"))
    status: Mapped[ExperienceStatus] = mapped_column(
        str_enum(ExperienceStatus, "experience_status"), default=ExperienceStatus.ACTIVE
    )
    text: Mapped[str] = mapped_column(Text)
    # Stored, so full-text search neither recomputes it per row nor per ranked match.
    text_tsv: Mapped[str] = mapped_column(TSVECTOR, Computed("to_tsvector('english', text)", persisted=True))
    text_source: Mapped[str] = mapped_column(String(16), default="heuristic")
    llm_model: Mapped[str | None] = mapped_column(String(128))
    action_template: Mapped[str] = mapped_column(Text)
    action_example: Mapped[str] = mapped_column(Text)
    slots: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    situation: Mapped[str] = mapped_column(Text)
    task: Mapped[str] = mapped_column(Text)
    # The task text's embedding: retrieval serves a lesson to the kind of task it was learned on.
    # NULL for lessons from before it was kept (served to every task).
    task_embedding: Mapped[list[float] | None] = mapped_column(Vector(EMBEDDING_DIM), nullable=True)
    reason: Mapped[str] = mapped_column(String(64))
    dedup_key: Mapped[str] = mapped_column(String(64))
    successes: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    distinct_agents: Mapped[int] = mapped_column(Integer, default=0)
    alpha: Mapped[float] = mapped_column(Float, default=1.0)
    beta: Mapped[float] = mapped_column(Float, default=1.0)
    embedding: Mapped[list[float]] = mapped_column(Vector(EMBEDDING_DIM))
    embedding_model: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), default=utcnow
    )


class ExperienceEvidence(CreatedAt, Base):
    """Which step of which trajectory supports an experience, and how that trajectory ended."""

    __tablename__ = "experience_evidence"
    __table_args__ = (Index("ix_experience_evidence_trajectory_id", "trajectory_id"),)

    experience_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("experience.id", ondelete="CASCADE"), primary_key=True
    )
    step_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("trajectory_step.id", ondelete="CASCADE"), primary_key=True
    )
    trajectory_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("trajectory.id", ondelete="CASCADE"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    agent_id: Mapped[str] = mapped_column(String(256))
    success: Mapped[bool | None] = mapped_column(Boolean)
