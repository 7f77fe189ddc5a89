"""`skillfoundry eval closed-loop`: agents play held-out ScienceWorld variations with the library's guidance.

Conditions, each its own tenant in one scratch embedded PostgreSQL, served by uvicorn on a loopback
port (as `eval retrieve` does), the agent talking to it over HTTP through the Python client:

- `empty`: no library at all (the agent explores);
- `train-N`: a library learnt (`eval_library.learn`) from the recorded runs of the first N training
  variations of each task type, every version accepted by the eval reviewer (T2: bodies are served);
- `online from empty`, `online from train-N` (`online_from`: 0, N, ...): starting from that library,
  each episode is posted back as a trajectory (outcome, used item ids) and the library evolves
  in-process before the next (ingest pipeline, consolidation, skill cycle, the reviewer's acceptance:
  what `learn` does for one run). Against the library it starts from, it shows what learning from its
  own runs adds.

Every condition plays the same held-out episodes: the first variations of ScienceWorld's test split of
each task type. With `--url` and `--api-key` it plays once against a running service (`live`) instead,
learning nothing (`--post` sends the runs back; that service's worker learns from them).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.config import Settings
from app.evolver.closed_loop import (
    Agent,
    Environment,
    EpisodeResult,
    EpisodeSpec,
    Observation,
    OnlineStep,
    Summary,
    by_task,
    online,
    play,
    round_robin,
    running_mean,
)

if TYPE_CHECKING:
    from rich.table import Table
    from skillfoundry_client import Client
    from sqlalchemy.orm import Session

    from app.embedding import Embedder

DEFAULT_TASKS = ("find-animal", "find-non-living-thing", "lifespan-longest-lived")
DOMAIN = "scienceworld"
AGENT_ID = "closed-loop-agent"
REQUEST_TIMEOUT_S = 60.0

_ERROR = re.compile(
    r"^(No known action matches|Unknown action|It's not clear how|.*\bcan't\b|.*\bcannot\b|.*not possible)",
    re.IGNORECASE,
)


# --- ScienceWorld -----------------------------------------------------------------------------------


def error_of(output: str) -> str | None:
    """The simulator's first line when it did not understand or refused the action (as the recorder)."""
    text = output.strip()
    if text.startswith("Ambiguous request") or not _ERROR.match(text):
        return None
    return text.splitlines()[0][:500]


class ScienceWorldEpisode:
    """One variation of a task in a shared simulator; observations as the recorder's `look` mode."""

    def __init__(self, env: Any, task_type: str, variation: int, simplification: str) -> None:
        self._env = env
        self._load = (task_type, variation, simplification)
        env.load(task_type, variation, simplification)
        self.task = str(env.get_task_description())

    def _observation(self, output: str, info: Mapping[str, Any], done: bool) -> Observation:
        points = int(info["score"])
        look, text = str(info["look"]).strip(), output.strip()
        if text != look:
            text = f"{text}\n\n{look}"
        return Observation(
            text=text,
            valid=tuple(str(a) for a in info["valid"]),
            score=min(max(points, 0), 100) / 100.0,
            done=done or points < 0,
            error=error_of(output),
        )

    def reset(self) -> Observation:
        output, info = self._env.reset()
        return self._observation(str(output), info, False)

    def step(self, action: str) -> Observation:
        output, _, done, info = self._env.step(action)
        return self._observation(str(output), info, bool(done))


