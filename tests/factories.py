"""Plain functions that make test data."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from app.skill_md import EVIDENCE, PROCEDURE, WHEN_TO_USE, Section, SkillDocument
from app.skills import service as skill_service
from app.storage.models import (
    Experience,
    Polarity,
    ReviewState,
    Scope,
    Skill,
    SkillEventKind,
    SkillLevel,
    SkillVersion,
    StateCluster,
    Tenant,
)
from app.storage.repositories import skills as skill_repo
from app.storage.repositories import tenants
from app.storage.repositories.skills import EvidenceRow


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


# Skills (issue 4); imported here so the factories above stay untouched. Hoist when convenient.


EVOLVER = skill_service.Authorship(actor="evolver", distiller="heuristic")


def skill_doc(
    name: str, *, steps: tuple[str, ...] = ("activate stove",), description: str = ""
) -> SkillDocument:
    """A valid SKILL.md document whose procedure is `steps`."""
    return SkillDocument(
        name=name,
        description=description or f"Boil water on a stove. Use when a task asks for {name}.",
        metadata={"domain": "kitchen"},
        sections=(
            Section(WHEN_TO_USE, "- The task names water and heat."),
            Section(PROCEDURE, "\n".join(f"{i}. `{step}`" for i, step in enumerate(steps, start=1))),
            Section(EVIDENCE, f"{len(steps)} steps."),
        ),
    )


def make_skill(
    session: Session,
    tenant: Tenant,
    name: str | None = None,
    *,
    level: SkillLevel = SkillLevel.STRATEGY,
    domain: str = "kitchen",
    evidence: Sequence[EvidenceRow] = (),
    files: dict[str, str] | None = None,
) -> Skill:
    """A skill of `tenant` with version 1, written by the service as the evolver would."""
    name = name or f"boil-water-{uuid.uuid4().hex[:6]}"
    doc = skill_doc(name)
    skill = skill_repo.add_skill(
        session, tenant_id=tenant.id, domain=domain, name=name, level=level, source_key=f"test:{name}",
        task_cluster_id=None, description=doc.description, embedding=unit_vector(1.0),
        embedding_model="test-model",
    )  # fmt: skip
    skill_service.write_version(
        session, skill, doc, expected_head=0, change=SkillEventKind.CREATED, author=EVOLVER,
        evidence=evidence, files=files, reason="a test skill",
    )  # fmt: skip
    session.commit()
    return skill


def improve_skill(
    session: Session,
    skill: Skill,
    *,
    steps: tuple[str, ...] = ("fill pot with water", "activate stove"),
    evidence: Sequence[EvidenceRow] = (),
) -> SkillVersion:
    """Write the next version of `skill` with a new procedure (a real diff against its head)."""
    row = skill_service.write_version(
        session, skill, skill_doc(skill.name, steps=steps), expected_head=skill.head_version,
        change=SkillEventKind.IMPROVED, author=EVOLVER, evidence=evidence, reason="new evidence",
    )  # fmt: skip
    assert row is not None
    session.commit()
    return row


REVIEWER = "key:fixture-reviewer"


def review_all(session: Session, skill: Skill) -> Skill:
    """Accept every pending version of `skill` as a reviewer would (T2), keeping its head where it was."""
    from app.governance import review  # the gate and review service, as the API calls them

    head = skill.head_version
    for number in range(1, skill.latest_version + 1):
        version = skill_repo.version(session, skill.id, number)
        if version is not None and version.review == ReviewState.PENDING:
            review.accept(session, skill.tenant_id, skill.id, number, actor=REVIEWER, reason="fixture",
                          publish=number == head)  # fmt: skip
    session.commit()
    return skill
