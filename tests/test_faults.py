"""Faults, with real processes and real servers: what a user sees when a part dies or misbehaves.

Each test starts its own Redis (and, where it stops PostgreSQL, its own PostgreSQL), API and worker
processes with short recovery settings, breaks one part the way it breaks in production (SIGKILL,
stop, garbage), and checks what an operator or agent would: answers, stored rows, events, logs.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pytest
import redis
from alembic.script import ScriptDirectory
from psycopg import sql

from app.embedded import EmbeddedPostgres, EmbeddedRedis
from app.storage import migrate
from app.storage.models import Scope
from app.storage.session import make_engine, make_sessionmaker, session_scope
from tests import openai_server
from tests.conftest import create_database, drop_database
from tests.factories import auth, make_key, make_step, make_tenant, make_trajectory
from tests.test_e2e import free_port

pytestmark = pytest.mark.e2e

# Recovery settings short enough for a test; the defaults are 1200 s, 60 s and 120 s.
FAST_RECOVERY = {
    "SKILLFOUNDRY_BROKER_VISIBILITY_TIMEOUT_S": "8",
    "SKILLFOUNDRY_SWEEP_EVERY_S": "2",
    "SKILLFOUNDRY_SWEEP_STALE_AFTER_S": "3",
}


# --- processes ------------------------------------------------------------------------------------


class Child:
    """A process in its own process group (killed together with its children), logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self.proc = subprocess.Popen(
            argv, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill_group(self) -> None:
        """SIGKILL to the whole process group: no handler runs, nothing is flushed or acknowledged."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM (a clean stop), then SIGKILL to the group after `grace_s`."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        # Whatever of the group is left (a pool process) goes too.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)


def child_env(database_url: str, redis_url: str, home: Path, **extra: str) -> dict[str, str]:
    """The environment of a worker or API process of these tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKILLFOUNDRY_")}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        SKILLFOUNDRY_HOME=str(home),
        # The API only ingests and reads here: no model needed at start.
        SKILLFOUNDRY_API_WARM_EMBEDDER="false",
        **FAST_RECOVERY,
    )
    env.update(extra)
    return env


def wait_until(check: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.2) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


