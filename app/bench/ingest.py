"""`skillfoundry bench ingest`: trajectories/s accepted, POST latency, and the worker's embedding steps/s.

Three timed phases against the HTTP API, then a look at the worker:

1. batch: `clients` threads, each with its own connection, post batches of 100 trajectories;
2. single: one client posts one trajectory per request, sequentially (then `clients` of them at once);
3. embedding: the worker embeds what was posted; steps/s is read from the ingest events' own timestamps.

Without `url` the benchmark runs on a private, throw-away stack (embedded PostgreSQL and Redis in a
temporary directory, rate limit off) and starts the worker only for phase 3, so that embedding does not
compete with ingest for the CPU. Payloads are generated and serialised before any timing starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import typer

from app.config import Settings

if TYPE_CHECKING:
    from app.launcher import Stack

BATCH_SIZE = 100
STEPS_PER_TRAJECTORY = 20
# Distinct pre-generated request bodies; the phases cycle through them (about 1.3 MB per batch body).
BATCH_POOL = 32
SINGLE_POOL = 500
POLL_INTERVAL_S = 0.25
PROGRESS_EVERY_S = 5.0
REQUEST_TIMEOUT_S = 60.0
TARGET_BATCH_TPS = 500.0
TARGET_SINGLE_P50_MS = 15.0
TRAJECTORIES_PATH = "/v1/trajectories"
JSON_HEADERS = {"Content-Type": "application/json"}

# --- generated trajectories --------------------------------------------------------------------------

GAMES = ("zork1", "enchanter", "detective", "cooking_world", "treasure_hunter", "coin_collector", "alfworld")
ROOMS = ("kitchen", "pantry", "cellar", "library", "attic", "garden", "hallway", "study", "armoury", "chapel",
         "greenhouse", "boathouse", "vault", "gallery", "workshop")  # fmt: skip
ADJECTIVES = ("dusty", "dim", "cold", "narrow", "cluttered", "quiet", "damp", "bright", "draughty", "musty")
ITEMS = ("brass key", "lantern", "rusty sword", "red apple", "torn scroll", "silver coin", "coil of rope",
         "map fragment", "blue potion", "claw hammer", "wooden spoon", "iron lockpick")  # fmt: skip
CONTAINERS = ("chest", "cabinet", "drawer", "crate", "shelf", "barrel", "wardrobe", "toolbox")
DIRECTIONS = ("north", "south", "east", "west", "up", "down")
FEATURES = (
    "Cobwebs hang from the beams above you.",
    "A faint smell of smoke lingers in the air.",
    "Water drips steadily somewhere in the dark.",
    "Scratches on the floor lead towards the wall.",
    "A portrait of a stern old man watches you.",
    "The floorboards creak under your weight.",
    "A cold draught comes from a crack in the wall.",
    "Somebody has scrawled numbers on the plaster.",
)
ERRORS = ("That's not a verb I recognise.", "You can't see any such thing.", "The door is locked.",
          "You are carrying too many things already.")  # fmt: skip


def _a(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def _observation(rng: random.Random, room: str, turn: int, score: int, carrying: Sequence[str]) -> str:
    """A room description of 200-400 characters that varies with ids and numbers."""
    target = rng.randint(200, 400)
    exits = ", ".join(rng.sample(DIRECTIONS, rng.randint(1, 3)))
    parts = [
        f"-= {room.title()} =- You are in {_a(rng.choice(ADJECTIVES))} {room} (turn {turn}, score {score},"
        f" moves {turn + rng.randint(0, 9)}). Exits lead {exits}."
    ]
    while sum(len(p) + 1 for p in parts) < target:
        kind = rng.random()
        if kind < 0.35:
            state = rng.choice(("open", "closed", "locked"))
            parts.append(f"There is {_a(state)} {rng.choice(CONTAINERS)} #{rng.randint(1, 99)} here.")
        elif kind < 0.7:
            parts.append(f"On the floor you see {_a(rng.choice(ITEMS))} (tag {rng.getrandbits(24):06x}).")
        elif kind < 0.85 and carrying:
            parts.append(f"You are holding the {rng.choice(carrying)}.")
        else:
            parts.append(rng.choice(FEATURES))
    text = " ".join(parts)
    return text[:400]


def _step(rng: random.Random, turn: int, score: int, carrying: list[str]) -> tuple[dict[str, Any], int]:
    """One step and the score after it."""
    room = rng.choice(ROOMS)
    step: dict[str, Any] = {"observation": _observation(rng, room, turn, score, carrying)}
    roll = rng.random()
    reward = 0.0
    if roll < 0.2:
        step["action"] = f"go {rng.choice(DIRECTIONS)}"
    elif roll < 0.4:
        item = rng.choice(ITEMS)
        step["action"] = f"take {item}"
        carrying.append(item)
        reward = 1.0
    elif roll < 0.55:
        step["action"] = f"open {rng.choice(CONTAINERS)} {rng.randint(1, 99)}"
    elif roll < 0.65 and carrying:
        step["action"] = f"put {rng.choice(carrying)} in {rng.choice(CONTAINERS)}"
        reward = 2.0
    elif roll < 0.8:
        step["action"] = "inventory"
        step["tool"] = "inventory"
        step["tool_input"] = {"verbose": rng.random() < 0.5}
        step["tool_output"] = "You are carrying: " + (", ".join(carrying) if carrying else "nothing") + "."
    elif roll < 0.9:
        step["action"] = f"consult map about {room}"
        step["tool"] = "map"
        step["tool_input"] = {"room": room, "depth": rng.randint(1, 3)}
        step["tool_output"] = {
            "room": room,
            "neighbours": {d: rng.choice(ROOMS) for d in rng.sample(DIRECTIONS, 2)},
            "visited": rng.randint(0, turn + 1),
        }
    else:
        step["action"] = f"{rng.choice(('xyzzy', 'climb', 'unlock'))} {rng.choice(ITEMS)}"
        step["error"] = rng.choice(ERRORS)
        reward = -0.1
    step["reward"] = reward
    return step, score + int(reward > 0) * int(reward)


def make_trajectory(rng: random.Random, steps: int = STEPS_PER_TRAJECTORY) -> dict[str, Any]:
    """One realistic text-game trajectory (the body of POST /v1/trajectories) with `steps` steps."""
    carrying: list[str] = []
    score = 0
    step_list: list[dict[str, Any]] = []
    for turn in range(steps):
        step, score = _step(rng, turn, score, carrying)
        step_list.append(step)
    game = rng.choice(GAMES)
    max_score = max(score, 1) + rng.randint(0, 10)
    return {
        "task": (
            f"Find the {rng.choice(ITEMS)} and put it in the {rng.choice(CONTAINERS)} "
            f"in the {rng.choice(ROOMS)}."
        ),
        "domain": "text-game",
        "agent_id": f"agent-{rng.getrandbits(32):08x}",
        "session_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "steps": step_list,
        "outcome": {"success": rng.random() < 0.4, "score": round(score / max_score, 3)},
        "metadata": {"game": game, "seed": str(rng.getrandbits(31)), "bench": "ingest"},
    }


def make_payloads(rng: random.Random, count: int, per_request: int) -> list[bytes]:
    """`count` serialised request bodies: one trajectory each, or a list of `per_request`."""
    bodies: list[bytes] = []
    for _ in range(count):
        if per_request == 1:
            body: Any = make_trajectory(rng)
        else:
            body = [make_trajectory(rng) for _ in range(per_request)]
        bodies.append(json.dumps(body, separators=(",", ":")).encode())
    return bodies


# --- statistics ----------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between ranks; values need not be sorted."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0 and 100, not {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


# --- timed phases ----------------------------------------------------------------------------------------


@dataclass
class _Phase:
    """What one posting phase counted; threads add to it under `lock`."""

    name: str
    clients: int
    per_request: int
    requests: int = 0
    accepted: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    warmup_events: list[str] = field(default_factory=list)
    started: float = 0.0
    last_end: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, latency_s: float, end: float, event_id: str) -> None:
        with self.lock:
            self.requests += 1
            self.accepted += self.per_request
            self.latencies_s.append(latency_s)
            self.events.append((end, event_id))
            self.last_end = max(self.last_end, end)

    def failed(self, reason: str, end: float) -> None:
        with self.lock:
            self.requests += 1
            self.errors[reason] += 1
            self.last_end = max(self.last_end, end)

    def report(self, seconds: float) -> dict[str, Any]:
        elapsed = (self.last_end - self.started) if self.last_end > self.started else seconds
        lat = self.latencies_s
        return {
            "clients": self.clients,
            "trajectories_per_request": self.per_request,
            "requests": self.requests,
            "accepted_trajectories": self.accepted,
            "errors": sum(self.errors.values()),
            "errors_by_kind": dict(self.errors),
            "elapsed_s": round(elapsed, 3),
            "trajectories_per_s": round(self.accepted / elapsed, 1),
            "steps_per_s": round(self.accepted * STEPS_PER_TRAJECTORY / elapsed, 1),
            "requests_per_s": round(self.requests / elapsed, 1),
            "latency_ms": {
                "p50": _ms(percentile(lat, 50)) if lat else None,
                "p90": _ms(percentile(lat, 90)) if lat else None,
                "p99": _ms(percentile(lat, 99)) if lat else None,
                "mean": _ms(statistics.fmean(lat)) if lat else None,
                "max": _ms(max(lat)) if lat else None,
            },
        }


def _client(base_url: str, api_key: str) -> httpx.Client:
    return httpx.Client(
        base_url=base_url.rstrip("/"),
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=REQUEST_TIMEOUT_S,
    )


def _warm_up(client: httpx.Client, body: bytes, phase: _Phase) -> None:
    """One untimed request on this connection; a refusal here stops the benchmark with its reason."""
    response = client.post(TRAJECTORIES_PATH, content=body, headers=JSON_HEADERS)
    if response.status_code != 202:
        raise RuntimeError(f"POST {TRAJECTORIES_PATH} answered {response.status_code}: {response.text[:500]}")
    phase.warmup_events.append(str(response.json()["event_id"]))


def _post_loop(
    client: httpx.Client, bodies: Sequence[bytes], offset: int, deadline: float, phase: _Phase
) -> None:
    """Post bodies back to back until `deadline`; a request started before it is waited for."""
    index = offset
    while time.perf_counter() < deadline:
        body = bodies[index % len(bodies)]
        index += 1
        start = time.perf_counter()
        try:
            response = client.post(TRAJECTORIES_PATH, content=body, headers=JSON_HEADERS)
        except httpx.HTTPError as exc:
            phase.failed(type(exc).__name__, time.perf_counter())
            continue
        end = time.perf_counter()
        if response.status_code != 202:
            phase.failed(f"HTTP {response.status_code}", end)
            continue
        try:
            event_id = str(response.json()["event_id"])
        except (ValueError, KeyError, TypeError):
            phase.failed("bad 202 body", end)
            continue
        phase.ok(end - start, end, event_id)


def _run_phase(
    name: str, base_url: str, api_key: str, bodies: Sequence[bytes], per_request: int, clients: int,
    seconds: float, warm_body: bytes, echo: Callable[[str], None],
) -> _Phase:  # fmt: skip
    """Post with `clients` threads for `seconds`, after one untimed `warm_body` POST per connection."""
    phase = _Phase(name=name, clients=clients, per_request=per_request)
    connections = [_client(base_url, api_key) for _ in range(clients)]
    try:
        for connection in connections:
            _warm_up(connection, warm_body, phase)
        echo(f"[{name}] {clients} client(s), {per_request} trajectory(ies) per POST, {seconds:g} s ...")
        phase.started = time.perf_counter()
        deadline = phase.started + seconds
        threads = [
            threading.Thread(
                target=_post_loop, args=(c, bodies, k * len(bodies) // clients, deadline, phase),
                name=f"bench-{name}-{k}", daemon=True,
            )
            for k, c in enumerate(connections)
        ]  # fmt: skip
        for thread in threads:
            thread.start()
        next_echo = phase.started + PROGRESS_EVERY_S
        while alive := [t for t in threads if t.is_alive()]:
            alive[0].join(0.25)
            now = time.perf_counter()
            if now >= next_echo:
                next_echo += PROGRESS_EVERY_S
                with phase.lock:
                    accepted, errors = phase.accepted, sum(phase.errors.values())
                echo(
                    f"[{name}]   {now - phase.started:5.1f} s: {accepted} trajectories accepted"
                    f" ({accepted / (now - phase.started):.0f}/s), {errors} errors"
                )
    finally:
        for connection in connections:
            connection.close()
    report = phase.report(seconds)
    latency = report["latency_ms"]
    echo(
        f"[{name}] done: {report['trajectories_per_s']} trajectories/s, "
        f"p50 {latency['p50']} ms, p99 {latency['p99']} ms, {report['errors']} errors"
    )
    return phase


# --- the worker ----------------------------------------------------------------------------------------


def _when(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value).timestamp()


def _measure_embedding(
    base_url: str, api_key: str, event_ids: Sequence[str], steps_posted: int, embed_seconds: float,
    worker_started_at: float | None, echo: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    """Follow ingest events oldest first for up to `embed_seconds`; steps/s from their own timestamps."""
    echo(f"[embedding] following {len(event_ids)} ingest events for up to {embed_seconds:g} s ...")
    finished: list[tuple[float, float, int]] = []  # (finished_at, started_at, steps_embedded)
    failed = 0
    index = 0
    start = time.perf_counter()
    deadline = start + embed_seconds
    next_echo = start + PROGRESS_EVERY_S
    with _client(base_url, api_key) as client:
        while index < len(event_ids) and time.perf_counter() < deadline:
            try:
                response = client.get(f"/v1/events/{event_ids[index]}")
                body: dict[str, Any] = response.json() if response.status_code == 200 else {}
            except (httpx.HTTPError, ValueError):
                body = {}
            status = body.get("status")
            if status == "SUCCEEDED":
                finished_at, started_at = _when(body.get("finished_at")), _when(body.get("started_at"))
                if finished_at is not None and started_at is not None:
                    finished.append(
                        (finished_at, started_at, int(body.get("result", {}).get("steps_embedded", 0)))
                    )
                index += 1
            elif status == "FAILED":
                failed += 1
                index += 1
            else:
                time.sleep(POLL_INTERVAL_S)
            now = time.perf_counter()
            if now >= next_echo:
                next_echo += PROGRESS_EVERY_S
                done_steps = sum(f[2] for f in finished)
                echo(
                    f"[embedding] {now - start:5.1f} s: {index}/{len(event_ids)} events done,"
                    f" {done_steps} steps"
                )
    finished.sort()
    steps_done = sum(f[2] for f in finished)
    result: dict[str, Any] = {
        "events_followed": len(event_ids),
        "events_succeeded": len(finished),
        "events_failed": failed,
        "steps_posted": steps_posted,
        "steps_embedded": steps_done,
        "steps_per_s": None,
        "window_s": None,
        "window_steps": None,
        "method": None,
        "first_event_s": round(finished[0][0] - finished[0][1], 3) if finished else None,
        "worker_start_to_first_result_s": (
            round(finished[0][0] - worker_started_at, 3)
            if finished and worker_started_at is not None
            else None
        ),
    }
    if len(finished) >= 2:
        window = finished[-1][0] - finished[0][0]
        steps = sum(f[2] for f in finished[1:])
        result["method"] = (
            "steps of the events finished after the first one / (last finished_at - first finished_at);"
            " excludes model load and the first event"
        )
    elif len(finished) == 1:
        window = finished[0][0] - finished[0][1]
        steps = finished[0][2]
        result["method"] = (
            "only one event finished: its steps / (finished_at - started_at), which may include model load"
        )
    else:
        window, steps = 0.0, 0
        result["method"] = "no event finished within the time given"
    if window > 0:
        result.update(steps_per_s=round(steps / window, 1), window_s=round(window, 3), window_steps=steps)
    # A cross-check: each later event's own rate, steps / (finished_at - started_at).
    rates = [f[2] / (f[0] - f[1]) for f in finished[1:] if f[0] > f[1] and f[2] > 0]
    result["per_event_steps_per_s_median"] = round(statistics.median(rates), 1) if rates else None
    if result["steps_per_s"]:
        backlog = steps_posted - steps_done
        result["backlog_steps"] = backlog
        result["backlog_drain_s_estimate"] = round(backlog / result["steps_per_s"], 1)
    echo(
        f"[embedding] done: {len(finished)} events ({steps_done} of {steps_posted} posted steps) embedded; "
        f"{result['steps_per_s']} steps/s"
    )
    return result


# --- the stack ----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _private_stack(settings: Settings, echo: Callable[[str], None]) -> Iterator[tuple[Stack, str, str]]:
    """A throw-away stack in a temporary directory: (stack, base URL, admin key); no worker yet."""
    from app.launcher import Stack, bootstrap

    home = Path(tempfile.mkdtemp(prefix="sfbench-"))
    stack = Stack(
        settings.model_copy(
            update={"home": home, "database_url": None, "redis_url": None, "rate_limit_per_minute": 0}
        )
    )
    try:
        echo(f"Starting a private stack in {home} (embedded PostgreSQL + Redis, rate limit off) ...")
        stack.start_services()
        created = bootstrap(stack.database_url)
        if created is None:
            raise RuntimeError(f"the new database in {home} already had a tenant")
        port = _free_port()
        base_url = f"http://127.0.0.1:{port}"
        stack.start_api("127.0.0.1", port)
        stack.wait_healthy(base_url)
        echo(f"API up at {base_url}; the worker starts after the ingest phases.")
        yield stack, base_url, created.admin_key
    finally:
        echo("Stopping the private stack ...")
        stack.stop()
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Meanwhile point file descriptor 1 at stderr: progress and child processes stay out of the result."""
    try:
        out_fd, err_fd = sys.stdout.fileno(), sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stdout.flush()
    saved = os.dup(out_fd)
    os.dup2(err_fd, out_fd)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, out_fd)
        os.close(saved)


