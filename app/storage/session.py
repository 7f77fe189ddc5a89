"""Engines and sessions. Commits happen in exactly two places: `get_session` (API) and `session_scope`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from app.config import get_settings, sqlalchemy_url

log = logging.getLogger(__name__)

AFTER_COMMIT = "after_commit_callbacks"


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An engine that survives a database restart: pre-ping drops dead connections."""
    return create_engine(
        sqlalchemy_url(url),
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=10,  # a request that waits longer for a connection answers 503 `database_busy`
        pool_recycle=1800,
        connect_args={"connect_timeout": 5},
    )


@lru_cache
def get_engine() -> Engine:
    """The process's engine, built from settings on first use."""
    settings = get_settings()
    return make_engine(settings.require_database_url(), pool_size=settings.db_pool_size)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded values after commit (responses are built after it)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session] | None = None) -> Iterator[Session]:
    """One unit of work outside a request: commit on success, roll back on error."""
    session = (factory or make_sessionmaker(get_engine()))()
    try:
        yield session
    except BaseException:
        roll_back_and_close(session)
        raise
    commit_and_close(session)


def commit_and_close(session: Session) -> None:
    """End a unit of work that succeeded: commit (rolling back if the commit fails), then close."""
    try:
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def roll_back_and_close(session: Session) -> None:
    """End a unit of work that failed."""
    try:
        session.rollback()
    finally:
        session.close()


def enqueue_after_commit(session: Session, send: Callable[[], None]) -> None:
    """Run `send` once the session commits; a rollback drops it, so no job points at a missing row."""
    session.info.setdefault(AFTER_COMMIT, []).append(send)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    for send in session.info.pop(AFTER_COMMIT, []):
        try:
            send()
        except Exception:
            # The row is committed and its event stays PENDING: the worker's sweeper sends it again.
            log.warning("could not send a job after commit; the sweeper will retry it", exc_info=True)


@event.listens_for(Session, "after_rollback")
def _drop_after_rollback(session: Session) -> None:
    session.info.pop(AFTER_COMMIT, None)
