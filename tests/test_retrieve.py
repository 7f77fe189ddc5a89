"""/v1/retrieve and /v1/feedback on the real database and embedding model; stats; the auth cache."""

from __future__ import annotations

import hashlib
import logging
import math
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.api.deps import KeyCache, get_app_settings
from app.api.routes.retrieve import get_log_sessions
from app.config import Settings
from app.embedding import SentenceTransformerEmbedder, get_embedder
from app.evolver import pipeline
from app.evolver.normalize import normalize_observation
from app.ingestion import service as ingestion
from app.limits import MAX_FIELD_CHARS
from app.retrieval import feedback
from app.retrieval import search as search_module
from app.retrieval.search import (
    QueryVector,
    SearchConfig,
    SearchFilters,
    SearchQuery,
    content_words,
    ef_search,
    vector_literal,
)
from app.retrieval.service import QueryEmbeddings
from app.skills import service as skill_service
from app.storage.models import (
    Experience,
    ExperienceStatus,
    ItemKind,
    Outcome,
    Polarity,
    Retrieval,
    RetrievalItem,
    RetrievalSession,
    Scope,
    Skill,
    SkillEventKind,
    SkillLevel,
    SkillStatus,
    StateCluster,
    Tenant,
    Trajectory,
)
from app.storage.repositories import retrievals, tenants, trajectories
from app.storage.repositories import skills as skill_repo
from app.storage.repositories.retrievals import LoggedItem, RetrievalLog
from tests.factories import (
    EVOLVER,
    auth,
    make_experience,
    make_key,
    make_step,
    make_tenant,
    make_trajectory,
    review_all,
    skill_doc,
)

TASK = "Your task is to boil water."
KITCHEN = (
    "This room is called the kitchen. In it, you see: a stove, which is turned off. a sink. a pot (120 g)."
)
GIT = "$ git push origin main\n ! [rejected] main -> main (non-fast-forward)\nerror: failed to push some refs"


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    """The real all-MiniLM-L6-v2, loaded once for the session (the app's embedder is the same one)."""
    return get_embedder()


@dataclass
class Library:
    """A small tenant library: kitchen and git lessons and skills, and what must never be returned."""

    tenant: Tenant
    key: str
    do: Experience
    avoid: Experience
    sink: Experience
    git: Experience
    retired: Experience
    boil: Skill
    stove: Skill
    fill: Skill
    dishes: Skill
    fix_push: Skill
    quarantined: Skill
    retired_skill: Skill


def _cluster(
    db: Session, tenant: Tenant, embedder: SentenceTransformerEmbedder, obs: str, domain: str
) -> StateCluster:
    key = normalize_observation(obs)
    cluster = StateCluster(
        id=uuid.uuid4(),
        tenant_id=tenant.id,
        domain=domain,
        centroid=embedder.embed_documents([key])[0],
        size=1,
        representative=key,
        embedding_model=embedder.model_name,
    )
    db.add(cluster)
    db.commit()
    return cluster


def _lesson(
    db: Session,
    tenant: Tenant,
    embedder: SentenceTransformerEmbedder,
    text: str,
    template: str,
    cluster: StateCluster,
    **overrides: Any,
) -> Experience:
    return make_experience(
        db,
        tenant,
        text=text,
        action_template=template,
        action_example=template,
        cluster_id=cluster.id,
        domain=cluster.domain,
        embedding=embedder.embed_documents([text])[0],
        embedding_model=embedder.model_name,
        **overrides,
    )


def _skill(
    db: Session,
    tenant: Tenant,
    embedder: SentenceTransformerEmbedder,
    name: str,
    description: str,
    *,
    level: SkillLevel = SkillLevel.ATOMIC,
    domain: str = "kitchen",
    steps: tuple[str, ...] = ("activate stove",),
    reviewed: bool = True,
    **overrides: Any,
) -> Skill:
    """A skill written by the service (scanned, T1); `reviewed` has a reviewer accept it (T2)."""
    doc = skill_doc(name, steps=steps, description=description)
    row = skill_repo.add_skill(
        db,
        tenant_id=tenant.id,
        domain=domain,
        name=name,
        level=level,
        source_key=f"test:{name}",
        task_cluster_id=None,
        description=doc.description,
        embedding=embedder.embed_documents([f"{name}: {doc.description}"])[0],
        embedding_model=embedder.model_name,
    )
    skill_service.write_version(
        db,
        row,
        doc,
        expected_head=0,
        change=SkillEventKind.CREATED,
        author=EVOLVER,
        evidence=(),
        reason="test",
    )
    if reviewed:
        review_all(db, row)
    for column, value in overrides.items():
        setattr(row, column, value)
    db.commit()
    return row