class ScienceWorld:
    """One simulator (a JVM) for every episode of a run."""

    def __init__(self, *, simplification: str = "easy", step_limit: int = 100) -> None:
        from scienceworld import ScienceWorldEnv

        # Its "Loading: ..." per episode and py4j's shutdown tracebacks (logged at INFO) are noise here.
        for name in ("scienceworld", "py4j"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.simplification = simplification
        self._env = ScienceWorldEnv("", envStepLimit=step_limit)

    def test_variations(self, task_type: str, n: int) -> list[int]:
        """The first `n` variations of the task's test split."""
        if task_type not in set(self._env.get_task_names()):
            raise ValueError(f"unknown ScienceWorld task {task_type!r}")
        self._env.load(task_type, 0, self.simplification)
        return sorted(int(v) for v in self._env.get_variations_test())[:n]

    def episode(self, spec: EpisodeSpec) -> Environment:
        return ScienceWorldEpisode(self._env, spec.task_type, spec.variation, self.simplification)

    def close(self) -> None:
        self._env.close()


# --- training data ----------------------------------------------------------------------------------


def task_type_of(item: Mapping[str, Any]) -> str:
    return str((item.get("metadata") or {}).get("task_name") or item.get("domain") or "-")


def train_subset(items: Sequence[Mapping[str, Any]], n: int) -> list[Mapping[str, Any]]:
    """The runs (gold and perturbed) of the first `n` variations of each task type, in file order."""
    chosen: dict[str, list[str]] = {}
    out = []
    for item in items:
        kind = task_type_of(item)
        variation = str((item.get("metadata") or {}).get("variation", item.get("session_id", "")))
        seen = chosen.setdefault(kind, [])
        if variation not in seen and len(seen) < n:
            seen.append(variation)
        if variation in seen:
            out.append(item)
    return out


# --- the report -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """The episodes played against one library."""

    name: str
    train_variations: int | None  # per task type; None: not a trained library
    results: tuple[EpisodeResult, ...]
    library: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "train_variations": self.train_variations,
            "library": dict(self.library),
            "seconds": round(self.seconds, 1),
            "figures": {k: s.as_dict() for k, s in by_task(self.results).items()},
            "episodes": [r.as_dict() for r in self.results],
        }


def start_name(train_variations: int) -> str:
    """The library an online run starts from: `empty` or `train-N`."""
    return f"train-{train_variations}" if train_variations else "empty"


@dataclass(frozen=True)
class OnlineRun:
    """The online condition from one starting library: its episodes, each followed by evolution."""

    start: int  # training variations per task type of the starting library (0: empty)
    steps: tuple[OnlineStep, ...]
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return f"online from {start_name(self.start)}"

    @property
    def results(self) -> list[EpisodeResult]:
        return [s.result for s in self.steps]

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "start": start_name(self.start),
            "seconds": round(self.seconds, 1),
            "figures": {k: s.as_dict() for k, s in by_task(self.results).items()},
            "episodes": [s.as_dict() for s in self.steps],
        }


