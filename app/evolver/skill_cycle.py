"""One skill evolution cycle for a tenant: task clusters, distillation, collective refinement, versions.

The cycle takes the trajectories the skill evolver has not seen, assigns each to a task cluster
(cosine similarity of task texts in pgvector), groups the new runs by the skills they actually
used, decides per group (`skill_refine.decide`), and writes what changed as new immutable versions:
section-level patches on the head version, never a silent rewrite. Distillation starts from the
heuristic drafts (`skill_distill`): consensus procedures for strategy skills, recurring sub-procedures
for functional skills, verbs with their errors and fixes for atomic skills. A `SkillDistiller`
(`skill_llm`) then turns each draft into the document written: the draft itself, or an LLM's edit of it;
a rejected edit is recorded in the skill's history and the draft is written instead. Everything runs in
the caller's transaction; each skill is written under its own advisory lock.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from sqlalchemy.orm import Session

from app import skill_md
from app.config import Settings
from app.embedding import Embedder
from app.errors import InvalidSkill
from app.evolver import skill_distill as distill
from app.evolver import skill_refine as refine
from app.evolver.dispatch import send_after_commit
from app.evolver.extract import explored, template_action
from app.evolver.names import TaskName
from app.evolver.pipeline import EventMissing
from app.evolver.skill_llm import (
    DISTILLER_KEY,
    DRAFT_KEY,
    Distilled,
    HeuristicDistiller,
    Rejected,
    SkillDistiller,
    build_context,
    draft_fingerprint,
)
from app.skill_md import SECTION_ORDER, PatchOp, SectionPatch, SkillDocument
from app.skills import service
from app.storage.models import (
    Event,
    EventStatus,
    Skill,
    SkillEventKind,
    SkillLevel,
    SkillStatus,
    Trajectory,
    TrajectoryStep,
)
from app.storage.repositories import audit, events
from app.storage.repositories import skills as repo
from app.storage.repositories.skills import EvidenceRow

log = logging.getLogger(__name__)

DISTILLER = "heuristic"
ACTOR = "evolver"


@dataclass
class CycleStats:
    """What one cycle did, for the event result and the CLI."""

    trajectories: int = 0
    task_clusters_new: int = 0
    created: int = 0
    improved: int = 0
    rewritten: int = 0
    description_optimised: int = 0
    retired: int = 0
    unchanged: int = 0
    skipped: int = 0
    rejected: int = 0
    decisions: list[dict[str, object]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """A JSON-able summary."""
        return {
            "trajectories": self.trajectories,
            "task_clusters_new": self.task_clusters_new,
            "created": self.created,
            "improved": self.improved,
            "rewritten": self.rewritten,
            "description_optimised": self.description_optimised,
            "retired": self.retired,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "rejected": self.rejected,
            "decisions": self.decisions[:50],
        }


@dataclass(frozen=True)
class Candidate:
    """A document the distiller proposes for one source (task cluster, pattern or verb)."""

    level: SkillLevel
    source_key: str
    doc: SkillDocument
    domain: str
    evidence: tuple[EvidenceRow, ...]
    task_cluster_id: uuid.UUID | None = None
    children: tuple[str, ...] = ()  # source keys of child skills


EVOLVE_EVENT = "skills.evolve"


def request(session: Session, tenant_id: uuid.UUID, *, actor: str) -> Event:
    """Record a PENDING evolution event (audited) and send its job once the caller commits."""
    event = events.create(session, tenant_id, EVOLVE_EVENT)
    audit.record(
        session,
        tenant_id,
        actor=actor,
        action="skills.evolve_requested",
        target_type="event",
        target_id=str(event.id),
    )
    send_after_commit(session, TaskName.EVOLVE_SKILLS, event.id)
    return event


def run_event(
    session: Session,
    event_id: uuid.UUID,
    *,
    embedder: Embedder,
    settings: Settings,
    distiller: SkillDistiller | None = None,
) -> dict[str, object]:
    """Run the cycle an event asked for; a redelivered job for a finished event does nothing."""
    event = events.lock(session, event_id)
    if event is None:
        raise EventMissing(str(event_id))
    if event.status == EventStatus.SUCCEEDED:
        return dict(event.result)
    events.mark_running(event)
    session.flush()
    result = evolve(
        session, event.tenant_id, embedder=embedder, settings=settings, distiller=distiller
    ).as_dict()
    events.mark_succeeded(event, result)
    return result


def evolve(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    embedder: Embedder,
    settings: Settings,
    batch: int = 1000,
    distiller: SkillDistiller | None = None,
) -> CycleStats:
    """Run one cycle for a tenant over at most `batch` unseen trajectories; None: heuristic distiller."""
    distiller = distiller or HeuristicDistiller()
    stats = CycleStats()
    repo.lock_task_clusters(session, tenant_id)
    pending = list(repo.pending_trajectories(session, tenant_id, batch))
    stats.trajectories = len(pending)
    if not pending:
        return stats
    stats.task_clusters_new = assign_task_clusters(session, tenant_id, pending, embedder, settings)
    new_ids = {t.id for t in pending}
    for domain in sorted({t.domain or "" for t in pending}):
        _evolve_domain(session, tenant_id, domain, new_ids, embedder, settings, stats, distiller)
    repo.mark_seen(session, new_ids)
    session.flush()
    return stats


def assign_task_clusters(
    session: Session,
    tenant_id: uuid.UUID,
    trajectories: Sequence[Trajectory],
    embedder: Embedder,
    settings: Settings,
) -> int:
    """Give each trajectory the nearest task cluster over the threshold, else a new one; returns new ones."""
    tasks = sorted({t.task for t in trajectories})
    vectors = dict(zip(tasks, embedder.embed_documents(tasks), strict=True))
    made = 0
    for trajectory in trajectories:
        if trajectory.task_cluster_id is not None:
            continue
        domain = trajectory.domain or ""
        vector = vectors[trajectory.task]
        nearest = repo.nearest_task_cluster(session, tenant_id, domain, vector)
        if nearest is not None and nearest[1] >= settings.task_cluster_threshold:
            cluster = nearest[0]
        else:
            cluster = repo.new_task_cluster(
                session, tenant_id, domain, vector, trajectory.task, embedder.model_name
            )
            made += 1
        cluster.size += 1
        trajectory.task_cluster_id = cluster.id
    session.flush()
    return made


def run_view(trajectory: Trajectory, steps: Sequence[TrajectoryStep]) -> distill.RunView:
    """What the distiller needs of a stored trajectory."""
    assert trajectory.task_cluster_id is not None  # noqa: S101 - assigned before distillation
    return distill.RunView(
        id=trajectory.id,
        task=trajectory.task,
        task_cluster_id=trajectory.task_cluster_id,
        agent_id=trajectory.agent_id,
        success=trajectory.success,
        score=trajectory.score,
        steps=tuple(
            distill.RunStep(
                action=s.action,
                error=s.error,
                reward=s.reward,
                explored=explored(s.retrieval_id, s.used_item_ids),
            )
            for s in steps
        ),
    )


def _evolve_domain(
    session: Session,
    tenant_id: uuid.UUID,
    domain: str,
    new_ids: set[uuid.UUID],
    embedder: Embedder,
    settings: Settings,
    stats: CycleStats,
    distiller: SkillDistiller,
) -> None:
    cluster_ids = repo.domain_cluster_ids(session, tenant_id, domain)
    trajectories = repo.cluster_trajectories(session, cluster_ids, settings.skill_runs_per_cluster)
    steps = repo.steps_of(session, [t.id for t in trajectories])
    runs = [run_view(t, steps[t.id]) for t in trajectories]
    evidence = {t.id: EvidenceRow(t.id, t.agent_id, t.success, t.score) for t in trajectories}
    used = _used_skills(session, tenant_id, [s for t in trajectories if t.id in new_ids for s in steps[t.id]])
    config = refine.RefineConfig(
        min_runs=settings.skill_refine_min_runs,
        min_agents=settings.skill_refine_min_agents,
        failure_spike=settings.skill_failure_spike,
        retire_below=settings.skill_retire_below,
        do_min_score=settings.do_min_score,
    )

    candidates = _distill(session, tenant_id, domain, runs, evidence, settings)
    by_key = {c.source_key: c for c in candidates}
    hook = _Distilling(
        distiller,
        tenant_id,
        domain,
        {r.id: r for r in runs},
        tuple(_avoid_notes(session, tenant_id, domain)),
        settings.do_min_score,
    )
    new_runs = [r for r in runs if r.id in new_ids]

    # Skills the new runs used: each group decides for its skill.
    decided: set[uuid.UUID] = set()
    for skill_id, group_runs in sorted(_groups(new_runs, used).items(), key=lambda kv: str(kv[0])):
        skill = repo.get(session, tenant_id, skill_id)
        if skill is None or skill.domain != domain:
            continue
        decided.add(skill.id)
        group = refine.Group(
            runs=group_runs,
            skill_id=skill.id,
            skill_task_cluster=skill.task_cluster_id,
            procedure=_procedure_of(session, skill),
        )
        _act(
            session,
            skill,
            refine.decide(group, config),
            by_key.get(skill.source_key),
            embedder,
            settings,
            stats,
            hook,
        )

    # Task clusters with new runs: create their strategy, or weigh the runs that used none of it.
    for cluster_id in sorted({r.task_cluster_id for r in new_runs}, key=str):
        key = _strategy_key(cluster_id)
        strategy = repo.by_source_key(session, tenant_id, key)
        unused = [r for r in new_runs if r.task_cluster_id == cluster_id and r.id not in used]
        if strategy is None:
            candidate = by_key.get(key)
            if candidate is not None:
                _create(
                    session,
                    tenant_id,
                    candidate,
                    embedder,
                    stats,
                    hook,
                    reason="a task cluster with no skill",
                )
            continue
        if strategy.id in decided or not unused:
            continue
        group = refine.Group(
            runs=unused,
            skill_id=strategy.id,
            skill_task_cluster=cluster_id,
            procedure=_procedure_of(session, strategy),
            used=False,
        )
        _act(
            session, strategy, refine.decide(group, config), by_key.get(key), embedder, settings, stats, hook
        )

    # Functional and atomic skills follow the evidence of the whole domain.
    for candidate in candidates:
        if candidate.level == SkillLevel.STRATEGY:
            continue
        skill = repo.by_source_key(session, tenant_id, candidate.source_key)
        if skill is None:
            _create(
                session,
                tenant_id,
                candidate,
                embedder,
                stats,
                hook,
                reason="a recurring pattern with no skill",
            )
        elif skill.id not in decided and skill.status == SkillStatus.ACTIVE:
            _revise(
                session,
                skill,
                candidate,
                embedder,
                settings,
                stats,
                hook,
                reason="new evidence in its domain",
            )
    _link(session, tenant_id, candidates)


def _distill(
    session: Session,
    tenant_id: uuid.UUID,
    domain: str,
    runs: Sequence[distill.RunView],
    evidence: Mapping[uuid.UUID, EvidenceRow],
    settings: Settings,
) -> list[Candidate]:
    """Every skill the current evidence of a domain supports: functional and atomic first, then strategies."""
    out: list[Candidate] = []
    taken: set[str] = set()
    by_cluster: dict[uuid.UUID, list[distill.RunView]] = defaultdict(list)
    for run in runs:
        by_cluster[run.task_cluster_id].append(run)
    procedures = {
        cluster_id: procedure
        for cluster_id, cluster_runs in sorted(by_cluster.items(), key=lambda kv: str(kv[0]))
        if len(
            (procedure := distill.consensus_procedure(cluster_runs, do_min_score=settings.do_min_score)).runs
        )
        >= settings.skill_min_successes
    }
    mined = distill.mine_functional(runs, do_min_score=settings.do_min_score)
    covers = {cluster_id: distill.functional_cover(p, mined) for cluster_id, p in procedures.items()}
    # Overlapping windows of one routine are all "recurring"; keep the ones strategies actually call.
    called = {p.key for cover in covers.values() for p in cover.values()}
    patterns = [p for p in mined if p.key in called][: settings.max_functional_skills]
    kept = {p.key for p in patterns}
    pattern_names: dict[str, str] = {}
    for pattern in patterns:
        key = f"functional:{domain}:{pattern.key}"
        name = _name_for(
            session, tenant_id, key, distill.skill_name("functional", "\n".join(pattern.templates)), taken
        )
        pattern_names[pattern.key] = name
        doc = distill.functional_document(name, pattern, domain=domain)
        out.append(
            Candidate(
                SkillLevel.FUNCTIONAL,
                key,
                doc,
                domain,
                tuple(evidence[r] for r in dict.fromkeys(pattern.runs)),
            )
        )

    avoid = _avoid_notes(session, tenant_id, domain)
    atomic_names: dict[str, str] = {}
    for note in distill.atomic_notes(runs, avoid, min_uses=settings.atomic_min_uses):
        if not note.successes:
            continue  # a verb the environment never accepted is no action to teach
        key = f"atomic:{domain}:{note.verb}"
        name = _name_for(session, tenant_id, key, distill.skill_name("atomic", note.verb), taken)
        atomic_names[note.verb] = name
        doc = distill.atomic_document(name, note, domain=domain)
        out.append(
            Candidate(
                SkillLevel.ATOMIC, key, doc, domain, tuple(evidence[r] for r in dict.fromkeys(note.runs))
            )
        )

    for cluster_id, procedure in procedures.items():
        cluster_runs = by_cluster[cluster_id]
        cover = {i: p for i, p in covers[cluster_id].items() if p.key in kept}
        functional = {i: pattern_names[p.key] for i, p in cover.items()}
        spans = {i: len(p.templates) for i, p in cover.items()}
        failed = [r for r in cluster_runs if not refine.succeeded(r, settings.do_min_score)]
        key = _strategy_key(cluster_id)
        name = _name_for(
            session, tenant_id, key, distill.skill_name("strategy", _common_words(cluster_runs)), taken
        )
        doc = distill.strategy_document(
            name,
            cluster_runs[0].task,
            procedure,
            domain=domain,
            functional=functional,
            pitfalls=failure_pitfalls(failed, procedure),
            failures=len(failed),
            spans=spans,
        )
        verbs = {distill.verb_of(s.examples[0] if s.examples else s.template) for s in procedure.steps}
        children = tuple(f"functional:{domain}:{cover[i].key}" for i in sorted(cover)) + tuple(
            f"atomic:{domain}:{v}" for v in sorted(verbs) if v in atomic_names
        )
        out.append(
            Candidate(
                SkillLevel.STRATEGY,
                key,
                doc,
                domain,
                tuple(evidence[r.id] for r in cluster_runs),
                task_cluster_id=cluster_id,
                children=children,
            )
        )
    return out


def _avoid_notes(session: Session, tenant_id: uuid.UUID, domain: str) -> list[distill.AvoidNote]:
    """The domain's active `avoid` lessons, as atomic pitfalls and as context for an LLM distiller."""
    return [
        distill.AvoidNote(template=e.action_template, text=e.text, failures=e.failures)
        for e in repo.active_avoid_experiences(session, tenant_id, domain)
    ]


