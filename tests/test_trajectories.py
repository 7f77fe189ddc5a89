"""POST/GET /v1/trajectories: storage, read-back, pagination, isolation, idempotency, errors and limits."""

import json
import uuid
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.evolver.names import Queue
from app.limits import MAX_FIELD_CHARS, MAX_STEPS_PER_TRAJECTORY
from app.main import create_app
from app.storage.models import Event, EventStatus, Scope, Trajectory, TrajectoryStep
from tests.factories import auth, make_key, make_step, make_tenant, make_trajectory


@pytest.fixture
def key(db: Session) -> str:
    """An agent key of a fresh tenant."""
    return make_key(db, make_tenant(db))


@pytest.fixture
def queue(settings: Settings) -> Iterator[redis.Redis]:
    """The Redis holding the ingest queue, to see what was sent."""
    client = redis.Redis.from_url(settings.require_redis_url())
    yield client
    client.close()


def count(db: Session, model: type) -> int:
    return int(db.scalar(select(func.count()).select_from(model)) or 0)


class TestIngest:
    def test_single_trajectory_is_stored_and_readable(
        self, client: TestClient, key: str, db: Session
    ) -> None:
        """One trajectory: 202 with its id and event; GET returns it step by step."""
        body = make_trajectory(3)
        body["steps"][1].update(tool="shell", tool_input={"cmd": "ls"}, tool_output="a b", reward=0.5,
                                retrieval_id="r-1", used_item_ids=["exp-1"])  # fmt: skip
        response = client.post("/v1/trajectories", json=body, headers=auth(key))
        assert response.status_code == 202
        accepted = response.json()
        assert accepted["status"] == "queued"
        (trajectory_id,) = accepted["ids"]

        got = client.get(f"/v1/trajectories/{trajectory_id}", headers=auth(key)).json()
        assert got["task"] == body["task"]
        assert got["outcome"] == {"success": True, "score": 1.0}
        assert got["metadata"] == {"env": "test"}
        assert got["event_id"] == accepted["event_id"]
        assert [s["action"] for s in got["steps"]] == [s["action"] for s in body["steps"]]
        assert got["steps"][1]["tool_input"] == {"cmd": "ls"}
        assert got["steps"][1]["used_item_ids"] == ["exp-1"]
        assert got["steps"][0]["embedding_model"] is None

    def test_batch_is_stored_in_order_under_one_event(
        self, client: TestClient, key: str, db: Session
    ) -> None:
        """A list gets one id per trajectory, in order, and a single PENDING event."""
        batch = [make_trajectory(2, task=f"task {i}") for i in range(5)]
        accepted = client.post("/v1/trajectories", json=batch, headers=auth(key)).json()
        assert len(accepted["ids"]) == 5
        tasks = [db.get(Trajectory, uuid.UUID(i)).task for i in accepted["ids"]]  # type: ignore[union-attr]
        assert tasks == [f"task {i}" for i in range(5)]
        event = db.get(Event, uuid.UUID(accepted["event_id"]))
        assert event is not None and event.status == EventStatus.PENDING
        assert (
            db.scalar(
                select(func.count())
                .select_from(TrajectoryStep)
                .where(TrajectoryStep.trajectory_id.in_([uuid.UUID(i) for i in accepted["ids"]]))
            )
            == 10
        )

    def test_job_is_sent_after_commit_only(self, client: TestClient, key: str, queue: redis.Redis) -> None:
        """A stored batch sends one job; a refused one sends none."""
        before = queue.llen(Queue.INGEST.value)
        assert client.post("/v1/trajectories", json=make_trajectory(), headers=auth(key)).status_code == 202
        assert queue.llen(Queue.INGEST.value) == before + 1
        assert client.post("/v1/trajectories", json={"task": "x"}, headers=auth(key)).status_code == 422
        assert queue.llen(Queue.INGEST.value) == before + 1

    def test_outcome_may_be_unknown(self, client: TestClient, key: str) -> None:
        """success and score are optional (null)."""
        body = make_trajectory(outcome={"success": None, "score": None})
        tid = client.post("/v1/trajectories", json=body, headers=auth(key)).json()["ids"][0]
        got = client.get(f"/v1/trajectories/{tid}", headers=auth(key)).json()
        assert got["outcome"] == {"success": None, "score": None}


