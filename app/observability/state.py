"""Metrics read from durable state at scrape time: right however many API and worker processes run.

One scrape: a few grouped queries in one short transaction (each capped by a statement timeout) and
one Redis pipeline, cached for `ttl_s` seconds. A dependency that is down sets its
`skillfoundry_dependency_up` to 0 and the scrape reports what the other one said.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis
from kombu.transport.redis import PRIORITY_STEPS, Channel
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Executable, Select, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from app.evolver.names import Queue
from app.evolver.skill_llm import TokenBudget
from app.storage.models import Event, EventStatus, RiskLevel, SkillScan, Tenant

log = logging.getLogger(__name__)

TTL_S = 5.0
STATEMENT_TIMEOUT_MS = 1000
RECENT = timedelta(hours=1)


@dataclass(frozen=True)
class Sources:
    """Where a scrape reads durable state; either may be down."""

    connect: Callable[[], AbstractContextManager[Connection]]
    redis: redis.Redis | None


def queue_keys(queue: str) -> list[str]:
    """The Redis lists kombu keeps a queue's messages in: one per priority step."""
    return [queue if step == 0 else f"{queue}{Channel.sep}{step}" for step in PRIORITY_STEPS]


def open_events() -> Select[str, EventStatus, int, int]:
    """PENDING and RUNNING events by kind, with the age of the oldest (the status index)."""
    age = func.extract("epoch", func.now() - func.min(Event.created_at))
    return (
        select(Event.kind, Event.status, func.count(), age)
        .where(Event.status.in_([EventStatus.PENDING, EventStatus.RUNNING]))
        .group_by(Event.kind, Event.status)
    )


def finished_events() -> Select[str, EventStatus, int, int]:
    """SUCCEEDED and FAILED events by kind: in all, and finished within the last hour."""
    recent = func.count().filter(Event.finished_at > func.now() - RECENT)
    return (
        select(Event.kind, Event.status, func.count(), recent)
        .where(Event.status.in_([EventStatus.SUCCEEDED, EventStatus.FAILED]))
        .group_by(Event.kind, Event.status)
    )


def scans() -> Select[bool, RiskLevel, str, int]:
    """Stored scans by verdict, risk level and what triggered them."""
    return select(SkillScan.malicious, SkillScan.risk_level, SkillScan.trigger, func.count()).group_by(
        SkillScan.malicious, SkillScan.risk_level, SkillScan.trigger
    )


@dataclass
class _Database:
    up: bool = False
    open: Sequence[Any] | None = None
    finished: Sequence[Any] | None = None
    scans: Sequence[Any] | None = None
    tenants: Sequence[Any] | None = None


