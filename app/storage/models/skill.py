"""Hierarchical skills: task clusters, skills with a head pointer, immutable versions and their evidence."""

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
    SmallInteger,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column

from app.storage.models.base import EMBEDDING_DIM, Base, CreatedAt, UUIDPk, str_enum, utcnow


class SkillLevel(enum.StrEnum):
    STRATEGY = "strategy"
    FUNCTIONAL = "functional"
    ATOMIC = "atomic"


class SkillStatus(enum.StrEnum):
    ACTIVE = "active"
    RETIRED = "retired"  # the evolver took it out: it hurt (rollback brings it back)
    WITHDRAWN = "withdrawn"  # a reviewer took it out of service (publish brings it back)


class TrustTier(enum.IntEnum):
    """Who vouches for a version; the server decides what agents get from it, never the skill itself."""

    QUARANTINED = 0  # never served
    UNVETTED = 1  # name and description only
    REVIEWED = 2  # body served, granting no tools
    VETTED = 3  # body and its declared tools
    CERTIFIED = 4

    @property
    def label(self) -> str:
        """`T0` .. `T4`, as the API shows tiers."""
        return f"T{int(self)}"

    @classmethod
    def parse(cls, text: str) -> TrustTier:
        """A tier from `T2`, `2` or `reviewed`; ValueError for anything else."""
        raw = text.strip().lower()
        if raw.startswith("t") and raw[1:].isdigit():
            raw = raw[1:]
        if raw.isdigit():
            return cls(int(raw))
        return cls[raw.upper()]


class RiskLevel(enum.StrEnum):
    """What a version can do and what the scanner found in it (false positives set aside)."""

    NONE = "none"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 (none) .. 4 (critical), for comparisons."""
        return list(RiskLevel).index(self)


class Provenance(enum.StrEnum):
    """Where a skill came from."""

    DISTILLED = "distilled"  # by the evolver, from trajectories
    IMPORTED = "imported"  # uploaded as an Agent Skills folder
    AUTHORED = "authored"  # written by a person of this tenant


class ReviewState(enum.StrEnum):
    PENDING = "pending"  # a proposal: nobody has accepted or rejected it yet
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class SkillEventKind(enum.StrEnum):
    CREATED = "created"
    IMPROVED = "improved"
    DESCRIPTION_OPTIMISED = "description_optimised"
    REWRITTEN = "rewritten"
    ROLLED_BACK = "rolled_back"
    RETIRED = "retired"
    REJECTED = "rejected"  # a candidate version that failed validation; nothing was written
    IMPORTED = "imported"
    QUARANTINED = "quarantined"  # the scanner put a version in T0
    ACCEPTED = "accepted"
    REVIEW_REJECTED = "review_rejected"
    PUBLISHED = "published"
    WITHDRAWN = "withdrawn"
    TIER_CHANGED = "tier_changed"


class TaskCluster(UUIDPk, CreatedAt, Base):
    """Trajectories whose task texts are close: one kind of task, the unit a strategy skill plans for."""

    __tablename__ = "task_cluster"
    __table_args__ = (
        Index("ix_task_cluster_tenant_id_domain", "tenant_id", "domain"),
        Index(
            "ix_task_cluster_centroid_hnsw",
            "centroid",
            postgresql_using="hnsw",
            postgresql_with={"m": 16, "ef_construction": 64},
            postgresql_ops={"centroid": "vector_cosine_ops"},
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    domain: Mapped[str] = mapped_column(String(128), default="")
    centroid: Mapped[list[float]] = mapped_column(Vector(EMBEDDING_DIM))
    size: Mapped[int] = mapped_column(Integer, default=1)
    representative: Mapped[str] = mapped_column(Text)
    embedding_model: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), default=utcnow
    )


class Skill(UUIDPk, CreatedAt, Base):
    """A skill's identity and head pointer; its content lives in immutable `skill_version` rows."""

    __tablename__ = "skill"
    __table_args__ = (
        Index("uq_skill_tenant_id_name", "tenant_id", "name", unique=True),
        # What the evolver distilled this skill from (a task cluster, a pattern, a verb): one skill each.
        Index("uq_skill_tenant_id_source_key", "tenant_id", "source_key", unique=True),
        Index("ix_skill_tenant_id_level_status", "tenant_id", "level", "status"),
        Index("ix_skill_task_cluster_id", "task_cluster_id"),
        Index(
            "ix_skill_embedding_hnsw",
            "embedding",
            postgresql_using="hnsw",
            postgresql_with={"m": 16, "ef_construction": 64},
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    domain: Mapped[str] = mapped_column(String(128), default="")
    name: Mapped[str] = mapped_column(String(64))
    level: Mapped[SkillLevel] = mapped_column(str_enum(SkillLevel, "skill_level"))
    status: Mapped[SkillStatus] = mapped_column(
        str_enum(SkillStatus, "skill_status"), default=SkillStatus.ACTIVE
    )
    provenance: Mapped[Provenance] = mapped_column(
        str_enum(Provenance, "skill_provenance"), default=Provenance.DISTILLED
    )
    # Copies of the head version's tier and risk, so listing and retrieval filter without a join.
    trust_tier: Mapped[int] = mapped_column(SmallInteger, default=int(TrustTier.UNVETTED))
    risk_level: Mapped[RiskLevel] = mapped_column(str_enum(RiskLevel, "risk_level"), default=RiskLevel.NONE)
    # The head version's `allowed-tools`; retrieval grants them from T3 up.
    allowed_tools: Mapped[str] = mapped_column(Text, default="")
    source_key: Mapped[str] = mapped_column(String(128))
    task_cluster_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("task_cluster.id", ondelete="SET NULL")
    )
    head_version: Mapped[int] = mapped_column(Integer)
    latest_version: Mapped[int] = mapped_column(Integer)
    # Copies of the head version's description, kept for listing and retrieval without a join.
    description: Mapped[str] = mapped_column(Text)
    embedding: Mapped[list[float]] = mapped_column(Vector(EMBEDDING_DIM))
    embedding_model: Mapped[str] = mapped_column(String(128))
    alpha: Mapped[float] = mapped_column(Float, default=1.0)
    beta: Mapped[float] = mapped_column(Float, default=1.0)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), default=utcnow
    )


