"""What each admin page shows, read through the repositories the JSON API uses (no HTTP, no FastAPI)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from markupsafe import Markup
from sqlalchemy.orm import Session

from app import skill_md
from app.admin import charts, diff, render
from app.admin.render import CodeLine
from app.errors import ExperienceNotFound, SkillNotFound, TrajectoryNotFound
from app.storage.models import (
    Event,
    EventStatus,
    Experience,
    ExperienceEvidence,
    ItemKind,
    ReviewState,
    Skill,
    SkillEvent,
    SkillLevel,
    SkillScan,
    SkillStatus,
    SkillVersion,
    SkillVersionEvidence,
    Trajectory,
    TrajectoryStep,
    TrustTier,
    utcnow,
)
from app.storage.repositories import admin as repo
from app.storage.repositories import experiences, governance, retrievals, skills, trajectories
from app.storage.repositories.admin import DomainOutcomes, LatencyBucket, Uplift
from app.storage.repositories.retrievals import ItemStats

WINDOW_HOURS = 48
TOP_DOMAINS = 12
UPLIFT_ROWS = 5
RECENT_FAILURES = 5
VERSIONS_SHOWN = 100
EVIDENCE_SHOWN = 200
LINKED_SHOWN = 50
HISTORY_SHOWN = 50
TIER_CLASSES = tuple((TrustTier(t).label, f"t{t}") for t in range(5))
TWO_PERSON = {
    "accept": "Accept (widens allowed-tools)",
    "tier:T3": "Promote to T3",
    "tier:T4": "Promote to T4",
}


# --- dashboard -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dashboard:
    """The dashboard's numbers and charts."""

    library: list[tuple[str, list[int], int]]  # level, count per tier T0..T4, total (active skills)
    out_of_service: int
    library_chart: Markup | None
    ingest_total: int
    ingest_chart: Markup
    domains: list[DomainOutcomes]
    domain_chart: Markup | None
    latency: LatencyBucket
    latency_chart: Markup | None
    events: dict[EventStatus, int]
    failures: Sequence[Event]
    top: list[Uplift]
    bottom: list[Uplift]
    uplift_chart: Markup | None
    window_hours: int = WINDOW_HOURS


def dashboard(session: Session, tenant_id: uuid.UUID, now: datetime | None = None) -> Dashboard:
    """Library size, ingestion, outcomes, retrieval latency, the evolver's queue and measured uplift."""
    now = now or utcnow()
    since = now - timedelta(hours=WINDOW_HOURS)
    hours = [
        (now - timedelta(hours=WINDOW_HOURS - 1 - n)).replace(minute=0, second=0, microsecond=0, tzinfo=None)
        for n in range(WINDOW_HOURS)
    ]
    hour_labels = [h.strftime("%H:00") for h in hours]

    counts = repo.library_size(session, tenant_id)
    library = []
    for level in SkillLevel:
        per_tier = [
            sum(
                c.count for c in counts if c.level == level and c.tier == t and c.status == SkillStatus.ACTIVE
            )
            for t in range(5)
        ]
        library.append((level.value, per_tier, sum(per_tier)))
    out_of_service = sum(c.count for c in counts if c.status != SkillStatus.ACTIVE)
    library_chart = (
        charts.stacked(
            [(lvl, [float(v) for v in per]) for lvl, per, _ in library],
            TIER_CLASSES,
            label="Active skills by level and tier",
        )
        if any(total for *_, total in library)
        else None
    )

    per_hour = repo.trajectories_per_hour(session, tenant_id, since)
    ingest = [
        charts.Bar(
            label, float(per_hour.get(h, 0)), f"{h:%Y-%m-%d %H}:00 UTC: {per_hour.get(h, 0)} trajectories"
        )
        for h, label in zip(hours, hour_labels, strict=True)
    ]

    domains = repo.outcomes_by_domain(session, tenant_id, limit=TOP_DOMAINS)
    known = [d for d in domains if d.known]
    domain_chart = (
        charts.hbars(
            [
                charts.Bar(
                    d.domain or "(none)",
                    d.successes / d.known,
                    f"{d.domain or '(none)'}: {d.successes} of {d.known} runs with an outcome succeeded",
                )
                for d in known
            ],
            label="Success rate by domain",
        )
        if known
        else None
    )

    whole, latency_hours = repo.retrieval_latency(session, tenant_id, since)
    by_hour = {b.hour: b for b in latency_hours}
    latency_chart = (
        charts.lines(
            hour_labels,
            [
                charts.Series("p95", "p95", [by_hour[h].p95 if h in by_hour else None for h in hours]),
                charts.Series("p50", "p50", [by_hour[h].p50 if h in by_hour else None for h in hours]),
            ],
            label="Retrieval latency per hour, ms",
            unit=" ms",
        )
        if latency_hours
        else None
    )

    top, lowest = repo.uplift_extremes(session, tenant_id, limit=UPLIFT_ROWS)
    bottom = [u for u in lowest if u not in top]  # with few measured skills the two lists overlap
    ranked = list({u.skill_id: u for u in [*top, *reversed(bottom)]}.values())
    uplift_chart = (
        charts.diverging(
            [
                charts.Bar(
                    u.name,
                    u.uplift,
                    f"{u.name}: {u.rate_with:.0%} with (n={u.n_with}) vs "
                    f"{u.rate_without:.0%} without (n={u.n_without})",
                )
                for u in ranked
            ],
            label="Uplift: success rate listed minus withheld",
        )
        if ranked
        else None
    )
    return Dashboard(
        library=library,
        out_of_service=out_of_service,
        library_chart=library_chart,
        ingest_total=sum(per_hour.values()),
        ingest_chart=charts.columns(ingest, label="Trajectories ingested per hour", every=6),
        domains=domains,
        domain_chart=domain_chart,
        latency=whole,
        latency_chart=latency_chart,
        events=repo.event_counts(session, tenant_id, since),
        failures=repo.recent_failures(session, tenant_id, RECENT_FAILURES),
        top=top,
        bottom=bottom,
        uplift_chart=uplift_chart,
    )


