"""Dependencies as one-word types; tests swap them with `app.dependency_overrides`."""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from anyio import CapacityLimiter, to_thread
from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.api.ratelimit import RateLimiter
from app.config import Settings
from app.embedding import Embedder, get_embedder
from app.errors import Forbidden, Unauthorized
from app.observability.context import bind_tenant
from app.storage.models import Scope
from app.storage.repositories import tenants
from app.storage.session import commit_and_close, roll_back_and_close


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One transaction per request, committed before the response is sent.

    The endpoint runs in the thread pool; the commit (or rollback) and close run on one thread of their
    own limiter. Were they to queue for the endpoints' pool, an overload could fill it with endpoints
    waiting for a database connection while the connections waited for a thread to be given back: a
    deadlock that only the pool's timeout broke (seen under `bench load` at 100 requests/s).
    """
    session: Session = request.app.state.sessionmaker()
    limiter: CapacityLimiter = request.app.state.session_limiter
    try:
        yield session
    except BaseException:
        await to_thread.run_sync(roll_back_and_close, session, limiter=limiter)
        raise
    # One thread hop, not two: the connection goes back to the pool as soon as the commit is done.
    await to_thread.run_sync(commit_and_close, session, limiter=limiter)


# scope="function": the commit runs when the endpoint returns, before the answer goes out.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


async def get_rate_limiter(request: Request) -> RateLimiter:
    """The app's rate limiter."""
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


# Dependencies that do no I/O are async so they skip the thread pool.
Limiter = Annotated[RateLimiter, Depends(get_rate_limiter)]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key, its tenant and scopes."""

    key_id: uuid.UUID
    key_name: str
    tenant_id: uuid.UUID
    scopes: frozenset[Scope]

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"key:{self.key_name}:{self.key_id}"

    def require(self, *scopes: Scope) -> None:
        """Refuse unless the key has one of `scopes` (admin has all)."""
        if Scope.ADMIN in self.scopes or self.scopes.intersection(scopes):
            return
        raise Forbidden(
            detail={"required_scope": sorted(s.value for s in scopes), "key_scopes": self.sorted_scopes}
        )

    @property
    def sorted_scopes(self) -> list[str]:
        """Scopes as sorted strings."""
        return sorted(s.value for s in self.scopes)


class KeyCache:
    """Checked API keys by SHA-256 for `ttl_s` seconds, so most requests skip the database; thread-safe.

    A key revoked through this process's API is forgotten at once (after the commit); another process
    (a second API worker, the CLI) keeps trusting a key it checked for at most `ttl_s` seconds more.
    Unknown keys are never cached, so a key created elsewhere works on its first request.
    """

    def __init__(self, ttl_s: float, max_size: int) -> None:
        self._ttl_s = ttl_s
        self._max_size = max_size
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> Principal | None:
        """The principal checked for this key hash within the TTL, if any."""
        with self._lock:
            entry = self._entries.get(key_hash)
            if entry is None:
                return None
            if time.monotonic() >= entry[0]:
                del self._entries[key_hash]
                return None
            self._entries.move_to_end(key_hash)
            return entry[1]

    def put(self, key_hash: str, principal: Principal) -> None:
        """Trust this key for the TTL; the least recently used entry goes when full."""
        if self._ttl_s <= 0 or self._max_size <= 0:
            return
        with self._lock:
            self._entries[key_hash] = (time.monotonic() + self._ttl_s, principal)
            self._entries.move_to_end(key_hash)
            while len(self._entries) > self._max_size:
                self._entries.popitem(last=False)

    def forget(self, key_hash: str) -> None:
        """Drop a key (revoked), so its next request is checked against the database."""
        with self._lock:
            self._entries.pop(key_hash, None)


async def get_key_cache(request: Request) -> KeyCache:
    """The app's cache of checked API keys."""
    cache: KeyCache = request.app.state.key_cache
    return cache


Keys = Annotated[KeyCache, Depends(get_key_cache)]


async def get_app_settings(request: Request) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


async def get_app_embedder() -> Embedder:
    """The process's embedder (the model loads once, on first use)."""
    return get_embedder()


EmbedderDep = Annotated[Embedder, Depends(get_app_embedder)]


def authenticate(request: Request, session: SessionDep, limiter: Limiter, keys: Keys) -> Principal:
    """Resolve `Authorization: Bearer sf_...` to a principal and count the request against its limit.

    A key checked within the cache's TTL needs no database read; `last_used_at` is then written when the
    cache next misses, so it lags by up to the TTL (it was only ever kept to the minute).
    """
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized()
    key_hash = tenants.hash_key(token.strip())
    cached = keys.get(key_hash)
    if cached is not None:
        bind_tenant(cached.tenant_id)
        limiter.check(str(cached.key_id))
        return cached
    key = tenants.key_by_plaintext(session, token.strip())
    if key is None:
        raise Unauthorized("This API key is unknown or revoked.")
    bind_tenant(key.tenant_id)
    limiter.check(str(key.id))
    tenants.touch_key(key)
    principal = Principal(
        key_id=key.id,
        key_name=key.name,
        tenant_id=key.tenant_id,
        scopes=frozenset(Scope(s) for s in key.scopes),
    )
    keys.put(key_hash, principal)
    return principal


async def any_key(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """Any valid key."""
    return principal


async def agent_key(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """A key that may post agent data."""
    principal.require(Scope.AGENT)
    return principal


async def reviewer_key(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """A key that may review: edit experiences, roll skills back (reviewer or admin)."""
    principal.require(Scope.REVIEWER)
    return principal


async def admin_key(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """An admin key."""
    principal.require(Scope.ADMIN)
    return principal


CurrentKey = Annotated[Principal, Depends(any_key)]
CurrentAgent = Annotated[Principal, Depends(agent_key)]
ReviewerKey = Annotated[Principal, Depends(reviewer_key)]
AdminKey = Annotated[Principal, Depends(admin_key)]