class Stack:
    """The API and worker processes of one test, stopped (and their logs shown on failure) afterwards."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = env
        self.children: list[Child] = []
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"

    def api(self) -> Child:
        argv = [sys.executable, "-m", "app.cli", "api", "--port", str(self.port)]
        child = self._start("api", argv)
        wait_until(lambda: self._healthy(child), 90, "the API to answer /healthz")
        return child

    def worker(self, *, beat: bool = False, name: str = "worker") -> Child:
        argv = [sys.executable, "-m", "app.cli", "worker"] + (["--beat"] if beat else [])
        child = self._start(name, argv)
        wait_until(lambda: " ready." in child.text() or not child.alive(), 90, f"{name} to be ready")
        assert child.alive(), child.text()[-3000:]
        return child

    def _start(self, name: str, argv: list[str]) -> Child:
        child = Child(name, argv, self.env, self.tmp / f"{name}-{len(self.children)}.log")
        self.children.append(child)
        return child

    def _healthy(self, child: Child) -> bool:
        assert child.alive(), child.text()[-3000:]
        try:
            return httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        for child in self.children:
            if child.alive():
                child.proc.send_signal(signal.SIGTERM)  # all at once: they stop in parallel
        for child in self.children:
            child.stop()
        for child in self.children:
            print(f"----- {child.name} ({child.log.name}) -----\n{child.text()[-4000:]}")


@pytest.fixture
def stack_factory(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Stack]]:
    stacks: list[Stack] = []

    def make(env: dict[str, str]) -> Stack:
        stacks.append(Stack(tmp_path, env))
        return stacks[-1]

    yield make
    for stack in stacks:
        stack.close()


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A directory with a short path: unix socket paths (Redis, PostgreSQL) are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="sff-"))
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.fixture
def own_redis(short_tmp: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test alone, so it can be stopped, and no other test's jobs reach its workers."""
    server = EmbeddedRedis(short_tmp / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def faults_db(server_url: str, worker_id_suffix: str) -> Iterator[str]:
    """A migrated database whose commits are real (other processes read them); each test has its tenants."""
    name = f"sf_faults_{worker_id_suffix}"
    url = create_database(server_url, name)
    migrate.upgrade(url)
    yield url
    drop_database(server_url, name)


def new_keys(database_url: str) -> tuple[str, str, uuid.UUID]:
    """A fresh tenant's agent and admin keys, and its id."""
    engine = make_engine(database_url, pool_size=1)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            tenant = make_tenant(session)
            agent = make_key(session, tenant, Scope.AGENT, name="agent")
            admin = make_key(session, tenant, Scope.ADMIN, name="admin")
            return agent, admin, tenant.id
    finally:
        engine.dispose()


def redis_url_of(server: EmbeddedRedis) -> str:
    return f"unix://{server.socket_path}"


def event_of(http: httpx.Client, key: str, event_id: str) -> dict[str, Any]:
    body: dict[str, Any] = http.get(f"/v1/events/{event_id}", headers=auth(key)).json()
    return body


def wait_finished(http: httpx.Client, key: str, event_id: str, timeout_s: float = 90) -> dict[str, Any]:
    """The event once SUCCEEDED or FAILED."""

    def done() -> dict[str, Any] | None:
        body = event_of(http, key, event_id)
        return body if body["status"] in ("SUCCEEDED", "FAILED") else None

    result: dict[str, Any] = wait_until(done, timeout_s, f"event {event_id} to finish", interval_s=0.3)
    return result


def pg(url: str) -> psycopg.Connection[tuple[Any, ...]]:
    from app.backup import libpq_url

    return psycopg.connect(libpq_url(url), autocommit=True)


# --- (a) a worker killed in the middle of a distillation --------------------------------------------

_ROOMS = ["kitchen", "hallway", "garden", "workshop", "cellar", "attic", "library", "pantry"]
_THINGS = [
    "kettle",
    "skillet",
    "ladle",
    "thermos",
    "colander",
    "teapot",
    "saucepan",
    "whisk",
    "funnel",
    "jug",
]
_PLACES = ["counter", "shelf", "table", "windowsill", "cupboard"]


def slow_batch(n: int = 40, steps: int = 8) -> list[dict[str, Any]]:
    """Trajectories whose observations are all different situations (each is embedded and clustered)."""
    combos = itertools.product(_ROOMS, _THINGS, _PLACES)
    runs = []
    for i in range(n):
        seen = [next(combos) for _ in range(steps)]
        run = make_trajectory(
            0,
            task=f"Boil water with the {seen[0][1]}",
            agent_id=f"agent-{i % 3}",
            session_id=f"session-{i}",
            outcome={"success": i % 4 != 0, "score": 0.0 if i % 4 == 0 else 1.0},
        )
        run["steps"] = [
            {
                "observation": f"You are in the {room}. A {thing} is on the {place}. The stove is cold.",
                "action": f"take {thing} from {place}",
                **({"error": "Nothing happens."} if (i + j) % 7 == 0 else {}),
            }
            for j, (room, thing, place) in enumerate(seen)
        ]
        runs.append(run)
    return runs


def distilled(database_url: str, tenant_id: uuid.UUID) -> dict[str, Any]:
    """What distillation left for a tenant: experiences with their evidence, and counts."""
    with pg(database_url) as conn:
        experiences = conn.execute(
            "SELECT e.polarity, e.text, e.action_template, e.successes, e.failures, e.distinct_agents, "
            "(SELECT count(*) FROM experience_evidence v WHERE v.experience_id = e.id) "
            "FROM experience e WHERE e.tenant_id = %s ORDER BY 1, 2, 3",
            (tenant_id,),
        ).fetchall()
        counts = {
            table: conn.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = %s").format(sql.Identifier(table)),
                (tenant_id,),
            ).fetchone()
            for table in ("trajectory", "event", "experience_evidence", "state_cluster")
        }
        placed = conn.execute(
            "SELECT count(*) FROM trajectory_step s JOIN trajectory t ON t.id = s.trajectory_id "
            "WHERE t.tenant_id = %s AND s.cluster_id IS NOT NULL",
            (tenant_id,),
        ).fetchone()
    return {"experiences": experiences, "counts": counts, "steps_placed": placed}


