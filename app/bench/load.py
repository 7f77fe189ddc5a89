"""`skillfoundry bench load`: mixed open-loop traffic, latency per kind, and the server's memory over time.

What it does:

1. a stack: without `url` a private one in a temporary directory (embedded PostgreSQL and Redis, one
   `skillfoundry api --workers N` and one `skillfoundry worker --beat`, as `skillfoundry up` runs them;
   the rate limit is counted in Redis as usual but set too high to refuse anything); with `url`, the
   running service, one tenant per admin `--api-key`;
2. tenants and keys: privately `tenants` tenants, each with an admin, a reviewer and an agent key written
   straight to the database (the API cannot create tenants); against `url`, a reviewer and an agent key
   per admin key, created through `/v1/keys` and revoked at the end;
3. a small library per tenant (unless `seed_runs` is 0): runs of three text-game task families are posted,
   distilled into experiences by the worker, a skill cycle is run (`POST /v1/evolve`), and the reviewer
   accepts and publishes the head of every skill, so `/v1/retrieve` has experiences and T2 skills to find;
4. the load: open-loop arrivals (Poisson, `rate` per second for `seconds`) from `agents` simulated agents
   spread over the tenants. Each arrival is a `/v1/retrieve` (the agent's task, an observation of its
   family's current step, its step counter and session id) or, with probability `trajectory_share`, a
   `/v1/trajectories` POST of the agent's session so far (the steps it retrieved for, each with its
   `retrieval_id` and the first item it got as used), after which the agent starts a new session.
   Requests are sent at their scheduled time whatever the latency of earlier ones; at most `concurrency`
   are in flight, and a request waiting for a slot waits on the clock. Latency is measured from the
   scheduled time (no coordinated omission); the time from sending is reported as service time;
5. memory: every `sample_every_s` seconds, the RSS (and PSS) of the API process tree and of the worker
   process tree from /proc, and the backlog the service reports on `/metrics`. Whether memory stops
   growing: the mean of the last third of the run against the middle third.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import typer

from app.bench.ingest import (
    ADJECTIVES,
    CONTAINERS,
    DIRECTIONS,
    FEATURES,
    ITEMS,
    ROOMS,
    _free_port,
    _stdout_to_stderr,
    machine_info,
    percentile,
)
from app.bench.retrieve import server_timing
from app.config import Settings

if TYPE_CHECKING:
    from app.launcher import Stack

RETRIEVE = "retrieve"
TRAJECTORY = "trajectory"
KINDS = (RETRIEVE, TRAJECTORY)
PATHS = {RETRIEVE: "/v1/retrieve", TRAJECTORY: "/v1/trajectories"}
DOMAIN = "text-game"
TOP_K = 8
REQUEST_TIMEOUT_S = 30.0
DRAIN_S = 30.0  # after the last arrival, how long answers still in flight are waited for
MAX_SESSION_STEPS = 60  # an agent's session posted as one trajectory keeps at most this many steps
LATE_MS = 10.0  # a request sent this much after its scheduled time counts as sent late
# Memory "stops growing" when the last third's mean exceeds the middle third's by at most this much.
STABLE_MIB = 16.0
STABLE_SHARE = 0.03
SHORT_RUN_S = 120.0
SEED_TIMEOUT_S = 600.0
POLL_S = 0.5
PROGRESS_EVERY_S = 10.0
PRIVATE_RATE_LIMIT = 1_000_000_000  # counted in Redis as in production, never reached

# --- the simulated agents' world -----------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """A kind of task: its text and the procedure that solves it (`{room}`, `{item}`, `{box}` filled in)."""

    task: str
    procedure: tuple[str, ...]


FAMILIES = (
    Family(
        "Find the {item} and put it in the {box} in the {room}.",
        ("go to {room}", "open {box}", "take {item}", "put {item} in {box}"),
    ),
    Family(
        "Light the lantern and search the {room} for the {item}.",
        ("take lantern", "light lantern", "go to {room}", "search {room}", "take {item}"),
    ),
    Family(
        "Unlock the {box} in the {room} with the brass key and take the {item}.",
        ("take brass key", "go to {room}", "unlock {box} with brass key", "open {box}", "take {item}"),
    ),
)
FAILURE_ERRORS = ("That's not a verb I recognise.", "You can't see any such thing.", "The door is locked.")


def _a(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


@dataclass(frozen=True)
class Scene:
    """One concrete task: the family and the words filled into it."""

    family: int
    room: str
    item: str
    box: str

    @property
    def task(self) -> str:
        return FAMILIES[self.family].task.format(room=self.room, item=self.item, box=self.box)

    def action(self, step: int) -> str:
        procedure = FAMILIES[self.family].procedure
        return procedure[min(step, len(procedure) - 1)].format(room=self.room, item=self.item, box=self.box)


def new_scene(rng: random.Random) -> Scene:
    """A task of one of the families with random words."""
    return Scene(rng.randrange(len(FAMILIES)), rng.choice(ROOMS), rng.choice(ITEMS), rng.choice(CONTAINERS))


def observation(rng: random.Random, scene: Scene, step: int, *, extras: int) -> str:
    """What the agent sees before `step`: where it is, its task's objects, and `extras` random details."""
    room = scene.room if step >= 2 else rng.choice(("hallway", "entrance", scene.room))
    parts = [
        f"-= {room.title()} =- You are in {_a(rng.choice(ADJECTIVES))} {room} (turn {step},"
        f" score {step * 10}). Exits lead {', '.join(rng.sample(DIRECTIONS, 2))}.",
        f"There is a closed {scene.box} here." if step < 2 else f"The {scene.box} is open.",
        f"You can see {_a(scene.item)}." if step < 3 else f"You are holding the {scene.item}.",
    ]
    for _ in range(extras):
        detail = rng.random()
        if detail < 0.4:
            parts.append(f"There is {_a(rng.choice(ADJECTIVES))} {rng.choice(CONTAINERS)} by the wall.")
        elif detail < 0.7:
            parts.append(f"On the {rng.choice(('floor', 'table', 'shelf'))} you see {_a(rng.choice(ITEMS))}.")
        else:
            parts.append(rng.choice(FEATURES))
    return " ".join(parts)