class SkillVersion(UUIDPk, CreatedAt, Base):
    """One immutable version: the full SKILL.md and files, their hash, the diff and who made it."""

    __tablename__ = "skill_version"
    __table_args__ = (
        Index("uq_skill_version_skill_id_version", "skill_id", "version", unique=True),
        Index("ix_skill_version_content_tsv", "content_tsv", postgresql_using="gin"),
        # The rescan after a rule change looks for versions scanned by another rule set.
        Index("ix_skill_version_scan_ruleset", "scan_ruleset"),
        # The review queue: proposals, oldest first.
        Index("ix_skill_version_review_created_at", "review", "created_at"),
    )

    skill_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("skill.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    parent_version: Mapped[int | None] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text)
    content_tsv: Mapped[str] = mapped_column(
        TSVECTOR, Computed("to_tsvector('english', content)", persisted=True)
    )
    files: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)
    sha256: Mapped[str] = mapped_column(String(64))
    diff: Mapped[str] = mapped_column(Text, default="")
    changed_share: Mapped[float] = mapped_column(Float, default=1.0)
    change: Mapped[SkillEventKind] = mapped_column(str_enum(SkillEventKind, "skill_event_kind"))
    rewrite_reason: Mapped[str | None] = mapped_column(Text)
    distiller: Mapped[str] = mapped_column(String(32))
    llm_model: Mapped[str | None] = mapped_column(String(128))
    prompt_hash: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(256))
    evidence_runs: Mapped[int] = mapped_column(Integer, default=0)
    evidence_successes: Mapped[int] = mapped_column(Integer, default=0)
    evidence_failures: Mapped[int] = mapped_column(Integer, default=0)
    # Governance: the version's own tier and risk, its review, and its latest scan.
    trust_tier: Mapped[int] = mapped_column(SmallInteger, default=int(TrustTier.UNVETTED))
    risk_level: Mapped[RiskLevel] = mapped_column(str_enum(RiskLevel, "risk_level"), default=RiskLevel.NONE)
    review: Mapped[ReviewState] = mapped_column(
        str_enum(ReviewState, "review_state"), default=ReviewState.PENDING
    )
    reviewed_by: Mapped[str | None] = mapped_column(String(256))
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    review_reason: Mapped[str | None] = mapped_column(Text)
    scan_ruleset: Mapped[str] = mapped_column(String(32), default="")
    scan_malicious: Mapped[bool] = mapped_column(Boolean, default=False)
    scan_score: Mapped[float] = mapped_column(Float, default=0.0)
    findings_count: Mapped[int] = mapped_column(Integer, default=0)


class SkillVersionEvidence(Base):
    """A trajectory a version was distilled from or refined by, and how it ended."""

    __tablename__ = "skill_version_evidence"
    __table_args__ = (Index("ix_skill_version_evidence_trajectory_id", "trajectory_id"),)

    version_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("skill_version.id", ondelete="CASCADE"), primary_key=True
    )
    trajectory_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("trajectory.id", ondelete="CASCADE"), primary_key=True
    )
    agent_id: Mapped[str] = mapped_column(String(256))
    success: Mapped[bool | None] = mapped_column(Boolean)
    score: Mapped[float | None] = mapped_column(Float)


class SkillLink(Base):
    """Parent/child edges of the hierarchy: a strategy names its functional and atomic skills."""

    __tablename__ = "skill_link"
    __table_args__ = (Index("ix_skill_link_child_id", "child_id"),)

    parent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("skill.id", ondelete="CASCADE"), primary_key=True)
    child_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("skill.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, default=0)


class SkillEvent(UUIDPk, CreatedAt, Base):
    """A skill's history: who changed what, from which version to which, on what evidence."""

    __tablename__ = "skill_event"
    __table_args__ = (Index("ix_skill_event_skill_id_created_at", "skill_id", "created_at"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    skill_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("skill.id", ondelete="CASCADE"))
    kind: Mapped[SkillEventKind] = mapped_column(str_enum(SkillEventKind, "skill_event_kind"))
    actor: Mapped[str] = mapped_column(String(256))
    from_version: Mapped[int | None] = mapped_column(Integer)
    to_version: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
