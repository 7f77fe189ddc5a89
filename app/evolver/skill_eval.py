"""How well strategy skills plan held-out successful runs: step precision, recall and order agreement.

For a held-out successful run of a known kind of task, the strategy skill of its task cluster says
which steps to take in which order; the run says what succeeded. Scoring is pure:

- a procedure step *matches* a gold action when the action instantiates its template (`matches`):
  literal words equal, a `<task:object>` slot filled by words of the held-out task, an `<object>`
  or `<other:object>` slot by any words;
- precision is the share of procedure steps that match some gold action, recall the share of gold
  actions that some procedure step matches (a step that repeats, "go to <object>", may cover
  several actions);
- order agreement is the normalised LCS of the matched sequence: the longest in-order pairing of
  steps with actions divided by the largest one-to-one pairing in any order. A plan whose matched
  steps all occur in its order scores 1.0; one swapped pair out of n paired steps scores (n-1)/n.
  Order is not a count: a step the run takes fewer times than the plan says does not lower it.

Precision and recall let one step cover several actions, so a plan of generic steps ("open door to
<object>" four times) can reach 1.0 on a run with two doors. Their one-to-one forms
(`paired_precision`, `paired_recall`: the largest one-to-one pairing over steps, over actions) count
a step once; report both.

Gold actions are the run's steps that raised no error, as consensus procedures are made of those.
`aggregate` pools runs two ways: micro (counts summed, then divided) and macro (per-run ratios
averaged). `evaluate` is the service: it finds each held-out task's cluster as the evolver would
assign it, and that cluster's active strategy skill at its head version.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from statistics import fmean
from typing import Any

from sqlalchemy.orm import Session

from app import skill_md
from app.config import Settings
from app.embedding import Embedder
from app.skills import service
from app.storage.repositories import skills as repo

TASK_SLOT = "<task:object>"
_PUNCTUATION = ".,;:!?\"'()"
_CATEGORY_SLOT = re.compile(r"<task:(?P<category>[a-z0-9][a-z0-9-]*)>")
_STEP_LINE = re.compile(r"^\s*\d+[.)]\s+(?P<body>.*)$")
_CODE_SPAN = re.compile(r"`(?P<code>[^`\n]+)`")

# A template token: ("word", w) must equal w; ("task", "") takes task words; ("any", "") any words.
_Token = tuple[str, str]


# --- templates --------------------------------------------------------------------------------


def procedure_templates(skill_md_text: str) -> list[str]:
    """The ordered step templates of a strategy's Procedure section, functional-skill lines expanded."""
    section = skill_md.parse(skill_md_text).section(skill_md.PROCEDURE)
    if section is None:
        return []
    templates: list[str] = []
    for line in section.body.split("\n"):
        step = _STEP_LINE.match(line)
        if step is None:
            continue  # the slot legend, "...and N more steps", prose
        body = step.group("body")
        for span in _CODE_SPAN.finditer(body):
            # A slot note, " (`<object>` varies by task; e.g. ...)", names a slot, not a step.
            if body[: span.start()].endswith("("):
                continue
            template = " ".join(span.group("code").split())
            if template:
                templates.append(template)
    return templates


def _bare(word: str) -> str:
    return word.strip(_PUNCTUATION) or word


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def _tokens(template: str, task_words: set[str]) -> tuple[_Token, ...] | None:
    """The template as tokens; None when it can never fit this task (a category the task lacks)."""
    out: list[_Token] = []
    for raw in template.lower().split():
        category = _CATEGORY_SLOT.fullmatch(raw)
        if raw == TASK_SLOT:
            out.append(("task", ""))
        elif category is not None:
            # "<task:animal>": any object, if the task asks for an animal at all.
            if category.group("category") not in task_words:
                return None
            out.append(("any", ""))
        elif raw.startswith("<") and raw.endswith(">"):
            out.append(("any", ""))
        else:
            out.append(("word", _bare(raw)))
    return tuple(out)


def _fits(tokens: Sequence[_Token], words: Sequence[str], task_words: set[str]) -> bool:
    """Whether `words` instantiate `tokens`; every slot takes one word at least."""
    n, m = len(tokens), len(words)
    # fit[i][j]: tokens[i:] match words[j:]
    fit = [[False] * (m + 1) for _ in range(n + 1)]
    fit[n][m] = True
    for i in range(n - 1, -1, -1):
        kind, value = tokens[i]
        for j in range(m - 1, -1, -1):
            if kind == "word":
                fit[i][j] = _bare(words[j]) == value and fit[i + 1][j + 1]
                continue
            for k in range(j, m):
                if kind == "task" and not _words(words[k]) <= task_words:
                    break
                if fit[i + 1][k + 1]:
                    fit[i][j] = True
                    break
    return fit[0][0]