def build_library(db: Session, embedder: SentenceTransformerEmbedder) -> Library:
    """Kitchen and git lessons and skills of a fresh tenant."""
    tenant = make_tenant(db)
    kitchen = _cluster(db, tenant, embedder, KITCHEN, "kitchen")
    git = _cluster(db, tenant, embedder, GIT, "code")
    boil = _skill(
        db,
        tenant,
        embedder,
        "boil-water",
        "Boil water: fill a pot at the sink, put it on the stove and activate the stove. "
        "Use when a task asks to boil water.",
        level=SkillLevel.STRATEGY,
        steps=("fill pot with water", "move pot to stove", "activate stove"),
    )
    stove = _skill(
        db,
        tenant,
        embedder,
        "activate-stove",
        "Turn on a stove so the pot on it heats. Use when a stove is off.",
    )
    fill = _skill(
        db,
        tenant,
        embedder,
        "fill-pot",
        "Fill a pot with water at a sink. Use when a pot is empty.",
        level=SkillLevel.FUNCTIONAL,
        steps=("move pot to sink", "activate sink"),
    )
    skill_repo.set_links(db, boil.id, [fill.id, stove.id])
    return Library(
        tenant=tenant,
        key=make_key(db, tenant, Scope.AGENT),
        do=_lesson(
            db,
            tenant,
            embedder,
            "When the stove is off and the pot holds water, do `activate stove` because it heats the water.",
            "activate stove",
            kitchen,
        ),
        avoid=_lesson(
            db,
            tenant,
            embedder,
            "When the stove is off in the kitchen, avoid `focus on milk` because the task is to boil water.",
            "focus on milk",
            kitchen,
            polarity=Polarity.AVOID,
        ),
        sink=_lesson(
            db,
            tenant,
            embedder,
            "When the pot in the kitchen is empty, do `move pot to sink` because water comes from the sink.",
            "move pot to sink",
            kitchen,
        ),
        git=_lesson(
            db,
            tenant,
            embedder,
            "When git push is rejected as non-fast-forward, do `git pull --rebase` because the remote moved.",
            "git pull --rebase",
            git,
        ),
        retired=_lesson(
            db,
            tenant,
            embedder,
            "When the stove in the kitchen is off, do `turn on stove` because it boils the water.",
            "turn on stove",
            kitchen,
            status=ExperienceStatus.RETIRED,
        ),
        boil=boil,
        stove=stove,
        fill=fill,
        dishes=_skill(
            db, tenant, embedder, "wash-dishes", "Wash dishes at the sink. Use when dishes are dirty."
        ),
        fix_push=_skill(
            db,
            tenant,
            embedder,
            "fix-git-push",
            "Resolve a rejected git push by rebasing on the remote. Use when git push is rejected.",
            level=SkillLevel.STRATEGY,
            domain="code",
            steps=("git pull --rebase", "git push"),
        ),
        quarantined=_skill(
            db,
            tenant,
            embedder,
            "heat-water-fast",
            "Heat water on the stove quickly. Use when water must boil.",
            trust_tier=0,
        ),
        retired_skill=_skill(
            db,
            tenant,
            embedder,
            "light-old-stove",
            "Light an old stove in the kitchen. Use when the stove is off.",
            status=SkillStatus.RETIRED,
        ),
    )


@pytest.fixture
def lib(db: Session, embedder: SentenceTransformerEmbedder) -> Library:
    """The library of a fresh tenant."""
    return build_library(db, embedder)


@contextmanager
def _test_transaction(db: Session) -> Iterator[Session]:
    """The test's session as a unit of work: the background log lands in the rolled-back transaction."""
    try:
        yield db
        db.commit()
    except BaseException:
        db.rollback()
        raise


def use_settings(client: TestClient, settings: Settings, **changes: Any) -> None:
    """Serve the app with these settings changed."""
    changed = settings.model_copy(update=changes)
    client.app.dependency_overrides[get_app_settings] = lambda: changed


@pytest.fixture
def api(client: TestClient, db: Session, settings: Settings) -> TestClient:
    """The app, recording answers in the test's transaction and never withholding (unless a test says so)."""

    def sessions() -> AbstractContextManager[Session]:
        return _test_transaction(db)

    client.app.dependency_overrides[get_log_sessions] = lambda: sessions
    use_settings(client, settings, retrieval_withhold_share=0.0)
    return client


def retrieve(api: TestClient, key: str, **body: Any) -> dict[str, Any]:
    """POST /v1/retrieve for the kitchen situation (unless overridden); asserts 200."""
    payload = {"task": TASK, "observation": KITCHEN, **body}
    response = api.post("/v1/retrieve", json=payload, headers=auth(key))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def ids(answer: dict[str, Any]) -> list[str]:
    """The ids of an answer's items, in order."""
    return [item["id"] for item in answer["items"]]


WIDE = {"top_k": 50, "token_budget": 8000}


