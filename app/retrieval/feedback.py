"""Outcomes of retrievals, from `POST /v1/feedback` or from a posted trajectory that names them.

Each retrieval gets one outcome: the feedback's, or the run's that names it (a step that raised the
reward counts as a success). Only the items the agent says it used are credited or blamed, never
the ones merely listed: their Beta(alpha, beta) utility posterior moves by

    success: alpha += 1      failure: beta += 1      harmful: beta += 2

"harmful" counts double because an item that made things worse should fall out of answers faster than
one that merely did not help. Items listed but not used, and the withheld one, keep their posteriors;
they count in the uplift statistics instead.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence

from sqlalchemy.orm import Session

from app.errors import FeedbackExists, ItemNotInRetrieval, RetrievalNotFound
from app.storage.models import Outcome, Retrieval, RetrievalItem, Trajectory, TrajectoryStep
from app.storage.repositories import retrievals

log = logging.getLogger(__name__)

# (alpha, beta) added to the posterior of each used item.
POSTERIOR_STEP: dict[Outcome, tuple[float, float]] = {
    Outcome.SUCCESS: (1.0, 0.0),
    Outcome.FAILURE: (0.0, 1.0),
    Outcome.HARMFUL: (0.0, 2.0),
}


def give(
    session: Session,
    tenant_id: uuid.UUID,
    retrieval_id: uuid.UUID,
    used_item_ids: Iterable[uuid.UUID],
    outcome: Outcome,
    reason: str | None = None,
) -> Retrieval:
    """An agent's feedback on one retrieval: 404 unknown, 409 if settled, 422 for an item it did not list."""
    row = retrievals.get(session, tenant_id, retrieval_id, lock=True)
    if row is None:
        raise RetrievalNotFound(detail={"retrieval_id": str(retrieval_id)})
    if row.outcome is not None:
        raise FeedbackExists(detail={"retrieval_id": str(row.id), "outcome": row.outcome.value})
    listed = {i.item_id: i for i in retrievals.items_of(session, row.id) if not i.withheld}
    wanted = list(dict.fromkeys(used_item_ids))
    unlisted = [str(i) for i in wanted if i not in listed]
    if unlisted:
        raise ItemNotInRetrieval(detail={"retrieval_id": str(row.id), "item_ids": unlisted})
    _settle(session, row, [listed[i] for i in wanted], outcome, reason)
    return row


def apply_trajectory_outcome(
    session: Session, tenant_id: uuid.UUID, trajectory: Trajectory, steps: Sequence[TrajectoryStep]
) -> int:
    """Settle the retrievals this trajectory's steps name; returns how many it settled.

    A retrieval settles with the run's outcome, except where a step that named it raised the reward:
    what the agent used there paid off, whatever became of the run later (a failed run that found the
    animal and then lost its way must not sink the lesson that found it). A retrieval that already has
    an outcome (feedback came first) is left alone; ids that are not retrievals of this tenant, and used
    ids the retrieval did not list, are ignored. Without a known outcome only rewarded steps settle.
    """
    used: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)
    rewarded: set[uuid.UUID] = set()
    for step in steps:
        retrieval_id = _uuid(step.retrieval_id)
        if retrieval_id is not None:
            used[retrieval_id].update(i for i in map(_uuid, step.used_item_ids) if i is not None)
            if step.reward is not None and step.reward > 0:
                rewarded.add(retrieval_id)
    if trajectory.success is None:
        used = {r: items for r, items in used.items() if r in rewarded}
    run = Outcome.SUCCESS if trajectory.success else Outcome.FAILURE
    rows = retrievals.unsettled(session, tenant_id, list(used))
    for row in rows:
        listed = {i.item_id: i for i in retrievals.items_of(session, row.id) if not i.withheld}
        items = [listed[i] for i in sorted(used[row.id]) if i in listed]
        outcome = Outcome.SUCCESS if row.id in rewarded else run
        _settle(session, row, items, outcome, f"trajectory {trajectory.id}")
    return len(rows)


def apply_trajectory_outcomes(
    session: Session,
    tenant_id: uuid.UUID,
    trajectories: Sequence[Trajectory],
    steps: Sequence[TrajectoryStep],
) -> int:
    """`apply_trajectory_outcome` for each trajectory of an ingest event; returns the retrievals settled."""
    by_trajectory: dict[uuid.UUID, list[TrajectoryStep]] = defaultdict(list)
    for step in steps:
        if step.retrieval_id:
            by_trajectory[step.trajectory_id].append(step)
    return sum(
        apply_trajectory_outcome(session, tenant_id, t, by_trajectory[t.id])
        for t in trajectories
        if t.id in by_trajectory
    )


def _settle(
    session: Session, row: Retrieval, used: Sequence[RetrievalItem], outcome: Outcome, reason: str | None
) -> None:
    alpha, beta = POSTERIOR_STEP[outcome]
    retrievals.settle(session, row, used, outcome=outcome, reason=reason, alpha=alpha, beta=beta)
    # Feedback is too frequent for the audit log: the retrieval row (outcome, feedback_at) records it.
    log.debug("retrieval %s settled %s with %d used items", row.id, outcome.value, len(used))


def _uuid(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
