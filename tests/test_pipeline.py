"""Ingest processing with the real embedding model: situations, clusters, experiences."""

import uuid
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.embedding import SentenceTransformerEmbedder, get_embedder
from app.evolver import pipeline
from app.ingestion import service as ingestion
from app.storage.models import (
    Event,
    EventStatus,
    Experience,
    ExperienceEvidence,
    StateCluster,
    Tenant,
    TrajectoryStep,
)
from tests.factories import make_step, make_tenant, make_trajectory

KITCHEN = (
    "This room is called the kitchen. In it, you see: a stove, which is turned off. a sink. a pot ({n} g)."
)
HALLWAY = "This room is called the hallway. In it, you see: a picture. A door to the kitchen (that is open)."


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    """The real all-MiniLM-L6-v2, loaded once for the session."""
    return get_embedder()


def process(
    db: Session, tenant: Tenant, items: list[dict[str, Any]], settings: Settings, embedder: Any
) -> dict[str, Any]:
    accepted = ingestion.accept(db, tenant.id, items)
    return pipeline.process_ingest(db, accepted.event_id, embedder=embedder, settings=settings)


def boil(
    agent: str = "agent-1", n: int = 1, success: bool = True, last: str = "focus on water"
) -> dict[str, Any]:
    """A short boil-water run: hallway, kitchen, then the focus that wins or loses."""
    return make_trajectory(
        0,
        task="Your task is to boil water.",
        agent_id=agent,
        steps=[
            make_step(0, observation=HALLWAY, action="go to kitchen", reward=0.1),
            make_step(1, observation=KITCHEN.format(n=n), action=last, reward=0.9 if success else -0.1),
        ],
        outcome={"success": success, "score": 1.0 if success else 0.0},
    )


class TestEmbedder:
    def test_unit_vectors_of_384_dims_that_mean_something(
        self, embedder: SentenceTransformerEmbedder
    ) -> None:
        """Similar observations are closer than unrelated ones."""
        a, b, c = embedder.embed_documents(
            [
                "The stove in the kitchen is off.",
                "In the kitchen, the stove is turned off.",
                "git push rejected",
            ]
        )
        assert len(a) == embedder.dim == 384
        assert abs(sum(x * x for x in a) - 1.0) < 1e-4

        def dot(u: list[float], v: list[float]) -> float:
            return sum(x * y for x, y in zip(u, v, strict=True))

        assert dot(a, b) > dot(a, c) + 0.3


