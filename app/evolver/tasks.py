"""Thin Celery tasks: they take ids, open one unit of work and call the pipeline."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from functools import lru_cache

import redis
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.config import get_settings
from app.embedding import get_embedder
from app.evolver import consolidate, pipeline, skill_cycle
from app.evolver.llm import Polisher, get_polisher
from app.evolver.names import Queue, TaskName
from app.evolver.skill_llm import SkillDistiller, get_skill_distiller
from app.governance import gate
from app.ingestion import erasure
from app.storage.models import utcnow
from app.storage.repositories import skills as skill_repo
from app.storage.session import session_scope

log = logging.getLogger(__name__)


@lru_cache
def _polisher() -> Polisher | None:
    # One LLM client per worker process, like the embedder.
    return get_polisher(get_settings())


@lru_cache
def _skill_distiller() -> SkillDistiller:
    # One per worker process, like the polisher. A misconfigured LLM distiller raises a clear error here,
    # which fails the job (and is not cached, so a fixed environment takes effect on the next one).
    settings = get_settings()
    client = None
    if settings.skill_distiller == "llm":
        # redis-py reads `unix://` socket URLs itself; only kombu needs `broker_url`'s spelling.
        client = redis.Redis.from_url(
            settings.require_redis_url(), socket_timeout=5, socket_connect_timeout=5
        )
    return get_skill_distiller(settings, client)


@shared_task(
    name=TaskName.PROCESS_INGEST,
    bind=True,
    acks_late=True,
    soft_time_limit=600,
    time_limit=660,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
def process_ingest_event(self: object, event_id: str) -> None:  # noqa: ARG001
    """Distill one ingest event: situations, clusters and experiences (idempotent)."""
    _run_event(
        "ingest",
        event_id,
        lambda session, eid: pipeline.process_ingest(
            session, eid, embedder=get_embedder(), settings=get_settings(), polisher=_polisher()
        ),
    )


def _run_event(kind: str, event_id: str, run: Callable[[Session, uuid.UUID], object]) -> None:
    """Run an event's job in one unit of work; a missing event is dropped, a bug marks it FAILED."""
    try:
        with session_scope() as session:
            run(session, uuid.UUID(event_id))
    except pipeline.EventMissing:
        log.warning("%s event %s does not exist; dropping the job", kind, event_id)
    except (OperationalError, SoftTimeLimitExceeded):
        raise  # transient: Celery retries with backoff
    except Exception as exc:
        # A bug or bad data, not a transient fault: record why, so the client sees FAILED.
        log.exception("%s event %s failed", kind, event_id)
        with session_scope() as session:
            pipeline.fail_event(session, uuid.UUID(event_id), f"{type(exc).__name__}: {exc}")


@shared_task(name=TaskName.SWEEP_STALE_EVENTS, acks_late=True, soft_time_limit=60, expires=120)
def sweep_stale_events() -> int:
    """Send again the jobs of events that never finished; returns how many."""
    with session_scope() as session:
        stale = pipeline.stale_events(session, timedelta(seconds=get_settings().sweep_stale_after_s))
    for event_id, kind in stale:
        if kind == skill_cycle.EVOLVE_EVENT:
            evolve_skills_event.apply_async(args=(str(event_id),), queue=Queue.SKILLS)
        else:
            process_ingest_event.apply_async(args=(str(event_id),), queue=Queue.INGEST)
    if stale:
        log.info("re-sent %d stale ingest jobs", len(stale))
    return len(stale)


@shared_task(name=TaskName.CONSOLIDATE, acks_late=True, soft_time_limit=300, expires=600)
def consolidate_experiences() -> dict[str, int]:
    """Consolidate every tenant's experiences, one transaction per tenant."""
    with session_scope() as session:
        tenant_ids = consolidate.tenants_with_experiences(session)
    totals = {"tenants": len(tenant_ids)}
    for tenant_id in tenant_ids:
        with session_scope() as session:
            stats = consolidate.consolidate(session, tenant_id, get_settings(), embedder=get_embedder())
        for name, value in asdict(stats).items():
            totals[name] = totals.get(name, 0) + value
    return totals


@shared_task(
    name=TaskName.EVOLVE_SKILLS,
    acks_late=True,
    soft_time_limit=900,
    time_limit=960,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
def evolve_skills_event(event_id: str) -> None:
    """Run the skill evolution cycle an admin asked for (idempotent per event)."""
    _run_event(
        "skills",
        event_id,
        lambda session, eid: skill_cycle.run_event(
            session, eid, embedder=get_embedder(), settings=get_settings(), distiller=_skill_distiller()
        ),
    )


@shared_task(name=TaskName.EVOLVE_ALL_SKILLS, acks_late=True, soft_time_limit=900, expires=300)
def evolve_all_skills() -> dict[str, int]:
    """The periodic cycle: every tenant with unseen trajectories, one transaction per tenant."""
    with session_scope() as session:
        tenant_ids = skill_repo.tenants_with_pending(session)
    totals = {"tenants": len(tenant_ids), "created": 0, "improved": 0, "retired": 0}
    for tenant_id in tenant_ids:
        with session_scope() as session:
            stats = skill_cycle.evolve(
                session,
                tenant_id,
                embedder=get_embedder(),
                settings=get_settings(),
                distiller=_skill_distiller(),
            )
        totals["created"] += stats.created
        totals["improved"] += stats.improved + stats.rewritten + stats.description_optimised
        totals["retired"] += stats.retired
    return totals


@shared_task(name=TaskName.RESCAN_SKILLS, acks_late=True, soft_time_limit=600, expires=300)
def rescan_skills() -> dict[str, int]:
    """Scan every version last scanned by another rule set, a batch per transaction."""
    totals = {"scanned": 0, "quarantined": 0, "changed": 0}
    while True:
        with session_scope() as session:
            stats = gate.rescan_stale(session)
        for name, value in asdict(stats).items():
            totals[name] += value
        if stats.scanned < gate.RESCAN_BATCH:
            return totals


@shared_task(name=TaskName.EXPIRE_TRAJECTORIES, acks_late=True, soft_time_limit=900, expires=3600)
def expire_trajectories() -> dict[str, int]:
    """Remove raw trajectories past the retention period, a batch per transaction; skills keep counts."""
    days = get_settings().retention_days
    totals = erasure.Erased()
    if days <= 0:
        return asdict(totals)
    cutoff = utcnow() - timedelta(days=days)
    with session_scope() as session:
        tenant_ids = erasure.tenants_with_trajectories_before(session, cutoff)
    for tenant_id in tenant_ids:
        while True:
            with session_scope() as session:
                done = erasure.expire(session, tenant_id, cutoff)
            totals.add(done)
            if done.trajectories < erasure.BATCH:
                break
    if totals.trajectories:
        log.info("retention removed %d trajectories older than %d days", totals.trajectories, days)
    return asdict(totals)