@dataclass(frozen=True)
class LoopReport:
    conditions: tuple[Condition, ...]
    online: tuple[OnlineRun, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def rows(self) -> list[tuple[str, dict[str, Summary]]]:
        return [(c.name, by_task(c.results)) for c in self.conditions] + [
            (run.name, by_task(run.results)) for run in self.online
        ]

    def as_dict(self) -> dict[str, object]:
        return {
            "config": dict(self.config),
            "seconds": round(self.seconds, 1),
            "conditions": [c.as_dict() for c in self.conditions],
            "online": [run.as_dict() for run in self.online],
        }


def table(report: LoopReport) -> Table:
    """Success rate / mean score per condition and task type; steps the solved episodes took."""
    from rich.table import Table

    kinds = list(dict.fromkeys(k for _, row in report.rows() for k in row if k != "total"))
    out = Table(
        title="Closed loop on held-out variations: success rate / mean score",
        caption="online: the library learns from each episode before the next" if report.online else None,
    )
    out.add_column("library")
    for kind in [*kinds, "total"]:
        out.add_column(kind, justify="right")
    out.add_column("steps to solve", justify="right")
    for name, row in report.rows():
        cells = []
        for kind in [*kinds, "total"]:
            s = row.get(kind)
            cells.append(
                "-"
                if s is None or s.mean_score is None
                else f"{s.success_rate:.2f} / {s.mean_score:.2f} (n={s.episodes})"
            )
        steps = row["total"].solved_steps
        out.add_row(name, *cells, "-" if steps is None else f"{steps:.1f}")
    return out


def plot(report: LoopReport, path: str, *, window: int = 5) -> None:
    """Score vs training variations, and score vs episodes online, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    points = [
        (0 if c.train_variations is None else c.train_variations, c)
        for c in report.conditions
        if c.name == "empty" or c.train_variations is not None
    ]
    points.sort(key=lambda p: p[0])
    if points:
        xs = [x for x, _ in points]
        kinds = list(dict.fromkeys(r.task_type for _, c in points for r in c.results))
        for kind in kinds:
            ys = [by_task(c.results).get(kind, Summary(0, None, None)).mean_score or 0.0 for _, c in points]
            left.plot(xs, ys, marker="o", label=kind, alpha=0.7)
        total = [by_task(c.results)["total"] for _, c in points]
        left.plot(
            xs,
            [s.mean_score or 0.0 for s in total],
            marker="s",
            color="black",
            linewidth=2.5,
            label="all: mean score",
        )
        left.plot(
            xs,
            [s.success_rate or 0.0 for s in total],
            marker="^",
            color="black",
            linestyle="--",
            label="all: success rate",
        )
        left.set_xscale("symlog", linthresh=1)
        left.set_xticks(xs, [str(x) for x in xs])
        left.set_xlabel("training variations per task type (0: empty library)")
        left.set_ylabel("held-out score")
        left.set_ylim(-0.02, 1.02)
        left.set_title("Library learnt from recorded runs")
        left.legend(fontsize=7)
    if report.online:
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for run, colour in zip(report.online, colours, strict=False):
            scores = [r.score for r in run.results]
            xs = list(range(1, len(scores) + 1))
            right.plot(xs, scores, "o", alpha=0.3, color=colour)
            label = f"{run.name}: running mean ({window})"
            right.plot(xs, running_mean(scores, window), color=colour, label=label)
            # The same episodes against the library it starts from, which does not learn.
            base = next((c for c in report.conditions if c.name == start_name(run.start)), None)
            if base is not None and base.results:
                right.plot(
                    xs[: len(base.results)],
                    running_mean([r.score for r in base.results], window),
                    color=colour,
                    linestyle=":",
                    label=f"{base.name} library, not learning",
                )
        right.set_xlabel("online episode (the library evolves after each)")
        right.set_ylabel("score")
        right.set_ylim(-0.02, 1.02)
        right.set_title("Online: learning from its own runs")
        right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- playing against a service ----------------------------------------------------------------------


@dataclass(frozen=True)
class LoopConfig:
    task_types: tuple[str, ...] = DEFAULT_TASKS
    test_variations: int = 5
    train_sizes: tuple[int, ...] = (1, 3, 10)
    max_steps: int = 25
    seed: int = 0
    empty: bool = True
    online_from: tuple[int, ...] = (0,)  # the online runs' starting libraries (training variations; 0: empty)
    top_k: int = 8
    token_budget: int = 800


Games = Callable[[EpisodeSpec], Environment]


def play_all(
    client: Client,
    specs: Sequence[EpisodeSpec],
    games: Games,
    agent: Agent,
    config: LoopConfig,
    *,
    label: str,
    post: bool = False,
    echo: Callable[[str], None] = lambda _: None,
) -> list[EpisodeResult]:
    """Play every episode against the library behind `client`."""
    results = []
    for n, spec in enumerate(specs, 1):
        result = play_one(client, spec, games, agent, config, label=label, post=post)
        results.append(result)
        echo(
            f"[eval] {label} {n}/{len(specs)} {spec.task_type} v{spec.variation}: score {result.score:.2f} "
            f"in {result.steps} steps {result.sources}"
        )
    return results


def play_one(
    client: Client,
    spec: EpisodeSpec,
    games: Games,
    agent: Agent,
    config: LoopConfig,
    *,
    label: str,
    post: bool,
) -> EpisodeResult:
    from skillfoundry_client import AgentSession

    env = games(spec)
    session = AgentSession(
        client,
        env.task,
        agent_id=AGENT_ID,
        domain=DOMAIN,
        top_k=config.top_k,
        token_budget=config.token_budget,
        session_id=f"loop-{label}-{spec.task_type}-v{spec.variation}-{uuid.uuid4().hex[:8]}",
        metadata={
            "task_name": spec.task_type,
            "variation": str(spec.variation),
            "kind": "closed-loop",
            "condition": label,
        },
    )
    return play(spec, env, session, agent, max_steps=config.max_steps, seed=config.seed, post=post)


Scope = Callable[[], AbstractContextManager["Session"]]


def evolve_in_process(
    scope: Scope, tenant_id: uuid.UUID, event_id: str, *, embedder: Embedder, settings: Settings
) -> dict[str, Any]:
    """What the worker and the periodic jobs would do after one posted run, and the reviewer's acceptance."""
    from app.evolver import consolidate, eval_library, pipeline, skill_cycle

    settings = settings.model_copy(update={"max_new_experiences_per_minute": eval_library.UNCAPPED})
    with scope() as session:
        result = pipeline.process_ingest(session, uuid.UUID(event_id), embedder=embedder, settings=settings)
    with scope() as session:
        consolidate.consolidate(session, tenant_id, settings, embedder=embedder)
    with scope() as session:
        stats = skill_cycle.evolve(session, tenant_id, embedder=embedder, settings=settings, batch=1000)
    with scope() as session:
        accepted = eval_library.accept_all(session, tenant_id, actor=eval_library.REVIEWER)
    return {
        "experiences": dict(result.get("experiences") or {}),
        "skills_created": stats.created,
        "skills_improved": stats.improved,
        "accepted": accepted,
    }


def _client(base_url: str, key: str) -> Client:
    from skillfoundry_client import Client

    return Client(base_url, key, timeout=REQUEST_TIMEOUT_S)


def run_closed_loop(
    settings: Settings,
    train: Sequence[Mapping[str, Any]],
    config: LoopConfig,
    *,
    games: Games,
    specs: Sequence[EpisodeSpec],
    agent: Agent,
    url: str | None = None,
    api_key: str = "",
    post: bool = False,
    echo: Callable[[str], None] = lambda _: None,
) -> LoopReport:
    """Every condition of `config` on `specs` (in-process), or one `live` run against `url`."""
    started = time.monotonic()
    meta = {
        **config.__dict__,
        "episodes": [f"{s.task_type}/{s.variation}" for s in specs],
        "agent": type(agent).__name__,
    }
    if url is not None:
        with _client(url, api_key) as client:
            t0 = time.monotonic()
            results = play_all(client, specs, games, agent, config, label="live", post=post, echo=echo)
        live = Condition("live", None, tuple(results), {"url": url}, time.monotonic() - t0)
        return LoopReport((live,), config=meta, seconds=time.monotonic() - started)

    from app.embedded import scratch_database
    from app.embedding import get_embedder
    from app.evaluation import scratch_settings, serve
    from app.evolver import eval_library
    from app.storage.repositories import tenants
    from app.storage.session import session_scope

    embedder = get_embedder()
    with scratch_database("sfloop-") as factory:

        def new_tenant(name: str) -> uuid.UUID:
            with session_scope(factory) as session:
                return tenants.create_tenant(session, name).id

        libraries: list[tuple[str, int | None, uuid.UUID, dict[str, Any]]] = []
        if config.empty:
            libraries.append(("empty", None, new_tenant("empty"), {}))
        for size in config.train_sizes:
            subset = train_subset(train, size)
            echo(f"[eval] learning train-{size}: {len(subset)} recorded runs")
            learnt = eval_library.learn(
                factory, subset, embedder=embedder, settings=settings, echo=echo, tenant_name=f"train-{size}"
            )
            libraries.append((f"train-{size}", size, learnt.tenant_id, learnt.as_dict()))
        conditions = []
        runs: list[OnlineRun] = []
        with serve(scratch_settings(settings, factory)) as base_url:
            echo(f"[eval] API up at {base_url}; {len(specs)} held-out episodes per condition")
            for name, n, tenant_id, library in libraries:
                t0 = time.monotonic()
                with _client(base_url, eval_library.agent_key(factory, tenant_id)) as client:
                    results = play_all(client, specs, games, agent, config, label=name, echo=echo)
                conditions.append(Condition(name, n, tuple(results), library, time.monotonic() - t0))
            # Posting tries to queue the worker's job; there is none here (the loop runs it itself).
            logging.getLogger("app.storage.session").setLevel(logging.ERROR)
            for start in config.online_from:
                t0 = time.monotonic()
                if start:
                    subset = train_subset(train, start)
                    echo(f"[eval] learning online's start, train-{start}: {len(subset)} recorded runs")
                    seeded = eval_library.learn(
                        factory, subset, embedder=embedder, settings=settings, echo=echo,
                        tenant_name=f"online-{start}",
                    )  # fmt: skip
                    tenant_id = seeded.tenant_id
                else:
                    tenant_id = new_tenant("online-0")
                label = start_name(start)
                with _client(base_url, eval_library.agent_key(factory, tenant_id)) as client:

                    def one(
                        index: int, spec: EpisodeSpec, client: Client = client, label: str = label
                    ) -> EpisodeResult:
                        return play_one(
                            client, spec, games, agent, config, label=f"online-{label}-{index}", post=True
                        )

                    def evolve(result: EpisodeResult, tenant_id: uuid.UUID = tenant_id) -> dict[str, Any]:
                        if result.event_id is None:
                            raise RuntimeError("an online run was not posted")
                        return evolve_in_process(
                            lambda: session_scope(factory),
                            tenant_id,
                            result.event_id,
                            embedder=embedder,
                            settings=settings,
                        )

                    steps = online(specs, one, evolve, echo=echo, label=f"online from {label}")
                runs.append(OnlineRun(start, tuple(steps), time.monotonic() - t0))
    return LoopReport(tuple(conditions), tuple(runs), meta, time.monotonic() - started)


def scienceworld_games(
    task_types: Sequence[str], n: int, *, max_steps: int, simplification: str = "easy"
) -> tuple[ScienceWorld, list[EpisodeSpec]]:
    """A simulator and the held-out episodes: the first `n` test variations per task type, interleaved."""
    world = ScienceWorld(simplification=simplification, step_limit=max(max_steps + 10, 100))
    try:
        variations = {t: world.test_variations(t, n) for t in task_types}
    except BaseException:
        world.close()
        raise
    return world, round_robin(task_types, variations)


def agent_of(settings: Settings, llm: bool) -> Agent:
    """The rule agent, or with `llm` a chat model behind the `SKILLFOUNDRY_LLM_*` endpoint.

    The rule agent judges values the library never saw by their kinship (embedding cosine) to seen ones.
    """
    from app.embedding import get_embedder
    from app.evolver.closed_loop import LLMAgent, RuleAgent, embedding_kinship, openai_chat

    rules = RuleAgent(kin=embedding_kinship(get_embedder()))
    if not llm:
        return rules
    if not settings.llm_base_url:
        raise ValueError("--llm needs SKILLFOUNDRY_LLM_BASE_URL (an OpenAI-compatible endpoint)")
    chat = openai_chat(
        settings.llm_base_url,
        settings.llm_api_key,
        settings.llm_model,
        timeout_s=settings.llm_timeout_s,
        max_retries=settings.llm_max_retries,
    )
    return LLMAgent(chat, rules)


def run_scienceworld(
    settings: Settings,
    train: Sequence[Mapping[str, Any]],
    config: LoopConfig,
    *,
    llm: bool = False,
    url: str | None = None,
    api_key: str = "",
    post: bool = False,
    echo: Callable[[str], None] = lambda _: None,
) -> LoopReport:
    """`eval closed-loop` on ScienceWorld's test variations of `config.task_types`."""
    agent = agent_of(settings, llm)
    world, specs = scienceworld_games(config.task_types, config.test_variations, max_steps=config.max_steps)
    try:
        return run_closed_loop(
            settings,
            train,
            config,
            games=world.episode,
            specs=specs,
            agent=agent,
            url=url,
            api_key=api_key,
            post=post,
            echo=echo,
        )
    finally:
        world.close()