class TestIdempotency:
    def test_retry_returns_first_answer_and_stores_once(
        self, client: TestClient, key: str, db: Session
    ) -> None:
        """The same Idempotency-Key and body: same ids and event, nothing stored twice."""
        headers = {**auth(key), "Idempotency-Key": "retry-1"}
        first = client.post("/v1/trajectories", json=[make_trajectory(), make_trajectory()], headers=headers)
        before = count(db, Trajectory)
        second = client.post("/v1/trajectories", json=[make_trajectory(), make_trajectory()], headers=headers)
        assert second.status_code == 202
        assert second.json() == first.json()
        assert second.headers["Idempotent-Replayed"] == "true"
        assert count(db, Trajectory) == before

    def test_key_reused_with_other_body_is_409(self, client: TestClient, key: str) -> None:
        """A different body under a used key is a client bug: 409."""
        headers = {**auth(key), "Idempotency-Key": "retry-2"}
        client.post("/v1/trajectories", json=make_trajectory(task="a"), headers=headers)
        response = client.post("/v1/trajectories", json=make_trajectory(task="b"), headers=headers)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "idempotency_key_reused"

    def test_keys_are_per_tenant(self, client: TestClient, db: Session) -> None:
        """Two tenants may use the same Idempotency-Key independently."""
        key_a, key_b = make_key(db, make_tenant(db)), make_key(db, make_tenant(db))
        a = client.post(
            "/v1/trajectories", json=make_trajectory(), headers={**auth(key_a), "Idempotency-Key": "k"}
        )
        b = client.post(
            "/v1/trajectories", json=make_trajectory(), headers={**auth(key_b), "Idempotency-Key": "k"}
        )
        assert a.status_code == b.status_code == 202
        assert a.json()["ids"] != b.json()["ids"]


class TestTenantIsolation:
    def test_other_tenants_objects_are_404(self, client: TestClient, db: Session) -> None:
        """A trajectory or event of another tenant answers 404, as if it did not exist."""
        mine, theirs = make_key(db, make_tenant(db)), make_key(db, make_tenant(db))
        accepted = client.post("/v1/trajectories", json=make_trajectory(), headers=auth(theirs)).json()
        response = client.get(f"/v1/trajectories/{accepted['ids'][0]}", headers=auth(mine))
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "trajectory_not_found"
        response = client.get(f"/v1/events/{accepted['event_id']}", headers=auth(mine))
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "event_not_found"

    def test_list_shows_only_own_tenant(self, client: TestClient, db: Session) -> None:
        """Listing never includes another tenant's rows."""
        mine, theirs = make_key(db, make_tenant(db)), make_key(db, make_tenant(db))
        client.post("/v1/trajectories", json=[make_trajectory()] * 3, headers=auth(theirs))
        own = client.post("/v1/trajectories", json=make_trajectory(), headers=auth(mine)).json()["ids"]
        items = client.get("/v1/trajectories", headers=auth(mine)).json()["items"]
        assert [i["id"] for i in items] == own

    def test_tenant_comes_from_key_not_body(self, client: TestClient, db: Session) -> None:
        """A tenant_id in the body is refused, not obeyed."""
        tenant, other = make_tenant(db), make_tenant(db)
        key = make_key(db, tenant)
        response = client.post(
            "/v1/trajectories", json=make_trajectory(tenant_id=str(other.id)), headers=auth(key)
        )
        assert response.status_code == 422


