"""Consolidation: merges, retirements and cluster caps, each audited."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.evolver.consolidate import consolidate
from app.ingestion import service as ingestion
from app.storage.models import AuditLog, ExperienceStatus, Polarity, TrajectoryStep
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
