"""Trajectories as agents posted them, one row per step."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    ARRAY,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.storage.models.base import EMBEDDING_DIM, Base, CreatedAt, UUIDPk


class Trajectory(UUIDPk, CreatedAt, Base):
    __tablename__ = "trajectory"
    __table_args__ = (
        # Cursor pagination walks (created_at, id) backwards within a tenant.
        Index("ix_trajectory_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
        Index("ix_trajectory_tenant_id_agent_id", "tenant_id", "agent_id"),
        Index("ix_trajectory_tenant_id_session_id", "tenant_id", "session_id"),
        Index("ix_trajectory_tenant_id_domain", "tenant_id", "domain"),
        Index("ix_trajectory_task_cluster_id", "task_cluster_id"),
        # The skill evolver's queue: trajectories it has not taken into account yet.
        Index(
            "ix_trajectory_tenant_id_skills_pending",
            "tenant_id",
            postgresql_where=text("skills_seen_at IS NULL"),
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    event_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("event.id", ondelete="SET NULL"), index=True
    )
    task: Mapped[str] = mapped_column(Text)
    domain: Mapped[str | None] = mapped_column(String(128))
    agent_id: Mapped[str] = mapped_column(String(256))
    session_id: Mapped[str | None] = mapped_column(String(256))
    success: Mapped[bool | None] = mapped_column(Boolean)
    score: Mapped[float | None] = mapped_column(Float)
    meta: Mapped[dict[str, str]] = mapped_column("metadata", JSONB, default=dict)
    step_count: Mapped[int] = mapped_column(Integer)
    task_cluster_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("task_cluster.id", ondelete="SET NULL")
    )
    skills_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TrajectoryStep(UUIDPk, Base):
    __tablename__ = "trajectory_step"
    __table_args__ = (
        UniqueConstraint("trajectory_id", "idx", name="uq_trajectory_step_trajectory_id_idx"),
        Index("ix_trajectory_step_tenant_id", "tenant_id"),
        Index("ix_trajectory_step_cluster_id", "cluster_id"),
    )
    # No vector index yet: steps are embedded for the evolver to cluster, which reads them
    # by trajectory; nearest-neighbour search runs over clusters and experiences instead.

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    trajectory_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("trajectory.id", ondelete="CASCADE"))
    idx: Mapped[int] = mapped_column(Integer)
    observation: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)
    tool: Mapped[str | None] = mapped_column(String(256))
    tool_input: Mapped[Any | None] = mapped_column(JSONB(none_as_null=True))
    tool_output: Mapped[Any | None] = mapped_column(JSONB(none_as_null=True))
    error: Mapped[str | None] = mapped_column(Text)
    reward: Mapped[float | None] = mapped_column(Float)
    retrieval_id: Mapped[str | None] = mapped_column(String(64))
    used_item_ids: Mapped[list[str]] = mapped_column(ARRAY(String(128)), default=list)
    # The normalised observation (app.evolver.normalize); the embedding is of this text.
    situation_key: Mapped[str | None] = mapped_column(Text)
    cluster_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("state_cluster.id", ondelete="SET NULL"))
    embedding: Mapped[list[float] | None] = mapped_column(Vector(EMBEDDING_DIM))
    embedding_model: Mapped[str | None] = mapped_column(String(128))
    embedded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
