"""Collective refinement (SkillClaw): what to do with a skill given the new runs that bear on it.

Pure: no database, no model. New trajectories are grouped by the skill they actually used (the
`used_item_ids` of their steps, never a skill merely listed to them), and runs of a task cluster
that used no skill form a group of their own. For each group with enough evidence the evolver
improves the skill, sharpens its description, creates one, retires it, or skips when unsure.

A failure counts against a skill only when the run followed the skill and failed at one of its
steps; an unparseable action is the agent's failure, and a timeout or crash the environment's.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from app.evolver.extract import template_action
from app.evolver.skill_distill import RunView, canonical

_ENVIRONMENT = re.compile(
    r"timed? ?out|timeout|connection (refused|reset|error)|rate limit|\b5\d\d\b|internal (server )?error|"
    r"crash|unavailable|killed",
    re.IGNORECASE,
)


class Action(enum.StrEnum):
    IMPROVE = "improve"
    OPTIMISE_DESCRIPTION = "optimise_description"
    CREATE = "create"
    RETIRE = "retire"
    SKIP = "skip"


class Blame(enum.StrEnum):
    NONE = "none"
    SKILL = "skill"
    AGENT = "agent"
    ENVIRONMENT = "environment"


@dataclass(frozen=True)
class RefineConfig:
    """Evidence thresholds (see `Settings.skill_*`)."""

    min_runs: int = 3
    min_agents: int = 2
    failure_spike: float = 0.5
    retire_below: float = 0.25
    do_min_score: float = 0.7


@dataclass(frozen=True)
class Group:
    """New runs that used one skill (or none), and what that skill prescribes."""

    runs: Sequence[RunView]
    skill_id: uuid.UUID | None = None
    skill_task_cluster: uuid.UUID | None = None
    procedure: Collection[str] = ()  # the skill's step templates
    used: bool = True  # False: runs of the skill's task cluster that did not use it


@dataclass(frozen=True)
class Decision:
    """What to do, why, and the counts behind it."""

    action: Action
    reason: str
    runs: int = 0
    agents: int = 0
    successes: int = 0
    skill_failures: int = 0
    agent_failures: int = 0
    environment_failures: int = 0
    foreign_failures: int = 0
    contradicted: tuple[str, ...] = ()

    def summary(self) -> dict[str, object]:
        """The counts, for the skill's history."""
        return {
            "action": self.action.value,
            "runs": self.runs,
            "agents": self.agents,
            "successes": self.successes,
            "skill_failures": self.skill_failures,
            "agent_failures": self.agent_failures,
            "environment_failures": self.environment_failures,
            "foreign_failures": self.foreign_failures,
            "contradicted": list(self.contradicted),
        }


def succeeded(run: RunView, do_min_score: float) -> bool:
    """A run succeeded when it says so, or when it gives no verdict and its score clears the bar."""
    if run.success is not None:
        return run.success
    return run.score is not None and run.score >= do_min_score


def blame(run: RunView, procedure: Collection[str], do_min_score: float) -> Blame:
    """Whose failure a run was: the skill's (it failed at a skill step), the agent's or the environment's."""
    if succeeded(run, do_min_score):
        return Blame.NONE
    errors = [s.error for s in run.steps if s.error]
    if errors and _ENVIRONMENT.search(errors[-1]):
        return Blame.ENVIRONMENT
    if not run.steps:
        return Blame.AGENT
    last = run.steps[-1]
    if last.error:
        return Blame.AGENT  # an action the environment did not accept
    if _move(last.action, run.task) in {canonical(p) for p in procedure}:
        return Blame.SKILL
    return Blame.AGENT


def _move(action: str, task: str) -> str:
    """An action in the canonical form skill procedures are compared in (objects as `<object>`)."""
    return canonical(template_action(action, task).template)


def contradicted(runs: Sequence[RunView], procedure: Collection[str], do_min_score: float) -> list[str]:
    """The skill's steps that most of the new successful runs no longer take."""
    wins = [r for r in runs if succeeded(r, do_min_score)]
    if not wins:
        return []
    taken = [{_move(s.action, r.task) for s in r.steps if not s.error} for r in wins]
    steps = sorted({canonical(p) for p in procedure})
    return [step for step in steps if sum(step not in t for t in taken) * 2 > len(wins)]


def decide(group: Group, config: RefineConfig | None = None) -> Decision:
    """Improve, optimise the description, create, retire or skip, with the reason."""
    config = config or RefineConfig()
    runs = list(group.runs)
    n = len(runs)
    agents = len({r.agent_id for r in runs})
    wins = sum(1 for r in runs if succeeded(r, config.do_min_score))
    failures = n - wins
    blames = [blame(r, group.procedure, config.do_min_score) for r in runs]
    skill_failures = sum(
        1
        for r, b in zip(runs, blames, strict=True)
        if b == Blame.SKILL
        and (group.skill_task_cluster is None or r.task_cluster_id == group.skill_task_cluster)
    )
    foreign = sum(
        1
        for r, b in zip(runs, blames, strict=True)
        if b != Blame.NONE
        and group.skill_task_cluster is not None
        and r.task_cluster_id != group.skill_task_cluster
    )
    moved = contradicted(runs, group.procedure, config.do_min_score)
    counted = Decision(
        Action.SKIP,
        "",
        runs=n,
        agents=agents,
        successes=wins,
        skill_failures=skill_failures,
        agent_failures=blames.count(Blame.AGENT),
        environment_failures=blames.count(Blame.ENVIRONMENT),
        foreign_failures=foreign,
        contradicted=tuple(moved),
    )

    def verdict(action: Action, reason: str) -> Decision:
        return replace(counted, action=action, reason=reason)

    spike = failures >= config.min_runs and failures / max(n, 1) >= config.failure_spike
    if not ((n >= config.min_runs and agents >= config.min_agents) or spike):
        return verdict(
            Action.SKIP,
            f"not enough evidence yet: {n} runs from {agents} agents "
            f"(needs {config.min_runs} from {config.min_agents}, or a failure spike)",
        )
    if group.skill_id is None:
        return verdict(Action.CREATE, f"{n} runs ({wins} successful) used no skill")
    if group.used and foreign and foreign > skill_failures:
        return verdict(
            Action.OPTIMISE_DESCRIPTION,
            f"{foreign} failed runs used it on tasks it was not distilled for; the description must say so",
        )
    if group.used and skill_failures >= config.min_runs and wins / max(n, 1) < config.retire_below:
        return verdict(
            Action.RETIRE,
            f"{skill_failures} of {n} runs failed doing its steps; success rate {wins / max(n, 1):.0%}",
        )
    if skill_failures:
        return verdict(Action.IMPROVE, f"{skill_failures} runs failed at one of its steps")
    if moved:
        return verdict(
            Action.IMPROVE, f"most new successful runs no longer do {', '.join(f'`{m}`' for m in moved[:3])}"
        )
    if failures:
        return verdict(Action.SKIP, "the failures are the agents' or the environment's, not the skill's")
    return verdict(Action.SKIP, "the new runs agree with the skill")
