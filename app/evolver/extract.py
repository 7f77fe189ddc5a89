"""Credit assignment: which steps of a trajectory teach a lesson, and the lesson's action template.

Pure: no database, no model. The pipeline feeds it trajectories whose steps already carry a
situation key and a state cluster, plus what successful runs did in those clusters.

A step gives a `do` candidate when the trajectory was admitted (its outcome score reached the
threshold) and the step raised the reward (strongest signal) or moved the run on without error. A
step where the agent asked the library and used none of its items (`explored`) is its own
exploration: unless it raised the reward it is no path for others to copy (an agent that wandered
through five rooms before finding the animal teaches the finding, not the rooms).
A step gives an `avoid` candidate when it errored, changed nothing, was the last move of a failed run
and made the score fall, or was where a failed run left what successful runs did in the same state
cluster; a step that raised the reward never does. A failed run does not teach to avoid what
successful runs did in the same cluster (a step that changed nothing there is harmless on a working
path; a successful run's own idle steps teach nothing), and a divergence is blamed only when the run
gained nothing after it.

Action templates replace the words an action takes from the task with a `<task:object>` slot, so that an
agent fills it from its own task and never copies another variation's object; in `avoid` lessons
from failed runs, objects the task does not name become an `<other:object>` slot ("anything the task does
not name"), which generalises "focus on orange juice" when the task was about water. Where the right
object is never named either (the longest-lived animal), the agent reads "anything the task does not
name" as anything outside the values the library has seen succeed in the task's category.
"""

from __future__ import annotations

import enum
import hashlib
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

MAX_WORDS = 64
TRIGGER_WORDS = 18

STOPWORDS = frozenset(
    "a an the to on in into at of with from for and or is are it its you your task this that which by "
    "up down out off over under then than be as there here all some any".split()
)


class Reason(enum.StrEnum):
    REWARD_ROSE = "reward_rose"
    SUCCESS_PATH = "success_path"
    ERRORED = "errored"
    NO_CHANGE = "no_change"
    ENDED_FAILED_EPISODE = "ended_failed_episode"
    DIVERGED = "diverged_from_success"


# Higher first: when a trajectory offers more candidates than it may add, these win.
PRIORITY = {
    Reason.REWARD_ROSE: 1.0,
    Reason.ENDED_FAILED_EPISODE: 0.9,
    Reason.DIVERGED: 0.8,
    Reason.ERRORED: 0.7,
    Reason.SUCCESS_PATH: 0.4,
    Reason.NO_CHANGE: 0.3,
}


@dataclass(frozen=True)
class StepView:
    """What extraction needs of one stored step."""

    id: uuid.UUID
    idx: int
    situation_key: str
    cluster_id: uuid.UUID | None
    action: str
    error: str | None = None
    reward: float | None = None
    explored: bool = False  # the agent asked the library here and used none of its items


def explored(retrieval_id: str | None, used_item_ids: Sequence[str] | None) -> bool:
    """A step taken after asking the library (`retrieval_id`) without using any item it named."""
    return retrieval_id is not None and not used_item_ids


@dataclass(frozen=True)
class TrajectoryView:
    """What extraction needs of one stored trajectory."""

    id: uuid.UUID
    task: str
    domain: str
    agent_id: str
    success: bool | None
    score: float | None
    steps: tuple[StepView, ...]


@dataclass(frozen=True)
class Slot:
    """A hole in an action template: `task` slots are filled from the agent's own task."""

    name: str
    source: str
    example: str


@dataclass(frozen=True)
class ActionTemplate:
    """An action with slots, and the concrete action it came from."""

    template: str
    example: str
    slots: tuple[Slot, ...] = ()


@dataclass(frozen=True)
class Candidate:
    """A lesson one step offers, before admission and dedup."""

    polarity: str
    reason: Reason
    trajectory_id: uuid.UUID
    step_id: uuid.UUID
    cluster_id: uuid.UUID | None
    situation: str
    action: ActionTemplate
    text: str
    priority: float
    detail: str = ""

    @property
    def dedup_key(self) -> str:
        """Same polarity, cluster and template: the same lesson."""
        raw = f"{self.polarity}|{self.cluster_id}|{self.action.template}"
        return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class ExtractionConfig:
    """Admission thresholds."""

    do_min_score: float = 0.7
    include_no_change: bool = True


@dataclass(frozen=True)
class ClusterHistory:
    """What successful runs did in each state cluster: cluster id -> action templates."""

    success_templates: Mapping[uuid.UUID, frozenset[str]] = field(default_factory=dict)

    def did(self, cluster_id: uuid.UUID | None, template: str) -> bool:
        """Whether successful runs took this action template in this cluster."""
        return cluster_id is not None and template in self.success_templates.get(cluster_id, frozenset())


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _content_words(text: str) -> set[str]:
    return {w for w in _words(text) if w not in STOPWORDS and len(w) > 2}


def template_action(action: str, task: str, *, generalise_others: bool = False) -> ActionTemplate:
    """Task words become `<task:object>`; with `generalise_others`, other objects `<other:object>`."""
    tokens = action.strip().split()
    if len(tokens) <= 1:
        return ActionTemplate(template=action.strip().lower(), example=action.strip())
    task_words = _content_words(task)
    out: list[str] = [tokens[0].lower()]  # the verb is never a slot
    slots: list[Slot] = []
    run: list[str] = []
    run_kind = ""

    def flush() -> None:
        nonlocal run, run_kind
        if run:
            name = "task" if run_kind == "task" else "other"
            out.append(f"<{name}:object>")
            slots.append(
                Slot(name=name, source="task" if name == "task" else "not_in_task", example=" ".join(run))
            )
        run, run_kind = [], ""

    for token in tokens[1:]:
        word = token.lower().strip(".,;:!?\"'()")
        if word in task_words:
            kind = "task"
        elif generalise_others and word not in STOPWORDS and len(word) > 2 and not word.isdigit():
            kind = "other"
        else:
            kind = ""
        if kind and kind == run_kind:
            run.append(token)
            continue
        flush()
        if kind:
            run, run_kind = [token], kind
        else:
            out.append(token.lower())
    flush()
    return ActionTemplate(template=" ".join(out), example=action.strip(), slots=tuple(slots))


