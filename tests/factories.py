"""Plain functions that make test data."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from app.storage.models import Experience, Polarity, Scope, StateCluster, Tenant
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


def unit_vector(*head: float) -> list[float]:
    """A 384-dim vector starting with `head`, normalised."""
    values = list(head) + [0.0] * (384 - len(head))
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [v / norm for v in values]


def make_cluster(session: Session, tenant: Tenant, domain: str = "kitchen") -> StateCluster:
    """A state cluster with an arbitrary centroid."""
    cluster = StateCluster(
        id=uuid.uuid4(), tenant_id=tenant.id, domain=domain, centroid=unit_vector(1.0), size=1,
        representative="you are in the kitchen.", embedding_model="test-model",
    )  # fmt: skip
    session.add(cluster)
    # Committed (a savepoint in tests), so a refused request's rollback does not take it away.
    session.commit()
    return cluster


def make_experience(session: Session, tenant: Tenant, **overrides: Any) -> Experience:
    """An active `do` experience of `tenant`; any column may be overridden."""
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "tenant_id": tenant.id,
        "domain": "kitchen",
        "polarity": Polarity.DO,
        "text": "When the pot is on the shelf, do `take pot from shelf` because it raised the score.",
        "action_template": "take pot from shelf",
        "action_example": "take pot from shelf",
        "slots": [],
        "situation": "you are in the kitchen. a pot sits on a shelf.",
        "task": "Boil water in the kitchen",
        "reason": "reward_rose",
        "dedup_key": uuid.uuid4().hex,
        "successes": 1,
        "failures": 0,
        "distinct_agents": 1,
        "alpha": 1.0,
        "beta": 1.0,
        "embedding": unit_vector(1.0),
        "embedding_model": "test-model",
    }
    values.update(overrides)
    row = Experience(**values)
    session.add(row)
    session.commit()
    return row
