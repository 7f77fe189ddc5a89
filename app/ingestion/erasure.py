"""Erasure and retention: remove an agent's (or old) raw trajectories, keep what the library learnt.

What goes: the trajectories, their steps (observations, actions, tool output, step embeddings), the
evidence links that name them (`experience_evidence`, `skill_version_evidence`), and cached
situation embeddings that no remaining step of the tenant shares. What stays: experiences and skill
versions with their counts (support, successes, failures, distinct agents, evidence runs), which no
longer point at anyone. The erasure itself is audited with a hash of the agent id, not the id.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.storage.repositories import audit

BATCH = 500  # trajectories per statement when expiring

# The trajectories to remove are in the temporary table `doomed`; counts first, then one cascade.
_COUNT = """
SELECT
    (SELECT count(*) FROM doomed),
    (SELECT count(*) FROM trajectory_step s JOIN doomed d ON d.id = s.trajectory_id),
    (SELECT count(*) FROM experience_evidence e JOIN doomed d ON d.id = e.trajectory_id),
    (SELECT count(*) FROM skill_version_evidence v JOIN doomed d ON d.id = v.trajectory_id)
"""
# Cached embeddings of situations only these trajectories had (the cache key is the key's SHA-256).
_ORPHAN_SITUATIONS = """
DELETE FROM situation_embedding c
USING (
    SELECT DISTINCT encode(sha256(convert_to(s.situation_key, 'UTF8')), 'hex') AS key_hash
    FROM trajectory_step s JOIN doomed d ON d.id = s.trajectory_id
    WHERE s.situation_key IS NOT NULL
    EXCEPT
    SELECT encode(sha256(convert_to(s.situation_key, 'UTF8')), 'hex')
    FROM trajectory_step s
    WHERE s.tenant_id = :tenant AND s.situation_key IS NOT NULL
      AND s.trajectory_id NOT IN (SELECT id FROM doomed)
) gone
WHERE c.tenant_id = :tenant AND c.key_hash = gone.key_hash
RETURNING c.key_hash
"""


@dataclass
class Erased:
    """What an erasure or expiry removed."""

    trajectories: int = 0
    steps: int = 0
    experience_evidence: int = 0
    skill_evidence: int = 0
    situation_embeddings: int = 0

    def add(self, other: Erased) -> None:
        """Sum another pass into this one."""
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


def erase_agent(session: Session, tenant_id: uuid.UUID, agent_id: str, *, actor: str) -> Erased:
    """Remove every trajectory an agent posted to this tenant; audited by the id's hash."""
    erased = _erase(
        session,
        tenant_id,
        "SELECT id FROM trajectory WHERE tenant_id = :tenant AND agent_id = :agent",
        {"agent": agent_id},
    )
    audit.record(
        session,
        tenant_id,
        actor=actor,
        action="agent.erased",
        target_type="agent",
        target_id=hash_agent(agent_id),
        detail=asdict(erased),
    )
    return erased


def expire(session: Session, tenant_id: uuid.UUID, older_than: datetime, *, limit: int = BATCH) -> Erased:
    """Remove up to `limit` of the tenant's trajectories stored before `older_than` (oldest first)."""
    return _erase(
        session,
        tenant_id,
        "SELECT id FROM trajectory WHERE tenant_id = :tenant AND created_at < :cutoff "
        "ORDER BY created_at LIMIT :limit",
        {"cutoff": older_than, "limit": limit},
    )


def tenants_with_trajectories_before(session: Session, older_than: datetime) -> list[uuid.UUID]:
    """Tenants holding any trajectory stored before `older_than`."""
    rows = session.execute(
        text("SELECT DISTINCT tenant_id FROM trajectory WHERE created_at < :cutoff"), {"cutoff": older_than}
    )
    return [row[0] for row in rows]


def hash_agent(agent_id: str) -> str:
    """How the audit log names an erased agent: enough to match a request, not to read the id."""
    return "sha256:" + hashlib.sha256(agent_id.encode()).hexdigest()[:32]


def _erase(session: Session, tenant_id: uuid.UUID, select_ids: str, params: dict[str, object]) -> Erased:
    session.flush()
    values = {"tenant": tenant_id, **params}
    session.execute(text("DROP TABLE IF EXISTS doomed"))
    session.execute(text(f"CREATE TEMPORARY TABLE doomed ON COMMIT DROP AS {select_ids}"), values)
    trajectories, steps, experience_evidence, skill_evidence = session.execute(text(_COUNT)).one()
    if not trajectories:
        session.execute(text("DROP TABLE doomed"))
        return Erased()
    situations = len(session.execute(text(_ORPHAN_SITUATIONS), {"tenant": tenant_id}).all())
    # Steps and both kinds of evidence go with their trajectory (ON DELETE CASCADE).
    session.execute(text("DELETE FROM trajectory t USING doomed d WHERE t.id = d.id"))
    session.execute(text("DROP TABLE doomed"))
    return Erased(
        trajectories=int(trajectories),
        steps=int(steps),
        experience_evidence=int(experience_evidence),
        skill_evidence=int(skill_evidence),
        situation_embeddings=int(situations),
    )
