"""How well /v1/retrieve's answers fit what held-out successful runs did next: Hit@k, MRR, avoid rate.

Every held-out successful run is replayed against the live API, over HTTP, step by step. A step's
*gold action* is the action the run took there; steps whose action raised an error are neither asked
about nor scored (a consensus would not keep them either). Two ways to ask:

- step-conditioned (`Mode.STEP`): at step i, POST /v1/retrieve with the run's task, the observation
  of step i, `step=i`, one `session_id` per replayed run, `recent_actions` = the gold actions before
  step i (the last 20, the API's limit), `top_k` and `token_budget`;
- static (`Mode.STATIC`), the baseline most systems use: one retrieval per run, from the task text
  (observation = the task, step 0), and that answer reused at every step.

Scoring is pure (`score_step`) and reuses the skill evaluation's slot semantics (`skill_eval.matches`):
an experience *fits* a gold action when the action instantiates the experience's action template
(literal words equal, `<task:object>` filled by words of the run's task, a `<task:animal>` category
slot by any words if the task names the category, `<object>` / `<other:object>` by any words).

- The *do list* of an answer is its `do` experiences in answer order (skills and `avoid` experiences
  left out). Hit@k: one of the first k of the do list fits the gold action. With `top_k=5` the
  answer holds at most five items of any kind, so Hit@5 asks whether any listed `do` item fits.
- MRR: the mean over steps of 1/r, r the place in the do list of the first fitting item (0 if none).
- Avoid rate: the share of steps where some listed `avoid` experience fits the gold action, i.e. the
  answer warned against what a successful run did there (should be rare).
- No-do share: steps whose answer lists no `do` experience at all.
- Skill hit: the *strategy* of an answer is the session's pinned strategy (`strategy_id`, which
  every answer of the session names, listed or not), else its first listed strategy skill; its
  procedure (the SKILL.md, fetched once per version) gives step templates. Skill hit is the share of
  steps where the gold action instantiates one of them (no strategy counts as a miss). Procedures
  are made of generic steps (`go to <object>`), so this is lenient; which strategy each run was
  given (`Report.strategies`) says more.

Figures are pooled over steps (micro), per task type (`metadata.task_name`, else the domain) and in
total. Against a deployment (not a scratch library) remember that it withholds one item from a small
share of answers (`retrieval_withhold_share`) and that the replay's retrievals are logged there.
"""

from __future__ import annotations

import enum
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from app import skill_md
from app.evolver.skill_eval import matches, procedure_templates, succeeded

RETRIEVE_PATH = "/v1/retrieve"
RECENT_ACTIONS = 20  # RetrieveIn.recent_actions' limit
HIT_AT = (1, 5)
DO, AVOID = "do", "avoid"
EXPERIENCE, SKILL, STRATEGY = "experience", "skill", "strategy"

Run = TypeVar("Run", bound=Mapping[str, Any])


class Mode(enum.StrEnum):
    """How the replay asks: at every step from its observation, or once per run from the task."""

    STEP = "step"
    STATIC = "static"


class ReplayFailed(RuntimeError):
    """The API refused or failed a replay request; the message says which and why."""


# --- answers and scores (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Listed:
    """One item of an answer, as the metrics see it."""

    kind: str
    id: str
    polarity: str | None = None
    template: str = ""
    level: str | None = None
    version: int | None = None


def listed(answer: Mapping[str, Any]) -> tuple[Listed, ...]:
    """The items of a /v1/retrieve answer, in answer order."""
    out = []
    for item in answer.get("items") or []:
        action = item.get("action") or {}
        out.append(
            Listed(
                kind=str(item.get("kind") or ""),
                id=str(item.get("id") or ""),
                polarity=item.get("polarity"),
                # An experience without a template (older rows) is matched by its example.
                template=str(action.get("template") or action.get("example") or ""),
                level=item.get("level"),
                version=item.get("version"),
            )
        )
    return tuple(out)