class TestSituations:
    def test_every_step_gets_key_embedding_and_cluster(
        self, db: Session, settings: Settings, embedder: SentenceTransformerEmbedder
    ) -> None:
        """Each step gets a normalised key, a 384-dim embedding with the model name and a cluster."""
        tenant = make_tenant(db)
        accepted = ingestion.accept(db, tenant.id, [make_trajectory(3), make_trajectory(2)])
        result = pipeline.process_ingest(db, accepted.event_id, embedder=embedder, settings=settings)
        assert result["trajectories"] == 2
        assert result["steps_embedded"] == 5
        steps = db.scalars(
            select(TrajectoryStep).where(TrajectoryStep.trajectory_id.in_(accepted.trajectory_ids))
        ).all()
        assert all(s.embedding is not None and len(s.embedding) == 384 for s in steps)
        assert {s.embedding_model for s in steps} == {embedder.model_name}
        assert all(s.cluster_id is not None and s.situation_key for s in steps)
        assert all(s.situation_key == s.situation_key.lower() for s in steps if s.situation_key)
        event = db.get(Event, accepted.event_id)
        assert event is not None and event.status == EventStatus.SUCCEEDED and event.attempts == 1

    def test_incidental_differences_share_a_cluster_and_rooms_do_not(
        self, db: Session, settings: Settings, embedder: SentenceTransformerEmbedder
    ) -> None:
        """The kitchen with a 120 g or a 450 g pot is one situation; the hallway is another."""
        tenant = make_tenant(db)
        process(db, tenant, [boil(n=120), boil(n=450)], settings, embedder)
        clusters = db.scalars(select(StateCluster).where(StateCluster.tenant_id == tenant.id)).all()
        assert sorted(c.size for c in clusters) == [2, 2]
        kitchen = next(c for c in clusters if "kitchen. in it" in c.representative)
        assert "<num>" in kitchen.representative

    def test_cache_skips_seen_situations(
        self, db: Session, settings: Settings, embedder: SentenceTransformerEmbedder
    ) -> None:
        """A second event with the same situations encodes nothing new."""
        tenant = make_tenant(db)
        first = process(db, tenant, [boil(n=1)], settings, embedder)
        second = process(db, tenant, [boil(n=2)], settings, embedder)
        assert first["situations"]["encoded"] == 2
        assert second["situations"] == {
            **second["situations"],
            "cache_hits": 2,
            "encoded": 0,
            "clusters_created": 0,
        }

    def test_clusters_are_per_tenant(
        self, db: Session, settings: Settings, embedder: SentenceTransformerEmbedder
    ) -> None:
        """Another tenant's identical observations open their own clusters."""
        a, b = make_tenant(db), make_tenant(db)
        process(db, a, [boil()], settings, embedder)
        assert process(db, b, [boil()], settings, embedder)["situations"]["clusters_created"] == 2

    def test_redelivery_does_nothing(
        self, db: Session, settings: Settings, embedder: SentenceTransformerEmbedder
    ) -> None:
        """A job delivered twice processes once."""
        accepted = ingestion.accept(db, make_tenant(db).id, [boil()])
        first = pipeline.process_ingest(db, accepted.event_id, embedder=embedder, settings=settings)
        again = pipeline.process_ingest(db, accepted.event_id, embedder=embedder, settings=settings)
        assert again == first
        event = db.get(Event, accepted.event_id)
        assert event is not None and event.attempts == 1


class TestExperiences:
    def experiences(self, db: Session, tenant: Tenant) -> list[Experience]:
        return list(db.scalars(select(Experience).where(Experience.tenant_id == tenant.id)).all())

    def test_success_teaches_do_and_failure_teaches_avoid(
        self, db: Session, settings: Settings, embedder: SentenceTransformerEmbedder
    ) -> None:
        """The winning focus becomes a `do` with a task slot; the losing one an `avoid` on other objects."""
        tenant = make_tenant(db)
        process(
            db,
            tenant,
            [boil(), boil(agent="agent-2", success=False, last="focus on orange juice")],
            settings,
            embedder,
        )
        found = {(e.polarity.value, e.action_template) for e in self.experiences(db, tenant)}
        assert ("do", "focus on <task:object>") in found
        assert ("avoid", "focus on <other:object>") in found
        do = next(e for e in self.experiences(db, tenant) if e.action_template == "focus on <task:object>")
        assert do.slots == [{"name": "task", "source": "task", "example": "water"}]
        assert do.text.startswith("When ") and len(do.text.split()) <= 64
        assert (do.successes, do.failures, do.distinct_agents) == (1, 0, 1)
        assert (do.alpha, do.beta) == (1.0, 1.0)
        assert do.cluster_id is not None
        assert len(do.embedding) == 384
        # Its task's embedding, so retrieval serves it to tasks of this kind.
        assert do.task_embedding is not None
        task_vector = np.asarray(embedder.embed_documents([do.task])[0])
        assert float(np.dot(np.asarray(do.task_embedding), task_vector)) == pytest.approx(1.0, abs=1e-3)

    def test_repeated_lessons_add_support_not_rows(
        self, db: Session, settings: Settings, embedder: SentenceTransformerEmbedder
    ) -> None:
        """The same lesson from another agent and variation increments support; no duplicate row."""
        tenant = make_tenant(db)
        process(db, tenant, [boil(agent="a", n=1)], settings, embedder)
        before = len(self.experiences(db, tenant))
        result = process(db, tenant, [boil(agent="b", n=2)], settings, embedder)
        assert len(self.experiences(db, tenant)) == before
        assert result["experiences"]["created"] == 0
        assert result["experiences"]["merged_exact"] >= 1
        do = next(e for e in self.experiences(db, tenant) if e.action_template == "focus on <task:object>")
        assert (do.successes, do.distinct_agents) == (2, 2)
        evidence = db.scalar(
            select(func.count())
            .select_from(ExperienceEvidence)
            .where(ExperienceEvidence.experience_id == do.id)
        )
        assert evidence == 2

    def test_per_trajectory_limit(
        self, db: Session, settings: Settings, embedder: SentenceTransformerEmbedder
    ) -> None:
        """At most N new experiences per trajectory; the rest are counted, not stored."""
        tenant = make_tenant(db)
        result = process(
            db,
            tenant,
            [boil()],
            settings.model_copy(update={"max_new_experiences_per_trajectory": 1}),
            embedder,
        )
        assert result["experiences"]["created"] == 1
        assert len(self.experiences(db, tenant)) == 1
        assert result["experiences"]["dropped_over_limit"] >= 1

    def test_per_minute_limit(
        self, db: Session, settings: Settings, embedder: SentenceTransformerEmbedder
    ) -> None:
        """A tenant's per-minute budget caps new experiences across trajectories."""
        tenant = make_tenant(db)
        limited = settings.model_copy(update={"max_new_experiences_per_minute": 1})
        result = process(db, tenant, [boil(), boil(success=False, last="focus on milk")], limited, embedder)
        assert result["experiences"]["created"] == 1


