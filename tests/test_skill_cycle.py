"""The skill evolution cycle on a real database with the real model: create, refine, retire, roll back."""

import uuid
from pathlib import Path
from typing import Any

import pytest
from skills_ref.validator import validate as reference_validate
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import skill_md
from app.config import Settings
from app.embedding import SentenceTransformerEmbedder, get_embedder
from app.evolver import skill_cycle
from app.evolver import skill_distill as distill
from app.ingestion import service as ingestion
from app.skills import service
from app.storage.models import (
    Skill,
    SkillEvent,
    SkillEventKind,
    SkillLevel,
    SkillStatus,
    SkillVersion,
    SkillVersionEvidence,
    Tenant,
    Trajectory,
)
from app.storage.repositories import skills as repo
from tests.factories import make_step, make_tenant, make_trajectory

ANIMAL = "Your task is to find a(n) animal. First, focus on the thing. Then, move it to the {box} box."
BOIL = "Your task is to boil water. First, focus on the substance. Then, make it change its state of matter."
BOXES = ("red", "blue", "green", "orange")
ANIMALS = ("dove", "frog", "beaver", "turtle")
ROOM = "This room is called the {room}. In it, you see: a door, a table and {thing}."


def run(
    task: str, actions: list[str], *, agent: str = "oracle", success: bool = True, used: str = ""
) -> dict[str, Any]:
    """A trajectory whose observations name the room, as ScienceWorld's do."""
    steps = [
        make_step(
            i,
            observation=ROOM.format(
                room=("hallway", "outside", "kitchen")[min(i // 2, 2)], thing=f"thing {i}"
            ),
            action=action,
            **({"used_item_ids": [used]} if used else {}),
        )
        for i, action in enumerate(actions)
    ]
    return make_trajectory(
        task=task,
        agent_id=agent,
        steps=steps,
        outcome={"success": success, "score": 1.0 if success else 0.0},
    )


def animal_run(n: int, *, pick_up: bool = True, **kwargs: Any) -> dict[str, Any]:
    animal = ANIMALS[n % len(ANIMALS)]
    actions = [
        "open door to hallway",
        "go to hallway",
        "open door to outside",
        "go to outside",
        f"focus on {animal}",
    ]
    actions += [f"pick up {animal}"] if pick_up else []
    actions += [f"move {animal} to {BOXES[n % len(BOXES)]} box"]
    return run(ANIMAL.format(box=BOXES[n % len(BOXES)]), actions, **kwargs)


def boil_run(**kwargs: Any) -> dict[str, Any]:
    actions = [
        "open door to hallway",
        "go to hallway",
        "open door to kitchen",
        "go to kitchen",
        "focus on water",
    ]
    return run(BOIL, [*actions, "activate stove", "wait"], **kwargs)


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    """The real all-MiniLM-L6-v2, loaded once."""
    return get_embedder()


def ingest(db: Session, tenant: Tenant, items: list[dict[str, Any]]) -> None:
    ingestion.accept(db, tenant.id, items, schedule=False)
    db.flush()


def evolve(db: Session, tenant: Tenant, settings: Settings, embedder: Any) -> skill_cycle.CycleStats:
    return skill_cycle.evolve(db, tenant.id, embedder=embedder, settings=settings)


def strategy_of(db: Session, tenant: Tenant, word: str) -> Skill:
    skills = db.scalars(
        select(Skill).where(Skill.tenant_id == tenant.id, Skill.level == SkillLevel.STRATEGY)
    ).all()
    return next(s for s in skills if word in s.name)


@pytest.fixture
def library(db: Session, settings: Settings, embedder: Any) -> Tenant:
    """Four find-animal variations and three boil-water runs, distilled once."""
    tenant = make_tenant(db)
    ingest(db, tenant, [animal_run(n) for n in range(4)] + [boil_run() for _ in range(3)])
    evolve(db, tenant, settings, embedder)
    return tenant


class TestCreate:
    def test_builds_all_three_levels_with_valid_versions(
        self, db: Session, library: Tenant, tmp_path: Path
    ) -> None:
        skills = db.scalars(select(Skill).where(Skill.tenant_id == library.id)).all()
        levels = {s.level for s in skills}
        assert levels == {SkillLevel.STRATEGY, SkillLevel.FUNCTIONAL, SkillLevel.ATOMIC}
        assert len([s for s in skills if s.level == SkillLevel.STRATEGY]) == 2  # one per task cluster
        for skill in skills:
            assert skill.head_version == skill.latest_version == 1
            version = service.head(db, skill)
            doc = skill_md.parse(version.content)
            assert doc.name == skill.name and doc.metadata["level"] == skill.level.value
            folder = skill_md.write_folder(tmp_path, doc, version.files)
            assert reference_validate(folder) == []
            assert version.sha256 == skill_md.content_hash(version.content, version.files)

    def test_strategy_names_its_children_and_keeps_its_evidence(self, db: Session, library: Tenant) -> None:
        strategy = strategy_of(db, library, "animal")
        children = repo.children(db, strategy.id)
        assert SkillLevel.FUNCTIONAL in {c.level for c in children}
        functional = next(c for c in children if c.level == SkillLevel.FUNCTIONAL)
        assert f"../{functional.name}/SKILL.md" in service.head(db, strategy).content
        evidence = db.scalars(
            select(SkillVersionEvidence).where(
                SkillVersionEvidence.version_id == service.head(db, strategy).id
            )
        ).all()
        assert len(evidence) == 4 and all(e.success for e in evidence)

    def test_the_procedure_generalises_the_animal_and_fills_the_box_from_the_task(
        self, db: Session, library: Tenant
    ) -> None:
        content = service.head(db, strategy_of(db, library, "animal")).content
        assert "focus on <object>" in content
        assert "<task:object>" in content

    def test_a_cycle_with_nothing_new_does_nothing(
        self, db: Session, library: Tenant, settings: Settings, embedder: Any
    ) -> None:
        assert db.scalar(select(func.count()).where(Trajectory.skills_seen_at.is_(None))) == 0
        stats = evolve(db, library, settings, embedder)
        assert stats.trajectories == 0 and stats.created == 0
        assert db.scalar(select(func.count(SkillVersion.id))) == db.scalar(select(func.count(Skill.id)))


class TestRefine:
    def test_contradicting_evidence_makes_a_new_version_with_a_diff_and_rollback_restores(
        self, db: Session, library: Tenant, settings: Settings, embedder: Any
    ) -> None:
        strategy = strategy_of(db, library, "animal")
        first = service.head(db, strategy).content
        assert "pick up <object>" in first
        # Five runs by three agents that no longer pick the animal up: they move it straight away.
        ingest(db, library, [animal_run(n, pick_up=False, agent=f"agent-{n % 3}") for n in range(5)])
        stats = evolve(db, library, settings, embedder)
        assert stats.improved + stats.rewritten >= 1

        db.refresh(strategy)
        assert strategy.head_version == 2
        second = service.head(db, strategy)
        assert "pick up <object>" not in second.content
        assert "-" in second.diff and "pick up" in second.diff
        assert second.parent_version == 1
        assert second.evidence_runs == 9
        event = db.scalars(
            select(SkillEvent).where(SkillEvent.skill_id == strategy.id, SkillEvent.to_version == 2)
        ).one()
        assert "no longer do" in event.reason and event.actor == "evolver"

        service.rollback(
            db, library.id, strategy.id, to_version=1, expected_head=2, actor="admin", reason="test"
        )
        assert strategy.head_version == 1 and strategy.latest_version == 2
        assert service.head(db, strategy).content == first

    def test_a_skill_that_fails_those_who_use_it_is_retired(
        self, db: Session, library: Tenant, settings: Settings, embedder: Any
    ) -> None:
        strategy = strategy_of(db, library, "boil")
        used = str(strategy.id)
        stuck = [
            "open door to hallway",
            "go to hallway",
            "open door to kitchen",
            "go to kitchen",
            "focus on water",
        ]
        failing = [run(BOIL, stuck, agent=f"agent-{i}", success=False, used=used) for i in range(4)]
        ingest(db, library, failing)
        stats = evolve(db, library, settings, embedder)
        db.refresh(strategy)
        assert strategy.status == SkillStatus.RETIRED
        assert stats.retired == 1
        retired = db.scalars(
            select(SkillEvent).where(
                SkillEvent.skill_id == strategy.id, SkillEvent.kind == SkillEventKind.RETIRED
            )
        ).one()
        assert retired.detail["skill_failures"] == 4


class TestFailurePitfalls:
    """What a strategy's Pitfalls say about failed runs (pure)."""

    TASK = "Your task is to find the animal with the longest life span. Focus on it."

    @staticmethod
    def failed(task: str, *steps: tuple[str, float | None, str | None]) -> distill.RunView:
        return distill.RunView(
            uuid.uuid4(),
            task,
            uuid.uuid4(),
            "agent",
            False,
            0.0,
            tuple(distill.RunStep(action, error, reward) for action, reward, error in steps),
        )

    @staticmethod
    def plan(*templates: str) -> distill.Procedure:
        return distill.Procedure(tuple(distill.ProcedureStep(t, (t,), 1.0) for t in templates), ())

    def test_a_wrong_kind_of_object_is_generalised(self) -> None:
        """The plan focuses only on what the task names: anything else is the pitfall."""
        task = "Your task is to boil water. Focus on the water."
        run = self.failed(task, ("go to kitchen", 0.25, None), ("focus on orange juice", -0.25, None))
        found = skill_cycle.failure_pitfalls([run], self.plan("go to kitchen", "focus on <task:object>"))
        assert found == ["`focus on <other:object>` ended a failed run (1 run)"]

    def test_a_run_cut_short_blames_nothing_but_errors_do(self) -> None:
        """The last off-plan move of a run that ran out of steps did not end it; an error still teaches."""
        cut = self.failed(self.TASK, ("go to outside", 0.25, None), ("look at sky", 0.0, None))
        errored = self.failed(self.TASK, ("fly to moon", 0.0, "No known action matches that input."))
        found = skill_cycle.failure_pitfalls([cut, errored], self.plan("go to outside", "focus on crocodile"))
        assert found == ["`fly to <other:object>` failed with: No known action matches that input (1 run)"]
