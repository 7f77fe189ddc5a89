"""Consolidation: merge near-duplicates that slipped through, retire the confidently useless, cap clusters.

With an embedder, `do` lessons that made one move on different objects of a category their tasks
name ("focus on dove", "focus on blue jay" for "find a(n) animal") first merge into one lesson with
a category slot (`focus on <task:animal>`); see `generalise`.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.embedding import Embedder
from app.evolver import generalise
from app.storage.models import Experience, ExperienceStatus, Polarity, utcnow
from app.storage.repositories import audit, distillation

ACTOR = "system:consolidation"


@dataclass
class ConsolidationStats:
    """What one pass changed."""

    merged: int = 0
    retired_low_utility: int = 0
    retired_conflicting: int = 0
    retired_over_cap: int = 0
    generalised: int = 0
    merged_into_general: int = 0


def utility(row: Experience) -> float:
    """Posterior mean of the Beta(alpha, beta) utility."""
    return row.alpha / (row.alpha + row.beta)


def consolidate(
    session: Session, tenant_id: uuid.UUID, settings: Settings, *, embedder: Embedder | None = None
) -> ConsolidationStats:
    """One pass over a tenant's active experiences; every change is audited.

    Category slots need the embedder: without one (or with `generalise_experiences` off) none are made.
    """
    stats = ConsolidationStats()
    active = session.scalars(
        select(Experience)
        .where(Experience.tenant_id == tenant_id, Experience.status == ExperienceStatus.ACTIVE)
        .order_by(Experience.created_at, Experience.id)
    ).all()
    live = []
    for row in active:
        if (
            row.alpha + row.beta >= settings.retire_min_observations
            and utility(row) < settings.retire_below_utility
        ):
            _retire(
                session,
                row,
                "low_utility",
                {"utility": round(utility(row), 3), "alpha": row.alpha, "beta": row.beta},
            )
            stats.retired_low_utility += 1
        else:
            live.append(row)

    if embedder is not None and settings.generalise_experiences:
        created = _generalise(session, live, embedder, settings, stats)
        live = [r for r in live if r.status == ExperienceStatus.ACTIVE] + created

    groups: dict[tuple[uuid.UUID | None, str], list[Experience]] = defaultdict(list)
    for row in live:
        groups[(row.cluster_id, row.polarity.value)].append(row)
    for rows in groups.values():
        stats.merged += _merge_group(session, rows, settings.merge_threshold)

    stats.retired_conflicting = _resolve_conflicts(session, live)

    by_cluster: dict[uuid.UUID | None, list[Experience]] = defaultdict(list)
    for row in live:
        if row.status == ExperienceStatus.ACTIVE and row.cluster_id is not None:
            by_cluster[row.cluster_id].append(row)
    for rows in by_cluster.values():
        ranked = sorted(
            rows, key=lambda r: (utility(r), r.successes + r.failures, r.created_at), reverse=True
        )
        for row in ranked[settings.max_experiences_per_cluster :]:
            _retire(session, row, "over_cluster_cap", {"cap": settings.max_experiences_per_cluster})
            stats.retired_over_cap += 1
    session.flush()
    return stats


def _resolve_conflicts(session: Session, rows: list[Experience]) -> int:
    """Where one cluster says both `do X` and `avoid X`, keep the side with more evidence (ties: avoid)."""
    sides: dict[tuple[uuid.UUID | None, str], dict[str, list[Experience]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for row in rows:
        if row.status == ExperienceStatus.ACTIVE and row.cluster_id is not None:
            sides[(row.cluster_id, row.action_template)][row.polarity.value].append(row)
    retired = 0
    for by_polarity in sides.values():
        if len(by_polarity) < 2:
            continue
        weight = {p: sum(r.successes + r.failures for r in group) for p, group in by_polarity.items()}
        loser, winner = ("do", "avoid") if weight["do"] <= weight["avoid"] else ("avoid", "do")
        for row in by_polarity[loser]:
            _retire(
                session, row, "conflict", {"evidence": weight[loser], "other_side_evidence": weight[winner]}
            )
            retired += 1
    return retired


def _merge_group(session: Session, rows: list[Experience], threshold: float) -> int:
    if len(rows) < 2:
        return 0
    vectors = np.asarray([r.embedding for r in rows], dtype=np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
    similarity = vectors @ vectors.T
    # Better-supported wording first, so it is the one that survives.
    order = sorted(range(len(rows)), key=lambda i: (rows[i].successes + rows[i].failures, -i), reverse=True)
    gone: set[int] = set()
    merged = 0
    for i in order:
        if i in gone:
            continue
        for j in order:
            if j == i or j in gone or similarity[i, j] < threshold:
                continue
            distillation.move_evidence(session, source=rows[j], target=rows[i])
            _retire(
                session,
                rows[j],
                "merged",
                {"into": str(rows[i].id), "similarity": round(float(similarity[i, j]), 4)},
            )
            gone.add(j)
            merged += 1
    return merged


def _generalise(
    session: Session,
    rows: list[Experience],
    embedder: Embedder,
    settings: Settings,
    stats: ConsolidationStats,
) -> list[Experience]:
    """Apply the proposed category slots; returns the lessons it created."""
    do = [r for r in rows if r.polarity == Polarity.DO and r.cluster_id is not None]
    lessons = [
        generalise.Lesson(
            id=r.id,
            cluster_id=r.cluster_id,
            template=r.action_template,
            task=r.task,
            support=r.successes + r.failures,
            example=r.action_example,
            examples=generalise.examples_of(r.slots),
        )
        for r in do
        if r.cluster_id is not None  # for mypy: `do` has only clustered rows
    ]
    config = generalise.GeneraliseConfig(
        min_similarity=settings.generalise_min_similarity,
        min_margin=settings.generalise_margin,
        min_examples=settings.generalise_min_examples,
    )
    by_id = {r.id: r for r in do}
    created: list[Experience] = []
    others = [r.action_example for r in rows if r.polarity != Polarity.DO]
    scorer = generalise.embedding_scorer(embedder)
    proposals = generalise.propose(lessons, scorer, config, other_actions=others)
    for proposal in [*proposals, *generalise.corefer(lessons, proposals, scorer)]:
        members = [by_id[i] for i in proposal.members]
        target = by_id[proposal.into] if proposal.into is not None else None
        if target is None:
            key = generalise.dedup_key(proposal.cluster_id, proposal.template)
            if distillation.experience_by_key(session, members[0].tenant_id, key) is not None:
                continue  # retired before under this very template: do not bring it back
            target = _general_lesson(session, proposal, members[0], key, embedder)
            created.append(target)
            action = "experience.generalise"
        else:
            action = "experience.generalise_more"
        if not _one_kind_of_task([target, *members], settings.retrieval_experience_task_fit):
            # Learned across kinds of task ("focus on the dove" finding an animal, "focus on the bear"
            # finding the longest-lived one): a lesson for any task, as lessons without a task embedding are.
            target.task_embedding = None
        # A new list, so that the JSONB column sees the change.
        target.slots = generalise.slots_for(
            proposal.template, list(members[0].slots), proposal.category, proposal.examples
        )
        for row in members:
            distillation.move_evidence(session, source=row, target=target)
            # The Beta evidence of every merged lesson counts for the general one.
            target.alpha += row.alpha - 1.0
            target.beta += row.beta - 1.0
            _retire(session, row, "merged", {"into": str(target.id), "generalised_as": proposal.template})
        audit.record(
            session,
            target.tenant_id,
            actor=ACTOR,
            action=action,
            target_type="experience",
            target_id=str(target.id),
            detail={
                "template": proposal.template,
                "category": proposal.category,
                "similarity": round(proposal.similarity, 4),
                "runner_up": proposal.runner_up,
                "runner_up_similarity": (
                    round(proposal.runner_up_similarity, 4)
                    if proposal.runner_up_similarity is not None
                    else None
                ),
                "examples": list(proposal.examples),
                "coreferent": list(proposal.coreferent),
                "merged": [str(r.id) for r in members],
            },
        )
        stats.generalised += 1
        stats.merged_into_general += len(members)
    session.flush()
    return created


def _one_kind_of_task(rows: Sequence[Experience], fit: float) -> bool:
    """Whether these lessons were all learned on tasks of one kind (task embeddings at least `fit` alike)."""
    vectors = [r.task_embedding for r in rows]
    if any(v is None for v in vectors):
        return False
    unit = np.asarray(vectors, dtype=np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True).clip(min=1e-12)
    return bool((unit @ unit.T).min() >= fit)


def _general_lesson(
    session: Session,
    proposal: generalise.Generalisation,
    model: Experience,
    key: str,
    embedder: Embedder,
) -> Experience:
    """A new, empty `do` lesson with the proposal's template, worded from its best-supported member."""
    text = generalise.render_text(
        model.situation, proposal.template, proposal.category, coreferent=bool(proposal.coreferent)
    )
    row = Experience(
        id=uuid.uuid4(),
        tenant_id=model.tenant_id,
        domain=model.domain,
        cluster_id=proposal.cluster_id,
        skill_id=model.skill_id,
        polarity=Polarity.DO,
        status=ExperienceStatus.ACTIVE,
        text=text,
        text_source="heuristic",
        llm_model=None,
        action_template=proposal.template,
        action_example=model.action_example,
        slots=[],
        situation=model.situation,
        task=model.task,
        task_embedding=model.task_embedding,
        reason=model.reason,
        dedup_key=key,
        successes=0,
        failures=0,
        distinct_agents=0,
        alpha=1.0,
        beta=1.0,
        embedding=embedder.embed_documents([text])[0],
        embedding_model=embedder.model_name,
    )
    session.add(row)
    session.flush()
    return row


def _retire(session: Session, row: Experience, why: str, detail: dict[str, object]) -> None:
    row.status = ExperienceStatus.RETIRED
    row.updated_at = utcnow()
    audit.record(
        session,
        row.tenant_id,
        actor=ACTOR,
        action="experience.merge" if why == "merged" else "experience.retire",
        target_type="experience",
        target_id=str(row.id),
        detail={"reason": why, "text": row.text, **detail},
    )


def tenants_with_experiences(session: Session) -> list[uuid.UUID]:
    """Tenants that have any active experience."""
    return list(
        session.scalars(
            select(Experience.tenant_id).where(Experience.status == ExperienceStatus.ACTIVE).distinct()
        ).all()
    )