def failure_pitfalls(failed: Sequence[distill.RunView], procedure: distill.Procedure) -> list[str]:
    """The moves that ended failed runs off the procedure, most frequent first.

    A run's last off-plan move is blamed when it errored, or when it was the run's last step and the
    score fell there; a run merely cut short blames nothing. Generalised over what the task does not
    name (`focus on <other:object>`).
    """
    plan = {s.template for s in procedure.steps}
    counts: dict[str, int] = defaultdict(int)
    for run in failed:
        off = [s for s in run.steps if s.error or template_action(s.action, run.task).template not in plan]
        if not off:
            continue
        last = off[-1]
        fell = last is run.steps[-1] and last.reward is not None and last.reward < 0
        if not (last.error or fell):
            continue
        move = template_action(last.action, run.task, generalise_others=True).template
        what = (
            f"`{move}` failed with: {last.error.split('.')[0]}"
            if last.error
            else f"`{move}` ended a failed run"
        )
        counts[what] += 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:6]
    return [f"{what} ({n} run{'s' if n != 1 else ''})" for what, n in ranked]


def _common_words(runs: Sequence[distill.RunView], share: float = 0.8) -> str:
    """The words of the first task most tasks of the cluster share: a name free of one variation's details."""
    tasks = [set(r.task.lower().split()) for r in runs]
    words = [w for w in runs[0].task.lower().split() if sum(w in t for t in tasks) >= share * len(tasks)]
    return " ".join(words) or runs[0].task


