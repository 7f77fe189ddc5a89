"""The Python client (clients/python) against the real app and database, and its retries on a loopback server.

Sync clients reach the app through the starlette TestClient (an httpx2 client, so a small transport
hands requests over); async clients through httpx's ASGITransport on the same app.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import util
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from skillfoundry_client import (
    AgentSession,
    APIConnectionError,
    APITimeoutError,
    AsyncAgentSession,
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    SkillfoundryError,
    ValidationError,
    format_guidance,
    parse_retry_after,
)
from skillfoundry_client.agent import estimate_tokens
from skillfoundry_client.models import Retrieval, RetrievedItem
from sqlalchemy.orm import Session

from app import skill_md
from app.api.deps import get_app_settings
from app.api.routes.retrieve import get_log_sessions
from app.config import Settings
from app.embedding import SentenceTransformerEmbedder, get_embedder
from app.evolver.normalize import normalize_observation
from app.skills import service as skill_service
from app.storage.models import (
    Experience,
    Polarity,
    Scope,
    Skill,
    SkillEventKind,
    SkillLevel,
    StateCluster,
    Tenant,
)
from app.storage.repositories import skills as skill_repo
from app.storage.repositories.skills import EvidenceRow
from tests.factories import (
    EVOLVER,
    improve_skill,
    make_cluster,
    make_experience,
    make_key,
    make_skill,
    make_step,
    make_tenant,
    make_trajectory,
    skill_doc,
)
from tests.openai_server import completion, running

EXAMPLE = Path(__file__).resolve().parents[1] / "clients" / "python" / "examples" / "openai_agent.py"
BASE = "http://testserver"
TASK = "Your task is to boil water."
KITCHEN = (
    "This room is called the kitchen. In it, you see: a stove, which is turned off. a sink. a pot (120 g)."
)
# Tests of the app should not wait on backoff: retries are the loopback tests' business.
NO_RETRY = RetryPolicy(max_retries=0)


class AppTransport(httpx.BaseTransport):
    """Hands httpx requests to the app through the starlette TestClient, which speaks httpx2."""

    def __init__(self, app_client: TestClient) -> None:
        self.app_client = app_client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.app_client.request(
            request.method, str(request.url), content=request.read(), headers=request.headers.multi_items()
        )
        headers = [(k, v) for k, v in answer.headers.multi_items() if k.lower() != "content-encoding"]
        return httpx.Response(answer.status_code, headers=headers, content=answer.content, request=request)


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    """The real embedding model, as the app uses it."""
    return get_embedder()


@contextmanager
def _unit_of_work(db: Session) -> Iterator[Session]:
    try:
        yield db
        db.commit()
    except BaseException:
        db.rollback()
        raise


@pytest.fixture
def api(client: TestClient, db: Session, settings: Settings) -> TestClient:
    """The app, logging retrievals in the test's transaction and never withholding an item."""

    def sessions() -> AbstractContextManager[Session]:
        return _unit_of_work(db)

    client.app.dependency_overrides[get_log_sessions] = lambda: sessions
    changed = settings.model_copy(update={"retrieval_withhold_share": 0.0})
    client.app.dependency_overrides[get_app_settings] = lambda: changed
    return client


@pytest.fixture
def connect(api: TestClient) -> Iterator[Callable[[str], Client]]:
    """Clients of the app with a given key; closed after the test."""
    made: list[Client] = []

    def make(key: str) -> Client:
        made.append(Client(BASE, key, transport=AppTransport(api), retry=NO_RETRY))
        return made[-1]

    yield make
    for sf in made:
        sf.close()


@pytest.fixture
def tenant(db: Session) -> Tenant:
    """A fresh tenant."""
    return make_tenant(db)


@pytest.fixture
def agent(connect: Callable[[str], Client], db: Session, tenant: Tenant) -> Client:
    """A client with an agent key."""
    return connect(make_key(db, tenant, Scope.AGENT, name="agent"))


@pytest.fixture
def reviewer(connect: Callable[[str], Client], db: Session, tenant: Tenant) -> Client:
    """A client with a reviewer key."""
    return connect(make_key(db, tenant, Scope.REVIEWER, name="reviewer"))


@pytest.fixture
def admin(connect: Callable[[str], Client], db: Session, tenant: Tenant) -> Client:
    """A client with an admin key."""
    return connect(make_key(db, tenant, Scope.ADMIN, name="admin"))


@pytest.fixture
def skill(db: Session, tenant: Tenant, agent: Client) -> Skill:
    """A skill at version 2 (head) over version 1, with a won and a lost run as evidence."""
    accepted = agent.create_trajectories(
        [make_trajectory(agent_id="agent-1"), make_trajectory(agent_id="agent-2", outcome={"success": False})]
    )
    won, lost = (uuid.UUID(i) for i in accepted.ids)
    row = make_skill(db, tenant, "boil-water", evidence=[EvidenceRow(won, "agent-1", True, 1.0)])
    improve_skill(
        db, row, evidence=[EvidenceRow(won, "agent-1", True, 1.0), EvidenceRow(lost, "agent-2", False, 0.0)]
    )
    return row


@dataclass
class Library:
    """A kitchen library: a strategy and an atomic skill, a `do` and an `avoid` lesson, and an agent key."""

    tenant: Tenant
    key: str
    boil: Skill
    stove: Skill
    do: Experience
    avoid: Experience


@pytest.fixture
def lib(db: Session, embedder: SentenceTransformerEmbedder) -> Library:
    """The kitchen library of a fresh tenant, embedded by the real model."""
    tenant = make_tenant(db)
    situation = normalize_observation(KITCHEN)
    centroid = embedder.embed_documents([situation])[0]
    cluster = StateCluster(
        id=uuid.uuid4(), tenant_id=tenant.id, domain="kitchen", centroid=centroid, size=1,
        representative=situation, embedding_model=embedder.model_name,
    )  # fmt: skip
    db.add(cluster)
    db.commit()

    def lesson(text: str, template: str, polarity: Polarity) -> Experience:
        return make_experience(
            db, tenant, text=text, action_template=template, action_example=template, cluster_id=cluster.id,
            polarity=polarity, embedding=embedder.embed_documents([text])[0],
            embedding_model=embedder.model_name,
        )  # fmt: skip

    def skill(name: str, description: str, level: SkillLevel, steps: tuple[str, ...]) -> Skill:
        doc = skill_doc(name, steps=steps, description=description)
        row = skill_repo.add_skill(
            db, tenant_id=tenant.id, domain="kitchen", name=name, level=level, source_key=f"test:{name}",
            task_cluster_id=None, description=doc.description,
            embedding=embedder.embed_documents([f"{name}: {doc.description}"])[0],
            embedding_model=embedder.model_name,
        )  # fmt: skip
        skill_service.write_version(
            db, row, doc, expected_head=0, change=SkillEventKind.CREATED, author=EVOLVER, evidence=(),
            reason="test",
        )  # fmt: skip
        db.commit()
        return row

    return Library(
        tenant=tenant,
        key=make_key(db, tenant, Scope.AGENT),
        boil=skill(
            "boil-water",
            "Boil water: fill a pot at the sink, put it on the stove and activate the stove. "
            "Use when a task asks to boil water.",
            SkillLevel.STRATEGY,
            ("fill pot with water", "move pot to stove", "activate stove"),
        ),
        stove=skill(
            "activate-stove",
            "Turn on a stove so the pot on it heats. Use when a stove is off.",
            SkillLevel.ATOMIC,
            ("activate stove",),
        ),
        do=lesson(
            "When the stove is off and the pot holds water, do `activate stove` because it heats the water.",
            "activate stove",
            Polarity.DO,
        ),
        avoid=lesson(
            "When the stove is off in the kitchen, avoid `focus on milk` because the task is to boil water.",
            "focus on milk",
            Polarity.AVOID,
        ),
    )


def accept_head(connect: Callable[[str], Client], db: Session, lib: Library, skill: Skill) -> None:
    """A reviewer accepts the skill's head (T2), so agents may read its body."""
    reviewer = connect(make_key(db, lib.tenant, Scope.REVIEWER, name="reviewer"))
    assert reviewer.accept_version(str(skill.id), "head", reason="read it").applied


class TestKeys:
    def test_ping_create_list_revoke(self, admin: Client, connect: Callable[[str], Client]) -> None:
        """A created key works until it is revoked, then answers 401 `unauthorized`."""
        me = admin.ping()
        assert me.scopes == ["admin"] and me.key_name == "admin"
        created = admin.create_key("bot", ["agent"])
        assert created.key.startswith("sf_") and created.scopes == ["agent"] and created.revoked_at is None
        bot = connect(created.key)
        assert bot.ping().key_id == created.id
        assert created.id in [k.id for k in admin.list_keys()]
        revoked = admin.revoke_key(created.id)
        assert revoked.revoked_at is not None
        assert created.id not in [k.id for k in admin.list_keys()]
        assert created.id in [k.id for k in admin.list_keys(include_revoked=True)]
        with pytest.raises(AuthenticationError) as caught:
            bot.ping()
        assert (caught.value.status, caught.value.code) == (401, "unauthorized")

    def test_raw_request(self, agent: Client) -> None:
        """`request` reaches any endpoint and gives its JSON."""
        assert agent.request("GET", "/v1/ping")["scopes"] == ["agent"]


class TestTrajectories:
    def test_create_read_and_poll(self, agent: Client) -> None:
        """One trajectory goes in with its steps and outcome; its event is PENDING until a worker runs."""
        accepted = agent.create_trajectory(
            task="Boil water", agent_id="agent-1", domain="kitchen", session_id="s-1",
            steps=[{"observation": "The stove is off.", "action": "activate stove", "reward": 0.5}],
            outcome={"success": True, "score": 1.0}, metadata={"env": "test"},
        )  # fmt: skip
        assert len(accepted.ids) == 1 and accepted.status == "queued" and accepted.replayed is False
        got = agent.get_trajectory(accepted.ids[0])
        assert (got.task, got.domain, got.session_id, got.metadata) == (
            "Boil water",
            "kitchen",
            "s-1",
            {"env": "test"},
        )
        assert got.outcome.success is True and got.outcome.score == 1.0 and got.step_count == 1
        assert got.steps[0].action == "activate stove" and got.steps[0].reward == 0.5
        assert got.event_id == accepted.event_id and got.created_at.tzinfo is not None
        event = agent.get_event(accepted.event_id)
        assert event.status == "PENDING" and not event.done
        with pytest.raises(APITimeoutError, match="PENDING"):
            agent.wait_for_event(accepted.event_id, timeout=0.1, interval=0.05)

    def test_batch_and_idempotency(self, agent: Client) -> None:
        """A batch gives one id per trajectory; the same Idempotency-Key replays the first answer."""
        batch = [make_trajectory(agent_id=f"agent-{i}") for i in range(3)]
        first = agent.create_trajectories(batch, idempotency_key="batch-1")
        again = agent.create_trajectories(batch, idempotency_key="batch-1")
        assert len(first.ids) == 3 and again.ids == first.ids and again.replayed is True
        with pytest.raises(ConflictError) as caught:
            agent.create_trajectories(batch[:1], idempotency_key="batch-1")
        assert caught.value.code == "idempotency_key_reused"

    def test_pages_and_filters(self, agent: Client) -> None:
        """iter_trajectories follows next_cursor across pages, newest first; filters reach the server."""
        ids = [agent.create_trajectory(**_trajectory(agent_id="pager")).ids[0] for _ in range(5)]
        agent.create_trajectory(**_trajectory(agent_id="other", outcome={"success": False}))
        first = agent.list_trajectories(agent_id="pager", limit=2)
        assert len(first.items) == 2 and first.next_cursor is not None
        assert [t.id for t in agent.iter_trajectories(agent_id="pager", page_size=2)] == ids[::-1]
        assert [t.agent_id for t in agent.iter_trajectories(outcome="failure")] == ["other"]
        since = datetime.now(UTC) - timedelta(hours=1)
        assert len(list(agent.iter_trajectories(since=since, page_size=50))) == 6


class TestExperiences:
    def test_list_read_edit_stats_delete(
        self, db: Session, tenant: Tenant, agent: Client, reviewer: Client, admin: Client
    ) -> None:
        """Every experience endpoint, with the scopes each needs."""
        cluster = make_cluster(db, tenant)
        rows = [make_experience(db, tenant, cluster_id=cluster.id) for _ in range(3)]
        listed = list(agent.iter_experiences(page_size=2))
        assert {e.id for e in listed} == {str(r.id) for r in rows}
        assert listed[0].action.template == "take pot from shelf" and listed[0].utility.mean == 0.5
        assert agent.list_experiences(polarity="avoid").items == []
        assert len(agent.list_experiences(cluster_id=str(cluster.id), limit=1).items) == 1
        target = str(rows[0].id)
        assert agent.get_experience(target).provenance == []
        with pytest.raises(PermissionDeniedError) as caught:
            agent.update_experience(target, status="retired")
        assert caught.value.code == "forbidden"
        assert reviewer.update_experience(target, status="retired").status == "retired"
        assert [e.id for e in agent.iter_experiences(status="retired")] == [target]
        stats = agent.experience_stats(target)
        assert (stats.uses, stats.listed, stats.uplift.with_) == (0, 0, None)
        admin.delete_experience(target)
        with pytest.raises(NotFoundError) as missing:
            agent.get_experience(target)
        assert missing.value.code == "experience_not_found" and missing.value.detail == {"id": target}