class TestRetrieve:
    def test_relevant_items_come_first(self, api: TestClient, lib: Library) -> None:
        """A first step leads with the kitchen strategy; kitchen lessons rank above the git one."""
        answer = retrieve(api, lib.key, **WIDE)
        order = ids(answer)
        assert order[0] == str(lib.boil.id)
        assert answer["items"][0]["pinned"] is True
        kitchen = [order.index(str(e.id)) for e in (lib.do, lib.avoid) if str(e.id) in order]
        assert kitchen, order
        if str(lib.git.id) in order:
            assert max(kitchen) < order.index(str(lib.git.id))
        experiences = [i for i in answer["items"] if i["kind"] == "experience"]
        assert experiences[0]["id"] in {str(lib.do.id), str(lib.avoid.id), str(lib.sink.id)}

    def test_answer_shapes(self, api: TestClient, lib: Library) -> None:
        """Experiences carry text, polarity and a structured action; skills a body URL, no body by default."""
        response = api.post(
            "/v1/retrieve", json={"task": TASK, "observation": KITCHEN, **WIDE}, headers=auth(lib.key)
        )
        assert response.status_code == 200
        assert response.headers["Server-Timing"].startswith("retrieve;dur=")
        answer = response.json()
        uuid.UUID(answer["retrieval_id"])
        do = next(i for i in answer["items"] if i["id"] == str(lib.do.id))
        assert do["kind"] == "experience" and do["polarity"] == "do" and do["text"] == lib.do.text
        assert do["action"] == {"template": "activate stove", "example": "activate stove", "slots": []}
        boil = next(i for i in answer["items"] if i["id"] == str(lib.boil.id))
        assert boil["kind"] == "skill" and boil["name"] == "boil-water" and boil["level"] == "strategy"
        assert boil["version"] == 1 and boil["body_url"] == f"/v1/skills/{lib.boil.id}/versions/1"
        assert "body" not in boil and "explain" not in boil
        assert answer["tokens"] == sum(i["tokens"] for i in answer["items"])

    def test_tenant_isolation(self, api: TestClient, db: Session, lib: Library, embedder: Any) -> None:
        """Another tenant's identical lessons never show, in either direction."""
        other = build_library(db, embedder)
        mine = set(ids(retrieve(api, lib.key, **WIDE)))
        theirs = set(ids(retrieve(api, other.key, **WIDE)))
        assert mine and theirs and not mine & theirs
        assert str(other.do.id) in theirs and str(lib.do.id) in mine

    def test_retired_and_quarantined_never_returned(self, api: TestClient, lib: Library) -> None:
        """Even with room for everything, retired and quarantined items stay out."""
        hidden = {str(lib.retired.id), str(lib.quarantined.id), str(lib.retired_skill.id)}
        for body in (WIDE, {**WIDE, "include_body": True}, {**WIDE, "session_id": "s", "step": 0}):
            assert not hidden & set(ids(retrieve(api, lib.key, **body)))

    def test_do_and_avoid_both_present(self, api: TestClient, lib: Library) -> None:
        """The answer shows what to do and what to avoid."""
        answer = retrieve(api, lib.key, top_k=4)
        polarities = {i["polarity"] for i in answer["items"] if i["kind"] == "experience"}
        assert polarities == {"do", "avoid"}

    def test_token_budget_respected(self, api: TestClient, lib: Library) -> None:
        """A small budget gives fewer items, and no answer exceeds its budget."""
        small = retrieve(api, lib.key, top_k=50, token_budget=60)
        large = retrieve(api, lib.key, top_k=50, token_budget=8000)
        assert 0 < small["tokens"] <= 60 and large["tokens"] <= 8000
        assert len(small["items"]) < len(large["items"])

    def test_include_body(self, api: TestClient, lib: Library) -> None:
        """With include_body and room, skills come with their SKILL.md."""
        answer = retrieve(api, lib.key, include_body=True, **WIDE)
        boil = next(i for i in answer["items"] if i["id"] == str(lib.boil.id))
        assert boil["body"].startswith("---\nname: boil-water")
        assert "fill pot with water" in boil["body"]

    def test_filters(self, api: TestClient, lib: Library) -> None:
        """Domain, polarity and level narrow what comes back."""
        code = retrieve(api, lib.key, filters={"domain": "code"}, **WIDE)
        assert set(ids(code)) == {str(lib.git.id), str(lib.fix_push.id)}
        avoid = retrieve(api, lib.key, filters={"polarity": "avoid", "level": "strategy"}, **WIDE)
        kinds = {(i["kind"], i.get("polarity"), i.get("level")) for i in avoid["items"]}
        assert kinds <= {("experience", "avoid", None), ("skill", None, "strategy")}
        assert str(lib.avoid.id) in ids(avoid)

    def test_explain(self, api: TestClient, lib: Library) -> None:
        """With explain, every item carries its score breakdown."""
        answer = retrieve(api, lib.key, explain=True)
        assert all("final" in i["explain"] and "utility" in i["explain"] for i in answer["items"])
        do = next((i for i in answer["items"] if i["id"] == str(lib.do.id)), None)
        assert do is not None and {"rrf_vector", "rrf_cluster"} <= set(do["explain"])

    def test_step_zero_pins_a_strategy_and_later_steps_favour_its_children(
        self, api: TestClient, db: Session, lib: Library
    ) -> None:
        """Step 0 pins boil-water for the session; a later step keeps it and boosts its children."""
        first = retrieve(api, lib.key, session_id="run-1", step=0, **WIDE)
        assert first["strategy_id"] == str(lib.boil.id)
        stored = db.get(RetrievalSession, (lib.tenant.id, "run-1"))
        assert stored is not None and stored.strategy_skill_id == lib.boil.id

        # Even where the git strategy would fit better, the session keeps its plan.
        later = retrieve(api, lib.key, session_id="run-1", step=3, explain=True, observation=GIT, **WIDE)
        assert later["strategy_id"] == str(lib.boil.id)
        items = {i["id"]: i for i in later["items"]}
        assert items[str(lib.boil.id)]["pinned"] is True
        for child in (lib.stove, lib.fill):
            assert "child_boost" in items[str(child.id)]["explain"]
        if str(lib.dishes.id) in items:
            assert "child_boost" not in items[str(lib.dishes.id)]["explain"]
        if str(lib.fix_push.id) in items:
            assert "strategy_demoted" in items[str(lib.fix_push.id)]["explain"]

    def test_withheld_item_is_recorded_not_shown(
        self, api: TestClient, db: Session, lib: Library, settings: Settings
    ) -> None:
        """With a withhold share of 1, every answer withholds one item and records it as withheld."""
        use_settings(api, settings, retrieval_withhold_share=1.0)
        answer = retrieve(api, lib.key)
        rows = db.scalars(
            select(RetrievalItem).where(RetrievalItem.retrieval_id == uuid.UUID(answer["retrieval_id"]))
        ).all()
        withheld = [r for r in rows if r.withheld]
        assert len(withheld) == 1 and len(rows) == len(answer["items"]) + 1
        assert str(withheld[0].item_id) not in ids(answer)
        assert {str(r.item_id) for r in rows if not r.withheld} == set(ids(answer))

    def test_answer_is_recorded_with_latency(self, api: TestClient, db: Session, lib: Library) -> None:
        """The retrieval row names the tenant, key, session and situation, with a latency."""
        answer = retrieve(api, lib.key, session_id="run-2", step=4)
        row = db.get(Retrieval, uuid.UUID(answer["retrieval_id"]))
        assert row is not None and row.tenant_id == lib.tenant.id and row.outcome is None
        assert (row.session_id, row.step) == ("run-2", 4)
        assert row.latency_ms > 0 and len(row.situation_hash) == 64
        ranks = sorted(
            r.rank for r in db.scalars(select(RetrievalItem).where(RetrievalItem.retrieval_id == row.id))
        )
        assert ranks == list(range(1, len(answer["items"]) + 1))

    def test_a_failed_log_never_fails_the_answer(
        self, api: TestClient, lib: Library, caplog: pytest.LogCaptureFixture
    ) -> None:
        """If recording fails the agent still gets its answer; feedback on it then answers 404."""

        @contextmanager
        def broken() -> Iterator[Session]:
            raise RuntimeError("database went away")
            yield  # pragma: no cover

        api.app.dependency_overrides[get_log_sessions] = lambda: broken
        with caplog.at_level(logging.ERROR, logger="app.retrieval.service"):
            answer = retrieve(api, lib.key)
        assert answer["items"]
        assert "could not record retrieval" in caplog.text
        response = api.post(
            "/v1/feedback",
            json={"retrieval_id": answer["retrieval_id"], "outcome": "success"},
            headers=auth(lib.key),
        )
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "retrieval_not_found"

    @pytest.mark.parametrize(
        ("body", "status", "code"),
        [
            ({"top_k": 0}, 422, "validation_error"),
            ({"top_k": 51}, 422, "validation_error"),
            ({"token_budget": 49}, 422, "validation_error"),
            ({"filters": {"level": "grand"}}, 422, "validation_error"),
            ({"surprise": 1}, 422, "validation_error"),
            ({"observation": ""}, 422, "validation_error"),
            ({"observation": "x" * (MAX_FIELD_CHARS + 1)}, 413, "field_too_long"),
            ({"recent_actions": ["look"] * 21}, 413, "too_many_items"),
        ],
    )
    def test_bad_input(
        self, api: TestClient, db: Session, body: dict[str, Any], status: int, code: str
    ) -> None:
        """Bad requests get the standard error shape with a stable code."""
        key = make_key(db, make_tenant(db))
        response = api.post(
            "/v1/retrieve", json={"task": TASK, "observation": KITCHEN, **body}, headers=auth(key)
        )
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code

    def test_needs_agent_scope(self, api: TestClient, db: Session) -> None:
        """A reviewer-only key may not retrieve."""
        key = make_key(db, make_tenant(db), Scope.REVIEWER)
        response = api.post("/v1/retrieve", json={"task": TASK, "observation": KITCHEN}, headers=auth(key))
        assert response.status_code == 403

    def test_lessons_are_served_to_their_kind_of_task(
        self, api: TestClient, db: Session, settings: Settings, embedder: SentenceTransformerEmbedder
    ) -> None:
        """A lesson learned finding a non-living thing is not served to an agent finding an animal in the
        same room; one learned finding an animal, or one without a task embedding, is."""
        tenant = make_tenant(db)
        key = make_key(db, tenant)
        room = "This room is called the kitchen. In it, you see: a thermometer, a stove and a sink."
        cluster = _cluster(db, tenant, embedder, room, "sw")
        animal = "Your task is to find a(n) animal. First, focus on the thing. Then, move it to the red box."
        other = animal.replace("a(n) animal", "a(n) non-living thing")
        lessons = {
            name: _lesson(
                db, tenant, embedder, f"When in the kitchen, do `{template}` because it raised the score.",
                template, cluster, task=task,
                task_embedding=embedder.embed_documents([task])[0] if task else None,
            )
            for name, template, task in [
                ("animal", "go to outside", animal),
                ("other", "focus on thermometer", other),
                ("unknown", "look around", ""),
            ]
        }  # fmt: skip
        body = {"observation": room, **WIDE}
        served = set(ids(retrieve(api, key, task=animal.replace("red", "blue"), **body)))
        assert str(lessons["animal"].id) in served and str(lessons["unknown"].id) in served
        assert str(lessons["other"].id) not in served
        assert str(lessons["other"].id) in set(ids(retrieve(api, key, task=other, **body)))
        use_settings(api, settings, retrieval_experience_task_fit=0.0)
        assert str(lessons["other"].id) in set(ids(retrieve(api, key, task=animal, **body)))

    def test_empty_library(self, api: TestClient, db: Session) -> None:
        """A tenant with nothing yet gets an empty answer, still with a retrieval id."""
        answer = retrieve(api, make_key(db, make_tenant(db)), session_id="new", step=0)
        assert answer["items"] == [] and answer["tokens"] == 0 and "strategy_id" not in answer