def seed_run(rng: random.Random, scene: Scene, agent_id: str, *, success: bool) -> dict[str, Any]:
    """One trajectory that follows the family's procedure (or, failing, errs and gives up)."""
    procedure = FAMILIES[scene.family].procedure
    steps: list[dict[str, Any]] = []
    for i in range(len(procedure)):
        step: dict[str, Any] = {
            "observation": observation(rng, scene, i, extras=rng.randint(0, 1)),
            "action": scene.action(i),
            "reward": 1.0 if success or i < len(procedure) - 2 else 0.0,
        }
        if not success and i == len(procedure) - 2:
            step["action"] = f"{rng.choice(('xyzzy', 'climb'))} {scene.item}"
            step["error"] = rng.choice(FAILURE_ERRORS)
            step["reward"] = -0.1
            steps.append(step)
            break
        steps.append(step)
    return {
        "task": scene.task,
        "domain": DOMAIN,
        "agent_id": agent_id,
        "session_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "steps": steps,
        "outcome": {"success": success, "score": 1.0 if success else 0.0},
        "metadata": {"bench": "load", "phase": "seed"},
    }


@dataclass
class Agent:
    """One simulated agent: its tenant, id, current session and the steps recorded in it."""

    tenant: int
    agent_id: str
    scene: Scene
    session_id: str
    step: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)

    def restart(self, rng: random.Random) -> None:
        """Begin a new session with a new task."""
        self.scene = new_scene(rng)
        self.session_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.step = 0
        self.steps = []


class Traffic:
    """Builds each request of the run from the agents' state; single-threaded (the event loop)."""

    def __init__(
        self, rng: random.Random, tenants: int, agents: int, trajectory_share: float, repeat_share: float
    ) -> None:
        self.rng = rng
        self.trajectory_share = trajectory_share
        self.repeat_share = repeat_share
        self.agents = [
            Agent(
                n % tenants, f"load-agent-{n:04d}", new_scene(rng), str(uuid.UUID(int=rng.getrandbits(128)))
            )
            for n in range(agents)
        ]
        # Observations agents see again and again (the same rooms): the service's query LRU may hold them.
        self.common = [
            observation(rng, scene, step, extras=0)
            for scene in (new_scene(rng) for _ in range(16))
            for step in range(4)
        ]

    def next(self) -> tuple[str, Agent, dict[str, Any], dict[str, Any] | None]:
        """(kind, agent, JSON body, step record to complete with the answer) of the next arrival."""
        agent = self.rng.choice(self.agents)
        if self.rng.random() < self.trajectory_share:
            return TRAJECTORY, agent, self._trajectory(agent), None
        if self.rng.random() < self.repeat_share:
            seen = self.rng.choice(self.common)
        else:
            seen = observation(self.rng, agent.scene, agent.step, extras=self.rng.randint(1, 3))
        body = {
            "task": agent.scene.task,
            "observation": seen,
            "step": agent.step,
            "session_id": agent.session_id,
            "top_k": TOP_K,
            "filters": {"domain": DOMAIN},
        }
        record: dict[str, Any] = {"observation": seen, "action": agent.scene.action(agent.step)}
        if len(agent.steps) < MAX_SESSION_STEPS:
            agent.steps.append(record)
        agent.step += 1
        return RETRIEVE, agent, body, record

    def _trajectory(self, agent: Agent) -> dict[str, Any]:
        if not agent.steps:  # no retrieve yet in this session: the agent ran without asking
            body = seed_run(self.rng, agent.scene, agent.agent_id, success=self.rng.random() < 0.7)
            body["session_id"] = agent.session_id
        else:
            success = self.rng.random() < 0.6
            body = {
                "task": agent.scene.task,
                "domain": DOMAIN,
                "agent_id": agent.agent_id,
                "session_id": agent.session_id,
                "steps": [dict(s, reward=1.0 if success else 0.0) for s in agent.steps],
                "outcome": {"success": success, "score": 1.0 if success else 0.0},
            }
        body["metadata"] = {"bench": "load", "phase": "load"}
        agent.restart(self.rng)
        return body