class TestSkills:
    def test_list_read_versions_history_stats(
        self, db: Session, tenant: Tenant, agent: Client, reviewer: Client, skill: Skill
    ) -> None:
        """Listing pages, detail, versions by number and name, the zip, history and stats."""
        others = [make_skill(db, tenant) for _ in range(2)]
        assert [s.id for s in agent.iter_skills(page_size=1)] == [str(s.id) for s in (*others[::-1], skill)]
        assert [s.id for s in agent.iter_skills(level="atomic")] == []
        detail = agent.get_skill(str(skill.id))
        assert (detail.name, detail.head_version, detail.latest_version, detail.head.version) == (
            "boil-water",
            2,
            2,
            2,
        )
        page = agent.list_versions(str(skill.id), limit=1)
        assert [v.version for v in page.items] == [2] and page.next_before == 2
        assert [v.version for v in agent.iter_versions(str(skill.id), page_size=1)] == [2, 1]
        # Unreviewed bodies are for reviewers; agents get 403 `tier_withholds_body`.
        with pytest.raises(PermissionDeniedError) as withheld:
            agent.get_version(str(skill.id))
        assert withheld.value.code == "tier_withholds_body"
        head = reviewer.get_version(str(skill.id))
        assert head.version == 2 and head.is_head and head.content.startswith("---\nname: boil-water\n")
        assert head.diff and len(head.evidence_items) == 2 and head.evidence.runs == 2
        assert head.trust_tier == "T1" and head.review == "pending" and head.scan is not None
        assert reviewer.get_version(str(skill.id), 1).parent_version is None
        with zipfile.ZipFile(io.BytesIO(reviewer.download_version(str(skill.id), "latest"))) as archive:
            assert archive.read("boil-water/SKILL.md").decode() == head.content
        history = agent.skill_history(str(skill.id), limit=1)
        assert len(history.items) == 1 and history.next_cursor is not None
        assert [e.kind for e in agent.iter_history(str(skill.id), page_size=1)] == ["improved", "created"]
        stats = agent.skill_stats(str(skill.id))
        assert stats.posterior.alpha == detail.utility.alpha and stats.uplift.n_with == 0

    def test_rollback_and_conflict(self, agent: Client, reviewer: Client, skill: Skill) -> None:
        """A reviewer moves the head back; a stale `expected_head` is 409 `version_conflict`."""
        rolled = reviewer.rollback_skill(str(skill.id), 1, expected_head=2, reason="regressed")
        assert (rolled.head_version, rolled.latest_version) == (1, 2)
        assert reviewer.get_version(str(skill.id), "head").version == 1
        with pytest.raises(ConflictError) as caught:
            reviewer.rollback_skill(str(skill.id), 2, expected_head=2)
        assert caught.value.code == "version_conflict" and caught.value.status == 409
        with pytest.raises(PermissionDeniedError):
            agent.rollback_skill(str(skill.id), 2)

    def test_evolve_queues_a_cycle(self, admin: Client, agent: Client) -> None:
        """An admin queues a cycle; its event can be polled."""
        accepted = admin.evolve()
        assert accepted.status == "queued"
        assert admin.get_event(accepted.event_id).kind == "skills.evolve"
        with pytest.raises(PermissionDeniedError):
            agent.evolve()


class TestGovernance:
    def test_import_review_publish_audit(
        self,
        db: Session,
        tenant: Tenant,
        agent: Client,
        reviewer: Client,
        connect: Callable[[str], Client],
    ) -> None:
        """Import (zip, then files), the queue, accept by a 2nd reviewer, tiers, withdraw, publish, audit."""
        second = connect(make_key(db, tenant, Scope.REVIEWER, name="second"))
        text = skill_md.render(skill_doc("imported-boil"))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("imported-boil/SKILL.md", text)
        (imported,) = reviewer.import_skills(buffer.getvalue(), domain="kitchen")
        skill_id = imported.skill.id
        assert imported.created and imported.skill.name == "imported-boil" and imported.version == 1
        assert (imported.skill.trust_tier, imported.skill.provenance) == ("T1", "imported")
        (again,) = reviewer.import_skills(files={"SKILL.md": text})
        assert again.unchanged and again.skill.id == skill_id
        queued = [q for q in reviewer.iter_review_queue(page_size=1) if q.skill.id == skill_id]
        assert [(q.version, q.review) for q in queued] == [(1, "pending")]
        with pytest.raises(PermissionDeniedError) as own:
            reviewer.accept_version(skill_id, 1, reason="mine")
        assert own.value.code == "self_approval"
        decision = second.accept_version(skill_id, 1, reason="read it")
        assert decision.applied and decision.needs == 1 and decision.version.trust_tier == "T2"
        assert agent.get_version(skill_id).content == text
        assert second.get_scan(skill_id, 1).version == 1
        with pytest.raises(NotFoundError) as finding:
            second.mark_false_positive(skill_id, 1, "NO-SUCH-RULE", reason="none")
        assert finding.value.code == "finding_not_found"
        assert second.set_tier(skill_id, 1, "T1", reason="second thoughts").version.trust_tier == "T1"
        assert second.withdraw_skill(skill_id, reason="pause").status == "withdrawn"
        with pytest.raises(NotFoundError):
            agent.get_skill(skill_id)
        with pytest.raises(ConflictError) as early:
            second.publish_version(skill_id, 1, reason="back")
        assert early.value.code == "review_state_conflict"
        assert second.set_tier(skill_id, 1, "T2", reason="fine after all").applied
        assert second.publish_version(skill_id, 1, reason="back").status == "active"
        assert agent.get_skill(skill_id).trust_tier == "T2"
        assert second.reject_version(skill_id, 1, reason="changed my mind").id == skill_id
        actions = [e.action for e in second.iter_audit(target_id=skill_id, page_size=2)]
        assert {"skill.accepted", "skill.rejected"} <= set(actions)
        assert all(e.action.startswith("skill.") for e in second.list_audit(action="skill.", limit=5).items)
        with pytest.raises(PermissionDeniedError):
            agent.list_audit()
        with pytest.raises(ValueError, match="either"):
            reviewer.import_skills()


