"""/v1/skills and /v1/evolve: listing, detail, versions, zip content, rollback, history, isolation, evolve."""

import io
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from skills_ref.validator import validate as reference_validate  # type: ignore[import-untyped]
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.routes import skills as skills_routes
from app.config import Settings
from app.evolver.names import Queue
from app.ingestion import service as ingestion
from app.skills import service
from app.storage.models import AuditLog, Event, EventStatus, Scope, Skill, SkillLevel, SkillStatus, Tenant
from app.storage.repositories import skills as skill_repo
from app.storage.repositories.skills import EvidenceRow
from tests.factories import (
    auth,
    improve_skill,
    make_key,
    make_skill,
    make_tenant,
    make_trajectory,
)


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


@pytest.fixture
def queue(settings: Settings) -> Iterator[redis.Redis]:
    """The Redis holding the job queues, to see what was sent."""
    client = redis.Redis.from_url(settings.require_redis_url())
    yield client
    client.close()


@pytest.fixture
def evidence(db: Session, tenant: Tenant) -> list[EvidenceRow]:
    """Two stored trajectories of `tenant`, one won and one lost, as version evidence."""
    accepted = ingestion.accept(
        db,
        tenant.id,
        [
            make_trajectory(agent_id="agent-1"),
            make_trajectory(agent_id="agent-2", outcome={"success": False, "score": 0.0}),
        ],
    )
    db.commit()
    won, lost = accepted.trajectory_ids
    return [EvidenceRow(won, "agent-1", True, 1.0), EvidenceRow(lost, "agent-2", False, 0.0)]


@pytest.fixture
def skill(db: Session, tenant: Tenant, evidence: list[EvidenceRow]) -> Skill:
    """A skill at version 2 (head), version 1 its parent; version 2 adds a procedure step."""
    row = make_skill(db, tenant, "boil-water", evidence=evidence[:1])
    improve_skill(db, row, evidence=evidence)
    return row


def get_json(client: TestClient, url: str, key: str, **params: Any) -> Any:
    """The JSON of a 200 answer."""
    response = client.get(url, params=params, headers=auth(key))
    assert response.status_code == 200, response.text
    return response.json()


def listed(client: TestClient, key: str, **params: Any) -> list[str]:
    """Ids of the first page of `GET /v1/skills` with `params`."""
    return [item["id"] for item in get_json(client, "/v1/skills", key, **params)["items"]]


def error_code(response: Any) -> str:
    return str(response.json()["error"]["code"])