# --- skills --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileView:
    """One file of a version: numbered lines with findings, and for SKILL.md its rendered Markdown."""

    index: int
    path: str
    lines: list[CodeLine]
    rendered: Markup | None = None
    findings: int = 0


@dataclass(frozen=True)
class Approval:
    """An action that needs two reviewers, and who approved it so far."""

    action: str
    title: str
    approvers: list[tuple[str, datetime]]


@dataclass(frozen=True)
class Usage:
    """How retrieval used a skill or an experience, its posterior and uplift."""

    stats: ItemStats
    alpha: float
    beta: float

    @property
    def mean(self) -> float:
        """The posterior mean."""
        total = self.alpha + self.beta
        return self.alpha / total if total > 0 else 0.5

    @property
    def rate_with(self) -> float | None:
        """Success rate of retrievals that listed the item."""
        return self.stats.successes_with / self.stats.n_with if self.stats.n_with else None

    @property
    def rate_without(self) -> float | None:
        """Success rate of retrievals that withheld it."""
        return self.stats.successes_without / self.stats.n_without if self.stats.n_without else None

    @property
    def uplift(self) -> float | None:
        """Listed minus withheld, when both were measured."""
        if self.rate_with is None or self.rate_without is None:
            return None
        return self.rate_with - self.rate_without


@dataclass(frozen=True)
class SkillPage:
    """Everything the skill page shows about a skill and one of its versions."""

    skill: Skill
    version: SkillVersion
    versions: Sequence[SkillVersion]
    scan: SkillScan | None
    findings: list[dict[str, Any]]
    open_rules: list[str]
    files: list[FileView]
    evidence: Sequence[SkillVersionEvidence]
    usage: Usage
    parents: Sequence[Skill]
    children: Sequence[Skill]
    experiences: Sequence[Experience]
    approvals: list[Approval]
    history: Sequence[SkillEvent]
    diff: list[diff.FileDiff] | None = None
    diff_pair: tuple[int, int] | None = None
    description: str = ""
    actions: dict[str, bool] = field(default_factory=dict)


