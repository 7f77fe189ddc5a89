"""Operations: /metrics (request histograms, durable state, dependencies down), request ids, JSON logs."""

from __future__ import annotations

import json
import logging
import socket
import sys
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from app.api.deps import CurrentKey
from app.api.routes.retrieve import get_log_sessions
from app.config import Settings
from app.evolver.celery_app import get_celery
from app.evolver.dispatch import send_after_commit
from app.evolver.names import Queue, TaskName
from app.evolver.skill_llm import TokenBudget
from app.main import create_app
from app.observability import context, jobs
from app.observability.http import get_metric_sources
from app.observability.logs import JsonFormatter, logging_config
from app.observability.state import Sources
from app.storage.models import Event, EventStatus, Scope, Tenant
from tests.factories import auth, make_key, make_skill, make_tenant

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
KIND = "test.observability"  # an event kind no other code writes, so counts are exact


def scrape(client: TestClient, **headers: str) -> Samples:
    """GET /metrics, parsed: (sample name, labels) -> value."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample `name` with exactly these labels, if exposed."""
    return samples.get((name, frozenset(labels.items())))


def names(samples: Samples) -> set[str]:
    """Every sample name exposed."""
    return {name for name, _ in samples}


def closed_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    """A client on the test Redis."""
    client = redis.Redis.from_url(settings.require_redis_url())
    yield client
    client.close()


@pytest.fixture
def api(client: TestClient, db: Session) -> TestClient:
    """The app, its scrapes reading the test's transaction (uncached) and retrieval logs landing in it."""
    app: FastAPI = client.app  # type: ignore[assignment]

    def sources() -> Sources:
        return Sources(connect=lambda: nullcontext(db.connection()), redis=app.state.redis)

    @contextmanager
    def log_session() -> Iterator[Session]:
        yield db
        db.flush()

    def log_sessions() -> AbstractContextManager[Session]:
        return log_session()

    app.dependency_overrides[get_metric_sources] = sources
    app.dependency_overrides[get_log_sessions] = lambda: log_sessions
    app.state.metrics.state.ttl_s = 0.0
    return client


@contextmanager
def served(settings: Settings, **changes: Any) -> Iterator[TestClient]:
    """The real app on changed settings, with its own lifespan (engine, Redis client)."""
    with TestClient(create_app(settings.model_copy(update=changes))) as client:
        yield client