# --- /proc sampling --------------------------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def process_tree(root: int) -> list[int]:
    """`root` and every process below it (uvicorn's workers, Celery's pool and beat), if alive."""
    if not Path(f"/proc/{root}").exists():
        return []
    tree = _children_map()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(tree.get(pid, ()))
    return found


def _kib(path: str, field_name: str) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(field_name):
                return int(line.split()[1])
    return None


def tree_memory(root: int) -> dict[str, Any]:
    """RSS and PSS (MiB) summed over `root`'s process tree, and how many processes it has."""
    rss = pss = 0
    pss_known = True
    pids = process_tree(root)
    for pid in pids:
        rss += _kib(f"/proc/{pid}/status", "VmRSS:") or 0
        value = _kib(f"/proc/{pid}/smaps_rollup", "Pss:")
        if value is None:
            pss_known = False
        else:
            pss += value
    return {
        "processes": len(pids),
        "rss_mib": round(rss / 1024, 1),
        "pss_mib": round(pss / 1024, 1) if pss_known and pids else None,
    }


def _metric_sum(text: str, name: str) -> float | None:
    """The sum over labels of one Prometheus gauge in a /metrics answer."""
    total, seen = 0.0, f"# TYPE {name} " in text  # a gauge with no samples has nothing open: 0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            with contextlib.suppress(ValueError, IndexError):
                total += float(line.rsplit(" ", 1)[1])
                seen = True
    return total if seen else None


class Sampler:
    """A thread that samples the server's memory and backlog every `every_s` seconds."""

    def __init__(self, roots: dict[str, int], base_url: str, every_s: float) -> None:
        self.roots = roots
        self.base_url = base_url
        self.every_s = every_s
        self.samples: list[dict[str, Any]] = []
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-load-sampler", daemon=True)

    def start(self, t0: float) -> None:
        self.t0 = t0
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def sample(self, client: httpx.Client | None) -> dict[str, Any]:
        row: dict[str, Any] = {"t_s": round(time.monotonic() - self.t0, 2)}
        for name, root in self.roots.items():
            row[name] = tree_memory(root)
        row["events_open"] = row["queue_depth"] = None
        if client is not None:
            with contextlib.suppress(httpx.HTTPError):
                response = client.get("/metrics")
                if response.status_code == 200:
                    row["events_open"] = _metric_sum(response.text, "skillfoundry_events_open")
                    row["queue_depth"] = _metric_sum(response.text, "skillfoundry_queue_depth")
        return row

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=5.0) as client:
            while True:
                self.samples.append(self.sample(client))
                if self._stop.wait(self.every_s):
                    self.samples.append(self.sample(client))
                    return


def growth(samples: Sequence[dict[str, Any]], name: str, seconds: float) -> dict[str, Any] | None:
    """Whether `name`'s RSS stopped growing: last third of the run against the middle third."""
    points = [(s["t_s"], s[name]["rss_mib"]) for s in samples if name in s and s[name]["processes"]]
    middle = [m for t, m in points if seconds / 3 <= t < 2 * seconds / 3]
    last = [m for t, m in points if 2 * seconds / 3 <= t <= seconds + 1]
    if not points:
        return None
    out: dict[str, Any] = {
        "first_mib": points[0][1],
        "peak_mib": max(m for _, m in points),
        "end_mib": points[-1][1],
        "middle_third_mean_mib": round(statistics.fmean(middle), 1) if middle else None,
        "last_third_mean_mib": round(statistics.fmean(last), 1) if last else None,
        "growth_mib": None,
        "growth_share": None,
        "last_third_slope_mib_per_min": None,
        "stopped_growing": None,
    }
    if middle and last:
        grown = statistics.fmean(last) - statistics.fmean(middle)
        base = statistics.fmean(middle)
        out["growth_mib"] = round(grown, 1)
        out["growth_share"] = round(grown / base, 4) if base else None
        out["stopped_growing"] = grown <= max(STABLE_MIB, STABLE_SHARE * base)
    tail = [(t, m) for t, m in points if 2 * seconds / 3 <= t <= seconds + 1]
    if len(tail) >= 2:
        mean_t = statistics.fmean(t for t, _ in tail)
        mean_m = statistics.fmean(m for _, m in tail)
        var = sum((t - mean_t) ** 2 for t, _ in tail)
        if var > 0:
            slope = sum((t - mean_t) * (m - mean_m) for t, m in tail) / var
            out["last_third_slope_mib_per_min"] = round(slope * 60, 2)
    return out


# --- the load ------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One request: its kind, when it was due, sent and answered (seconds since the run began)."""

    kind: str
    scheduled: float
    sent: float
    ended: float
    status: str  # "200", "202", "429", ..., or an exception's name
    ok: bool
    server_ms: float | None = None
    embed_ms: float | None = None
    items: int | None = None