def matches(template: str, action: str, task: str) -> bool:
    """Whether a concrete action instantiates a template for an agent whose task is `task`."""
    task_words = _words(task)
    tokens = _tokens(template, task_words)
    return tokens is not None and _fits(tokens, action.lower().split(), task_words)


# --- scores -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepScores:
    """How one procedure fits one gold run: counts, and the steps and actions left unmatched."""

    steps: int
    actions: int
    matched_steps: int
    matched_actions: int
    paired: int  # the largest one-to-one pairing of steps with actions, in any order
    in_order: int  # the longest pairing that keeps both orders (LCS)
    extra_steps: tuple[str, ...] = ()  # templates no gold action instantiates
    missed_actions: tuple[str, ...] = ()  # gold actions no step covers

    @property
    def precision(self) -> float | None:
        """Share of procedure steps that match some gold action; None for an empty procedure."""
        return self.matched_steps / self.steps if self.steps else None

    @property
    def recall(self) -> float | None:
        """Share of gold actions some procedure step matches; None for a run with no actions."""
        return self.matched_actions / self.actions if self.actions else None

    @property
    def order(self) -> float | None:
        """Longest in-order pairing over the largest pairing; None when no step matched."""
        return self.in_order / self.paired if self.paired else None

    @property
    def paired_precision(self) -> float | None:
        """Share of steps with an action of their own (one-to-one); stricter when a step repeats."""
        return self.paired / self.steps if self.steps else None

    @property
    def paired_recall(self) -> float | None:
        """Share of actions with a step of their own (one-to-one): a move planned once counts once."""
        return self.paired / self.actions if self.actions else None


