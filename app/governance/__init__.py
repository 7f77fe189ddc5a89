"""Governance: the risk scanner for skills (pure), its rule set, and later tiers, review and audit."""

from app.governance.findings import Finding
from app.governance.rules import RULESET_VERSION
from app.governance.scanner import Verdict, find_skills, scan_files, scan_folder

__all__ = ["RULESET_VERSION", "Finding", "Verdict", "find_skills", "scan_files", "scan_folder"]
