"""The scan gate: every version is scanned in the transaction that stores it, and again when rules change.

A scan stores a `skill_scan` row and the version's risk; a blocking risk puts the version in T0
(quarantined), with an event and an audit entry. The skill row keeps copies of its head version's
tier and risk (`sync_head`), which is what retrieval and listings filter on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session

from app import skill_md
from app.governance import risk, scanner
from app.governance.risk import Assessment
from app.governance.rules import RULESET_VERSION
from app.storage.models import Skill, SkillEventKind, SkillVersion, TrustTier
from app.storage.repositories import audit, skills
from app.storage.repositories import governance as repo

log = logging.getLogger(__name__)

SCANNER = "scanner"  # the actor of the gate's own decisions
RESCAN_BATCH = 200


@dataclass
class RescanStats:
    """What one rescan pass did."""

    scanned: int = 0
    quarantined: int = 0
    changed: int = 0  # versions whose risk level moved


def scan_version(session: Session, skill: Skill, version: SkillVersion, *, trigger: str) -> Assessment:
    """Scan a version's SKILL.md and files, store the scan and the version's risk; returns the assessment."""
    files = {skill_md.SKILL_FILE: version.content, **version.files}
    verdict = scanner.scan_files(files, skill=skill.name)
    waived = repo.waived_rules(session, skill.tenant_id, version.sha256)
    assessment = risk.assess(verdict, waived, can_act=risk.can_act(declared_tools(version), version.files))
    repo.add_scan(
        session,
        skill.tenant_id,
        version.id,
        trigger=trigger,
        ruleset=verdict.ruleset,
        malicious=assessment.malicious,
        score=assessment.score,
        weight=assessment.weight,
        risk_level=assessment.risk,
        findings=assessment.findings,
    )
    version.risk_level = assessment.risk
    version.scan_ruleset = verdict.ruleset
    version.scan_malicious = assessment.malicious
    version.scan_score = assessment.score
    version.findings_count = assessment.active
    return assessment


def quarantine(session: Session, skill: Skill, version: SkillVersion, *, actor: str, reason: str) -> None:
    """Put a version in T0 with an event and an audit entry; a quarantined head hides the skill."""
    previous = version.trust_tier
    version.trust_tier = int(TrustTier.QUARANTINED)
    skills.add_event(
        session,
        skill,
        kind=SkillEventKind.QUARANTINED,
        actor=actor,
        from_version=version.version,
        to_version=version.version,
        reason=reason,
        detail={"risk_level": version.risk_level.value, "findings": version.findings_count},
    )
    audit.record(
        session,
        skill.tenant_id,
        actor=actor,
        action="skill.quarantined",
        target_type="skill",
        target_id=str(skill.id),
        detail={
            "version": version.version,
            "from_tier": TrustTier(previous).label,
            "risk_level": version.risk_level.value,
            "reason": reason,
        },
    )
    sync_head(skill, version)


def sync_head(skill: Skill, version: SkillVersion) -> None:
    """Copy the head version's tier and risk onto the skill (a no-op for another version)."""
    if version.version == skill.head_version:
        skill.trust_tier = version.trust_tier
        skill.risk_level = version.risk_level
        skill.allowed_tools = declared_tools(version)


def rescan_stale(session: Session, *, limit: int = RESCAN_BATCH) -> RescanStats:
    """Scan up to `limit` versions last scanned by another rule set; quarantine what now blocks."""
    stats = RescanStats()
    for version in repo.stale_versions(session, RULESET_VERSION, limit):
        skill = session.get(Skill, version.skill_id)
        if skill is None:  # pragma: no cover - the foreign key cascades
            continue
        before = version.risk_level
        assessment = scan_version(session, skill, version, trigger="rescan")
        stats.scanned += 1
        stats.changed += int(version.risk_level != before)
        if assessment.blocking and version.trust_tier != TrustTier.QUARANTINED:
            quarantine(
                session,
                skill,
                version,
                actor=SCANNER,
                reason=f"rule set {RULESET_VERSION} found {assessment.risk.value} risk",
            )
            stats.quarantined += 1
        sync_head(skill, version)
    session.flush()
    if stats.scanned:
        log.info("rescanned %d versions: %d quarantined", stats.scanned, stats.quarantined)
    return stats


def declared_tools(version: SkillVersion) -> str:
    """The version's `allowed-tools` ("" when its SKILL.md does not parse)."""
    try:
        return skill_md.parse(version.content).allowed_tools
    except skill_md.SkillFormatError:
        return ""