class TestListing:
    def test_item_shape(self, client: TestClient, skill: Skill, key: str) -> None:
        """An item carries the skill's pointers and utility; no embedding or source key leaves the server."""
        (item,) = get_json(client, "/v1/skills", key)["items"]
        assert item["id"] == str(skill.id)
        assert item["name"] == "boil-water"
        assert item["level"] == "strategy"
        assert item["status"] == "active"
        assert item["trust_tier"] == "T1"
        assert item["domain"] == "kitchen"
        assert (item["head_version"], item["latest_version"]) == (2, 2)
        assert item["description"].startswith("Boil water on a stove.")
        assert item["utility"] == {"alpha": 1.0, "beta": 1.0, "mean": 0.5}
        assert "embedding" not in item and "source_key" not in item

    def test_filters(self, client: TestClient, db: Session, tenant: Tenant, key: str, reviewer: str) -> None:
        """level, domain, status and tier filter; a reviewer sees every skill, an agent active ones."""
        strategy = make_skill(db, tenant)
        atomic = make_skill(db, tenant, level=SkillLevel.ATOMIC, domain="web")
        retired = make_skill(db, tenant, level=SkillLevel.FUNCTIONAL)
        retired.status = SkillStatus.RETIRED
        retired.trust_tier = 3
        db.commit()
        assert sorted(listed(client, reviewer)) == sorted(str(s.id) for s in (strategy, atomic, retired))
        assert sorted(listed(client, key)) == sorted([str(strategy.id), str(atomic.id)])
        assert listed(client, key, level="atomic") == [str(atomic.id)]
        assert listed(client, key, domain="web") == [str(atomic.id)]
        assert listed(client, reviewer, status="retired") == [str(retired.id)]
        assert listed(client, key, status="retired") == []
        assert sorted(listed(client, reviewer, status="active")) == sorted([str(strategy.id), str(atomic.id)])
        assert listed(client, reviewer, tier="T3") == [str(retired.id)]
        assert listed(client, reviewer, tier="vetted") == [str(retired.id)]
        assert listed(client, key, level="atomic", domain="kitchen") == []

    @pytest.mark.parametrize(
        "params", [{"level": "expert"}, {"status": "gone"}, {"limit": 0}, {"tier": "T9"}, {"tier": "trusted"}]
    )
    def test_bad_query_value_is_422(self, client: TestClient, key: str, params: dict[str, Any]) -> None:
        """Enumerated filters and the page size refuse other values."""
        response = client.get("/v1/skills", params=params, headers=auth(key))
        assert response.status_code == 422
        assert error_code(response) == "validation_error"

    def test_cursor_pagination_walks_every_row_once(
        self, client: TestClient, db: Session, tenant: Tenant, key: str
    ) -> None:
        """Pages of 2 over 5 skills: 2, 2, 1, newest first, no repeats."""
        made = [make_skill(db, tenant) for _ in range(5)]
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = get_json(client, "/v1/skills", key, limit=2, **({"cursor": cursor} if cursor else {}))
            seen += [item["id"] for item in page["items"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 3
        assert seen == [str(s.id) for s in reversed(made)]

    def test_bad_cursor_is_400(self, client: TestClient, key: str) -> None:
        """A cursor that was not ours: 400 invalid_cursor."""
        response = client.get("/v1/skills", params={"cursor": "nope"}, headers=auth(key))
        assert response.status_code == 400
        assert error_code(response) == "invalid_cursor"


class TestDetail:
    def test_head_summary_parents_and_children(
        self, client: TestClient, db: Session, tenant: Tenant, skill: Skill, key: str
    ) -> None:
        """The detail adds the head version's hash and evidence, and the skill's place in the hierarchy."""
        child = make_skill(db, tenant, "light-stove", level=SkillLevel.ATOMIC)
        parent = make_skill(db, tenant, "cook-dinner")
        skill_repo.set_links(db, skill.id, [child.id])
        skill_repo.set_links(db, parent.id, [skill.id])
        db.commit()
        got = get_json(client, f"/v1/skills/{skill.id}", key)
        head = service.head(db, skill)
        assert got["head"]["version"] == 2
        assert got["head"]["sha256"] == head.sha256
        assert got["head"]["distiller"] == "heuristic"
        assert got["head"]["evidence"] == {"runs": 2, "successes": 1, "failures": 1}
        assert got["latest_version"] == 2
        assert got["children"] == [{"id": str(child.id), "name": "light-stove", "level": "atomic"}]
        assert got["parents"] == [{"id": str(parent.id), "name": "cook-dinner", "level": "strategy"}]

    def test_missing_is_404(self, client: TestClient, key: str) -> None:
        """An unknown id: 404 skill_not_found."""
        response = client.get(f"/v1/skills/{uuid.uuid4()}", headers=auth(key))
        assert response.status_code == 404
        assert error_code(response) == "skill_not_found"


class TestVersions:
    def test_newest_first_in_pages(self, client: TestClient, db: Session, skill: Skill, key: str) -> None:
        """Versions come newest first; `before` pages down; the head is marked."""
        improve_skill(db, skill, steps=("fill pot with water", "activate stove", "wait"))
        url = f"/v1/skills/{skill.id}/versions"
        first = get_json(client, url, key, limit=2)
        assert [v["version"] for v in first["items"]] == [3, 2]
        assert [v["is_head"] for v in first["items"]] == [True, False]
        assert first["next_before"] == 2
        second = get_json(client, url, key, limit=2, before=first["next_before"])
        assert [v["version"] for v in second["items"]] == [1]
        assert second["next_before"] is None

    def test_version_fields(self, client: TestClient, skill: Skill, key: str) -> None:
        """Each version names its parent, change, author and evidence."""
        v2, v1 = get_json(client, f"/v1/skills/{skill.id}/versions", key)["items"]
        assert (v1["parent_version"], v1["change"], v1["changed_share"]) == (None, "created", 1.0)
        assert (v2["parent_version"], v2["change"]) == (1, "improved")
        assert 0 < v2["changed_share"] < 1
        assert v2["actor"] == "evolver" and v2["distiller"] == "heuristic"
        assert v2["llm_model"] is None and v2["prompt_hash"] is None and v2["rewrite_reason"] is None
        assert v2["evidence"] == {"runs": 2, "successes": 1, "failures": 1}
        assert v1["evidence"] == {"runs": 1, "successes": 1, "failures": 0}
        assert len(v2["sha256"]) == 64 and v2["sha256"] != v1["sha256"]

    def test_by_number_latest_and_head(
        self, client: TestClient, db: Session, tenant: Tenant, skill: Skill, reviewer: str
    ) -> None:
        """A number, `latest` and `head` name versions; after a rollback head and latest differ."""
        service.rollback(db, tenant.id, skill.id, to_version=1, expected_head=2, actor="test")
        db.commit()
        url = f"/v1/skills/{skill.id}/versions"
        latest = get_json(client, f"{url}/latest", reviewer)
        head = get_json(client, f"{url}/head", reviewer)
        assert latest["version"] == 2 and latest["is_head"] is False
        assert head["version"] == 1 and head["is_head"] is True
        assert get_json(client, f"{url}/2", reviewer) == latest
        assert get_json(client, f"{url}/1", reviewer) == head

    def test_detail_has_content_diff_and_evidence(
        self, client: TestClient, skill: Skill, reviewer: str, evidence: list[EvidenceRow]
    ) -> None:
        """The full SKILL.md, the diff against the parent and the trajectories behind the version."""
        got = get_json(client, f"/v1/skills/{skill.id}/versions/2", reviewer)
        assert got["content"].startswith("---\nname: boil-water\n")
        assert "1. `fill pot with water`" in got["content"]
        assert got["diff"].startswith("--- v1/SKILL.md\n+++ v2/SKILL.md\n")
        assert "+1. `fill pot with water`" in got["diff"]
        assert got["files"] == {}
        assert sorted(got["evidence_items"], key=lambda e: e["agent_id"]) == [
            {"trajectory_id": str(e.trajectory_id), "agent_id": e.agent_id, "success": e.success,
             "score": e.score}
            for e in evidence
        ]  # fmt: skip
        assert get_json(client, f"/v1/skills/{skill.id}/versions/1", reviewer)["diff"] == ""

    @pytest.mark.parametrize("suffix", ["", "/content"])
    @pytest.mark.parametrize("word", ["newest", "-1", "1.0", "v2", "２"])
    def test_bad_version_word_is_400(
        self, client: TestClient, skill: Skill, key: str, word: str, suffix: str
    ) -> None:
        """Anything but digits, `latest` or `head`: 400 invalid_version, for the content too."""
        response = client.get(f"/v1/skills/{skill.id}/versions/{word}{suffix}", headers=auth(key))
        assert response.status_code == 400, response.text
        assert error_code(response) == "invalid_version"

    @pytest.mark.parametrize("number", ["0", "3", "9999999999", "9" * 5000])
    def test_unknown_version_is_404(self, client: TestClient, skill: Skill, key: str, number: str) -> None:
        """A number the skill never had: 404 skill_version_not_found."""
        response = client.get(f"/v1/skills/{skill.id}/versions/{number}", headers=auth(key))
        assert response.status_code == 404
        assert error_code(response) == "skill_version_not_found"


class TestContent:
    def test_zip_unzips_into_a_valid_skill_folder(
        self, client: TestClient, db: Session, tenant: Tenant, reviewer: str, tmp_path: Path
    ) -> None:
        """`<name>/SKILL.md` and the files, in a folder the reference validator accepts."""
        skill = make_skill(db, tenant, "boil-water", files={"scripts/boil.sh": "echo boil\n"})
        response = client.get(f"/v1/skills/{skill.id}/versions/head/content", headers=auth(reviewer))
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/zip"
        assert response.headers["content-disposition"] == 'attachment; filename="boil-water-v1.zip"'
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            assert sorted(archive.namelist()) == ["boil-water/SKILL.md", "boil-water/scripts/boil.sh"]
            archive.extractall(tmp_path)
        folder = tmp_path / "boil-water"
        assert reference_validate(folder) == []
        assert (folder / "SKILL.md").read_text() == service.head(db, skill).content
        assert (folder / "scripts" / "boil.sh").read_text() == "echo boil\n"

    def test_same_version_same_bytes(self, client: TestClient, skill: Skill, reviewer: str) -> None:
        """A version's zip is reproducible, and a number and `latest` name the same one."""
        url = f"/v1/skills/{skill.id}/versions"
        first = client.get(f"{url}/2/content", headers=auth(reviewer))
        again = client.get(f"{url}/latest/content", headers=auth(reviewer))
        assert first.content == again.content
        older = client.get(f"{url}/1/content", headers=auth(reviewer))
        assert older.headers["content-disposition"].endswith('filename="boil-water-v1.zip"')
        assert older.content != first.content


class TestRollback:
    def test_moves_head_back_and_keeps_every_version(
        self, client: TestClient, db: Session, tenant: Tenant, skill: Skill, reviewer: str
    ) -> None:
        """A reviewer's rollback points the head at v1, lists both versions and is audited."""
        response = client.post(
            f"/v1/skills/{skill.id}/rollback",
            json={"to_version": 1, "expected_head": 2, "reason": "v2 broke the kettle runs"},
            headers=auth(reviewer),
        )
        assert response.status_code == 200, response.text
        got = response.json()
        assert (got["head_version"], got["latest_version"], got["head"]["version"]) == (1, 2, 1)
        versions = get_json(client, f"/v1/skills/{skill.id}/versions", reviewer)["items"]
        assert [(v["version"], v["is_head"]) for v in versions] == [(2, False), (1, True)]
        entry = db.scalars(
            select(AuditLog).where(AuditLog.tenant_id == tenant.id, AuditLog.action == "skill.rolled_back")
        ).one()
        assert entry.target_id == str(skill.id)
        assert entry.actor.startswith("key:reviewer:")
        assert entry.detail == {"from_version": 2, "to_version": 1, "reason": "v2 broke the kettle runs"}

    def test_admin_may_roll_back_without_expected_head(
        self, client: TestClient, skill: Skill, admin: str
    ) -> None:
        """`expected_head` is optional; admin keys have every scope."""
        response = client.post(f"/v1/skills/{skill.id}/rollback", json={"to_version": 1}, headers=auth(admin))
        assert response.status_code == 200
        assert response.json()["head_version"] == 1

    def test_stale_expected_head_is_409(
        self, client: TestClient, db: Session, skill: Skill, reviewer: str
    ) -> None:
        """The head moved since the caller read it: 409 version_conflict, nothing changes."""
        response = client.post(
            f"/v1/skills/{skill.id}/rollback",
            json={"to_version": 1, "expected_head": 1},
            headers=auth(reviewer),
        )
        assert response.status_code == 409
        assert error_code(response) == "version_conflict"
        assert response.json()["error"]["detail"] == {"expected_head": 1, "head": 2}
        db.refresh(skill)
        assert skill.head_version == 2

    def test_unknown_version_is_404(self, client: TestClient, skill: Skill, reviewer: str) -> None:
        """A version the skill never had: 404 skill_version_not_found."""
        response = client.post(
            f"/v1/skills/{skill.id}/rollback", json={"to_version": 7}, headers=auth(reviewer)
        )
        assert response.status_code == 404
        assert error_code(response) == "skill_version_not_found"

    def test_agent_key_is_403(self, client: TestClient, db: Session, skill: Skill, key: str) -> None:
        """An agent-only key may read skills but not roll them back."""
        response = client.post(f"/v1/skills/{skill.id}/rollback", json={"to_version": 1}, headers=auth(key))
        assert response.status_code == 403
        assert error_code(response) == "forbidden"
        db.refresh(skill)
        assert skill.head_version == 2

    @pytest.mark.parametrize(
        ("body", "status"),
        [({}, 422), ({"to_version": 0}, 422), ({"to_version": 1, "extra": 1}, 422),
         ({"to_version": 1, "reason": "x" * 1001}, 413)],
    )  # fmt: skip
    def test_bad_body(
        self, client: TestClient, skill: Skill, reviewer: str, body: dict[str, Any], status: int
    ) -> None:
        """A missing or non-positive version and unknown fields: 422; an overlong reason: 413."""
        response = client.post(f"/v1/skills/{skill.id}/rollback", json=body, headers=auth(reviewer))
        assert response.status_code == status, response.text


class TestHistory:
    def test_created_improved_rolled_back_newest_first(
        self, client: TestClient, skill: Skill, reviewer: str
    ) -> None:
        """Every change with its actor and versions; events that wrote a version carry its diff."""
        client.post(
            f"/v1/skills/{skill.id}/rollback", json={"to_version": 1, "reason": "regressed"},
            headers=auth(reviewer),
        )  # fmt: skip
        items = get_json(client, f"/v1/skills/{skill.id}/history", reviewer)["items"]
        assert [(e["kind"], e["from_version"], e["to_version"]) for e in items] == [
            ("rolled_back", 2, 1),
            ("improved", 1, 2),
            ("created", None, 1),
        ]
        rolled, improved, created = items
        assert rolled["actor"].startswith("key:reviewer:") and rolled["reason"] == "regressed"
        assert rolled["diff"] is None
        assert improved["actor"] == "evolver" and improved["reason"] == "new evidence"
        assert improved["detail"]["evidence_runs"] == 2
        assert "+1. `fill pot with water`" in improved["diff"]
        assert improved["diff_truncated"] is False
        assert created["diff"] == ""

    def test_cursor_pages_and_long_diffs_are_cut(
        self, client: TestClient, skill: Skill, reviewer: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """One event a page, newest first; a diff over the limit is cut and flagged."""
        monkeypatch.setattr(skills_routes, "MAX_HISTORY_DIFF_CHARS", 20)
        url = f"/v1/skills/{skill.id}/history"
        first = get_json(client, url, reviewer, limit=1)
        (improved,) = first["items"]
        assert improved["kind"] == "improved"
        assert len(improved["diff"]) == 20 and improved["diff_truncated"] is True
        second = get_json(client, url, reviewer, limit=1, cursor=first["next_cursor"])
        assert [e["kind"] for e in second["items"]] == ["created"]
        assert second["next_cursor"] is None


class TestTenantIsolation:
    def test_other_tenants_skill_is_invisible(
        self, client: TestClient, db: Session, tenant: Tenant, skill: Skill, admin: str
    ) -> None:
        """Another tenant's skill is absent from the list and 404 on every path, rollback included."""
        theirs = make_skill(db, make_tenant(db), "boil-water")
        assert listed(client, admin) == [str(skill.id)]
        base = f"/v1/skills/{theirs.id}"
        responses = [
            client.get(base, headers=auth(admin)),
            client.get(f"{base}/versions", headers=auth(admin)),
            client.get(f"{base}/versions/1", headers=auth(admin)),
            client.get(f"{base}/versions/head/content", headers=auth(admin)),
            client.get(f"{base}/history", headers=auth(admin)),
            client.post(f"{base}/rollback", json={"to_version": 1}, headers=auth(admin)),
        ]
        assert [r.status_code for r in responses] == [404] * 6
        assert {error_code(r) for r in responses} == {"skill_not_found"}


class TestEvolve:
    def test_admin_queues_a_cycle(
        self, client: TestClient, db: Session, tenant: Tenant, admin: str, queue: redis.Redis
    ) -> None:
        """202 with a PENDING `skills.evolve` event, one job on the skills queue, and an audit entry."""
        before = queue.llen(Queue.SKILLS.value)
        response = client.post("/v1/evolve", headers=auth(admin))
        assert response.status_code == 202
        accepted = response.json()
        assert accepted["status"] == "queued"
        event = db.get(Event, uuid.UUID(accepted["event_id"]))
        assert event is not None
        assert (event.tenant_id, event.kind, event.status) == (
            tenant.id,
            "skills.evolve",
            EventStatus.PENDING,
        )
        polled = get_json(client, f"/v1/events/{accepted['event_id']}", admin)
        assert (polled["kind"], polled["status"]) == ("skills.evolve", "PENDING")
        assert queue.llen(Queue.SKILLS.value) == before + 1
        entry = db.scalars(
            select(AuditLog).where(
                AuditLog.tenant_id == tenant.id, AuditLog.action == "skills.evolve_requested"
            )
        ).one()
        assert entry.actor.startswith("key:admin:") and entry.target_id == accepted["event_id"]

    def test_reviewer_is_403(self, client: TestClient, reviewer: str, queue: redis.Redis) -> None:
        """Only admins start a cycle; nothing is sent."""
        before = queue.llen(Queue.SKILLS.value)
        response = client.post("/v1/evolve", headers=auth(reviewer))
        assert response.status_code == 403
        assert queue.llen(Queue.SKILLS.value) == before
