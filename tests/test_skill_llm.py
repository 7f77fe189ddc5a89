"""The skill distillers: the LLM one against a real loopback chat-completions server and a real Redis.

Unit tests drive `LLMDistiller` with scripted replies (tests/openai_server.py) and check what it
returns, what it sends and what it counts; the last tests run the whole skill cycle with it on the
test database.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import skill_md
from app.config import Settings
from app.embedding import SentenceTransformerEmbedder, get_embedder
from app.evolver import skill_cycle
from app.evolver import skill_distill as distill
from app.evolver.skill_llm import (
    PROMPT_VERSION,
    DistillContext,
    Distilled,
    DistillerConfigError,
    FailedEnding,
    HeuristicDistiller,
    LLMDistiller,
    Rejected,
    build_context,
    build_messages,
    draft_fingerprint,
    get_skill_distiller,
    load_prompt,
    prompt_hash,
)
from app.skill_md import EVIDENCE, PITFALLS, PROCEDURE, WHEN_TO_USE, Section, SkillDocument
from app.skills import service
from app.storage.models import Skill, SkillEvent, SkillEventKind, SkillLevel, Tenant
from tests.factories import make_tenant
from tests.openai_server import FakeOpenAI, Reply, completion, error, running
from tests.test_skill_cycle import animal_run, boil_run, ingest

MODEL = "test-model"
TOKENS = 321
GOOD: dict[str, Any] = {
    "description": (
        "Plan for boiling the substance a task names. Use it at the start of such a task. "
        "Not for other kinds of task."
    ),
    "when_to_use": "At the start of a task that asks you to boil a substance.",
    "procedure": [
        "Open the way with `open door to kitchen`.",
        "Enter with `go to kitchen`.",
        "Do `focus on <task:substance>` on the substance your task names.",
        "Heat it: `activate stove`.",
        "Then `wait` until it changes state.",
    ],
    "pitfalls": ["Do not `pick up` what cannot be carried; it ends runs."],
    "rewrite_reason": None,
}


def draft(*extra_steps: str) -> SkillDocument:
    """A heuristic strategy draft: five steps, one pitfall, its Evidence section."""
    templates = ["open door to kitchen", "go to kitchen", "focus on <task:object>", "activate stove", "wait"]
    procedure = distill.Procedure(
        steps=tuple(
            distill.ProcedureStep(template=t, examples=(t,), support=1.0) for t in [*templates, *extra_steps]
        ),
        runs=(uuid.uuid4(), uuid.uuid4()),
        agents=("agent-1", "agent-2"),
    )
    return distill.strategy_document(
        "boil-water",
        "Your task is to boil water.",
        procedure,
        domain="scienceworld",
        pitfalls=["`pick up <object>` failed with: You cannot pick that up (1 run)"],
        failures=1,
    )


def context(**changes: Any) -> DistillContext:
    """A context of a new skill for a fresh tenant."""
    fields: dict[str, Any] = {
        "tenant_id": uuid.uuid4(),
        "level": "strategy",
        "domain": "scienceworld",
        "examples": (("open door to kitchen", "go to kitchen", "focus on water", "activate stove", "wait"),),
        "failures": (FailedEnding("pick up stove", "You cannot pick that up."),),
        "avoid": (distill.AvoidNote("pick up <object>", "Avoid picking up fixed things.", 3),),
    }
    return DistillContext(**(fields | changes))


def answer(**changes: Any) -> dict[str, Any]:
    """A response body whose answer is GOOD with `changes`, reporting TOKENS tokens."""
    return completion(json.dumps(GOOD | changes), total_tokens=TOKENS)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    """A running fake chat-completions server."""
    with running() as server:
        yield server


@pytest.fixture
def budget_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the test Redis; the budget counters the test made are deleted afterwards."""
    client = redis.Redis.from_url(redis_url)
    yield client
    keys = list(client.scan_iter("skillfoundry:llm-tokens:skills:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def make_distiller(budget_redis: redis.Redis) -> Iterator[Callable[..., LLMDistiller]]:
    """Build distillers (no retries, short timeouts by default) and close their clients afterwards."""
    made: list[LLMDistiller] = []

    def make(base_url: str, **options: Any) -> LLMDistiller:
        options = {
            "api_key": "test-key",
            "model": MODEL,
            "redis_client": budget_redis,
            "tokens_per_day": 100_000,
            "timeout_s": 5.0,
            "max_retries": 0,
        } | options
        distiller = LLMDistiller(base_url, **options)
        made.append(distiller)
        return distiller

    yield make
    for distiller in made:
        distiller.close()


def spent(client: redis.Redis, distiller: LLMDistiller, tenant_id: uuid.UUID) -> int:
    raw = client.get(distiller.budget.key(tenant_id))
    return int(raw) if raw is not None else 0


class TestDistilled:
    def test_a_good_answer_becomes_a_valid_document_with_the_drafts_evidence(
        self, fake: FakeOpenAI, make_distiller: Callable[..., LLMDistiller], budget_redis: redis.Redis
    ) -> None:
        fake.script(answer())
        subject, ctx = draft(), context()
        distiller = make_distiller(fake.url)

        result = distiller.distill(subject, ctx)

        assert isinstance(result, Distilled)
        doc = result.doc
        assert skill_md.validate(doc) == []
        assert (result.distiller, result.llm_model, result.prompt_version) == ("llm", MODEL, PROMPT_VERSION)
        assert result.rewrite_reason is None
        assert doc.name == subject.name and doc.title == subject.title
        assert doc.metadata == {
            **subject.metadata,
            "distiller": "llm",
            "draft-sha256": draft_fingerprint(subject),
        }
        assert doc.description == GOOD["description"]
        assert [s.title for s in doc.sections] == [WHEN_TO_USE, PROCEDURE, PITFALLS, EVIDENCE]
        assert doc.section(EVIDENCE) == subject.section(EVIDENCE)
        procedure = doc.section(PROCEDURE)
        assert procedure is not None
        # The draft's slot legend stays; the steps are the answer's, numbered.
        assert procedure.body.startswith("`<task:object>`: fill from your own task.\n\n1. Open the way")
        assert "5. Then `wait` until it changes state." in procedure.body
        assert doc.section(PITFALLS) == Section(PITFALLS, f"- {GOOD['pitfalls'][0]}")
        assert spent(budget_redis, distiller, ctx.tenant_id) == TOKENS
        ttl = budget_redis.ttl(distiller.budget.key(ctx.tenant_id))
        assert 0 < ttl <= 2 * 86400

    def test_it_sends_the_draft_the_runs_and_a_json_request_and_hashes_exactly_that(
        self, fake: FakeOpenAI, make_distiller: Callable[..., LLMDistiller]
    ) -> None:
        fake.script(answer())
        subject, ctx = draft(), context()
        distiller = make_distiller(fake.url)

        result = distiller.distill(subject, ctx)

        assert isinstance(result, Distilled)
        [request] = fake.requests
        assert request["model"] == MODEL
        assert request["response_format"] == {"type": "json_object"}
        assert request["temperature"] == 0
        assert fake.headers[0]["authorization"] == "Bearer test-key"
        system, user = (m["content"] for m in request["messages"])
        assert system == load_prompt().system
        assert skill_md.render(subject).rstrip() in user
        assert "- `focus on <task:object>`" in user
        assert "focus on water -> activate stove" in user
        assert "pick up stove -> error: You cannot pick that up." in user
        assert "Avoid picking up fixed things." in user
        assert "None: this is a new skill." in user
        assert "{{" not in user
        sent = json.dumps(request["messages"], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        assert result.prompt_hash == hashlib.sha256(sent.encode()).hexdigest()
        assert result.prompt_hash == distiller.prompt_hash(subject, ctx) == prompt_hash(subject, ctx)

    def test_the_head_is_sent_for_editing_and_a_rewrite_reason_is_kept(
        self, fake: FakeOpenAI, make_distiller: Callable[..., LLMDistiller]
    ) -> None:
        head = draft()
        fake.script(answer(rewrite_reason="  The runs now  wait before heating. "))

        result = make_distiller(fake.url).distill(draft("wait"), context(head=head))

        assert isinstance(result, Distilled)
        assert result.rewrite_reason == "The runs now wait before heating."
        user = fake.requests[0]["messages"][1]["content"]
        assert "edit it rather than rewrite it" in user
        assert "````markdown\n" + skill_md.render(head).rstrip() + "\n````" in user

    def test_fences_numbering_and_slot_variants_are_accepted(
        self, fake: FakeOpenAI, make_distiller: Callable[..., LLMDistiller]
    ) -> None:
        steps = ["1. `open door to kitchen`", "2) `go to <room>`", "- `focus on` the substance", "`wait`"]
        body = json.dumps(GOOD | {"procedure": steps})
        fake.script(completion(f"```json\n{body}\n```"))

        result = make_distiller(fake.url).distill(draft("go to <object>"), context())

        assert isinstance(result, Distilled)
        procedure = result.doc.section(PROCEDURE)
        assert procedure is not None
        assert procedure.body.endswith("2. `go to <room>`\n3. `focus on` the substance\n4. `wait`")

    def test_a_rate_limit_is_retried_by_the_client(
        self, fake: FakeOpenAI, make_distiller: Callable[..., LLMDistiller]
    ) -> None:
        # retry-after-ms keeps the client's backoff short; the retry itself still happens.
        fake.script(error(429, **{"retry-after-ms": "10"}), answer())

        result = make_distiller(fake.url, max_retries=2).distill(draft(), context())

        assert isinstance(result, Distilled)
        assert len(fake.requests) == 2

    def test_the_prompt_hash_is_stable_and_follows_the_draft(self) -> None:
        ctx = context()

        assert prompt_hash(draft(), ctx) == prompt_hash(draft(), ctx)
        assert prompt_hash(draft("wait"), ctx) != prompt_hash(draft(), ctx)
        assert prompt_hash(draft(), context(head=draft())) != prompt_hash(draft(), ctx)


class TestRejected:
    @pytest.mark.parametrize(
        "content",
        ["{not json", "Sure! Here is the skill.", '{"description": "cut'],
        ids=["bad-json", "prose", "truncated"],
    )
    def test_malformed_json(
        self, fake: FakeOpenAI, make_distiller: Callable[..., LLMDistiller], content: str
    ) -> None:
        fake.script(completion(content))

        result = make_distiller(fake.url).distill(draft(), context())

        assert isinstance(result, Rejected)
        assert result.reason == "malformed_json"
        assert result.prompt_hash == prompt_hash(draft(), context(tenant_id=uuid.uuid4()))

    @pytest.mark.parametrize(
        ("changes", "why"),
        [
            ({"description": "Plan for boiling water. Use it at the start."}, "Not for"),
            ({"description": "Boils water. Not for other tasks."}, "when to use"),
            ({"procedure": ["Do `eat stove` first."]}, "`eat stove`"),
            ({"procedure": ["Do `focus on water` first."]}, "`focus on water`"),
            ({"pitfalls": ["`open door to garden` fails."]}, "pitfall 1"),
            ({"procedure": ["Open `open door to kitchen"]}, "unmatched backtick"),
            ({"procedure": ["See [the guide](https://example.com)."]}, "links to"),
            ({"procedure": []}, "procedure"),
            ({"procedure": ["`wait`"] * 31}, "procedure"),
            ({"procedure": ["`wait` " + "x" * 300]}, "procedure.0"),
            ({"pitfalls": ["careful"] * 11}, "pitfalls"),
            ({"description": "Use it when boiling. Not for other tasks. " + "x" * 1024}, "description"),
            ({"when_to_use": None}, "when_to_use"),
        ],
        ids=[
            "no-not-for",
            "no-when",
            "invented-action",
            "concrete-object",
            "invented-in-pitfall",
            "stray-backtick",
            "new-link",
            "no-steps",
            "too-many-steps",
            "long-step",
            "too-many-pitfalls",
            "long-description",
            "missing-field",
        ],
    )
    def test_schema(
        self,
        fake: FakeOpenAI,
        make_distiller: Callable[..., LLMDistiller],
        changes: dict[str, Any],
        why: str,
    ) -> None:
        fake.script(answer(**changes))

        result = make_distiller(fake.url).distill(draft(), context())

        assert isinstance(result, Rejected)
        assert result.reason == "schema"
        assert why in result.detail
        assert result.llm_model == MODEL and result.prompt_version == PROMPT_VERSION

    def test_a_json_array_is_a_schema_failure(
        self, fake: FakeOpenAI, make_distiller: Callable[..., LLMDistiller]
    ) -> None:
        fake.script(completion(json.dumps([GOOD])))

        result = make_distiller(fake.url).distill(draft(), context())

        assert isinstance(result, Rejected) and result.reason == "schema"

    @pytest.mark.parametrize(
        "reply",
        [
            Reply(b"{truncated", content_type="application/json"),
            Reply(b"plain words", content_type="text/plain"),
            {**completion(""), "choices": []},
        ],
        ids=["body-json", "body-text", "no-choices"],
    )
    def test_malformed_response(
        self, fake: FakeOpenAI, make_distiller: Callable[..., LLMDistiller], reply: Reply | dict[str, Any]
    ) -> None:
        fake.script(reply)

        result = make_distiller(fake.url).distill(draft(), context())

        assert isinstance(result, Rejected) and result.reason == "malformed_response"

    def test_an_answer_that_makes_the_skill_invalid(
        self, fake: FakeOpenAI, make_distiller: Callable[..., LLMDistiller]
    ) -> None:
        # A draft just within the body limit, and an answer whose long steps push it over.
        subject = draft()
        evidence = subject.section(EVIDENCE)
        assert evidence is not None
        note = "- Note: one more run of the kitchen task, as recorded."

        def with_notes(n: int) -> SkillDocument:
            body = "\n".join([evidence.body, *[note] * n])
            return replace(subject, sections=(*subject.sections[:3], Section(EVIDENCE, body)))

        n = 0
        limit = skill_md.MAX_BODY_TOKENS - 300
        while skill_md.estimate_tokens(skill_md.render_body(with_notes(n + 1))) < limit:
            n += 1
        subject = with_notes(n)
        assert skill_md.validate(subject) == []
        long_steps = [f"Then `wait` for it, {'and keep watching it closely ' * 9}." for _ in range(30)]
        fake.script(answer(procedure=long_steps))

        result = make_distiller(fake.url).distill(subject, context())

        assert isinstance(result, Rejected)
        assert result.reason == "invalid_skill"
        assert "tokens" in result.detail

    def test_a_timeout(self, fake: FakeOpenAI, make_distiller: Callable[..., LLMDistiller]) -> None:
        fake.script(Reply(answer(), delay_s=1.5))
        distiller = make_distiller(fake.url, timeout_s=0.5, max_retries=0)

        started = time.monotonic()
        result = distiller.distill(draft(), context())

        assert isinstance(result, Rejected) and result.reason == "timeout"
        assert time.monotonic() - started < 1.2

    def test_server_errors_beyond_the_retries(
        self, fake: FakeOpenAI, make_distiller: Callable[..., LLMDistiller]
    ) -> None:
        fake.script(*(error(500, **{"retry-after-ms": "10"}) for _ in range(3)))

        result = make_distiller(fake.url, max_retries=2).distill(draft(), context())

        assert isinstance(result, Rejected) and result.reason == "server_error"
        assert "HTTP 500 after 2 retries" in result.detail
        assert len(fake.requests) == 3

    def test_rate_limits_beyond_the_retries(
        self, fake: FakeOpenAI, make_distiller: Callable[..., LLMDistiller]
    ) -> None:
        fake.script(*(error(429, **{"retry-after-ms": "10"}) for _ in range(2)))

        result = make_distiller(fake.url, max_retries=1).distill(draft(), context())

        assert isinstance(result, Rejected) and result.reason == "rate_limited"
        assert len(fake.requests) == 2

    def test_a_client_error_is_not_retried(
        self, fake: FakeOpenAI, make_distiller: Callable[..., LLMDistiller]
    ) -> None:
        fake.script(error(400), answer())

        result = make_distiller(fake.url, max_retries=2).distill(draft(), context())

        assert isinstance(result, Rejected) and result.reason == "http_error"
        assert len(fake.requests) == 1

    def test_a_refused_connection(self, make_distiller: Callable[..., LLMDistiller]) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        # The port was free a moment ago and nothing listens on it now: the connection is refused.
        result = make_distiller(f"http://127.0.0.1:{port}/v1").distill(draft(), context())

        assert isinstance(result, Rejected) and result.reason == "connection"


class TestBudget:
    def test_an_exhausted_budget_sends_nothing(
        self, fake: FakeOpenAI, make_distiller: Callable[..., LLMDistiller], budget_redis: redis.Redis
    ) -> None:
        fake.script(answer())
        distiller = make_distiller(fake.url, tokens_per_day=1000)
        ctx = context()
        budget_redis.set(distiller.budget.key(ctx.tenant_id), 1000)

        result = distiller.distill(draft(), ctx)

        assert isinstance(result, Rejected)
        assert result.reason == "budget_exhausted"
        assert "1000 of 1000" in result.detail
        assert result.prompt_hash == prompt_hash(draft(), ctx)
        assert fake.requests == []

    def test_each_tenant_has_its_own_budget(
        self, fake: FakeOpenAI, make_distiller: Callable[..., LLMDistiller], budget_redis: redis.Redis
    ) -> None:
        fake.script(answer())
        distiller = make_distiller(fake.url, tokens_per_day=1000)
        budget_redis.set(distiller.budget.key(uuid.uuid4()), 5000)

        assert isinstance(distiller.distill(draft(), context()), Distilled)

    def test_a_bad_answer_still_counts_its_tokens(
        self, fake: FakeOpenAI, make_distiller: Callable[..., LLMDistiller], budget_redis: redis.Redis
    ) -> None:
        fake.script(completion("{not json", total_tokens=40), completion("{not json", total_tokens=40))
        distiller = make_distiller(fake.url, tokens_per_day=50)
        ctx = context()

        first = distiller.distill(draft(), ctx)
        second = distiller.distill(draft(), ctx)
        third = distiller.distill(draft(), ctx)

        assert isinstance(first, Rejected) and first.reason == "malformed_json"
        assert isinstance(second, Rejected) and second.reason == "malformed_json"
        assert isinstance(third, Rejected) and third.reason == "budget_exhausted"
        assert spent(budget_redis, distiller, ctx.tenant_id) == 80
        assert len(fake.requests) == 2

    def test_a_response_without_usage_is_estimated(
        self, fake: FakeOpenAI, make_distiller: Callable[..., LLMDistiller], budget_redis: redis.Redis
    ) -> None:
        body = answer()
        del body["usage"]
        fake.script(body)
        distiller = make_distiller(fake.url)
        ctx = context()

        assert isinstance(distiller.distill(draft(), ctx), Distilled)
        assert spent(budget_redis, distiller, ctx.tenant_id) > 500

    def test_an_unreachable_redis_refuses_the_call(
        self, fake: FakeOpenAI, make_distiller: Callable[..., LLMDistiller]
    ) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        gone = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1, socket_timeout=1)
        fake.script(answer())

        result = make_distiller(fake.url, redis_client=gone).distill(draft(), context())

        assert isinstance(result, Rejected) and result.reason == "budget_unavailable"
        assert fake.requests == []
        gone.close()


class TestSetup:
    def test_the_heuristic_distiller_keeps_the_draft(self) -> None:
        subject = draft()

        result = HeuristicDistiller().distill(subject, context())

        assert result == Distilled(doc=subject, distiller="heuristic")

    def test_heuristic_is_the_default(self) -> None:
        assert isinstance(get_skill_distiller(Settings(), None), HeuristicDistiller)

    def test_llm_without_an_endpoint_is_a_clear_error(self, budget_redis: redis.Redis) -> None:
        settings = Settings(skill_distiller="llm", llm_base_url=None)

        with pytest.raises(DistillerConfigError, match="SKILLFOUNDRY_LLM_BASE_URL"):
            get_skill_distiller(settings, budget_redis)

    def test_llm_without_redis_is_a_clear_error(self) -> None:
        settings = Settings(skill_distiller="llm", llm_base_url="http://127.0.0.1:9/v1")

        with pytest.raises(DistillerConfigError, match="Redis"):
            get_skill_distiller(settings, None)

    def test_an_unknown_distiller_is_refused_by_the_settings(self) -> None:
        with pytest.raises(ValidationError):
            Settings(skill_distiller="gpt")

    def test_llm_reads_the_environment(
        self, monkeypatch: pytest.MonkeyPatch, budget_redis: redis.Redis
    ) -> None:
        monkeypatch.setenv("SKILLFOUNDRY_SKILL_DISTILLER", "llm")
        monkeypatch.setenv("SKILLFOUNDRY_LLM_BASE_URL", "http://127.0.0.1:9/v1")
        monkeypatch.setenv("SKILLFOUNDRY_LLM_MODEL", "local-model")
        monkeypatch.setenv("SKILLFOUNDRY_LLM_TIMEOUT_S", "3.5")
        monkeypatch.setenv("SKILLFOUNDRY_LLM_MAX_RETRIES", "0")
        monkeypatch.setenv("SKILLFOUNDRY_LLM_SKILL_TOKENS_PER_DAY", "1234")

        distiller = get_skill_distiller(Settings(), budget_redis)

        assert isinstance(distiller, LLMDistiller)
        assert (distiller.base_url, distiller.model, distiller.timeout_s, distiller.max_retries) == (
            "http://127.0.0.1:9/v1",
            "local-model",
            3.5,
            0,
        )
        assert distiller.budget.tokens_per_day == 1234
        # Nothing is contacted until the first distillation, and the key stays out of the repr.
        assert distiller._openai.current is None
        assert "not-needed" not in repr(distiller)

    def test_the_prompt_file_ships_with_the_package(self) -> None:
        prompt = load_prompt()

        assert prompt.version == PROMPT_VERSION
        assert '"Not for"' in prompt.system
        assert prompt.placeholders() == {
            "level",
            "domain",
            "templates",
            "draft",
            "head",
            "examples",
            "failures",
            "avoid",
        }
        messages = build_messages(draft(), context())
        assert "{{" not in str(messages[1]["content"])

    def test_the_context_puts_the_best_runs_first_and_keeps_failed_endings(self) -> None:
        cluster = uuid.uuid4()

        def view(score: float, success: bool, steps: list[distill.RunStep]) -> distill.RunView:
            return distill.RunView(uuid.uuid4(), "boil water", cluster, "a", success, score, tuple(steps))

        ok = distill.RunStep("go to kitchen")
        runs = [
            view(0.8, True, [ok, distill.RunStep("eat stove", error="No."), distill.RunStep("wait")]),
            view(1.0, True, [distill.RunStep("open door to kitchen"), ok]),
            view(0.0, False, [ok, distill.RunStep("pick up stove", error="Fixed."), distill.RunStep("look")]),
            view(0.0, False, [ok, distill.RunStep("look around")]),
        ]

        ctx = build_context(
            tenant_id=uuid.uuid4(),
            level="strategy",
            domain="d",
            runs=runs,
            avoid=[],
            head=None,
            do_min_score=0.7,
        )

        assert ctx.examples == (("open door to kitchen", "go to kitchen"), ("go to kitchen", "wait"))
        assert set(ctx.failures) == {FailedEnding("pick up stove", "Fixed."), FailedEnding("look around")}


# --- the cycle with the LLM distiller -----------------------------------------------------------------


def cooperative(request: dict[str, Any]) -> dict[str, Any]:
    """A valid answer to any skill prompt: one step per allowed action."""
    user = request["messages"][1]["content"]
    block = user.split("Allowed action templates:\n", 1)[1].split("\n\n", 1)[0]
    actions = [line[3:-1] for line in block.splitlines() if line.startswith("- `") and line[3] != "<"]
    body = {
        "description": "Use it when a plan reaches these steps. Not for other kinds of task.",
        "when_to_use": "When your plan reaches these steps.",
        "procedure": [f"Do `{action}`." for action in actions[:30]] or ["Look around first."],
        "pitfalls": [],
    }
    return completion(json.dumps(body), total_tokens=100)


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    """The real all-MiniLM-L6-v2, loaded once."""
    return get_embedder()


def skills_of(db: Session, tenant: Tenant) -> list[Skill]:
    return list(db.scalars(select(Skill).where(Skill.tenant_id == tenant.id)).all())


def hashes(fake: FakeOpenAI) -> set[str]:
    sent = (
        json.dumps(r["messages"], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        for r in fake.requests
    )
    return {hashlib.sha256(s.encode()).hexdigest() for s in sent}


class TestCycle:
    def test_versions_record_the_llm_its_model_and_prompt(
        self,
        db: Session,
        settings: Settings,
        embedder: SentenceTransformerEmbedder,
        fake: FakeOpenAI,
        make_distiller: Callable[..., LLMDistiller],
    ) -> None:
        fake.responder = cooperative
        distiller = make_distiller(fake.url)
        tenant = make_tenant(db)
        ingest(db, tenant, [animal_run(n) for n in range(4)] + [boil_run() for _ in range(3)])

        stats = skill_cycle.evolve(db, tenant.id, embedder=embedder, settings=settings, distiller=distiller)

        skills = skills_of(db, tenant)
        assert stats.created == len(skills) == len(fake.requests) and stats.rejected == 0
        assert {s.level for s in skills} == {SkillLevel.STRATEGY, SkillLevel.FUNCTIONAL, SkillLevel.ATOMIC}
        sent = hashes(fake)
        for skill in skills:
            version = service.head(db, skill)
            assert (version.distiller, version.llm_model) == ("llm", MODEL)
            assert version.prompt_hash in sent
            doc = skill_md.parse(version.content)
            assert doc.metadata["distiller"] == "llm"
            assert doc.description.startswith("Use it when a plan reaches these steps.")
            created = db.scalars(select(SkillEvent).where(SkillEvent.skill_id == skill.id)).one()
            assert created.kind == SkillEventKind.CREATED and f"prompt {PROMPT_VERSION}" in created.reason

        # Nothing new: no call. New evidence: the LLM edits the head, which it is shown.
        calls = len(fake.requests)
        skill_cycle.evolve(db, tenant.id, embedder=embedder, settings=settings, distiller=distiller)
        assert len(fake.requests) == calls
        animal = next(s for s in skills if s.level == SkillLevel.STRATEGY and "animal" in s.name)
        first = service.head(db, animal).content
        ingest(db, tenant, [animal_run(n, pick_up=False, agent=f"agent-{n % 3}") for n in range(5)])
        stats = skill_cycle.evolve(db, tenant.id, embedder=embedder, settings=settings, distiller=distiller)
        db.refresh(animal)
        assert animal.head_version == 2 and stats.rejected == 0
        second = service.head(db, animal)
        assert second.distiller == "llm" and "pick up <object>" not in second.content
        assert any(first.rstrip() in r["messages"][1]["content"] for r in fake.requests[calls:])
        # Only drafts that say something new are sent: the new runs only add to the counts of `use-go-to`.
        sent = {
            re.findall(r"^name: (\S+)$", r["messages"][1]["content"], re.M)[0] for r in fake.requests[calls:]
        }
        assert animal.name in sent and "use-go-to" not in sent
        assert "use-go-to" in {s.name for s in skills}

    def test_a_garbage_answer_writes_the_heuristic_draft_and_records_the_rejection(
        self,
        db: Session,
        settings: Settings,
        embedder: SentenceTransformerEmbedder,
        fake: FakeOpenAI,
        make_distiller: Callable[..., LLMDistiller],
    ) -> None:
        fake.responder = lambda _: completion("I'd rather not answer in JSON.")
        tenant = make_tenant(db)
        ingest(db, tenant, [animal_run(n) for n in range(4)] + [boil_run() for _ in range(3)])

        stats = skill_cycle.evolve(
            db, tenant.id, embedder=embedder, settings=settings, distiller=make_distiller(fake.url)
        )

        skills = skills_of(db, tenant)
        assert skills and stats.created == stats.rejected == len(skills)
        sent = hashes(fake)
        for skill in skills:
            version = service.head(db, skill)
            assert (version.distiller, version.llm_model, version.prompt_hash) == ("heuristic", None, None)
            assert "distiller" not in skill_md.parse(version.content).metadata
            events = db.scalars(select(SkillEvent).where(SkillEvent.skill_id == skill.id)).all()
            assert {e.kind for e in events} == {SkillEventKind.CREATED, SkillEventKind.REJECTED}
            rejected = next(e for e in events if e.kind == SkillEventKind.REJECTED)
            assert rejected.detail["reason"] == "malformed_json"
            assert rejected.detail["prompt_hash"] in sent
            assert rejected.detail["llm_model"] == MODEL
            assert rejected.from_version is None and rejected.to_version is None
