"""What the API answers, as frozen dataclasses; fields the client does not know yet land in `extra`.

Ids are strings (as on the wire), times are timezone-aware datetimes. What you send is plain dicts,
typed by the `*In` TypedDicts at the end.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, NotRequired, Required, Self, TypedDict, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Model:
    """Base of every result: `from_dict` decodes the JSON, keeping unknown fields in `extra`."""

    extra: dict[str, Any] = field(default_factory=dict, kw_only=True, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Decode one JSON object (fields the server left out take their defaults)."""
        kwargs: dict[str, Any] = {}
        known: set[str] = set()
        for f, hint in _fields(cls):
            wire = f.metadata.get("wire", f.name)
            known.add(wire)
            if wire in data:
                kwargs[f.name] = _convert(hint, data[wire])
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"{cls.__name__}: the answer has no field {wire!r}")
        return cls(**kwargs, extra={k: v for k, v in data.items() if k not in known})


_FIELDS: dict[type, tuple[tuple[dataclasses.Field[Any], Any], ...]] = {}


def _fields(cls: type[Model]) -> tuple[tuple[dataclasses.Field[Any], Any], ...]:
    """A model's fields with their resolved types (resolved once per class)."""
    if cls not in _FIELDS:
        hints = typing.get_type_hints(cls)
        _FIELDS[cls] = tuple((f, hints[f.name]) for f in dataclasses.fields(cls) if f.name != "extra")
    return _FIELDS[cls]


