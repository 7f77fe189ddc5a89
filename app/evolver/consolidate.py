"""Consolidation: merge near-duplicates that slipped through, retire the confidently useless, cap clusters."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.storage.models import Experience, ExperienceStatus, utcnow
from app.storage.repositories import audit, distillation

ACTOR = "system:consolidation"


@dataclass
class ConsolidationStats:
    """What one pass changed."""

    merged: int = 0
    retired_low_utility: int = 0
    retired_conflicting: int = 0
    retired_over_cap: int = 0


def utility(row: Experience) -> float:
    """Posterior mean of the Beta(alpha, beta) utility."""
    return row.alpha / (row.alpha + row.beta)


def consolidate(session: Session, tenant_id: uuid.UUID, settings: Settings) -> ConsolidationStats:
    """One pass over a tenant's active experiences; every change is audited."""
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
