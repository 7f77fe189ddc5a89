"""Erasure of an agent's data and retention: raw runs go, what was learnt stays as anonymous counts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.embedding import get_embedder
from app.evolver import pipeline, tasks
from app.ingestion import erasure
from app.ingestion import service as ingestion
from app.storage.models import (
    AuditLog,
    Experience,
    ExperienceEvidence,
    Scope,
    SituationEmbedding,
    SkillVersion,
    SkillVersionEvidence,
    Tenant,
    Trajectory,
    TrajectoryStep,
    utcnow,
)
from app.storage.repositories.skills import EvidenceRow
from tests.factories import auth, make_key, make_skill, make_step, make_tenant, make_trajectory


def count(db: Session, model: type, *where: object) -> int:
    return db.scalar(select(func.count()).select_from(model).where(*where)) or 0  # type: ignore[arg-type]


def post_runs(db: Session, settings: Settings, tenant: Tenant, agent_id: str, *observations: str) -> list:
    """Store and distil one successful run per observation list entry, for `agent_id`."""
    items = [
        make_trajectory(
            agent_id=agent_id,
            steps=[
                make_step(0, observation=obs),
                make_step(1, observation=f"{obs} The pot is on the stove."),
            ],
        )
        for obs in observations
    ]
    accepted = ingestion.accept(db, tenant.id, items, schedule=False)
    pipeline.process_ingest(db, accepted.event_id, embedder=get_embedder(), settings=settings)
    db.commit()
    return list(accepted.trajectory_ids)


@pytest.fixture
def tenant(db: Session) -> Tenant:
    return make_tenant(db)


@pytest.fixture
def admin(db: Session, tenant: Tenant) -> str:
    key = make_key(db, tenant, Scope.ADMIN, name="admin")
    db.commit()
    return key


SHARED = "You are in the kitchen. A stove, a sink and a pot are here."


class TestEraseAgent:
    def test_removes_runs_steps_and_links_and_keeps_counts(
        self, client: TestClient, db: Session, settings: Settings, tenant: Tenant, admin: str
    ) -> None:
        gone = post_runs(db, settings, tenant, "agent-a", SHARED, "You are in a cellar with a lamp.")
        kept = post_runs(db, settings, tenant, "agent-b", SHARED)
        skill = make_skill(db, tenant, evidence=[EvidenceRow(gone[0], "agent-a", True, 1.0)])
        version_runs = db.scalar(select(SkillVersion.evidence_runs).where(SkillVersion.skill_id == skill.id))
        supports = {e.id: (e.successes, e.distinct_agents) for e in db.scalars(select(Experience))}
        cached = count(db, SituationEmbedding, SituationEmbedding.tenant_id == tenant.id)
        assert supports and cached >= 3

        response = client.delete("/v1/agents/agent-a", headers=auth(admin))
        assert response.status_code == 200, response.text
        report = response.json()
        assert report["trajectories"] == 2 and report["steps"] == 4
        assert report["skill_evidence"] == 1 and report["experience_evidence"] >= 1
        # The cellar situations were agent-a's alone; the shared kitchen one stays cached for agent-b.
        assert report["situation_embeddings"] == 2
        assert report["agent"].startswith("sha256:") and "agent-a" not in report["agent"]

        assert count(db, Trajectory, Trajectory.id.in_(gone)) == 0
        assert count(db, TrajectoryStep, TrajectoryStep.trajectory_id.in_(gone)) == 0
        assert count(db, ExperienceEvidence, ExperienceEvidence.agent_id == "agent-a") == 0
        assert count(db, SkillVersionEvidence, SkillVersionEvidence.agent_id == "agent-a") == 0
        assert count(db, Trajectory, Trajectory.id.in_(kept)) == 1
        assert count(db, SituationEmbedding, SituationEmbedding.tenant_id == tenant.id) == cached - 2
        db.expire_all()
        assert {e.id: (e.successes, e.distinct_agents) for e in db.scalars(select(Experience))} == supports
        assert db.scalar(select(SkillVersion.evidence_runs).where(SkillVersion.skill_id == skill.id)) == (
            version_runs
        )
        listed = client.get("/v1/trajectories", params={"agent_id": "agent-a"}, headers=auth(admin))
        assert listed.json()["items"] == []
        entry = db.scalars(select(AuditLog).where(AuditLog.action == "agent.erased")).one()
        assert entry.target_id == report["agent"] and entry.detail["trajectories"] == 2

    def test_unknown_agent_removes_nothing_and_agents_cannot_erase(
        self, client: TestClient, db: Session, tenant: Tenant, admin: str
    ) -> None:
        response = client.delete("/v1/agents/nobody", headers=auth(admin))
        assert response.status_code == 200 and response.json()["trajectories"] == 0
        agent = make_key(db, tenant, name="agent")
        db.commit()
        assert client.delete("/v1/agents/nobody", headers=auth(agent)).status_code == 403

    def test_other_tenants_are_untouched(
        self, client: TestClient, db: Session, settings: Settings, tenant: Tenant, admin: str
    ) -> None:
        other = make_tenant(db)
        theirs = post_runs(db, settings, other, "agent-a", SHARED)
        assert client.delete("/v1/agents/agent-a", headers=auth(admin)).json()["trajectories"] == 0
        assert count(db, Trajectory, Trajectory.id.in_(theirs)) == 1


class TestRetention:
    def test_expire_removes_only_older_runs(self, db: Session, settings: Settings, tenant: Tenant) -> None:
        ids = post_runs(db, settings, tenant, "agent-a", SHARED, "A garden with a shovel.")
        assert erasure.expire(db, tenant.id, utcnow() - timedelta(days=1)).trajectories == 0
        done = erasure.expire(db, tenant.id, utcnow() + timedelta(seconds=1))
        assert done.trajectories == 2 and count(db, Trajectory, Trajectory.id.in_(ids)) == 0
        assert count(db, Experience, Experience.tenant_id == tenant.id) > 0

    def test_task_does_nothing_when_retention_is_off(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(tasks, "get_settings", lambda: Settings(retention_days=0))
        assert tasks.expire_trajectories.run() == {
            "trajectories": 0,
            "steps": 0,
            "experience_evidence": 0,
            "skill_evidence": 0,
            "situation_embeddings": 0,
        }