class TestFailures:
    def test_missing_event_raises(
        self, db: Session, settings: Settings, embedder: SentenceTransformerEmbedder
    ) -> None:
        """A job for an event that does not exist is reported, not silently passed."""
        with pytest.raises(pipeline.EventMissing):
            pipeline.process_ingest(db, uuid.uuid4(), embedder=embedder, settings=settings)

    def test_fail_event_records_reason(self, db: Session) -> None:
        """A failed job leaves a readable reason."""
        accepted = ingestion.accept(db, make_tenant(db).id, [make_trajectory(1)])
        pipeline.fail_event(db, accepted.event_id, "ValueError: bad data")
        event = db.get(Event, accepted.event_id)
        assert event is not None
        assert event.status == EventStatus.FAILED
        assert event.error == "ValueError: bad data"

    def test_long_observations_are_cut_not_refused(
        self, db: Session, settings: Settings, embedder: SentenceTransformerEmbedder
    ) -> None:
        """A 60 KB observation processes (its situation key is cut)."""
        body = make_trajectory(0)
        body["steps"] = [make_step(0, observation="log line 17\n" * 5000)]
        assert process(db, make_tenant(db), [body], settings, embedder)["steps_embedded"] == 1


def test_nearest_clusters_match_an_exact_scan(db: Session) -> None:
    """One statement for many vectors gives, for each, the stored cluster an exhaustive search finds."""
    import numpy as np

    from app.storage.repositories import distillation
    from tests.factories import make_cluster

    tenant = make_tenant(db)
    rng = np.random.default_rng(3)
    for _ in range(30):
        cluster = make_cluster(db, tenant, domain="kitchen")
        vector = rng.normal(size=384)
        cluster.centroid = (vector / np.linalg.norm(vector)).tolist()
    other = make_cluster(db, make_tenant(db), domain="kitchen")  # another tenant's: never an answer
    db.flush()
    centroids = {c.id: np.asarray(c.centroid) for c in db.scalars(select(StateCluster).where(
        StateCluster.tenant_id == tenant.id))}  # fmt: skip
    queries = [rng.normal(size=384) for _ in range(12)]
    queries = [(q / np.linalg.norm(q)).tolist() for q in queries]
    found = distillation.nearest_clusters(db, tenant.id, "kitchen", queries)
    assert len(found) == len(queries)
    for query, answer in zip(queries, found, strict=True):
        assert answer is not None and answer[0].id != other.id
        best = max(centroids, key=lambda cid: float(centroids[cid] @ np.asarray(query)))
        assert answer[0].id == best
        assert abs(answer[1] - float(centroids[best] @ np.asarray(query))) < 1e-5
    assert distillation.nearest_clusters(db, tenant.id, "garden", queries[:2]) == [None, None]
    assert distillation.nearest_clusters(db, tenant.id, "kitchen", []) == []