@dataclass
class Tenant:
    """The keys the load uses in one tenant."""

    name: str
    admin_key: str
    reviewer_key: str
    agent_key: str
    created_key_ids: list[str] = field(default_factory=list)


class Load:
    """The open-loop driver: one asyncio loop, one pooled HTTP client, a cap on requests in flight."""

    def __init__(
        self, base_url: str, tenants: Sequence[Tenant], traffic: Traffic, *, rate: float, seconds: float,
        concurrency: int, seed: int, echo: Callable[[str], None],
    ) -> None:  # fmt: skip
        self.base_url = base_url
        self.tenants = tenants
        self.traffic = traffic
        self.rate = rate
        self.seconds = seconds
        self.concurrency = concurrency
        self.arrivals = random.Random(seed)  # noqa: S311 - load timing, not secrets
        self.echo = echo
        self.outcomes: list[Outcome] = []
        self.waited_for_slot = 0
        self.unfinished = 0
        self.generator_lag_max_s = 0.0

    async def _one(
        self, client: httpx.AsyncClient, slots: asyncio.Semaphore, kind: str, agent: Agent,
        body: dict[str, Any], record: dict[str, Any] | None, scheduled: float, t0: float,
    ) -> None:  # fmt: skip
        loop = asyncio.get_running_loop()
        headers = {"Authorization": f"Bearer {self.tenants[agent.tenant].agent_key}"}
        if kind == TRAJECTORY:
            headers["Idempotency-Key"] = str(uuid.uuid4())
        if slots.locked():
            self.waited_for_slot += 1
        async with slots:
            sent = loop.time() - t0
            try:
                response = await client.post(PATHS[kind], json=body, headers=headers)
            except httpx.HTTPError as exc:
                self.outcomes.append(
                    Outcome(kind, scheduled, sent, loop.time() - t0, type(exc).__name__, False)
                )
                return
            ended = loop.time() - t0
        ok = response.status_code == (200 if kind == RETRIEVE else 202)
        outcome = Outcome(kind, scheduled, sent, ended, str(response.status_code), ok)
        if ok and kind == RETRIEVE:
            timing = response.headers.get("server-timing")
            outcome.server_ms = server_timing(timing)
            outcome.embed_ms = server_timing(timing, "embed")
            with contextlib.suppress(ValueError, KeyError, TypeError):
                answer = response.json()
                items = answer["items"]
                outcome.items = len(items)
                if record is not None:
                    record["retrieval_id"] = answer["retrieval_id"]
                    record["used_item_ids"] = [items[0]["id"]] if items else []
        self.outcomes.append(outcome)

    async def run(self) -> float:
        """Send the arrivals of `seconds`; returns the loop time the run began at (its t0)."""
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        timeout = httpx.Timeout(REQUEST_TIMEOUT_S)
        async with httpx.AsyncClient(base_url=self.base_url, limits=limits, timeout=timeout) as client:
            loop = asyncio.get_running_loop()
            slots = asyncio.Semaphore(self.concurrency)
            pending: set[asyncio.Task[None]] = set()
            t0 = loop.time()
            due = 0.0
            next_echo = PROGRESS_EVERY_S
            while True:
                due += self.arrivals.expovariate(self.rate)
                if due >= self.seconds:
                    break
                delay = t0 + due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    self.generator_lag_max_s = max(self.generator_lag_max_s, -delay)
                kind, agent, body, record = self.traffic.next()
                task = asyncio.create_task(self._one(client, slots, kind, agent, body, record, due, t0))
                pending.add(task)
                task.add_done_callback(pending.discard)
                if due >= next_echo:
                    next_echo += PROGRESS_EVERY_S
                    done = len(self.outcomes)
                    bad = sum(not o.ok for o in self.outcomes)
                    self.echo(f"[load] {due:5.0f} s: {done} answered, {bad} errors, {len(pending)} in flight")
            if pending:
                self.echo(f"[load] arrivals done; waiting up to {DRAIN_S:g} s for {len(pending)} in flight")
                _, late = await asyncio.wait(pending, timeout=DRAIN_S)
                self.unfinished = len(late)
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
        return t0


def _ms_percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    return {
        "p50": round(percentile(values, 50) * 1000, 1),
        "p95": round(percentile(values, 95) * 1000, 1),
        "p99": round(percentile(values, 99) * 1000, 1),
        "mean": round(statistics.fmean(values) * 1000, 1),
        "max": round(max(values) * 1000, 1),
    }