@dataclass(frozen=True)
class Answer:
    """An answer's items in order and the session's strategy skill, if any."""

    items: tuple[Listed, ...] = ()
    strategy_id: str | None = None

    @property
    def strategy(self) -> tuple[str, int | None] | None:
        """(id, version) of the session's pinned strategy, else of the first listed strategy skill."""
        listed_strategy = next((i for i in self.items if i.kind == SKILL and i.level == STRATEGY), None)
        skill_id = self.strategy_id or (listed_strategy.id if listed_strategy else None)
        if skill_id is None:
            return None
        version = next((i.version for i in self.items if i.kind == SKILL and i.id == skill_id), None)
        return skill_id, version


def answer_of(body: Mapping[str, Any]) -> Answer:
    """A /v1/retrieve answer as the metrics see it."""
    strategy_id = body.get("strategy_id")
    return Answer(items=listed(body), strategy_id=str(strategy_id) if strategy_id else None)


@dataclass(frozen=True)
class Plan:
    """A strategy skill's name and the step templates of its procedure."""

    name: str
    steps: tuple[str, ...]


@dataclass(frozen=True)
class StepResult:
    """How one answer fits one gold action."""

    step: int
    gold: str
    do_listed: int  # `do` experiences in the answer
    first_fit: int | None  # place (from 1) in the do list of the first that fits the gold action
    avoid_fit: bool  # a listed `avoid` experience fits the gold action
    strategy: str | None = None  # name of the answer's strategy skill
    skill_fit: bool = False  # the gold action instantiates a step of that strategy's procedure

    def hit(self, k: int) -> bool:
        """One of the first k `do` experiences fits the gold action."""
        return self.first_fit is not None and self.first_fit <= k

    @property
    def reciprocal_rank(self) -> float:
        """1 / the first fit's place in the do list; 0 without one."""
        return 1.0 / self.first_fit if self.first_fit else 0.0


def score_step(
    step: int,
    gold: str,
    task: str,
    items: Sequence[Listed],
    strategy: Plan | None = None,
) -> StepResult:
    """Score one answer's items (and its strategy) against the action a run of `task` took at `step`."""
    experiences = [i for i in items if i.kind == EXPERIENCE]
    do = [i for i in experiences if i.polarity == DO]
    first_fit = next((n for n, i in enumerate(do, 1) if matches(i.template, gold, task)), None)
    return StepResult(
        step=step,
        gold=gold,
        do_listed=len(do),
        first_fit=first_fit,
        avoid_fit=any(i.polarity == AVOID and matches(i.template, gold, task) for i in experiences),
        strategy=strategy.name if strategy else None,
        skill_fit=strategy is not None and any(matches(t, gold, task) for t in strategy.steps),
    )


@dataclass(frozen=True)
class EpisodeResult:
    """One replayed held-out run in one mode."""

    index: int
    task: str
    task_type: str
    mode: Mode
    steps: tuple[StepResult, ...]
    skipped: int = 0  # steps whose action raised an error: not asked about
    requests: int = 0  # retrievals this replay sent

    def as_dict(self) -> dict[str, object]:
        """For JSON: the run's figures and its misses."""
        return {
            "index": self.index,
            "task": self.task,
            "task_type": self.task_type,
            "mode": self.mode.value,
            "requests": self.requests,
            "skipped_error_steps": self.skipped,
            **figures([self]).as_dict(),
            "strategies": list(dict.fromkeys(s.strategy for s in self.steps if s.strategy)),
            "missed": [s.gold for s in self.steps if s.first_fit is None],
        }


