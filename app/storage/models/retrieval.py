"""What `/v1/retrieve` answered, what agents say they used, and the strategy pinned per session."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from app.storage.models.base import Base, CreatedAt, str_enum, utcnow


class ItemKind(enum.StrEnum):
    SKILL = "skill"
    EXPERIENCE = "experience"


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    HARMFUL = "harmful"


class Retrieval(CreatedAt, Base):
    """One answered `/v1/retrieve` call; its id is the `retrieval_id` agents report back."""

    __tablename__ = "retrieval"
    __table_args__ = (
        Index("ix_retrieval_tenant_id_created_at", "tenant_id", "created_at"),
        Index("ix_retrieval_tenant_id_session_id", "tenant_id", "session_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_key.id", ondelete="SET NULL"))
    session_id: Mapped[str | None] = mapped_column(String(256))
    step: Mapped[int | None] = mapped_column(Integer)
    situation_hash: Mapped[str] = mapped_column(String(64))
    strategy_skill_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("skill.id", ondelete="SET NULL"))
    latency_ms: Mapped[float] = mapped_column(Float)
    # Set once by feedback (or by a posted trajectory that names this retrieval).
    outcome: Mapped[Outcome | None] = mapped_column(str_enum(Outcome, "retrieval_outcome"))
    feedback_reason: Mapped[str | None] = mapped_column(Text)
    feedback_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RetrievalItem(Base):
    """An item a retrieval listed, or withheld to measure uplift, and whether the agent used it."""

    __tablename__ = "retrieval_item"
    __table_args__ = (Index("ix_retrieval_item_item_id", "item_id"),)

    retrieval_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("retrieval.id", ondelete="CASCADE"), primary_key=True
    )
    item_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    kind: Mapped[ItemKind] = mapped_column(str_enum(ItemKind, "item_kind"))
    version: Mapped[int | None] = mapped_column(Integer)
    rank: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)
    withheld: Mapped[bool] = mapped_column(Boolean, default=False)
    used: Mapped[bool] = mapped_column(Boolean, default=False)


class RetrievalSession(Base):
    """The strategy skill chosen at an agent session's first step, kept for its later steps."""

    __tablename__ = "retrieval_session"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenant.id", ondelete="CASCADE"), primary_key=True
    )
    session_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    strategy_skill_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("skill.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), default=utcnow
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), default=utcnow
    )
