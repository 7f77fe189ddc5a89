"""GET/PATCH/DELETE /v1/experiences: listing, filters, pagination, provenance, review, isolation."""

import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.ingestion import service as ingestion
from app.storage.models import (
    AuditLog,
    Experience,
    ExperienceEvidence,
    ExperienceStatus,
    Polarity,
    Scope,
    Tenant,
    TrajectoryStep,
    utcnow,
)
from tests.factories import auth, make_cluster, make_experience, make_key, make_tenant, make_trajectory


@pytest.fixture
def tenant(db: Session) -> Tenant:
    """A fresh tenant."""
    return make_tenant(db)


@pytest.fixture
def key(db: Session, tenant: Tenant) -> str:
    """An agent key of `tenant`."""
    return make_key(db, tenant, name="agent")


@pytest.fixture
def reviewer(db: Session, tenant: Tenant) -> str:
    """A reviewer key of `tenant`."""
    return make_key(db, tenant, Scope.REVIEWER, name="reviewer")


@pytest.fixture
def admin(db: Session, tenant: Tenant) -> str:
    """An admin key of `tenant`."""
    return make_key(db, tenant, Scope.ADMIN, name="admin")


def listed(client: TestClient, key: str, **params: Any) -> list[str]:
    """Ids of the first page of `GET /v1/experiences` with `params`."""
    response = client.get("/v1/experiences", params=params, headers=auth(key))
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