class TestFeedback:
    def post(self, api: TestClient, key: str, **body: Any) -> Any:
        return api.post("/v1/feedback", json=body, headers=auth(key))

    def test_moves_only_used_items(self, api: TestClient, db: Session, lib: Library) -> None:
        """Success adds one to alpha of the used item only; a second feedback is a conflict."""
        answer = retrieve(api, lib.key, **WIDE)
        assert {str(lib.do.id), str(lib.boil.id)} <= set(ids(answer))
        response = self.post(
            api,
            lib.key,
            retrieval_id=answer["retrieval_id"],
            used_item_ids=[str(lib.do.id)],
            outcome="success",
            reason="it boiled",
        )
        assert response.status_code == 200, response.text
        assert response.json()["used_item_ids"] == [str(lib.do.id)]
        db.expire_all()
        assert (lib.do.alpha, lib.do.beta) == (2.0, 1.0)
        assert (lib.boil.alpha, lib.boil.beta) == (1.0, 1.0)
        assert (lib.avoid.alpha, lib.avoid.beta) == (1.0, 1.0)
        row = db.get(Retrieval, uuid.UUID(answer["retrieval_id"]))
        assert row is not None and row.outcome == Outcome.SUCCESS and row.feedback_reason == "it boiled"
        assert row.feedback_at is not None
        used = db.scalars(
            select(RetrievalItem.item_id).where(RetrievalItem.retrieval_id == row.id, RetrievalItem.used)
        ).all()
        assert used == [lib.do.id]

        again = self.post(api, lib.key, retrieval_id=answer["retrieval_id"], outcome="failure")
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "feedback_exists"

    def test_harmful_counts_double(self, api: TestClient, db: Session, lib: Library) -> None:
        """Harmful adds two to beta of each used item."""
        answer = retrieve(api, lib.key, **WIDE)
        used = [str(lib.do.id), str(lib.boil.id)]
        assert (
            self.post(
                api, lib.key, retrieval_id=answer["retrieval_id"], used_item_ids=used, outcome="harmful"
            ).status_code
            == 200
        )
        db.expire_all()
        assert (lib.do.alpha, lib.do.beta) == (1.0, 3.0)
        assert (lib.boil.alpha, lib.boil.beta) == (1.0, 3.0)

    def test_unlisted_item_is_422_and_changes_nothing(
        self, api: TestClient, db: Session, lib: Library
    ) -> None:
        """An item the retrieval did not list cannot be used; the retrieval stays open."""
        answer = retrieve(api, lib.key, **WIDE)
        response = self.post(
            api,
            lib.key,
            retrieval_id=answer["retrieval_id"],
            used_item_ids=[str(lib.do.id), str(lib.retired.id)],
            outcome="success",
        )
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "item_not_in_retrieval"
        assert response.json()["error"]["detail"]["item_ids"] == [str(lib.retired.id)]
        db.expire_all()
        assert lib.do.alpha == 1.0
        row = db.get(Retrieval, uuid.UUID(answer["retrieval_id"]))
        assert row is not None and row.outcome is None

    def test_unknown_or_foreign_retrieval_is_404(
        self, api: TestClient, db: Session, lib: Library, embedder: Any
    ) -> None:
        """A retrieval id that is unknown, or another tenant's, answers 404."""
        unknown = self.post(api, lib.key, retrieval_id=str(uuid.uuid4()), outcome="success")
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "retrieval_not_found"
        other = build_library(db, embedder)
        theirs = retrieve(api, other.key)
        foreign = self.post(api, lib.key, retrieval_id=theirs["retrieval_id"], outcome="success")
        assert foreign.status_code == 404

    def test_bad_outcome_is_422(self, api: TestClient, lib: Library) -> None:
        """Only success, failure and harmful are outcomes."""
        response = self.post(api, lib.key, retrieval_id=str(uuid.uuid4()), outcome="meh")
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "validation_error"


