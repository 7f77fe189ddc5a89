"""Dependencies as one-word types; tests swap them with `app.dependency_overrides`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.api.ratelimit import RateLimiter
from app.errors import Forbidden, Unauthorized
from app.storage.models import Scope
from app.storage.repositories import tenants


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request, committed before the response is sent."""
    session: Session = request.app.state.sessionmaker()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


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


def authenticate(request: Request, session: SessionDep, limiter: Limiter) -> Principal:
    """Resolve `Authorization: Bearer sf_...` to a principal and count the request against its limit."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized()
    key = tenants.key_by_plaintext(session, token.strip())
    if key is None:
        raise Unauthorized("This API key is unknown or revoked.")
    limiter.check(str(key.id))
    tenants.touch_key(key)
    return Principal(
        key_id=key.id,
        key_name=key.name,
        tenant_id=key.tenant_id,
        scopes=frozenset(Scope(s) for s in key.scopes),
    )


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