def _kind_report(outcomes: Sequence[Outcome], seconds: float) -> dict[str, Any]:
    ok = [o for o in outcomes if o.ok]
    statuses = Counter(o.status for o in outcomes if not o.ok)
    report: dict[str, Any] = {
        "requests": len(outcomes),
        "ok": len(ok),
        "errors": len(outcomes) - len(ok),
        "error_rate": round((len(outcomes) - len(ok)) / len(outcomes), 4) if outcomes else None,
        "errors_by_status": dict(sorted(statuses.items())),
        "ok_per_s": round(len(ok) / seconds, 2),
        "latency_ms": _ms_percentiles([o.ended - o.scheduled for o in ok]),
        "service_ms": _ms_percentiles([o.ended - o.sent for o in ok]),
    }
    server = [o.server_ms / 1000 for o in ok if o.server_ms is not None]
    if server:
        report["server_timing_ms"] = _ms_percentiles(server)
        embeds = [o.embed_ms for o in ok if o.embed_ms is not None]
        report["query_embedding_cached_share"] = (
            round(sum(e < 0.5 for e in embeds) / len(embeds), 3) if embeds else None
        )
        items = [o.items for o in ok if o.items is not None]
        report["answers_with_items_share"] = (
            round(sum(i > 0 for i in items) / len(items), 3) if items else None
        )
        report["items_per_answer_mean"] = round(statistics.fmean(items), 2) if items else None
    return report


def _timeline(outcomes: Sequence[Outcome], seconds: float, every_s: float) -> list[dict[str, Any]]:
    """Per window of `every_s` (by scheduled time): answered per second, errors, p95 latency."""
    rows = []
    start = 0.0
    while start < seconds:
        end = min(start + every_s, seconds)
        window = [o for o in outcomes if start <= o.scheduled < end]
        ok = [o.ended - o.scheduled for o in window if o.ok]
        rows.append(
            {
                "t_s": round(start, 1),
                "requests": len(window),
                "ok_per_s": round(len(ok) / (end - start), 1) if end > start else None,
                "errors": len(window) - len(ok),
                "p95_ms": round(percentile(ok, 95) * 1000, 1) if ok else None,
            }
        )
        start = end
    return rows


def report(load: Load, every_s: float) -> dict[str, Any]:
    """The load's figures: rates, errors, latency per kind, generator health, timeline."""
    outcomes = load.outcomes
    answered = [o for o in outcomes if o.status.isdigit()]
    ok = [o for o in outcomes if o.ok]
    sent = len(outcomes) + load.unfinished
    last_end = max((o.ended for o in outcomes), default=load.seconds)
    statuses = Counter(o.status for o in outcomes if not o.ok)
    if load.unfinished:
        statuses["unfinished"] = load.unfinished
    lags = [o.sent - o.scheduled for o in outcomes]
    return {
        "target_rate_per_s": load.rate,
        "seconds": load.seconds,
        "requests_sent": sent,
        "sent_per_s": round(sent / load.seconds, 2),
        "answered": len(answered),
        "achieved_rate_per_s": round(len(answered) / max(last_end, load.seconds), 2),
        "ok_per_s": round(len(ok) / max(last_end, load.seconds), 2),
        "errors": sent - len(ok),
        "error_rate": round((sent - len(ok)) / sent, 4) if sent else None,
        "errors_by_status": dict(sorted(statuses.items())),
        "mix": {
            k: round(sum(o.kind == k for o in outcomes) / len(outcomes), 3) if outcomes else None
            for k in KINDS
        },  # fmt: skip
        "kinds": {k: _kind_report([o for o in outcomes if o.kind == k], load.seconds) for k in KINDS},
        "generator": {
            "concurrency_cap": load.concurrency,
            "waited_for_a_slot": load.waited_for_slot,
            "send_lag_ms": _ms_percentiles(lags),
            "sent_late_share": round(sum(lag * 1000 > LATE_MS for lag in lags) / len(lags), 4)
            if lags
            else None,
            "scheduler_behind_max_ms": round(load.generator_lag_max_s * 1000, 1),
        },
        "timeline": _timeline(outcomes, load.seconds, every_s),
    }


# --- setting up: stack, tenants, library ------------------------------------------------------------------


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


@dataclass
class Private:
    """A private stack's parts: the stack, its URL, logs, and the tenants made in its database."""

    stack: Stack
    base_url: str
    logs: Path
    tenants: list[Tenant]


@contextlib.contextmanager
def private_stack(
    settings: Settings, *, tenants: int, api_workers: int, echo: Callable[[str], None]
) -> Iterator[Private]:
    """Embedded PostgreSQL + Redis, `tenants` tenants with keys, `api --workers N` and `worker --beat`."""
    from app.embedded import die_with_parent
    from app.launcher import Stack
    from app.storage.models import Scope
    from app.storage.repositories import tenants as tenant_repo
    from app.storage.session import make_engine, make_sessionmaker, session_scope

    home = Path(tempfile.mkdtemp(prefix="sfload-"))
    stack = Stack(
        settings.model_copy(
            update={"home": home, "database_url": None, "redis_url": None,
                    "rate_limit_per_minute": PRIVATE_RATE_LIMIT}
        )
    )  # fmt: skip
    try:
        echo(f"Starting a private stack in {home} (embedded PostgreSQL + Redis) ...")
        stack.start_services()
        made: list[Tenant] = []
        engine = make_engine(stack.database_url, pool_size=1)
        try:
            with session_scope(make_sessionmaker(engine)) as session:
                for n in range(tenants):
                    tenant = tenant_repo.create_tenant(session, f"load-{n}")
                    keys = [
                        tenant_repo.create_key(session, tenant.id, f"load-{scope.value}", [scope])[1]
                        for scope in (Scope.ADMIN, Scope.REVIEWER, Scope.AGENT)
                    ]
                    made.append(
                        Tenant(tenant.name, admin_key=keys[0], reviewer_key=keys[1], agent_key=keys[2])
                    )
        finally:
            engine.dispose()
        port = _free_port()
        base_url = f"http://127.0.0.1:{port}"
        env = stack.child_env()
        env["SKILLFOUNDRY_HOME"] = str(home)
        commands = {
            "api": ["api", "--host", "127.0.0.1", "--port", str(port), "--workers", str(api_workers)],
            "worker": ["worker", "--beat"],
        }
        for name, argv in commands.items():
            with (home / f"{name}.log").open("wb") as log:
                stack.children[name] = subprocess.Popen(  # noqa: S603 - our own CLI, by the running interpreter
                    [sys.executable, "-m", "app.cli", *argv], env=env, stdout=log, stderr=subprocess.STDOUT,
                    preexec_fn=die_with_parent,  # noqa: PLW1509
                )  # fmt: skip
        try:
            stack.wait_healthy(base_url, timeout_s=120)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{_tail(home / 'api.log')}") from exc
        echo(f"API up at {base_url} ({api_workers} uvicorn worker(s)); worker logs in {home}")
        yield Private(stack, base_url, home, made)
    finally:
        echo("Stopping the private stack ...")
        stack.stop()
        shutil.rmtree(home, ignore_errors=True)


def _check(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.is_error:
        raise RuntimeError(f"{what} answered {response.status_code}: {response.text[:500]}")
    body: dict[str, Any] = response.json()
    return body


def remote_tenants(base_url: str, admin_keys: Sequence[str]) -> list[Tenant]:
    """One tenant per admin key of a running service, with a reviewer and an agent key made for the run."""
    made = []
    for admin_key in admin_keys:
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {admin_key}"}) as client:
            ping = _check(client.get("/v1/ping"), "GET /v1/ping")
            if "admin" not in ping.get("scopes", []):
                raise typer.BadParameter("--api-key must be an admin key (it creates the run's keys)")
            created = {}
            for scope in ("reviewer", "agent"):
                body = _check(
                    client.post("/v1/keys", json={"name": f"bench-load-{scope}", "scopes": [scope]}),
                    "POST /v1/keys",
                )
                created[scope] = body
        made.append(
            Tenant(
                str(ping.get("tenant_id")), admin_key, str(created["reviewer"]["key"]),
                str(created["agent"]["key"]), [str(created[s]["id"]) for s in created],
            )
        )  # fmt: skip
    return made


def revoke_run_keys(base_url: str, tenants: Sequence[Tenant]) -> None:
    """Revoke the keys `remote_tenants` created."""
    for tenant in tenants:
        with httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {tenant.admin_key}"}
        ) as client:
            for key_id in tenant.created_key_ids:
                with contextlib.suppress(httpx.HTTPError):
                    client.delete(f"/v1/keys/{key_id}")


def _wait_events(client: httpx.Client, event_ids: Sequence[str], deadline: float) -> Counter[str]:
    statuses: Counter[str] = Counter()
    for event_id in event_ids:
        while True:
            body = _check(client.get(f"/v1/events/{event_id}"), "GET /v1/events")
            if body["status"] in ("SUCCEEDED", "FAILED"):
                statuses[str(body["status"])] += 1
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"event {event_id} still {body['status']}: the worker is not keeping up")
            time.sleep(POLL_S)
    return statuses


