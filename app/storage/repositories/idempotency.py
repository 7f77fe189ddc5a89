"""Idempotency keys: a retried POST returns the first answer and stores nothing twice."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.storage.models import IdempotencyRecord


def claim(session: Session, tenant_id: uuid.UUID, key: str, request_hash: str) -> IdempotencyRecord | None:
    """Claim `key` in this transaction; if another request already holds it, return that record.

    A concurrent request with the same key blocks on the primary key until the first commits,
    then sees its record, so the two never both store.
    """
    inserted = session.execute(
        insert(IdempotencyRecord)
        .values(tenant_id=tenant_id, key=key, request_hash=request_hash)
        .on_conflict_do_nothing(index_elements=["tenant_id", "key"])
        .returning(IdempotencyRecord.key)
    ).first()
    if inserted is not None:
        return None
    return session.scalars(
        select(IdempotencyRecord).where(
            IdempotencyRecord.tenant_id == tenant_id, IdempotencyRecord.key == key
        )
    ).one()


def save_response(
    session: Session, tenant_id: uuid.UUID, key: str, status_code: int, response: dict[str, Any]
) -> None:
    """Store the answer that later retries with this key get."""
    record = session.get(IdempotencyRecord, (tenant_id, key))
    if record is None:  # claimed in this transaction, so this cannot happen unless misused
        raise RuntimeError(f"idempotency key {key!r} was not claimed")
    record.status_code = status_code
    record.response = response
