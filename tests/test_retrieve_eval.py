"""`eval retrieve`: Hit@k, MRR and the avoid rate on hand-made answers; a replay through the real API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app import skill_md
from app.api.deps import get_app_settings
from app.api.routes.retrieve import get_log_sessions
from app.config import Settings
from app.embedding import SentenceTransformerEmbedder, get_embedder
from app.evolver.retrieve_eval import (
    Ask,
    EpisodeResult,
    Listed,
    Mode,
    Plan,
    Replayer,
    ReplayFailed,
    answer_of,
    figures,
    gold_steps,
    leave_task_out,
    listed,
    replay,
    score_step,
)
from tests.factories import auth, skill_doc
from tests.test_retrieve import KITCHEN, TASK, build_library

ANIMAL_TASK = "Your task is to find a(n) animal. First, focus on the thing. Then, move it to the red box."


def do(template: str, id_: str = "d") -> Listed:
    """A listed `do` experience."""
    return Listed(kind="experience", id=id_, polarity="do", template=template)


def avoid(template: str) -> Listed:
    """A listed `avoid` experience."""
    return Listed(kind="experience", id="a", polarity="avoid", template=template)


def strategy(id_: str = "s", version: int = 1) -> Listed:
    """A listed strategy skill."""
    return Listed(kind="skill", id=id_, level="strategy", version=version)


def episode(*steps: Any, mode: Mode = Mode.STEP, kind: str = "find-animal") -> EpisodeResult:
    """An episode of already scored steps."""
    return EpisodeResult(index=0, task=ANIMAL_TASK, task_type=kind, mode=mode, steps=tuple(steps))


class TestScoreStep:
    def test_first_fitting_do_item_sets_the_rank(self) -> None:
        """Skills and avoid items do not count as places; only `do` experiences, in answer order."""
        items = [strategy(), do("look around"), avoid("go to <object>"), do("go to <object>")]
        result = score_step(3, "go to hallway", ANIMAL_TASK, items)
        assert result.do_listed == 2 and result.first_fit == 2
        assert not result.hit(1) and result.hit(5) and result.reciprocal_rank == 0.5
        assert result.avoid_fit

    def test_slot_semantics_are_the_skill_evaluations(self) -> None:
        """A category slot fits when the task names the category; a task slot only task words."""
        items = [
            do("focus on <task:plant>"),
            do("move <object> to <task:object>"),
            do("focus on <task:animal>"),
        ]
        result = score_step(5, "focus on baby wolf", ANIMAL_TASK, items)
        assert result.first_fit == 3
        assert score_step(6, "move baby wolf to red box", ANIMAL_TASK, items).first_fit == 2
        assert score_step(6, "move baby wolf to blue box", ANIMAL_TASK, items).first_fit is None

    def test_no_do_item_is_a_miss(self) -> None:
        """An answer of skills and warnings has reciprocal rank 0 and counts as listing no `do`."""
        result = score_step(0, "open door to hallway", ANIMAL_TASK, [strategy(), avoid("look around")])
        assert result.do_listed == 0 and result.first_fit is None and result.reciprocal_rank == 0.0
        assert not result.avoid_fit

    def test_strategy_steps(self) -> None:
        """The gold action fits a step of the strategy's procedure; without a strategy nothing fits."""
        plan = Plan("find-animal", ("open door to <object>", "focus on <task:animal>"))
        hit = score_step(0, "focus on crocodile egg", ANIMAL_TASK, [], plan)
        assert hit.skill_fit and hit.strategy == "find-animal"
        assert not score_step(0, "look around", ANIMAL_TASK, [], plan).skill_fit
        alone = score_step(0, "focus on crocodile egg", ANIMAL_TASK, [])
        assert alone.strategy is None and not alone.skill_fit

    def test_the_sessions_strategy_comes_before_a_listed_one(self) -> None:
        """The pinned `strategy_id` names the strategy even when unlisted; else the first listed one."""
        items = {"items": [{"kind": "skill", "id": "s2", "level": "strategy", "version": 4}]}
        assert answer_of(items).strategy == ("s2", 4)
        assert answer_of({**items, "strategy_id": "s1"}).strategy == ("s1", None)
        assert answer_of({"items": [], "strategy_id": None}).strategy is None

    def test_answer_items_are_read_in_order(self) -> None:
        """`listed` keeps answer order; an experience without a template is matched by its example."""
        answer = {
            "items": [
                {"kind": "skill", "id": "s1", "level": "strategy", "version": 2, "name": "find-animal"},
                {"kind": "experience", "id": "e1", "polarity": "do",
                 "action": {"template": "", "example": "look around", "slots": []}},
                {"kind": "experience", "id": "e2", "polarity": "avoid",
                 "action": {"template": "focus on <object>", "example": "focus on sofa", "slots": []}},
            ]
        }  # fmt: skip
        items = listed(answer)
        assert [i.id for i in items] == ["s1", "e1", "e2"]
        assert items[0].version == 2 and items[1].template == "look around"
        assert items[2].template == "focus on <object>" and items[2].polarity == "avoid"


