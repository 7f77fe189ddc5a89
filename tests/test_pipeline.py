"""Ingest processing with the real embedding model."""

import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.embedding import SentenceTransformerEmbedder, get_embedder
from app.evolver import pipeline
from app.ingestion import service as ingestion
from app.storage.models import Event, EventStatus, TrajectoryStep
from tests.factories import make_step, make_tenant, make_trajectory


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    """The real all-MiniLM-L6-v2, loaded once for the session."""
    return get_embedder()


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


class TestEmbedIngest:
    def test_embeds_every_step_and_succeeds(self, db: Session, embedder: SentenceTransformerEmbedder) -> None:
        """Each step gets a 384-dim embedding and the model's name; the event records what it did."""
        tenant = make_tenant(db)
        items = [make_trajectory(3), make_trajectory(2)]
        accepted = ingestion.accept(db, tenant.id, items)
        result = pipeline.embed_ingest(db, accepted.event_id, embedder=embedder)
        assert result == {"trajectories": 2, "steps_embedded": 5}
        steps = db.scalars(
            select(TrajectoryStep).where(TrajectoryStep.trajectory_id.in_(accepted.trajectory_ids))
        ).all()
        assert len(steps) == 5
        assert all(s.embedding is not None and len(s.embedding) == 384 for s in steps)
        assert {s.embedding_model for s in steps} == {embedder.model_name}
        event = db.get(Event, accepted.event_id)
        assert event is not None
        assert event.status == EventStatus.SUCCEEDED
        assert event.attempts == 1
        assert event.finished_at is not None

    def test_is_idempotent(self, db: Session, embedder: SentenceTransformerEmbedder) -> None:
        """A redelivered job does no work twice."""
        accepted = ingestion.accept(db, make_tenant(db).id, [make_trajectory(2)])
        pipeline.embed_ingest(db, accepted.event_id, embedder=embedder)
        assert pipeline.embed_ingest(db, accepted.event_id, embedder=embedder)["steps_embedded"] == 2
        event = db.get(Event, accepted.event_id)
        assert event is not None and event.attempts == 1

    def test_resumes_after_partial_work(self, db: Session, embedder: SentenceTransformerEmbedder) -> None:
        """If a worker died midway, the redo embeds only what is missing."""
        accepted = ingestion.accept(db, make_tenant(db).id, [make_trajectory(4)])
        first = db.scalars(
            select(TrajectoryStep).where(
                TrajectoryStep.trajectory_id == accepted.trajectory_ids[0], TrajectoryStep.idx == 0
            )
        ).one()
        first.embedding = embedder.embed_query(first.observation)
        first.embedding_model = embedder.model_name
        db.flush()
        assert pipeline.embed_ingest(db, accepted.event_id, embedder=embedder)["steps_embedded"] == 3

    def test_long_observations_are_cut_not_refused(
        self, db: Session, embedder: SentenceTransformerEmbedder
    ) -> None:
        """A 60 KB observation embeds (the model reads its start)."""
        body = make_trajectory(0)
        body["steps"] = [make_step(0, observation="log line\n" * 6000)]
        accepted = ingestion.accept(db, make_tenant(db).id, [body])
        assert pipeline.embed_ingest(db, accepted.event_id, embedder=embedder)["steps_embedded"] == 1

    def test_missing_event_raises(self, db: Session, embedder: SentenceTransformerEmbedder) -> None:
        """A job for an event that does not exist is reported, not silently passed."""
        with pytest.raises(pipeline.EventMissing):
            pipeline.embed_ingest(db, uuid.uuid4(), embedder=embedder)

    def test_fail_event_records_reason(self, db: Session) -> None:
        """A failed job leaves a readable reason."""
        accepted = ingestion.accept(db, make_tenant(db).id, [make_trajectory(1)])
        pipeline.fail_event(db, accepted.event_id, "ValueError: bad data")
        event = db.get(Event, accepted.event_id)
        assert event is not None
        assert event.status == EventStatus.FAILED
        assert event.error == "ValueError: bad data"
