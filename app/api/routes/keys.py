"""API keys of the caller's tenant (admin), and `ping` (any key)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from app.api.deps import AdminKey, CurrentKey, Keys, SessionDep
from app.api.schemas.common import ERROR_RESPONSES
from app.api.schemas.keys import KeyCreate, KeyCreated, KeyList, KeyOut, PingOut
from app.errors import ApiKeyNotFound
from app.storage.models import ApiKey
from app.storage.repositories import audit, tenants
from app.storage.session import enqueue_after_commit

router = APIRouter(tags=["keys"], responses=ERROR_RESPONSES)


@router.get("/ping")
def ping(key: CurrentKey) -> PingOut:
    """Who this key is: its tenant and scopes."""
    return PingOut(
        tenant_id=key.tenant_id, key_id=key.key_id, key_name=key.key_name, scopes=key.sorted_scopes
    )


@router.post("/keys", status_code=201)
def create_key(body: KeyCreate, session: SessionDep, admin: AdminKey) -> KeyCreated:
    """Create a key in the caller's tenant; the plaintext is in this answer only."""
    row, plaintext = tenants.create_key(session, admin.tenant_id, body.name, body.scopes)
    audit.record(
        session,
        admin.tenant_id,
        actor=admin.actor,
        action="api_key.create",
        target_type="api_key",
        target_id=str(row.id),
        detail={"name": row.name, "scopes": row.scopes},
    )
    return KeyCreated(**_key(row).model_dump(), key=plaintext)


@router.get("/keys")
def list_keys(session: SessionDep, admin: AdminKey, include_revoked: bool = False) -> KeyList:
    """The tenant's keys, newest first (never the keys themselves)."""
    return KeyList(
        items=[_key(k) for k in tenants.list_keys(session, admin.tenant_id, include_revoked=include_revoked)]
    )


@router.delete("/keys/{key_id}")
def revoke_key(key_id: uuid.UUID, session: SessionDep, admin: AdminKey, keys: Keys) -> KeyOut:
    """Revoke a key at once (in other API processes within the key cache TTL); it stays listed."""
    row = tenants.get_key(session, admin.tenant_id, key_id)
    if row is None:
        raise ApiKeyNotFound(detail={"id": str(key_id)})
    tenants.revoke_key(row)
    # After the commit: forgotten earlier, a concurrent request could cache the key as still live.
    key_hash = row.key_hash
    enqueue_after_commit(session, lambda: keys.forget(key_hash))
    audit.record(
        session,
        admin.tenant_id,
        actor=admin.actor,
        action="api_key.revoke",
        target_type="api_key",
        target_id=str(row.id),
        detail={"name": row.name},
    )
    return _key(row)


def _key(row: ApiKey) -> KeyOut:
    return KeyOut(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scopes=list(row.scopes),
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )
