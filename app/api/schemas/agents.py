"""What an erasure removed."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErasedOut(BaseModel):
    agent: str = Field(description="The agent id's hash, as the audit log records the erasure.")
    trajectories: int
    steps: int = Field(description="Steps removed with their observations, actions and embeddings.")
    experience_evidence: int = Field(description="Links from experiences; their counts stay, anonymous.")
    skill_evidence: int = Field(description="Links from skill versions; their evidence counts stay.")
    situation_embeddings: int = Field(description="Cached embeddings no other stored step shares.")