def _convert(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _convert(options[0], value) if len(options) == 1 else value
    if origin is list:
        (item,) = typing.get_args(hint)
        return [_convert(item, v) for v in value]
    if origin is dict:
        _, item = typing.get_args(hint)
        return {k: _convert(item, v) for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, Model):
        return hint.from_dict(value)
    if hint is datetime:
        return datetime.fromisoformat(value)
    if hint is float and isinstance(value, int):
        return float(value)
    return value


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a cursor-paginated list; pass `next_cursor` back as `cursor` (None: the last page)."""

    items: list[T]
    next_cursor: str | None


# Keys


@dataclass(frozen=True)
class Ping(Model):
    tenant_id: str
    key_id: str
    key_name: str
    scopes: list[str]


@dataclass(frozen=True)
class ApiKey(Model):
    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class CreatedKey(ApiKey):
    key: str


# Trajectories and events


@dataclass(frozen=True)
class Accepted(Model):
    """Trajectories stored and queued: their ids and the event to poll; `replayed` for an idempotent retry."""

    ids: list[str]
    event_id: str
    status: str = "queued"
    replayed: bool = False


@dataclass(frozen=True)
class Outcome(Model):
    success: bool | None
    score: float | None


@dataclass(frozen=True)
class Step(Model):
    idx: int
    observation: str
    action: str
    tool: str | None = None
    tool_input: Any = None
    tool_output: Any = None
    error: str | None = None
    reward: float | None = None
    retrieval_id: str | None = None
    used_item_ids: list[str] = field(default_factory=list)
    embedding_model: str | None = None
    embedding: list[float] | None = None


@dataclass(frozen=True)
class TrajectorySummary(Model):
    id: str
    task: str
    domain: str | None
    agent_id: str
    session_id: str | None
    outcome: Outcome
    metadata: dict[str, str]
    step_count: int
    event_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class Trajectory(TrajectorySummary):
    steps: list[Step]


@dataclass(frozen=True)
class Event(Model):
    """A background job: PENDING, RUNNING, SUCCEEDED or FAILED."""

    id: str
    kind: str
    status: str
    attempts: int
    error: str | None
    result: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def done(self) -> bool:
        """Whether the job has finished, well or not."""
        return self.status in ("SUCCEEDED", "FAILED")


# Experiences


@dataclass(frozen=True)
class Action(Model):
    template: str
    example: str
    slots: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Support(Model):
    successes: int
    failures: int
    distinct_agents: int


@dataclass(frozen=True)
class Utility(Model):
    """The Beta(alpha, beta) posterior of an item helping; `mean` is alpha / (alpha + beta)."""

    alpha: float
    beta: float
    mean: float


@dataclass(frozen=True)
class Experience(Model):
    id: str
    text: str
    polarity: str
    status: str
    domain: str | None
    cluster_id: str | None
    action: Action
    situation: str
    task: str
    reason: str
    support: Support
    utility: Utility
    text_source: str
    llm_model: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Provenance(Model):
    trajectory_id: str
    step_id: str
    agent_id: str
    success: bool | None
    created_at: datetime


@dataclass(frozen=True)
class ExperienceDetail(Experience):
    provenance: list[Provenance]


@dataclass(frozen=True)
class Uplift(Model):
    # "with" on the wire, a Python keyword here.
    with_: float | None = field(metadata={"wire": "with"})
    without: float | None
    uplift: float | None
    n_with: int
    n_without: int


@dataclass(frozen=True)
class ItemStats(Model):
    """How retrieval listed, withheld and used a skill or experience, and how that went."""

    uses: int
    successes: int
    failures: int
    harmful: int
    listed: int
    posterior: Utility
    uplift: Uplift


# Skills


@dataclass(frozen=True)
class EvidenceCounts(Model):
    runs: int
    successes: int
    failures: int


@dataclass(frozen=True)
class SkillRef(Model):
    id: str
    name: str
    level: str


@dataclass(frozen=True)
class Skill(Model):
    id: str
    name: str
    description: str
    domain: str | None
    level: str
    status: str
    trust_tier: str
    head_version: int
    latest_version: int
    utility: Utility
    created_at: datetime
    updated_at: datetime
    # Governance: the head version's risk, and where the skill came from (distilled, imported, authored).
    risk_level: str | None = field(default=None, kw_only=True)
    provenance: str | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class Head(Model):
    version: int
    sha256: str
    distiller: str
    evidence: EvidenceCounts
    created_at: datetime


@dataclass(frozen=True)
class SkillDetail(Skill):
    head: Head
    parents: list[SkillRef]
    children: list[SkillRef]


@dataclass(frozen=True)
class ScanSummary(Model):
    ruleset: str
    malicious: bool
    score: float
    findings: int


@dataclass(frozen=True)
class Version(Model):
    version: int
    parent_version: int | None
    sha256: str
    change: str
    changed_share: float
    rewrite_reason: str | None
    distiller: str
    llm_model: str | None
    prompt_hash: str | None
    actor: str
    evidence: EvidenceCounts
    is_head: bool
    created_at: datetime
    # Governance: `T0`..`T4`, the scanner's verdict, and the review (`pending`, `accepted`, `rejected`).
    trust_tier: str | None = field(default=None, kw_only=True)
    risk_level: str | None = field(default=None, kw_only=True)
    review: str | None = field(default=None, kw_only=True)
    reviewed_by: str | None = field(default=None, kw_only=True)
    reviewed_at: datetime | None = field(default=None, kw_only=True)
    review_reason: str | None = field(default=None, kw_only=True)
    scan: ScanSummary | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class VersionEvidence(Model):
    trajectory_id: str
    agent_id: str
    success: bool | None
    score: float | None


@dataclass(frozen=True)
class VersionDetail(Version):
    content: str
    files: dict[str, str]
    diff: str
    evidence_items: list[VersionEvidence]


@dataclass(frozen=True)
class VersionPage(Model):
    """A page of versions, newest first; pass `next_before` back as `before` (None: the last page)."""

    items: list[Version]
    next_before: int | None


@dataclass(frozen=True)
class HistoryEvent(Model):
    id: str
    kind: str
    actor: str
    from_version: int | None
    to_version: int | None
    reason: str
    detail: dict[str, Any]
    diff: str | None
    diff_truncated: bool
    created_at: datetime


@dataclass(frozen=True)
class EvolveAccepted(Model):
    event_id: str
    status: str = "queued"


# Governance


@dataclass(frozen=True)
class ImportedSkill(Model):
    """One skill of an import: `created` for a new skill, `unchanged` if that content was stored already."""

    skill: Skill
    version: int
    created: bool
    unchanged: bool
    malicious: bool
    risk_level: str
    findings: int


@dataclass(frozen=True)
class QueueItem(Model):
    """A version awaiting a reviewer: a proposal or a quarantined version."""

    skill: SkillRef
    version: int
    review: str
    trust_tier: str
    risk_level: str
    findings: int
    evidence_runs: int
    actor: str
    created_at: datetime


@dataclass(frozen=True)
class Decision(Model):
    """A review action: `applied`, or `awaiting_second_approval` with the approvals so far."""

    state: str
    approvals: list[str]
    needs: int
    skill: Skill
    version: Version

    @property
    def applied(self) -> bool:
        """Whether the action took effect."""
        return self.state == "applied"


@dataclass(frozen=True)
class Finding(Model):
    rule: str
    category: str
    severity: str
    file: str
    line: int
    snippet: str
    message: str
    context: str
    waived: bool


@dataclass(frozen=True)
class Scan(Model):
    version: int
    sha256: str
    ruleset: str
    trigger: str
    malicious: bool
    score: float
    risk_level: str
    findings: list[Finding]
    created_at: datetime


@dataclass(frozen=True)
class AuditEntry(Model):
    seq: int
    id: str
    actor: str
    action: str
    target_type: str
    target_id: str
    detail: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class AuditPage(Model):
    """A page of the audit log, newest first; pass `next_before` back as `before` (None: the last page)."""

    items: list[AuditEntry]
    next_before: int | None


# Retrieval


@dataclass(frozen=True)
class RetrievedItem(Model):
    """A skill (name, description, level; body if asked) or an experience (text, polarity, action)."""

    kind: str
    id: str
    score: float
    tokens: int
    version: int | None = None
    text: str | None = None
    polarity: str | None = None
    action: Action | None = None
    name: str | None = None
    description: str | None = None
    level: str | None = None
    pinned: bool | None = None
    trust_tier: str | None = None
    note: str | None = None
    body_url: str | None = None
    body: str | None = None
    explain: dict[str, float] | None = None


@dataclass(frozen=True)
class Retrieval(Model):
    """A `/v1/retrieve` answer; send `retrieval_id` back with feedback or on the trajectory's steps."""

    retrieval_id: str
    items: list[RetrievedItem]
    tokens: int
    strategy_id: str | None = None


@dataclass(frozen=True)
class Feedback(Model):
    retrieval_id: str
    outcome: str
    used_item_ids: list[str]


# Health


@dataclass(frozen=True)
class Readiness(Model):
    """`/readyz`: ready when the database and broker answer and a worker is alive; `checks` says which."""

    status: str
    checks: dict[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        """Whether every dependency is up."""
        return self.status == "ready"


# What clients send


class StepIn(TypedDict, total=False):
    """One step of a trajectory: what the agent saw (`observation`) and did (`action`)."""

    observation: Required[str]
    action: Required[str]
    tool: str
    tool_input: Any
    tool_output: Any
    error: str
    reward: float
    retrieval_id: str
    used_item_ids: list[str]


class OutcomeIn(TypedDict, total=False):
    success: bool | None
    score: float | None


class TrajectoryIn(TypedDict):
    """A trajectory as posted to `/v1/trajectories`."""

    task: str
    agent_id: str
    steps: list[StepIn]
    domain: NotRequired[str | None]
    session_id: NotRequired[str | None]
    outcome: NotRequired[OutcomeIn]
    metadata: NotRequired[dict[str, str]]