def locked_by_a_worker(database_url: str, event_id: str) -> bool:
    """Whether a worker holds the event's row lock, i.e. is in the middle of its job right now."""
    with pg(database_url) as conn:
        try:
            with conn.transaction():
                conn.execute("SELECT 1 FROM event WHERE id = %s FOR UPDATE NOWAIT", (event_id,))
        except psycopg.errors.LockNotAvailable:
            return True
    return False


def copy_tenant(source: str, target: str, tenant_id: uuid.UUID) -> None:
    """Copy a tenant and its ingested rows (ids and all) to another migrated database."""
    with pg(source) as src, pg(target) as dst:
        for table, column in (("tenant", "id"), ("event", "tenant_id"), ("trajectory", "tenant_id"),
                              ("trajectory_step", "tenant_id")):  # fmt: skip
            out = sql.SQL("COPY (SELECT * FROM {} WHERE {} = {}) TO STDOUT (FORMAT BINARY)").format(
                sql.Identifier(table), sql.Identifier(column), sql.Literal(str(tenant_id))
            )
            into = sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(sql.Identifier(table))
            with src.cursor().copy(out) as reader, dst.cursor().copy(into) as writer:
                for chunk in reader:
                    writer.write(chunk)


def distill_in_process(database_url: str, event_id: str) -> tuple[dict[str, Any], float]:
    """An uninterrupted run of an ingest event, in this process with default settings; its result and time."""
    from app.config import Settings
    from app.embedding import get_embedder
    from app.evolver import pipeline

    embedder = get_embedder()
    embedder.warm()
    engine = make_engine(database_url, pool_size=1)
    try:
        started = time.monotonic()
        with session_scope(make_sessionmaker(engine)) as session:
            result = pipeline.process_ingest(
                session, uuid.UUID(event_id), embedder=embedder, settings=Settings.model_construct()
            )
        return result, time.monotonic() - started
    finally:
        engine.dispose()


def evidence(database_url: str, tenant_id: uuid.UUID) -> list[tuple[Any, ...]]:
    """Every evidence row of a tenant: which lesson which step of which run supports."""
    with pg(database_url) as conn:
        return conn.execute(
            "SELECT e.polarity, e.text, v.trajectory_id, v.step_id, v.success FROM experience_evidence v "
            "JOIN experience e ON e.id = v.experience_id WHERE v.tenant_id = %s ORDER BY 1, 2, 3, 4",
            (tenant_id,),
        ).fetchall()


@pytest.fixture
def copy_db(server_url: str, worker_id_suffix: str) -> Iterator[str]:
    name = f"sf_faults_copy_{worker_id_suffix}"
    url = create_database(server_url, name)
    migrate.upgrade(url)
    yield url
    drop_database(server_url, name)