@dataclass(frozen=True)
class Figures:
    """Step-pooled figures of some replayed runs; None where no step was scored."""

    runs: int
    steps: int
    hits: dict[int, float | None] = field(default_factory=dict)
    mrr: float | None = None
    avoid: float | None = None
    no_do: float | None = None
    skill_hit: float | None = None

    def as_dict(self) -> dict[str, object]:
        """Rounded, for JSON."""
        return {
            "runs": self.runs,
            "steps": self.steps,
            **{f"hit@{k}": _round(v) for k, v in self.hits.items()},
            "mrr": _round(self.mrr),
            "avoid_rate": _round(self.avoid),
            "no_do_share": _round(self.no_do),
            "skill_hit": _round(self.skill_hit),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _share(flags: Iterable[bool | float], n: int) -> float | None:
    return sum(flags) / n if n else None


def figures(episodes: Sequence[EpisodeResult], hit_at: Sequence[int] = HIT_AT) -> Figures:
    """Hit@k, MRR, avoid rate and the skill figures, pooled over the steps of `episodes`."""
    steps = [s for e in episodes for s in e.steps]
    n = len(steps)
    return Figures(
        runs=len(episodes),
        steps=n,
        hits={k: _share((s.hit(k) for s in steps), n) for k in hit_at},
        mrr=_share((s.reciprocal_rank for s in steps), n),
        avoid=_share((s.avoid_fit for s in steps), n),
        no_do=_share((s.do_listed == 0 for s in steps), n),
        skill_hit=_share((s.skill_fit for s in steps), n),
    )


# --- held-out runs -------------------------------------------------------------------------------


def task_type(run: Mapping[str, Any]) -> str:
    """What kind of task a run is: its `metadata.task_name`, else its domain."""
    metadata = run.get("metadata") or {}
    return str(metadata.get("task_name") or run.get("domain") or "-")


def gold_steps(run: Mapping[str, Any]) -> tuple[list[tuple[int, str, str]], int]:
    """(index, observation, action) of the steps that raised no error, and how many did."""
    out: list[tuple[int, str, str]] = []
    errors = 0
    for index, step in enumerate(run.get("steps") or []):
        action = " ".join(str(step.get("action") or "").split())
        if step.get("error") or not action:
            errors += 1
            continue
        out.append((index, str(step.get("observation") or "") or str(run["task"]), action))
    return out, errors


def leave_task_out(train: Sequence[Run], test: Sequence[Run], name: str) -> tuple[list[Run], list[Run]]:
    """Training runs of every other task type, and the held-out runs of task type `name`."""
    return [r for r in train if task_type(r) != name], [r for r in test if task_type(r) == name]


# --- the replay (over HTTP) ----------------------------------------------------------------------


@dataclass(frozen=True)
class Ask:
    """What every retrieval of a replay sends besides the step."""

    top_k: int = 5
    token_budget: int = 500
    skills: bool = True  # fetch strategy procedures for the skill figures


class Replayer:
    """Replays held-out runs through an HTTP client (base URL and key set; a TestClient will do)."""

    def __init__(self, client: httpx.Client, ask: Ask, *, session_prefix: str | None = None) -> None:
        self._client = client
        self._ask = ask
        self._prefix = session_prefix or f"eval-{uuid.uuid4().hex[:12]}"
        self._plans: dict[tuple[str, int | None], Plan] = {}

    def retrieve(self, task: str, observation: str, step: int, session_id: str, recent: Sequence[str]) -> Any:
        """One POST /v1/retrieve; its JSON answer."""
        body = {
            "task": task,
            "observation": observation,
            "step": step,
            "session_id": session_id,
            "recent_actions": list(recent[-RECENT_ACTIONS:]),
            "top_k": self._ask.top_k,
            "token_budget": self._ask.token_budget,
        }
        response = self._client.post(RETRIEVE_PATH, json=body)
        if response.is_error:
            raise ReplayFailed(f"POST {RETRIEVE_PATH} answered {response.status_code}: {response.text[:500]}")
        return response.json()

    def plan(self, answer: Answer) -> Plan | None:
        """The answer's strategy skill (fetched once per version); None without one or `skills` off."""
        strategy = answer.strategy
        if strategy is None or not self._ask.skills:
            return None
        if strategy not in self._plans:
            skill_id, number = strategy
            version = "head" if number is None else str(number)
            response = self._client.get(f"/v1/skills/{skill_id}/versions/{version}")
            if response.is_error:
                raise ReplayFailed(
                    f"GET skill {skill_id} version {version} answered {response.status_code}: "
                    f"{response.text[:500]}"
                )
            content = str(response.json().get("content") or "")
            self._plans[strategy] = Plan(skill_md.parse(content).name, tuple(procedure_templates(content)))
        return self._plans[strategy]

    def episode(self, index: int, run: Mapping[str, Any], mode: Mode) -> EpisodeResult:
        """Replay one held-out run in one mode."""
        task = str(run["task"])
        steps, errors = gold_steps(run)
        session_id = f"{self._prefix}-{mode.value}-{index}"
        results: list[StepResult] = []
        requests = 0
        answer = Answer()
        if mode == Mode.STATIC and steps:
            answer = answer_of(self.retrieve(task, task, 0, session_id, ()))
            requests += 1
        recent: list[str] = []
        for step, observation, gold in steps:
            if mode == Mode.STEP:
                answer = answer_of(self.retrieve(task, observation, step, session_id, recent))
                requests += 1
            results.append(score_step(step, gold, task, answer.items, self.plan(answer)))
            recent.append(gold)
        return EpisodeResult(
            index=index,
            task=task,
            task_type=task_type(run),
            mode=mode,
            steps=tuple(results),
            skipped=errors,
            requests=requests,
        )


@dataclass(frozen=True)
class Report:
    """The replayed runs of every mode, grouped by task type, and the held-out runs left out."""

    modes: tuple[Mode, ...]
    episodes: tuple[EpisodeResult, ...]
    failed_runs: int = 0  # held-out runs that did not succeed: not replayed
    top_k: int = 5

    def of(self, mode: Mode, kind: str | None = None) -> list[EpisodeResult]:
        """The episodes of one mode (and one task type)."""
        return [e for e in self.episodes if e.mode == mode and (kind is None or e.task_type == kind)]

    @property
    def task_types(self) -> list[str]:
        """Task types in the order first replayed."""
        return list(dict.fromkeys(e.task_type for e in self.episodes))

    def strategies(self, mode: Mode, kind: str | None = None) -> Counter[str]:
        """How many runs were given each strategy skill (at their first step; "-": none)."""
        return Counter((e.steps[0].strategy or "-") if e.steps else "-" for e in self.of(mode, kind))

    def table(self) -> dict[str, dict[Mode, Figures]]:
        """Figures per task type, then `total`, per mode."""
        rows = {kind: {m: figures(self.of(m, kind)) for m in self.modes} for kind in self.task_types}
        rows["total"] = {m: figures(self.of(m)) for m in self.modes}
        return rows

    def as_dict(self) -> dict[str, object]:
        """For JSON."""
        return {
            "modes": [m.value for m in self.modes],
            "top_k": self.top_k,
            "failed_runs": self.failed_runs,
            "figures": {
                kind: {m.value: f.as_dict() for m, f in row.items()} for kind, row in self.table().items()
            },
            "strategies": {
                kind: {m.value: dict(self.strategies(m, kind)) for m in self.modes}
                for kind in self.task_types
            },
            "episodes": [e.as_dict() for e in self.episodes],
        }


def replay(
    client: httpx.Client,
    held_out: Sequence[Mapping[str, Any]],
    *,
    modes: Sequence[Mode] = (Mode.STEP, Mode.STATIC),
    ask: Ask | None = None,
    do_min_score: float = 0.5,
    echo: Callable[[str], None] = lambda _: None,
    session_prefix: str | None = None,
) -> Report:
    """Replay every held-out successful run in every mode against the API behind `client`."""
    ask = ask or Ask()
    replayer = Replayer(client, ask, session_prefix=session_prefix)
    runs = [(n, r) for n, r in enumerate(held_out) if succeeded(r, do_min_score)]
    episodes = []
    for mode in modes:
        for done, (index, run) in enumerate(runs, 1):
            episode = replayer.episode(index, run, mode)
            episodes.append(episode)
            f = figures([episode])
            echo(
                f"[eval] {mode.value} {done}/{len(runs)} {episode.task_type}: {f.steps} steps, "
                f"hit@1 {_show(f.hits.get(1))}, mrr {_show(f.mrr)}"
            )
    return Report(
        modes=tuple(modes),
        episodes=tuple(episodes),
        failed_runs=len(held_out) - len(runs),
        top_k=ask.top_k,
    )


def _show(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
