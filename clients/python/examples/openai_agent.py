"""An OpenAI-compatible chat agent that uses Skillfoundry while it plays a toy text game.

At every step the agent asks the skill library what fits (`session.step`), shows the model the
guidance, lets it read a skill's full procedure on request (`LOAD: S1`), acts, and records which
items it relied on; at the end the run is posted as one trajectory, which the library learns from.

    export SKILLFOUNDRY_URL=http://127.0.0.1:8000 SKILLFOUNDRY_API_KEY=sf_...
    export OPENAI_BASE_URL=http://127.0.0.1:11434/v1 OPENAI_API_KEY=unused OPENAI_MODEL=llama3.1
    python clients/python/examples/openai_agent.py --episodes 3
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from skillfoundry_client import AgentSession, Client, SkillfoundryError

if TYPE_CHECKING:
    from openai import OpenAI

TASK = "Your task is to boil water."
DOMAIN = "toy-kitchen"
SYSTEM = (
    "You are an agent in a text game. Each turn you get an observation and guidance from a skill "
    "library. Answer with exactly one line `ACTION: <command>` (a command the observation lists), "
    "or `LOAD: <tag>` to read a skill's full procedure first. Add a line `USED: <tags>` naming the "
    "guidance items you rely on."
)
_ACTION = re.compile(r"^\s*ACTION:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_LOAD = re.compile(r"^\s*LOAD:\s*\[?([SE][0-9]+)\]?", re.IGNORECASE | re.MULTILINE)


@dataclass
class Kitchen:
    """The toy task: take the pot, fill it, put it on the stove, turn the stove on."""

    pot: str = "shelf"
    water: bool = False
    stove_on: bool = False
    won: bool = False

    def observe(self) -> str:
        """What the agent sees, and the commands it may use."""
        pot = {
            "shelf": "A pot sits on the shelf.",
            "held": "You hold a pot.",
            "stove": "A pot is on the stove.",
        }
        parts = [
            "You are in the kitchen.",
            pot[self.pot] + (" It holds water." if self.water else " It is empty."),
            f"The stove is {'on' if self.stove_on else 'off'}. There is a sink.",
            "Commands: take pot, fill pot with water, put pot on stove, activate stove, look.",
        ]
        return " ".join(parts)

    def act(self, command: str) -> tuple[str, float, str | None]:
        """Do `command`: the new observation, a reward, and an error if nothing happened."""
        command = command.strip().lower().rstrip(".")
        if command == "take pot" and self.pot == "shelf":
            self.pot = "held"
        elif command == "fill pot with water" and self.pot == "held":
            self.water = True
        elif command == "put pot on stove" and self.pot == "held":
            self.pot = "stove"
        elif command == "activate stove":
            self.stove_on = True
        elif command != "look":
            return self.observe(), 0.0, f"Nothing happens: cannot {command!r} now."
        if self.pot == "stove" and self.water and self.stove_on:
            self.won = True
            return "The water boils. You won.", 1.0, None
        return self.observe(), 0.1, None


@dataclass
class Episode:
    trajectory_id: str
    won: bool
    actions: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)


def run_episode(
    library: Client,
    llm: OpenAI,
    model: str,
    *,
    agent_id: str = "openai-agent",
    domain: str = DOMAIN,
    max_steps: int = 10,
    token_budget: int = 400,
    max_loads: int = 2,
) -> Episode:
    """Play one game with the model, guided by the library; the run is posted as a trajectory."""
    env = Kitchen()
    session = AgentSession(library, TASK, agent_id=agent_id, domain=domain, token_budget=token_budget)
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
    actions: list[str] = []
    loaded: list[str] = []
    observation = env.observe()
    for _ in range(max_steps):
        guidance = session.step(observation)
        messages.append(
            {"role": "user", "content": f"Observation: {observation}\n\n{guidance.prompt}".strip()}
        )
        reply = _chat(llm, model, messages)
        read: list[str] = []
        for _ in range(max_loads):
            wanted = _LOAD.search(reply)
            if wanted is None or _ACTION.search(reply):
                break
            tag = wanted.group(1).upper()
            try:
                text = session.load_skill(tag)
                read.append(tag)
            except SkillfoundryError as exc:
                text = f"Cannot load {tag}: {exc.message}"
            except KeyError:
                text = f"There is no {tag} in this step's guidance."
            messages.append({"role": "user", "content": f"{tag}:\n{text}\n\nNow answer with ACTION."})
            reply = _chat(llm, model, messages)
        found = _ACTION.search(reply)
        action = found.group(1) if found else "look"
        observation, reward, error = env.act(action)
        # A skill the model read counts as used, as do the items its answer names.
        used = [guidance.tags[t] for t in read if t in guidance.tags] + guidance.mentioned(reply)
        loaded += read
        session.record(
            action, used=list(dict.fromkeys(used)), reward=reward, tool_result=observation, error=error
        )
        actions.append(action)
        if env.won:
            break
    trajectory_id = session.finish(success=env.won, score=1.0 if env.won else 0.0)
    return Episode(trajectory_id, env.won, actions, loaded)


def _chat(llm: OpenAI, model: str, messages: list[dict[str, Any]]) -> str:
    answer = llm.chat.completions.create(model=model, messages=messages, temperature=0)  # type: ignore[arg-type]
    text = answer.choices[0].message.content or ""
    messages.append({"role": "assistant", "content": text})
    return text


def main(argv: list[str] | None = None) -> int:
    """Run the agent for a few episodes and print what happened."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--token-budget", type=int, default=400, help="tokens of guidance per step")
    parser.add_argument("--agent-id", default="openai-agent")
    parser.add_argument("--url", default=os.environ.get("SKILLFOUNDRY_URL"), help="default: SKILLFOUNDRY_URL")
    parser.add_argument("--model", default=os.environ.get("OPENAI_MODEL"), help="default: OPENAI_MODEL")
    parser.add_argument(
        "--openai-base-url", default=os.environ.get("OPENAI_BASE_URL"), help="default: OPENAI_BASE_URL"
    )
    args = parser.parse_args(argv)
    if not args.model:
        parser.error("set --model or OPENAI_MODEL")
    from openai import OpenAI  # only now: --help works without it

    llm = OpenAI(base_url=args.openai_base_url, api_key=os.environ.get("OPENAI_API_KEY", "unused"))
    with Client(args.url) as library:
        for n in range(1, args.episodes + 1):
            episode = run_episode(
                library, llm, args.model, agent_id=args.agent_id, max_steps=args.max_steps,
                token_budget=args.token_budget,
            )  # fmt: skip
            outcome = "won" if episode.won else "lost"
            print(
                f"episode {n}: {outcome} in {len(episode.actions)} steps, trajectory {episode.trajectory_id}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