class TestStats:
    def log(
        self, db: Session, lib: Library, listed: list[uuid.UUID], withheld: uuid.UUID | None = None
    ) -> uuid.UUID:
        """Record a retrieval that listed these experiences and withheld one."""
        retrieval_id = uuid.uuid4()
        items = [LoggedItem(i, ItemKind.EXPERIENCE, None, n, 0.1) for n, i in enumerate(listed, start=1)]
        if withheld is not None:
            items.append(LoggedItem(withheld, ItemKind.EXPERIENCE, None, len(items) + 1, 0.05, withheld=True))
        retrievals.add(
            db,
            RetrievalLog(
                retrieval_id=retrieval_id,
                tenant_id=lib.tenant.id,
                api_key_id=None,
                session_id=None,
                step=None,
                situation_hash="0" * 64,
                strategy_id=None,
                pin=False,
                items=tuple(items),
            ),
            latency_ms=1.0,
        )
        return retrieval_id

    def test_counts_posterior_and_uplift(self, api: TestClient, db: Session, lib: Library) -> None:
        """Uses and outcomes count feedback; uplift compares answers that listed and withheld the item."""
        x, other = lib.do.id, lib.sink.id
        tenant = lib.tenant.id
        feedback.give(db, tenant, self.log(db, lib, [x, other]), [x], Outcome.SUCCESS)
        feedback.give(db, tenant, self.log(db, lib, [x, other]), [other], Outcome.SUCCESS)
        feedback.give(db, tenant, self.log(db, lib, [other], withheld=x), [], Outcome.SUCCESS)
        feedback.give(db, tenant, self.log(db, lib, [other], withheld=x), [other], Outcome.FAILURE)
        self.log(db, lib, [x])  # no outcome yet
        db.commit()

        response = api.get(f"/v1/experiences/{x}/stats", headers=auth(lib.key))
        assert response.status_code == 200, response.text
        assert response.json() == {
            "uses": 1,
            "successes": 1,
            "failures": 0,
            "harmful": 0,
            "listed": 3,
            "posterior": {"alpha": 2.0, "beta": 1.0, "mean": pytest.approx(2 / 3)},
            "uplift": {"with": 1.0, "without": 0.5, "uplift": 0.5, "n_with": 2, "n_without": 2},
        }

    def test_skill_without_history(self, api: TestClient, lib: Library) -> None:
        """A skill never retrieved has zero counts and no uplift."""
        response = api.get(f"/v1/skills/{lib.boil.id}/stats", headers=auth(lib.key))
        assert response.status_code == 200
        body = response.json()
        assert (body["uses"], body["listed"]) == (0, 0)
        assert body["uplift"] == {"with": None, "without": None, "uplift": None, "n_with": 0, "n_without": 0}

    def test_skill_stats_after_feedback(self, api: TestClient, lib: Library) -> None:
        """A used skill's failure shows in its stats."""
        answer = retrieve(api, lib.key, **WIDE)
        api.post(
            "/v1/feedback",
            json={
                "retrieval_id": answer["retrieval_id"],
                "used_item_ids": [str(lib.boil.id)],
                "outcome": "failure",
            },
            headers=auth(lib.key),
        )
        body = api.get(f"/v1/skills/{lib.boil.id}/stats", headers=auth(lib.key)).json()
        assert (body["uses"], body["failures"], body["listed"]) == (1, 1, 1)
        assert body["posterior"] == {"alpha": 1.0, "beta": 2.0, "mean": pytest.approx(1 / 3)}
        assert body["uplift"]["with"] == 0.0 and body["uplift"]["uplift"] is None

    def test_other_tenants_item_is_404(self, api: TestClient, db: Session, lib: Library) -> None:
        """Stats are tenant-scoped like the items."""
        key = make_key(db, make_tenant(db))
        assert api.get(f"/v1/experiences/{lib.do.id}/stats", headers=auth(key)).status_code == 404
        assert api.get(f"/v1/skills/{lib.boil.id}/stats", headers=auth(key)).status_code == 404