class TestFigures:
    def test_hits_mrr_and_avoid_rate_pool_steps(self) -> None:
        """Four steps: ranks 1, 3, none, 6 (of six do items)."""
        do_items = [do(f"x{n}") for n in range(5)]
        steps = [
            score_step(0, "look around", ANIMAL_TASK, [do("look around")]),
            score_step(1, "look around", ANIMAL_TASK, [do("a"), do("b"), do("look around")]),
            score_step(2, "look around", ANIMAL_TASK, [avoid("look around")]),
            score_step(3, "look around", ANIMAL_TASK, [*do_items, do("look around")]),
        ]
        f = figures([episode(*steps[:2]), episode(*steps[2:])])
        assert (f.runs, f.steps) == (2, 4)
        assert f.hits == {1: 0.25, 5: 0.5}
        assert f.mrr == pytest.approx((1 + 1 / 3 + 0 + 1 / 6) / 4)
        assert f.avoid == 0.25 and f.no_do == 0.25
        assert f.as_dict()["hit@5"] == 0.5

    def test_nothing_scored(self) -> None:
        """No steps: no figures rather than zeros."""
        f = figures([])
        assert f.steps == 0 and f.mrr is None and f.hits == {1: None, 5: None}


class TestHeldOut:
    def test_gold_steps_skip_errors(self) -> None:
        """Steps that raised an error are left out and counted; indexes stay the run's."""
        run = {
            "task": ANIMAL_TASK,
            "steps": [
                {"observation": "hallway", "action": "go  to kitchen"},
                {"observation": "kitchen", "action": "fly", "error": "No known action matches that input."},
                {"observation": "", "action": "look around"},
            ],
        }
        steps, errors = gold_steps(run)
        assert steps == [(0, "hallway", "go to kitchen"), (2, ANIMAL_TASK, "look around")]
        assert errors == 1

    def test_leave_task_out(self) -> None:
        """Training keeps the other task types; the test keeps only the left-out one."""
        runs = [{"task": t, "metadata": {"task_name": t}} for t in ("find-plant", "find-animal")]
        train, test = leave_task_out(runs, [*runs, {"task": "x", "domain": "find-plant"}], "find-plant")
        assert [r["task"] for r in train] == ["find-animal"]
        assert [r["task"] for r in test] == ["find-plant", "x"]


def _run(*actions: str, success: bool = True, task_name: str = "find-animal") -> dict[str, Any]:
    return {
        "task": ANIMAL_TASK,
        "domain": "scienceworld",
        "steps": [{"observation": f"room {n}", "action": a} for n, a in enumerate(actions)],
        "outcome": {"success": success},
        "metadata": {"task_name": task_name},
    }


