"""Admission: candidate lessons become experiences, or support for ones that already say the same."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.orm import Session

from app.config import Settings
from app.embedding import Embedder
from app.evolver.extract import Candidate, TrajectoryView
from app.evolver.llm import Draft, Polisher
from app.storage.models import Experience, ExperienceStatus, Polarity
from app.storage.repositories import distillation

RATE_WINDOW = timedelta(minutes=1)


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


def admit(
    session: Session,
    trajectory: TrajectoryView,
    candidates: list[Candidate],
    *,
    tenant_id: uuid.UUID,
    embedder: Embedder,
    polisher: Polisher | None,
    config: AdmissionConfig,
    budget: TenantBudget,
) -> AdmissionStats:
    """Turn a trajectory's candidates into support for existing experiences or, within limits, new ones."""
    stats = AdmissionStats(candidates=len(candidates))
    fresh: dict[str, Candidate] = {}
    for candidate in candidates:
        existing = distillation.experience_by_key(session, tenant_id, candidate.dedup_key)
        if existing is not None:
            _support(session, existing, candidate, trajectory)
            stats.merged_exact += 1
        elif candidate.dedup_key not in fresh:
            fresh[candidate.dedup_key] = candidate
    # Only the best few are worth an embedding: the rest could at most add support.
    considered = list(fresh.values())[: max(1, config.max_new_per_trajectory) * 3]
    stats.dropped_over_limit += len(fresh) - len(considered)
    texts = [_text(c, trajectory, polisher, stats) for c in considered]
    vectors = embedder.embed_documents([t[0] for t in texts]) if considered else []
    allowed = config.max_new_per_trajectory
    for candidate, (text, llm_model), vector in zip(considered, texts, vectors, strict=True):
        polarity = Polarity(candidate.polarity)
        near = distillation.nearest_experience(session, tenant_id, polarity, candidate.cluster_id, vector)
        if near is not None and near[1] >= config.merge_threshold:
            _support(session, near[0], candidate, trajectory)
            stats.merged_near += 1
            continue
        if allowed <= 0 or budget.left <= 0:
            stats.dropped_over_limit += 1
            continue
        experience = Experience(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            domain=trajectory.domain,
            cluster_id=candidate.cluster_id,
            polarity=polarity,
            status=ExperienceStatus.ACTIVE,
            text=text,
            text_source="llm" if llm_model else "heuristic",
            llm_model=llm_model,
            action_template=candidate.action.template,
            action_example=candidate.action.example,
            slots=[
                {"name": s.name, "source": s.source, "example": s.example} for s in candidate.action.slots
            ],
            situation=candidate.situation,
            task=trajectory.task,
            reason=candidate.reason.value,
            dedup_key=candidate.dedup_key,
            successes=0,
            failures=0,
            distinct_agents=0,
            alpha=1.0,
            beta=1.0,
            embedding=vector,
            embedding_model=embedder.model_name,
        )
        session.add(experience)
        session.flush()
        _support(session, experience, candidate, trajectory)
        allowed -= 1
        budget.left -= 1
        stats.created += 1
        stats.created_ids.append(experience.id)
    return stats


def _support(
    session: Session, experience: Experience, candidate: Candidate, trajectory: TrajectoryView
) -> None:
    distillation.add_evidence(
        session,
        experience,
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
