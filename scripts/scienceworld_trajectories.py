"""Generate ScienceWorld trajectories (gold and deliberately failed ones) as `POST /v1/trajectories` items.

Each output line is one trajectory in the exact shape the API accepts:

    {"task": ..., "domain": "scienceworld", "agent_id": ..., "session_id": ...,
     "steps": [{"observation": ..., "action": ..., "reward": ..., "error": ...}, ...],
     "outcome": {"success": ..., "score": ...},
     "metadata": {"task_name": ..., "variation": "3", "kind": "gold" | "perturbed", ...}}

`observation` is what the agent saw before acting (step 0: the room after reset). `reward` is the change in
the task score after the action, on a 0..1 scale (ScienceWorld points / 100, the score clipped to [0, 1]
first, so a fatal wrong focus reads as minus the points earned so far).

Gold runs follow the simulator's gold action sequence. Perturbed runs follow a prefix of it, then fail in
one of three ways (`--modes`):

* ``wrong_focus``: a ``focus on X`` step is replaced by ``focus on <another object in view>`` - ScienceWorld
  ends the episode with a negative score (reported as 0);
* ``distracted``: after a random prefix the agent takes 2-4 useless but valid actions and stops;
* ``invalid_action``: after a random prefix the agent issues 1-3 unparseable paraphrases of the next gold
  action (``take X``, ``walk to Y``...) and stops.

Examples::

    .venv/bin/python scripts/scienceworld_trajectories.py --task find-animal --variations 12 \\
        --perturbed 2 --out /tmp/sw.jsonl
    .venv/bin/python scripts/scienceworld_trajectories.py --post-only --out /tmp/sw.jsonl \\
        --post http://localhost:8000 --api-key sf_...
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scienceworld import ScienceWorldEnv

DOMAIN = "scienceworld"
DEFAULT_TASKS = ["find-animal"]
MODES = ("wrong_focus", "distracted", "invalid_action")
POST_BATCH = 50

_ERROR_PATTERNS = re.compile(
    r"^(No known action matches|Unknown action|It's not clear how|.*\bcan't\b|.*\bcannot\b|.*not possible)",
    re.IGNORECASE,
)
# Verbs ScienceWorld's parser does not know (checked against 1.2.3: `walk`, `take`, `get`, `drop`, `examine`,
# `look` and a bare `focus X` do parse), used to reword a gold action into an unparseable one.
_INVALID_VERBS: dict[str, list[str]] = {
    "go to": ["run to", "head to", "travel to"],
    "pick up": ["grab", "fetch"],
    "open": ["unlock", "pull open"],
    "close": ["shut"],
    "focus on": ["select", "inspect"],
    "move": ["place", "carry"],
    "look around": ["scan", "survey room"],
    "look at": ["inspect", "search for"],
    "pour": ["empty", "spill"],
    "activate": ["turn on", "switch on"],
    "deactivate": ["turn off", "switch off"],
    "connect": ["attach", "wire"],
    "wait": ["sleep", "pause"],
}
_USELESS_PREFIXES = ("look at ", "look in ", "open ", "close ")


def _useless_target(action: str) -> str:
    """The object of a look/open/close action ('' for other actions)."""
    for prefix in _USELESS_PREFIXES:
        if action.startswith(prefix):
            return action[len(prefix) :]
    return ""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _clip(points: int) -> float:
    return min(max(points, 0), 100) / 100.0


def _error_of(observation: str) -> str | None:
    """A short error text when the simulator did not understand or refused the action, else None."""
    text = observation.strip()
    if text.startswith("Ambiguous request"):
        return None
    if _ERROR_PATTERNS.match(text):
        return text.splitlines()[0][:500]
    return None


@dataclass
class Episode:
    """One run in the simulator, recording steps in the API's shape."""

    env: ScienceWorldEnv
    observation_mode: str
    max_steps: int
    steps: list[dict[str, Any]] = field(default_factory=list)
    points: int = 0
    done: bool = False
    last_output: str = ""
    valid: list[str] = field(default_factory=list)
    _seen: str = ""

    def start(self) -> None:
        observation, info = self.env.reset()
        self.points = int(info["score"])
        self._absorb(observation, info)

    def _absorb(self, output: str, info: dict[str, Any]) -> None:
        self.last_output = output
        self.valid = list(info["valid"])
        look = str(info["look"]).strip()
        text = output.strip()
        if self.observation_mode != "plain" and text != look:
            text = f"{text}\n\n{look}"
        if self.observation_mode == "full":
            text = f"{text}\n\n{str(info['inv']).strip()}"
        self._seen = text

    @property
    def full(self) -> bool:
        return len(self.steps) >= self.max_steps

    def act(self, action: str) -> str:
        """Take `action`, record the step (observation seen before it) and return the simulator's output."""
        before = self.points
        output, _, done, info = self.env.step(action)
        self.points = int(info["score"])
        self.steps.append(
            {
                "observation": self._seen,
                "action": action,
                "reward": round(_clip(self.points) - _clip(before), 4),
                "error": _error_of(output),
            }
        )
        self.done = bool(done) or self.points < 0
        self._absorb(output, info)
        return str(output)

    @property
    def success(self) -> bool:
        return self.points >= 100

    @property
    def score(self) -> float:
        return _clip(self.points)


