"""Tenants and API keys."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.storage.models import ApiKey, Scope, Tenant, utcnow

KEY_PREFIX = "sf_"
TOUCH_INTERVAL = timedelta(minutes=1)


def hash_key(plaintext: str) -> str:
    """SHA-256 hex of a key: keys are long random strings, so a fast hash is enough and safe."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def new_key() -> str:
    """A fresh key: `sf_` and 43 url-safe random characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_tenant(session: Session, name: str) -> Tenant:
    """Add a tenant."""
    tenant = Tenant(id=uuid.uuid4(), name=name)
    session.add(tenant)
    session.flush()
    return tenant


def any_tenant(session: Session) -> bool:
    """Whether the database holds any tenant yet (first start creates one)."""
    return session.scalars(select(Tenant.id).limit(1)).first() is not None


def create_key(
    session: Session, tenant_id: uuid.UUID, name: str, scopes: Sequence[Scope]
) -> tuple[ApiKey, str]:
    """Add a key; returns the row and the plaintext, which is never stored."""
    plaintext = new_key()
    key = ApiKey(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        name=name,
        prefix=plaintext[:10],
        key_hash=hash_key(plaintext),
        scopes=sorted({Scope(s).value for s in scopes}),
    )
    session.add(key)
    session.flush()
    return key, plaintext


def key_by_plaintext(session: Session, plaintext: str) -> ApiKey | None:
    """The live (unrevoked) key with this plaintext, if any."""
    return session.scalars(
        select(ApiKey).where(ApiKey.key_hash == hash_key(plaintext), ApiKey.revoked_at.is_(None))
    ).one_or_none()


def touch_key(key: ApiKey) -> None:
    """Record use, at most once a minute so reads do not turn into writes."""
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > TOUCH_INTERVAL:
        key.last_used_at = now


def list_keys(session: Session, tenant_id: uuid.UUID, *, include_revoked: bool = False) -> Sequence[ApiKey]:
    """A tenant's keys, newest first."""
    query = select(ApiKey).where(ApiKey.tenant_id == tenant_id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return session.scalars(query.order_by(ApiKey.created_at.desc(), ApiKey.id)).all()


def get_key(session: Session, tenant_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey | None:
    """One of the tenant's keys."""
    return session.scalars(
        select(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.id == key_id)
    ).one_or_none()


def revoke_key(key: ApiKey) -> None:
    """Revoke a key (idempotent); the row stays for the audit trail."""
    if key.revoked_at is None:
        key.revoked_at = utcnow()