class TestTrajectoryOutcome:
    def test_posted_trajectory_settles_its_retrievals(
        self, api: TestClient, db: Session, lib: Library, settings: Settings, embedder: Any
    ) -> None:
        """Steps naming a retrieval and used items settle it with the run's outcome, once."""
        won = retrieve(api, lib.key, session_id="run-9", step=0, **WIDE)
        lost = retrieve(api, lib.key, session_id="run-9", step=1, **WIDE)
        settled_first = retrieve(api, lib.key, session_id="run-9", step=2, **WIDE)
        response = api.post(
            "/v1/feedback",
            json={
                "retrieval_id": settled_first["retrieval_id"],
                "outcome": "harmful",
                "used_item_ids": [str(lib.sink.id)],
            },
            headers=auth(lib.key),
        )
        assert response.status_code == 200, response.text
        steps = [
            make_step(
                0, retrieval_id=won["retrieval_id"], used_item_ids=[str(lib.do.id), str(lib.retired.id)]
            ),
            make_step(1, retrieval_id=settled_first["retrieval_id"], used_item_ids=[str(lib.avoid.id)]),
            make_step(2, retrieval_id="not-a-uuid", used_item_ids=["nor-this"]),
        ]
        failed_steps = [make_step(0, retrieval_id=lost["retrieval_id"], used_item_ids=[str(lib.boil.id)])]
        accepted = ingestion.accept(
            db,
            lib.tenant.id,
            [
                make_trajectory(steps=steps),
                make_trajectory(steps=failed_steps, outcome={"success": False, "score": 0.0}),
            ],
            schedule=False,
        )
        result = pipeline.process_ingest(db, accepted.event_id, embedder=embedder, settings=settings)
        assert result["retrievals_settled"] == 2
        db.expire_all()
        assert (lib.do.alpha, lib.do.beta) == (2.0, 1.0)
        assert (lib.boil.alpha, lib.boil.beta) == (1.0, 2.0)
        assert (lib.avoid.alpha, lib.avoid.beta) == (1.0, 1.0)  # its retrieval had feedback already
        assert (lib.sink.alpha, lib.sink.beta) == (1.0, 3.0)
        outcomes = {
            r.id: r.outcome for r in db.scalars(select(Retrieval).where(Retrieval.tenant_id == lib.tenant.id))
        }
        assert outcomes[uuid.UUID(won["retrieval_id"])] == Outcome.SUCCESS
        assert outcomes[uuid.UUID(lost["retrieval_id"])] == Outcome.FAILURE
        assert outcomes[uuid.UUID(settled_first["retrieval_id"])] == Outcome.HARMFUL

    def test_a_rewarded_step_credits_what_it_used_in_a_failed_run(
        self, api: TestClient, db: Session, lib: Library, settings: Settings, embedder: Any
    ) -> None:
        """What was used where the score rose is credited; what was used where the run then failed, blamed."""
        found = retrieve(api, lib.key, session_id="run-10", step=0, **WIDE)
        later = retrieve(api, lib.key, session_id="run-10", step=1, **WIDE)
        steps = [
            make_step(0, retrieval_id=found["retrieval_id"], used_item_ids=[str(lib.do.id)], reward=0.5),
            make_step(1, retrieval_id=later["retrieval_id"], used_item_ids=[str(lib.sink.id)], reward=0.0),
        ]
        accepted = ingestion.accept(
            db,
            lib.tenant.id,
            [make_trajectory(steps=steps, outcome={"success": False, "score": 0.5})],
            schedule=False,
        )
        result = pipeline.process_ingest(db, accepted.event_id, embedder=embedder, settings=settings)
        assert result["retrievals_settled"] == 2
        db.expire_all()
        assert (lib.do.alpha, lib.do.beta) == (2.0, 1.0)
        assert (lib.sink.alpha, lib.sink.beta) == (1.0, 2.0)

    def test_unknown_outcome_settles_nothing(self, api: TestClient, db: Session, lib: Library) -> None:
        """A trajectory without a known outcome leaves its retrievals open."""
        answer = retrieve(api, lib.key)
        step = make_step(0, retrieval_id=answer["retrieval_id"], used_item_ids=ids(answer)[:1])
        accepted = ingestion.accept(
            db,
            lib.tenant.id,
            [make_trajectory(steps=[step], outcome={"success": None, "score": None})],
            schedule=False,
        )
        rows = db.scalars(select(Trajectory).where(Trajectory.id.in_(accepted.trajectory_ids))).all()
        steps = trajectories.steps_of_many(db, [t.id for t in rows])
        assert feedback.apply_trajectory_outcomes(db, lib.tenant.id, rows, steps) == 0
        retrieval = db.get(Retrieval, uuid.UUID(answer["retrieval_id"]))
        assert retrieval is not None and retrieval.outcome is None