class FakeApi:
    """A hand-made /v1/retrieve: every answer lists a strategy and `look around` as the only `do`."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.skill_gets = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/retrieve":
            self.bodies.append(json.loads(request.content))
            return httpx.Response(
                200,
                json={
                    "retrieval_id": "00000000-0000-0000-0000-000000000000",
                    "tokens": 10,
                    "items": [
                        {"kind": "skill", "id": "s1", "level": "strategy", "version": 3},
                        {"kind": "experience", "id": "e1", "polarity": "do",
                         "action": {"template": "look around", "example": "look around", "slots": []}},
                    ],
                },
            )  # fmt: skip
        if request.url.path == "/v1/skills/s1/versions/3":
            self.skill_gets += 1
            content = skill_md.render(skill_doc("find-animal", steps=("go to <object>", "look around")))
            return httpx.Response(200, json={"content": content})
        return httpx.Response(404, json={"error": {"code": "not_found"}})

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle), base_url="http://eval")


class TestReplay:
    def test_step_conditioned_asks_at_every_step(self) -> None:
        """One retrieval per step: its observation, its index, the gold actions before it, one session."""
        api = FakeApi()
        report = replay(api.client(), [_run("go to hallway", "look around")], modes=[Mode.STEP])
        assert [b["step"] for b in api.bodies] == [0, 1]
        assert [b["observation"] for b in api.bodies] == ["room 0", "room 1"]
        assert [b["recent_actions"] for b in api.bodies] == [[], ["go to hallway"]]
        assert len({b["session_id"] for b in api.bodies}) == 1
        assert api.bodies[0]["top_k"] == 5 and api.skill_gets == 1
        (result,) = report.episodes
        assert result.requests == 2 and [s.first_fit for s in result.steps] == [None, 1]
        assert all(s.skill_fit for s in result.steps)

    def test_static_reuses_one_answer_from_the_task(self) -> None:
        """The baseline asks once per run, with the task as observation at step 0, and reuses it."""
        api = FakeApi()
        runs = [_run("go to hallway", "look around", "look around"), _run("look around", success=False)]
        report = replay(api.client(), runs, modes=[Mode.STEP, Mode.STATIC], ask=Ask(top_k=3))
        static = report.of(Mode.STATIC)
        assert len(static) == 1 and static[0].requests == 1 and len(static[0].steps) == 3
        assert api.bodies[-1]["observation"] == ANIMAL_TASK and api.bodies[-1]["step"] == 0
        assert api.bodies[-1]["session_id"] != api.bodies[0]["session_id"]
        assert len(api.bodies) == 3 + 1 and report.failed_runs == 1
        table = report.table()
        assert list(table) == ["find-animal", "total"]
        assert table["total"][Mode.STATIC].hits[1] == pytest.approx(2 / 3)
        assert report.strategies(Mode.STATIC) == {"find-animal": 1}
        assert report.as_dict()["figures"]["total"]["static"]["steps"] == 3  # type: ignore[index]

    def test_api_error_is_reported(self) -> None:
        """A refused request stops the replay with the status and the API's message."""
        client = httpx.Client(
            transport=httpx.MockTransport(lambda _: httpx.Response(401, json={"error": {"code": "bad_key"}})),
            base_url="http://eval",
        )
        with pytest.raises(ReplayFailed, match="401.*bad_key"):
            Replayer(client, Ask()).episode(0, _run("look around"), Mode.STEP)


# --- through the real API ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    """The real model, loaded once."""
    return get_embedder()


@contextmanager
def _in_test_transaction(db: Session) -> Iterator[Session]:
    try:
        yield db
        db.commit()
    except BaseException:
        db.rollback()
        raise


@pytest.fixture
def api(client: TestClient, db: Session, settings: Settings) -> TestClient:
    """The app recording answers in the test's transaction, never withholding an item."""

    def sessions() -> AbstractContextManager[Session]:
        return _in_test_transaction(db)

    changed = settings.model_copy(update={"retrieval_withhold_share": 0.0})
    client.app.dependency_overrides[get_log_sessions] = lambda: sessions
    client.app.dependency_overrides[get_app_settings] = lambda: changed
    return client


class TestReplayThroughTheApi:
    def test_replays_a_held_out_run(
        self, api: TestClient, db: Session, embedder: SentenceTransformerEmbedder
    ) -> None:
        """The kitchen library's lessons and the boil-water strategy score a boil-water run."""
        lib = build_library(db, embedder)
        api.headers.update(auth(lib.key))
        run = {
            "task": TASK,
            "domain": "kitchen",
            "steps": [
                {"observation": KITCHEN, "action": "move pot to sink"},
                {"observation": KITCHEN, "action": "pour water", "error": "You can't do that."},
                {"observation": KITCHEN, "action": "activate stove"},
                {"observation": KITCHEN, "action": "focus on milk"},
            ],
            "outcome": {"success": True, "score": 1.0},
            "metadata": {"task_name": "boil"},
        }
        report = replay(api, [run], ask=Ask(top_k=20, token_budget=4000))
        step, static = report.of(Mode.STEP)[0], report.of(Mode.STATIC)[0]
        assert (step.requests, static.requests) == (3, 1)
        assert step.skipped == 1 and [s.step for s in step.steps] == [0, 2, 3]
        sink, stove, milk = step.steps
        assert sink.hit(5) and stove.hit(5) and milk.first_fit is None
        assert milk.avoid_fit and not sink.avoid_fit
        assert stove.strategy == "boil-water" and stove.skill_fit and not sink.skill_fit
        assert figures([step]).avoid == pytest.approx(1 / 3)
        assert len(static.steps) == 3
