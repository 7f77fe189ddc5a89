"""Situations: normalise step observations, embed them once (with a cache), assign state clusters."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from sqlalchemy.orm import Session

from app.embedding import Embedder
from app.evolver.normalize import normalize_observation
from app.storage.repositories import distillation
from app.storage.repositories.distillation import ClusterState, StepSituation

EMBED_CHUNK = 256
# Observations recur across a worker's jobs (a room described again, the same error), so their keys
# are remembered per process; long ones are rare, and would make the memory this takes unbounded.
KEY_CACHE_SIZE = 4096
KEY_CACHE_MAX_CHARS = 8_000


@dataclass(frozen=True)
class RawStep:
    """A stored step as distillation first sees it."""

    step_id: uuid.UUID
    tenant_id: uuid.UUID
    domain: str
    observation: str


@dataclass(frozen=True)
class SituationStats:
    """What one pass did, for the event result and the bench."""

    steps: int
    distinct_situations: int
    cache_hits: int
    encoded: int
    clusters_created: int


def situation_key(observation: str) -> str:
    """The situation key of an observation (normalize_observation, remembered for short texts)."""
    if len(observation) > KEY_CACHE_MAX_CHARS:
        return normalize_observation(observation)
    return _remembered_key(observation)


@lru_cache(maxsize=KEY_CACHE_SIZE)
def _remembered_key(observation: str) -> str:
    return normalize_observation(observation)


def key_hash(key: str) -> str:
    """The cache key of a situation."""
    return hashlib.sha256(key.encode()).hexdigest()


def embed_situations(
    session: Session, tenant_id: uuid.UUID, keys: Sequence[str], embedder: Embedder
) -> tuple[dict[str, list[float]], int]:
    """Embeddings of distinct situation keys by hash (cache first); returns them and the cache hits."""
    by_hash = {key_hash(k): k for k in keys}
    vectors = distillation.cached_embeddings(session, tenant_id, by_hash, embedder.model_name)
    hits = len(vectors)
    missing = [h for h in by_hash if h not in vectors]
    fresh: dict[str, list[float]] = {}
    for start in range(0, len(missing), EMBED_CHUNK):
        chunk = missing[start : start + EMBED_CHUNK]
        fresh.update(zip(chunk, embedder.embed_documents([by_hash[h] for h in chunk]), strict=True))
    distillation.store_embeddings(session, tenant_id, fresh, embedder.model_name)
    vectors.update(fresh)
    return vectors, hits


def assign(
    session: Session, steps: Sequence[RawStep], embedder: Embedder, *, threshold: float
) -> tuple[dict[uuid.UUID, StepSituation], SituationStats]:
    """Give every step a situation key, an embedding and a state cluster (online, nearest centroid)."""
    if not steps:
        return {}, SituationStats(0, 0, 0, 0, 0)
    tenant_id = steps[0].tenant_id
    keys = {s.step_id: situation_key(s.observation) for s in steps}
    vectors, hits = embed_situations(session, tenant_id, list(keys.values()), embedder)

    situations: dict[uuid.UUID, StepSituation] = {}
    passes: list[tuple[str, _Touched]] = []
    created = 0
    for domain in sorted({s.domain for s in steps}):
        distillation.lock_clusters(session, tenant_id, domain)
        # A situation repeated within this pass joins the cluster found for it the first time.
        seen: dict[str, ClusterState] = {}
        # Clusters opened or moved in this pass: their new centroids are not in the database yet.
        touched = _Touched(embedder.dim)
        passes.append((domain, touched))
        here = [s for s in steps if s.domain == domain]
        # The stored clusters do not change during the pass (nothing is written until its end), so the
        # nearest stored cluster of every distinct situation is asked for at once.
        digests = list(dict.fromkeys(key_hash(keys[s.step_id]) for s in here))
        nearest = distillation.nearest_clusters(session, tenant_id, domain, [vectors[d] for d in digests])
        stored = dict(zip(digests, nearest, strict=True))
        for step in here:
            key = keys[step.step_id]
            digest = key_hash(key)
            vector = vectors[digest]
            cluster = seen.get(digest)
            if cluster is None:
                best = _better(stored[digest], touched.closest(vector))
                if best is not None and best[1] >= threshold:
                    cluster = best[0]
                    distillation.absorb(cluster, vector)
                else:
                    cluster = distillation.new_cluster(vector, key)
                    created += 1
                seen[digest] = cluster
            else:
                distillation.absorb(cluster, vector)
            touched.put(cluster)
            situations[step.step_id] = StepSituation(step.step_id, key, vector, cluster.id)
    for domain, touched in passes:
        distillation.write_clusters(session, tenant_id, domain, touched.clusters, embedder.model_name)
    distillation.set_situations(session, list(situations.values()), embedder.model_name)
    stats = SituationStats(
        steps=len(steps),
        distinct_situations=len(vectors),
        cache_hits=hits,
        encoded=len(vectors) - hits,
        clusters_created=created,
    )
    return situations, stats


class _Touched:
    """The clusters a pass opened or moved, their current centroids kept as the rows of one matrix."""

    def __init__(self, dim: int) -> None:
        self.clusters: list[ClusterState] = []
        self._row: dict[uuid.UUID, int] = {}
        self._centroids = np.empty((64, dim), dtype=np.float64)

    def put(self, cluster: ClusterState) -> None:
        """Add a cluster, or take in its moved centroid."""
        row = self._row.get(cluster.id)
        if row is None:
            row = self._row[cluster.id] = len(self.clusters)
            self.clusters.append(cluster)
            if row == len(self._centroids):
                self._centroids = np.concatenate([self._centroids, np.empty_like(self._centroids)])
        self._centroids[row] = cluster.centroid

    def closest(self, vector: list[float]) -> tuple[ClusterState, float] | None:
        """The touched cluster nearest to `vector`, with its cosine similarity."""
        if not self.clusters:
            return None
        similarity = self._centroids[: len(self.clusters)] @ np.asarray(vector, dtype=np.float64)
        index = int(np.argmax(similarity))
        return self.clusters[index], float(similarity[index])


def _better(
    stored: tuple[ClusterState, float] | None, touched: tuple[ClusterState, float] | None
) -> tuple[ClusterState, float] | None:
    """The closer of the database's nearest cluster and the nearest one this pass touched."""
    if stored is None or (touched is not None and touched[1] > stored[1]):
        return touched
    return stored
