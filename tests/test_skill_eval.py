"""Scoring strategy skills on held-out runs: templates, matching, scores, and the service on a real DB."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy.orm import Session

from app import skill_md
from app.config import Settings
from app.embedding import SentenceTransformerEmbedder, get_embedder
from app.evolver.skill_distill import Procedure, ProcedureStep, strategy_document
from app.evolver.skill_eval import (
    Unscored,
    aggregate,
    evaluate,
    matches,
    procedure_templates,
    score,
)
from app.skills import service
from app.storage.models import SkillEventKind, SkillLevel, SkillStatus, Tenant
from app.storage.repositories import skills as repo
from tests.factories import make_tenant

PURPLE = (
    "Your task is to find a(n) animal. First, focus on the thing. "
    "Then, move it to the purple box in the living room."
)
ORANGE = (
    "Your task is to find a(n) animal. First, focus on the thing. "
    "Then, move it to the orange box in the living room."
)
PLANT = (
    "Your task is to find a(n) plant. First, focus on the thing. "
    "Then, move it to the red box in the bathroom."
)
BOIL = "Your task is to boil water. First, focus on the substance. Then, take actions that will boil it."

STEPS = (
    ProcedureStep("open door to <object>", ("open door to kitchen", "open door to hallway"), 1.0),
    ProcedureStep("go to <object>", ("go to kitchen", "go to hallway"), 1.0),
    ProcedureStep("focus on <object>", ("focus on dove", "focus on frog"), 1.0),
    ProcedureStep("pick up <object>", ("pick up dove",), 0.8),
    ProcedureStep("go to <task:object>", ("go to living room",), 1.0),
    ProcedureStep(
        "move <object> in inventory to <task:object>",
        ("move dove in inventory to red box", "move frog in inventory to blue box"),
        1.0,
    ),
)
PLAN = [s.template for s in STEPS]
# The gold run of the purple-box variation, as the ScienceWorld oracle plays it.
GOLD = [
    "open door to outside",
    "go to outside",
    "focus on egg turtle",
    "pick up egg turtle",
    "go to living room",
    "move egg turtle egg in inventory to purple box",
]


def strategy_text(steps: tuple[ProcedureStep, ...] = STEPS, **kwargs: Any) -> str:
    procedure = Procedure(steps=steps, runs=(uuid.uuid4(), uuid.uuid4()))
    doc = strategy_document("find-animal", ORANGE, procedure, domain="scienceworld", **kwargs)
    return skill_md.render(doc)


class TestProcedureTemplates:
    def test_reads_the_steps_in_order_without_slot_notes_or_legend(self) -> None:
        assert procedure_templates(strategy_text()) == PLAN

    def test_expands_the_steps_a_functional_skill_covers(self) -> None:
        text = strategy_text(functional={0: "open-then-go-to"}, spans={0: 2})
        assert "Use the [open-then-go-to](../open-then-go-to/SKILL.md) skill: `open door" in text
        assert procedure_templates(text) == PLAN

    def test_a_skill_line_without_span_gives_its_first_step(self) -> None:
        text = strategy_text(functional={3: "use-pick"})
        assert "skill, starting with `pick up <object>`" in text
        assert procedure_templates(text) == PLAN

    def test_no_steps_or_no_procedure_gives_none(self) -> None:
        assert procedure_templates(strategy_text(steps=())) == []
        doc = skill_md.SkillDocument(
            name="x", description="y", sections=(skill_md.Section("Notes", "1. `a`"),)
        )
        assert procedure_templates(skill_md.render(doc)) == []


class TestMatches:
    def test_literal_words_match_case_insensitively(self) -> None:
        assert matches("look around", "Look Around", PURPLE)
        assert matches("go to outside", "go to outside", PURPLE)
        assert not matches("go to kitchen", "go to hallway", PURPLE)
        assert not matches("go to kitchen", "go to kitchen now", PURPLE)

    def test_a_task_slot_takes_only_words_of_the_held_out_task(self) -> None:
        template = "move <object> in inventory to <task:object>"
        action = "move egg turtle egg in inventory to purple box"
        assert matches(template, action, PURPLE)
        assert not matches(template, action, ORANGE)

    def test_an_object_slot_takes_any_words_but_at_least_one(self) -> None:
        assert matches("focus on <object>", "focus on egg turtle", PURPLE)
        assert matches("focus on <other:object>", "focus on common toad", PURPLE)
        assert not matches("focus on <object>", "focus on", PURPLE)

    def test_slots_try_every_split(self) -> None:
        # The shortest object ("book") leaves "shelf to orange box" for the task slot, which is wrong.
        assert matches("move <object> to <task:object>", "move book to shelf to orange box", ORANGE)

    def test_a_category_slot_needs_the_category_in_the_task(self) -> None:
        assert matches("focus on <task:animal>", "focus on common toad", PURPLE)
        assert not matches("focus on <task:animal>", "focus on common toad", PLANT)


class TestScore:
    def test_an_exact_run_scores_one(self) -> None:
        scores = score(PLAN, GOLD, PURPLE)
        assert (scores.precision, scores.recall, scores.order) == (1.0, 1.0, 1.0)
        assert scores.extra_steps == scores.missed_actions == ()
        assert scores.paired_precision == scores.paired_recall == 1.0

    def test_a_step_the_plan_misses_lowers_recall(self) -> None:
        gold = [*GOLD[:2], "look around", *GOLD[2:]]
        scores = score(PLAN, gold, PURPLE)
        assert scores.precision == 1.0
        assert scores.recall == pytest.approx(6 / 7)
        assert scores.missed_actions == ("look around",)
        assert scores.order == 1.0

    def test_an_extra_step_lowers_precision(self) -> None:
        plan = [*PLAN[:2], "open door to greenhouse", *PLAN[2:]]
        scores = score(plan, GOLD, PURPLE)
        assert scores.precision == pytest.approx(6 / 7)
        assert scores.recall == 1.0
        assert scores.extra_steps == ("open door to greenhouse",)

    def test_a_reordered_pair_lowers_order_only(self) -> None:
        gold = [*GOLD[:2], GOLD[3], GOLD[2], *GOLD[4:]]  # picks up before focusing
        scores = score(PLAN, gold, PURPLE)
        assert (scores.precision, scores.recall) == (1.0, 1.0)
        assert (scores.paired, scores.in_order) == (6, 5)
        assert scores.order == pytest.approx(5 / 6)

    def test_a_slot_step_covers_every_action_it_fits(self) -> None:
        gold = ["open door to kitchen", "go to kitchen", "open door to outside", "go to outside", *GOLD[2:]]
        scores = score(PLAN, gold, PURPLE)
        assert (scores.precision, scores.recall, scores.order) == (1.0, 1.0, 1.0)
        assert scores.paired_recall == pytest.approx(6 / 8)  # one step, two rooms

    def test_a_step_done_fewer_times_than_planned_is_no_order_error(self) -> None:
        plan = ["open door to <object>", "go to <object>", "open door to <object>", "go to <object>"]
        scores = score(plan, GOLD[:2], PURPLE)
        assert (scores.precision, scores.recall, scores.order) == (1.0, 1.0, 1.0)
        assert scores.paired_precision == 0.5

    def test_a_wrong_task_object_misses(self) -> None:
        scores = score(PLAN, GOLD, ORANGE)  # the plan's box is the task's; the run used another
        assert scores.precision == pytest.approx(5 / 6)
        assert scores.extra_steps == ("move <object> in inventory to <task:object>",)

    def test_an_empty_plan_has_no_precision_and_no_recall(self) -> None:
        scores = score([], GOLD, PURPLE)
        assert (scores.precision, scores.recall, scores.order) == (None, 0.0, None)


class TestAggregate:
    def test_micro_pools_counts_and_macro_averages_runs(self) -> None:
        full = score(PLAN, GOLD, PURPLE)  # 6/6 steps, 6/6 actions
        half = score(PLAN[:2] + ["wait", "inventory"], GOLD[:2] + ["look around", "wait1"], PURPLE)
        figures = aggregate([full, half])
        assert figures.runs == 2
        assert figures.micro.precision == pytest.approx(8 / 10)
        assert figures.macro.precision == pytest.approx((1.0 + 0.5) / 2)
        assert figures.micro.recall == pytest.approx(8 / 10)
        assert figures.micro.order == figures.macro.order == 1.0
        assert figures.micro.paired_precision == pytest.approx(8 / 10)

    def test_unmeasurable_figures_are_left_out_of_averages(self) -> None:
        figures = aggregate([score([], GOLD, PURPLE), score(PLAN, GOLD, PURPLE)])
        assert figures.macro.precision == 1.0
        assert figures.macro.recall == pytest.approx(0.5)
        assert aggregate([]).micro.precision is None


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    """The real model, loaded once."""
    return get_embedder()


def held_out(task: str, actions: list[str], *, success: bool = True) -> dict[str, Any]:
    return {
        "task": task,
        "domain": "scienceworld",
        "agent_id": "scienceworld-oracle",
        "steps": [{"observation": "...", "action": a, "error": None} for a in actions]
        + [
            {
                "observation": "...",
                "action": "teleport to moon",
                "error": "No known action matches that input.",
            }
        ],
        "outcome": {"success": success, "score": 1.0 if success else 0.2},
    }


def add_strategy(
    db: Session, tenant: Tenant, cluster_id: uuid.UUID, vector: list[float], *, status: SkillStatus
) -> None:
    doc = skill_md.parse(strategy_text())
    skill = repo.add_skill(
        db,
        tenant_id=tenant.id,
        domain="scienceworld",
        name=f"find-animal-{uuid.uuid4().hex[:6]}",
        level=SkillLevel.STRATEGY,
        source_key=f"strategy:{cluster_id}",
        task_cluster_id=cluster_id,
        description=doc.description,
        embedding=vector,
        embedding_model="test-model",
    )
    service.write_version(
        db,
        skill,
        doc,
        expected_head=0,
        change=SkillEventKind.CREATED,
        author=service.Authorship(actor="test", distiller="heuristic"),
        evidence=[],
    )
    skill.status = status


class TestEvaluate:
    def test_scores_each_successful_run_against_its_clusters_strategy(
        self, db: Session, settings: Settings, embedder: SentenceTransformerEmbedder
    ) -> None:
        tenant = make_tenant(db)
        animal, plant = embedder.embed_documents([ORANGE, PLANT])
        animals = repo.new_task_cluster(db, tenant.id, "scienceworld", animal, ORANGE, embedder.model_name)
        plants = repo.new_task_cluster(db, tenant.id, "scienceworld", plant, PLANT, embedder.model_name)
        add_strategy(db, tenant, animals.id, animal, status=SkillStatus.ACTIVE)
        add_strategy(db, tenant, plants.id, plant, status=SkillStatus.RETIRED)
        swapped = [*GOLD[:2], GOLD[3], GOLD[2], *GOLD[4:]]

        report = evaluate(
            db,
            tenant.id,
            [
                held_out(PURPLE, GOLD),
                held_out(PURPLE, swapped),
                held_out(PURPLE, GOLD, success=False),
                held_out(PLANT, ["focus on banana tree"]),
                held_out(BOIL, ["focus on water"]),
            ],
            embedder=embedder,
            settings=settings,
        )

        scored, reordered, failed, no_strategy, no_cluster = report.items
        assert scored.task_cluster_id == animals.id and scored.version == 1
        assert scored.similarity is not None and scored.similarity >= settings.task_cluster_threshold
        assert scored.scores is not None and scored.scores.actions == 6  # the erroring step is no gold action
        assert (scored.scores.precision, scored.scores.recall, scored.scores.order) == (1.0, 1.0, 1.0)
        assert reordered.scores is not None and reordered.scores.order == pytest.approx(5 / 6)
        assert failed.unscored == Unscored.FAILED_RUN
        assert no_strategy.unscored == Unscored.NO_STRATEGY and no_strategy.task_cluster_id == plants.id
        assert no_cluster.unscored == Unscored.NO_TASK_CLUSTER
        assert [i.index for i in report.no_skill] == [3, 4]

        (cluster,) = report.clusters
        assert (cluster.task_cluster_id, cluster.steps, cluster.figures.runs) == (animals.id, 6, 2)
        assert cluster.figures.micro.order == pytest.approx(11 / 12)
        assert report.total == cluster.figures
        assert report.as_dict()["no_skill"] == 2

    def test_another_tenants_clusters_are_not_seen(
        self, db: Session, settings: Settings, embedder: SentenceTransformerEmbedder
    ) -> None:
        owner, other = make_tenant(db), make_tenant(db)
        (vector,) = embedder.embed_documents([ORANGE])
        cluster = repo.new_task_cluster(db, owner.id, "scienceworld", vector, ORANGE, embedder.model_name)
        add_strategy(db, owner, cluster.id, vector, status=SkillStatus.ACTIVE)

        report = evaluate(db, other.id, [held_out(ORANGE, GOLD)], embedder=embedder, settings=settings)

        assert report.items[0].unscored == Unscored.NO_TASK_CLUSTER
        assert report.clusters == () and report.total.runs == 0