class TestKeyCache:
    def test_revoked_through_the_api_is_refused_at_once(self, api: TestClient, db: Session) -> None:
        """A key checked a moment ago and then revoked through this process's API is refused next time."""
        tenant = make_tenant(db)
        admin = make_key(db, tenant, Scope.ADMIN)
        created = api.post("/v1/keys", json={"name": "bot", "scopes": ["agent"]}, headers=auth(admin)).json()
        assert api.get("/v1/ping", headers=auth(created["key"])).status_code == 200
        assert api.delete(f"/v1/keys/{created['id']}", headers=auth(admin)).status_code == 200
        assert api.get("/v1/ping", headers=auth(created["key"])).status_code == 401
        assert (
            api.post(
                "/v1/retrieve", json={"task": TASK, "observation": KITCHEN}, headers=auth(created["key"])
            ).status_code
            == 401
        )

    def test_checked_key_is_trusted_within_the_ttl(self, api: TestClient, db: Session) -> None:
        """Revoked behind the API's back (another process), a cached key works until the TTL or a forget."""
        api.app.state.key_cache = KeyCache(ttl_s=3600, max_size=10)
        tenant = make_tenant(db)
        row, plaintext = tenants.create_key(db, tenant.id, "k", [Scope.AGENT])
        assert api.get("/v1/ping", headers=auth(plaintext)).status_code == 200
        tenants.revoke_key(row)
        db.flush()
        assert api.get("/v1/ping", headers=auth(plaintext)).status_code == 200
        api.app.state.key_cache.forget(row.key_hash)
        assert api.get("/v1/ping", headers=auth(plaintext)).status_code == 401

    def test_zero_ttl_checks_every_call(self, api: TestClient, db: Session) -> None:
        """With no TTL nothing is cached."""
        api.app.state.key_cache = KeyCache(ttl_s=0, max_size=10)
        row, plaintext = tenants.create_key(db, make_tenant(db).id, "k", [Scope.AGENT])
        assert api.get("/v1/ping", headers=auth(plaintext)).status_code == 200
        tenants.revoke_key(row)
        db.flush()
        assert api.get("/v1/ping", headers=auth(plaintext)).status_code == 401


class TestSearchParts:
    def test_ef_search_grows_with_top_k(self) -> None:
        """Four candidates per wanted item, never below the floor or top_k."""
        assert ef_search(8, 40) == 40
        assert ef_search(50, 40) == 200
        assert ef_search(3, 1) == 12

    def test_content_words(self) -> None:
        """Placeholders and stop words go; order and distinctness stay; the limit holds."""
        key = normalize_observation(KITCHEN)
        words = content_words([key, TASK], 6)
        assert words == ("room", "kitchen", "stove", "turned", "sink", "pot")
        assert "num" not in content_words([key], 50)
        assert content_words(["", "the and of"], 5) == ()

    def test_vector_literal_refuses_bad_vectors(self) -> None:
        """Only finite 384-dim vectors become SQL literals."""
        assert vector_literal([0.5] * 384).startswith("[0.5,0.5")
        with pytest.raises(ValueError, match="dimensions"):
            vector_literal([0.5] * 3)
        with pytest.raises(ValueError, match="non-finite"):
            vector_literal([math.nan] * 384)
        with pytest.raises(ValueError, match="non-finite"):
            vector_literal([1e300] * 384)

    def test_vector_literal_is_the_vector_the_shortest_doubles_gave(self, db: Session) -> None:
        """Nine digits per float4 give pgvector exactly what `repr` of each double gave, in less text."""
        rng = np.random.default_rng(7)
        rows = [rng.normal(size=384).astype(np.float32).tolist() for _ in range(20)]
        rows += [rng.normal(scale=1e-3, size=384).tolist() for _ in range(20)]  # doubles, not float4
        rows.append([1e-45, -3.4e38, 0.1, *[0.0] * 381])
        for row in rows:
            shortest = "[" + ",".join(repr(float(x)) for x in row) + "]"
            ours = vector_literal(row)
            assert len(ours) <= len(shortest)
            same = db.execute(
                text("SELECT CAST(:a AS vector) = CAST(:b AS vector)"), {"a": ours, "b": shortest}
            ).scalar_one()
            assert same, row


