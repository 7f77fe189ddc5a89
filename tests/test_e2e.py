"""End to end with real processes: a Celery worker, and `skillfoundry up` stopped and started again."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.storage import migrate
from app.storage.models import Scope
from app.storage.session import make_engine, make_sessionmaker, session_scope
from tests.conftest import create_database, drop_database
from tests.factories import auth, make_key, make_tenant, make_trajectory

pytestmark = pytest.mark.e2e

EVENT_TIMEOUT_S = 180


def wait_for_event(get: object, event_id: str, key: str) -> dict[str, object]:
    """Poll GET /v1/events/{id} until it finishes."""
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while time.monotonic() < deadline:
        body: dict[str, object] = get(f"/v1/events/{event_id}", headers=auth(key)).json()  # type: ignore[operator]
        if body["status"] in ("SUCCEEDED", "FAILED"):
            return body
        time.sleep(0.5)
    raise AssertionError(f"event {event_id} did not finish in {EVENT_TIMEOUT_S}s")


@pytest.fixture
def live_url(server_url: str, worker_id_suffix: str) -> Iterator[str]:
    """A migrated database whose commits are real (other processes must see them); dropped afterwards."""
    name = f"sf_e2e_{worker_id_suffix}"
    url = create_database(server_url, name)
    migrate.upgrade(url)
    yield url
    drop_database(server_url, name)


@pytest.fixture
def worker(live_url: str, settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker process on the live database and the test Redis."""
    env = dict(os.environ, DATABASE_URL=live_url, REDIS_URL=settings.require_redis_url(), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=env)
    yield proc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class TestWorker:
    def test_posted_trajectory_is_embedded_by_a_real_worker(
        self, live_url: str, settings: Settings, worker: subprocess.Popen[bytes]
    ) -> None:
        """POST, the event reaches SUCCEEDED, and 384-dim embeddings read back."""
        engine = make_engine(live_url, pool_size=1)
        with session_scope(make_sessionmaker(engine)) as session:
            key = make_key(session, make_tenant(session), Scope.AGENT)
        engine.dispose()

        app = create_app(settings.model_copy(update={"database_url": live_url}))
        with TestClient(app) as client:
            accepted = client.post(
                "/v1/trajectories", json=[make_trajectory(4), make_trajectory(2)], headers=auth(key)
            )
            assert accepted.status_code == 202
            event = wait_for_event(client.get, accepted.json()["event_id"], key)
            assert event["status"] == "SUCCEEDED", event
            result = event["result"]
            assert isinstance(result, dict)
            assert (result["trajectories"], result["steps_embedded"]) == (2, 6)
            got = client.get(
                f"/v1/trajectories/{accepted.json()['ids'][0]}",
                params={"include_embeddings": True},
                headers=auth(key),
            ).json()
        assert worker.poll() is None
        assert len(got["steps"]) == 4
        for step in got["steps"]:
            assert step["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"
            assert len(step["embedding"]) == 384


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class UpProcess:
    """`skillfoundry up` as a user runs it, reading its output."""

    def __init__(self, home: Path, port: int, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(SKILLFOUNDRY_HOME=str(home), SKILLFOUNDRY_PORT=str(port))
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "up"], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
        )

    def wait_up(self, timeout_s: float = 120) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log.read_text()
            if "Skillfoundry is up" in text:
                return text
            if self.proc.poll() is not None:
                raise AssertionError(f"up exited with {self.proc.returncode}:\n{text[-3000:]}")
            time.sleep(0.3)
        raise AssertionError("up did not come up:\n" + self.log.read_text()[-3000:])

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(60)


class TestUp:
    def test_restart_keeps_data_and_key(self, tmp_path: Path) -> None:
        """First start prints a key once; data and key survive Ctrl-C and a second start."""
        home = Path(tempfile.gettempdir()) / f"sfup-{os.getpid()}"  # short: unix socket paths
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        first = UpProcess(home, port, tmp_path / "first.log")
        try:
            output = first.wait_up()
            match = re.search(r"sf_[A-Za-z0-9_-]{32,}", output)
            assert match, output
            key = match.group(0)
            with httpx.Client(base_url=base) as http:
                posted = http.post("/v1/trajectories", json=make_trajectory(3), headers=auth(key))
                assert posted.status_code == 202
                event = wait_for_event(http.get, posted.json()["event_id"], key)
                assert event["status"] == "SUCCEEDED"
                assert http.get("/readyz").status_code == 200
            cli = subprocess.run(
                [sys.executable, "-m", "app.cli", "keys", "create", "bot", "--scope", "agent",
                 "--url", base, "--api-key", key],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            bot_key = re.search(r"sf_[A-Za-z0-9_-]{32,}", cli.stdout)
            assert bot_key, cli.stdout
            with httpx.Client(base_url=base) as http:
                assert http.get("/v1/ping", headers=auth(bot_key.group(0))).json()["scopes"] == ["agent"]
                more = http.post(
                    "/v1/trajectories", json=[make_trajectory(3), make_trajectory(3)], headers=auth(key)
                )
                assert wait_for_event(http.get, more.json()["event_id"], key)["status"] == "SUCCEEDED"
            # A skill cycle through the CLI; the exported library passes the reference validator.
            cycle = subprocess.run(
                [sys.executable, "-m", "app.cli", "evolve", "--url", base, "--api-key", key],
                capture_output=True, text=True, check=True, timeout=300,
            )  # fmt: skip
            assert json.loads(cycle.stdout)["created"] >= 1, cycle.stdout
            exported = subprocess.run(
                [sys.executable, "-m", "app.cli", "export", str(tmp_path / "library"), "--url", base,
                 "--api-key", key],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            assert "wrote" in exported.stdout
            folders = sorted((tmp_path / "library").iterdir())
            assert folders
            agentskills = Path(sys.executable).parent / "agentskills"
            for folder in folders:
                subprocess.run([str(agentskills), "validate", str(folder)], check=True, capture_output=True)
        finally:
            assert first.interrupt() == 0
        assert "Stopped." in first.log.read_text()

        second = UpProcess(home, port, tmp_path / "second.log")
        try:
            output = second.wait_up()
            assert key not in output and "First start" not in output
            with httpx.Client(base_url=base) as http:
                got = http.get(f"/v1/trajectories/{posted.json()['ids'][0]}", headers=auth(key))
                assert got.status_code == 200
                assert [s["embedding_model"] for s in got.json()["steps"]] == [
                    "sentence-transformers/all-MiniLM-L6-v2"
                ] * 3
        finally:
            assert second.interrupt() == 0
            subprocess.run(["rm", "-rf", str(home)], check=False)