def seed_library(
    base_url: str, tenants: Sequence[Tenant], *, runs: int, seed: int, echo: Callable[[str], None]
) -> dict[str, Any]:
    """Per tenant: post `runs` runs of the task families, distil them, run a skill cycle, accept skills."""
    rng = random.Random(seed)  # noqa: S311 - test data
    deadline = time.monotonic() + SEED_TIMEOUT_S
    out: dict[str, Any] = {"runs_per_tenant": runs, "tenants": []}
    for tenant in tenants:
        scenes = [new_scene(rng) for _ in range(2 * len(FAMILIES))]
        items = [
            seed_run(rng, scenes[n % len(scenes)], f"seed-agent-{n % 5}", success=n % 4 != 3)
            for n in range(runs)
        ]
        agent = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {tenant.agent_key}"})
        admin = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {tenant.admin_key}"})
        reviewer = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {tenant.reviewer_key}"})
        with agent, admin, reviewer:
            posted = [
                agent.post("/v1/trajectories", json=items[i : i + 10]) for i in range(0, len(items), 10)
            ]
            events = [str(_check(answer, "POST /v1/trajectories")["event_id"]) for answer in posted]
            ingest = _wait_events(agent, events, deadline)
            cycle = _check(admin.post("/v1/evolve"), "POST /v1/evolve")
            _wait_events(admin, [str(cycle["event_id"])], deadline)
            result = _check(admin.get(f"/v1/events/{cycle['event_id']}"), "GET /v1/events").get("result", {})
            accepted = skills = 0
            cursor: str | None = None
            while True:
                params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
                page = _check(reviewer.get("/v1/skills", params=params), "GET /v1/skills")
                for skill in page["items"]:
                    skills += 1
                    answer = reviewer.post(
                        f"/v1/skills/{skill['id']}/versions/{skill['head_version']}/accept",
                        json={"reason": "bench load: seed library", "publish": True},
                    )
                    accepted += answer.status_code == 200
                cursor = page.get("next_cursor")
                if not cursor:
                    break
            experiences = len(
                _check(agent.get("/v1/experiences", params={"limit": "100"}), "GET /v1/experiences")["items"]
            )
        row = {
            "tenant": tenant.name, "ingest_events": dict(ingest), "experiences": experiences,
            "experiences_capped_at_100": experiences >= 100, "skills": skills, "skills_accepted": accepted,
            "cycle_created": result.get("created"),
        }  # fmt: skip
        echo(f"[seed] {tenant.name}: {row}")
        out["tenants"].append(row)
    return out


def _warm(base_url: str, tenants: Sequence[Tenant], traffic: Traffic, requests: int) -> None:
    """Untimed retrieves on fresh connections, so every API process has loaded the model before t0."""
    for n in range(requests):
        tenant = tenants[n % len(tenants)]
        body = {"task": FAMILIES[0].task.format(room="hall", item="key", box="box"),
                "observation": traffic.common[n % len(traffic.common)], "step": 0}  # fmt: skip
        with httpx.Client(base_url=base_url, timeout=120) as client:
            _check(
                client.post(
                    "/v1/retrieve", json=body, headers={"Authorization": f"Bearer {tenant.agent_key}"}
                ),
                "warm-up POST /v1/retrieve",
            )


# --- the report ---------------------------------------------------------------------------------------


