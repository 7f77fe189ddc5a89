"""API keys and the caller's identity."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

from app.api.schemas.common import Input
from app.storage.models import Scope


class KeyCreate(Input):
    name: Annotated[str, Field(min_length=1, max_length=128)]
    scopes: list[Scope] = Field(min_length=1, max_length=3, examples=[["agent"]])


class KeyOut(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str = Field(description="The first characters of the key, for telling keys apart.")
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="The key itself. Shown once: only its hash is stored.")


class KeyList(BaseModel):
    items: list[KeyOut]


class PingOut(BaseModel):
    tenant_id: uuid.UUID
    key_id: uuid.UUID
    key_name: str
    scopes: list[str]
