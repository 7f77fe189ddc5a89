"""Tenant isolation as a property: random data across tenants, random keys, every read endpoint.

Whatever a tenant holds and whichever of its keys asks, no list, detail, count or retrieval answer
names another tenant's object, and another tenant's id answers 404 as if it did not exist.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from app.ingestion import service as ingestion
from app.storage.models import Scope, Tenant
from tests.factories import (
    auth,
    make_experience,
    make_key,
    make_skill,
    make_tenant,
    make_trajectory,
    review_all,
    unit_vector,
)

SCOPES = (Scope.AGENT, Scope.REVIEWER, Scope.ADMIN)
Spec = tuple[int, int, int, int]  # trajectories, experiences, skills, index of the key's scope


@dataclass
class Holding:
    """One tenant's objects and a key of it."""

    tenant: Tenant
    key: str
    scope: Scope
    trajectories: set[str] = field(default_factory=set)
    events: set[str] = field(default_factory=set)
    experiences: set[str] = field(default_factory=set)
    skills: set[str] = field(default_factory=set)

    def owned(self) -> set[str]:
        return self.trajectories | self.events | self.experiences | self.skills


def build(db: Session, spec: Spec) -> Holding:
    n_traj, n_exp, n_skill, scope_index = spec
    tenant = make_tenant(db)
    scope = SCOPES[scope_index]
    holding = Holding(tenant, make_key(db, tenant, scope, name=f"k-{scope.value}"), scope)
    if n_traj:
        accepted = ingestion.accept(
            db, tenant.id, [make_trajectory(2) for _ in range(n_traj)], schedule=False
        )
        holding.trajectories = {str(i) for i in accepted.trajectory_ids}
        holding.events = {str(accepted.event_id)}
    for i in range(n_exp):
        holding.experiences.add(str(make_experience(db, tenant, embedding=unit_vector(1.0, 0.1 * i)).id))
    for _ in range(n_skill):
        holding.skills.add(str(review_all(db, make_skill(db, tenant)).id))
    db.commit()
    return holding


def ids_in(value: Any) -> set[str]:
    """Every string in a JSON answer that parses as a UUID."""
    found: set[str] = set()
    if isinstance(value, dict):
        for item in value.values():
            found |= ids_in(item)
    elif isinstance(value, list):
        for item in value:
            found |= ids_in(item)
    elif isinstance(value, str):
        try:
            found.add(str(uuid.UUID(value)))
        except ValueError:
            pass
    return found


def reads(holding: Holding) -> list[str]:
    """Every read endpoint a key of this scope may call, over its own objects."""
    urls = ["/v1/trajectories?limit=200", "/v1/experiences?limit=200", "/v1/skills?limit=200", "/v1/ping"]
    urls += [f"/v1/trajectories/{i}" for i in holding.trajectories]
    urls += [f"/v1/events/{i}" for i in holding.events]
    urls += [f"/v1/experiences/{i}" for i in holding.experiences]
    urls += [f"/v1/experiences/{i}/stats" for i in holding.experiences]
    for i in holding.skills:
        urls += [f"/v1/skills/{i}", f"/v1/skills/{i}/versions", f"/v1/skills/{i}/versions/head",
                 f"/v1/skills/{i}/history", f"/v1/skills/{i}/stats"]  # fmt: skip
    if holding.scope != Scope.AGENT:
        urls += ["/v1/review/queue?limit=200", "/v1/audit?limit=200"]
        urls += [f"/v1/skills/{i}/versions/1/scan" for i in holding.skills]
    if holding.scope == Scope.ADMIN:
        urls += ["/v1/keys"]
    return urls


def foreign_reads(other: Holding) -> list[str]:
    """Detail URLs of another tenant's objects."""
    urls = [f"/v1/trajectories/{i}" for i in other.trajectories]
    urls += [f"/v1/events/{i}" for i in other.events]
    urls += [f"/v1/experiences/{i}" for i in other.experiences]
    urls += [f"/v1/experiences/{i}/stats" for i in other.experiences]
    for i in other.skills:
        urls += [
            f"/v1/skills/{i}",
            f"/v1/skills/{i}/versions",
            f"/v1/skills/{i}/history",
            f"/v1/skills/{i}/stats",
        ]
    return urls


specs = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)),
    min_size=2,
    max_size=3,
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=specs)
def test_no_answer_names_another_tenants_object(client: TestClient, db: Session, specs: list[Spec]) -> None:
    holdings = [build(db, spec) for spec in specs]
    everyone = set().union(*(h.owned() for h in holdings))
    for holding in holdings:
        foreign = everyone - holding.owned()
        for url in reads(holding):
            response = client.get(url, headers=auth(holding.key))
            assert response.status_code == 200, (url, response.text)
            leaked = ids_in(response.json()) & foreign
            assert not leaked, (url, leaked)
        listed = client.get("/v1/trajectories?limit=200", headers=auth(holding.key)).json()["items"]
        assert {t["id"] for t in listed} == holding.trajectories
        listed = client.get("/v1/experiences?limit=200", headers=auth(holding.key)).json()["items"]
        assert {e["id"] for e in listed} == holding.experiences
        listed = client.get("/v1/skills?limit=200", headers=auth(holding.key)).json()["items"]
        assert {s["id"] for s in listed} == holding.skills
        answer = client.post(
            "/v1/retrieve",
            json={
                "task": "Boil water",
                "observation": "You are in the kitchen.",
                "top_k": 50,
                "token_budget": 8000,
            },
            headers=auth(holding.key),
        )
        if holding.scope == Scope.REVIEWER:
            assert answer.status_code == 403  # retrieve is for agents (and admins)
        else:
            assert answer.status_code == 200, answer.text
            assert {i["id"] for i in answer.json()["items"]} <= holding.experiences | holding.skills
        for other in holdings:
            if other is holding:
                continue
            for url in foreign_reads(other):
                response = client.get(url, headers=auth(holding.key))
                assert response.status_code == 404, (url, response.status_code)