def _fmt(value: Any, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def _summary(result: dict[str, Any]) -> str:
    m, p, load, mem = result["machine"], result["parameters"], result["load"], result["memory"]
    lines = [
        f"skillfoundry bench load  {m['date']}",
        f"machine: {m['cpu_count']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Python {m['python']};"
        f" load average {m.get('load_average_start')} -> {m.get('load_average_end')}",
        f"target: {p['target']}; {p['tenants']} tenant(s), {p['agents']} agents,"
        f" {p['trajectory_share']:.0%} trajectories, concurrency cap {p['concurrency']}",
        f"offered {p['rate']:g}/s for {p['seconds']:g} s (Poisson arrivals, latency from the scheduled time)",
        "",
        f"sent {load['requests_sent']} ({load['sent_per_s']}/s); answered {load['answered']}"
        f" ({load['achieved_rate_per_s']}/s); ok {load['ok_per_s']}/s; errors {load['errors']}"
        f" ({_fmt(load['error_rate'], '.2%')}) {load['errors_by_status'] or ''}",
        f"{'kind':<12}{'requests':>9}{'ok/s':>8}{'errors':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'max ms':>9}{'svc p50':>9}",
    ]
    for kind, r in load["kinds"].items():
        lat, svc = r["latency_ms"], r["service_ms"]
        lines.append(
            f"{kind:<12}{r['requests']:>9}{r['ok_per_s']:>8}{r['errors']:>8}{_fmt(lat['p50']):>9}"
            f"{_fmt(lat['p95']):>9}{_fmt(lat['p99']):>9}{_fmt(lat['max']):>9}{_fmt(svc['p50']):>9}"
        )
    r = load["kinds"][RETRIEVE]
    if "server_timing_ms" in r:
        st = r["server_timing_ms"]
        lines.append(
            f"retrieve server-side p50/p95/p99 {st['p50']}/{st['p95']}/{st['p99']} ms;"
            f" query embedding cached {_fmt(r['query_embedding_cached_share'], '.0%')};"
            f" answers with items {_fmt(r['answers_with_items_share'], '.0%')}"
        )
    g = load["generator"]
    lines.append(
        f"generator: send lag p99 {g['send_lag_ms']['p99']} ms, {_fmt(g['sent_late_share'], '.1%')} sent"
        f" >{LATE_MS:g} ms late (slot waits included), {g['waited_for_a_slot']} waited for a slot;"
        f" the scheduler itself at most {g['scheduler_behind_max_ms']} ms behind"
    )
    lines += ["", "memory (RSS of each process tree, MiB; last third of the run vs the middle third):"]
    if not mem["sampled"]:
        lines.append(f"  not sampled: {mem['note']}")
    for name, verdict in mem["growth"].items():
        if verdict is None:
            continue
        stopped = {True: "stopped growing", False: "STILL GROWING", None: "run too short to tell"}[
            verdict["stopped_growing"]
        ]
        lines.append(
            f"  {name:<7} first {verdict['first_mib']}, middle {_fmt(verdict['middle_third_mean_mib'])},"
            f" last {_fmt(verdict['last_third_mean_mib'])}, peak {verdict['peak_mib']};"
            f" growth {_fmt(verdict['growth_mib'])} MiB,"
            f" slope {_fmt(verdict['last_third_slope_mib_per_min'])} MiB/min: {stopped}"
        )
    if mem["sampled"] and p["seconds"] < SHORT_RUN_S:
        lines.append(
            f"  (a run under {SHORT_RUN_S:g} s is too short to judge growth: the model loads warm up)"
        )
    backlog = [s.get("events_open") for s in mem["samples"] if s.get("events_open") is not None]
    if backlog:
        lines.append(f"  events open (worker backlog) at start {backlog[0]:g}, at end {backlog[-1]:g}")
    return "\n".join(lines)


def _load_average() -> float | None:
    with contextlib.suppress(OSError):
        return round(os.getloadavg()[0], 2)
    return None


def run_load_bench(
    settings: Settings, *, rate: float, seconds: float, tenants: int, agents: int, concurrency: int,
    api_workers: int, trajectory_share: float, repeat_share: float, seed_runs: int, sample_every_s: float,
    seed: int, url: str | None, api_keys: Sequence[str], api_pid: int | None, worker_pid: int | None,
    echo: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    """Mixed open-loop load against a service; figures plus a `summary` text."""
    if url is not None and not api_keys:
        raise typer.BadParameter(
            "--url needs an admin key: --api-key (one per tenant) or SKILLFOUNDRY_API_KEY"
        )
    if rate <= 0 or seconds <= 0 or agents < 1 or concurrency < 1 or tenants < 1 or api_workers < 1:
        raise typer.BadParameter(
            "--rate, --seconds, --agents, --concurrency, --tenants, --api-workers must be > 0"
        )
    if not 0 <= trajectory_share <= 1 or not 0 <= repeat_share <= 1:
        raise typer.BadParameter("--trajectory-share and --repeat-share are within 0 and 1")
    machine = machine_info() | {"load_average_start": _load_average()}
    with _stdout_to_stderr(), contextlib.ExitStack() as resources:
        roots: dict[str, int] = {}
        if url is None:
            private = resources.enter_context(
                private_stack(settings, tenants=tenants, api_workers=api_workers, echo=echo)
            )
            base_url, made = private.base_url, private.tenants
            roots = {name: proc.pid for name, proc in private.stack.children.items()}
        else:
            base_url = url.rstrip("/")
            made = remote_tenants(base_url, api_keys)
            resources.callback(revoke_run_keys, base_url, made)
            roots = {k: v for k, v in (("api", api_pid), ("worker", worker_pid)) if v is not None}
        library = (
            seed_library(base_url, made, runs=seed_runs, seed=seed, echo=echo) if seed_runs > 0 else None
        )
        traffic = Traffic(random.Random(seed + 1), len(made), agents, trajectory_share, repeat_share)  # noqa: S311
        _warm(base_url, made, traffic, 4 * api_workers if url is None else 4)
        sampler = Sampler(roots, base_url, sample_every_s)
        load = Load(base_url, made, traffic, rate=rate, seconds=seconds, concurrency=concurrency, seed=seed,
                    echo=echo)  # fmt: skip
        echo(f"[load] {rate:g}/s for {seconds:g} s against {base_url} ...")
        sampler.start(time.monotonic())
        try:
            asyncio.run(load.run())
        finally:
            sampler.stop()
        figures = report(load, sample_every_s)
    machine["load_average_end"] = _load_average()
    memory = {
        "sampled": bool(roots),
        "note": None
        if roots
        else "against --url, pass --api-pid / --worker-pid (the service on this machine)",
        "every_s": sample_every_s,
        "rule": f"stopped growing: last third's mean <= middle third's + max({STABLE_MIB:g} MiB,"
        f" {STABLE_SHARE:.0%})",
        "growth": {name: growth(sampler.samples, name, seconds) for name in roots},
        "samples": sampler.samples,
    }
    result: dict[str, Any] = {
        "benchmark": "load",
        "machine": machine,
        "parameters": {
            "target": url
            or f"private stack (embedded PostgreSQL + Redis, api --workers {api_workers}, 1 worker)",
            "rate": rate,
            "seconds": seconds,
            "tenants": len(made),
            "agents": agents,
            "concurrency": concurrency,
            "api_workers": api_workers if url is None else None,
            "trajectory_share": trajectory_share,
            "repeat_share": repeat_share,
            "seed": seed,
            "arrivals": "Poisson",
            "request_timeout_s": REQUEST_TIMEOUT_S,
            "drain_s": DRAIN_S,
        },  # fmt: skip
        "library": library,
        "load": figures,
        "memory": memory,
    }
    result["summary"] = _summary(result)
    return result
