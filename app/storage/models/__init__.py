"""ORM rows. Import from here so every table is registered on `Base.metadata`."""

from app.storage.models.base import EMBEDDING_DIM, Base, utcnow
from app.storage.models.event import AuditLog, Event, EventStatus, IdempotencyRecord
from app.storage.models.experience import (
    Experience,
    ExperienceEvidence,
    ExperienceStatus,
    Polarity,
    SituationEmbedding,
    StateCluster,
)
from app.storage.models.governance import FindingWaiver, SkillApproval, SkillScan
from app.storage.models.retrieval import ItemKind, Outcome, Retrieval, RetrievalItem, RetrievalSession
from app.storage.models.skill import (
    Provenance,
    ReviewState,
    RiskLevel,
    Skill,
    SkillEvent,
    SkillEventKind,
    SkillLevel,
    SkillLink,
    SkillStatus,
    SkillVersion,
    SkillVersionEvidence,
    TaskCluster,
    TrustTier,
)
from app.storage.models.tenant import ApiKey, Scope, Tenant
from app.storage.models.trajectory import Trajectory, TrajectoryStep

__all__ = [
    "EMBEDDING_DIM",
    "ApiKey",
    "AuditLog",
    "Base",
    "Event",
    "EventStatus",
    "Experience",
    "FindingWaiver",
    "Provenance",
    "ReviewState",
    "RiskLevel",
    "SkillApproval",
    "SkillScan",
    "TrustTier",
    "ExperienceEvidence",
    "ExperienceStatus",
    "Polarity",
    "SituationEmbedding",
    "StateCluster",
    "IdempotencyRecord",
    "ItemKind",
    "Outcome",
    "Retrieval",
    "RetrievalItem",
    "RetrievalSession",
    "Scope",
    "Skill",
    "SkillEvent",
    "SkillEventKind",
    "SkillLevel",
    "SkillLink",
    "SkillStatus",
    "SkillVersion",
    "SkillVersionEvidence",
    "TaskCluster",
    "Tenant",
    "Trajectory",
    "TrajectoryStep",
    "utcnow",
]
