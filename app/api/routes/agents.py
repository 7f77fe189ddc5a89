"""Agents: erase everything an agent posted (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from app.api.deps import AdminKey, SessionDep
from app.api.schemas.agents import ErasedOut
from app.api.schemas.common import ERROR_RESPONSES
from app.ingestion import erasure
from app.limits import MAX_ID_CHARS

router = APIRouter(tags=["agents"], responses=ERROR_RESPONSES)


@router.delete("/agents/{agent_id}")
def erase_agent(
    agent_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS)],
    session: SessionDep,
    admin: AdminKey,
) -> ErasedOut:
    """Remove the agent's trajectories, steps and their embeddings; what was learnt stays as counts."""
    erased = erasure.erase_agent(session, admin.tenant_id, agent_id, actor=admin.actor)
    return ErasedOut(agent=erasure.hash_agent(agent_id), **vars(erased))
