"""Consolidation: merges, retirements, category slots and cluster caps, each audited."""

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.evolver.consolidate import consolidate
from app.ingestion import service as ingestion
from app.storage.models import (
    AuditLog,
    Experience,
    ExperienceEvidence,
    ExperienceStatus,
    Polarity,
    StateCluster,
    Tenant,
    TrajectoryStep,
)
from app.storage.repositories import distillation
from tests.factories import make_cluster, make_experience, make_tenant, make_trajectory, unit_vector


def actions(db: Session, tenant_id: object) -> list[str]:
    return sorted(db.scalars(select(AuditLog.action).where(AuditLog.tenant_id == tenant_id)).all())


class TestConsolidate:
    def test_near_duplicates_merge_into_the_better_supported(self, db: Session, settings: Settings) -> None:
        """Near-identical lessons of one cluster merge into the better-supported, which keeps the evidence."""
        tenant = make_tenant(db)
        cluster = make_cluster(db, tenant)
        strong = make_experience(
            db, tenant, cluster_id=cluster.id, successes=0, embedding=unit_vector(1.0, 0.01)
        )
        weak = make_experience(
            db, tenant, cluster_id=cluster.id, successes=0, embedding=unit_vector(1.0, 0.02)
        )
        accepted = ingestion.accept(db, tenant.id, [make_trajectory(2)])
        steps = db.scalars(
            select(TrajectoryStep).where(TrajectoryStep.trajectory_id == accepted.trajectory_ids[0])
        ).all()
        for row, step in ((strong, steps[0]), (strong, steps[1]), (weak, steps[1])):
            distillation.add_evidence(
                db, row, step_id=step.id, trajectory_id=step.trajectory_id, agent_id="a", success=True
            )
        stats = consolidate(db, tenant.id, settings)
        assert stats.merged == 1
        assert strong.status == ExperienceStatus.ACTIVE
        assert weak.status == ExperienceStatus.RETIRED
        assert strong.successes == 2  # the shared step is not counted twice
        assert actions(db, tenant.id) == ["experience.merge"]

    def test_different_polarity_or_cluster_never_merge(self, db: Session, settings: Settings) -> None:
        """Same vector, but `do` vs `avoid` or another cluster: kept apart."""
        tenant = make_tenant(db)
        a, b = make_cluster(db, tenant), make_cluster(db, tenant)
        make_experience(db, tenant, cluster_id=a.id)
        make_experience(db, tenant, cluster_id=a.id, polarity=Polarity.AVOID)
        make_experience(db, tenant, cluster_id=b.id)
        assert consolidate(db, tenant.id, settings).merged == 0

    def test_confidently_useless_is_retired(self, db: Session, settings: Settings) -> None:
        """Utility 1/13 over 13 observations retires; 1/3 over 3 does not (not confident yet)."""
        tenant = make_tenant(db)
        bad = make_experience(db, tenant, alpha=1.0, beta=12.0, embedding=unit_vector(1.0))
        young = make_experience(db, tenant, alpha=1.0, beta=2.0, embedding=unit_vector(0.0, 1.0))
        stats = consolidate(db, tenant.id, settings)
        assert stats.retired_low_utility == 1
        assert bad.status == ExperienceStatus.RETIRED
        assert young.status == ExperienceStatus.ACTIVE
        entry = db.scalars(select(AuditLog).where(AuditLog.target_id == str(bad.id))).one()
        assert entry.detail["reason"] == "low_utility"

    def test_cluster_keeps_at_most_k(self, db: Session, settings: Settings) -> None:
        """Over the cap, the lowest-utility lessons of a cluster retire."""
        tenant = make_tenant(db)
        cluster = make_cluster(db, tenant)
        rows = [
            make_experience(
                db,
                tenant,
                cluster_id=cluster.id,
                alpha=float(i + 1),
                embedding=unit_vector(*([0.0] * i), 1.0),
            )
            for i in range(3)
        ]
        stats = consolidate(db, tenant.id, settings.model_copy(update={"max_experiences_per_cluster": 2}))
        assert stats.retired_over_cap == 1
        assert [r.status for r in rows] == [
            ExperienceStatus.RETIRED,
            ExperienceStatus.ACTIVE,
            ExperienceStatus.ACTIVE,
        ]
        assert "experience.retire" in actions(db, tenant.id)

    def test_do_and_avoid_of_one_move_keep_the_better_supported(
        self, db: Session, settings: Settings
    ) -> None:
        """`do look around` (1 run) against `avoid look around` (3 runs) in one cluster: the avoid stays."""
        tenant = make_tenant(db)
        cluster = make_cluster(db, tenant)
        do = make_experience(db, tenant, cluster_id=cluster.id, action_template="look around", successes=1)
        avoid = make_experience(
            db, tenant, cluster_id=cluster.id, action_template="look around", polarity=Polarity.AVOID,
            successes=0, failures=3, embedding=unit_vector(0.0, 1.0),
        )  # fmt: skip
        stats = consolidate(db, tenant.id, settings)
        assert stats.retired_conflicting == 1
        assert (do.status, avoid.status) == (ExperienceStatus.RETIRED, ExperienceStatus.ACTIVE)
        entry = db.scalars(select(AuditLog).where(AuditLog.target_id == str(do.id))).one()
        assert entry.detail["reason"] == "conflict"