class TestPreparedSearch:
    """The search runs as a prepared statement, planned once per connection and shape."""

    @staticmethod
    def _query(lib: Library, embedder: SentenceTransformerEmbedder, **changes: Any) -> SearchQuery:
        key = normalize_observation(KITCHEN)
        values: dict[str, Any] = {
            "tenant_id": lib.tenant.id,
            "embedding": QueryVector.of(embedder.embed_query(key)),
            "task_embedding": QueryVector.of(embedder.embed_query(TASK)),
            "terms": content_words([key, TASK], 12),
            "top_k": 8,
        }
        return SearchQuery(**(values | changes))

    @staticmethod
    def _plans(db: Session) -> dict[str, tuple[int, int]]:
        """Generic and custom plans so far of the search statements the connection holds."""
        rows = db.execute(
            text(
                "SELECT name, generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE statement LIKE '%exp_vec AS%'"
            )
        )
        return {name: (generic, custom) for name, generic, custom in rows}

    def test_answers_what_the_literal_text_answers(
        self, db: Session, lib: Library, embedder: SentenceTransformerEmbedder
    ) -> None:
        """For every shape, the prepared statement's rows are those of the SELECT with literals."""
        config = SearchConfig()
        shapes: list[dict[str, Any]] = [
            {},
            {"terms": ()},
            {"session_id": "run-1", "include_body": True},
            {"filters": SearchFilters(domain="kitchen", level="atomic", polarity="do")},
            {"filters": SearchFilters(domain="kitchen"), "top_k": 30},
        ]
        driver = db.connection().connection.driver_connection
        assert driver is not None
        for changes in shapes:
            query = self._query(lib, embedder, **changes)
            with driver.cursor() as cursor:
                cursor.execute(search_module.build(query, config).as_string(driver))
                while cursor.description is None and cursor.nextset():
                    pass
                literal = search_module._parse(cursor.fetchall())
            assert search_module.search(db, query, config) == literal, changes
            assert search_module.search(db, query, config) == literal, changes
        assert literal.candidates

    def test_prepares_a_shape_once_with_a_generic_plan(
        self, db: Session, lib: Library, embedder: SentenceTransformerEmbedder
    ) -> None:
        """Other values of one shape reuse its statement and its one generic plan."""
        config = SearchConfig()
        search_module.search(db, self._query(lib, embedder), config)
        before = self._plans(db)
        for observation in ("You are in the hallway.", "A locked door.", "The sink is full."):
            vector = QueryVector.of(embedder.embed_query(normalize_observation(observation)))
            search_module.search(db, self._query(lib, embedder, embedding=vector), config)
        after = self._plans(db)
        assert after.keys() == before.keys()
        changed = {name: plans for name, plans in after.items() if plans != before[name]}
        assert len(changed) == 1
        [(name, (generic, custom))] = changed.items()
        assert generic == before[name][0] + 3
        assert custom == before[name][1] == 0

    def test_database_errors_are_sqlalchemy_errors(
        self, db: Session, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A failing search raises what SQLAlchemy raises, so the app's database error handling applies."""
        monkeypatch.setattr(
            search_module,
            "statement",
            lambda *_: search_module.Statement(sql.SQL("SELECT * FROM no_such_table"), {}, 40),
        )
        query = SearchQuery(tenant_id=uuid.uuid4(), embedding=[0.0] * 384, terms=(), top_k=1)
        with pytest.raises(DBAPIError, match="no_such_table"):
            search_module.search(db, query, SearchConfig())

    def test_recovers_after_an_error(
        self,
        db: Session,
        lib: Library,
        embedder: SentenceTransformerEmbedder,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """After a failed search, the next one reads what the connection holds and answers."""
        query = self._query(lib, embedder)
        expected = search_module.search(db, query, SearchConfig())
        with monkeypatch.context() as patch:
            patch.setattr(
                search_module,
                "statement",
                lambda *_: search_module.Statement(sql.SQL("SELECT * FROM no_such_table"), {}, 40),
            )
            with pytest.raises(DBAPIError, match="no_such_table"), db.begin_nested():
                search_module.search(db, query, SearchConfig())
        assert search_module.search(db, query, SearchConfig()) == expected


class TestQueryEmbeddings:
    def test_keeps_the_vector_text_per_model_and_key(self) -> None:
        """One model call per (model, key); the entry is the pgvector text the search sends."""
        embedder = _CountingEmbedder("m1")
        cache = QueryEmbeddings(size=8)
        first = cache.get("kitchen", embedder)
        assert isinstance(first, QueryVector)
        assert first.text == vector_literal(embedder.embed_query("kitchen"))
        assert cache.get("kitchen", embedder) is first
        assert embedder.calls == 2  # the one above, and ours for the comparison
        other = _CountingEmbedder("m2")
        assert cache.get("kitchen", other) is not first
        assert other.calls == 1

    def test_least_recently_used_goes_first(self) -> None:
        """The cache never holds more than its size; a hit keeps an entry."""
        embedder = _CountingEmbedder("m")
        cache = QueryEmbeddings(size=2)
        a = cache.get("a", embedder)
        cache.get("b", embedder)
        assert cache.get("a", embedder) is a
        cache.get("c", embedder)  # "b" goes
        assert len(cache) == 2
        assert cache.get("a", embedder) is a
        calls = embedder.calls
        cache.get("b", embedder)
        assert embedder.calls == calls + 1

    def test_size_zero_keeps_nothing(self) -> None:
        """Size 0: every call embeds."""
        embedder = _CountingEmbedder("m")
        cache = QueryEmbeddings(size=0)
        cache.get("a", embedder)
        cache.get("a", embedder)
        assert (embedder.calls, len(cache)) == (2, 0)


class _CountingEmbedder:
    """A deterministic embedder that counts its calls."""

    dim = 384

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.calls = 0

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.embed_query(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        self.calls += 1
        seed = int.from_bytes(hashlib.sha256(f"{self.model_name}:{text}".encode()).digest()[:8], "big")
        vector = np.random.default_rng(seed).normal(size=384)
        return [float(x) for x in vector / np.linalg.norm(vector)]
