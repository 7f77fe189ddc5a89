"""Plain functions that make test data."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from app.storage.models import Scope, Tenant
from app.storage.repositories import tenants


def make_tenant(session: Session, name: str | None = None) -> Tenant:
    """A tenant with a unique name."""
    return tenants.create_tenant(session, name or f"tenant-{uuid.uuid4().hex[:8]}")


def make_key(session: Session, tenant: Tenant, *scopes: Scope, name: str = "test") -> str:
    """A key's plaintext for `tenant` (agent scope by default)."""
    _, plaintext = tenants.create_key(session, tenant.id, name, list(scopes) or [Scope.AGENT])
    return plaintext


def auth(key: str) -> dict[str, str]:
    """The Authorization header for `key`."""
    return {"Authorization": f"Bearer {key}"}


def make_step(i: int = 0, **overrides: Any) -> dict[str, Any]:
    """One step of a text-game trajectory."""
    step: dict[str, Any] = {
        "observation": f"You are in the kitchen. The stove is off. A pot sits on shelf {i}.",
        "action": f"take pot from shelf {i}",
    }
    step.update(overrides)
    return step


def make_trajectory(n_steps: int = 3, **overrides: Any) -> dict[str, Any]:
    """A trajectory as an agent would post it."""
    body: dict[str, Any] = {
        "task": "Boil water in the kitchen",
        "domain": "scienceworld",
        "agent_id": "agent-1",
        "session_id": "session-1",
        "steps": [make_step(i) for i in range(n_steps)],
        "outcome": {"success": True, "score": 1.0},
        "metadata": {"env": "test"},
    }
    body.update(overrides)
    return body