def _strategy_key(cluster_id: uuid.UUID) -> str:
    return f"strategy:{cluster_id}"


def _name_for(session: Session, tenant_id: uuid.UUID, source_key: str, wanted: str, taken: set[str]) -> str:
    """The existing skill's name for this source, else `wanted` made unique in the tenant and this cycle."""
    existing = repo.by_source_key(session, tenant_id, source_key)
    if existing is not None:
        taken.add(existing.name)
        return existing.name
    name, n = wanted, 2
    while name in taken or repo.name_taken(session, tenant_id, name):
        suffix = f"-{n}"
        name = wanted[: 64 - len(suffix)].rstrip("-") + suffix
        n += 1
    taken.add(name)
    return name


def _used_skills(
    session: Session, tenant_id: uuid.UUID, steps: Iterable[TrajectoryStep]
) -> dict[uuid.UUID, set[uuid.UUID]]:
    """Trajectory id -> the tenant's skills its steps say they used (`used_item_ids`, never listed ones)."""
    out: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)
    for step in steps:
        for item in step.used_item_ids or ():
            raw = item.split(":", 1)[1] if item.startswith("skill:") else item
            try:
                skill_id = uuid.UUID(raw)
            except ValueError:
                continue
            out[step.trajectory_id].add(skill_id)
    known = {s for ids in out.values() for s in ids}
    real = {s for s in known if repo.get(session, tenant_id, s) is not None}
    return {t: ids & real for t, ids in out.items() if ids & real}