class TestWorkerKilled:
    def test_a_job_killed_mid_distillation_is_redone_once_and_loses_nothing(
        self,
        faults_db: str,
        copy_db: str,
        own_redis: EmbeddedRedis,
        short_tmp: Path,
        stack_factory: Callable[[dict[str, str]], Stack],
    ) -> None:
        """SIGKILL to the worker's process group while it distils: a new worker redoes the job (acks_late,
        visibility timeout), and the result equals an uninterrupted run of the same rows."""
        key, _, tenant = new_keys(faults_db)
        stack = stack_factory(child_env(faults_db, redis_url_of(own_redis), short_tmp))
        stack.api()
        with httpx.Client(base_url=stack.base, timeout=60) as http:
            accepted = http.post("/v1/trajectories", json=slow_batch(), headers=auth(key))
            assert accepted.status_code == 202, accepted.text
            event_id = accepted.json()["event_id"]

            # The reference: the same rows (same ids, so the same order), distilled without interruption.
            copy_tenant(faults_db, copy_db, tenant)
            reference, took = distill_in_process(copy_db, event_id)

            first = stack.worker(name="worker-1")
            wait_until(
                lambda: locked_by_a_worker(faults_db, event_id), 90, "the worker to start the job", 0.05
            )
            time.sleep(min(1.0, took / 3))  # into the job: past its start, well before its end
            assert locked_by_a_worker(faults_db, event_id), (
                f"the job ended before the kill (it takes {took:.1f}s): make slow_batch() larger"
            )
            first.kill_group()

            # Nothing of the killed attempt is left (it rolled back); the job waits unacknowledged.
            assert event_of(http, key, event_id)["status"] == "PENDING"
            assert distilled(faults_db, tenant)["experiences"] == []
            client = redis.Redis.from_url(redis_url_of(own_redis))
            # Held for redelivery: unacknowledged, or already back in its queue (visibility timeout).
            held = client.hlen("unacked") + client.llen("ingest")
            assert held == 1, f"the killed job is not held for redelivery ({held} copies)"

            stack.worker(name="worker-2")  # no --beat: only the visibility timeout can bring the job back
            event = wait_finished(http, key, event_id, timeout_s=180)
        assert event["status"] == "SUCCEEDED", event
        assert event["attempts"] == 1  # the killed attempt rolled back with everything else it wrote
        assert event["result"] == reference
        assert (reference["trajectories"], reference["steps_embedded"]) == (40, 320)
        got, want = distilled(faults_db, tenant), distilled(copy_db, tenant)
        assert got["experiences"], "the data taught nothing: the comparison would be empty"
        assert got == want
        assert evidence(faults_db, tenant) == evidence(copy_db, tenant)
        wait_until(lambda: client.hlen("unacked") == 0, 30, "the redone job to be acknowledged")


# --- (b) Redis stopped while trajectories are posted -----------------------------------------------


class TestRedisDown:
    def test_posts_are_stored_while_redis_is_down_and_distilled_once_it_is_back(
        self,
        faults_db: str,
        own_redis: EmbeddedRedis,
        short_tmp: Path,
        stack_factory: Callable[[dict[str, str]], Stack],
    ) -> None:
        key, _, _ = new_keys(faults_db)
        stack = stack_factory(child_env(faults_db, redis_url_of(own_redis), short_tmp))
        api = stack.api()
        worker = stack.worker(beat=True)  # beat sends the sweep
        own_redis.stop()
        with httpx.Client(base_url=stack.base, timeout=60) as http:
            posted = []
            for n in (2, 3):
                started = time.monotonic()
                answer = http.post("/v1/trajectories", json=[make_trajectory(n)] * n, headers=auth(key))
                assert answer.status_code == 202, answer.text
                assert time.monotonic() - started < 15, "ingest waited too long for the broker"
                posted.append(answer.json())
            for body in posted:
                stored = http.get(f"/v1/trajectories/{body['ids'][0]}", headers=auth(key))
                assert stored.status_code == 200 and stored.json()["steps"], stored.text
                assert event_of(http, key, body["event_id"])["status"] == "PENDING"
            ready = http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["broker"].startswith("error"), (
                ready.text
            )

            own_redis.start()
            for body in posted:
                event = wait_finished(http, key, body["event_id"], timeout_s=120)
                assert event["status"] == "SUCCEEDED", event
                assert event["result"]["trajectories"] == len(body["ids"])
        assert api.alive() and worker.alive()
        assert "the sweeper will retry it" in api.text()
        assert re.search(r"re-sent \d+ stale ingest jobs", worker.text()), "the sweeper did not send them"


