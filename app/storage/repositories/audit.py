"""The audit log: who did what to which object."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from app.storage.models import AuditLog


def record(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    actor: str,
    action: str,
    target_type: str,
    target_id: str,
    detail: dict[str, Any] | None = None,
) -> AuditLog:
    """Append one audit entry in the caller's transaction."""
    entry = AuditLog(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        detail=detail or {},
    )
    session.add(entry)
    return entry