class TestRetrieveAndFeedback:
    def test_retrieve_feedback_stats(
        self, api: TestClient, lib: Library, connect: Callable[[str], Client]
    ) -> None:
        """An answer lists the kitchen strategy first; feedback on it moves its stats, once."""
        sf = connect(lib.key)
        answer = sf.retrieve(
            TASK, KITCHEN, step=0, session_id="run-1", domain="kitchen", top_k=20, token_budget=4000
        )
        assert answer.items[0].id == str(lib.boil.id) and answer.items[0].pinned is True
        assert answer.strategy_id == str(lib.boil.id) and answer.tokens == sum(i.tokens for i in answer.items)
        assert {i.kind for i in answer.items} == {"skill", "experience"}
        lesson = next(i for i in answer.items if i.kind == "experience")
        assert lesson.text and lesson.action is not None and lesson.polarity in ("do", "avoid")
        done = sf.feedback(answer.retrieval_id, "success", [str(lib.boil.id)], reason="it boiled")
        assert done.used_item_ids == [str(lib.boil.id)] and done.outcome == "success"
        assert sf.skill_stats(str(lib.boil.id)).uses == 1
        with pytest.raises(ConflictError) as twice:
            sf.feedback(answer.retrieval_id, "failure")
        assert twice.value.code == "feedback_exists"
        explained = sf.retrieve(
            TASK, KITCHEN, explain=True, include_body=True, tags=["stove"], level="atomic"
        )
        assert all(i.explain for i in explained.items)
        assert all(i.level == "atomic" for i in explained.items if i.kind == "skill")

    def test_health(self, agent: Client) -> None:
        """Liveness is true; readiness is an answer whether or not a worker runs."""
        assert agent.health() is True
        ready = agent.ready()
        assert ready.status in ("ready", "not_ready") and ready.checks["database"] == "ok"


class TestErrors:
    def test_bad_key_is_401(self, connect: Callable[[str], Client]) -> None:
        """A wrong key raises AuthenticationError with the server's code, message and a request id."""
        with pytest.raises(AuthenticationError) as caught:
            connect("sf_wrong").list_skills()
        error = caught.value
        assert (error.status, error.code) == (401, "unauthorized") and error.message
        assert error.request_id and len(error.request_id) == 32

    def test_not_found_carries_code_and_detail(self, agent: Client) -> None:
        """A 404 names what was missing."""
        missing = str(uuid.uuid4())
        with pytest.raises(NotFoundError) as caught:
            agent.get_skill(missing)
        assert (caught.value.code, caught.value.detail) == ("skill_not_found", {"id": missing})
        with pytest.raises(NotFoundError) as trajectory:
            agent.get_trajectory(missing)
        assert trajectory.value.code == "trajectory_not_found"

    def test_validation_and_bad_request(
        self, agent: Client, lib: Library, connect: Callable[[str], Client]
    ) -> None:
        """422 `validation_error` lists the fields; 400 `invalid_cursor`; an unlisted used item is 422."""
        with pytest.raises(ValidationError) as caught:
            agent.list_skills(limit=1000)
        assert caught.value.code == "validation_error" and caught.value.detail[0]["loc"][-1] == "limit"
        with pytest.raises(BadRequestError) as cursor:
            agent.list_skills(cursor="not-a-cursor")
        assert cursor.value.code == "invalid_cursor"
        sf = connect(lib.key)
        answer = sf.retrieve(TASK, KITCHEN)
        with pytest.raises(ValidationError) as unlisted:
            sf.feedback(answer.retrieval_id, "success", [str(uuid.uuid4())])
        assert unlisted.value.code == "item_not_in_retrieval"
        assert isinstance(unlisted.value, SkillfoundryError)


class TestAsyncClient:
    def test_same_calls_awaited(self, api: TestClient, db: Session, tenant: Tenant, skill: Skill) -> None:
        """The async client over ASGI: reads, pages, writes and errors as the sync one."""
        key = make_key(db, tenant, Scope.ADMIN, name="async")

        async def scenario() -> None:
            transport = httpx.ASGITransport(app=api.app)
            async with AsyncClient(BASE, key, transport=transport, retry=NO_RETRY) as sf:
                assert (await sf.ping()).key_name == "async"
                accepted = await sf.create_trajectory(**_trajectory(agent_id="async-agent"))
                assert (await sf.get_trajectory(accepted.ids[0])).agent_id == "async-agent"
                assert [t.id async for t in sf.iter_trajectories(agent_id="async-agent")] == accepted.ids
                assert [s.id async for s in sf.iter_skills(page_size=1)] == [str(skill.id)]
                assert [v.version async for v in sf.iter_versions(str(skill.id), page_size=1)] == [2, 1]
                assert [e.kind async for e in sf.iter_history(str(skill.id), page_size=1)] == [
                    "improved",
                    "created",
                ]
                assert (await sf.get_version(str(skill.id), 1)).version == 1
                with pytest.raises(NotFoundError):
                    await sf.get_event(str(uuid.uuid4()))
                assert await sf.health() is True

        asyncio.run(scenario())