# --- (c) PostgreSQL restarted ----------------------------------------------------------------------


class TestPostgresRestarted:
    def test_api_answers_503_while_down_and_recovers_without_a_restart(
        self,
        own_redis: EmbeddedRedis,
        short_tmp: Path,
        stack_factory: Callable[[dict[str, str]], Stack],
    ) -> None:
        server = EmbeddedPostgres(short_tmp / "pgdata")
        url = server.start()
        try:
            migrate.upgrade(url)
            key, _, _ = new_keys(url)
            stack = stack_factory(child_env(url, redis_url_of(own_redis), short_tmp))
            api = stack.api()
            with httpx.Client(base_url=stack.base, timeout=30) as http:
                before = http.post("/v1/trajectories", json=make_trajectory(2), headers=auth(key))
                assert before.status_code == 202, before.text
                trajectory = f"/v1/trajectories/{before.json()['ids'][0]}"
                assert http.get(trajectory, headers=auth(key)).status_code == 200

                server.stop()
                for answer in (
                    http.get(trajectory, headers=auth(key)),
                    http.post("/v1/trajectories", json=make_trajectory(1), headers=auth(key)),
                    http.get("/v1/trajectories", headers=auth(key)),
                ):
                    assert answer.status_code == 503, answer.text
                    assert answer.json()["error"]["code"] == "database_unavailable"
                ready = http.get("/readyz")
                assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("error")
                assert http.get("/healthz").status_code == 200

                server = EmbeddedPostgres(short_tmp / "pgdata")
                assert server.start() == url
                # The very first request after the restart is answered: the pool's pre-ping drops the
                # dead connections, and nothing had to be restarted.
                again = http.get(trajectory, headers=auth(key))
                assert again.status_code == 200, again.text
                assert again.json()["steps"] == http.get(trajectory, headers=auth(key)).json()["steps"]
                after = http.post("/v1/trajectories", json=make_trajectory(1), headers=auth(key))
                assert after.status_code == 202, after.text
            assert api.alive()
            assert "database unavailable" in api.text()
        finally:
            server.stop()


# --- (d) the LLM endpoint down or answering garbage ------------------------------------------------


def garbage(_: dict[str, Any]) -> dict[str, Any]:
    """What a confused model says: prose where JSON was asked for."""
    return openai_server.completion("Sure! Here is the improved version you asked for: {text: maybe")