class TestMetricsEndpoint:
    def test_request_histograms_are_by_route_template(self, api: TestClient, db: Session) -> None:
        """Buckets per route template and status class; no raw id in any label."""
        key = make_key(db, make_tenant(db))
        missing = [str(uuid.uuid4()) for _ in range(2)]
        for trajectory_id in missing:
            assert api.get(f"/v1/trajectories/{trajectory_id}", headers=auth(key)).status_code == 404
        assert api.get("/v1/ping", headers=auth(key)).status_code == 200
        assert api.get(f"/no/such/{missing[0]}").status_code == 404
        samples = scrape(api)

        bucket = "skillfoundry_http_request_duration_seconds_bucket"
        template = {"method": "GET", "route": "/v1/trajectories/{trajectory_id}", "status": "4xx"}
        assert value(samples, bucket, **template, le="+Inf") == 2
        assert value(samples, "skillfoundry_http_request_duration_seconds_count", **template) == 2
        ping = {"method": "GET", "route": "/v1/ping", "status": "2xx"}
        assert value(samples, "skillfoundry_http_request_duration_seconds_count", **ping) == 1
        unmatched = {"method": "GET", "route": "<unmatched>", "status": "4xx"}
        assert value(samples, "skillfoundry_http_request_duration_seconds_count", **unmatched) == 1
        labels = {v for _, pairs in samples for _, v in pairs}
        assert not any(trajectory_id in label for trajectory_id in missing for label in labels)

    def test_exposes_durable_state_and_dependencies(self, api: TestClient) -> None:
        """Queues, events, scans, tokens and an up gauge per dependency are all there."""
        samples = scrape(api)
        assert value(samples, "skillfoundry_dependency_up", dependency="database") == 1
        assert value(samples, "skillfoundry_dependency_up", dependency="redis") == 1
        for queue in Queue:
            assert value(samples, "skillfoundry_queue_depth", queue=queue.value) is not None
        assert {
            "skillfoundry_queue_unacked",
            "skillfoundry_event_oldest_pending_age_seconds",
            "skillfoundry_llm_token_budget_per_day",
            "skillfoundry_metrics_state_read_seconds",
            "process_cpu_seconds_total",
        } <= names(samples)

    def test_retrieve_latency_has_its_own_histogram_and_stages(self, api: TestClient, db: Session) -> None:
        """One retrieve: counted in total and per stage, and Server-Timing names the stages."""
        key = make_key(db, make_tenant(db), Scope.AGENT)
        body = {"task": "boil water", "observation": "You are in the kitchen. The stove is off."}
        response = api.post("/v1/retrieve", json=body, headers=auth(key))
        assert response.status_code == 200, response.text
        timing = response.headers["Server-Timing"]
        assert timing.startswith("retrieve;dur=")
        assert "embed;dur=" in timing and "search;dur=" in timing and "rank;dur=" in timing
        samples = scrape(api)
        assert value(samples, "skillfoundry_retrieve_duration_seconds_count") == 1
        for stage in ("embed", "search", "rank"):
            assert value(samples, "skillfoundry_retrieve_stage_duration_seconds_count", stage=stage) == 1
        route = {"method": "POST", "route": "/v1/retrieve", "status": "2xx"}
        assert value(samples, "skillfoundry_http_request_duration_seconds_count", **route) == 1

    def test_a_token_guards_it_when_set(self, settings: Settings) -> None:
        """With SKILLFOUNDRY_METRICS_TOKEN, /metrics needs that bearer token."""
        with served(settings, metrics_token=SecretStr("s3cret-token")) as client:
            refused = client.get("/metrics")
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "unauthorized"
            assert client.get("/metrics", headers=auth("wrong")).status_code == 401
            assert "skillfoundry_dependency_up" in names(scrape(client, **auth("s3cret-token")))

    def test_it_can_be_turned_off(self, settings: Settings) -> None:
        """SKILLFOUNDRY_METRICS_ENABLED=false: no /metrics; requests still carry an id."""
        with served(settings, metrics_enabled=False) as client:
            response = client.get("/metrics")
            assert response.status_code == 404
            assert response.headers[context.REQUEST_ID_HEADER]

    def test_scrape_works_with_redis_unreachable(self, settings: Settings) -> None:
        """Redis down: 200, redis up 0, database metrics still there, no queue depth made up."""
        with served(settings, redis_url=f"redis://127.0.0.1:{closed_port()}/0") as client:
            samples = scrape(client)
        assert value(samples, "skillfoundry_dependency_up", dependency="redis") == 0
        assert value(samples, "skillfoundry_dependency_up", dependency="database") == 1
        assert "skillfoundry_event_oldest_pending_age_seconds" in names(samples)
        assert "skillfoundry_queue_depth" not in names(samples)

    def test_scrape_works_with_the_database_unreachable(self, settings: Settings) -> None:
        """PostgreSQL down: 200, database up 0, queue depth still read from Redis."""
        url = f"postgresql://nobody@127.0.0.1:{closed_port()}/nothing"
        with served(settings, database_url=url) as client:
            samples = scrape(client)
        assert value(samples, "skillfoundry_dependency_up", dependency="database") == 0
        assert value(samples, "skillfoundry_dependency_up", dependency="redis") == 1
        assert value(samples, "skillfoundry_queue_depth", queue=Queue.INGEST.value) is not None
        assert "skillfoundry_events_open" not in names(samples)

    def test_state_is_read_at_most_once_per_ttl(self, client: TestClient, db: Session) -> None:
        """Two scrapes within the cache's TTL read durable state once."""
        reads = 0
        app: FastAPI = client.app  # type: ignore[assignment]

        @contextmanager
        def counting() -> Iterator[Connection]:
            nonlocal reads
            reads += 1
            yield db.connection()

        app.dependency_overrides[get_metric_sources] = lambda: Sources(connect=counting, redis=None)
        app.state.metrics.state.clock = lambda: 1000.0  # no time passes between the scrapes
        scrape(client)
        scrape(client)
        assert reads == 1