def _groups(
    runs: Sequence[distill.RunView], used: Mapping[uuid.UUID, set[uuid.UUID]]
) -> dict[uuid.UUID, list[distill.RunView]]:
    groups: dict[uuid.UUID, list[distill.RunView]] = defaultdict(list)
    for run in runs:
        for skill_id in used.get(run.id, ()):
            groups[skill_id].append(run)
    return groups


def _procedure_of(session: Session, skill: Skill) -> frozenset[str]:
    """The action templates a skill's head version prescribes (backticked in its Procedure section)."""
    doc = skill_md.parse(service.head(session, skill).content)
    for section in doc.sections:
        if section.title == skill_md.PROCEDURE:
            return frozenset(_backticked(section.body))
    return frozenset()


def _backticked(text: str) -> list[str]:
    parts = [p.strip() for p in text.split("`")[1::2]]
    return [p for p in parts if p and not p.startswith("<")]  # the slot legend names slots, not steps


def _act(
    session: Session,
    skill: Skill,
    decision: refine.Decision,
    candidate: Candidate | None,
    embedder: Embedder,
    settings: Settings,
    stats: CycleStats,
    hook: _Distilling,
) -> None:
    stats.decisions.append({"skill": skill.name, **decision.summary(), "reason": decision.reason})
    if decision.action == refine.Action.RETIRE:
        service.lock(session, skill)
        service.retire(session, skill, actor=ACTOR, reason=decision.reason, detail=decision.summary())
        stats.retired += 1
    elif decision.action == refine.Action.IMPROVE and candidate is not None:
        _revise(session, skill, candidate, embedder, settings, stats, hook, reason=decision.reason)
    elif decision.action == refine.Action.OPTIMISE_DESCRIPTION:
        _sharpen(session, skill, decision, stats)
    else:
        stats.skipped += 1


