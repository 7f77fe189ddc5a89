"""Scale-out: two API processes and two Celery workers on one PostgreSQL and one Redis.

Every job is done exactly once and none is lost (the counts equal an in-process reference run of the
same data), and concurrent skill cycles of one tenant, and concurrent imports, rollbacks and review
decisions on one skill, all finish without deadlock, with consecutive version numbers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from app.config import get_settings
from app.embedded import EmbeddedRedis
from app.embedding import get_embedder
from app.evolver import pipeline, skill_cycle
from app.ingestion import service as ingestion
from app.skill_md import render
from app.storage import migrate
from app.storage.models import Scope
from app.storage.session import make_engine, make_sessionmaker, session_scope
from tests.conftest import create_database, drop_database
from tests.factories import auth, make_key, make_step, make_tenant, make_trajectory, skill_doc
from tests.test_e2e import free_port

pytestmark = pytest.mark.e2e

JOB_TIMEOUT_S = 150.0  # every wait below is bounded: a deadlock fails the test instead of hanging it
REQUEST_TIMEOUT_S = 90.0
POSTS = 12  # two trajectories each, one per domain
BOIL = "Your task is to boil water. First, focus on the substance. Then, make it change its state of matter."
FROG = "Your task is to find a(n) animal. First, focus on the thing. Then, move it to the red box."
ROOM = "This room is called the {room}. In it, you see: a door, a table and {thing}."


def _run(task: str, domain: str, actions: list[str], agent: str) -> dict[str, Any]:
    """A successful run; runs of one domain differ only in agent and session, so order cannot matter."""
    steps = [
        make_step(i, observation=ROOM.format(room=("hallway", "kitchen")[i // 3], thing=f"a {domain} thing"),
                  action=action, reward=1.0 if i == len(actions) - 1 else 0.0)
        for i, action in enumerate(actions)
    ]  # fmt: skip
    return make_trajectory(
        task=task, domain=domain, agent_id=agent, session_id=f"{agent}-{uuid.uuid4().hex[:8]}", steps=steps,
        outcome={"success": True, "score": 1.0},
    )  # fmt: skip


def batch(n: int) -> list[dict[str, Any]]:
    """The n-th POST: one run of each domain, by one of four agents."""
    agent = f"agent-{n % 4}"
    boil = ["open door to kitchen", "go to kitchen", "focus on water", "move pot to stove", "activate stove"]
    frog = ["open door to outside", "go to outside", "focus on frog", "pick up frog", "move frog to red box"]
    return [_run(BOIL, "chemistry", boil, agent), _run(FROG, "biology", frog, agent)]


@dataclass
class Cluster:
    """The running deployment: two API base URLs, the database, the processes and their logs."""

    apis: list[str]
    database_url: str
    engine: Engine
    procs: dict[str, subprocess.Popen[bytes]]
    logs: Path

    def tail(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
            for p in sorted(self.logs.glob("*.log"))
        )


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{url}: the API exited with {proc.returncode}"
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not come up")


@pytest.fixture
def cluster(server_url: str, worker_id_suffix: str) -> Iterator[Cluster]:
    """A fresh database, a private Redis (no other test's jobs), two APIs and two workers (one with beat)."""
    name = f"sf_scale_{worker_id_suffix}"
    url = create_database(server_url, name)
    migrate.upgrade(url)
    home = Path(tempfile.mkdtemp(prefix="sfscale-"))
    redis_server = EmbeddedRedis(home / "redis")
    env = dict(os.environ, DATABASE_URL=url, REDIS_URL=redis_server.start(), HF_HUB_OFFLINE="1",
               SKILLFOUNDRY_HOME=str(home), SKILLFOUNDRY_RATE_LIMIT_PER_MINUTE="0")  # fmt: skip
    ports = [free_port(), free_port()]
    commands = {
        "api-a": ["api", "--host", "127.0.0.1", "--port", str(ports[0])],
        "api-b": ["api", "--host", "127.0.0.1", "--port", str(ports[1])],
        "worker-a": ["worker", "--beat"],
        "worker-b": ["worker"],
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for proc_name, argv in commands.items():
        with (home / f"{proc_name}.log").open("wb") as log:
            procs[proc_name] = subprocess.Popen(
                [sys.executable, "-m", "app.cli", *argv], env=env, stdout=log, stderr=subprocess.STDOUT
            )
    engine = make_engine(url, pool_size=2)
    apis = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for api, proc_name in zip(apis, ("api-a", "api-b"), strict=True):
            _wait_healthy(api, procs[proc_name])
        deadline = time.monotonic() + 120
        for proc_name in ("worker-a", "worker-b"):  # both consuming before anything is sent
            while " ready." not in (home / f"{proc_name}.log").read_text(errors="replace"):
                assert procs[proc_name].poll() is None and time.monotonic() < deadline, (
                    f"{proc_name} not ready"
                )
                time.sleep(0.2)
        yield Cluster(apis, url, engine, procs, home)
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        engine.dispose()
        redis_server.stop()
        drop_database(server_url, name)
        subprocess.run(["rm", "-rf", str(home)], check=False)


def wait_events(http: httpx.Client, key: str, event_ids: list[str], what: Callable[[], str]) -> None:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    for event_id in event_ids:
        while True:
            status = http.get(f"/v1/events/{event_id}", headers=auth(key)).json()["status"]
            if status in ("SUCCEEDED", "FAILED"):
                break
            assert time.monotonic() < deadline, f"event {event_id} still {status}\n{what()}"
            time.sleep(0.3)


COUNTS = {
    "trajectories": "SELECT count(*) FROM trajectory",
    "steps": "SELECT count(*) FROM trajectory_step",
    "steps_embedded": "SELECT count(*) FROM trajectory_step WHERE embedding IS NOT NULL",
    "situations": "SELECT count(*) FROM situation_embedding",
    "state_clusters": "SELECT count(*) FROM state_cluster",
    "experiences": "SELECT count(*) FROM experience",
    "evidence": "SELECT count(*) FROM experience_evidence",
    "support": "SELECT coalesce(sum(successes + failures), 0) FROM experience",
    "agents": "SELECT coalesce(sum(distinct_agents), 0) FROM experience",
}


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {name: int(conn.execute(text(sql)).scalar_one()) for name, sql in COUNTS.items()}


def reference(server_url: str, worker_id_suffix: str, posts: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """The same POSTs accepted and distilled in this process, one after another, then one skill cycle."""
    name = f"sf_scale_ref_{worker_id_suffix}"
    url = create_database(server_url, name)
    try:
        migrate.upgrade(url)
        engine = make_engine(url, pool_size=1)
        factory = make_sessionmaker(engine)
        embedder, settings = get_embedder(), get_settings()
        try:
            with session_scope(factory) as session:
                tenant_id = make_tenant(session).id
            for items in posts:
                with session_scope(factory) as session:
                    event_id = ingestion.accept(session, tenant_id, items, schedule=False).event_id
                with session_scope(factory) as session:
                    pipeline.process_ingest(session, uuid.UUID(str(event_id)), embedder=embedder,
                                            settings=settings)  # fmt: skip
            with session_scope(factory) as session:
                cycle = skill_cycle.evolve(session, tenant_id, embedder=embedder, settings=settings)
            found = counts(engine)
            with engine.connect() as conn:
                found["skills"] = int(conn.execute(text("SELECT count(*) FROM skill")).scalar_one())
            found["cycle_created"] = cycle.created
            return found
        finally:
            engine.dispose()
    finally:
        drop_database(server_url, name)


def versions_are_consecutive(engine: Engine) -> dict[str, list[int]]:
    """Every skill's version numbers, checked to be 1..latest with no gap or repeat, head among them."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT s.name, s.head_version, s.latest_version, array_agg(v.version ORDER BY v.version)"
                " FROM skill s JOIN skill_version v ON v.skill_id = s.id GROUP BY s.id"
            )
        ).all()
    out = {}
    for name, head, latest, numbers in rows:
        assert list(numbers) == list(range(1, latest + 1)), (name, numbers, latest)
        assert head in numbers, (name, head, numbers)
        out[name] = list(numbers)
    return out


class TestScaleOut:
    def test_two_apis_two_workers_do_every_job_once_and_never_deadlock(
        self, cluster: Cluster, server_url: str, worker_id_suffix: str
    ) -> None:
        """Ingest through both APIs, two skill cycles at once, then a storm of writes to one skill."""
        with session_scope(make_sessionmaker(cluster.engine)) as session:
            tenant = make_tenant(session)
            agent = make_key(session, tenant, Scope.AGENT)
            admin = make_key(session, tenant, Scope.ADMIN)
            reviewers = [make_key(session, tenant, Scope.REVIEWER, name=f"reviewer-{n}") for n in range(2)]
        a, b = (httpx.Client(base_url=u, timeout=REQUEST_TIMEOUT_S) for u in cluster.apis)
        with a, b:
            apis = (a, b)
            # 1. Ingest: each POST through the other API; replays (same Idempotency-Key) via the other one.
            posts = [batch(n) for n in range(POSTS)]
            event_ids = []
            for n, items in enumerate(posts):
                headers = {**auth(agent), "Idempotency-Key": f"post-{n}"}
                answer = apis[n % 2].post("/v1/trajectories", json=items, headers=headers)
                assert answer.status_code == 202, answer.text
                event_ids.append(answer.json()["event_id"])
            for n in range(4):
                headers = {**auth(agent), "Idempotency-Key": f"post-{n}"}
                replay = apis[(n + 1) % 2].post("/v1/trajectories", json=posts[n], headers=headers)
                assert replay.status_code == 202 and replay.json()["event_id"] == event_ids[n]
            wait_events(a, agent, event_ids, cluster.tail)
            with cluster.engine.connect() as conn:
                events = conn.execute(
                    text("SELECT status, attempts FROM event WHERE kind <> :kind"), {"kind": "skills.evolve"}
                ).all()
                duplicate_evidence = conn.execute(
                    text(
                        "SELECT count(*) FROM (SELECT 1 FROM experience_evidence GROUP BY experience_id,"
                        " step_id HAVING count(*) > 1) d"
                    )  # fmt: skip
                ).scalar_one()
                duplicate_experiences = conn.execute(
                    text(
                        "SELECT count(*) FROM (SELECT 1 FROM experience GROUP BY tenant_id, domain, polarity,"
                        " action_template, cluster_id HAVING count(*) > 1) d"
                    )  # fmt: skip
                ).scalar_one()
            assert sorted(map(tuple, events)) == [("SUCCEEDED", 1)] * POSTS, (
                events
            )  # each done once, none lost
            assert duplicate_evidence == 0 and duplicate_experiences == 0
            live = counts(cluster.engine)
            expected = reference(server_url, worker_id_suffix, posts)
            assert live == {k: expected[k] for k in COUNTS}, (live, expected)
            # Both workers took jobs (otherwise this proved nothing about two of them).
            took = {
                n: "process_event" in (cluster.logs / f"{n}.log").read_text()
                for n in ("worker-a", "worker-b")
            }
            assert all(took.values()), took

            # 2. Two skill cycles of the same tenant at once, one through each API.
            with ThreadPoolExecutor(2) as pool:
                cycles = list(pool.map(lambda api: api.post("/v1/evolve", headers=auth(admin)), apis))
            assert [c.status_code for c in cycles] == [202, 202]
            cycle_ids = [c.json()["event_id"] for c in cycles]
            wait_events(a, admin, cycle_ids, cluster.tail)
            results = [a.get(f"/v1/events/{e}", headers=auth(admin)).json() for e in cycle_ids]
            assert [r["status"] for r in results] == ["SUCCEEDED", "SUCCEEDED"], results
            assert sum(r["result"]["created"] for r in results) == expected["cycle_created"] > 0
            with cluster.engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM skill")).scalar_one() == expected["skills"]
            versions_are_consecutive(cluster.engine)

            # 3. One skill, many writers: imports (new versions), rollbacks, accept / reject / tier decisions.
            probe = "scale-out-probe"

            def skill_md(n: int) -> bytes:
                steps = tuple(f"step {n} part {k}" for k in range(3))
                return render(
                    skill_doc(probe, steps=steps, description=f"Probe {n}. Use when probing.")
                ).encode()

            def upload(api: httpx.Client, n: int, key: str) -> httpx.Response:
                return api.post(
                    "/v1/skills", files={"SKILL.md": ("SKILL.md", skill_md(n))}, headers=auth(key)
                )

            first = upload(a, 0, reviewers[0])
            assert first.status_code == 201, first.text
            skill_id = first.json()["items"][0]["skill"]["id"]
            distilled = next(
                s
                for s in a.get("/v1/skills", params={"limit": 100}, headers=auth(admin)).json()["items"]
                if s["provenance"] == "distilled"
            )

            def post(api: httpx.Client, path: str, key: str, **body: object) -> httpx.Response:
                return api.post(path, json={"reason": "race", **body}, headers=auth(key))

            def action(n: int) -> httpx.Response:
                api, key = apis[n % 2], reviewers[n % 2]
                probe_path, other = f"/v1/skills/{skill_id}", f"/v1/skills/{distilled['id']}"
                match n % 6:
                    case 0 | 3:
                        return upload(api, n + 1, key)
                    case 1:
                        return post(api, f"{probe_path}/rollback", key, to_version=1)
                    case 2:
                        return post(api, f"{probe_path}/versions/latest/accept", key, publish=True)
                    case 4:
                        return post(api, f"{probe_path}/versions/1/tier", key, tier="T1")
                    case _ if n % 4 == 1:
                        return post(api, f"{other}/versions/1/accept", key, publish=True)
                    case _:
                        return post(api, f"{other}/rollback", key, to_version=1)

            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(action, range(36)))  # a timeout raises here: no request hangs
            statuses = sorted({r.status_code for r in answers})
            assert all(r.status_code < 500 for r in answers), [(r.status_code, r.text[:200]) for r in answers]
            assert set(statuses) <= {200, 201, 403, 409}, statuses
            # 403 only where a reviewer would accept a version they imported themselves.
            assert {r.json()["error"]["code"] for r in answers if r.status_code == 403} <= {"self_approval"}
            assert time.monotonic() - started < JOB_TIMEOUT_S
            numbers = versions_are_consecutive(cluster.engine)
            imported = sum(r.status_code == 201 and not r.json()["items"][0]["unchanged"] for r in answers)
            assert imported == 12 and numbers[probe] == list(range(1, 2 + imported))
            with cluster.engine.connect() as conn:
                repeated = conn.execute(
                    text(
                        "SELECT count(*) FROM (SELECT 1 FROM skill_version GROUP BY skill_id, version"
                        " HAVING count(*) > 1) d"
                    )  # fmt: skip
                ).scalar_one()
            assert repeated == 0
        for name, proc in cluster.procs.items():
            assert proc.poll() is None, f"{name} exited\n{cluster.tail()}"
