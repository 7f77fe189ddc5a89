"""`/v1/retrieve` and `/v1/feedback` on the wire."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from app.api.schemas.common import Count, Flag, Input
from app.api.schemas.experiences import ActionOut
from app.limits import MAX_FIELD_CHARS, MAX_ID_CHARS, MAX_TAG_CHARS, MAX_USED_ITEMS
from app.storage.models import ItemKind, Outcome, Polarity, SkillLevel
from app.storage.repositories.retrievals import ItemStats

MAX_TOP_K = 50
MIN_TOKEN_BUDGET = 50
MAX_TOKEN_BUDGET = 8000
MAX_RECENT_ACTIONS = 20
MAX_TAGS = 20
MAX_STEP = 2**31 - 1  # retrieval.step is a PostgreSQL integer
MAX_REASON_CHARS = 1000

Text = Annotated[str, Field(max_length=MAX_FIELD_CHARS)]
Tag = Annotated[str, Field(min_length=1, max_length=MAX_TAG_CHARS)]


class RetrieveFilters(Input):
    model_config = ConfigDict(extra="forbid")

    domain: Tag | None = Field(default=None, description="Only skills and experiences of this domain.")
    level: SkillLevel | None = Field(
        default=None, description="Only skills of this level (experiences stay)."
    )
    polarity: Polarity | None = Field(
        default=None, description="Only experiences of this polarity (skills stay)."
    )
    tags: list[Tag] = Field(
        default_factory=list,
        max_length=MAX_TAGS,
        description="Words for what you look for; they join the full-text query. There is no tag column "
        "yet, so they rank, they do not filter.",
    )


class RetrieveIn(Input):
    model_config = ConfigDict(extra="forbid")

    task: Annotated[str, Field(min_length=1, max_length=MAX_FIELD_CHARS)]
    observation: Annotated[str, Field(min_length=1, max_length=MAX_FIELD_CHARS)] = Field(
        description="What the agent sees now; normalised into a situation key, as the evolver does."
    )
    step: Count | None = Field(
        default=None, ge=0, le=MAX_STEP, description="0 starts a session: pins a strategy."
    )
    recent_actions: list[Text] = Field(default_factory=list, max_length=MAX_RECENT_ACTIONS)
    session_id: Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)] | None = Field(
        default=None, description="Keeps the strategy pinned at step 0 for the later steps of one run."
    )
    plan_step: Text | None = Field(default=None, description="The step of the plan the agent is on.")
    filters: RetrieveFilters = Field(default_factory=RetrieveFilters)
    top_k: Count = Field(default=8, ge=1, le=MAX_TOP_K)
    token_budget: Count = Field(
        default=500, ge=MIN_TOKEN_BUDGET, le=MAX_TOKEN_BUDGET, description="Estimated tokens of all items."
    )
    include_body: Flag = Field(
        default=False, description="Add skill SKILL.md bodies where the budget holds them."
    )
    explain: Flag = Field(default=False, description="Add each item's score breakdown.")


class RetrievedItem(BaseModel):
    kind: ItemKind
    id: uuid.UUID
    version: int | None = Field(default=None, description="Skills: the head version listed.")
    score: float
    tokens: int = Field(description="Estimated tokens of this item's payload.")
    # experiences
    text: str | None = None
    polarity: Polarity | None = None
    action: ActionOut | None = None
    # skills
    name: str | None = None
    description: str | None = None
    level: SkillLevel | None = None
    pinned: bool | None = Field(default=None, description="Skills: the session's strategy.")
    trust_tier: str | None = Field(
        default=None, description="Skills: `T1` (name and description only), `T2` (body, no tools), `T3`+."
    )
    note: str | None = Field(default=None, description="Skills: what the tier allows, for the agent.")
    allowed_tools: list[str] | None = Field(
        default=None, description="Skills at T3 and up: the tools granted (its `allowed-tools`)."
    )
    body_url: str | None = Field(default=None, description="Skills: GET it for the full version.")
    body: str | None = Field(default=None, description="Skills: the SKILL.md, when included.")
    explain: dict[str, float] | None = Field(default=None, description="With `explain`: the score breakdown.")


class RetrieveOut(BaseModel):
    """The answer; fields that do not apply (or are null) are left out to save the agent's tokens."""

    retrieval_id: uuid.UUID = Field(
        description="Send it back with `/v1/feedback` or on the trajectory's steps."
    )
    items: list[RetrievedItem]
    strategy_id: uuid.UUID | None = Field(default=None, description="The session's pinned strategy skill.")
    tokens: int = Field(description="Estimated tokens of all items.")


class FeedbackIn(Input):
    model_config = ConfigDict(extra="forbid")

    retrieval_id: uuid.UUID
    used_item_ids: list[uuid.UUID] = Field(
        default_factory=list, max_length=MAX_USED_ITEMS, description="Items of that answer the agent used."
    )
    outcome: Outcome = Field(
        description="success: alpha + 1; failure: beta + 1; harmful: beta + 2 (used items)."
    )
    reason: Annotated[str, Field(max_length=MAX_REASON_CHARS)] | None = None


class FeedbackOut(BaseModel):
    retrieval_id: uuid.UUID
    outcome: Outcome
    used_item_ids: list[uuid.UUID]


class PosteriorOut(BaseModel):
    alpha: float
    beta: float
    mean: float


class UpliftOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    with_: float | None = Field(
        alias="with", description="Success rate of retrievals that listed the item and got an outcome."
    )
    without: float | None = Field(
        description="Success rate of retrievals that withheld it and got an outcome."
    )
    uplift: float | None = Field(description="with - without; null while either side has no outcome.")
    n_with: int
    n_without: int


class ItemStatsOut(BaseModel):
    uses: int = Field(description="Retrievals whose feedback says the item was used.")
    successes: int
    failures: int
    harmful: int
    listed: int = Field(description="Answers that listed it (not withheld).")
    posterior: PosteriorOut
    uplift: UpliftOut


def item_stats_out(stats: ItemStats, *, alpha: float, beta: float) -> ItemStatsOut:
    """The wire form of an item's retrieval statistics and its current posterior."""
    rate_with = stats.successes_with / stats.n_with if stats.n_with else None
    rate_without = stats.successes_without / stats.n_without if stats.n_without else None
    total = alpha + beta
    return ItemStatsOut(
        uses=stats.uses,
        successes=stats.successes,
        failures=stats.failures,
        harmful=stats.harmful,
        listed=stats.listed,
        posterior=PosteriorOut(alpha=alpha, beta=beta, mean=alpha / total if total > 0 else 0.5),
        uplift=UpliftOut(
            with_=rate_with,
            without=rate_without,
            uplift=rate_with - rate_without if rate_with is not None and rate_without is not None else None,
            n_with=stats.n_with,
            n_without=stats.n_without,
        ),
    )