def skill_page(
    session: Session,
    tenant_id: uuid.UUID,
    skill_id: uuid.UUID,
    *,
    number: int | None = None,
    compare: tuple[int, int] | None = None,
) -> SkillPage:
    """A skill with one version (`number`, else the head) in full, and a diff of two versions if asked."""
    skill = skills.get(session, tenant_id, skill_id)
    if skill is None:
        raise SkillNotFound(detail={"id": str(skill_id)})
    version = _version(session, skill, number or skill.head_version or skill.latest_version)
    scan = governance.latest_scan(session, version.id)
    findings = _findings(version, scan)
    open_rules = list(dict.fromkeys(str(f["rule"]) for f in findings if not f["waived"]))
    pair_diff = None
    if compare is not None:
        left, right = (_version(session, skill, n) for n in compare)
        pair_diff = diff.versions(_contents(left), _contents(right))
    return SkillPage(
        skill=skill,
        version=version,
        versions=skills.versions(session, skill.id, before=None, limit=VERSIONS_SHOWN)[0],
        scan=scan,
        findings=findings,
        open_rules=open_rules,
        files=_files(version, findings),
        evidence=skills.evidence_of(session, version.id, EVIDENCE_SHOWN),
        usage=Usage(retrievals.item_stats(session, tenant_id, skill.id), skill.alpha, skill.beta),
        parents=skills.parents(session, skill.id),
        children=skills.children(session, skill.id),
        experiences=repo.experiences_of_skill(session, tenant_id, skill.id, LINKED_SHOWN),
        approvals=_approvals(session, version),
        history=skills.history(session, skill.id, cursor=None, limit=HISTORY_SHOWN)[0],
        diff=pair_diff,
        diff_pair=compare,
        description=_description(version),
        actions=_actions(skill, version),
    )


def _version(session: Session, skill: Skill, number: int) -> SkillVersion:
    row = skills.version(session, skill.id, number)
    if row is None:
        from app.errors import SkillVersionNotFound

        raise SkillVersionNotFound(detail={"version": number, "latest": skill.latest_version})
    return row


def _contents(version: SkillVersion) -> dict[str, str]:
    return {skill_md.SKILL_FILE: version.content, **version.files}


FINDING_KEYS = ("rule", "category", "severity", "file", "line", "snippet", "message", "context")


def _findings(version: SkillVersion, scan: SkillScan | None) -> list[dict[str, Any]]:
    """The scan's findings, all keys present, with a line anchor and `form` on the first of each open rule."""
    out: list[dict[str, Any]] = []
    offered: set[str] = set()
    for raw in scan.findings if scan else []:
        f: dict[str, Any] = {k: raw.get(k, "") for k in FINDING_KEYS}
        f["waived"] = bool(raw.get("waived"))
        f["anchor"] = _anchor(version, raw)
        f["form"] = not f["waived"] and f["rule"] not in offered
        if f["form"]:
            offered.add(str(f["rule"]))
        out.append(f)
    return out


def _anchor(version: SkillVersion, finding: dict[str, Any]) -> str:
    paths = list(_contents(version))
    path, line = finding.get("file"), finding.get("line")
    if path not in paths or not isinstance(line, int) or line < 1:
        return ""
    return f"L-{paths.index(str(path))}-{line}"


def _files(version: SkillVersion, findings: list[dict[str, Any]]) -> list[FileView]:
    out = []
    for index, (path, text) in enumerate(_contents(version).items()):
        active: dict[int, tuple[str, ...]] = {}
        waived: dict[int, tuple[str, ...]] = {}
        count = 0
        for f in findings:
            if f.get("file") != path or not isinstance(f.get("line"), int):
                continue
            target = waived if f.get("waived") else active
            target[f["line"]] = (*target.get(f["line"], ()), str(f.get("rule")))
            count += 1
        rendered = render.markdown(_body(text)) if path == skill_md.SKILL_FILE else None
        out.append(FileView(index, path, render.code_lines(text, active, waived), rendered, count))
    return out


def _body(content: str) -> str:
    """SKILL.md without its frontmatter (shown in the header and the source view)."""
    if content.startswith("---"):
        end = content.find("\n---", 3)
        if end != -1:
            return content[end + 4 :].lstrip("\n")
    return content


def _description(version: SkillVersion) -> str:
    try:
        return skill_md.parse(version.content).description
    except skill_md.SkillFormatError:
        return ""


def _approvals(session: Session, version: SkillVersion) -> list[Approval]:
    grouped: dict[str, list[tuple[str, datetime]]] = {}
    for row in repo.open_approvals(session, version.id):
        grouped.setdefault(row.action, []).append((row.actor, row.created_at))
    return [Approval(action, TWO_PERSON.get(action, action), people) for action, people in grouped.items()]


