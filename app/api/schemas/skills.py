"""Skills, their versions and history as clients read them, and the rollback they may ask for."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from app.api.schemas.common import Count, Flag, Input
from app.storage.models import Provenance, ReviewState, RiskLevel, SkillEventKind, SkillLevel, SkillStatus

VersionRef = Annotated[str, Path(description="A version number, `latest` (the newest) or `head`.")]
MAX_ROLLBACK_REASON_CHARS = 1000
MAX_REVIEW_REASON_CHARS = 2000
TIER_PATTERN = r"^(?i:T?[0-4]|quarantined|unvetted|reviewed|vetted|certified)$"
TIER_DOC = (
    "`T0` quarantined, `T1` unvetted (name and description served), `T2` reviewed (body), "
    "`T3` vetted, `T4` certified."
)
MAX_VERSION = 2**31 - 1  # skill_version.version is a PostgreSQL integer


class UtilityOut(BaseModel):
    alpha: float
    beta: float
    mean: float = Field(description="alpha / (alpha + beta): the expected chance this skill helps.")


class EvidenceCounts(BaseModel):
    runs: int
    successes: int
    failures: int


class SkillRef(BaseModel):
    id: uuid.UUID
    name: str
    level: SkillLevel


class SkillOut(BaseModel):
    id: uuid.UUID
    name: str
    description: str = Field(description="The head version's description.")
    domain: str | None
    level: SkillLevel
    status: SkillStatus
    trust_tier: str = Field(description="The head version's tier. " + TIER_DOC)
    risk_level: RiskLevel = Field(
        description="The head version's risk: what it can do and what the scanner found."
    )
    provenance: Provenance
    head_version: int = Field(description="The version agents get; a rollback moves it back.")
    latest_version: int = Field(description="The newest version written; never decreases.")
    utility: UtilityOut
    created_at: datetime
    updated_at: datetime


class HeadOut(BaseModel):
    version: int
    sha256: str
    distiller: str
    evidence: EvidenceCounts
    created_at: datetime


class SkillDetail(SkillOut):
    head: HeadOut
    parents: list[SkillRef] = Field(description="Skills that name this one as a child.")
    children: list[SkillRef] = Field(description="This skill's children, in order.")


class SkillPage(BaseModel):
    items: list[SkillOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class ScanSummary(BaseModel):
    ruleset: str = Field(description="The scanner rule set of the latest scan; empty if never scanned.")
    malicious: bool
    score: float
    findings: int = Field(description="Findings not marked as false positives.")


class VersionOut(BaseModel):
    version: int
    parent_version: int | None
    sha256: str
    change: SkillEventKind = Field(description="What made this version: created, improved, rewritten, ...")
    changed_share: float = Field(description="Share (0..1) of body lines changed from the parent.")
    rewrite_reason: str | None
    distiller: str
    llm_model: str | None
    prompt_hash: str | None
    actor: str
    evidence: EvidenceCounts
    is_head: bool
    trust_tier: str = Field(description=TIER_DOC)
    risk_level: RiskLevel
    review: ReviewState = Field(description="`pending`: a proposal awaiting a reviewer.")
    reviewed_by: str | None
    reviewed_at: datetime | None
    review_reason: str | None
    scan: ScanSummary
    created_at: datetime


class VersionPage(BaseModel):
    items: list[VersionOut]
    next_before: int | None = Field(description="Pass as `before` for the next page; null on the last page.")


class VersionEvidenceOut(BaseModel):
    trajectory_id: uuid.UUID
    agent_id: str
    success: bool | None
    score: float | None


class VersionDetail(VersionOut):
    content: str = Field(description="The full SKILL.md text.")
    files: dict[str, str] = Field(description="The skill's other files, by path relative to its folder.")
    diff: str = Field(description="Unified diff of SKILL.md against `parent_version`; empty for version 1.")
    evidence_items: list[VersionEvidenceOut] = Field(
        description="The trajectories behind this version (at most 200; `evidence.runs` counts them all)."
    )


class HistoryEventOut(BaseModel):
    id: uuid.UUID
    kind: SkillEventKind
    actor: str
    from_version: int | None
    to_version: int | None
    reason: str
    detail: dict[str, Any]
    diff: str | None = Field(description="For an event that wrote `to_version`, that version's diff.")
    diff_truncated: bool = Field(description="Whether `diff` was cut; read the full one from the version.")
    created_at: datetime


class HistoryPage(BaseModel):
    items: list[HistoryEventOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class RollbackIn(Input):
    model_config = ConfigDict(extra="forbid")

    to_version: Count = Field(ge=1, le=MAX_VERSION, description="The version the head should point to.")
    expected_head: Count | None = Field(
        default=None,
        ge=0,
        le=MAX_VERSION,
        description="The head you read; a different current head answers 409.",
    )
    reason: str = Field(default="", max_length=MAX_ROLLBACK_REASON_CHARS)


class EvolveAccepted(BaseModel):
    event_id: uuid.UUID = Field(description="Poll GET /v1/events/{event_id} for the cycle's result.")
    status: Literal["queued"] = "queued"


class ReviewIn(Input):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=MAX_REVIEW_REASON_CHARS, description="Why; audited.")


class AcceptIn(ReviewIn):
    publish: Flag = Field(default=True, description="Also make it the version agents get.")


class TierIn(ReviewIn):
    tier: str = Field(pattern=TIER_PATTERN, description=TIER_DOC)


class FalsePositiveIn(ReviewIn):
    rule: str = Field(
        min_length=1, max_length=64, description="The finding's rule id, e.g. `EXF-SECRET-PATH`."
    )


class DecisionOut(BaseModel):
    state: Literal["applied", "awaiting_second_approval"]
    approvals: list[str] = Field(description="Reviewers who approved so far, oldest first.")
    needs: int = Field(description="Approvals this action needs (2 for T3/T4 and wider tools).")
    skill: SkillOut
    version: VersionOut


class FindingOut(BaseModel):
    rule: str
    category: str
    severity: str
    file: str
    line: int
    snippet: str
    message: str
    context: str
    waived: bool = Field(description="A reviewer marked it a false positive for this content.")


class ScanOut(BaseModel):
    version: int
    sha256: str
    ruleset: str
    trigger: str = Field(description="`write` (the gate), `rescan` (rules changed) or `waiver`.")
    malicious: bool
    score: float
    risk_level: RiskLevel
    findings: list[FindingOut]
    created_at: datetime


class QueueItem(BaseModel):
    skill: SkillRef
    version: int
    review: ReviewState
    trust_tier: str
    risk_level: RiskLevel
    findings: int
    evidence_runs: int
    actor: str
    created_at: datetime


class QueuePage(BaseModel):
    items: list[QueueItem]
    next_cursor: str | None


class ImportedOut(BaseModel):
    skill: SkillOut
    version: int
    created: bool = Field(description="False when an existing imported skill got a new version.")
    unchanged: bool = Field(description="The same content was already stored; nothing was written.")
    trust_tier: str = Field(description="This version's tier (the skill's own is its head's).")
    is_head: bool = Field(description="Whether agents get this version (a quarantined one never).")
    malicious: bool
    risk_level: RiskLevel
    findings: int


class ImportOut(BaseModel):
    items: list[ImportedOut]
