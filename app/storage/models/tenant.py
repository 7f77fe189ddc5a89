"""Tenants and their API keys."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import ARRAY, DateTime, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.storage.models.base import Base, CreatedAt, UUIDPk


class Scope(enum.StrEnum):
    AGENT = "agent"
    REVIEWER = "reviewer"
    ADMIN = "admin"


class Tenant(UUIDPk, CreatedAt, Base):
    __tablename__ = "tenant"

    name: Mapped[str] = mapped_column(String(128), unique=True)


class ApiKey(UUIDPk, CreatedAt, Base):
    __tablename__ = "api_key"
    __table_args__ = (Index("ix_api_key_tenant_id_created_at", "tenant_id", "created_at"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(16)))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