def _actions(skill: Skill, version: SkillVersion) -> dict[str, bool]:
    servable = version.review != ReviewState.REJECTED and version.trust_tier > TrustTier.QUARANTINED
    return {
        "accept": version.review == ReviewState.PENDING,
        "reject": version.review != ReviewState.REJECTED,
        "publish": version.review == ReviewState.ACCEPTED
        and version.trust_tier >= TrustTier.REVIEWED
        and (version.version != skill.head_version or skill.status != SkillStatus.ACTIVE),
        "withdraw": skill.status != SkillStatus.WITHDRAWN,
        "rollback": servable and version.version != skill.head_version,
    }


# --- experiences and trajectories --------------------------------------------------------------


@dataclass(frozen=True)
class ExperiencePage:
    """An experience, the steps behind it, its skill and its usage."""

    experience: Experience
    evidence: Sequence[ExperienceEvidence]
    skill: Skill | None
    usage: Usage


def experience_page(session: Session, tenant_id: uuid.UUID, experience_id: uuid.UUID) -> ExperiencePage:
    """One experience in full."""
    row = experiences.get(session, tenant_id, experience_id)
    if row is None:
        raise ExperienceNotFound(detail={"id": str(experience_id)})
    return ExperiencePage(
        experience=row,
        evidence=experiences.evidence_of(session, row.id, EVIDENCE_SHOWN),
        skill=skills.get(session, tenant_id, row.skill_id) if row.skill_id else None,
        usage=Usage(retrievals.item_stats(session, tenant_id, row.id), row.alpha, row.beta),
    )


@dataclass(frozen=True)
class StepItem:
    """An item a step's retrieval listed or withheld, or that the step says it used."""

    item_id: str
    kind: str
    label: str
    rank: int | None
    withheld: bool
    used: bool


@dataclass(frozen=True)
class StepView:
    """One step and what its retrieval offered."""

    step: TrajectoryStep
    items: list[StepItem]
    retrieval_known: bool


@dataclass(frozen=True)
class TrajectoryPage:
    """A trajectory step by step, with the items each step's retrieval offered and which it used."""

    trajectory: Trajectory
    steps: list[StepView]
    skills_backed: int


def trajectory_page(session: Session, tenant_id: uuid.UUID, trajectory_id: uuid.UUID) -> TrajectoryPage:
    """One trajectory with its steps and, per step, the retrieved items it used."""
    row = trajectories.get(session, tenant_id, trajectory_id)
    if row is None:
        raise TrajectoryNotFound(detail={"id": str(trajectory_id)})
    steps = trajectories.steps_of(session, row.id)
    retrieval_ids = {s.retrieval_id: _uuid(s.retrieval_id) for s in steps if s.retrieval_id}
    items = repo.retrieval_items(session, tenant_id, [i for i in retrieval_ids.values() if i is not None])
    wanted = {i.item_id for rows in items.values() for i in rows}
    wanted |= {u for s in steps for u in (_uuid(x) for x in s.used_item_ids) if u is not None}
    labels = repo.item_labels(session, tenant_id, wanted)
    views = []
    for step in steps:
        rid = retrieval_ids.get(step.retrieval_id) if step.retrieval_id else None
        listed = items.get(rid, []) if rid is not None else []
        used = set(step.used_item_ids)
        shown = [
            StepItem(
                str(i.item_id),
                i.kind.value,
                _label(labels, i.item_id),
                i.rank,
                i.withheld,
                str(i.item_id) in used,
            )
            for i in listed
        ]
        seen = {s.item_id for s in shown}
        for extra in step.used_item_ids:
            if extra not in seen:
                ident = _uuid(extra)
                kind = labels[ident][0].value if ident in labels else "unknown"
                shown.append(StepItem(extra, kind, _label(labels, ident), None, False, True))
        views.append(StepView(step, shown, rid is not None and rid in items))
    backed = len({i for s in steps for i in s.used_item_ids})
    return TrajectoryPage(row, views, backed)


def _uuid(text: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(text) if text else None
    except ValueError:
        return None


def _label(labels: dict[uuid.UUID, tuple[ItemKind, str]], ident: uuid.UUID | None) -> str:
    if ident is None or ident not in labels:
        return "(not in this library)"
    return labels[ident][1]