class TestLLMFails:
    def test_the_evolver_falls_back_to_heuristic_text_and_records_why(
        self,
        faults_db: str,
        own_redis: EmbeddedRedis,
        short_tmp: Path,
        stack_factory: Callable[[dict[str, str]], Stack],
    ) -> None:
        key, admin, tenant = new_keys(faults_db)
        fake = openai_server.FakeOpenAI()
        fake.responder = garbage
        fake.start()
        running = True
        try:
            env = child_env(
                faults_db,
                redis_url_of(own_redis),
                short_tmp,
                SKILLFOUNDRY_LLM_BASE_URL=fake.url,
                SKILLFOUNDRY_LLM_MAX_RETRIES="0",
                SKILLFOUNDRY_LLM_TIMEOUT_S="5",
                SKILLFOUNDRY_SKILL_DISTILLER="llm",
            )
            stack = stack_factory(env)
            stack.api()
            worker = stack.worker()
            with httpx.Client(base_url=stack.base, timeout=60) as http:
                # Garbage: the model answers 200 with prose instead of the JSON it was asked for.
                reasons = self._round(http, key, admin, "Boil water in the kitchen")
                assert fake.requests, "the worker never asked the model"
                assert reasons and all("edit was rejected (" in r for r in reasons), reasons
                assert not any("(connection)" in r for r in reasons), reasons

                # Down: nothing listens on the model's port any more.
                fake.stop()
                running = False
                reasons = self._round(http, key, admin, "Grow a plant in the greenhouse")
                assert reasons and all("rejected (connection)" in r for r in reasons), reasons
            assert worker.alive()
            log = worker.text()
            assert "LLM polish failed, keeping the heuristic text (invalid answer" in log
            assert "LLM polish failed, keeping the heuristic text (APIConnectionError" in log
            with pg(faults_db) as conn:
                sources = conn.execute(
                    "SELECT DISTINCT text_source, llm_model FROM experience WHERE tenant_id = %s", (tenant,)
                ).fetchall()
            assert sources == [("heuristic", None)]
        finally:
            if running:
                fake.stop()

    @staticmethod
    def _round(http: httpx.Client, key: str, admin: str, task: str) -> list[str]:
        """Post runs of a new task, distil them, run a skill cycle; the new skills' rejection reasons."""
        # Moves of this task's own, so that its lessons are new ones the model is asked to rewrite.
        verb = task.split()[0].lower()
        steps = [make_step(i, action=f"{verb} the thing on shelf {i}") for i in range(3)]
        runs = [
            make_trajectory(3, task=task, agent_id=f"agent-{i}", session_id=f"{task}-{i}", steps=steps)
            for i in range(3)
        ]
        accepted = http.post("/v1/trajectories", json=runs, headers=auth(key))
        assert accepted.status_code == 202, accepted.text
        event = wait_finished(http, key, accepted.json()["event_id"])
        assert event["status"] == "SUCCEEDED", event
        assert event["result"]["experiences"]["polished"] == 0
        assert event["result"]["experiences"]["created"] >= 1  # lessons the model was asked to rewrite
        before = {s["id"] for s in http.get("/v1/skills", headers=auth(admin)).json()["items"]}
        cycle = http.post("/v1/evolve", headers=auth(admin))
        assert cycle.status_code == 202, cycle.text
        event = wait_finished(http, admin, cycle.json()["event_id"])
        assert event["status"] == "SUCCEEDED", event
        skills = [
            s for s in http.get("/v1/skills", headers=auth(admin)).json()["items"] if s["id"] not in before
        ]
        assert skills, f"the cycle wrote no skill: {event}"
        reasons = []
        for skill in skills:
            history = http.get(f"/v1/skills/{skill['id']}/history", headers=auth(admin)).json()["items"]
            reasons += [h["reason"] for h in history if "rejected" in h["reason"]]
            # The draft was written instead: the skill exists with a version.
            assert http.get(f"/v1/skills/{skill['id']}/versions/1", headers=auth(admin)).status_code == 200
        return reasons


# --- (e) `skillfoundry up` killed hard ---------------------------------------------------------------


