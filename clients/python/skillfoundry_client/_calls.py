"""Every /v1 endpoint as a `Call`: the request and how its answer is read. The clients run them."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import httpx

from skillfoundry_client import models as m
from skillfoundry_client._core import Call, body, path

M = TypeVar("M", bound=m.Model)
Version = int | str


def _one(cls: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: cls.from_dict(body(response))


def _page(cls: type[M]) -> Callable[[httpx.Response], m.Page[M]]:
    def parse(response: httpx.Response) -> m.Page[M]:
        data = body(response)
        return m.Page([cls.from_dict(item) for item in data["items"]], data.get("next_cursor"))

    return parse


# Keys


def ping() -> Call[m.Ping]:
    return Call("GET", path("ping"), _one(m.Ping))


def create_key(name: str, scopes: Sequence[str]) -> Call[m.CreatedKey]:
    return Call("POST", path("keys"), _one(m.CreatedKey), json={"name": name, "scopes": list(scopes)})


def list_keys(include_revoked: bool) -> Call[list[m.ApiKey]]:
    return Call(
        "GET",
        path("keys"),
        lambda r: [m.ApiKey.from_dict(k) for k in body(r)["items"]],
        params={"include_revoked": include_revoked},
    )


def revoke_key(key_id: str) -> Call[m.ApiKey]:
    return Call("DELETE", path("keys", key_id), _one(m.ApiKey))


# Trajectories and events


def create_trajectories(payload: Any, idempotency_key: str | None) -> Call[m.Accepted]:
    # A key of our own when none is given: a retry of this call is then replayed, not stored twice.
    key = idempotency_key or f"sfc-{uuid.uuid4()}"

    def parse(response: httpx.Response) -> m.Accepted:
        data = {**body(response), "replayed": response.headers.get("idempotent-replayed") == "true"}
        return m.Accepted.from_dict(data)

    headers = {"Idempotency-Key": key}
    return Call("POST", path("trajectories"), parse, json=payload, headers=headers, safe=True)


def list_trajectories(
    *,
    agent_id: str | None,
    session_id: str | None,
    domain: str | None,
    outcome: str | None,
    since: datetime | None,
    until: datetime | None,
    cursor: str | None,
    limit: int | None,
) -> Call[m.Page[m.TrajectorySummary]]:
    params = {
        "agent_id": agent_id, "session_id": session_id, "domain": domain, "outcome": outcome,
        "since": since, "until": until, "cursor": cursor, "limit": limit,
    }  # fmt: skip
    return Call("GET", path("trajectories"), _page(m.TrajectorySummary), params=params)


def get_trajectory(trajectory_id: str, include_embeddings: bool) -> Call[m.Trajectory]:
    return Call(
        "GET",
        path("trajectories", trajectory_id),
        _one(m.Trajectory),
        params={"include_embeddings": include_embeddings or None},
    )


def get_event(event_id: str) -> Call[m.Event]:
    return Call("GET", path("events", event_id), _one(m.Event))


# Experiences


def list_experiences(
    *,
    domain: str | None,
    polarity: str | None,
    cluster_id: str | None,
    status: str | None,
    q: str | None,
    cursor: str | None,
    limit: int | None,
) -> Call[m.Page[m.Experience]]:
    params = {
        "domain": domain, "polarity": polarity, "cluster_id": cluster_id, "status": status, "q": q,
        "cursor": cursor, "limit": limit,
    }  # fmt: skip
    return Call("GET", path("experiences"), _page(m.Experience), params=params)


def get_experience(experience_id: str) -> Call[m.ExperienceDetail]:
    return Call("GET", path("experiences", experience_id), _one(m.ExperienceDetail))


def update_experience(experience_id: str, status: str | None, text: str | None) -> Call[m.Experience]:
    patch = {k: v for k, v in {"status": status, "text": text}.items() if v is not None}
    return Call("PATCH", path("experiences", experience_id), _one(m.Experience), json=patch)


def delete_experience(experience_id: str) -> Call[None]:
    return Call("DELETE", path("experiences", experience_id), lambda _: None)


def experience_stats(experience_id: str) -> Call[m.ItemStats]:
    return Call("GET", path("experiences", experience_id, "stats"), _one(m.ItemStats))


# Skills


def list_skills(
    *,
    level: str | None,
    domain: str | None,
    status: str | None,
    tier: str | None,
    cursor: str | None,
    limit: int | None,
) -> Call[m.Page[m.Skill]]:
    params = {
        "level": level, "domain": domain, "status": status, "tier": tier, "cursor": cursor, "limit": limit,
    }  # fmt: skip
    return Call("GET", path("skills"), _page(m.Skill), params=params)


def get_skill(skill_id: str) -> Call[m.SkillDetail]:
    return Call("GET", path("skills", skill_id), _one(m.SkillDetail))


def list_versions(skill_id: str, before: int | None, limit: int | None) -> Call[m.VersionPage]:
    params = {"before": before, "limit": limit}
    return Call("GET", path("skills", skill_id, "versions"), _one(m.VersionPage), params=params)


def get_version(skill_id: str, version: Version) -> Call[m.VersionDetail]:
    return Call("GET", path("skills", skill_id, "versions", version), _one(m.VersionDetail))


def download_version(skill_id: str, version: Version) -> Call[bytes]:
    return Call("GET", path("skills", skill_id, "versions", version, "content"), lambda r: r.content)


def rollback_skill(
    skill_id: str, to_version: int, expected_head: int | None, reason: str
) -> Call[m.SkillDetail]:
    payload = {"to_version": to_version, "expected_head": expected_head, "reason": reason}
    return Call("POST", path("skills", skill_id, "rollback"), _one(m.SkillDetail), json=payload)


def skill_history(skill_id: str, cursor: str | None, limit: int | None) -> Call[m.Page[m.HistoryEvent]]:
    params = {"cursor": cursor, "limit": limit}
    return Call("GET", path("skills", skill_id, "history"), _page(m.HistoryEvent), params=params)


def skill_stats(skill_id: str) -> Call[m.ItemStats]:
    return Call("GET", path("skills", skill_id, "stats"), _one(m.ItemStats))


def evolve() -> Call[m.EvolveAccepted]:
    return Call("POST", path("evolve"), _one(m.EvolveAccepted))


# Governance (reviewers)


def import_skills(
    archive: bytes | None, files: Mapping[str, bytes | str] | None, provenance: str, domain: str | None
) -> Call[list[m.ImportedSkill]]:
    params = {"provenance": provenance, "domain": domain}

    def parse(response: httpx.Response) -> list[m.ImportedSkill]:
        return [m.ImportedSkill.from_dict(item) for item in body(response)["items"]]

    if archive is not None:
        headers = {"Content-Type": "application/zip"}
        return Call("POST", path("skills"), parse, params=params, content=archive, headers=headers)
    parts = [
        ("files", (name, data.encode() if isinstance(data, str) else data, "application/octet-stream"))
        for name, data in (files or {}).items()
    ]
    return Call("POST", path("skills"), parse, params=params, files=parts)


def review_queue(cursor: str | None, limit: int | None) -> Call[m.Page[m.QueueItem]]:
    params = {"cursor": cursor, "limit": limit}
    return Call("GET", path("review", "queue"), _page(m.QueueItem), params=params)


def review_action(
    skill_id: str, version: Version, action: str, payload: dict[str, Any], cls: type[M]
) -> Call[M]:
    return Call("POST", path("skills", skill_id, "versions", version, action), _one(cls), json=payload)


def withdraw_skill(skill_id: str, reason: str) -> Call[m.Skill]:
    return Call("POST", path("skills", skill_id, "withdraw"), _one(m.Skill), json={"reason": reason})


def get_scan(skill_id: str, version: Version) -> Call[m.Scan]:
    return Call("GET", path("skills", skill_id, "versions", version, "scan"), _one(m.Scan))


def list_audit(
    *,
    actor: str | None,
    action: str | None,
    target_type: str | None,
    target_id: str | None,
    since: datetime | None,
    until: datetime | None,
    before: int | None,
    limit: int | None,
) -> Call[m.AuditPage]:
    params = {
        "actor": actor, "action": action, "target_type": target_type, "target_id": target_id,
        "since": since, "until": until, "before": before, "limit": limit,
    }  # fmt: skip
    return Call("GET", path("audit"), _one(m.AuditPage), params=params)


# Retrieval


def retrieve(
    task: str,
    observation: str,
    *,
    step: int | None,
    session_id: str | None,
    recent_actions: Sequence[str],
    plan_step: str | None,
    domain: str | None,
    level: str | None,
    polarity: str | None,
    tags: Sequence[str],
    top_k: int | None,
    token_budget: int | None,
    include_body: bool,
    explain: bool,
) -> Call[m.Retrieval]:
    filters = {"domain": domain, "level": level, "polarity": polarity, "tags": list(tags) or None}
    payload = {
        "task": task, "observation": observation, "step": step, "session_id": session_id,
        "recent_actions": list(recent_actions) or None, "plan_step": plan_step,
        "filters": {k: v for k, v in filters.items() if v is not None} or None,
        "top_k": top_k, "token_budget": token_budget, "include_body": include_body or None,
        "explain": explain or None,
    }  # fmt: skip
    # Safe to repeat: a second answer is only one more logged retrieval that no step names.
    json = {k: v for k, v in payload.items() if v is not None}
    return Call("POST", path("retrieve"), _one(m.Retrieval), json=json, safe=True)


def feedback(
    retrieval_id: str, outcome: str, used_item_ids: Sequence[str], reason: str | None
) -> Call[m.Feedback]:
    payload = {
        "retrieval_id": retrieval_id,
        "outcome": outcome,
        "used_item_ids": list(used_item_ids),
        **({"reason": reason} if reason is not None else {}),
    }
    return Call("POST", path("feedback"), _one(m.Feedback), json=payload)


# Health (no key needed)


def health() -> Call[bool]:
    return Call("GET", "/healthz", lambda r: body(r).get("status") == "ok")


def ready() -> Call[m.Readiness]:
    return Call("GET", "/readyz", _one(m.Readiness), ok=frozenset({503}), safe=False)


def raw(method: str, url: str, params: dict[str, Any] | None, json: Any) -> Call[Any]:
    return Call(method.upper(), url, lambda r: body(r) if r.content else None, params=params, json=json)