class TestAgentSession:
    def test_loop_stores_retrieval_and_used_items(
        self, api: TestClient, db: Session, lib: Library, connect: Callable[[str], Client]
    ) -> None:
        """step -> record -> finish: the stored trajectory names each step's retrieval and used items."""
        accept_head(connect, db, lib, lib.boil)
        sf = connect(lib.key)
        session = AgentSession(sf, TASK, agent_id="agent-x", domain="kitchen", token_budget=300)
        first = session.step(KITCHEN)
        assert first.items and first.prompt.startswith("Guidance from the skill library")
        assert first.tags["S1"] == str(lib.boil.id) and "[S1] boil-water (the strategy" in first.prompt
        assert estimate_tokens(first.prompt) <= 300 + len(first.prompt.splitlines())
        lesson = first.experiences[0]
        assert lesson.text and lesson.text in first.prompt
        assert "## Procedure" not in first.prompt
        body = session.load_skill("S1")
        assert body.startswith("---\nname: boil-water\n") and "fill pot with water" in body
        used = first.mentioned(f"I follow [S1] and {lesson.id}.")
        assert used == [str(lib.boil.id), lesson.id]
        session.record("fill pot with water", used=used, reward=0.5, tool_result="The pot is full.")
        second = session.step("The pot holds water. The stove is off.")
        assert second.step == 1 and second.strategy_id == str(lib.boil.id)
        session.record("activate stove", used=["S1"], reward=1.0)
        trajectory_id = session.finish(success=True, score=1.0)
        stored = sf.get_trajectory(trajectory_id)
        assert (stored.agent_id, stored.domain, stored.session_id) == (
            "agent-x",
            "kitchen",
            session.session_id,
        )
        assert stored.outcome.success is True and stored.outcome.score == 1.0
        assert [s.retrieval_id for s in stored.steps] == [first.retrieval_id, second.retrieval_id]
        assert stored.steps[0].used_item_ids == used and stored.steps[0].observation == KITCHEN
        assert stored.steps[0].tool_output == "The pot is full." and stored.steps[1].used_item_ids == [
            str(lib.boil.id)
        ]
        with pytest.raises(RuntimeError):
            session.step(KITCHEN)

    def test_async_session(
        self, api: TestClient, db: Session, lib: Library, connect: Callable[[str], Client]
    ) -> None:
        """The async twin posts the same shape of trajectory."""
        accept_head(connect, db, lib, lib.boil)

        async def scenario() -> str:
            async with AsyncClient(BASE, lib.key, transport=httpx.ASGITransport(app=api.app)) as sf:
                session = AsyncAgentSession(sf, TASK, agent_id="async-x", domain="kitchen")
                guidance = await session.step(KITCHEN)
                assert guidance.skills[0].id == str(lib.boil.id)
                assert (await session.load_skill(guidance.skills[0].id)).startswith("---\n")
                session.record("activate stove", used=[guidance.skills[0]])
                trajectory_id = await session.finish(success=False)
                stored = await sf.get_trajectory(trajectory_id)
                assert stored.steps[0].retrieval_id == guidance.retrieval_id
                assert stored.steps[0].used_item_ids == [guidance.skills[0].id]
                return trajectory_id

        assert asyncio.run(scenario())

    def test_prompt_keeps_to_the_budget(self) -> None:
        """Items are shown best first while they fit; all keep their tags; nothing fits: no prompt."""
        items = [
            _item(
                "skill",
                name="boil-water",
                description="Boil water on a stove. " * 2,
                pinned=True,
                body_url="/v1/x",
            ),
            _item("experience", text="When the stove is off, do `activate stove` because it heats the pot."),
            _item(
                "experience", text="When the pot is empty, avoid `activate stove` because nothing boils. " * 4
            ),
        ]
        retrieval = Retrieval(retrieval_id=str(uuid.uuid4()), items=items, tokens=0)
        prompt, tags, shown = format_guidance(retrieval, 120)
        assert list(tags) == ["S1", "E1", "E2"] and shown == items[:2]
        assert estimate_tokens(prompt) <= 120 + len(prompt.splitlines())
        assert "[S1] boil-water (the strategy for this task): Boil" in prompt and "[E2]" not in prompt
        unreviewed = Retrieval(
            retrieval_id="r", items=[_item("skill", name="x", description="y", level="atomic")], tokens=0
        )
        assert "- [S1] x [atomic] (summary only): y" in format_guidance(unreviewed, 100)[0]
        assert format_guidance(retrieval, 5) == ("", tags, [])

    def test_example_agent_plays_and_posts(
        self, api: TestClient, db: Session, lib: Library, connect: Callable[[str], Client]
    ) -> None:
        """The OpenAI example, against a scripted chat server: it loads a skill, wins, posts the run."""
        accept_head(connect, db, lib, lib.boil)
        example = _load_example()
        script = deque(
            [
                "LOAD: S1",
                "ACTION: take pot\nUSED: S1",
                "ACTION: fill pot with water",
                "ACTION: put pot on stove",
                "ACTION: activate stove\nUSED: E1",
            ]
        )
        from openai import OpenAI

        with running() as chat:
            chat.responder = lambda _: completion(script.popleft())
            llm = OpenAI(base_url=chat.url, api_key="test", max_retries=0)
            episode = example.run_episode(
                connect(lib.key), llm, "m", agent_id="example", domain="kitchen", max_steps=6
            )
            llm.close()
        assert episode.won and episode.loaded == ["S1"]
        assert episode.actions == ["take pot", "fill pot with water", "put pot on stove", "activate stove"]
        stored = connect(lib.key).get_trajectory(episode.trajectory_id)
        assert stored.outcome.success is True and len(stored.steps) == 4
        assert all(s.retrieval_id for s in stored.steps) and stored.steps[0].used_item_ids
        assert "SKILL.md" not in chat.requests[0]["messages"][1]["content"]
        assert "name: boil-water" in chat.requests[1]["messages"][-1]["content"]

    def test_example_help_needs_no_network(self) -> None:
        """`--help` works offline."""
        done = subprocess.run(
            [sys.executable, str(EXAMPLE), "--help"], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0 and "--model" in done.stdout


# Retries, against a real HTTP server on loopback.


@dataclass
class Scripted:
    status: int = 200
    body: Any = field(default_factory=lambda: {"status": "ok"})
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


class ScriptedServer(ThreadingHTTPServer):
    """Answers each request with the next scripted reply (then 200s) and records what it got."""

    daemon_threads = False
    block_on_close = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.replies: deque[Scripted] = deque()
        self.seen: list[tuple[str, str, dict[str, str], float]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def next(self, method: str, path: str, headers: dict[str, str]) -> Scripted:
        with self.lock:
            self.seen.append((method, path, headers, time.monotonic()))
            return self.replies.popleft() if self.replies else Scripted()


class _Handler(BaseHTTPRequestHandler):
    server: ScriptedServer

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        reply = self.server.next(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
        if reply.delay_s and self.server.stopping.wait(reply.delay_s):
            return
        payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header(
                "Content-Type", "application/json" if not isinstance(reply.body, bytes) else "text/html"
            )
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = do_POST = do_DELETE = _answer  # noqa: N815 - http.server's dispatch names

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    """A scripted server on 127.0.0.1, stopped after the test."""
    srv = ScriptedServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield srv
    srv.stopping.set()
    srv.shutdown()
    thread.join()
    srv.server_close()


FAST = RetryPolicy(max_retries=3, backoff_s=0.01, max_backoff_s=0.05)
RATE_LIMITED = {"error": {"code": "rate_limited", "message": "slow down", "detail": {"retry_after_s": 1}}}
PING = {"tenant_id": "t", "key_id": "k", "key_name": "n", "scopes": ["agent"]}


class TestRetries:
    def test_429_waits_for_retry_after_seconds(self, server: ScriptedServer) -> None:
        """429 with `Retry-After: 1` is retried after a second, with the same request id; then 200."""
        server.replies.extend([Scripted(429, RATE_LIMITED, {"Retry-After": "1"}), Scripted(200, PING)])
        with Client(server.url, "sf_key", retry=FAST) as sf:
            assert sf.ping().key_name == "n"
        (_, _, first, t0), (_, path, second, t1) = server.seen
        assert path == "/v1/ping" and t1 - t0 >= 0.95
        assert first["x-request-id"] == second["x-request-id"] and second["authorization"] == "Bearer sf_key"

    def test_retry_after_as_http_date(self, server: ScriptedServer) -> None:
        """An HTTP-date Retry-After is honoured too."""
        when = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
        server.replies.extend([Scripted(503, {}, {"Retry-After": when}), Scripted(200, PING)])
        with Client(server.url, "k", retry=FAST) as sf:
            sf.ping()
        assert server.seen[1][3] - server.seen[0][3] >= 0.9

    def test_gives_up_after_max_retries(self, server: ScriptedServer) -> None:
        """Always 429: RateLimitError after 1 + max_retries tries, with the server's code and Retry-After."""
        server.replies.extend(Scripted(429, RATE_LIMITED, {"Retry-After": "0"}) for _ in range(5))
        with (
            Client(server.url, "k", max_retries=2, retry=FAST) as sf,
            pytest.raises(RateLimitError) as caught,
        ):
            sf.ping()
        assert len(server.seen) == 3
        assert (caught.value.code, caught.value.retry_after, caught.value.detail) == (
            "rate_limited",
            0.0,
            {"retry_after_s": 1},
        )

    def test_retry_after_too_long_is_not_waited(self, server: ScriptedServer) -> None:
        """A Retry-After beyond `max_retry_after_s` raises at once."""
        server.replies.append(Scripted(429, RATE_LIMITED, {"Retry-After": "3600"}))
        with Client(server.url, "k", retry=FAST) as sf, pytest.raises(RateLimitError):
            sf.ping()
        assert len(server.seen) == 1

    def test_5xx_retried_only_where_safe(self, server: ScriptedServer) -> None:
        """502/504 are retried for a GET and for trajectories (same Idempotency-Key), not for feedback."""
        server.replies.extend([Scripted(502, b"<html>bad gateway</html>"), Scripted(200, PING)])
        accepted = {"ids": ["a"], "event_id": "e", "status": "queued"}
        server.replies.extend([Scripted(504, {}), Scripted(202, accepted, {"Idempotent-Replayed": "true"})])
        server.replies.append(Scripted(503, {"error": {"code": "database_unavailable", "message": "down"}}))
        with Client(server.url, "k", retry=FAST) as sf:
            sf.ping()
            assert sf.create_trajectory(task="t", agent_id="a", steps=[make_step()]).replayed is True
            with pytest.raises(ServerError) as caught:
                sf.feedback(str(uuid.uuid4()), "success")
        methods = [(m, p) for m, p, _, _ in server.seen]
        assert methods == [("GET", "/v1/ping")] * 2 + [("POST", "/v1/trajectories")] * 2 + [
            ("POST", "/v1/feedback")
        ]
        keys = {h["idempotency-key"] for m, p, h, _ in server.seen if p == "/v1/trajectories"}
        assert len(keys) == 1 and keys.pop().startswith("sfc-")
        assert (caught.value.status, caught.value.code, caught.value.message) == (
            503,
            "database_unavailable",
            "down",
        )

    def test_non_json_error_body(self, server: ScriptedServer) -> None:
        """A proxy's HTML error is a ServerError with `http_<status>` and the start of the page."""
        server.replies.append(Scripted(500, b"<html>oops</html>"))
        with Client(server.url, "k", retry=FAST) as sf, pytest.raises(ServerError) as caught:
            sf.ping()
        assert (caught.value.status, caught.value.code, caught.value.message) == (
            500,
            "http_500",
            "<html>oops</html>",
        )

    def test_connection_refused_then_error(self) -> None:
        """Nobody listening: retried, then APIConnectionError (status None)."""
        with ThreadingHTTPServer(("127.0.0.1", 0), _Handler) as probe:
            port = probe.server_address[1]
        with (
            Client(f"http://127.0.0.1:{port}", "k", retry=FAST) as sf,
            pytest.raises(APIConnectionError) as caught,
        ):
            sf.ping()
        assert caught.value.status is None and caught.value.code == "connection_error"

    def test_timeout(self, server: ScriptedServer) -> None:
        """No answer within the timeout: APITimeoutError; a POST that may have landed is not repeated."""
        server.replies.append(Scripted(200, {}, delay_s=2.0))
        with Client(server.url, "k", timeout=0.2, retry=FAST) as sf, pytest.raises(APITimeoutError):
            sf.feedback(str(uuid.uuid4()), "success")
        assert len(server.seen) == 1

    def test_async_client_retries_too(self, server: ScriptedServer) -> None:
        """The async client honours Retry-After the same way."""
        server.replies.extend([Scripted(429, RATE_LIMITED, {"Retry-After": "1"}), Scripted(200, PING)])

        async def scenario() -> None:
            async with AsyncClient(server.url, "k", retry=FAST) as sf:
                assert (await sf.ping()).scopes == ["agent"]

        asyncio.run(scenario())
        assert server.seen[1][3] - server.seen[0][3] >= 0.95

    def test_parse_retry_after(self) -> None:
        """Seconds, fractions, HTTP dates (past ones are 0), and junk."""
        now = time.time()
        date = format_datetime(datetime.fromtimestamp(now + 30, UTC), usegmt=True)
        assert parse_retry_after("2") == 2.0 and parse_retry_after("0.5") == 0.5
        assert parse_retry_after(date, now=now) == pytest.approx(30, abs=1)
        assert parse_retry_after("Mon, 01 Jan 2001 00:00:00 GMT") == 0.0
        assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def _trajectory(**overrides: Any) -> dict[str, Any]:
    body = make_trajectory(n_steps=1, **overrides)
    return {k: body[k] for k in ("task", "agent_id", "steps", "domain", "session_id", "outcome", "metadata")}


def _item(kind: str, **fields: Any) -> RetrievedItem:
    return RetrievedItem(kind=kind, id=str(uuid.uuid4()), score=1.0, tokens=0, **fields)


def _load_example() -> ModuleType:
    spec = util.spec_from_file_location("openai_agent_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
