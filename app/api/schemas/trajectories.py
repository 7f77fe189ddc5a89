"""Trajectories as agents post them and read them back."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator
from pydantic_core import PydanticCustomError

from app.api.schemas.common import Flag, Input, Number
from app.limits import (
    MAX_BATCH_TRAJECTORIES,
    MAX_FIELD_CHARS,
    MAX_ID_CHARS,
    MAX_METADATA_KEYS,
    MAX_STEPS_PER_TRAJECTORY,
    MAX_TAG_CHARS,
    MAX_USED_ITEMS,
)

Text = Annotated[str, Field(max_length=MAX_FIELD_CHARS)]
Ident = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)]


def _json_within_limit(value: Any) -> Any:
    if value is not None and not isinstance(value, str):
        try:
            size = len(json.dumps(value, ensure_ascii=False, allow_nan=False))
        except ValueError as error:  # NaN or Infinity: Python's JSON reader takes them, JSONB does not
            raise PydanticCustomError(
                "non_finite_number", "JSON numbers must be finite; NaN and Infinity are not JSON"
            ) from error
        if size > MAX_FIELD_CHARS:
            raise PydanticCustomError(
                "field_too_long",
                "serialised JSON is {size} characters; the limit is {limit}",
                {"size": size, "limit": MAX_FIELD_CHARS},
            )
    elif isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
        raise PydanticCustomError(
            "field_too_long",
            "text is {size} characters; the limit is {limit}",
            {"size": len(value), "limit": MAX_FIELD_CHARS},
        )
    return value


class StepIn(Input):
    model_config = ConfigDict(extra="forbid")

    observation: Text = Field(description="What the agent saw before acting.")
    action: Text = Field(description="What the agent did.")
    tool: Ident | None = None
    tool_input: Any = Field(default=None, description="Any JSON value.")
    tool_output: Any = Field(default=None, description="Any JSON value (often text).")
    error: Text | None = None
    reward: Number | None = Field(default=None, allow_inf_nan=False)
    retrieval_id: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="The `retrieval_id` of the /v1/retrieve answer this step acted on."
    )
    used_item_ids: list[Annotated[str, Field(max_length=128)]] = Field(
        default_factory=list,
        max_length=MAX_USED_ITEMS,
        description="Ids of retrieved skills or experiences the agent actually used in this step.",
    )

    _limit_json = field_validator("tool_input", "tool_output")(_json_within_limit)


class OutcomeIn(Input):
    model_config = ConfigDict(extra="forbid")

    success: Flag | None = None
    score: Number | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)


class TrajectoryIn(Input):
    model_config = ConfigDict(extra="forbid")

    task: Annotated[str, Field(min_length=1, max_length=MAX_FIELD_CHARS)]
    domain: Annotated[str, Field(min_length=1, max_length=MAX_TAG_CHARS)] | None = None
    agent_id: Ident
    session_id: Ident | None = None
    steps: list[StepIn] = Field(max_length=MAX_STEPS_PER_TRAJECTORY)
    outcome: OutcomeIn = Field(default_factory=OutcomeIn)
    metadata: dict[Annotated[str, Field(max_length=MAX_ID_CHARS)], Text] = Field(
        default_factory=dict, max_length=MAX_METADATA_KEYS
    )


def _one_or_many(value: Any) -> str:
    return "many" if isinstance(value, list) else "one"


TrajectoryBatch = Annotated[
    Annotated[TrajectoryIn, Tag("one")]
    | Annotated[list[TrajectoryIn], Tag("many"), Field(min_length=1, max_length=MAX_BATCH_TRAJECTORIES)],
    Discriminator(_one_or_many),
]


class TrajectoriesAccepted(BaseModel):
    ids: list[uuid.UUID]
    event_id: uuid.UUID
    status: Literal["queued"] = "queued"


class StepOut(BaseModel):
    idx: int
    observation: str
    action: str
    tool: str | None
    tool_input: Any
    tool_output: Any
    error: str | None
    reward: float | None
    retrieval_id: str | None
    used_item_ids: list[str]
    embedding_model: str | None
    embedding: list[float] | None = Field(default=None, description="Only with `include_embeddings=true`.")


class OutcomeOut(BaseModel):
    success: bool | None
    score: float | None


class TrajectorySummary(BaseModel):
    id: uuid.UUID
    task: str
    domain: str | None
    agent_id: str
    session_id: str | None
    outcome: OutcomeOut
    metadata: dict[str, str]
    step_count: int
    event_id: uuid.UUID | None
    created_at: datetime


class TrajectoryOut(TrajectorySummary):
    steps: list[StepOut]


class TrajectoryPage(BaseModel):
    items: list[TrajectorySummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")