ANIMAL_TASK = (
    "Your task is to find a(n) animal. First, focus on the thing. Then, move it to the {} box in the kitchen."
)


class ToyEmbedder:
    """The embedder port over fixed vectors: animals on axis 1, "thing" halfway, anything else on axis 3."""

    dim = 384
    model_name = "toy"
    AXES = {"animal": (0.0, 1.0), "dove": (0.0, 1.0, 0.1), "blue jay": (0.0, 0.9, 0.2),
            "frog": (0.0, 1.0, 0.0, 0.1), "thing": (0.0, 0.5, 0.5)}  # fmt: skip

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        return [unit_vector(*self.AXES.get(t, (0.0, 0.0, 0.0, 1.0))) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def supported(
    db: Session, tenant: Tenant, cluster: StateCluster, action: str, colour: str, n: int
) -> Experience:
    """A literal `do` lesson of find-animal, backed by `n` steps of one successful run of its own."""
    row = make_experience(
        db, tenant, cluster_id=cluster.id, action_template=action, action_example=action, successes=0,
        task=ANIMAL_TASK.format(colour), embedding=unit_vector(*([0.0] * (10 + len(colour))), 1.0),
    )  # fmt: skip
    accepted = ingestion.accept(db, tenant.id, [make_trajectory(n, agent_id=f"agent-{colour}")])
    for step in db.scalars(
        select(TrajectoryStep).where(TrajectoryStep.trajectory_id == accepted.trajectory_ids[0])
    ):
        distillation.add_evidence(
            db,
            row,
            step_id=step.id,
            trajectory_id=step.trajectory_id,
            agent_id=f"agent-{colour}",
            success=True,
        )
    return row


def general_of(db: Session, tenant: Tenant) -> list[Experience]:
    return list(
        db.scalars(
            select(Experience).where(
                Experience.tenant_id == tenant.id,
                Experience.status == ExperienceStatus.ACTIVE,
                Experience.action_template.like("%<task:animal>%"),
            )
        ).all()
    )


class TestGeneralise:
    def test_unnamed_animals_merge_into_a_category_slot(self, db: Session, settings: Settings) -> None:
        """`focus on dove` (2 steps) and `focus on blue jay` (3) become one `focus on <task:animal>` (5)."""
        tenant = make_tenant(db)
        cluster = make_cluster(db, tenant)
        dove = supported(db, tenant, cluster, "focus on dove", "red", 2)
        jay = supported(db, tenant, cluster, "focus on blue jay", "green", 3)
        stats = consolidate(db, tenant.id, settings, embedder=ToyEmbedder())
        assert (stats.generalised, stats.merged_into_general) == (1, 2)
        [general] = general_of(db, tenant)
        assert general.action_template == "focus on <task:animal>"
        assert general.cluster_id == cluster.id
        assert general.slots == [
            {
                "name": "animal",
                "source": "task_category",
                "example": "blue jay",
                "examples": ["blue jay", "dove"],
            }
        ]
        assert (general.successes, general.failures, general.distinct_agents) == (5, 0, 2)
        links = db.scalar(
            select(func.count())
            .select_from(ExperienceEvidence)
            .where(ExperienceEvidence.experience_id == general.id)
        )
        assert links == 5
        assert "the animal your task asks for" in general.text
        assert (dove.status, jay.status) == (ExperienceStatus.RETIRED, ExperienceStatus.RETIRED)
        assert actions(db, tenant.id) == ["experience.generalise", "experience.merge", "experience.merge"]
        entry = db.scalars(select(AuditLog).where(AuditLog.target_id == str(general.id))).one()
        assert entry.detail["category"] == "animal"
        assert entry.detail["merged"] == [str(jay.id), str(dove.id)]
        merge = db.scalars(select(AuditLog).where(AuditLog.target_id == str(dove.id))).one()
        assert merge.detail["into"] == str(general.id)

    def test_needs_the_switch_and_an_embedder(self, db: Session, settings: Settings) -> None:
        """Switched off, or with no embedder to choose the word, the literal lessons stay."""
        tenant = make_tenant(db)
        cluster = make_cluster(db, tenant)
        rows = [
            supported(db, tenant, cluster, f"focus on {a}", c, 1)
            for a, c in (("dove", "red"), ("frog", "blue"))
        ]
        off = settings.model_copy(update={"generalise_experiences": False})
        assert consolidate(db, tenant.id, off, embedder=ToyEmbedder()).generalised == 0
        assert consolidate(db, tenant.id, settings).generalised == 0
        assert [r.status for r in rows] == [ExperienceStatus.ACTIVE] * 2
        assert general_of(db, tenant) == []

    def test_a_later_animal_joins_the_category_lesson(self, db: Session, settings: Settings) -> None:
        """A new variation's `focus on frog` folds into the existing `focus on <task:animal>`."""
        tenant = make_tenant(db)
        cluster = make_cluster(db, tenant)
        supported(db, tenant, cluster, "focus on dove", "red", 1)
        supported(db, tenant, cluster, "focus on blue jay", "green", 1)
        consolidate(db, tenant.id, settings, embedder=ToyEmbedder())
        [general] = general_of(db, tenant)
        frog = supported(db, tenant, cluster, "focus on frog", "blue", 2)
        stats = consolidate(db, tenant.id, settings, embedder=ToyEmbedder())
        assert (stats.generalised, stats.merged_into_general) == (1, 1)
        assert general_of(db, tenant) == [general]
        assert general.successes == 4
        assert general.slots[0]["examples"] == ["blue jay", "dove", "frog"]
        assert frog.status == ExperienceStatus.RETIRED
        assert "experience.generalise_more" in actions(db, tenant.id)

    def test_later_moves_on_the_found_animal_take_the_category(self, db: Session, settings: Settings) -> None:
        """The run that focused on the dove then picked it up: `pick up <task:animal>`, in its own cluster."""
        tenant = make_tenant(db)
        cluster, later = make_cluster(db, tenant), make_cluster(db, tenant)
        supported(db, tenant, cluster, "focus on dove", "red", 1)
        supported(db, tenant, cluster, "focus on blue jay", "green", 1)
        pick = supported(db, tenant, later, "pick up dove", "red", 2)
        stats = consolidate(db, tenant.id, settings, embedder=ToyEmbedder())
        assert (stats.generalised, stats.merged_into_general) == (2, 3)
        carried = next(g for g in general_of(db, tenant) if g.cluster_id == later.id)
        assert carried.action_template == "pick up <task:animal>"
        assert carried.slots[0]["examples"] == ["blue jay", "dove"]
        assert carried.successes == 2 and pick.status == ExperienceStatus.RETIRED
        assert "with the animal it had found" in carried.text
        entry = db.scalars(select(AuditLog).where(AuditLog.target_id == str(carried.id))).one()
        assert (entry.action, entry.detail["coreferent"]) == ("experience.generalise", ["dove"])

    def test_unrelated_objects_stay_literal(self, db: Session, settings: Settings) -> None:
        """Two unnamed objects no task word describes (all score alike) are not generalised."""
        tenant = make_tenant(db)
        cluster = make_cluster(db, tenant)
        supported(db, tenant, cluster, "focus on axe", "red", 1)
        supported(db, tenant, cluster, "focus on shovel", "green", 1)
        assert consolidate(db, tenant.id, settings, embedder=ToyEmbedder()).generalised == 0
        assert (
            db.scalar(select(func.count()).select_from(AuditLog).where(AuditLog.tenant_id == tenant.id)) == 0
        )