class TestDurableState:
    def test_queue_depth_reflects_jobs_in_redis(
        self, api: TestClient, db: Session, redis_client: redis.Redis
    ) -> None:
        """Three jobs sent by the real dispatch code: the ingest queue's depth grows by three."""
        before = value(scrape(api), "skillfoundry_queue_depth", queue=Queue.INGEST.value)
        assert before is not None
        ids = [uuid.uuid4() for _ in range(3)]
        try:
            for event_id in ids:
                send_after_commit(db, TaskName.PROCESS_INGEST, event_id)
            db.commit()
            samples = scrape(api)
            assert value(samples, "skillfoundry_queue_depth", queue=Queue.INGEST.value) == before + 3
        finally:
            for event_id in ids:
                take_message(redis_client, Queue.INGEST.value, event_id)

    def test_event_numbers_reflect_event_rows(self, api: TestClient, db: Session) -> None:
        """Finished in total and in the last hour, by kind and status; the oldest PENDING one's age."""
        tenant = make_tenant(db)
        now = datetime.now(UTC)
        add_event(db, tenant, EventStatus.SUCCEEDED, finished_at=now)
        add_event(db, tenant, EventStatus.SUCCEEDED, finished_at=now - timedelta(minutes=5))
        add_event(db, tenant, EventStatus.FAILED, finished_at=now - timedelta(hours=3))
        add_event(db, tenant, EventStatus.PENDING, created_at=now - timedelta(minutes=10))
        add_event(db, tenant, EventStatus.RUNNING)
        db.flush()
        samples = scrape(api)

        def finished(status: EventStatus, suffix: str) -> float | None:
            return value(samples, f"skillfoundry_events_finished{suffix}", kind=KIND, status=status.value)

        assert finished(EventStatus.SUCCEEDED, "_total") == 2
        assert finished(EventStatus.FAILED, "_total") == 1
        assert finished(EventStatus.SUCCEEDED, "_last_hour") == 2
        assert finished(EventStatus.FAILED, "_last_hour") == 0
        assert value(samples, "skillfoundry_events_open", kind=KIND, status="PENDING") == 1
        assert value(samples, "skillfoundry_events_open", kind=KIND, status="RUNNING") == 1
        age = value(samples, "skillfoundry_event_oldest_pending_age_seconds")
        assert age is not None and 9 * 60 < age < 60 * 60

    def test_scan_verdicts_count_stored_scans(self, api: TestClient, db: Session) -> None:
        """A version written through the gate is one more clean write scan."""
        labels = {"verdict": "clean", "risk_level": "none", "trigger": "write"}
        before = value(scrape(api), "skillfoundry_skill_scans_total", **labels) or 0
        make_skill(db, make_tenant(db))
        assert value(scrape(api), "skillfoundry_skill_scans_total", **labels) == before + 1

    def test_llm_tokens_per_tenant_come_from_the_budget_keys(
        self, api: TestClient, db: Session, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """What the skill distiller charged today shows under the tenant's name."""
        tenant = make_tenant(db)
        budget = TokenBudget(redis_client, settings.llm_skill_tokens_per_day)
        budget.charge(tenant.id, 1234)
        try:
            samples = scrape(api)
        finally:
            redis_client.delete(budget.key(tenant.id))
        assert value(samples, "skillfoundry_llm_tokens_today", tenant=tenant.name) == 1234


class TestRequestId:
    def test_a_valid_id_round_trips(self, client: TestClient) -> None:
        """The caller's id comes back."""
        response = client.get("/healthz", headers={"X-Request-ID": "agent-7:run.42_a"})
        assert response.headers["X-Request-ID"] == "agent-7:run.42_a"

    @pytest.mark.parametrize("sent", [None, "", "has spaces", "x" * 65, "<script>", "-leading-dash"])
    def test_a_missing_or_invalid_id_is_replaced(self, client: TestClient, sent: str | None) -> None:
        """No id, or one that is long or unsafe: a fresh one."""
        headers = {} if sent is None else {"X-Request-ID": sent}
        got = client.get("/healthz", headers=headers).headers["X-Request-ID"]
        assert got != sent and len(got) == 32 and int(got, 16) >= 0

    def test_log_lines_in_a_request_carry_its_id_and_tenant(self, client: TestClient, db: Session) -> None:
        """A line logged while answering has the request id and, once authenticated, the tenant."""
        tenant = make_tenant(db)
        key = make_key(db, tenant)
        app: FastAPI = client.app  # type: ignore[assignment]

        @app.get("/_probe")
        def probe(principal: CurrentKey) -> dict[str, str]:
            logging.getLogger("tests.probe").warning("answering for %s", principal.key_name)
            return {}

        lines = JsonLines()
        with lines.capture("tests.probe"):
            response = client.get("/_probe", headers={**auth(key), "X-Request-ID": "probe-1"})
        assert response.status_code == 200, response.text
        (line,) = lines.entries
        assert line["request_id"] == "probe-1"
        assert line["tenant"] == str(tenant.id)
        assert line["message"] == "answering for test"


class TestJsonLogs:
    def test_each_record_is_one_parsable_line(self) -> None:
        """Time, level, logger, message, request id and tenant; an exception with its traceback."""
        formatter = JsonFormatter()
        with context.bound("rid-1", tenant="t-1"):
            try:
                raise ValueError("boom")
            except ValueError:
                record = logging.LogRecord(
                    "app.x", logging.ERROR, __file__, 1, "two\nlines %s", ("ok",), None
                )
                record.exc_info = sys.exc_info()
                line = formatter.format(record)
        assert "\n" not in line
        entry = json.loads(line)
        assert entry["level"] == "ERROR" and entry["logger"] == "app.x"
        assert entry["message"] == "two\nlines ok"
        assert entry["request_id"] == "rid-1" and entry["tenant"] == "t-1"
        assert "ValueError: boom" in entry["exception"]
        assert datetime.fromisoformat(entry["time"]).tzinfo is not None

    def test_outside_a_request_the_id_is_null(self) -> None:
        """A line from no request still parses, with request_id null and no tenant."""
        entry = json.loads(
            JsonFormatter().format(logging.LogRecord("a", logging.INFO, "", 1, "hi", None, None))
        )
        assert entry["request_id"] is None and "tenant" not in entry

    def test_the_setting_selects_the_formatter(self) -> None:
        """json and text both name a formatter the handler uses; uvicorn's loggers propagate to it."""
        for log_format in ("json", "text"):
            config = logging_config(log_format)
            assert config["handlers"]["stderr"]["formatter"] == log_format
            assert config["loggers"]["uvicorn"]["propagate"] is True


class TestWorkerSide:
    def test_the_request_id_reaches_the_worker(
        self, db: Session, settings: Settings, redis_client: redis.Redis
    ) -> None:
        """dispatch sends the id as a header of the real message; the job's log lines carry it."""
        event_id = uuid.uuid4()
        with context.bound("trajectory-req-9", tenant="tenant-9"):
            send_after_commit(db, TaskName.PROCESS_INGEST, event_id)
        db.commit()  # the after-commit hook sends to the real Redis
        message = take_message(redis_client, Queue.INGEST.value, event_id)
        assert message is not None, "no message in the ingest queue"
        headers = message["headers"]
        assert headers[jobs.REQUEST_ID] == "trajectory-req-9"
        assert headers[jobs.TENANT] == "tenant-9"

        # Run it as the worker would, with the headers read back; the event does not exist, so the job
        # logs that it drops it, and that line must carry the id.
        import app.evolver.tasks  # noqa: F401 - registers the tasks on the app

        task = get_celery().tasks[headers["task"]]
        lines = JsonLines()
        with lines.capture("app.evolver.tasks"):
            result = task.apply(args=[str(event_id)], task_id=headers["id"], headers=headers)
        assert result.successful(), result.traceback
        matching = [entry for entry in lines.entries if str(event_id) in entry["message"]]
        assert len(matching) == 1, lines.entries
        (line,) = matching
        assert line["request_id"] == "trajectory-req-9"
        assert line["tenant"] == "tenant-9"
        assert line["task"] == TaskName.PROCESS_INGEST.value
        assert context.current() is None  # task_postrun cleared it for the next job

    def test_a_job_sent_outside_a_request_has_no_id(self) -> None:
        """No current request: no headers."""
        assert jobs.job_headers() == {}


# --- helpers -----------------------------------------------------------------------------------------


def add_event(
    db: Session,
    tenant: Tenant,
    status: EventStatus,
    *,
    created_at: datetime | None = None,
    finished_at: datetime | None = None,
) -> Event:
    """An event of the test kind."""
    event = Event(tenant_id=tenant.id, kind=KIND, status=status, finished_at=finished_at)
    if created_at is not None:
        event.created_at = created_at
    db.add(event)
    return event


def take_message(client: redis.Redis, queue: str, event_id: uuid.UUID) -> dict[str, Any] | None:
    """Remove the queued Celery message whose args name `event_id`, and return it decoded."""
    for raw in client.lrange(queue, 0, -1):
        message: dict[str, Any] = json.loads(raw)
        if str(event_id) in str(message.get("headers", {}).get("argsrepr", "")):
            client.lrem(queue, 1, raw)
            return message
    return None


class JsonLines:
    """Log records of one logger, formatted as JSON when they are emitted (in the emitter's context)."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    @contextmanager
    def capture(self, name: str) -> Iterator[None]:
        """Collect the JSON lines of logger `name` during the block."""
        formatter = JsonFormatter()
        entries = self.entries

        class Collect(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                entries.append(json.loads(formatter.format(record)))

        handler = Collect(level=logging.DEBUG)
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        try:
            yield
        finally:
            logger.removeHandler(handler)
