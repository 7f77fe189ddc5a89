"""Processing of an ingest event: situations and clusters for every step, then experiences."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from app.config import Settings
from app.embedding import Embedder
from app.evolver import situations
from app.evolver.experiences import AdmissionConfig, TenantBudget, admit_event
from app.evolver.extract import (
    ClusterHistory,
    ExtractionConfig,
    StepView,
    TrajectoryView,
    explored,
    extract,
    template_action,
)
from app.evolver.llm import Polisher
from app.retrieval import feedback
from app.storage.models import EventStatus, Trajectory
from app.storage.repositories import distillation, events, trajectories
from app.storage.repositories.distillation import StepSituation

log = logging.getLogger(__name__)


class EventMissing(Exception):
    """The job names an event that is not in the database."""


def process_ingest(
    session: Session,
    event_id: uuid.UUID,
    *,
    embedder: Embedder,
    settings: Settings,
    polisher: Polisher | None = None,
) -> dict[str, Any]:
    """Distill an ingest event in one transaction; a redelivered job for a finished event does nothing."""
    event = events.lock(session, event_id)
    if event is None:
        raise EventMissing(str(event_id))
    if event.status == EventStatus.SUCCEEDED:
        return dict(event.result)
    events.mark_running(event)
    session.flush()

    rows = trajectories.of_event(session, event_id)
    steps = trajectories.steps_of_many(session, [t.id for t in rows])
    domains = {row.id: _domain_of(row) for row in rows}
    placed, situation_stats = situations.assign(
        session,
        [situations.RawStep(s.id, s.tenant_id, domains[s.trajectory_id], s.observation) for s in steps],
        embedder,
        threshold=settings.cluster_threshold,
    )
    views = _views(rows, steps, placed)
    history = _history(session, event.tenant_id, views)
    extraction = ExtractionConfig(do_min_score=settings.do_min_score)
    admission = AdmissionConfig.from_settings(settings)
    budget = TenantBudget(session, event.tenant_id, admission.max_new_per_minute)
    totals = admit_event(
        session,
        [(view, extract(view, history, extraction)) for view in views],
        tenant_id=event.tenant_id,
        embedder=embedder,
        polisher=polisher,
        config=admission,
        budget=budget,
    )
    settled = feedback.apply_trajectory_outcomes(session, event.tenant_id, rows, steps)
    result: dict[str, Any] = {
        "trajectories": len(rows),
        "steps_embedded": situation_stats.steps,
        "situations": asdict(situation_stats),
        "experiences": {k: v for k, v in asdict(totals).items() if k != "created_ids"},
        "retrievals_settled": settled,
    }
    events.mark_succeeded(event, result)
    return result


def _domain_of(row: Trajectory) -> str:
    return row.domain or ""


def _views(rows: Any, steps: Any, placed: dict[uuid.UUID, StepSituation]) -> list[TrajectoryView]:
    by_trajectory: dict[uuid.UUID, list[StepView]] = defaultdict(list)
    for step in steps:
        where = placed[step.id]
        by_trajectory[step.trajectory_id].append(
            StepView(
                id=step.id,
                idx=step.idx,
                situation_key=where.situation_key,
                cluster_id=where.cluster_id,
                action=step.action,
                error=step.error,
                reward=step.reward,
                explored=explored(step.retrieval_id, step.used_item_ids),
            )
        )
    return [
        TrajectoryView(
            id=row.id,
            task=row.task,
            domain=_domain_of(row),
            agent_id=row.agent_id,
            success=row.success,
            score=row.score,
            steps=tuple(by_trajectory[row.id]),
        )
        for row in rows
    ]


def _history(session: Session, tenant_id: uuid.UUID, views: list[TrajectoryView]) -> ClusterHistory:
    """What successful runs (stored ones and this event's) did in the clusters these steps are in."""
    clusters = {s.cluster_id for v in views for s in v.steps if s.cluster_id is not None}
    done: dict[uuid.UUID, set[str]] = defaultdict(set)
    for cluster_id, action, task in distillation.success_actions(session, tenant_id, clusters):
        done[cluster_id].add(template_action(action, task).template)
    return ClusterHistory({k: frozenset(v) for k, v in done.items()})


def fail_event(session: Session, event_id: uuid.UUID, reason: str) -> None:
    """Mark an event FAILED with a reason (after its retries ran out)."""
    event = events.lock(session, event_id)
    if event is not None and event.status != EventStatus.SUCCEEDED:
        events.mark_failed(event, reason)


def stale_events(session: Session, older_than: timedelta) -> list[tuple[uuid.UUID, str]]:
    """Events whose job was lost (Redis down at send time, or a worker killed mid-task), with their kind."""
    return [(e.id, e.kind) for e in events.stale(session, older_than)]
