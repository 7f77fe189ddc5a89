"""Governance records: every scan of a version, false-positive waivers, and reviewers' approvals."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.storage.models.base import Base, CreatedAt, UUIDPk, str_enum
from app.storage.models.skill import RiskLevel


class SkillScan(UUIDPk, CreatedAt, Base):
    """One run of the risk scanner over one version: when the version was written, or a rescan."""

    __tablename__ = "skill_scan"
    __table_args__ = (Index("ix_skill_scan_version_id_created_at", "version_id", "created_at"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("skill_version.id", ondelete="CASCADE"))
    trigger: Mapped[str] = mapped_column(String(16))  # write / rescan / waiver
    ruleset: Mapped[str] = mapped_column(String(32))
    malicious: Mapped[bool] = mapped_column(Boolean)
    score: Mapped[float] = mapped_column(Float)
    weight: Mapped[int] = mapped_column(Integer)
    risk_level: Mapped[RiskLevel] = mapped_column(str_enum(RiskLevel, "risk_level"))
    # The scanner's findings as `Finding.as_dict()`, each with `waived` set when a reviewer marked it.
    findings: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)


class FindingWaiver(CreatedAt, Base):
    """A reviewer's word that one rule's findings are false positives, for this exact content only."""

    __tablename__ = "finding_waiver"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenant.id", ondelete="CASCADE"), primary_key=True
    )
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    actor: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(Text)


class SkillApproval(UUIDPk, CreatedAt, Base):
    """One reviewer's approval of an action that needs two (a promotion to T3/T4, wider tools)."""

    __tablename__ = "skill_approval"
    __table_args__ = (
        # One approval per reviewer per open action; applied ones stay as the record of who approved.
        Index(
            "uq_skill_approval_open",
            "version_id",
            "action",
            "actor",
            unique=True,
            postgresql_where="applied_at IS NULL",
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("skill_version.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(32))  # accept / tier:T3 / tier:T4
    actor: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(Text, default="")
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