class StateCollector(Collector):
    """Queue depth, event backlog and throughput, scan verdicts and LLM tokens, from PostgreSQL and Redis."""

    def __init__(
        self,
        *,
        tokens_per_day: int,
        ttl_s: float = TTL_S,
        statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tokens_per_day = tokens_per_day
        self.ttl_s = ttl_s
        self.statement_timeout_ms = statement_timeout_ms
        self.clock = clock
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._families: list[Metric] = []

    def describe(self) -> Iterable[Metric]:
        """Nothing: registering must not query anything."""
        return []

    def collect(self) -> Iterable[Metric]:
        """The families of the last `refresh`."""
        return list(self._families)

    def refresh(self, sources: Sources) -> None:
        """Read durable state again unless the last read is under `ttl_s` old; concurrent scrapes share it."""
        with self._lock:
            now = self.clock()
            if self._read_at is not None and now - self._read_at < self.ttl_s:
                return
            started = time.perf_counter()
            database = self._read_database(sources)
            redis_up, from_redis = self._read_redis(sources, database)
            families = [*self._database_families(database), *from_redis]
            up = GaugeMetricFamily(
                "skillfoundry_dependency_up",
                "Whether the last scrape reached it (1) or not (0).",
                labels=["dependency"],
            )
            up.add_metric(["database"], float(database.up))
            up.add_metric(["redis"], float(redis_up))
            took = GaugeMetricFamily(
                "skillfoundry_metrics_state_read_seconds",
                "How long reading durable state took in the last scrape.",
            )
            took.add_metric([], time.perf_counter() - started)
            self._families = [*families, up, took]
            self._read_at = self.clock()

    # --- PostgreSQL ----------------------------------------------------------------------------------

    def _read_database(self, sources: Sources) -> _Database:
        out = _Database()
        try:
            with sources.connect() as conn, conn.begin_nested():
                conn.execute(text(f"SET LOCAL statement_timeout = {int(self.statement_timeout_ms)}"))
                out.up = True
                out.open = self._query(conn, open_events(), "open events")
                out.finished = self._query(conn, finished_events(), "finished events")
                out.scans = self._query(conn, scans(), "scans")
                out.tenants = self._query(conn, select(Tenant.id, Tenant.name), "tenants")
        except SQLAlchemyError as exc:
            log.warning("metrics: the database did not answer: %s", type(exc).__name__)
            out.up = False
        return out

    @staticmethod
    def _query(conn: Connection, statement: Executable, what: str) -> Sequence[Any] | None:
        # Each in a savepoint, so that one timing out leaves the others to answer.
        try:
            with conn.begin_nested():
                return conn.execute(statement).all()
        except SQLAlchemyError as exc:
            if conn.invalidated or conn.closed:
                raise
            log.warning("metrics: reading %s failed: %s", what, type(exc).__name__)
            return None

    @staticmethod
    def _database_families(db: _Database) -> list[Metric]:
        families: list[Metric] = []
        if db.open is not None:
            events = GaugeMetricFamily(
                "skillfoundry_events_open",
                "Events waiting (PENDING) or in progress (RUNNING).",
                labels=["kind", "status"],
            )
            oldest = 0.0
            for kind, status, count, age in db.open:
                events.add_metric([kind, str(status)], float(count))
                if status == EventStatus.PENDING:
                    oldest = max(oldest, float(age))
            pending = GaugeMetricFamily(
                "skillfoundry_event_oldest_pending_age_seconds",
                "Age of the oldest PENDING event (0 when none waits).",
            )
            pending.add_metric([], oldest)
            families += [events, pending]
        if db.finished is not None:
            total = CounterMetricFamily(
                "skillfoundry_events_finished",
                "Events the evolver finished, by kind and status.",
                labels=["kind", "status"],
            )
            recent = GaugeMetricFamily(
                "skillfoundry_events_finished_last_hour",
                "Events finished within the last hour, by kind and status.",
                labels=["kind", "status"],
            )
            for kind, status, count, last_hour in db.finished:
                total.add_metric([kind, str(status)], float(count))
                recent.add_metric([kind, str(status)], float(last_hour))
            families += [total, recent]
        if db.scans is not None:
            verdicts = CounterMetricFamily(
                "skillfoundry_skill_scans",
                "Stored scans of skill versions by verdict, risk level and trigger (write, rescan, waiver).",
                labels=["verdict", "risk_level", "trigger"],
            )
            for malicious, risk_level, trigger, count in db.scans:
                verdict = "malicious" if malicious else "clean"
                verdicts.add_metric(
                    [verdict, str(getattr(risk_level, "value", risk_level)), trigger], float(count)
                )
            families.append(verdicts)
        return families

    # --- Redis -----------------------------------------------------------------------------------------

    def _read_redis(self, sources: Sources, db: _Database) -> tuple[bool, list[Metric]]:
        client = sources.redis
        if client is None:
            return False, []
        tenants: list[tuple[uuid.UUID, str]] = [(row[0], row[1]) for row in db.tenants or ()]
        budget = TokenBudget(client, self.tokens_per_day)
        queues = [queue.value for queue in Queue]
        try:
            pipe = client.pipeline(transaction=False)
            for queue in queues:
                for key in queue_keys(queue):
                    pipe.llen(key)
            pipe.hlen(Channel.unacked_key)
            if tenants:
                pipe.mget([budget.key(tenant_id) for tenant_id, _ in tenants])
            replies = pipe.execute()
        except redis.RedisError as exc:
            log.warning("metrics: Redis did not answer: %s", type(exc).__name__)
            return False, []
        steps = len(PRIORITY_STEPS)
        depth = GaugeMetricFamily(
            "skillfoundry_queue_depth", "Jobs waiting in a Celery queue.", labels=["queue"]
        )
        for index, queue in enumerate(queues):
            depth.add_metric([queue], float(sum(replies[index * steps : (index + 1) * steps])))
        unacked = GaugeMetricFamily(
            "skillfoundry_queue_unacked",
            "Jobs handed to a worker and not yet acknowledged (running or prefetched).",
        )
        unacked.add_metric([], float(replies[len(queues) * steps]))
        families: list[Metric] = [depth, unacked]
        limit = GaugeMetricFamily(
            "skillfoundry_llm_token_budget_per_day", "LLM tokens each tenant may spend per UTC day on skills."
        )
        limit.add_metric([], float(self.tokens_per_day))
        families.append(limit)
        if tenants:
            spent = GaugeMetricFamily(
                "skillfoundry_llm_tokens_today",
                "LLM tokens a tenant spent today (UTC) on skills.",
                labels=["tenant"],
            )
            for (_, name), raw in zip(tenants, replies[-1], strict=True):
                spent.add_metric([name], float(int(raw)) if raw is not None else 0.0)
            families.append(spent)
        return True, families
