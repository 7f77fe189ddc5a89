"""Batched distillation decides as the step-by-step version did: the same clusters, experiences and merges.

The expected digests were first recorded with the version that embedded and wrote one trajectory at a
time (`1ca6e22`), and matched by the batched one; they were recorded again when extraction stopped
teaching `avoid` from a successful run's idle steps and from divergences the run recovered from, and
again when a step that raised the reward stopped being blamed as a failed run's divergence (on purpose
each time: different lessons, same batching). A toy embedder whose vector depends only on the text,
and exact scans instead of HNSW, make the run repeatable, so any change in what is decided shows as a
different digest.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.bench.ingest import make_trajectory
from app.config import Settings
from app.evolver import pipeline
from app.evolver.llm import Draft, Polished
from app.ingestion import service as ingestion
from app.storage.models import Experience, ExperienceEvidence, StateCluster, Trajectory, TrajectoryStep
from app.storage.repositories import trajectories
from tests.factories import make_tenant

EXPECTED_DIGESTS = {
    "60": "71d1b91dc99ac0adf02a679720a55ca9837debb841279abd7855e4a3d505c742",
    "1000": "d2d6b97b8d0c407df4878d8990ef53bf52f1c602b89acbbe1d058058ecdfb2aa",
    "1000-polished": "cbd76eec4b08edcb3154cb8910af0ce20c10c59bf9ef0aef0dc6a71cb04b5347",
}


class BagOfWords:
    """Unit sum of a fixed random vector per word: similar texts are close, and batches change nothing."""

    dim = 384
    model_name = "toy-bag-of-words"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(len(texts))
        return [self._one(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._one(text)

    def _one(self, text: str) -> list[float]:
        total = np.zeros(self.dim)
        for word in text.lower().split():
            seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "big")
            total += np.random.default_rng(seed).standard_normal(self.dim)
        unit = total / (np.linalg.norm(total) or 1.0)
        vector: list[float] = unit.astype(np.float32).astype(np.float64).tolist()
        return vector


class Shortener:
    """A polisher that rewrites every other draft (drops the reason), and counts what it was asked."""

    def __init__(self) -> None:
        self.asked = 0

    def polish(self, draft: Draft) -> Polished | None:
        self.asked += 1
        if self.asked % 2:
            return None
        return Polished(text=draft.text.split(" because ")[0] + ".", model="toy-llm")


def run_events(
    db: Session,
    settings: Settings,
    embedder: BagOfWords,
    monkeypatch: pytest.MonkeyPatch,
    polisher: Shortener | None = None,
) -> dict[str, Any]:
    """Distill 40 generated trajectories in events of 10 and describe everything that was decided."""
    # Trajectories and steps are read in id order: ids drawn from a seed make that order repeatable.
    ids = random.Random(5)  # noqa: S311 - reproducible test data
    monkeypatch.setattr(
        trajectories,
        "uuid",
        SimpleNamespace(UUID=uuid.UUID, uuid4=lambda: uuid.UUID(int=ids.getrandbits(128), version=4)),
    )
    # Exact nearest-neighbour scans: HNSW answers can vary between runs (random levels).
    db.execute(text("SET LOCAL enable_indexscan = off"))
    tenant = make_tenant(db)
    rng = random.Random(11)  # noqa: S311 - reproducible test data
    bodies = [make_trajectory(rng) for _ in range(40)]
    results = []
    for start in range(0, len(bodies), 10):
        accepted = ingestion.accept(db, tenant.id, bodies[start : start + 10], schedule=False)
        results.append(
            pipeline.process_ingest(
                db, accepted.event_id, embedder=embedder, settings=settings, polisher=polisher
            )
        )
        # A worker commits every event and starts the next with a fresh session, reading the database.
        db.flush()
        db.expire_all()

    steps = db.execute(
        select(TrajectoryStep.id, TrajectoryStep.idx, TrajectoryStep.cluster_id, TrajectoryStep.situation_key)
        .where(TrajectoryStep.tenant_id == tenant.id)
        .order_by(TrajectoryStep.trajectory_id, TrajectoryStep.idx)
    ).all()
    agent_of = dict(
        db.execute(
            select(TrajectoryStep.id, Trajectory.agent_id)
            .join(Trajectory, Trajectory.id == TrajectoryStep.trajectory_id)
            .where(TrajectoryStep.tenant_id == tenant.id)
        ).all()
    )
    step_name = {s.id: f"{agent_of[s.id]}#{s.idx}" for s in steps}
    clusters = db.scalars(select(StateCluster).where(StateCluster.tenant_id == tenant.id)).all()
    members: dict[uuid.UUID, list[str]] = {c.id: [] for c in clusters}
    for step in steps:
        members[step.cluster_id].append(step_name[step.id])
    cluster_name = {c.id: f"{c.representative}|{min(members[c.id])}" for c in clusters}
    experiences = db.scalars(select(Experience).where(Experience.tenant_id == tenant.id)).all()
    evidence = db.execute(
        select(ExperienceEvidence.experience_id, ExperienceEvidence.step_id).where(
            ExperienceEvidence.tenant_id == tenant.id
        )
    ).all()
    supported: dict[uuid.UUID, list[str]] = {e.id: [] for e in experiences}
    for experience_id, step_id in evidence:
        supported[experience_id].append(step_name[step_id])
    return {
        "results": results,
        "polisher_asked": polisher.asked if polisher else 0,
        "clusters": sorted(
            [cluster_name[c.id], c.size, sorted(members[c.id]), [round(x, 5) for x in c.centroid[:4]]]
            for c in clusters
        ),
        "experiences": sorted(
            [
                cluster_name[e.cluster_id] if e.cluster_id else None,
                e.polarity.value,
                e.action_template,
                e.text,
                e.text_source,
                e.llm_model,
                e.reason,
                e.successes,
                e.failures,
                e.distinct_agents,
                sorted(supported[e.id]),
            ]
            for e in experiences
        ),
    }


def digest(found: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(found, sort_keys=True, default=str).encode()).hexdigest()


@pytest.mark.parametrize(
    ("per_minute", "polish", "expected"),
    [
        (60, False, "60"),
        (1000, False, "1000"),
        (1000, True, "1000-polished"),
    ],
)
def test_batched_distillation_decides_as_before(
    db: Session,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    per_minute: int,
    polish: bool,
    expected: str,
) -> None:
    """Clusters, experiences, merges, evidence and counts of 4 events equal those of the old version."""
    limited = settings.model_copy(update={"max_new_experiences_per_minute": per_minute})
    embedder = BagOfWords()
    found = run_events(db, limited, embedder, monkeypatch, Shortener() if polish else None)
    totals = {
        k: sum(r["experiences"][k] for r in found["results"]) for k in found["results"][0]["experiences"]
    }
    # Every path of admission is taken: exact and near merges, the caps (texts half rewritten by the
    # polisher need not come near each other).
    assert totals["merged_exact"] > 0 and totals["dropped_over_limit"] > 0
    assert totals["merged_near"] > 0 or polish
    assert totals["polished"] > 0 if polish else totals["polished"] == 0
    if not polish:
        # Per event: one call for the situation keys, one for the experience texts (rarely a third).
        assert len(embedder.calls) <= 3 * len(found["results"])
    assert digest(found) == EXPECTED_DIGESTS[expected], json.dumps(found, indent=1, default=str)[:4000]


class TestVectorParameters:
    def test_binary_vectors_equal_their_text_form(self, db: Session) -> None:
        """Model outputs (float32) and centroids (float64) sent in binary are the vectors their text gives."""
        from app.storage.repositories import distillation

        rng = np.random.default_rng(7)
        rows = rng.standard_normal((20, 384))
        centroids = [(r / np.linalg.norm(r)).tolist() for r in rows]
        outputs = [np.asarray(c, dtype=np.float32).astype(np.float64).tolist() for c in centroids]
        distillation._binary_parameters(db)
        for vector in [*centroids, *outputs]:
            sent = distillation._vector_value(vector)
            assert not isinstance(sent, str)
            same = db.execute(
                text("SELECT CAST(:a AS vector) = CAST(:b AS vector)"),
                {"a": sent, "b": distillation.vector_text(vector)},
            ).scalar_one()
            assert same is True

    def test_halfway_numbers_keep_the_text_form(self) -> None:
        """A float64 number exactly between two float32 values is sent as text, whose digits decide."""
        from app.storage.repositories import distillation

        low = np.float32(0.1)
        high = np.nextafter(low, np.float32(1.0))
        halfway = (float(low) + float(high)) / 2
        assert distillation._vector_bytes([halfway, 0.5]) is None
        assert isinstance(distillation._vector_value([halfway, 0.5]), str)
        assert distillation._vector_bytes([float(low), 0.5]) is not None

    def test_nearest_clusters_take_a_binary_array(self, db: Session) -> None:
        """The vector[] parameter in binary finds, for each vector, its own stored cluster."""
        from app.storage.repositories import distillation
        from tests.factories import make_cluster

        tenant = make_tenant(db)
        rng = np.random.default_rng(5)
        vectors = []
        for _ in range(5):
            cluster = make_cluster(db, tenant, domain="cellar")
            row = rng.standard_normal(384)
            cluster.centroid = np.asarray(row / np.linalg.norm(row), dtype=np.float32).tolist()
            vectors.append((cluster.id, cluster.centroid))
        db.flush()
        found = distillation.nearest_clusters(db, tenant.id, "cellar", [v for _, v in vectors])
        for (cluster_id, _), answer in zip(vectors, found, strict=True):
            assert answer is not None and answer[0].id == cluster_id and answer[1] > 0.9999
            # Read as pgvector's own type reads it: the same doubles, not just the same float32 values.
            stored = db.scalar(select(StateCluster.centroid).where(StateCluster.id == cluster_id))
            assert answer[0].centroid == stored
