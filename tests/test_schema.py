"""Schemathesis against the app's own OpenAPI schema: no 5xx, and every answer matches the schema.

Each generated request goes through the test client (the real app, in the test's rolled-back
transaction) with an admin key, so every operation is reached past authentication. Checks: no server
error, documented status codes, content types, headers and bodies, `Allow` on 405, and that requests
violating the schema are refused. Not checked: that every schema-valid request succeeds, since ids
and cursors that match the schema still name nothing (404, `invalid_cursor`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance
from sqlalchemy.orm import Session

from app.api.routes.retrieve import get_log_sessions
from app.config import Settings
from app.main import create_app
from app.storage.models import Scope
from tests.factories import auth, make_key, make_tenant

EXAMPLES_PER_OPERATION = 20
# The documented 413 codes (README "API in brief").
LIMIT_CODES = {
    "field_too_long",
    "payload_too_large",
    "too_many_items",
    "too_many_trajectories",
    "too_many_steps",
}
# Health checks answer 503 by design while no worker runs; tests/test_health.py covers them.
SKIPPED_PATHS = ("/healthz", "/readyz")

schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi()).exclude(path=list(SKIPPED_PATHS))


@pytest.fixture
def admin_key(db: Session) -> str:
    key = make_key(db, make_tenant(db), Scope.ADMIN, name="schemathesis")
    db.commit()
    return key


@pytest.fixture
def api(client: TestClient, db: Session) -> TestClient:
    """The app, writing its after-answer retrieval log in the test's transaction."""

    @contextmanager
    def same_transaction() -> Iterator[Session]:
        yield db
        db.commit()

    def sessions() -> AbstractContextManager[Session]:
        return same_transaction()

    client.app.dependency_overrides[get_log_sessions] = lambda: sessions
    return client


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_api_conforms(case: Any, api: TestClient, admin_key: str) -> None:
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=auth(admin_key))
    kwargs.pop("cookies", None)  # the API reads no cookies
    if isinstance(kwargs.get("data"), str | bytes):
        kwargs["content"] = kwargs.pop("data")  # a raw (non-form) body
    response = api.request(**kwargs)
    excluded = [positive_data_acceptance]
    if response.status_code == 413:
        # A string over its documented limit is refused with 413 `field_too_long`: a rejection, which
        # the negative-data check only expects as 400 or 422.
        assert response.json()["error"]["code"] in LIMIT_CODES
        excluded.append(negative_data_rejection)
    case.validate_response(response, excluded_checks=excluded)


STEP_WITH_NUL = {"observation": "o", "action": "a", "tool_output": ["\x00"]}


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("POST", "/v1/trajectories", {"task": "t", "agent_id": "a", "steps": [], "metadata": {"k\x00": "v"}}),
        ("POST", "/v1/trajectories", {"task": "t", "agent_id": "a", "steps": [STEP_WITH_NUL]}),
        ("POST", "/v1/keys", {"name": "bad\x00name", "scopes": ["agent"]}),
        ("POST", "/v1/retrieve", {"task": "t", "observation": "o\x00"}),
    ],
)  # fmt: skip
def test_nul_in_text_is_refused_with_422(
    api: TestClient, admin_key: str, method: str, url: str, body: dict[str, Any]
) -> None:
    """Found by this schema run: PostgreSQL cannot store U+0000, so it is refused before any write."""
    response = api.request(method, url, json=body, headers=auth(admin_key))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["detail"][0]["type"] == "nul_in_text"


def test_405_lists_every_method_of_the_path(api: TestClient, admin_key: str) -> None:
    """Found by this schema run: `Allow` named only the first route's methods."""
    response = api.request("PUT", "/v1/keys", headers=auth(admin_key))
    assert response.status_code == 405 and response.headers["allow"] == "GET, POST"
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_numbers_and_flags_are_not_coerced(api: TestClient, admin_key: str) -> None:
    """Found by this schema run: `false` was read as a score of 0, and `0` as `false`."""
    bad = [
        {"task": "t", "agent_id": "a", "steps": [], "outcome": {"score": False}},
        {"task": "t", "agent_id": "a", "steps": [], "outcome": {"success": 0}},
    ]
    for body in bad:
        assert api.post("/v1/trajectories", json=body, headers=auth(admin_key)).status_code == 422
    for body in (
        {"task": "t", "observation": "o", "explain": 0},
        {"task": "t", "observation": "o", "step": False},
    ):
        assert api.post("/v1/retrieve", json=body, headers=auth(admin_key)).status_code == 422
    listed = api.get("/v1/trajectories", params={"until": "0.5"}, headers=auth(admin_key))
    assert listed.status_code == 422


def test_a_page_position_past_bigint_is_422(api: TestClient, admin_key: str) -> None:
    """Found by this schema run: `before` past PostgreSQL's bigint answered 500."""
    response = api.get("/v1/audit", params={"before": 2**63}, headers=auth(admin_key))
    assert response.status_code == 422