def _create(
    session: Session,
    tenant_id: uuid.UUID,
    candidate: Candidate,
    embedder: Embedder,
    stats: CycleStats,
    hook: _Distilling,
    *,
    reason: str,
) -> None:
    problems = skill_md.validate(candidate.doc)
    if problems:
        log.warning("rejected new skill %s: %s", candidate.doc.name, problems)
        stats.rejected += 1
        return
    result = hook.distill(candidate, candidate.doc, head=None)
    doc, author = _outcome(result, candidate.doc)
    skill = repo.add_skill(
        session,
        tenant_id=tenant_id,
        domain=candidate.domain,
        name=doc.name,
        level=candidate.level,
        source_key=candidate.source_key,
        task_cluster_id=candidate.task_cluster_id,
        description=doc.description,
        embedding=_embed(embedder, doc),
        embedding_model=embedder.model_name,
    )
    if isinstance(result, Rejected):
        # The skill row exists only now; its history starts with the rejected edit.
        _record_rejection(session, skill, result, hook.distiller.name, stats)
    service.write_version(
        session,
        skill,
        doc,
        expected_head=0,
        change=SkillEventKind.CREATED,
        author=author,
        evidence=candidate.evidence,
        reason=reason + _made_by(result),
    )
    stats.created += 1


def section_patches(old: SkillDocument, new: SkillDocument) -> list[SectionPatch]:
    """The section-level edits that turn the distiller's sections of `old` into those of `new`.

    Sections the distiller does not write (a reviewer's additions) are left alone.
    """
    patches: list[SectionPatch] = []
    if new.description != old.description:
        patches.append(SectionPatch(op=PatchOp.DESCRIPTION, title="", body=new.description))
    before = {s.title: s.body for s in old.sections}
    after = {s.title: s.body for s in new.sections}
    for title in SECTION_ORDER:
        if title in after and title not in before:
            patches.append(SectionPatch(op=PatchOp.ADD, title=title, body=after[title]))
        elif title in after and before[title] != after[title]:
            patches.append(SectionPatch(op=PatchOp.REPLACE, title=title, body=after[title]))
        elif title in before and title not in after:
            patches.append(SectionPatch(op=PatchOp.DELETE, title=title))
    return patches


