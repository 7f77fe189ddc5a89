"""From a scanner verdict to a version's risk level and initial trust tier (pure).

A reviewer can waive one rule's findings for one exact content hash (a false positive); the verdict
is then recomputed from the findings left, with the scanner's own scoring rule. Risk is the worst
effective severity left, at least `high` when the findings add up to a malicious verdict, and at
least `low` when the skill can act (it declares tools or bundles scripts): what it *can* do.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from app.governance.rules import Severity, is_malicious, score, total
from app.governance.scanner import Verdict
from app.skill_md import SKILL_FILE
from app.storage.models import RiskLevel, TrustTier

BLOCKING = RiskLevel.HIGH  # this risk or worse puts a version in T0
SCRIPT_SUFFIXES = (".py", ".sh", ".bash", ".zsh", ".js", ".mjs", ".ts", ".ps1", ".rb", ".pl", ".php")
_RISK_OF = {
    Severity.INFO: RiskLevel.NONE,
    Severity.LOW: RiskLevel.LOW,
    Severity.MEDIUM: RiskLevel.MEDIUM,
    Severity.HIGH: RiskLevel.HIGH,
    Severity.CRITICAL: RiskLevel.CRITICAL,
}


@dataclass(frozen=True)
class Assessment:
    """A verdict with waivers applied: what the gate stores with a version."""

    risk: RiskLevel
    malicious: bool
    score: float
    weight: int
    findings: list[dict[str, Any]]  # `Finding.as_dict()` plus `waived`
    active: int  # findings not waived

    @property
    def blocking(self) -> bool:
        """Whether this risk keeps the version in T0."""
        return self.risk.rank >= BLOCKING.rank


def assess(verdict: Verdict, waived: Collection[str], *, can_act: bool) -> Assessment:
    """The verdict's findings less the waived rules, scored again, and the risk they leave."""
    findings: list[dict[str, Any]] = []
    active: list[tuple[str, Severity]] = []
    for finding in verdict.findings:
        is_waived = finding.rule_id in waived
        findings.append({**finding.as_dict(), "waived": is_waived})
        if not is_waived:
            active.append((finding.rule_id, finding.severity))
    weight = total(active)
    malicious = is_malicious(weight)
    worst = max((severity for _, severity in active), default=Severity.INFO)
    risk = _RISK_OF[worst]
    if malicious and risk.rank < RiskLevel.HIGH.rank:
        risk = RiskLevel.HIGH
    if can_act and risk == RiskLevel.NONE:
        risk = RiskLevel.LOW
    return Assessment(
        risk=risk,
        malicious=malicious,
        score=score(weight),
        weight=weight,
        findings=findings,
        active=len(active),
    )


def can_act(allowed_tools: str, files: Mapping[str, str]) -> bool:
    """Whether a skill declares tools or bundles scripts."""
    scripts = (path for path in files if path != SKILL_FILE)
    return bool(allowed_tools.strip()) or any(p.lower().endswith(SCRIPT_SUFFIXES) for p in scripts)


def initial_tier(assessment: Assessment) -> TrustTier:
    """A new version's tier: T0 when its risk blocks it, else T1 whatever its provenance.

    Provenance sets the ceiling instead: nothing reaches T2 without a reviewer, and T3/T4 need two.
    """
    return TrustTier.QUARANTINED if assessment.blocking else TrustTier.UNVETTED


def tools_of(allowed_tools: str) -> frozenset[str]:
    """The tool names of an `allowed-tools` value (space- or comma-separated)."""
    return frozenset(t for t in allowed_tools.replace(",", " ").split() if t)


def widens(old_tools: str, new_tools: str) -> frozenset[str]:
    """Tools `new_tools` grants that `old_tools` did not."""
    return tools_of(new_tools) - tools_of(old_tools)