class TestListing:
    def test_cursor_pagination_walks_every_row_once(self, client: TestClient, key: str) -> None:
        """Pages of 2 over 5 rows: 2, 2, 1, newest first, no repeats."""
        ids: list[str] = []
        for i in range(5):
            ids += client.post(
                "/v1/trajectories", json=make_trajectory(task=f"t{i}"), headers=auth(key)
            ).json()["ids"]
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = client.get("/v1/trajectories", params=params, headers=auth(key)).json()
            seen += [i["id"] for i in page["items"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 3
        assert sorted(seen) == sorted(ids)
        assert len(set(seen)) == 5

    def test_filters(self, client: TestClient, key: str) -> None:
        """agent, session, domain and outcome filters combine."""
        client.post("/v1/trajectories", headers=auth(key), json=[
            make_trajectory(agent_id="a", domain="web", outcome={"success": True}),
            make_trajectory(agent_id="a", domain="shell", outcome={"success": False}),
            make_trajectory(agent_id="b", domain="web", session_id="s9", outcome={"success": None}),
        ])  # fmt: skip

        def tasks(**params: str) -> list[tuple[str, str | None]]:
            items = client.get("/v1/trajectories", params=params, headers=auth(key)).json()["items"]
            return sorted((i["agent_id"], i["domain"]) for i in items)

        assert tasks(agent_id="a") == [("a", "shell"), ("a", "web")]
        assert tasks(domain="web") == [("a", "web"), ("b", "web")]
        assert tasks(outcome="failure") == [("a", "shell")]
        assert tasks(outcome="unknown") == [("b", "web")]
        assert tasks(session_id="s9", domain="web") == [("b", "web")]
        assert tasks(agent_id="a", outcome="success") == [("a", "web")]
        assert tasks(until="2000-01-01T00:00:00Z") == []
        assert len(tasks(since="2000-01-01T00:00:00Z")) == 3

    def test_bad_cursor_is_400(self, client: TestClient, key: str) -> None:
        """A cursor that was not ours: 400 invalid_cursor."""
        response = client.get("/v1/trajectories", params={"cursor": "not-a-cursor"}, headers=auth(key))
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_cursor"

    def test_page_size_is_bounded(self, client: TestClient, key: str) -> None:
        """limit over the maximum is a 422."""
        response = client.get("/v1/trajectories", params={"limit": 10_000}, headers=auth(key))
        assert response.status_code == 422


class TestErrors:
    def post(self, client: TestClient, key: str, body: object) -> tuple[int, str]:
        response = client.post("/v1/trajectories", json=body, headers=auth(key))
        return response.status_code, response.json()["error"]["code"]

    def test_invalid_json_is_400(self, client: TestClient, key: str) -> None:
        """A body that does not parse."""
        response = client.post(
            "/v1/trajectories",
            content=b"{not json",
            headers={**auth(key), "Content-Type": "application/json"},
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_json"

    def test_missing_field_is_422_with_location(self, client: TestClient, key: str) -> None:
        """The detail names the field, without the union's internal tags."""
        body = make_trajectory()
        del body["agent_id"]
        response = client.post("/v1/trajectories", json=body, headers=auth(key))
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "validation_error"
        assert ["body", "agent_id"] in [d["loc"] for d in response.json()["error"]["detail"]]

    def test_score_out_of_range_is_422(self, client: TestClient, key: str) -> None:
        """outcome.score lies in [0, 1]."""
        assert self.post(client, key, make_trajectory(outcome={"score": 1.5})) == (422, "validation_error")

    def test_unknown_field_is_422(self, client: TestClient, key: str) -> None:
        """Misspelt fields are refused rather than silently dropped."""
        assert self.post(client, key, make_trajectory(outcom={})) == (422, "validation_error")

    def test_empty_list_is_422(self, client: TestClient, key: str) -> None:
        """An empty batch is a mistake."""
        assert self.post(client, key, [])[0] == 422

    def test_too_many_steps_is_413(self, client: TestClient, key: str) -> None:
        """Steps per trajectory are limited."""
        body = make_trajectory(0)
        body["steps"] = [{"observation": "o", "action": "a"}] * (MAX_STEPS_PER_TRAJECTORY + 1)
        assert self.post(client, key, body) == (413, "too_many_steps")

    def test_field_too_long_is_413(self, client: TestClient, key: str) -> None:
        """Text fields are limited to 64 KB."""
        body = make_trajectory(1)
        body["steps"][0]["observation"] = "x" * (MAX_FIELD_CHARS + 1)
        assert self.post(client, key, body) == (413, "field_too_long")

    def test_json_tool_output_too_long_is_413(self, client: TestClient, key: str) -> None:
        """JSON fields count their serialised length."""
        body = make_trajectory(1)
        body["steps"][0]["tool_output"] = {"rows": ["y" * 1000] * 70}
        assert self.post(client, key, body) == (413, "field_too_long")

    def test_too_many_trajectories_is_413(self, client: TestClient, key: str) -> None:
        """At most 500 per POST."""
        small = {"task": "t", "agent_id": "a", "steps": []}
        assert self.post(client, key, [small] * 501) == (413, "too_many_trajectories")

    def test_body_over_10_mb_is_413(self, client: TestClient, key: str) -> None:
        """The body size is checked before parsing."""
        blob = json.dumps([make_trajectory(1, task="x" * 60_000) for _ in range(180)]).encode()
        assert len(blob) > 10 * 1024 * 1024
        response = client.post(
            "/v1/trajectories", content=blob, headers={**auth(key), "Content-Type": "application/json"}
        )
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"

    def test_unknown_route_and_method(self, client: TestClient) -> None:
        """404 and 405 use the same error shape."""
        assert client.get("/v1/nope").json()["error"]["code"] == "not_found"
        response = client.put("/v1/trajectories")
        assert response.status_code == 405
        assert response.json()["error"]["code"] == "method_not_allowed"

    def test_malformed_id_is_422(self, client: TestClient, key: str) -> None:
        """Ids are UUIDs."""
        assert client.get("/v1/trajectories/123", headers=auth(key)).status_code == 422


class TestRateLimit:
    def test_over_the_limit_is_429_with_retry_after(self, settings: Settings, db: Session) -> None:
        """A key over its per-minute budget gets 429 and Retry-After; other keys are unaffected."""
        from app.api.deps import get_session

        app = create_app(settings.model_copy(update={"rate_limit_per_minute": 3}))

        def _session() -> Iterator[Session]:
            yield db

        app.dependency_overrides[get_session] = _session
        tenant = make_tenant(db)
        limited, other = make_key(db, tenant), make_key(db, tenant, Scope.AGENT, name="other")
        with TestClient(app) as client:
            codes = [client.get("/v1/ping", headers=auth(limited)).status_code for _ in range(4)]
            assert codes == [200, 200, 200, 429]
            response = client.get("/v1/ping", headers=auth(limited))
            assert response.json()["error"]["code"] == "rate_limited"
            assert 1 <= int(response.headers["Retry-After"]) <= 61
            assert client.get("/v1/ping", headers=auth(other)).status_code == 200


def test_step_factory_is_valid() -> None:
    """The factories produce what the API accepts (guards the tests themselves)."""
    from app.api.schemas.trajectories import StepIn, TrajectoryIn

    StepIn.model_validate(make_step())
    TrajectoryIn.model_validate(make_trajectory())