class Up:
    """`skillfoundry up` in its own process group, as a service manager runs it."""

    def __init__(self, home: Path, port: int, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env = {k: v for k, v in env.items() if not k.startswith("SKILLFOUNDRY_")}
        env.update(
            SKILLFOUNDRY_HOME=str(home),
            SKILLFOUNDRY_PORT=str(port),
            SKILLFOUNDRY_API_WARM_EMBEDDER="false",
            **FAST_RECOVERY,
        )
        self.child = Child("up", [sys.executable, "-m", "app.cli", "up"], env, log)

    def wait_up(self, timeout_s: float = 180) -> str:
        def up() -> str | None:
            text = self.child.text()
            return text if "Skillfoundry is up" in text or not self.child.alive() else None

        text: str = wait_until(up, timeout_s, "skillfoundry up to come up", 0.3)
        assert "Skillfoundry is up" in text, text[-3000:]
        return text


def processes_of(home: Path) -> list[psutil.Process]:
    """Every process whose command line names `home` (its PostgreSQL, its Redis)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(home) in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def postmaster_pid(home: Path) -> int:
    return int((home / "pgdata" / "postmaster.pid").read_text().splitlines()[0])


class Poster:
    """Posts small batches until told to stop, keeping what the service acknowledged (202)."""

    def __init__(self, base: str, key: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=10)
        self.key = key
        self.acknowledged: list[dict[str, Any]] = []
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.halt.is_set():
            n += 1
            try:
                answer = self.http.post(
                    "/v1/trajectories",
                    json=[make_trajectory(2, session_id=f"s-{n}-{i}") for i in range(3)],
                    headers=auth(self.key),
                )
            except httpx.HTTPError:
                continue  # killed mid-request: not acknowledged
            if answer.status_code == 202:
                self.acknowledged.append(answer.json())

    def __enter__(self) -> Poster:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.halt.set()
        self.thread.join(30)
        self.http.close()


class TestUpKilled:
    def test_hard_kill_and_restart_loses_nothing_acknowledged(self, tmp_path: Path) -> None:
        """SIGKILL to `up`'s process group while agents post (PostgreSQL, in its own session, survives);
        then SIGKILL to everything including PostgreSQL (a crash). Each restart on the same home finds
        every acknowledged trajectory, finishes every event, and has current migrations."""
        home = Path(tempfile.mkdtemp(prefix="sfk-"))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        head = ScriptDirectory.from_config(migrate.alembic_config("postgresql://unused/x")).get_current_head()
        ups: list[Up] = []
        try:
            ups.append(Up(home, port, tmp_path / "up-0.log"))
            match = re.search(r"sf_[A-Za-z0-9_-]{32,}", ups[0].wait_up())
            assert match
            key = match.group(0)
            acknowledged: list[dict[str, Any]] = []

            for round_, crash_postgres in enumerate((False, True), start=1):
                with Poster(base, key) as poster:
                    wait_until(lambda p=poster: len(p.acknowledged) >= 4, 60, "some posts to be acknowledged")
                    ups[-1].child.kill_group()
                acknowledged += poster.acknowledged
                survivor = postmaster_pid(home)
                assert psutil.pid_exists(survivor), "PostgreSQL died with the process group"
                if crash_postgres:
                    # As in a power cut: the server and all its processes die at once, nothing is flushed.
                    server = psutil.Process(survivor)
                    tree = [server, *server.children(recursive=True)]
                    for proc in tree:
                        proc.kill()
                    psutil.wait_procs(tree, timeout=30)

                ups.append(Up(home, port, tmp_path / f"up-{round_}.log"))
                output = ups[-1].wait_up()
                assert "First start" not in output and key not in output
                with httpx.Client(base_url=base, timeout=30) as http:
                    for body in acknowledged:
                        for trajectory_id in body["ids"]:
                            got = http.get(f"/v1/trajectories/{trajectory_id}", headers=auth(key))
                            assert got.status_code == 200, (round_, got.text)
                            assert len(got.json()["steps"]) == 2
                        event = wait_finished(http, key, body["event_id"], timeout_s=120)
                        assert event["status"] == "SUCCEEDED", (round_, event)
                url = f"postgresql://postgres@/skillfoundry?host={home / 'pgdata'}"
                with pg(url) as conn:
                    assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(head,)]
                    stored = conn.execute("SELECT count(*) FROM trajectory").fetchone()
                assert stored is not None and stored[0] >= 3 * len(acknowledged)

            # A clean stop after the hard kills still stops everything (no server is left holding the home).
            ups[-1].child.proc.send_signal(signal.SIGINT)
            assert ups[-1].child.proc.wait(60) == 0
            assert "Stopped." in ups[-1].child.text()
            wait_until(lambda: not processes_of(home), 30, "the home's servers to stop")
        finally:
            for up in ups:
                if up.child.alive():
                    up.child.kill_group()
            for proc in processes_of(home):
                proc.kill()
            for up in ups:
                print(f"----- {up.child.log.name} -----\n{up.child.text()[-4000:]}")
            subprocess.run(["rm", "-rf", str(home)], check=False)
