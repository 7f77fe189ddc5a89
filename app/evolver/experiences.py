"""Admission: candidate lessons become experiences, or support for ones that already say the same."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.orm import Session

from app.config import Settings
from app.embedding import Embedder
from app.evolver.extract import Candidate, TrajectoryView
from app.evolver.llm import Draft, Polisher
from app.storage.models import ExperienceStatus, Polarity
from app.storage.repositories import distillation

RATE_WINDOW = timedelta(minutes=1)
# Texts per call to the model (as for situation keys).
EMBED_CHUNK = 256


@dataclass(frozen=True)
class AdmissionConfig:
    """Limits on what one trajectory and one tenant may add."""

    max_new_per_trajectory: int = 5
    max_new_per_minute: int = 120
    merge_threshold: float = 0.92

    @classmethod
    def from_settings(cls, settings: Settings) -> AdmissionConfig:
        """The configured limits."""
        return cls(
            max_new_per_trajectory=settings.max_new_experiences_per_trajectory,
            max_new_per_minute=settings.max_new_experiences_per_minute,
            merge_threshold=settings.merge_threshold,
        )


@dataclass
class AdmissionStats:
    """Counts for the event result and the bench."""

    candidates: int = 0
    created: int = 0
    merged_exact: int = 0
    merged_near: int = 0
    dropped_over_limit: int = 0
    polished: int = 0
    created_ids: list[uuid.UUID] = field(default_factory=list)

    def add(self, other: AdmissionStats) -> None:
        """Sum another trajectory's counts into these."""
        self.candidates += other.candidates
        self.created += other.created
        self.merged_exact += other.merged_exact
        self.merged_near += other.merged_near
        self.dropped_over_limit += other.dropped_over_limit
        self.polished += other.polished
        self.created_ids += other.created_ids


class TenantBudget:
    """New experiences the tenant may still add this minute (read once per job, then counted down)."""

    def __init__(self, session: Session, tenant_id: uuid.UUID, per_minute: int) -> None:
        self.left = max(0, per_minute - distillation.created_since(session, tenant_id, RATE_WINDOW))


def admit_event(
    session: Session,
    work: Sequence[tuple[TrajectoryView, list[Candidate]]],
    *,
    tenant_id: uuid.UUID,
    embedder: Embedder,
    polisher: Polisher | None,
    config: AdmissionConfig,
    budget: TenantBudget,
) -> AdmissionStats:
    """Admit an event's trajectories in order, deciding as one trajectory at a time did, with fewer calls.

    Exact keys are read once for the event (and remembered as experiences are created), the texts of
    every trajectory are embedded in one call where no polisher rewrites them, and evidence is written
    at the end. The lookups of near experiences stay one per candidate, in order: each sees the
    experiences created before it, as it did.
    """
    known = distillation.experiences_by_key(session, tenant_id, (c.dedup_key for _, cs in work for c in cs))
    vectors = _Vectors(embedder)
    if polisher is None:
        # Texts of candidates that may be considered: an experience created earlier in the event can
        # only take candidates away (as exact merges), and any text still missing is embedded later.
        fresh = [(t, _fresh(cs, known, config)[0]) for t, cs in work]
        vectors.prefetch([c.text for _, cs in fresh for c in cs] + [t.task for t, cs in fresh if cs])
    supports: list[distillation.Support] = []
    totals = AdmissionStats()
    for trajectory, candidates in work:
        totals.add(
            _admit(
                session,
                trajectory,
                candidates,
                tenant_id=tenant_id,
                known=known,
                vectors=vectors,
                supports=supports,
                polisher=polisher,
                config=config,
                budget=budget,
                model=embedder.model_name,
            )
        )
    distillation.add_support(session, tenant_id, supports)
    return totals