@dataclass
class Generator:
    env: ScienceWorldEnv
    simplification: str
    observation_mode: str
    max_steps: int
    agent_id: str
    rng: random.Random

    def _episode(self, task: str, variation: int, *, gold: bool) -> tuple[Episode, list[str], str]:
        self.env.load(task, variation, self.simplification, generateGoldPath=gold)
        actions = self.env.get_gold_action_sequence() if gold else []
        description = str(self.env.get_task_description())
        episode = Episode(self.env, self.observation_mode, self.max_steps)
        episode.start()
        return episode, [str(a) for a in actions], description

    def _record(
        self,
        episode: Episode,
        *,
        task: str,
        description: str,
        variation: int,
        split: str,
        kind: str,
        index: int,
        extra: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        metadata = {
            "task_name": task,
            "variation": str(variation),
            "kind": kind,
            "split": split,
            "simplification": self.simplification or "none",
            "final_observation": episode.last_output.strip()[:2000],
            **(extra or {}),
        }
        return {
            "task": description,
            "domain": DOMAIN,
            "agent_id": self.agent_id,
            "session_id": f"sw-{task}-{split}-v{variation}-{kind}-{index}",
            "steps": episode.steps,
            "outcome": {"success": episode.success, "score": episode.score},
            "metadata": metadata,
        }

    def gold(self, task: str, variation: int, split: str) -> tuple[dict[str, Any], list[str]]:
        episode, actions, description = self._episode(task, variation, gold=True)
        if actions and actions[0].startswith("ERROR"):
            raise RuntimeError(f"{task} v{variation}: no gold path: {actions[0]}")
        for action in actions:
            if episode.done or episode.full:
                break
            episode.act(action)
        extra = {"gold_length": str(len(actions))}
        if len(episode.steps) < len(actions):
            extra["truncated"] = "true"
        record = self._record(
            episode,
            task=task,
            description=description,
            variation=variation,
            split=split,
            kind="gold",
            index=0,
            extra=extra,
        )
        return record, actions

    def _replay(self, task: str, variation: int, prefix: Sequence[str]) -> tuple[Episode, str]:
        episode, _, description = self._episode(task, variation, gold=False)
        for action in prefix:
            if episode.done or episode.full:
                break
            episode.act(action)
        return episode, description

    def perturbed(
        self, task: str, variation: int, split: str, gold: Sequence[str], mode: str, index: int
    ) -> dict[str, Any] | None:
        """A failed run in `mode`, or None when this gold path offers no way to fail that way."""
        runner = {
            "wrong_focus": self._wrong_focus,
            "distracted": self._distracted,
            "invalid_action": self._invalid,
        }
        result = runner[mode](task, variation, gold)
        if result is None:
            return None
        episode, description, extra = result
        if episode.success:
            return None
        extra = {"failure_mode": mode, **extra}
        return self._record(
            episode,
            task=task,
            description=description,
            variation=variation,
            split=split,
            kind="perturbed",
            index=index,
            extra=extra,
        )

    def _wrong_focus(
        self, task: str, variation: int, gold: Sequence[str]
    ) -> tuple[Episode, str, dict[str, str]] | None:
        focus_steps = [i for i, a in enumerate(gold) if a.startswith("focus on ")]
        if not focus_steps:
            return None
        at = self.rng.choice(focus_steps)
        right = gold[at]
        tried: set[str] = {right, "focus on agent", "focus on inventory"}
        for _ in range(6):
            episode, description = self._replay(task, variation, gold[:at])
            if episode.done or episode.full:
                return None
            candidates = sorted(a for a in episode.valid if a.startswith("focus on ") and a not in tried)
            if not candidates:
                return None
            # Prefer things over places: skip doors and locations (anything one can `go to`).
            places = {
                a.split(" to ", 1)[1] for a in episode.valid if a.startswith(("go to ", "teleport to "))
            }
            things = [a for a in candidates if not a.startswith("focus on door") and a[9:] not in places]
            wrong = self.rng.choice(things or candidates)
            tried.add(wrong)
            episode.act(wrong)
            if episode.points < 0 or (episode.done and not episode.success):
                return episode, description, {"deviation_step": str(at), "gold_action": right}
            # That object also satisfies the task (e.g. another animal): try a different one.
        return None

    def _distracted(
        self, task: str, variation: int, gold: Sequence[str]
    ) -> tuple[Episode, str, dict[str, str]] | None:
        if len(gold) < 2:
            return None
        at = self.rng.randint(0, len(gold) - 2)
        episode, description = self._replay(task, variation, gold[:at])
        remaining = " ".join(gold[at:])
        for _ in range(self.rng.randint(2, 4)):
            if episode.done or episode.full:
                break
            pool = ["look around", "inventory", "wait1"] + [
                a for a in episode.valid if _useless_target(a) and _useless_target(a) not in remaining
            ]
            episode.act(self.rng.choice(pool))
        return episode, description, {"deviation_step": str(at)}

    def _paraphrase(self, action: str) -> list[str]:
        """Unparseable rewordings of `action` (verbs the parser does not know), in random order."""
        out = [f"please {action} now"]
        for verb, subs in sorted(_INVALID_VERBS.items(), key=lambda kv: -len(kv[0])):
            if action == verb or action.startswith(verb + " "):
                rest = action[len(verb) :].strip()
                out += [f"{s} {rest}".strip() for s in subs]
                if rest:
                    out.append(f"find {rest}")
                break
        self.rng.shuffle(out)
        return out

    def _invalid(
        self, task: str, variation: int, gold: Sequence[str]
    ) -> tuple[Episode, str, dict[str, str]] | None:
        if not gold:
            return None
        at = self.rng.randint(0, len(gold) - 1)
        if gold[at].isdigit():  # an answer to an ambiguity prompt: paraphrase the action that raised it
            at -= 1
        episode, description = self._replay(task, variation, gold[:at])
        attempts = self.rng.randint(1, 3)
        errors = 0
        for attempt in self._paraphrase(gold[at])[:attempts]:
            if episode.done or episode.full:
                break
            episode.act(attempt)
            errors += episode.steps[-1]["error"] is not None
        if errors == 0:
            return None
        return episode, description, {"deviation_step": str(at), "gold_action": gold[at]}


def _variations(env: ScienceWorldEnv, task: str, split: str) -> list[int]:
    env.load(task, 0, "")
    getter = {
        "train": env.get_variations_train,
        "dev": env.get_variations_dev,
        "test": env.get_variations_test,
    }
    return sorted(int(v) for v in getter[split]())


def generate(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    from scienceworld import ScienceWorldEnv

    rng = random.Random(args.seed)  # noqa: S311 - reproducible data, not security
    env = ScienceWorldEnv("", envStepLimit=max(args.max_steps + 10, 100))
    try:
        known = set(env.get_task_names())
        for task in args.task:
            if task not in known:
                raise SystemExit(f"unknown task {task!r}; known: {', '.join(sorted(known))}")
        gen = Generator(env, args.simplification, args.observation, args.max_steps, args.agent_id, rng)
        for task in args.task:
            variations = _variations(env, task, args.split)[args.offset : args.offset + args.variations]
            for n, variation in enumerate(variations):
                started = time.monotonic()
                record, gold = gen.gold(task, variation, args.split)
                _report(record, time.monotonic() - started)
                yield record
                modes = list(args.modes)
                others = [m for m in modes if m != "wrong_focus"] or modes
                for k in range(args.perturbed):
                    # The first failure is a wrong focus (ScienceWorld's signature failure), the rest rotate.
                    mode = (
                        "wrong_focus" if k == 0 and "wrong_focus" in modes else others[(n + k) % len(others)]
                    )
                    started = time.monotonic()
                    # Fall back to the other modes when this gold path cannot fail in `mode`.
                    for candidate in [mode] + [m for m in modes if m != mode]:
                        failed = gen.perturbed(task, variation, args.split, gold, candidate, k + 1)
                        if failed is not None:
                            _report(failed, time.monotonic() - started)
                            yield failed
                            break
                    else:
                        log(f"{task} v{variation}: no perturbed run #{k + 1} possible")
    finally:
        env.close()


def _report(record: dict[str, Any], seconds: float) -> None:
    meta = record["metadata"]
    label = meta["kind"] if meta["kind"] == "gold" else f"perturbed/{meta['failure_mode']}"
    outcome = record["outcome"]
    log(
        f"{meta['task_name']} v{meta['variation']:>3} {label:<26} steps={len(record['steps']):>3} "
        f"score={outcome['score']:.2f} success={outcome['success']} ({seconds:.1f}s)"
    )


def _read(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _batches(items: Sequence[dict[str, Any]], size: int) -> Iterable[Sequence[dict[str, Any]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def post(path: Path, url: str, api_key: str) -> list[str]:
    """POST the file's trajectories in batches; each batch carries an idempotency key of its content."""
    import httpx

    endpoint = url.rstrip("/")
    if not endpoint.endswith("/v1/trajectories"):
        endpoint += "/v1/trajectories"
    items = _read(path)
    event_ids: list[str] = []
    with httpx.Client(headers={"Authorization": f"Bearer {api_key}"}, timeout=60) as client:
        for batch in _batches(items, POST_BATCH):
            body = json.dumps(list(batch), ensure_ascii=False, sort_keys=True)
            key = "sw-" + hashlib.sha256(body.encode()).hexdigest()[:48]
            response = client.post(
                endpoint, content=body, headers={"Content-Type": "application/json", "Idempotency-Key": key}
            )
            if response.is_error:
                raise SystemExit(f"POST {endpoint} -> {response.status_code}: {response.text[:1000]}")
            accepted = response.json()
            event_ids.append(str(accepted["event_id"]))
            replayed = " (replayed)" if response.headers.get("Idempotent-Replayed") else ""
            print(f"event {accepted['event_id']}: {len(accepted['ids'])} trajectories{replayed}", flush=True)
    return event_ids


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--task", action="append", help=f"ScienceWorld task name, repeatable (default: {DEFAULT_TASKS[0]})"
    )
    parser.add_argument(
        "--variations", type=int, default=12, help="first N variations of the split (default 12)"
    )
    parser.add_argument("--offset", type=int, default=0, help="skip the split's first M variations")
    parser.add_argument("--split", choices=["train", "dev", "test"], default="train")
    parser.add_argument("--perturbed", type=int, default=2, help="failed runs per variation (default 2)")
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help=f"comma-separated failure modes to use (default {','.join(MODES)})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the choice of perturbations")
    parser.add_argument("--out", type=Path, default=Path("out/scienceworld.jsonl"))
    parser.add_argument("--max-steps", type=int, default=100, help="cap on steps per trajectory")
    parser.add_argument(
        "--simplification",
        default="easy",
        help="ScienceWorld simplifications, comma-separated: easy (= all), teleportAction, openDoors, "
        "openContainers, selfWateringFlowerPots, noElectricalAction; '' for none (default easy)",
    )
    parser.add_argument(
        "--observation",
        choices=["plain", "look", "full"],
        default="look",
        help="step observation: the simulator's output (plain); plus the room description when the output is "
        "not already one (look, default); plus the inventory too (full)",
    )
    parser.add_argument("--agent-id", default="scienceworld-oracle")
    parser.add_argument("--post", metavar="URL", help="post the trajectories to a Skillfoundry at URL")
    parser.add_argument("--api-key", help="agent-scoped API key for --post")
    parser.add_argument("--post-only", action="store_true", help="post --out as it is; generate nothing")
    args = parser.parse_args(argv)
    args.task = args.task or list(DEFAULT_TASKS)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := set(args.modes) - set(MODES):
        parser.error(f"unknown modes {sorted(unknown)}; choose from {MODES}")
    if args.perturbed > 0 and not args.modes:
        parser.error("--perturbed needs at least one mode")
    if (args.post or args.post_only) and not (args.post and args.api_key):
        parser.error("posting needs --post URL and --api-key KEY")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.post_only:
        started = time.monotonic()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        counts = {"gold": 0, "perturbed": 0, "success": 0, "steps": 0}
        with args.out.open("w", encoding="utf-8") as fh:
            for record in generate(args):
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                fh.flush()
                counts[record["metadata"]["kind"]] += 1
                counts["success"] += bool(record["outcome"]["success"])
                counts["steps"] += len(record["steps"])
        log(
            f"wrote {counts['gold'] + counts['perturbed']} trajectories ({counts['gold']} gold, "
            f"{counts['perturbed']} perturbed, {counts['success']} successful, {counts['steps']} steps) "
            f"to {args.out} in {time.monotonic() - started:.1f}s"
        )
    if args.post:
        post(args.out, args.post, args.api_key)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