@dataclass(frozen=True)
class Figures:
    """Precision, recall, order agreement and the one-to-one pair; None where nothing was measured."""

    precision: float | None
    recall: float | None
    order: float | None
    paired_precision: float | None = None
    paired_recall: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        """Rounded, for JSON."""
        return {k: _round(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Aggregate:
    """Figures over several runs: micro sums the counts first, macro averages each run's ratios."""

    runs: int
    micro: Figures
    macro: Figures

    def as_dict(self) -> dict[str, object]:
        """For JSON."""
        return {"runs": self.runs, "micro": self.micro.as_dict(), "macro": self.macro.as_dict()}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _max_pairing(hits: Sequence[Sequence[int]], actions: int) -> int:
    """Largest one-to-one pairing of steps with the actions they match (augmenting paths)."""
    owner = [-1] * actions

    def augment(step: int, seen: set[int]) -> bool:
        for action in hits[step]:
            if action in seen:
                continue
            seen.add(action)
            if owner[action] < 0 or augment(owner[action], seen):
                owner[action] = step
                return True
        return False

    return sum(augment(step, set()) for step in range(len(hits)))


def _in_order(hit: Sequence[Sequence[bool]], actions: int) -> int:
    """Longest common subsequence of steps and actions under the match relation."""
    previous = [0] * (actions + 1)
    for row in hit:
        current = [0] * (actions + 1)
        for j in range(actions):
            current[j + 1] = previous[j] + 1 if row[j] else max(previous[j + 1], current[j])
        previous = current
    return previous[actions]


def score(templates: Sequence[str], actions: Sequence[str], task: str) -> StepScores:
    """How a procedure's templates fit the actions of one successful run of `task`."""
    task_words = _words(task)
    tokens = [_tokens(t, task_words) for t in templates]
    words = [a.lower().split() for a in actions]
    hit = [[t is not None and _fits(t, w, task_words) for w in words] for t in tokens]
    step_hit = [any(row) for row in hit]
    action_hit = [any(row[j] for row in hit) for j in range(len(actions))]
    return StepScores(
        steps=len(templates),
        actions=len(actions),
        matched_steps=sum(step_hit),
        matched_actions=sum(action_hit),
        paired=_max_pairing([[j for j, h in enumerate(row) if h] for row in hit], len(actions)),
        in_order=_in_order(hit, len(actions)),
        extra_steps=tuple(t for t, h in zip(templates, step_hit, strict=True) if not h),
        missed_actions=tuple(a for a, h in zip(actions, action_hit, strict=True) if not h),
    )


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _mean(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return fmean(known) if known else None


def aggregate(scores: Sequence[StepScores]) -> Aggregate:
    """Micro and macro averages of several runs' scores."""
    return Aggregate(
        runs=len(scores),
        micro=Figures(
            precision=_ratio(sum(s.matched_steps for s in scores), sum(s.steps for s in scores)),
            recall=_ratio(sum(s.matched_actions for s in scores), sum(s.actions for s in scores)),
            order=_ratio(sum(s.in_order for s in scores), sum(s.paired for s in scores)),
            paired_precision=_ratio(sum(s.paired for s in scores), sum(s.steps for s in scores)),
            paired_recall=_ratio(sum(s.paired for s in scores), sum(s.actions for s in scores)),
        ),
        macro=Figures(
            precision=_mean(s.precision for s in scores),
            recall=_mean(s.recall for s in scores),
            order=_mean(s.order for s in scores),
            paired_precision=_mean(s.paired_precision for s in scores),
            paired_recall=_mean(s.paired_recall for s in scores),
        ),
    )


# --- the service --------------------------------------------------------------------------------


class Unscored(enum.StrEnum):
    """Why a held-out run was not scored; the last two count as "no skill"."""

    FAILED_RUN = "failed_run"
    NO_TASK_CLUSTER = "no_task_cluster"
    NO_STRATEGY = "no_strategy"


NO_SKILL = frozenset({Unscored.NO_TASK_CLUSTER, Unscored.NO_STRATEGY})


@dataclass(frozen=True)
class ItemResult:
    """One held-out run: where it landed and, if a strategy skill was there, its scores."""

    index: int
    task: str
    domain: str
    similarity: float | None = None
    task_cluster_id: uuid.UUID | None = None
    skill: str | None = None
    version: int | None = None
    scores: StepScores | None = None
    unscored: Unscored | None = None

    def as_dict(self) -> dict[str, object]:
        """For JSON."""
        s = self.scores
        return {
            "index": self.index,
            "task": self.task,
            "domain": self.domain,
            "similarity": _round(self.similarity),
            "task_cluster_id": str(self.task_cluster_id) if self.task_cluster_id else None,
            "skill": self.skill,
            "version": self.version,
            "unscored": self.unscored.value if self.unscored else None,
            "precision": _round(s.precision) if s else None,
            "recall": _round(s.recall) if s else None,
            "order": _round(s.order) if s else None,
            "paired_precision": _round(s.paired_precision) if s else None,
            "paired_recall": _round(s.paired_recall) if s else None,
            "steps": s.steps if s else None,
            "actions": s.actions if s else None,
            "extra_steps": list(s.extra_steps) if s else [],
            "missed_actions": list(s.missed_actions) if s else [],
        }


@dataclass(frozen=True)
class ClusterReport:
    """The scored runs of one task cluster and its strategy skill."""

    task_cluster_id: uuid.UUID
    skill: str
    version: int
    templates: tuple[str, ...]
    figures: Aggregate

    @property
    def steps(self) -> int:
        """Steps of the strategy's procedure."""
        return len(self.templates)

    def as_dict(self) -> dict[str, object]:
        """For JSON."""
        return {
            "task_cluster_id": str(self.task_cluster_id),
            "skill": self.skill,
            "version": self.version,
            "steps": self.steps,
            **self.figures.as_dict(),
            "templates": list(self.templates),
        }


@dataclass(frozen=True)
class EvalReport:
    """Every held-out run, the figures per task cluster, and the total over all scored runs."""

    items: tuple[ItemResult, ...]
    clusters: tuple[ClusterReport, ...]
    total: Aggregate

    @property
    def no_skill(self) -> tuple[ItemResult, ...]:
        """Successful runs with no task cluster over the threshold or no active strategy skill."""
        return tuple(i for i in self.items if i.unscored in NO_SKILL)

    @property
    def failed(self) -> tuple[ItemResult, ...]:
        """Held-out runs that did not succeed: not evaluated."""
        return tuple(i for i in self.items if i.unscored == Unscored.FAILED_RUN)

    def as_dict(self) -> dict[str, object]:
        """For JSON."""
        return {
            "clusters": [c.as_dict() for c in self.clusters],
            "total": self.total.as_dict(),
            "no_skill": len(self.no_skill),
            "failed_runs": len(self.failed),
            "items": [i.as_dict() for i in self.items],
        }


@dataclass(frozen=True)
class _Strategy:
    name: str
    version: int
    templates: tuple[str, ...]


def succeeded(item: Mapping[str, Any], do_min_score: float) -> bool:
    """An API trajectory item's outcome: its success flag, else its score against the threshold."""
    outcome = item.get("outcome") or {}
    if outcome.get("success") is not None:
        return bool(outcome["success"])
    return outcome.get("score") is not None and float(outcome["score"]) >= do_min_score


def gold_actions(item: Mapping[str, Any]) -> list[str]:
    """The actions of an API trajectory item's steps that raised no error."""
    return [
        " ".join(str(s["action"]).split())
        for s in item.get("steps") or []
        if not s.get("error") and str(s.get("action") or "").strip()
    ]


def evaluate(
    session: Session,
    tenant_id: uuid.UUID,
    held_out: Sequence[Mapping[str, Any]],
    *,
    embedder: Embedder,
    settings: Settings,
) -> EvalReport:
    """Score the strategy skill of each held-out successful run's task cluster against that run."""
    # The filtered HNSW scan the evolver uses, so a task lands where the evolver would put it.
    repo.use_filtered_scans(session)
    tasks = sorted({str(item["task"]) for item in held_out})
    vectors = dict(zip(tasks, embedder.embed_documents(tasks), strict=True)) if tasks else {}
    strategies: dict[uuid.UUID, _Strategy | None] = {}

    def strategy_of(cluster_id: uuid.UUID) -> _Strategy | None:
        if cluster_id not in strategies:
            skill = repo.active_strategy(session, tenant_id, cluster_id)
            strategies[cluster_id] = (
                None
                if skill is None
                else _Strategy(
                    skill.name,
                    skill.head_version,
                    tuple(procedure_templates(service.head(session, skill).content)),
                )
            )
        return strategies[cluster_id]

    items: list[ItemResult] = []
    for index, item in enumerate(held_out):
        task, domain = str(item["task"]), str(item.get("domain") or "")
        base = ItemResult(index=index, task=task, domain=domain)
        if not succeeded(item, settings.do_min_score):
            items.append(replace(base, unscored=Unscored.FAILED_RUN))
            continue
        nearest = repo.nearest_task_cluster(session, tenant_id, domain, vectors[task])
        if nearest is None or nearest[1] < settings.task_cluster_threshold:
            similarity = nearest[1] if nearest else None
            items.append(replace(base, similarity=similarity, unscored=Unscored.NO_TASK_CLUSTER))
            continue
        cluster, similarity = nearest
        strategy = strategy_of(cluster.id)
        if strategy is None:
            items.append(
                replace(
                    base, similarity=similarity, task_cluster_id=cluster.id, unscored=Unscored.NO_STRATEGY
                )
            )
            continue
        items.append(
            replace(
                base,
                similarity=similarity,
                task_cluster_id=cluster.id,
                skill=strategy.name,
                version=strategy.version,
                scores=score(strategy.templates, gold_actions(item), task),
            )
        )
    plans = {k: v.templates for k, v in strategies.items() if v is not None}
    return _report(items, plans)


def _report(items: Sequence[ItemResult], plans: Mapping[uuid.UUID, tuple[str, ...]]) -> EvalReport:
    """Group scored items by task cluster (sorted by skill name) and total them."""
    groups: dict[uuid.UUID, list[ItemResult]] = {}
    for item in items:
        if item.scores is not None and item.task_cluster_id is not None:
            groups.setdefault(item.task_cluster_id, []).append(item)
    clusters = []
    for cluster_id, group in groups.items():
        scores = [i.scores for i in group if i.scores is not None]
        clusters.append(
            ClusterReport(
                task_cluster_id=cluster_id,
                skill=group[0].skill or "",
                version=group[0].version or 0,
                templates=plans[cluster_id],
                figures=aggregate(scores),
            )
        )
    clusters.sort(key=lambda c: (c.skill, str(c.task_cluster_id)))
    scored = [i.scores for i in items if i.scores is not None]
    return EvalReport(items=tuple(items), clusters=tuple(clusters), total=aggregate(scored))