class _Vectors:
    """Embeddings of lesson and task texts for one event: each distinct text embedded once, in few calls."""

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder
        self._by_text: dict[str, list[float]] = {}

    def prefetch(self, texts: Sequence[str]) -> None:
        """Embed the texts not embedded yet."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._by_text]
        for start in range(0, len(missing), EMBED_CHUNK):
            chunk = missing[start : start + EMBED_CHUNK]
            self._by_text.update(zip(chunk, self._embedder.embed_documents(chunk), strict=True))

    def of(self, texts: Sequence[str]) -> list[list[float]]:
        """The embedding of each text."""
        self.prefetch(texts)
        return [self._by_text[t] for t in texts]


def _fresh(
    candidates: list[Candidate], known: dict[str, uuid.UUID], config: AdmissionConfig
) -> tuple[list[Candidate], int]:
    """The candidates worth an embedding (first of their key, not stored yet), and how many were left out."""
    fresh: dict[str, Candidate] = {}
    for candidate in candidates:
        if candidate.dedup_key not in known and candidate.dedup_key not in fresh:
            fresh[candidate.dedup_key] = candidate
    # Only the best few are worth an embedding: the rest could at most add support.
    considered = list(fresh.values())[: max(1, config.max_new_per_trajectory) * 3]
    return considered, len(fresh) - len(considered)


def _admit(
    session: Session,
    trajectory: TrajectoryView,
    candidates: list[Candidate],
    *,
    tenant_id: uuid.UUID,
    known: dict[str, uuid.UUID],
    vectors: _Vectors,
    supports: list[distillation.Support],
    polisher: Polisher | None,
    config: AdmissionConfig,
    budget: TenantBudget,
    model: str,
) -> AdmissionStats:
    """Turn a trajectory's candidates into support for existing experiences or, within limits, new ones."""
    stats = AdmissionStats(candidates=len(candidates))
    for candidate in candidates:
        existing = known.get(candidate.dedup_key)
        if existing is not None:
            supports.append(_support(existing, candidate, trajectory))
            stats.merged_exact += 1
    considered, left_out = _fresh(candidates, known, config)
    stats.dropped_over_limit += left_out
    texts = [_text(c, trajectory, polisher, stats) for c in considered]
    allowed = config.max_new_per_trajectory
    for candidate, (text, llm_model), vector in zip(
        considered, texts, vectors.of([t[0] for t in texts]), strict=True
    ):
        polarity = Polarity(candidate.polarity)
        near = distillation.nearest_experience_id(session, tenant_id, polarity, candidate.cluster_id, vector)
        if near is not None and near[1] >= config.merge_threshold:
            supports.append(_support(near[0], candidate, trajectory))
            stats.merged_near += 1
            continue
        if allowed <= 0 or budget.left <= 0:
            stats.dropped_over_limit += 1
            continue
        experience_id = uuid.uuid4()
        distillation.insert_experience(
            session,
            {
                "id": experience_id,
                "tenant_id": tenant_id,
                "domain": trajectory.domain,
                "cluster_id": candidate.cluster_id,
                "polarity": polarity,
                "status": ExperienceStatus.ACTIVE,
                "text": text,
                "text_source": "llm" if llm_model else "heuristic",
                "llm_model": llm_model,
                "action_template": candidate.action.template,
                "action_example": candidate.action.example,
                "slots": [
                    {"name": s.name, "source": s.source, "example": s.example} for s in candidate.action.slots
                ],
                "situation": candidate.situation,
                "task": trajectory.task,
                "reason": candidate.reason.value,
                "dedup_key": candidate.dedup_key,
                "successes": 0,
                "failures": 0,
                "distinct_agents": 0,
                "alpha": 1.0,
                "beta": 1.0,
                "embedding_model": model,
            },
            vector,
            vectors.of([trajectory.task])[0],
        )
        known[candidate.dedup_key] = experience_id
        supports.append(_support(experience_id, candidate, trajectory))
        allowed -= 1
        budget.left -= 1
        stats.created += 1
        stats.created_ids.append(experience_id)
    return stats


def _support(
    experience_id: uuid.UUID, candidate: Candidate, trajectory: TrajectoryView
) -> distillation.Support:
    return distillation.Support(
        experience_id=experience_id,
        step_id=candidate.step_id,
        trajectory_id=trajectory.id,
        agent_id=trajectory.agent_id,
        success=trajectory.success,
    )


def _text(
    candidate: Candidate, trajectory: TrajectoryView, polisher: Polisher | None, stats: AdmissionStats
) -> tuple[str, str | None]:
    if polisher is None:
        return candidate.text, None
    polished = polisher.polish(
        Draft(
            text=candidate.text,
            polarity=candidate.polarity,
            action_template=candidate.action.template,
            action_example=candidate.action.example,
            situation=candidate.situation,
            task=trajectory.task,
            reason=candidate.reason.value,
        )
    )
    if polished is None:
        return candidate.text, None
    stats.polished += 1
    return polished.text, polished.model