class TestListing:
    def test_item_shape_and_no_embedding(
        self, client: TestClient, db: Session, tenant: Tenant, key: str
    ) -> None:
        """An item carries action, support and utility; the embedding never leaves the server."""
        row = make_experience(
            db, tenant, action_template="take <task:object> from shelf", action_example="take pot from shelf",
            slots=[{"name": "task", "source": "task", "example": "pot"}],
            successes=3, failures=1, distinct_agents=2, alpha=4.0, beta=2.0,
        )  # fmt: skip
        (item,) = client.get("/v1/experiences", headers=auth(key)).json()["items"]
        assert item["id"] == str(row.id)
        assert item["polarity"] == "do"
        assert item["status"] == "active"
        assert item["action"] == {
            "template": "take <task:object> from shelf",
            "example": "take pot from shelf",
            "slots": [{"name": "task", "source": "task", "example": "pot"}],
        }
        assert item["support"] == {"successes": 3, "failures": 1, "distinct_agents": 2}
        assert item["utility"] == {"alpha": 4.0, "beta": 2.0, "mean": pytest.approx(4 / 6)}
        assert item["text_source"] == "heuristic"
        assert "embedding" not in item and "dedup_key" not in item

    def test_newest_first(self, client: TestClient, db: Session, tenant: Tenant, key: str) -> None:
        """Rows come by created_at, newest first."""
        now = utcnow()
        old = make_experience(db, tenant, created_at=now - timedelta(hours=1))
        new = make_experience(db, tenant, created_at=now)
        assert listed(client, key) == [str(new.id), str(old.id)]

    def test_filters(self, client: TestClient, db: Session, tenant: Tenant, key: str) -> None:
        """polarity, domain, status and cluster_id filter; status defaults to all."""
        cluster = make_cluster(db, tenant)
        do = make_experience(db, tenant, cluster_id=cluster.id)
        avoid = make_experience(db, tenant, polarity=Polarity.AVOID, domain="web")
        retired = make_experience(db, tenant, status=ExperienceStatus.RETIRED)
        assert sorted(listed(client, key)) == sorted(str(r.id) for r in (do, avoid, retired))
        assert listed(client, key, polarity="avoid") == [str(avoid.id)]
        assert listed(client, key, domain="web") == [str(avoid.id)]
        assert listed(client, key, status="retired") == [str(retired.id)]
        assert sorted(listed(client, key, status="active")) == sorted([str(do.id), str(avoid.id)])
        assert listed(client, key, cluster_id=str(cluster.id)) == [str(do.id)]
        assert listed(client, key, polarity="do", domain="web") == []

    def test_bad_filter_value_is_422(self, client: TestClient, key: str) -> None:
        """Enumerated filters refuse other values."""
        response = client.get("/v1/experiences", params={"polarity": "maybe"}, headers=auth(key))
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "validation_error"

    def test_full_text_query(self, client: TestClient, db: Session, tenant: Tenant, key: str) -> None:
        """q matches words of the text, stemmed, and nothing else."""
        stove = make_experience(db, tenant, text="Turn off the stove before leaving the kitchen.")
        make_experience(db, tenant, text="Open the fridge to find the milk.")
        assert listed(client, key, q="stove") == [str(stove.id)]
        assert listed(client, key, q="leave") == [str(stove.id)]
        assert listed(client, key, q="stove -kitchen") == []
        assert listed(client, key, q="microwave") == []

    def test_cursor_pagination_walks_every_row_once(
        self, client: TestClient, db: Session, tenant: Tenant, key: str
    ) -> None:
        """Pages of 2 over 5 rows (two sharing a timestamp): 2, 2, 1, no repeats."""
        now = utcnow()
        rows = [make_experience(db, tenant, created_at=now - timedelta(minutes=i // 2)) for i in range(5)]
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = client.get("/v1/experiences", params=params, headers=auth(key)).json()
            seen += [item["id"] for item in page["items"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 3
        assert sorted(seen) == sorted(str(r.id) for r in rows)
        assert len(set(seen)) == 5

    def test_bad_cursor_is_400(self, client: TestClient, key: str) -> None:
        """A cursor that was not ours: 400 invalid_cursor."""
        response = client.get("/v1/experiences", params={"cursor": "nope"}, headers=auth(key))
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_cursor"


class TestDetail:
    def test_provenance_lists_evidence_newest_first(
        self, client: TestClient, db: Session, tenant: Tenant, key: str
    ) -> None:
        """The detail adds the supporting steps with their trajectory, agent and outcome."""
        accepted = ingestion.accept(db, tenant.id, [make_trajectory(2)])
        (trajectory_id,) = accepted.trajectory_ids
        steps = db.scalars(
            select(TrajectoryStep)
            .where(TrajectoryStep.trajectory_id == trajectory_id)
            .order_by(TrajectoryStep.idx)
        ).all()
        row = make_experience(db, tenant)
        now = utcnow()
        for age, step in enumerate(steps):
            db.add(
                ExperienceEvidence(
                    experience_id=row.id,
                    step_id=step.id,
                    trajectory_id=trajectory_id,
                    tenant_id=tenant.id,
                    agent_id="agent-1",
                    success=True,
                    created_at=now - timedelta(minutes=age),
                )
            )
        db.flush()

        got = client.get(f"/v1/experiences/{row.id}", headers=auth(key)).json()
        assert got["text"] == row.text
        assert [p["step_id"] for p in got["provenance"]] == [str(s.id) for s in steps]
        assert {p["trajectory_id"] for p in got["provenance"]} == {str(trajectory_id)}
        assert all(p["agent_id"] == "agent-1" and p["success"] is True for p in got["provenance"])

    def test_missing_is_404(self, client: TestClient, key: str) -> None:
        """An unknown id: 404 experience_not_found."""
        response = client.get(f"/v1/experiences/{uuid.uuid4()}", headers=auth(key))
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "experience_not_found"


class TestTenantIsolation:
    def test_other_tenants_experience_is_invisible(
        self, client: TestClient, db: Session, tenant: Tenant, key: str, admin: str
    ) -> None:
        """Another tenant's experience is absent from the list and 404 on get, patch and delete."""
        theirs = make_experience(db, make_tenant(db))
        mine = make_experience(db, tenant)
        assert listed(client, key) == [str(mine.id)]
        url = f"/v1/experiences/{theirs.id}"
        responses = [
            client.get(url, headers=auth(admin)),
            client.patch(url, json={"status": "retired"}, headers=auth(admin)),
            client.delete(url, headers=auth(admin)),
        ]
        assert [r.status_code for r in responses] == [404, 404, 404]
        assert {r.json()["error"]["code"] for r in responses} == {"experience_not_found"}
        db.refresh(theirs)
        assert theirs.status == "active"


class TestReview:
    def test_reviewer_retires_and_is_audited(
        self, client: TestClient, db: Session, tenant: Tenant, reviewer: str
    ) -> None:
        """PATCH status by a reviewer: the row changes and the audit log records from/to."""
        row = make_experience(db, tenant)
        before = row.updated_at
        response = client.patch(
            f"/v1/experiences/{row.id}", json={"status": "retired"}, headers=auth(reviewer)
        )
        assert response.status_code == 200
        assert response.json()["status"] == "retired"
        db.refresh(row)
        assert row.status == "retired"
        assert row.updated_at > before
        entry = db.scalars(
            select(AuditLog).where(AuditLog.tenant_id == tenant.id, AuditLog.action == "experience.update")
        ).one()
        assert entry.target_type == "experience"
        assert entry.target_id == str(row.id)
        assert entry.actor.startswith("key:reviewer:")
        assert entry.detail == {"changes": {"status": {"from": "active", "to": "retired"}}}

    def test_new_text_marks_reviewer_as_source(
        self, client: TestClient, db: Session, tenant: Tenant, reviewer: str
    ) -> None:
        """Rewording sets text_source to reviewer."""
        row = make_experience(db, tenant)
        response = client.patch(
            f"/v1/experiences/{row.id}", json={"text": "Take the pot first."}, headers=auth(reviewer)
        )
        assert response.status_code == 200
        assert response.json()["text"] == "Take the pot first."
        assert response.json()["text_source"] == "reviewer"

    def test_agent_key_is_403(self, client: TestClient, db: Session, tenant: Tenant, key: str) -> None:
        """An agent-only key may read but not edit."""
        row = make_experience(db, tenant)
        response = client.patch(f"/v1/experiences/{row.id}", json={"status": "retired"}, headers=auth(key))
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"

    def test_more_than_64_words_is_422(
        self, client: TestClient, db: Session, tenant: Tenant, reviewer: str
    ) -> None:
        """Experience text is at most 64 words."""
        row = make_experience(db, tenant)
        response = client.patch(
            f"/v1/experiences/{row.id}", json={"text": " ".join(["word"] * 65)}, headers=auth(reviewer)
        )
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "validation_error"

    def test_empty_body_is_422(self, client: TestClient, db: Session, tenant: Tenant, reviewer: str) -> None:
        """A PATCH must change something."""
        row = make_experience(db, tenant)
        response = client.patch(f"/v1/experiences/{row.id}", json={}, headers=auth(reviewer))
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "validation_error"


class TestDelete:
    def test_admin_deletes_then_404(
        self, client: TestClient, db: Session, tenant: Tenant, admin: str
    ) -> None:
        """DELETE by an admin answers 204, is audited with the text, and the row is gone."""
        row = make_experience(db, tenant)
        row_id, text = row.id, row.text
        response = client.delete(f"/v1/experiences/{row_id}", headers=auth(admin))
        assert response.status_code == 204
        assert response.content == b""
        assert client.get(f"/v1/experiences/{row_id}", headers=auth(admin)).status_code == 404
        entry = db.scalars(
            select(AuditLog).where(AuditLog.tenant_id == tenant.id, AuditLog.action == "experience.delete")
        ).one()
        assert entry.target_id == str(row_id)
        assert entry.detail["text"] == text

    def test_reviewer_is_403(self, client: TestClient, db: Session, tenant: Tenant, reviewer: str) -> None:
        """Only admins delete; reviewers retire."""
        row = make_experience(db, tenant)
        response = client.delete(f"/v1/experiences/{row.id}", headers=auth(reviewer))
        assert response.status_code == 403
        assert db.get(Experience, row.id) is not None
