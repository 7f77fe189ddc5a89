"""Experiences as reviewers read and edit them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from app.api.schemas.common import Input
from app.storage.models import ExperienceStatus, Polarity

MAX_EXPERIENCE_WORDS = 64
MAX_EXPERIENCE_CHARS = 1000


class ActionOut(BaseModel):
    template: str = Field(description="The action with its variable parts replaced by slots.")
    example: str = Field(description="One concrete action this experience was learnt from.")
    slots: list[dict[str, Any]]


class SupportOut(BaseModel):
    successes: int
    failures: int
    distinct_agents: int


class UtilityOut(BaseModel):
    alpha: float
    beta: float
    mean: float = Field(description="alpha / (alpha + beta): the expected chance this lesson helps.")


class ExperienceOut(BaseModel):
    id: uuid.UUID
    text: str
    polarity: Polarity
    status: ExperienceStatus
    domain: str | None
    cluster_id: uuid.UUID | None
    action: ActionOut
    situation: str
    task: str
    reason: str
    support: SupportOut
    utility: UtilityOut
    text_source: str = Field(description="Who wrote `text`: heuristic, llm or reviewer.")
    llm_model: str | None
    created_at: datetime
    updated_at: datetime


class EvidenceOut(BaseModel):
    trajectory_id: uuid.UUID
    step_id: uuid.UUID
    agent_id: str
    success: bool | None
    created_at: datetime


class ExperienceDetail(ExperienceOut):
    provenance: list[EvidenceOut] = Field(description="The steps supporting this experience, newest first.")


class ExperiencePage(BaseModel):
    items: list[ExperienceOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class ExperiencePatch(Input):
    model_config = ConfigDict(extra="forbid")

    status: ExperienceStatus | None = None
    text: Annotated[str, Field(min_length=1, max_length=MAX_EXPERIENCE_CHARS)] | None = Field(
        default=None, description=f"1 to {MAX_EXPERIENCE_WORDS} words."
    )

    @field_validator("text")
    @classmethod
    def _word_count(cls, value: str | None) -> str | None:
        if value is None:
            return None
        words = len(value.split())
        if not 1 <= words <= MAX_EXPERIENCE_WORDS:
            raise PydanticCustomError(
                "word_count",
                "text has {words} words; it must have 1 to {limit}",
                {"words": words, "limit": MAX_EXPERIENCE_WORDS},
            )
        return value.strip()

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.status is None and self.text is None:
            raise PydanticCustomError("empty_patch", "give at least one of `status` and `text`")
        return self
