"""`Client` and `AsyncClient`: one typed method per /v1 endpoint, retries, timeouts, pagination."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, TypeVar

import httpx

from skillfoundry_client import _calls
from skillfoundry_client import models as m
from skillfoundry_client._core import DEFAULT_TIMEOUT_S, DEFAULT_URL, Call, RetryPolicy, connection_error
from skillfoundry_client.errors import APITimeoutError

T = TypeVar("T")
log = logging.getLogger("skillfoundry_client")

__version__ = "0.1.0"

Scope = Literal["agent", "reviewer", "admin"]
Polarity = Literal["do", "avoid"]
Level = Literal["strategy", "functional", "atomic"]
FeedbackOutcome = Literal["success", "failure", "harmful"]
TrajectoryOutcome = Literal["success", "failure", "unknown"]
VersionRef = int | Literal["latest", "head"]
Provenance = Literal["imported", "authored"]


class _Base:
    """Configuration both clients share."""

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        *,
        max_retries: int | None,
        retry: RetryPolicy | None,
        headers: Mapping[str, str] | None,
    ) -> None:
        self.base_url = (base_url or os.environ.get("SKILLFOUNDRY_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("SKILLFOUNDRY_API_KEY")
        policy = retry or RetryPolicy()
        if max_retries is not None:
            policy = RetryPolicy(
                max_retries=max_retries,
                backoff_s=policy.backoff_s,
                max_backoff_s=policy.max_backoff_s,
                max_retry_after_s=policy.max_retry_after_s,
                statuses=policy.statuses,
            )
        self.retry = policy
        self._headers = {"User-Agent": f"skillfoundry-client/{__version__}", **(headers or {})}
        if self.api_key:
            self._headers["Authorization"] = f"Bearer {self.api_key}"

    def _request(
        self, http: httpx.Client | httpx.AsyncClient, call: Call[Any], request_id: str
    ) -> httpx.Request:
        return http.build_request(
            call.method,
            self.base_url + call.path,
            params=call.query(),
            json=call.json,
            content=call.content,
            files=call.files,
            headers={**self._headers, **call.headers, "X-Request-ID": request_id},
        )


def _timeout(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    if isinstance(timeout, httpx.Timeout):
        return timeout
    return httpx.Timeout(DEFAULT_TIMEOUT_S if timeout is None else timeout)


class Client(_Base):
    """A synchronous Skillfoundry client.

    `base_url` and `api_key` default to `SKILLFOUNDRY_URL` / `SKILLFOUNDRY_API_KEY`. Pass `transport`
    (any `httpx.BaseTransport`) or a ready `http_client` to route requests elsewhere, e.g. to an app
    under test; a client you pass in is not closed by `close()`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        http_client: httpx.Client | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(base_url, api_key, max_retries=max_retries, retry=retry, headers=headers)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(timeout=_timeout(timeout), transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (unless the http client was passed in)."""
        if self._owns_http:
            self._http.close()

    def run(self, call: Call[T]) -> T:
        """Send `call`, retrying as the policy says; its parsed answer or a SkillfoundryError."""
        request_id = uuid.uuid4().hex
        attempt = 0
        while True:
            request = self._request(self._http, call, request_id)
            try:
                response = self._http.send(request)
            except httpx.TransportError as exc:
                wait = self.retry.wait_after_error(call, attempt, exc)
                if wait is None:
                    raise connection_error(exc, request_id) from exc
                log.info("%s %s: %r; retry %d in %.2f s", call.method, call.path, exc, attempt + 1, wait)
            else:
                wait = self.retry.wait_for(call, attempt, response)
                if wait is None:
                    return call.result(response, request_id)
                response.close()
                log.info(
                    "%s %s answered %d; retry %d in %.2f s",
                    call.method, call.path, response.status_code, attempt + 1, wait,
                )  # fmt: skip
            time.sleep(wait)
            attempt += 1

    def request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None
    ) -> Any:
        """Any endpoint, for what this client has no method for yet: the answer's JSON (None if empty)."""
        return self.run(_calls.raw(method, path, params, json))

    # Keys

    def ping(self) -> m.Ping:
        """Who this key is: its tenant and scopes."""
        return self.run(_calls.ping())

    def create_key(self, name: str, scopes: Sequence[Scope] = ("agent",)) -> m.CreatedKey:
        """Create a key (admin); its plaintext is in `.key`, shown this once."""
        return self.run(_calls.create_key(name, scopes))

    def list_keys(self, *, include_revoked: bool = False) -> list[m.ApiKey]:
        """The tenant's keys, newest first (admin)."""
        return self.run(_calls.list_keys(include_revoked))

    def revoke_key(self, key_id: str) -> m.ApiKey:
        """Revoke a key (admin)."""
        return self.run(_calls.revoke_key(key_id))

    # Trajectories and events

    def create_trajectory(
        self,
        *,
        task: str,
        agent_id: str,
        steps: Sequence[m.StepIn],
        domain: str | None = None,
        session_id: str | None = None,
        outcome: m.OutcomeIn | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> m.Accepted:
        """Store one trajectory; retries are safe (an Idempotency-Key is made if you give none)."""
        payload = _trajectory(task, agent_id, steps, domain, session_id, outcome, metadata)
        return self.run(_calls.create_trajectories(payload, idempotency_key))

    def create_trajectories(
        self, trajectories: Sequence[m.TrajectoryIn], *, idempotency_key: str | None = None
    ) -> m.Accepted:
        """Store up to 500 trajectories in one request."""
        return self.run(_calls.create_trajectories(list(trajectories), idempotency_key))

    def list_trajectories(
        self,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        domain: str | None = None,
        outcome: TrajectoryOutcome | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> m.Page[m.TrajectorySummary]:
        """One page of trajectories, newest first."""
        return self.run(
            _calls.list_trajectories(
                agent_id=agent_id,
                session_id=session_id,
                domain=domain,
                outcome=outcome,
                since=since,
                until=until,
                cursor=cursor,
                limit=limit,
            )  # fmt: skip
        )

    def iter_trajectories(
        self,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        domain: str | None = None,
        outcome: TrajectoryOutcome | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int | None = None,
    ) -> Iterator[m.TrajectorySummary]:
        """Every matching trajectory, fetching pages as needed."""
        return _pages(
            lambda cursor: self.list_trajectories(
                agent_id=agent_id,
                session_id=session_id,
                domain=domain,
                outcome=outcome,
                since=since,
                until=until,
                cursor=cursor,
                limit=page_size,
            )  # fmt: skip
        )

    def get_trajectory(self, trajectory_id: str, *, include_embeddings: bool = False) -> m.Trajectory:
        """One trajectory with its steps."""
        return self.run(_calls.get_trajectory(trajectory_id, include_embeddings))

    def get_event(self, event_id: str) -> m.Event:
        """Where a background job stands."""
        return self.run(_calls.get_event(event_id))

    def wait_for_event(self, event_id: str, *, timeout: float = 60.0, interval: float = 0.5) -> m.Event:
        """Poll an event until it has SUCCEEDED or FAILED; APITimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.get_event(event_id)
            if event.done:
                return event
            if time.monotonic() >= deadline:
                raise APITimeoutError(None, "timeout", f"event {event_id} is still {event.status}")
            time.sleep(interval)

    # Experiences

    def list_experiences(
        self,
        *,
        domain: str | None = None,
        polarity: Polarity | None = None,
        cluster_id: str | None = None,
        status: str | None = None,
        q: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> m.Page[m.Experience]:
        """One page of experiences, newest first; `q` is a full-text query."""
        return self.run(
            _calls.list_experiences(
                domain=domain,
                polarity=polarity,
                cluster_id=cluster_id,
                status=status,
                q=q,
                cursor=cursor,
                limit=limit,
            )  # fmt: skip
        )

    def iter_experiences(
        self,
        *,
        domain: str | None = None,
        polarity: Polarity | None = None,
        cluster_id: str | None = None,
        status: str | None = None,
        q: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[m.Experience]:
        """Every matching experience, fetching pages as needed."""
        return _pages(
            lambda cursor: self.list_experiences(
                domain=domain,
                polarity=polarity,
                cluster_id=cluster_id,
                status=status,
                q=q,
                cursor=cursor,
                limit=page_size,
            )  # fmt: skip
        )

    def get_experience(self, experience_id: str) -> m.ExperienceDetail:
        """One experience with the steps behind it."""
        return self.run(_calls.get_experience(experience_id))

    def update_experience(
        self, experience_id: str, *, status: str | None = None, text: str | None = None
    ) -> m.Experience:
        """Retire, reactivate or reword an experience (reviewer)."""
        return self.run(_calls.update_experience(experience_id, status, text))

    def delete_experience(self, experience_id: str) -> None:
        """Delete an experience for good (admin)."""
        self.run(_calls.delete_experience(experience_id))

    def experience_stats(self, experience_id: str) -> m.ItemStats:
        """How retrieval listed and agents used an experience, and its uplift."""
        return self.run(_calls.experience_stats(experience_id))

    # Skills

    def list_skills(
        self,
        *,
        level: Level | None = None,
        domain: str | None = None,
        status: str | None = None,
        tier: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> m.Page[m.Skill]:
        """One page of skills, newest first."""
        return self.run(
            _calls.list_skills(
                level=level, domain=domain, status=status, tier=tier, cursor=cursor, limit=limit
            )
        )

    def iter_skills(
        self,
        *,
        level: Level | None = None,
        domain: str | None = None,
        status: str | None = None,
        tier: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[m.Skill]:
        """Every matching skill, fetching pages as needed."""
        return _pages(
            lambda cursor: self.list_skills(
                level=level, domain=domain, status=status, tier=tier, cursor=cursor, limit=page_size
            )
        )

    def get_skill(self, skill_id: str) -> m.SkillDetail:
        """One skill with its head version, parents and children."""
        return self.run(_calls.get_skill(skill_id))

    def list_versions(
        self, skill_id: str, *, before: int | None = None, limit: int | None = None
    ) -> m.VersionPage:
        """One page of a skill's versions, newest first."""
        return self.run(_calls.list_versions(skill_id, before, limit))

    def iter_versions(self, skill_id: str, *, page_size: int | None = None) -> Iterator[m.Version]:
        """Every version of a skill, newest first."""
        before: int | None = None
        while True:
            page = self.list_versions(skill_id, before=before, limit=page_size)
            yield from page.items
            if page.next_before is None:
                return
            before = page.next_before

    def get_version(self, skill_id: str, version: VersionRef = "head") -> m.VersionDetail:
        """One version (a number, `latest` or `head`): SKILL.md, files, diff, evidence."""
        return self.run(_calls.get_version(skill_id, version))

    def download_version(self, skill_id: str, version: VersionRef = "head") -> bytes:
        """One version's Agent Skills folder as zip bytes."""
        return self.run(_calls.download_version(skill_id, version))

    def rollback_skill(
        self, skill_id: str, to_version: int, *, expected_head: int | None = None, reason: str = ""
    ) -> m.SkillDetail:
        """Move the head back (reviewer); `version_conflict` (409) if the head is not `expected_head`."""
        return self.run(_calls.rollback_skill(skill_id, to_version, expected_head, reason))

    def skill_history(
        self, skill_id: str, *, cursor: str | None = None, limit: int | None = None
    ) -> m.Page[m.HistoryEvent]:
        """One page of what happened to a skill, newest first."""
        return self.run(_calls.skill_history(skill_id, cursor, limit))

    def iter_history(self, skill_id: str, *, page_size: int | None = None) -> Iterator[m.HistoryEvent]:
        """Everything that happened to a skill, newest first."""
        return _pages(lambda cursor: self.skill_history(skill_id, cursor=cursor, limit=page_size))

    def skill_stats(self, skill_id: str) -> m.ItemStats:
        """How retrieval listed and agents used a skill, and its uplift."""
        return self.run(_calls.skill_stats(skill_id))

    def evolve(self) -> m.EvolveAccepted:
        """Queue a skill evolution cycle now (admin); poll its event."""
        return self.run(_calls.evolve())

    # Governance (reviewers)

    def import_skills(
        self,
        archive: bytes | None = None,
        *,
        files: Mapping[str, bytes | str] | None = None,
        provenance: Provenance = "imported",
        domain: str | None = None,
    ) -> list[m.ImportedSkill]:
        """Import Agent Skills: a zip (`archive`) or one folder's files by path (`files`); reviewer."""
        return self.run(_calls.import_skills(*_package(archive, files), provenance, domain))

    def review_queue(self, *, cursor: str | None = None, limit: int | None = None) -> m.Page[m.QueueItem]:
        """One page of versions awaiting a reviewer, oldest first."""
        return self.run(_calls.review_queue(cursor, limit))

    def iter_review_queue(self, *, page_size: int | None = None) -> Iterator[m.QueueItem]:
        """Every version awaiting a reviewer."""
        return _pages(lambda cursor: self.review_queue(cursor=cursor, limit=page_size))

    def accept_version(
        self, skill_id: str, version: VersionRef, *, reason: str, publish: bool = True
    ) -> m.Decision:
        """Accept a proposal (T2) and by default publish it; wider tools wait for a second reviewer."""
        payload = {"reason": reason, "publish": publish}
        return self.run(_calls.review_action(skill_id, version, "accept", payload, m.Decision))

    def reject_version(self, skill_id: str, version: VersionRef, *, reason: str) -> m.Skill:
        """Reject a version; a rejected head gives way to the newest servable earlier one."""
        return self.run(_calls.review_action(skill_id, version, "reject", {"reason": reason}, m.Skill))

    def publish_version(self, skill_id: str, version: VersionRef, *, reason: str) -> m.Skill:
        """Make an accepted version the one agents get."""
        return self.run(_calls.review_action(skill_id, version, "publish", {"reason": reason}, m.Skill))

    def withdraw_skill(self, skill_id: str, *, reason: str) -> m.Skill:
        """Stop serving a skill to agents."""
        return self.run(_calls.withdraw_skill(skill_id, reason))

    def set_tier(self, skill_id: str, version: VersionRef, tier: str, *, reason: str) -> m.Decision:
        """Move a version's trust tier (`T0`..`T4`): down at once, up by another reviewer, T3/T4 by two."""
        payload = {"tier": tier, "reason": reason}
        return self.run(_calls.review_action(skill_id, version, "tier", payload, m.Decision))

    def get_scan(self, skill_id: str, version: VersionRef = "head") -> m.Scan:
        """A version's latest scan with every finding."""
        return self.run(_calls.get_scan(skill_id, version))

    def mark_false_positive(self, skill_id: str, version: VersionRef, rule: str, *, reason: str) -> m.Scan:
        """Waive one rule's findings for this exact content; the risk is scored again."""
        payload = {"rule": rule, "reason": reason}
        return self.run(_calls.review_action(skill_id, version, "false-positives", payload, m.Scan))

    def list_audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target_type: str | None = None,
        target_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before: int | None = None,
        limit: int | None = None,
    ) -> m.AuditPage:
        """One page of the audit log, newest first; `action` may be a prefix ending in `.`."""
        return self.run(
            _calls.list_audit(
                actor=actor,
                action=action,
                target_type=target_type,
                target_id=target_id,
                since=since,
                until=until,
                before=before,
                limit=limit,
            )  # fmt: skip
        )

    def iter_audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target_type: str | None = None,
        target_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int | None = None,
    ) -> Iterator[m.AuditEntry]:
        """Every matching audit entry, newest first."""
        before: int | None = None
        while True:
            page = self.list_audit(
                actor=actor, action=action, target_type=target_type, target_id=target_id, since=since,
                until=until, before=before, limit=page_size,
            )  # fmt: skip
            yield from page.items
            if page.next_before is None:
                return
            before = page.next_before

    # Retrieval

    def retrieve(
        self,
        task: str,
        observation: str,
        *,
        step: int | None = None,
        session_id: str | None = None,
        recent_actions: Sequence[str] = (),
        plan_step: str | None = None,
        domain: str | None = None,
        level: Level | None = None,
        polarity: Polarity | None = None,
        tags: Sequence[str] = (),
        top_k: int | None = None,
        token_budget: int | None = None,
        include_body: bool = False,
        explain: bool = False,
    ) -> m.Retrieval:
        """The skills and experiences that fit this step, best first (agent)."""
        return self.run(
            _calls.retrieve(
                task,
                observation,
                step=step,
                session_id=session_id,
                recent_actions=recent_actions,
                plan_step=plan_step,
                domain=domain,
                level=level,
                polarity=polarity,
                tags=tags,
                top_k=top_k,
                token_budget=token_budget,
                include_body=include_body,
                explain=explain,
            )  # fmt: skip
        )

    def feedback(
        self,
        retrieval_id: str,
        outcome: FeedbackOutcome,
        used_item_ids: Sequence[str] = (),
        *,
        reason: str | None = None,
    ) -> m.Feedback:
        """How a retrieval's answer worked out, and which of its items were used (once per retrieval)."""
        return self.run(_calls.feedback(retrieval_id, outcome, used_item_ids, reason))

    # Health

    def health(self) -> bool:
        """Whether the API process is up (`/healthz`)."""
        return self.run(_calls.health())

    def ready(self) -> m.Readiness:
        """Whether database, broker and a worker are up (`/readyz`); not ready is an answer, not an error."""
        return self.run(_calls.ready())


class AsyncClient(_Base):
    """The asynchronous twin of `Client`: the same methods, awaited; iterators are async."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(base_url, api_key, max_retries=max_retries, retry=retry, headers=headers)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=_timeout(timeout), transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (unless the http client was passed in)."""
        if self._owns_http:
            await self._http.aclose()

    async def run(self, call: Call[T]) -> T:
        """Send `call`, retrying as the policy says; its parsed answer or a SkillfoundryError."""
        request_id = uuid.uuid4().hex
        attempt = 0
        while True:
            request = self._request(self._http, call, request_id)
            try:
                response = await self._http.send(request)
            except httpx.TransportError as exc:
                wait = self.retry.wait_after_error(call, attempt, exc)
                if wait is None:
                    raise connection_error(exc, request_id) from exc
                log.info("%s %s: %r; retry %d in %.2f s", call.method, call.path, exc, attempt + 1, wait)
            else:
                wait = self.retry.wait_for(call, attempt, response)
                if wait is None:
                    return call.result(response, request_id)
                await response.aclose()
                log.info(
                    "%s %s answered %d; retry %d in %.2f s",
                    call.method, call.path, response.status_code, attempt + 1, wait,
                )  # fmt: skip
            await asyncio.sleep(wait)
            attempt += 1

    async def request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None
    ) -> Any:
        """Any endpoint: the answer's JSON (None if empty)."""
        return await self.run(_calls.raw(method, path, params, json))

    async def ping(self) -> m.Ping:
        """Who this key is."""
        return await self.run(_calls.ping())

    async def create_key(self, name: str, scopes: Sequence[Scope] = ("agent",)) -> m.CreatedKey:
        """Create a key (admin)."""
        return await self.run(_calls.create_key(name, scopes))

    async def list_keys(self, *, include_revoked: bool = False) -> list[m.ApiKey]:
        """The tenant's keys (admin)."""
        return await self.run(_calls.list_keys(include_revoked))

    async def revoke_key(self, key_id: str) -> m.ApiKey:
        """Revoke a key (admin)."""
        return await self.run(_calls.revoke_key(key_id))

    async def create_trajectory(
        self,
        *,
        task: str,
        agent_id: str,
        steps: Sequence[m.StepIn],
        domain: str | None = None,
        session_id: str | None = None,
        outcome: m.OutcomeIn | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> m.Accepted:
        """Store one trajectory (retries are safe)."""
        payload = _trajectory(task, agent_id, steps, domain, session_id, outcome, metadata)
        return await self.run(_calls.create_trajectories(payload, idempotency_key))

    async def create_trajectories(
        self, trajectories: Sequence[m.TrajectoryIn], *, idempotency_key: str | None = None
    ) -> m.Accepted:
        """Store up to 500 trajectories in one request."""
        return await self.run(_calls.create_trajectories(list(trajectories), idempotency_key))

    async def list_trajectories(
        self,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        domain: str | None = None,
        outcome: TrajectoryOutcome | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> m.Page[m.TrajectorySummary]:
        """One page of trajectories, newest first."""
        return await self.run(
            _calls.list_trajectories(
                agent_id=agent_id,
                session_id=session_id,
                domain=domain,
                outcome=outcome,
                since=since,
                until=until,
                cursor=cursor,
                limit=limit,
            )  # fmt: skip
        )

    def iter_trajectories(
        self,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        domain: str | None = None,
        outcome: TrajectoryOutcome | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[m.TrajectorySummary]:
        """Every matching trajectory."""
        return _apages(
            lambda cursor: self.list_trajectories(
                agent_id=agent_id,
                session_id=session_id,
                domain=domain,
                outcome=outcome,
                since=since,
                until=until,
                cursor=cursor,
                limit=page_size,
            )  # fmt: skip
        )

    async def get_trajectory(self, trajectory_id: str, *, include_embeddings: bool = False) -> m.Trajectory:
        """One trajectory with its steps."""
        return await self.run(_calls.get_trajectory(trajectory_id, include_embeddings))

    async def get_event(self, event_id: str) -> m.Event:
        """Where a background job stands."""
        return await self.run(_calls.get_event(event_id))

    async def wait_for_event(self, event_id: str, *, timeout: float = 60.0, interval: float = 0.5) -> m.Event:
        """Poll an event until it is done; APITimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            event = await self.get_event(event_id)
            if event.done:
                return event
            if time.monotonic() >= deadline:
                raise APITimeoutError(None, "timeout", f"event {event_id} is still {event.status}")
            await asyncio.sleep(interval)

    async def list_experiences(
        self,
        *,
        domain: str | None = None,
        polarity: Polarity | None = None,
        cluster_id: str | None = None,
        status: str | None = None,
        q: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> m.Page[m.Experience]:
        """One page of experiences, newest first."""
        return await self.run(
            _calls.list_experiences(
                domain=domain,
                polarity=polarity,
                cluster_id=cluster_id,
                status=status,
                q=q,
                cursor=cursor,
                limit=limit,
            )  # fmt: skip
        )

    def iter_experiences(
        self,
        *,
        domain: str | None = None,
        polarity: Polarity | None = None,
        cluster_id: str | None = None,
        status: str | None = None,
        q: str | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[m.Experience]:
        """Every matching experience."""
        return _apages(
            lambda cursor: self.list_experiences(
                domain=domain,
                polarity=polarity,
                cluster_id=cluster_id,
                status=status,
                q=q,
                cursor=cursor,
                limit=page_size,
            )  # fmt: skip
        )

    async def get_experience(self, experience_id: str) -> m.ExperienceDetail:
        """One experience with the steps behind it."""
        return await self.run(_calls.get_experience(experience_id))

    async def update_experience(
        self, experience_id: str, *, status: str | None = None, text: str | None = None
    ) -> m.Experience:
        """Retire, reactivate or reword an experience (reviewer)."""
        return await self.run(_calls.update_experience(experience_id, status, text))

    async def delete_experience(self, experience_id: str) -> None:
        """Delete an experience (admin)."""
        await self.run(_calls.delete_experience(experience_id))

    async def experience_stats(self, experience_id: str) -> m.ItemStats:
        """An experience's retrieval statistics."""
        return await self.run(_calls.experience_stats(experience_id))

    async def list_skills(
        self,
        *,
        level: Level | None = None,
        domain: str | None = None,
        status: str | None = None,
        tier: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> m.Page[m.Skill]:
        """One page of skills, newest first."""
        return await self.run(
            _calls.list_skills(
                level=level, domain=domain, status=status, tier=tier, cursor=cursor, limit=limit
            )
        )

    def iter_skills(
        self,
        *,
        level: Level | None = None,
        domain: str | None = None,
        status: str | None = None,
        tier: str | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[m.Skill]:
        """Every matching skill."""
        return _apages(
            lambda cursor: self.list_skills(
                level=level, domain=domain, status=status, tier=tier, cursor=cursor, limit=page_size
            )
        )

    async def get_skill(self, skill_id: str) -> m.SkillDetail:
        """One skill with its head version, parents and children."""
        return await self.run(_calls.get_skill(skill_id))

    async def list_versions(
        self, skill_id: str, *, before: int | None = None, limit: int | None = None
    ) -> m.VersionPage:
        """One page of a skill's versions."""
        return await self.run(_calls.list_versions(skill_id, before, limit))

    async def iter_versions(self, skill_id: str, *, page_size: int | None = None) -> AsyncIterator[m.Version]:
        """Every version of a skill, newest first."""
        before: int | None = None
        while True:
            page = await self.list_versions(skill_id, before=before, limit=page_size)
            for item in page.items:
                yield item
            if page.next_before is None:
                return
            before = page.next_before

    async def get_version(self, skill_id: str, version: VersionRef = "head") -> m.VersionDetail:
        """One version of a skill."""
        return await self.run(_calls.get_version(skill_id, version))

    async def download_version(self, skill_id: str, version: VersionRef = "head") -> bytes:
        """One version as zip bytes."""
        return await self.run(_calls.download_version(skill_id, version))

    async def rollback_skill(
        self, skill_id: str, to_version: int, *, expected_head: int | None = None, reason: str = ""
    ) -> m.SkillDetail:
        """Move the head back (reviewer)."""
        return await self.run(_calls.rollback_skill(skill_id, to_version, expected_head, reason))

    async def skill_history(
        self, skill_id: str, *, cursor: str | None = None, limit: int | None = None
    ) -> m.Page[m.HistoryEvent]:
        """One page of a skill's history."""
        return await self.run(_calls.skill_history(skill_id, cursor, limit))

    def iter_history(self, skill_id: str, *, page_size: int | None = None) -> AsyncIterator[m.HistoryEvent]:
        """A skill's whole history."""
        return _apages(lambda cursor: self.skill_history(skill_id, cursor=cursor, limit=page_size))

    async def skill_stats(self, skill_id: str) -> m.ItemStats:
        """A skill's retrieval statistics."""
        return await self.run(_calls.skill_stats(skill_id))

    async def evolve(self) -> m.EvolveAccepted:
        """Queue a skill evolution cycle (admin)."""
        return await self.run(_calls.evolve())

    async def import_skills(
        self,
        archive: bytes | None = None,
        *,
        files: Mapping[str, bytes | str] | None = None,
        provenance: Provenance = "imported",
        domain: str | None = None,
    ) -> list[m.ImportedSkill]:
        """Import Agent Skills (reviewer)."""
        return await self.run(_calls.import_skills(*_package(archive, files), provenance, domain))

    async def review_queue(
        self, *, cursor: str | None = None, limit: int | None = None
    ) -> m.Page[m.QueueItem]:
        """One page of versions awaiting a reviewer."""
        return await self.run(_calls.review_queue(cursor, limit))

    def iter_review_queue(self, *, page_size: int | None = None) -> AsyncIterator[m.QueueItem]:
        """Every version awaiting a reviewer."""
        return _apages(lambda cursor: self.review_queue(cursor=cursor, limit=page_size))

    async def accept_version(
        self, skill_id: str, version: VersionRef, *, reason: str, publish: bool = True
    ) -> m.Decision:
        """Accept a proposal (T2)."""
        payload = {"reason": reason, "publish": publish}
        return await self.run(_calls.review_action(skill_id, version, "accept", payload, m.Decision))

    async def reject_version(self, skill_id: str, version: VersionRef, *, reason: str) -> m.Skill:
        """Reject a version."""
        return await self.run(_calls.review_action(skill_id, version, "reject", {"reason": reason}, m.Skill))

    async def publish_version(self, skill_id: str, version: VersionRef, *, reason: str) -> m.Skill:
        """Make an accepted version the one agents get."""
        return await self.run(_calls.review_action(skill_id, version, "publish", {"reason": reason}, m.Skill))

    async def withdraw_skill(self, skill_id: str, *, reason: str) -> m.Skill:
        """Stop serving a skill to agents."""
        return await self.run(_calls.withdraw_skill(skill_id, reason))

    async def set_tier(self, skill_id: str, version: VersionRef, tier: str, *, reason: str) -> m.Decision:
        """Move a version's trust tier."""
        payload = {"tier": tier, "reason": reason}
        return await self.run(_calls.review_action(skill_id, version, "tier", payload, m.Decision))

    async def get_scan(self, skill_id: str, version: VersionRef = "head") -> m.Scan:
        """A version's latest scan."""
        return await self.run(_calls.get_scan(skill_id, version))

    async def mark_false_positive(
        self, skill_id: str, version: VersionRef, rule: str, *, reason: str
    ) -> m.Scan:
        """Waive one rule's findings for this exact content."""
        payload = {"rule": rule, "reason": reason}
        return await self.run(_calls.review_action(skill_id, version, "false-positives", payload, m.Scan))

    async def list_audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target_type: str | None = None,
        target_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before: int | None = None,
        limit: int | None = None,
    ) -> m.AuditPage:
        """One page of the audit log, newest first."""
        return await self.run(
            _calls.list_audit(
                actor=actor,
                action=action,
                target_type=target_type,
                target_id=target_id,
                since=since,
                until=until,
                before=before,
                limit=limit,
            )  # fmt: skip
        )

    async def iter_audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target_type: str | None = None,
        target_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[m.AuditEntry]:
        """Every matching audit entry, newest first."""
        before: int | None = None
        while True:
            page = await self.list_audit(
                actor=actor, action=action, target_type=target_type, target_id=target_id, since=since,
                until=until, before=before, limit=page_size,
            )  # fmt: skip
            for item in page.items:
                yield item
            if page.next_before is None:
                return
            before = page.next_before

    async def retrieve(
        self,
        task: str,
        observation: str,
        *,
        step: int | None = None,
        session_id: str | None = None,
        recent_actions: Sequence[str] = (),
        plan_step: str | None = None,
        domain: str | None = None,
        level: Level | None = None,
        polarity: Polarity | None = None,
        tags: Sequence[str] = (),
        top_k: int | None = None,
        token_budget: int | None = None,
        include_body: bool = False,
        explain: bool = False,
    ) -> m.Retrieval:
        """The skills and experiences that fit this step (agent)."""
        return await self.run(
            _calls.retrieve(
                task,
                observation,
                step=step,
                session_id=session_id,
                recent_actions=recent_actions,
                plan_step=plan_step,
                domain=domain,
                level=level,
                polarity=polarity,
                tags=tags,
                top_k=top_k,
                token_budget=token_budget,
                include_body=include_body,
                explain=explain,
            )  # fmt: skip
        )

    async def feedback(
        self,
        retrieval_id: str,
        outcome: FeedbackOutcome,
        used_item_ids: Sequence[str] = (),
        *,
        reason: str | None = None,
    ) -> m.Feedback:
        """How a retrieval's answer worked out (once per retrieval)."""
        return await self.run(_calls.feedback(retrieval_id, outcome, used_item_ids, reason))

    async def health(self) -> bool:
        """Whether the API process is up."""
        return await self.run(_calls.health())

    async def ready(self) -> m.Readiness:
        """Whether database, broker and a worker are up."""
        return await self.run(_calls.ready())


def _trajectory(
    task: str,
    agent_id: str,
    steps: Sequence[m.StepIn],
    domain: str | None,
    session_id: str | None,
    outcome: m.OutcomeIn | None,
    metadata: Mapping[str, str] | None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {"task": task, "agent_id": agent_id, "steps": list(steps)}
    optional = {"domain": domain, "session_id": session_id, "outcome": outcome, "metadata": metadata}
    payload.update({k: dict(v) if isinstance(v, Mapping) else v for k, v in optional.items() if v})
    return payload


def _package(
    archive: bytes | None, files: Mapping[str, bytes | str] | None
) -> tuple[bytes | None, Mapping[str, bytes | str] | None]:
    if (archive is None) == (files is None):
        raise ValueError("give either a zip `archive` or the folder's `files`")
    return archive, files


def _pages(fetch: Callable[[str | None], m.Page[T]]) -> Iterator[T]:
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        yield from page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


async def _apages(fetch: Callable[[str | None], Awaitable[m.Page[T]]]) -> AsyncIterator[T]:
    cursor: str | None = None
    while True:
        page = await fetch(cursor)
        for item in page.items:
            yield item
        if page.next_cursor is None:
            return
        cursor = page.next_cursor