def extract(
    trajectory: TrajectoryView, history: ClusterHistory, config: ExtractionConfig | None = None
) -> list[Candidate]:
    """Every candidate lesson of one trajectory, highest priority first."""
    config = config or ExtractionConfig()
    admitted_do = _admitted(trajectory, config)
    failed = trajectory.success is False or (
        trajectory.success is None and trajectory.score is not None and trajectory.score < config.do_min_score
    )
    steps = sorted(trajectory.steps, key=lambda s: s.idx)
    # Whether any later step raised the score: a divergence followed by progress did not doom the run.
    gained_after = [False] * len(steps)
    for position in range(len(steps) - 2, -1, -1):
        later = steps[position + 1].reward
        gained_after[position] = gained_after[position + 1] or (later is not None and later > 0)
    candidates: list[Candidate] = []
    diverged_once = False
    for position, step in enumerate(steps):
        following = steps[position + 1] if position + 1 < len(steps) else None
        changed = following is None or following.situation_key != step.situation_key
        rewarded = step.reward is not None and step.reward > 0
        plain = template_action(step.action, trajectory.task)

        if step.error:
            candidates.append(_candidate(trajectory, step, "avoid", Reason.ERRORED, plain, detail=step.error))
            continue
        if rewarded:
            # The environment scored this step: it teaches `do` when the run is admitted, and whatever
            # the run did later it is never the step to avoid (no divergence, no idle step).
            if admitted_do:
                candidates.append(_candidate(trajectory, step, "do", Reason.REWARD_ROSE, plain))
            continue
        # A run that was merely cut short teaches nothing here; one whose score fell at the end does.
        if failed and following is None and step.reward is not None and step.reward < 0:
            general = template_action(step.action, trajectory.task, generalise_others=True)
            candidates.append(_candidate(trajectory, step, "avoid", Reason.ENDED_FAILED_EPISODE, general))
            continue
        if failed and not diverged_once and not gained_after[position] and step.cluster_id is not None:
            done_here = history.success_templates.get(step.cluster_id, frozenset())
            if done_here and plain.template not in done_here:
                # Kept literal: the object may be right in another variation, only the move was wrong here.
                diverged_once = True
                instead = sorted(done_here)[0]
                candidates.append(
                    _candidate(trajectory, step, "avoid", Reason.DIVERGED, plain, detail=instead)
                )
                continue
        if (
            not changed
            and not rewarded
            and config.include_no_change
            and not admitted_do
            and not history.did(step.cluster_id, plain.template)
        ):
            candidates.append(_candidate(trajectory, step, "avoid", Reason.NO_CHANGE, plain))
            continue
        if admitted_do and changed and not step.explored:
            candidates.append(_candidate(trajectory, step, "do", Reason.SUCCESS_PATH, plain))
    candidates.sort(key=lambda c: (-c.priority, c.situation, c.action.template))
    return candidates


def _admitted(trajectory: TrajectoryView, config: ExtractionConfig) -> bool:
    if trajectory.score is not None:
        return trajectory.score >= config.do_min_score and trajectory.success is not False
    return trajectory.success is True


def _candidate(
    trajectory: TrajectoryView,
    step: StepView,
    polarity: str,
    reason: Reason,
    action: ActionTemplate,
    detail: str = "",
) -> Candidate:
    return Candidate(
        polarity=polarity,
        reason=reason,
        trajectory_id=trajectory.id,
        step_id=step.id,
        cluster_id=step.cluster_id,
        situation=step.situation_key,
        action=action,
        text=render_text(polarity, reason, step.situation_key, action, detail),
        priority=PRIORITY[reason]
        + (min(step.reward or 0.0, 1.0) * 0.05 if reason == Reason.REWARD_ROSE else 0.0),
        detail=detail,
    )


def _because(reason: Reason, detail: str) -> str:
    short = " ".join(detail.split()[:8])
    return {
        Reason.REWARD_ROSE: "it raised the score",
        Reason.SUCCESS_PATH: "successful runs took this step here",
        Reason.ERRORED: f"it failed with: {short}",
        Reason.NO_CHANGE: "it changed nothing",
        Reason.ENDED_FAILED_EPISODE: "it ended a failed run",
        Reason.DIVERGED: f"successful runs did `{short}` here instead",
    }[reason]


def render_text(
    polarity: str, reason: Reason, situation: str, action: ActionTemplate, detail: str = ""
) -> str:
    """'When <situation>, do/avoid `<template>` ... because ...', trigger first, at most 64 words."""
    notes: list[str] = []
    if any(s.name == "task" for s in action.slots):
        notes.append("filling <task:object> from your own task")
    if any(s.name == "other" for s in action.slots):
        notes.append("on anything your task does not name")
    tail = f"{polarity} `{action.template}`" + (f" ({'; '.join(notes)})" if notes else "")
    tail += f" because {_because(reason, detail)}."
    trigger = situation.split()
    budget = MAX_WORDS - len(tail.split()) - 1
    keep = max(3, min(TRIGGER_WORDS, budget))
    lead = " ".join(trigger[:keep]) + ("..." if len(trigger) > keep else "")
    words = f"When {lead}, {tail}".split()
    return " ".join(words[:MAX_WORDS])