# --- the report ---------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """Where the benchmark ran: platform, CPUs, memory, Python, date."""
    cpu_model = platform.processor() or None
    memory_gib: float | None = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024**2, 1)
                break
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _fmt(value: Any, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def _summary(result: dict[str, Any]) -> str:
    machine, params, phases, embed = (
        result["machine"],
        result["parameters"],
        result["phases"],
        result["embedding"],
    )
    lines = [
        f"skillfoundry bench ingest  {machine['date']}",
        f"machine: {machine['cpu_count']} CPUs ({machine['cpu_model']}), {machine['memory_gib']} GiB,"
        f" Python {machine['python']}, {machine['platform']}",
        f"target: {params['target']}; {params['steps_per_trajectory']} steps per trajectory,"
        f" ~{params['bytes_per_trajectory']} bytes each as JSON",
        "",
        f"{'phase':<28}{'clients':>8}{'requests':>10}{'accepted':>10}{'errors':>8}{'traj/s':>9}"
        f"{'steps/s':>10}{'p50 ms':>9}{'p99 ms':>9}",
    ]
    for name, phase in phases.items():
        lat = phase["latency_ms"]
        label = f"{name} ({phase['trajectories_per_request']}/POST)"
        lines.append(
            f"{label:<28}{phase['clients']:>8}{phase['requests']:>10}{phase['accepted_trajectories']:>10}"
            f"{phase['errors']:>8}{phase['trajectories_per_s']:>9.1f}{phase['steps_per_s']:>10.1f}"
            f"{_fmt(lat['p50'], '.1f'):>9}{_fmt(lat['p99'], '.1f'):>9}"
        )
    lines += [
        "",
        f"embedding (worker): {embed['events_succeeded']}/{embed['events_followed']} events,"
        f" {embed['steps_embedded']}/{embed['steps_posted']} posted steps embedded"
        f" in {params['embed_seconds']:g} s;"
        f" {_fmt(embed['steps_per_s'])} steps/s over {_fmt(embed['window_s'])} s"
        f" (median per event {_fmt(embed['per_event_steps_per_s_median'])})",
        f"  worker start to first result {_fmt(embed['worker_start_to_first_result_s'])} s"
        f" (imports, model load); first event {_fmt(embed['first_event_s'])} s",
        f"  method: {embed['method']}",
        "",
        "targets:",
    ]
    for target in result["targets"].values():
        lines.append(
            f"  {target['what']:<42} {_fmt(target['measured']):>8}  {'met' if target['met'] else 'NOT met'}"
        )
    return "\n".join(lines)


def run_ingest_bench(
    settings: Settings, *, seconds: float, clients: int, embed_seconds: float, url: str | None,
    api_key: str | None, echo: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    """Benchmark ingest (batch and single POSTs) and worker embedding; figures plus a `summary` text."""
    if url is not None and not api_key:
        raise typer.BadParameter(
            "--url needs an API key with the agent scope: pass --api-key or set SKILLFOUNDRY_API_KEY",
            param_hint="'--api-key'",
        )
    if seconds <= 0 or embed_seconds < 0 or clients < 1:
        raise typer.BadParameter("--seconds must be > 0, --embed-seconds >= 0 and --clients >= 1")
    with _stdout_to_stderr():
        echo("Generating payloads ...")
        rng = random.Random(20240611)  # noqa: S311 - test data, not secrets
        batch_bodies = make_payloads(rng, max(BATCH_POOL, 2 * clients), BATCH_SIZE)
        single_bodies = make_payloads(rng, SINGLE_POOL, 1)
        bytes_per_trajectory = round(statistics.fmean(len(b) for b in single_bodies))
        echo(
            f"  {len(batch_bodies)} batch bodies"
            f" (~{statistics.fmean(len(b) for b in batch_bodies) / 1e6:.2f} MB each)"
            f" and {len(single_bodies)} single bodies (~{bytes_per_trajectory} bytes each)"
        )
        with contextlib.ExitStack() as resources:
            stack: Stack | None = None
            if url is None:
                stack, base_url, key = resources.enter_context(_private_stack(settings, echo))
            else:
                base_url, key = url.rstrip("/"), api_key or ""
            # Warm-ups post one trajectory: they head the worker's queue, so keep them small.
            warm = single_bodies[-1]
            phases = [
                _run_phase("batch", base_url, key, batch_bodies, BATCH_SIZE, clients, seconds, warm, echo),
                _run_phase("single", base_url, key, single_bodies, 1, 1, seconds, warm, echo),
            ]
            if clients > 1:
                phases.append(
                    _run_phase(
                        "single-concurrent", base_url, key, single_bodies, 1, clients, seconds, warm, echo
                    )
                )
            event_ids: list[str] = []
            for phase in phases:
                event_ids += phase.warmup_events
                event_ids += [event_id for _, event_id in sorted(phase.events)]
            steps_posted = STEPS_PER_TRAJECTORY * sum(p.accepted + len(p.warmup_events) for p in phases)
            worker_started_at: float | None = None
            if stack is not None:
                echo("Starting the worker ...")
                worker_started_at = time.time()
                stack.start_worker()
            embedding = _measure_embedding(
                base_url, key, event_ids, steps_posted, embed_seconds, worker_started_at, echo
            )
    reports = {phase.name: phase.report(seconds) for phase in phases}
    single_p50 = reports["single"]["latency_ms"]["p50"]
    result: dict[str, Any] = {
        "benchmark": "ingest",
        "machine": machine_info(),
        "parameters": {
            "seconds": seconds,
            "clients": clients,
            "embed_seconds": embed_seconds,
            "target": url or "private stack (embedded PostgreSQL + Redis, worker started after ingest)",
            "batch_size": BATCH_SIZE,
            "steps_per_trajectory": STEPS_PER_TRAJECTORY,
            "bytes_per_trajectory": bytes_per_trajectory,
            "distinct_batch_bodies": len(batch_bodies),
            "distinct_single_bodies": len(single_bodies),
        },
        "phases": reports,
        "embedding": embedding,
        "targets": {
            "batch_trajectories_per_s": {
                "what": f"batch of {BATCH_SIZE}: >= {TARGET_BATCH_TPS:g} trajectories/s",
                "measured": reports["batch"]["trajectories_per_s"],
                "met": reports["batch"]["trajectories_per_s"] >= TARGET_BATCH_TPS,
            },
            "single_p50_ms": {
                "what": f"single POST p50 < {TARGET_SINGLE_P50_MS:g} ms",
                "measured": single_p50,
                "met": single_p50 is not None and single_p50 < TARGET_SINGLE_P50_MS,
            },
        },
    }
    result["summary"] = _summary(result)
    return result
