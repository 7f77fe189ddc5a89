"""`skillfoundry up`: embedded services, migrations, first-start bootstrap, worker and API as children."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from app.config import Settings
from app.embedded import EmbeddedPostgres, EmbeddedRedis, die_with_parent
from app.storage import migrate
from app.storage.models import Scope
from app.storage.repositories import audit, tenants
from app.storage.session import make_engine, make_sessionmaker, session_scope

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class Bootstrap:
    """What first start created: the tenant and the admin key's plaintext (shown once)."""

    tenant_name: str
    admin_key: str


def bootstrap(database_url: str) -> Bootstrap | None:
    """On an empty database, create the default tenant and an admin key; otherwise do nothing."""
    engine = make_engine(database_url, pool_size=1)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            if tenants.any_tenant(session):
                return None
            tenant = tenants.create_tenant(session, DEFAULT_TENANT)
            key, plaintext = tenants.create_key(session, tenant.id, "admin", [Scope.ADMIN])
            audit.record(
                session,
                tenant.id,
                actor="system:bootstrap",
                action="api_key.create",
                target_type="api_key",
                target_id=str(key.id),
                detail={"name": key.name, "scopes": key.scopes},
            )
            return Bootstrap(tenant_name=tenant.name, admin_key=plaintext)
    finally:
        engine.dispose()


@dataclass
class Stack:
    """The running parts of one service: embedded servers (if any) and child processes."""

    settings: Settings
    database_url: str = ""
    redis_url: str = ""
    postgres: EmbeddedPostgres | None = None
    redis_server: EmbeddedRedis | None = None
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        """Where embedded data lives."""
        return self.settings.home.resolve()

    def start_services(self) -> None:
        """Start embedded PostgreSQL and Redis unless URLs point elsewhere, then migrate."""
        self.home.mkdir(parents=True, exist_ok=True)
        if self.settings.database_url:
            self.database_url = self.settings.database_url
        else:
            self.postgres = EmbeddedPostgres(self.home / "pgdata")
            self.database_url = self.postgres.start()
        if self.settings.redis_url:
            self.redis_url = self.settings.redis_url
        else:
            self.redis_server = EmbeddedRedis(self.home / "redis")
            self.redis_url = self.redis_server.start()
        migrate.upgrade(self.database_url)

    def child_env(self) -> dict[str, str]:
        """The environment children run in: the same URLs the launcher resolved."""
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            SKILLFOUNDRY_RATE_LIMIT_PER_MINUTE=str(self.settings.rate_limit_per_minute),
        )
        return env

    def start_worker(self) -> None:
        """Start a Celery worker process."""
        self._spawn("worker", [sys.executable, "-m", "app.cli", "worker", "--beat"])

    def start_api(self, host: str, port: int) -> None:
        """Start the API process."""
        self._spawn("api", [sys.executable, "-m", "app.cli", "api", "--host", host, "--port", str(port)])

    def _spawn(self, name: str, argv: list[str]) -> None:
        self.children[name] = subprocess.Popen(argv, env=self.child_env(), preexec_fn=die_with_parent)  # noqa: PLW1509

    def wait_healthy(self, base_url: str, timeout_s: float = 60.0) -> None:
        """Block until the API answers /healthz, or raise if it died or timed out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            api = self.children.get("api")
            if api is not None and api.poll() is not None:
                raise RuntimeError(f"the API process exited with code {api.returncode}")
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the API did not answer at {base_url} within {timeout_s:.0f}s")

    def exited_child(self) -> str | None:
        """The name of a child that has exited, if any."""
        return next((name for name, proc in self.children.items() if proc.poll() is not None), None)

    def stop(self, grace_s: float = 20.0) -> None:
        """Stop children (SIGTERM, then SIGKILL after `grace_s`), then Redis, then PostgreSQL."""
        for proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in self.children.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.children.clear()
        if self.redis_server is not None:
            self.redis_server.stop()
        if self.postgres is not None:
            self.postgres.stop()


def run_up(settings: Settings, host: str, port: int, echo: Callable[[str], None]) -> int:
    """Run the whole service until Ctrl-C or SIGTERM; returns the exit code."""
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        echo(f"\nReceived {signal.Signals(signum).name}; stopping...")
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    stack = Stack(settings)
    code = 0
    try:
        echo(f"Data directory: {stack.home}" if not settings.database_url else "Using DATABASE_URL")
        stack.start_services()
        echo("Database: " + ("embedded PostgreSQL + pgvector" if stack.postgres else "DATABASE_URL"))
        echo("Broker: " + ("embedded Redis" if stack.redis_server else "REDIS_URL"))
        created = bootstrap(stack.database_url)
        if created is not None:
            echo(f"\nFirst start: created tenant '{created.tenant_name}' and an admin API key.")
            echo("Store it now; it is shown only this once (only its SHA-256 is kept):\n")
            echo(f"    {created.admin_key}\n")
        stack.start_worker()
        stack.start_api(host, port)
        base = f"http://{host}:{port}"
        stack.wait_healthy(base)
        echo(f"Skillfoundry is up: API {base}/v1, docs {base}/docs. Press Ctrl-C to stop.")
        while not stop.wait(0.5):
            dead = stack.exited_child()
            if dead is not None:
                echo(f"The {dead} process exited unexpectedly; stopping everything.")
                code = 1
                break
    except Exception as exc:
        echo(f"Could not start: {exc}")
        code = 1
    finally:
        stack.stop()
        echo("Stopped.")
    return code
