"""Audit log entries as clients read them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class AuditEntryOut(BaseModel):
    seq: int = Field(description="Insertion order; pass the last one as `before` for older entries.")
    id: uuid.UUID
    actor: str
    action: str
    target_type: str
    target_id: str
    detail: dict[str, Any]
    created_at: datetime


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_before: int | None = Field(description="Pass as `before` for the next page; null on the last page.")