def _revise(
    session: Session,
    skill: Skill,
    candidate: Candidate,
    embedder: Embedder,
    settings: Settings,
    stats: CycleStats,
    hook: _Distilling,
    *,
    reason: str,
) -> None:
    """Patch the head version with the candidate's sections; a no-op when nothing changed."""
    service.lock(session, skill)
    if skill.status != SkillStatus.ACTIVE:
        stats.skipped += 1
        return
    head = skill_md.parse(service.head(session, skill).content)
    draft = replace(candidate.doc, name=skill.name)
    # Only counts moved, or the distiller already edited a draft saying the same: no call, no version.
    only_counts = all(p.title == skill_md.EVIDENCE for p in section_patches(head, draft))
    if only_counts or _edited_already(head, draft, hook.distiller.name):
        stats.unchanged += 1
        return
    result = hook.distill(candidate, draft, head=head)
    if isinstance(result, Rejected):
        _record_rejection(session, skill, result, hook.distiller.name, stats)
    wanted, author = _outcome(result, draft)
    patches = section_patches(head, wanted)
    # Counts in the Evidence section move with every run; they alone are no reason for a version.
    if all(p.title == skill_md.EVIDENCE for p in patches):
        stats.unchanged += 1
        return
    revised = replace(skill_md.apply_patches(head, patches), metadata=wanted.metadata)
    share = skill_md.changed_share(head, revised)
    only_description = all(p.op == PatchOp.DESCRIPTION for p in patches)
    if only_description:
        change = SkillEventKind.DESCRIPTION_OPTIMISED
    elif share > settings.skill_rewrite_share:
        change = SkillEventKind.REWRITTEN
    else:
        change = SkillEventKind.IMPROVED
    rewrite_reason = (
        f"{reason}; the consensus of {len(candidate.evidence)} runs changed {share:.0%} of the body"
        if change == SkillEventKind.REWRITTEN
        else None
    )
    if isinstance(result, Distilled) and result.rewrite_reason:
        rewrite_reason = f"{rewrite_reason or reason}; {result.distiller}: {result.rewrite_reason}"
    try:
        row = service.write_version(
            session,
            skill,
            revised,
            expected_head=skill.head_version,
            change=change,
            author=author,
            evidence=candidate.evidence,
            rewrite_reason=rewrite_reason,
            reason=f"{reason}; patched: {_describe(patches)}{_made_by(result)}",
        )
    except InvalidSkill as exc:
        log.warning("rejected a version of %s: %s", skill.name, exc.detail)
        repo.add_event(
            session,
            skill,
            kind=SkillEventKind.REJECTED,
            actor=ACTOR,
            from_version=skill.head_version,
            to_version=None,
            reason="the revised SKILL.md failed validation",
            detail={"problems": exc.detail},
        )
        stats.rejected += 1
        return
    if row is None:
        stats.unchanged += 1
        return
    if only_description:
        skill.embedding = _embed(embedder, revised)
        stats.description_optimised += 1
    elif change == SkillEventKind.REWRITTEN:
        stats.rewritten += 1
    else:
        stats.improved += 1


@dataclass(frozen=True)
class _Distilling:
    """The cycle's distiller and what it may be shown of one domain's runs."""

    distiller: SkillDistiller
    tenant_id: uuid.UUID
    domain: str
    runs: Mapping[uuid.UUID, distill.RunView]
    avoid: tuple[distill.AvoidNote, ...]
    do_min_score: float

    def distill(
        self, candidate: Candidate, draft: SkillDocument, *, head: SkillDocument | None
    ) -> Distilled | Rejected:
        """The distiller's document for a candidate's draft, given its evidence runs and the head."""
        runs = [self.runs[e.trajectory_id] for e in candidate.evidence if e.trajectory_id in self.runs]
        context = build_context(
            tenant_id=self.tenant_id,
            level=candidate.level.value,
            domain=self.domain,
            runs=runs,
            avoid=self.avoid,
            head=head,
            do_min_score=self.do_min_score,
        )
        return self.distiller.distill(draft, context)


