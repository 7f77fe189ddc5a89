"""The request pipeline's session: committed or rolled back, and closed, in one hop off the event loop."""

from __future__ import annotations

from typing import Any

import pytest
from anyio import CapacityLimiter
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.api.deps import SessionDep


class FakeSession:
    """Records what the request did with its session."""

    def __init__(self, calls: list[str], *, fail_commit: bool = False) -> None:
        self.calls = calls
        self.fail_commit = fail_commit

    def commit(self) -> None:
        self.calls.append("commit")
        if self.fail_commit:
            raise RuntimeError("commit failed")

    def rollback(self) -> None:
        self.calls.append("rollback")

    def close(self) -> None:
        self.calls.append("close")


def make_app(calls: list[str], *, fail_commit: bool = False) -> FastAPI:
    app = FastAPI()
    app.state.sessionmaker = lambda: FakeSession(calls, fail_commit=fail_commit)
    app.state.session_limiter = CapacityLimiter(2)

    @app.get("/ok")
    def ok(session: SessionDep) -> dict[str, Any]:
        calls.append("endpoint")
        return {"ok": True}

    @app.get("/boom")
    def boom(session: SessionDep) -> dict[str, Any]:
        calls.append("endpoint")
        raise RuntimeError("boom")

    return app


class TestSession:
    def test_committed_then_closed_before_the_answer(self) -> None:
        """A request that succeeds commits and closes its session."""
        calls: list[str] = []
        with TestClient(make_app(calls)) as client:
            assert client.get("/ok").status_code == 200
        assert calls == ["endpoint", "commit", "close"]

    def test_rolled_back_and_closed_on_error(self) -> None:
        """A request that fails rolls back and closes, and never commits."""
        calls: list[str] = []
        with TestClient(make_app(calls), raise_server_exceptions=False) as client:
            assert client.get("/boom").status_code == 500
        assert calls == ["endpoint", "rollback", "close"]

    def test_a_failed_commit_rolls_back_closes_and_fails_the_request(self) -> None:
        """A commit that raises leaves no open transaction or checked-out connection behind."""
        calls: list[str] = []
        with TestClient(make_app(calls, fail_commit=True)) as client, pytest.raises(RuntimeError):
            client.get("/ok")
        assert calls == ["endpoint", "commit", "rollback", "close"]
