"""An agent loop on the skill library: retrieve at each step, record what was done, post the run.

    session = AgentSession(client, "Boil water", agent_id="agent-1", domain="kitchen")
    guidance = session.step(observation)        # POST /v1/retrieve
    prompt = guidance.prompt                    # lessons and skill summaries, within the token budget
    body = session.load_skill("S1")             # a skill's SKILL.md, only when the agent asks for it
    session.record(action, used=["S1", "E2"])   # the step, with the retrieval id and the items used
    trajectory_id = session.finish(success=True, score=1.0)   # POST /v1/trajectories

The posted trajectory names each step's `retrieval_id` and `used_item_ids`, so the server credits
the items used with the run's outcome; no separate `/v1/feedback` is needed.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from skillfoundry_client.client import AsyncClient, Client, VersionRef
from skillfoundry_client.models import Retrieval, RetrievedItem, StepIn

# The server's limits: /v1/retrieve's token budget and recent actions, a step's used ids.
MIN_TOKEN_BUDGET, MAX_TOKEN_BUDGET = 50, 8000
MAX_USED_ITEMS = 100
MAX_RECENT_ACTIONS = 20

HEADER = "Guidance from the skill library (cite the tags of the items you use, e.g. [E1]):"
SKILLS = "Skills:"
SKILL_NOTE = "Skills show a summary only; their full procedure can be loaded by tag."
LESSONS = "Lessons from earlier runs:"
_TAG = re.compile(r"\b([SE][0-9]+)\b")


def estimate_tokens(text: str) -> int:
    """Tokens in a text, roughly, as the server counts them: max of 4/3 per word and 1 per 4 characters."""
    return max(math.ceil(len(text.split()) * 4 / 3), math.ceil(len(text) / 4))


@dataclass(frozen=True)
class Guidance:
    """What the library offers at one step: the items, their tags (`S1`, `E1`, ...) and a prompt."""

    retrieval_id: str
    step: int
    items: list[RetrievedItem]
    tags: dict[str, str]
    prompt: str
    shown: list[RetrievedItem] = field(default_factory=list)
    strategy_id: str | None = None

    @property
    def skills(self) -> list[RetrievedItem]:
        """The skills listed, best first."""
        return [i for i in self.items if i.kind == "skill"]

    @property
    def experiences(self) -> list[RetrievedItem]:
        """The experiences listed, best first."""
        return [i for i in self.items if i.kind == "experience"]

    def item(self, tag_or_id: str) -> RetrievedItem | None:
        """The item a tag (`S1`) or an id names, if this guidance listed it."""
        wanted = self.tags.get(tag_or_id.strip().strip("[]").upper(), tag_or_id)
        return next((i for i in self.items if i.id == wanted), None)

    def mentioned(self, text: str) -> list[str]:
        """Ids of the items whose tag or id appears in `text` (a model's answer, say), in order."""
        found = [self.tags[tag] for tag in _TAG.findall(text) if tag in self.tags]
        found += [i.id for i in self.items if i.id in text]
        return list(dict.fromkeys(found))


def format_guidance(
    retrieval: Retrieval, token_budget: int
) -> tuple[str, dict[str, str], list[RetrievedItem]]:
    """The prompt text for an answer within `token_budget`, the tags of all its items, and those shown.

    Progressive disclosure: a skill shows its name and description (its body is loaded on request),
    an experience its lesson. Items are taken best first while they fit.
    """
    tags: dict[str, str] = {}
    counts = {"skill": 0, "experience": 0}
    for item in retrieval.items:
        letter = "S" if item.kind == "skill" else "E"
        counts[item.kind] = counts.get(item.kind, 0) + 1
        tags[f"{letter}{counts[item.kind]}"] = item.id
    tag_of = {item_id: tag for tag, item_id in tags.items()}
    # The fixed lines are counted up front, whether or not their section ends up shown.
    fixed = [HEADER]
    if any(i.kind == "skill" for i in retrieval.items):
        fixed += [SKILLS, SKILL_NOTE]
    if any(i.kind != "skill" for i in retrieval.items):
        fixed.append(LESSONS)
    used = sum(estimate_tokens(line) for line in fixed)
    shown: list[RetrievedItem] = []
    for item in retrieval.items:
        cost = estimate_tokens(_line(item, tag_of[item.id]))
        if used + cost > token_budget:
            continue
        used += cost
        shown.append(item)
    if not shown:
        return "", tags, []
    lines = [HEADER]
    skills = [i for i in shown if i.kind == "skill"]
    lessons = [i for i in shown if i.kind != "skill"]
    if skills:
        lines += [SKILLS, *(_line(i, tag_of[i.id]) for i in skills), SKILL_NOTE]
    if lessons:
        lines += [LESSONS, *(_line(i, tag_of[i.id]) for i in lessons)]
    return "\n".join(lines), tags, shown


def _line(item: RetrievedItem, tag: str) -> str:
    if item.kind == "skill":
        pinned = " (the strategy for this task)" if item.pinned else ""
        level = f" [{item.level}]" if item.level and not item.pinned else ""
        # No body URL: the server serves this skill's summary only (not reviewed yet).
        summary = " (summary only)" if item.body_url is None and item.body is None else ""
        return f"- [{tag}] {item.name}{pinned}{level}{summary}: {item.description or ''}".rstrip()
    return f"- [{tag}] {item.text or ''}".rstrip()


class _Session:
    """The state of one run, shared by the sync and async sessions; no I/O here."""

    def __init__(
        self,
        task: str,
        *,
        agent_id: str,
        domain: str | None = None,
        token_budget: int = 500,
        top_k: int = 8,
        session_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        recent_actions: int = 5,
    ) -> None:
        self.task = task
        self.agent_id = agent_id
        self.domain = domain
        self.token_budget = token_budget
        self.top_k = top_k
        self.session_id = session_id or f"sfc-{uuid.uuid4()}"
        self.metadata = dict(metadata or {})
        self.recent_actions = recent_actions
        self.steps: list[StepIn] = []
        self.guidance: Guidance | None = None
        self.trajectory_id: str | None = None
        self.event_id: str | None = None
        self._observation: str | None = None
        self._items: dict[str, RetrievedItem] = {}
        self._skills: dict[tuple[str, VersionRef], str] = {}
        # One key for every attempt at finish(): posting the run twice stores it once.
        self._finish_key = f"sfc-finish-{uuid.uuid4()}"

    def _retrieve_args(self, observation: str, plan_step: str | None) -> dict[str, Any]:
        self._check_open()
        return {
            "task": self.task,
            "observation": observation,
            "step": len(self.steps),
            "session_id": self.session_id,
            "recent_actions": [s["action"] for s in self.steps][-self.recent_actions :][-MAX_RECENT_ACTIONS:]
            if self.recent_actions > 0
            else [],
            "plan_step": plan_step,
            "domain": self.domain,
            "top_k": self.top_k,
            "token_budget": min(max(self.token_budget, MIN_TOKEN_BUDGET), MAX_TOKEN_BUDGET),
        }

    def _guidance(self, retrieval: Retrieval, observation: str) -> Guidance:
        prompt, tags, shown = format_guidance(retrieval, self.token_budget)
        self.guidance = Guidance(
            retrieval_id=retrieval.retrieval_id,
            step=len(self.steps),
            items=retrieval.items,
            tags=tags,
            prompt=prompt,
            shown=shown,
            strategy_id=retrieval.strategy_id,
        )
        self._observation = observation
        self._items.update((i.id, i) for i in retrieval.items)
        return self.guidance

    def _skill_ref(self, tag_or_id: str) -> tuple[str, VersionRef]:
        item = self.guidance.item(tag_or_id) if self.guidance else None
        if item is None and _TAG.fullmatch(tag_or_id.strip().strip("[]").upper()):
            raise KeyError(f"{tag_or_id} is not an item of this step's guidance")
        skill_id = item.id if item else tag_or_id
        item = item or self._items.get(skill_id)
        return skill_id, (item.version if item and item.version is not None else "head")

    def record(
        self,
        action: str,
        observation: str | None = None,
        *,
        used: Sequence[str | RetrievedItem] = (),
        reward: float | None = None,
        tool: str | None = None,
        tool_input: Any = None,
        tool_result: Any = None,
        error: str | None = None,
    ) -> StepIn:
        """Record the action taken at this step (in `observation`, by default the one given to `step`).

        `used` names the items the agent acted on: tags (`S1`), ids or the items themselves. The step
        carries the latest retrieval's id; a step recorded without a `step()` before it carries none.
        """
        self._check_open()
        seen = observation if observation is not None else self._observation
        if seen is None:
            raise ValueError("record() needs the observation: call step(observation) first or pass it")
        step: StepIn = {"observation": seen, "action": action}
        guidance, self.guidance = self.guidance, None
        if guidance is not None:
            step["retrieval_id"] = guidance.retrieval_id
        ids = [self._item_id(u, guidance) for u in used]
        if ids:
            step["used_item_ids"] = list(dict.fromkeys(ids))[:MAX_USED_ITEMS]
        if reward is not None:
            step["reward"] = reward
        if tool is not None:
            step["tool"] = tool
        if tool_input is not None:
            step["tool_input"] = tool_input
        if tool_result is not None:
            step["tool_output"] = tool_result
        if error is not None:
            step["error"] = error
        self.steps.append(step)
        self._observation = None
        return step

    @staticmethod
    def _item_id(used: str | RetrievedItem, guidance: Guidance | None) -> str:
        if isinstance(used, RetrievedItem):
            return used.id
        item = guidance.item(used) if guidance else None
        return item.id if item else used

    def _trajectory(self, success: bool | None, score: float | None) -> dict[str, Any]:
        self._check_open()
        return {
            "task": self.task,
            "agent_id": self.agent_id,
            "steps": self.steps,
            "domain": self.domain,
            "session_id": self.session_id,
            "outcome": {"success": success, "score": score},
            "metadata": self.metadata or None,
            "idempotency_key": self._finish_key,
        }

    def _check_open(self) -> None:
        if self.trajectory_id is not None:
            raise RuntimeError("this session is finished; start a new one")


class AgentSession(_Session):
    """One agent run against a `Client`: `step` before acting, `record` after, `finish` at the end."""

    def __init__(self, client: Client, task: str, **options: Any) -> None:
        super().__init__(task, **options)
        self.client = client

    def step(self, observation: str, *, plan_step: str | None = None) -> Guidance:
        """Ask the library what fits this observation; the guidance's `prompt` is ready for the model."""
        retrieval = self.client.retrieve(**self._retrieve_args(observation, plan_step))
        return self._guidance(retrieval, observation)

    def load_skill(self, tag_or_id: str) -> str:
        """The SKILL.md of a listed skill (the version listed), fetched once and then cached.

        KeyError for a tag this step's guidance does not have; PermissionDeniedError
        (`tier_withholds_body`) for a skill no reviewer has accepted yet: agents get its summary only.
        """
        skill_id, version = self._skill_ref(tag_or_id)
        if (skill_id, version) not in self._skills:
            self._skills[skill_id, version] = self.client.get_version(skill_id, version).content
        return self._skills[skill_id, version]

    def finish(self, *, success: bool | None = None, score: float | None = None) -> str:
        """Post the run as one trajectory and return its id; the session takes no more steps."""
        accepted = self.client.create_trajectory(**self._trajectory(success, score))
        self.trajectory_id, self.event_id = accepted.ids[0], accepted.event_id
        return self.trajectory_id


class AsyncAgentSession(_Session):
    """`AgentSession` for an `AsyncClient`: `step`, `load_skill` and `finish` are awaited."""

    def __init__(self, client: AsyncClient, task: str, **options: Any) -> None:
        super().__init__(task, **options)
        self.client = client

    async def step(self, observation: str, *, plan_step: str | None = None) -> Guidance:
        """Ask the library what fits this observation."""
        retrieval = await self.client.retrieve(**self._retrieve_args(observation, plan_step))
        return self._guidance(retrieval, observation)

    async def load_skill(self, tag_or_id: str) -> str:
        """The SKILL.md of a listed skill, fetched once."""
        skill_id, version = self._skill_ref(tag_or_id)
        if (skill_id, version) not in self._skills:
            self._skills[skill_id, version] = (await self.client.get_version(skill_id, version)).content
        return self._skills[skill_id, version]

    async def finish(self, *, success: bool | None = None, score: float | None = None) -> str:
        """Post the run as one trajectory and return its id."""
        accepted = await self.client.create_trajectory(**self._trajectory(success, score))
        self.trajectory_id, self.event_id = accepted.ids[0], accepted.event_id
        return self.trajectory_id