def _outcome(result: Distilled | Rejected, draft: SkillDocument) -> tuple[SkillDocument, service.Authorship]:
    """The document to write and its authorship: the distiller's, or on a rejection the heuristic draft."""
    if isinstance(result, Rejected):
        return draft, service.Authorship(actor=ACTOR, distiller=DISTILLER)
    author = service.Authorship(
        actor=ACTOR, distiller=result.distiller, llm_model=result.llm_model, prompt_hash=result.prompt_hash
    )
    return result.doc, author


def _made_by(result: Distilled | Rejected) -> str:
    """A note for the version's reason naming the model and prompt, when an LLM wrote it."""
    if isinstance(result, Distilled) and result.llm_model:
        return f"; written by {result.distiller} {result.llm_model} (prompt {result.prompt_version})"
    return ""


def _record_rejection(
    session: Session, skill: Skill, rejected: Rejected, distiller: str, stats: CycleStats
) -> None:
    """Put a distiller's rejected edit in the skill's history; the heuristic draft is written instead."""
    log.warning("the %s distiller's edit of %s was rejected: %s", distiller, skill.name, rejected.reason)
    repo.add_event(
        session,
        skill,
        kind=SkillEventKind.REJECTED,
        actor=ACTOR,
        from_version=skill.head_version or None,
        to_version=None,
        reason=f"the {distiller} distiller's edit was rejected ({rejected.reason}); wrote the draft",
        detail={
            "distiller": distiller,
            "reason": rejected.reason,
            "detail": rejected.detail,
            "prompt_hash": rejected.prompt_hash,
            "prompt_version": rejected.prompt_version,
            "llm_model": rejected.llm_model,
        },
    )
    stats.rejected += 1


def _edited_already(head: SkillDocument, draft: SkillDocument, distiller: str) -> bool:
    """Whether `distiller` wrote the head from a draft that says what this one says (evidence aside)."""
    # An LLM's prose always differs from the draft's, so only a changed draft is worth another call.
    wrote = head.metadata.get(DISTILLER_KEY) == distiller
    return wrote and head.metadata.get(DRAFT_KEY) == draft_fingerprint(draft)


def _describe(patches: Sequence[SectionPatch]) -> str:
    return ", ".join(f"{p.op.value} {p.title or 'description'}" for p in patches)


def _sharpen(session: Session, skill: Skill, decision: refine.Decision, stats: CycleStats) -> None:
    """Say in the description what the skill is not for, after it failed on other kinds of task."""
    service.lock(session, skill)
    head = skill_md.parse(service.head(session, skill).content)
    note = " Not for other kinds of task: runs that used it elsewhere failed."
    if note.strip() in head.description:
        stats.skipped += 1
        return
    description = (head.description + note)[:1024]
    revised = skill_md.apply_patches(head, [SectionPatch(op=PatchOp.DESCRIPTION, title="", body=description)])
    row = service.write_version(
        session,
        skill,
        revised,
        expected_head=skill.head_version,
        change=SkillEventKind.DESCRIPTION_OPTIMISED,
        author=service.Authorship(actor=ACTOR, distiller=DISTILLER),
        evidence=(),
        reason=decision.reason,
    )
    if row is not None:
        stats.description_optimised += 1


def _link(session: Session, tenant_id: uuid.UUID, candidates: Sequence[Candidate]) -> None:
    """Strategy skills name their functional and atomic children."""
    for candidate in candidates:
        if not candidate.children:
            continue
        parent = repo.by_source_key(session, tenant_id, candidate.source_key)
        if parent is None:
            continue
        kids = [repo.by_source_key(session, tenant_id, key) for key in candidate.children]
        repo.set_links(session, parent.id, [k.id for k in kids if k is not None])


def _embed(embedder: Embedder, doc: SkillDocument) -> list[float]:
    return embedder.embed_documents([f"{doc.name}: {doc.description}"])[0]
