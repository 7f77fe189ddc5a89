"""`eval closed-loop`: slot filling, avoid filtering, exploration, the LLM hook, the online loop."""

from __future__ import annotations

import importlib.util
import random
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from skillfoundry_client import AgentSession, Client
from skillfoundry_client.models import Action, Retrieval, RetrievedItem
from sqlalchemy.orm import Session

from app.api.deps import get_app_settings
from app.api.routes.retrieve import get_log_sessions
from app.config import Settings
from app.embedding import SentenceTransformerEmbedder, get_embedder
from app.evaluation_loop import DOMAIN, LoopConfig, evolve_in_process, play_one, run_closed_loop, train_subset
from app.evolver.closed_loop import (
    PLAN_STALL,
    EpisodeResult,
    EpisodeSpec,
    EpisodeState,
    Hint,
    LLMAgent,
    Observation,
    PlanStep,
    RuleAgent,
    as_categories,
    avoided,
    bind,
    by_task,
    embedding_kinship,
    explore,
    fill,
    hints_of,
    kind_of,
    online,
    openai_chat,
    parse_action,
    pitfalls_of,
    plan_of,
    play,
    round_robin,
    running_mean,
)
from app.storage.models import Scope
from app.storage.repositories import trajectories
from tests import openai_server
from tests.factories import make_key, make_tenant

ANIMAL = (
    "Your task is to find a(n) animal. First, focus on the thing. "
    + "Then, move it to the red box in the kitchen."
)
GARDEN_TASK = "Your task is to find a(n) animal in the garden. First, focus on it."


# --- a tiny world with the ScienceWorld interface ---------------------------------------------------


@dataclass
class Garden:
    """Hallway and garden; focusing on the cat in the garden wins, on anything else loses."""

    task: str = GARDEN_TASK
    room: str = "hallway"
    score: float = 0.0
    done: bool = False
    log: list[str] = field(default_factory=list)

    def _valid(self) -> tuple[str, ...]:
        things = {"hallway": ("picture",), "garden": ("cat", "rock")}[self.room]
        other = "garden" if self.room == "hallway" else "hallway"
        return ("look around", f"go to {other}", "inventory", *(f"focus on {t}" for t in things))

    def _see(self, text: str, error: str | None = None) -> Observation:
        room = f"This room is called the {self.room}. In it, you see: the agent, " + ", ".join(
            a.removeprefix("focus on ") for a in self._valid() if a.startswith("focus on ")
        )
        return Observation(f"{text}\n\n{room}", self._valid(), self.score, self.done, error)

    def reset(self) -> Observation:
        self.room, self.score, self.done = "hallway", 0.0, False
        return self._see("You are in the hallway.")

    def step(self, action: str) -> Observation:
        self.log.append(action)
        if action not in self._valid():
            return self._see("No known action matches that input.", "No known action matches that input.")
        if action.startswith("go to "):
            self.room = action.removeprefix("go to ")
            self.score = max(self.score, 0.5 if self.room == "garden" else 0.0)
            return self._see(f"You move to the {self.room}.")
        if action == "focus on cat":
            self.score, self.done = 1.0, True
        elif action.startswith("focus on "):
            self.score, self.done = 0.0, True
        return self._see(f"You did: {action}.")


def gold_run(variation: int) -> dict[str, Any]:
    world = Garden()
    steps = []
    observation = world.reset()
    for action in ("go to garden", "focus on cat"):
        after = world.step(action)
        steps.append(
            {
                "observation": observation.text,
                "action": action,
                "reward": after.score - observation.score,
                "error": None,
            }
        )
        observation = after
    return {
        "task": GARDEN_TASK,
        "domain": "garden",
        "agent_id": "oracle",
        "steps": steps,
        "session_id": f"gold-{variation}",
        "outcome": {"success": True, "score": 1.0},
        "metadata": {"task_name": "garden", "variation": str(variation)},
    }


# --- templates, fills and avoids ------------------------------------------------------------------


class TestFill:
    def test_bind_reports_each_slot(self) -> None:
        binding = bind(
            "move <object> in inventory to <task:object>", "move egg turtle in inventory to red box", ANIMAL
        )
        assert binding == (("any", "", "egg turtle"), ("task", "", "red box"))
        assert bind("go to <task:object>", "go to garden", ANIMAL) is None  # not a word of the task
        assert bind("focus on <task:plant>", "focus on dove", ANIMAL) is None  # the task names no plant
        assert bind("focus on <task:animal>", "focus on dove", ANIMAL) == (("category", "animal", "dove"),)

    def test_fills_from_valid_actions_known_values_first(self) -> None:
        valid = ["focus on rock", "focus on turtle", "focus on dove", "go to kitchen", "go to garden"]
        animals = {"animal": frozenset({"dove", "blue jay"})}
        fills = fill("focus on <task:animal>", valid, ANIMAL, categories=animals)
        assert [(f.action, f.rank) for f in fills][:1] == [("focus on dove", 0)]
        assert {f.action for f in fills if f.rank == 1} == {"focus on rock", "focus on turtle"}
        assert [f.action for f in fill("go to <task:object>", valid, ANIMAL)] == ["go to kitchen"]
        assert [(f.action, f.rank) for f in fill("go to kitchen", valid, ANIMAL)] == [("go to kitchen", 0)]
        plan_fill = fill("go to <object>", valid, ANIMAL, known=frozenset({"garden"}))
        assert plan_fill[0].action == "go to garden" and plan_fill[0].rank == 0

    def test_avoid_other_object_spares_what_the_task_names(self) -> None:
        pitfall = Hint("e1", "avoid", "focus on <other:object>")
        animals = {"animal": frozenset({"dove"})}
        assert avoided("focus on rock", [pitfall], ANIMAL, animals) == pitfall
        assert avoided("focus on dove", [pitfall], ANIMAL, animals) is None  # a known animal
        assert avoided("focus on red box", [pitfall], ANIMAL, animals) is None  # words of the task
        assert avoided("go to kitchen", [pitfall, Hint("e2", "avoid", "look around")], ANIMAL, {}) is None
        assert avoided("look around", [Hint("e2", "avoid", "look around")], ANIMAL, {}) is not None
        # A literal `do` (`focus on rock` found the thing) beats the general warning, not a literal one.
        vouched = frozenset({"focus on rock"})
        assert avoided("focus on rock", [pitfall], ANIMAL, animals, vouched=vouched) is None
        literal = Hint("e3", "avoid", "focus on rock")
        assert avoided("focus on rock", [pitfall, literal], ANIMAL, animals, vouched=vouched) == literal

    def test_hints_plan_and_pitfalls(self) -> None:
        items = [
            RetrievedItem(
                kind="experience",
                id="e1",
                score=1,
                tokens=1,
                polarity="do",
                action=Action(
                    template="focus on <task:animal>",
                    example="focus on dove",
                    slots=[
                        {
                            "name": "animal",
                            "source": "task_category",
                            "example": "dove",
                            "examples": ["dove", "blue jay"],
                        }
                    ],
                ),
            ),
            RetrievedItem(kind="skill", id="s1", score=1, tokens=1, name="x"),
            RetrievedItem(
                kind="experience",
                id="e2",
                score=1,
                tokens=1,
                polarity="avoid",
                action=Action(template="scan", example="scan"),
            ),
        ]
        do, avoid = hints_of(items)
        assert do.categories == {"animal": frozenset({"dove", "blue jay"})} and do.example == "focus on dove"
        assert (avoid.id, avoid.polarity, avoid.template) == ("e2", "avoid", "scan")
        body = (
            "---\nname: find-animal\ndescription: Plan. Use at the start.\n---\n\n# Strategy\n\n"
            "## Procedure\n\n`<object>`: varies by task; examples are given per step.\n\n"
            "1. `open door to <object>` (`<object>` varies by task; e.g. greenhouse, hallway)\n"
            "2. `look around`\n3. `go to <task:object>`\n\n"
            "## Pitfalls\n\n- `focus on <other:object>` ended a failed run (9 runs)\n"
        )
        plan = plan_of(body)
        assert plan == (
            PlanStep("open door to <object>", frozenset({"greenhouse", "hallway"})),
            PlanStep("look around"),
            PlanStep("go to <task:object>"),
        )
        assert pitfalls_of(body, "s1") == (Hint("s1", "avoid", "focus on <other:object>", terminal=True),)

    def test_each_step_of_a_composite_line_keeps_its_own_examples(self) -> None:
        body = (
            "---\nname: s\ndescription: Plan.\n---\n\n## Procedure\n\n"
            "1. Use the [walk](../walk/SKILL.md) skill: `go to <object>` (`<object>` varies by task; e.g. "
            "hallway, kitchen), then `look around`, then `focus on <object>` (`<object>` varies by task; "
            "e.g. dove, blue jay).\n"
        )
        assert plan_of(body) == (
            PlanStep("go to <object>", frozenset({"hallway", "kitchen"})),
            PlanStep("look around"),
            PlanStep("focus on <object>", frozenset({"dove", "blue jay"})),
        )


def _kin(value: str, seen: frozenset[str]) -> float:
    """A stand-in kinship: animals are akin to animals, nothing else to anything."""
    animals = {"dove", "blue jay", "turtle", "egg turtle", "parrot"}
    return 0.8 if value in animals and seen & animals else 0.1


ROOMS = frozenset({"hallway", "kitchen", "living room", "outside"})


class TestTypedFills:
    def test_a_place_never_fills_a_slot_seen_with_things(self) -> None:
        valid = ["focus on living room", "focus on turtle", "go to kitchen"]
        fills = fill("focus on <object>", valid, ANIMAL, known=frozenset({"dove"}), places=ROOMS)
        assert [f.action for f in fills] == ["focus on turtle"]
        # Seen with places, places are fine.
        fills = fill("go to <object>", valid, ANIMAL, known=frozenset({"hallway"}), places=ROOMS)
        assert [f.action for f in fills] == ["go to kitchen"]

    def test_task_slot_prefers_the_thing_over_its_room(self) -> None:
        valid = ["move dove to kitchen", "move dove to red box"]
        fills = fill("move dove to <task:object>", valid, ANIMAL, places=ROOMS)
        assert [(f.action, f.rank) for f in fills] == [
            ("move dove to red box", 0),
            ("move dove to kitchen", 0),
        ]
        # Seen with a thing, the room is out.
        fills = fill("move dove to <task:object>", valid, ANIMAL, known=frozenset({"blue box"}), places=ROOMS)
        assert [f.action for f in fills] == ["move dove to red box"]

    def test_an_object_slot_never_takes_what_the_task_names(self) -> None:
        valid = ["focus on red box", "focus on turtle"]
        fills = fill("focus on <object>", valid, ANIMAL, known=frozenset({"dove"}), places=ROOMS)
        assert [f.action for f in fills] == ["focus on turtle"]

    def test_kinship_ranks_unseen_values_and_gates_categories(self) -> None:
        valid = ["focus on rock", "focus on egg turtle", "focus on dove"]
        fills = fill("focus on <object>", valid, ANIMAL, known=frozenset({"blue jay"}), kin=_kin)
        assert [(f.action, f.rank, f.fit) for f in fills] == [
            ("focus on egg turtle", 1, 0.8),
            ("focus on dove", 1, 0.8),
            ("focus on rock", 1, 0.1),
        ]
        animals = {"animal": frozenset({"blue jay"})}
        fills = fill("focus on <task:animal>", valid, ANIMAL, categories=animals, kin=_kin)
        assert "focus on rock" not in [f.action for f in fills]  # not akin enough to be an animal
        pitfall = Hint("s1", "avoid", "focus on <other:object>")
        assert avoided("focus on egg turtle", [pitfall], ANIMAL, animals, _kin) is None
        assert avoided("focus on rock", [pitfall], ANIMAL, animals, _kin) == pitfall

    def test_a_recorded_qualifier_may_be_left_out(self) -> None:
        valid = ["move turtle to red box", "move turtle to kitchen"]
        fills = fill(
            "move <object> in inventory to <task:object>",
            valid,
            ANIMAL,
            known=frozenset({"turtle"}),
            places=ROOMS,
        )
        assert [f.action for f in fills] == ["move turtle to red box"]

    def test_embedding_kinship_knows_an_animal_from_a_tool(self) -> None:
        kin = embedding_kinship(get_embedder())
        seen = frozenset({"egg giant tortoise", "parrot", "blue jay"})
        assert kin("turtle", seen) > kin("axe", seen)
        assert kin("parrot", seen) == pytest.approx(1.0, abs=1e-3)
        assert kin("turtle", frozenset()) == 0.0


# --- the agent --------------------------------------------------------------------------------------


def _state(text: str = "This room is called the hallway.", seed: int = 0) -> EpisodeState:
    return EpisodeState.start(seed, Observation(text, ()))


class TestPolicy:
    def test_exploration_order_then_seeded_random(self) -> None:
        state = _state()
        valid = ["look around", "open door to kitchen", "go to kitchen", "go to door to kitchen", "eat apple"]
        assert explore(valid, state, _anything).action == "look around"
        state.acted("look around")
        assert explore(valid, state, _anything).action == "open door to kitchen"
        state.acted("open door to kitchen")
        assert explore(valid, state, _anything).action == "go to kitchen"
        state.acted("go to kitchen")
        state.visited.add("kitchen")
        picks = [explore(valid, _copy(state, seed), lambda a: a != "eat apple").action for seed in (1, 1)]
        assert picks[0] == picks[1] and picks[0] != "eat apple"
        assert explore(valid, _copy(state, 1), _anything).source == "random"

    def test_exploration_follows_through_on_what_raised_the_score(self) -> None:
        task = (
            "Your task is to find a(n) non-living thing. First, focus on the thing. "
            "Then, move it to the orange box in the bathroom."
        )
        kitchen = (
            "look around", "focus on thermometer", "look at thermometer", "pick up thermometer",
            "move thermometer to red box", "go to hallway", "teleport to bathroom", "teleport to bedroom",
        )  # fmt: skip
        state = _state("This room is called the kitchen.")
        state.acted("go to hallway")  # a rise on a move names a place, not a thing to carry
        state.see(Observation("You move to the hallway.", kitchen, 0.1))
        assert state.found == []
        state.acted("focus on thermometer")
        state.see(Observation("You focus on the thermometer.", kitchen, 0.75))
        assert state.found == ["thermometer"]
        # The red box is not the task's: take the thing along, then go where the task says.
        assert explore(kitchen, state, _anything, task=task).action == "pick up thermometer"
        state.acted("pick up thermometer")
        state.see(Observation("You move the thermometer to the inventory.", kitchen, 0.75))
        assert explore(kitchen, state, _anything, task=task).action == "teleport to bathroom"
        state.acted("teleport to bathroom")
        bathroom = ("look around", "look at thermometer", "move thermometer in inventory to orange box")
        state.see(Observation("This room is called the bathroom.", bathroom, 0.75))
        assert explore(bathroom, state, _anything, task=task).action == (
            "move thermometer in inventory to orange box"
        )
        # Where the task says it has been since: not again (no back and forth from every room).
        state.acted("teleport to bedroom")
        bedroom = ("teleport to bathroom", "look around")
        state.see(Observation("This room is called the bedroom.", bedroom, 0.75))
        assert state.trail == ["kitchen", "bathroom", "bedroom"]
        assert explore(bedroom, state, _anything, task=task).action == "look around"
        # Nothing raised the score: the plain tour.
        assert explore(kitchen, _state("This room is called the kitchen."), _anything, task=task).action == (
            "look around"
        )

    def test_guidance_order(self) -> None:
        agent = RuleAgent()
        valid = ("look around", "go to kitchen", "go to garden", "focus on rock", "focus on dove")
        obs = Observation("This room is called the hallway.", valid)
        do_kitchen = Hint("e1", "do", "go to <task:object>", "go to kitchen")
        do_focus = Hint(
            "e2", "do", "focus on <task:animal>", "focus on dove", categories={"animal": frozenset({"dove"})}
        )
        avoid_look = Hint("e3", "avoid", "look around")
        # A known `do` fill first (answer order); an avoided action never.
        choice = agent.choose(ANIMAL, obs, [avoid_look, do_focus, do_kitchen], _state())
        assert (choice.action, choice.used, choice.source) == ("focus on dove", ("e2",), "do")
        # A `do` that is also a next procedure step beats the rest, and names the strategy too.
        state = _state()
        state.plan, state.strategy_id = (PlanStep("go to <object>"),), "s1"
        choice = agent.choose(ANIMAL, obs, [do_focus, do_kitchen], state)
        assert (choice.action, choice.used, choice.source) == ("go to kitchen", ("e1", "s1"), "plan+do")
        state.acted(choice.action)
        assert state.plan_pos == 1
        # Nothing fillable: the exploration policy, which skips avoided actions.
        choice = agent.choose(ANIMAL, obs, [avoid_look], _state())
        assert choice.source == "explore" and choice.action == "go to garden"

    def test_pitfalls_hold_for_the_episode(self) -> None:
        state = _state()
        state.pitfalls = (Hint("s1", "avoid", "focus on <other:object>"),)
        obs = Observation("This room is called the garden.", ("focus on rock",))
        choice = RuleAgent().choose(ANIMAL, obs, [Hint("e1", "do", "focus on <object>")], state)
        assert choice.source == "random"  # the only action left, though warned against

    def test_a_place_to_reach_holds_the_plan_back(self) -> None:
        agent = RuleAgent(kin=_kin)
        state = _state("This room is called the hallway.")
        state.plan = (
            PlanStep("go to outside"),
            PlanStep("look around"),
            PlanStep("focus on <object>", frozenset({"dove"})),
        )
        state.places |= ROOMS
        valid = ("look around", "go to kitchen", "teleport to outside", "focus on picture")
        obs = Observation("This room is called the hallway.", valid)
        # `go to outside` is not possible here: no focus yet; the agent heads for the place.
        assert [s.template for s in state.window()] == ["go to outside"]
        choice = agent.choose(ANIMAL, obs, [], state)
        assert (choice.action, choice.source) == ("teleport to outside", "explore")
        state.acted(choice.action)
        state.see(
            Observation("This outside location is called the outside.", ("look around", "focus on turtle"))
        )
        # Outside, the literal step is done; the agent looks around, then focuses on the animal.
        assert state.plan_pos == 1 and [s.template for s in state.window()][:1] == ["look around"]
        obs = Observation("This outside location is called the outside.", ("look around", "focus on turtle"))
        assert agent.choose(ANIMAL, obs, [], state).action == "look around"
        state.acted("look around")
        assert agent.choose(ANIMAL, obs, [], state).action == "focus on turtle"

    def test_guidance_to_go_elsewhere_waits_until_the_thing_is_taken_along(self) -> None:
        task = ANIMAL.replace("red box in the kitchen", "purple box in the living room")
        agent = RuleAgent(kin=_kin)
        state = _state("This room is called the kitchen.")
        valid = ("look around", "focus on thermometer", "pick up thermometer", "teleport to living room")
        obs = Observation("This room is called the kitchen.", valid)
        go = Hint("e1", "do", "teleport to <task:object>", "teleport to living room")
        assert agent.choose(task, obs, [go], _copy_plan(state)).action == "teleport to living room"
        state.acted("focus on thermometer")
        state.see(replace(obs, score=0.75))
        assert agent.choose(task, replace(obs, score=0.75), [go], state).action == "pick up thermometer"
        state.acted("pick up thermometer")
        state.see(replace(obs, score=0.83))
        assert agent.choose(task, replace(obs, score=0.83), [go], state).action == "teleport to living room"

    def test_a_goal_place_reached_is_not_headed_for_again_until_the_plan_moves(self) -> None:
        """The box's room is where the plan goes next, but the animal is not found yet: no back and forth."""
        task = ANIMAL.replace("red box in the kitchen", "red box in the bedroom")
        agent = RuleAgent(kin=_kin)
        state = _state("This room is called the hallway.")
        state.looked.add("hallway")
        state.plan = (PlanStep("focus on <task:animal>"), PlanStep("go to <task:object>"))
        state.places |= ROOMS | {"bedroom"}
        valid = ("look around", "teleport to bedroom", "teleport to kitchen")
        obs = Observation("This room is called the hallway.", valid)
        assert agent.choose(task, obs, [], state).action == "teleport to bedroom"
        state.acted("teleport to bedroom")
        state.see(Observation("This room is called the bedroom.", ("look around", "teleport to kitchen")))
        state.acted("look around")
        state.acted("teleport to kitchen")
        rooms = ("look around", "teleport to bedroom", "teleport to living room")
        kitchen = Observation("This room is called the kitchen.", rooms)
        state.see(kitchen)
        state.looked.add("kitchen")
        assert agent.choose(task, kitchen, [], state).action == "teleport to living room"

    def test_an_unsure_fill_never_risks_a_move_that_ended_failed_runs(self) -> None:
        agent = RuleAgent(kin=_kin)
        state = _state("This room is called the workshop.")
        state.looked.add("workshop")
        state.plan = (PlanStep("focus on <object>", frozenset({"dove"})),)
        valid = ("look around", "focus on blue wire", "look at blue wire")
        obs = Observation("This room is called the workshop.", valid)
        assert agent.choose(ANIMAL, obs, [], _copy_plan(state)).action == "focus on blue wire"
        warned = [Hint("s1", "avoid", "focus on fountain", terminal=True)]
        assert agent.choose(ANIMAL, obs, warned, state).action != "focus on blue wire"

    def test_a_plan_stalled_on_a_place_lets_the_agent_go_on(self) -> None:
        state = _state()
        state.plan = (PlanStep("go to outside"), PlanStep("focus on <object>"))
        state.places |= ROOMS
        assert [s.template for s in state.window()] == ["go to outside"]
        state.stalled = PLAN_STALL
        assert [s.template for s in state.window()] == ["go to outside", "focus on <object>"]

    def test_a_risky_action_that_paid_is_not_risked_again_and_its_value_carries_on(self) -> None:
        agent = RuleAgent(kin=_kin)
        state = _state("This outside location is called the outside.")
        state.plan = (PlanStep("focus on <object>", frozenset({"dove"})), PlanStep("pick up <object>"))
        state.pitfalls = (Hint("s1", "avoid", "focus on <other:object>"),)
        state.categories = {"animal": frozenset({"dove"})}  # the pitfall spares animals
        valid = ("focus on turtle", "focus on parrot", "pick up turtle", "pick up rock")
        obs = Observation("This outside location is called the outside.", valid)
        choice = agent.choose(ANIMAL, obs, [], state)
        assert choice.action == "focus on turtle"
        state.acted(choice.action)
        state.see(replace(obs, score=0.5))  # it raised the score
        assert state.spent == {"focus on <other:object>"} and "turtle" in state.gained
        choice = agent.choose(ANIMAL, replace(obs, score=0.5), [], state)
        assert choice.action == "pick up turtle"  # the focused animal, not another focus

    def test_the_value_of_a_do_lesson_that_paid_carries_on_without_a_plan(self) -> None:
        """No strategy: `focus on <task:animal>` on a wolf paid, so `pick up <task:animal>` takes the wolf.

        The stand-in kinship knows no wolf: without the carried value the pick-up would not be sure.
        """
        agent = RuleAgent(kin=_kin)
        seen = {"animal": frozenset({"dove"})}
        focus = Hint("e1", "do", "focus on <task:animal>", "focus on dove", categories=seen)
        pick = Hint("e2", "do", "pick up <task:animal>", "pick up dove", categories=seen)
        here = "This outside location is called the outside."
        obs = Observation(here, ("focus on dove", "pick up axe", "pick up baby wolf"))
        choice = agent.choose(ANIMAL, obs, [focus], _state(here))
        assert (choice.action, choice.template) == ("focus on dove", "focus on <task:animal>")
        state = _state(here)
        state.acted("focus on baby wolf", "focus on <task:animal>")
        state.see(replace(obs, score=0.5))
        assert state.gained == {"baby wolf"}
        choice = agent.choose(ANIMAL, replace(obs, score=0.5), [pick], state)
        assert (choice.action, choice.source) == ("pick up baby wolf", "do")
        # A step that raised nothing carries nothing on, and the unsure wolf is left alone.
        state = _state(here)
        state.acted("focus on baby wolf", "focus on <task:animal>")
        state.see(obs)
        assert state.gained == set()
        assert agent.choose(ANIMAL, obs, [pick], state).source != "do"

    def test_a_plan_step_on_a_seen_category_value_is_a_step_on_the_category(self) -> None:
        """Every recorded run found a dove: `pick up dove` reads `pick up <task:animal>`, the wolf found."""
        seen = {"animal": frozenset({"dove", "egg dove egg"})}
        assert as_categories(PlanStep("pick up dove"), seen) == PlanStep(
            "pick up <task:animal>", frozenset({"dove"})
        )
        step = as_categories(PlanStep("move egg dove egg in inventory to <task:object>"), seen)
        assert step.template == "move <task:animal> in inventory to <task:object>"
        assert as_categories(PlanStep("pick up dovetail"), seen) == PlanStep("pick up dovetail")
        assert as_categories(PlanStep("go to kitchen"), seen) == PlanStep("go to kitchen")
        # An object slot seen with a dove (and a flower pot nobody vouches for) is the animal slot.
        slot = as_categories(PlanStep("pick up <object>", frozenset({"dove", "flower pot"})), seen)
        assert slot == PlanStep("pick up <task:animal>", frozenset({"dove"}))
        rooms = PlanStep("go to <object>", frozenset({"dove", "kitchen"}))
        assert as_categories(rooms, seen, places={"kitchen"}) == rooms  # a place among them: not the animal
        agent = RuleAgent(kin=_kin)
        here = "This outside location is called the outside."
        state = _state(here)
        state.plan, state.strategy_id = (PlanStep("focus on dove"), PlanStep("pick up dove")), "s1"
        hint = Hint("e1", "do", "look around", categories=seen)  # brings what the library saw as animals
        state.learn([hint])
        assert [s.template for s in state.plan] == ["focus on <task:animal>", "pick up <task:animal>"]
        state.acted("focus on baby wolf")
        state.see(Observation(here, (), score=0.5))
        assert state.plan_pos == 1 and state.gained == {"baby wolf"}
        obs = Observation(here, ("pick up axe", "pick up baby wolf"), score=0.5)
        choice = agent.choose(ANIMAL, obs, [hint], state)
        assert (choice.action, choice.source) == ("pick up baby wolf", "plan")

    def test_the_earliest_next_step_a_do_names_comes_first(self) -> None:
        """Answer order puts `pick up` first, but the plan says focus first: the agent focuses."""
        seen = {"animal": frozenset({"dove"})}
        pick = Hint("e1", "do", "pick up <task:animal>", "pick up dove", categories=seen)
        focus = Hint("e2", "do", "focus on <task:animal>", "focus on dove", categories=seen)
        state = _state("This outside location is called the outside.")
        state.plan = (PlanStep("focus on <task:animal>"), PlanStep("pick up <task:animal>"))
        state.strategy_id = "s1"
        obs = Observation("This outside location is called the outside.", ("pick up dove", "focus on dove"))
        choice = RuleAgent(kin=_kin).choose(ANIMAL, obs, [pick, focus], state)
        assert (choice.action, choice.source, choice.used) == ("focus on dove", "plan+do", ("e2", "s1"))

    def test_guidance_does_not_repeat_an_action_until_the_score_rises(self) -> None:
        """`teleport to <task:object>` pays only once: taken again from the next room, it would loop."""
        go = Hint("e1", "do", "teleport to <task:object>", "teleport to kitchen")
        valid = ("teleport to kitchen", "look around")
        agent = RuleAgent()
        state = _state("This room is called the hallway.")
        assert (
            agent.choose(ANIMAL, Observation("This room is called the hallway.", valid), [go], state).source
            == "do"
        )
        state.acted("teleport to kitchen", go.template)
        state.see(Observation("This room is called the kitchen.", valid))
        state.see(Observation("This room is called the bedroom.", valid))  # it went on elsewhere
        assert state.stale("teleport to kitchen")
        bedroom = Observation("This room is called the bedroom.", valid)
        assert agent.choose(ANIMAL, bedroom, [go], state).source != "do"
        state.see(replace(bedroom, score=0.5))  # something paid: going back may be the next step now
        assert agent.choose(ANIMAL, replace(bedroom, score=0.5), [go], state).action == "teleport to kitchen"

    def test_a_literal_pitfall_that_ended_runs_makes_its_kind_of_move_risky(self) -> None:
        """`focus on fountain` ended failed runs: once a focus pays, no other focus is risked."""
        assert kind_of("focus on fountain") == "focus on <object>"
        assert kind_of("move egg turtle to orange box") == "move <object> to <object>"
        assert kind_of("pick up <task:object>") == "pick up <object>"
        # Where an object is belongs to the object: one wrong focus warns against every focus.
        assert kind_of("focus on anode in violet light bulb") == "focus on <object>"
        assert kind_of("move egg turtle in inventory to orange box") == "move <object> to <object>"
        assert kind_of("look in drawer") == "look in <object>"
        agent = RuleAgent(kin=_kin)
        state = _state("This outside location is called the outside.")
        state.plan = (PlanStep("focus on <object>", frozenset({"dove"})), PlanStep("pick up <object>"))
        state.pitfalls = (
            Hint("s1", "avoid", "focus on fountain", terminal=True),
            Hint("s1", "avoid", "go to bathroom door"),  # not terminal: moving stays allowed
        )
        valid = ("focus on turtle", "focus on parrot", "go to kitchen", "pick up turtle")
        obs = Observation("This outside location is called the outside.", valid)
        do_focus = Hint("e1", "do", "focus on <object>", "focus on dove", frozenset({"dove"}))
        choice = agent.choose(ANIMAL, obs, [do_focus], state)
        assert choice.action == "focus on turtle"
        state.acted(choice.action)
        state.see(replace(obs, score=0.5))
        assert "focus on <object>" in state.spent and "go to <object>" not in state.spent
        choice = agent.choose(ANIMAL, replace(obs, score=0.5), [do_focus], state)
        assert choice.action == "pick up turtle"

    def test_a_move_that_ended_failed_runs_is_never_taken_at_random(self) -> None:
        state = _state("This outside location is called the outside.")
        state.looked.add("outside")
        valid = ("focus on turtle", "focus on rock", "look at rock")
        assert {explore(valid, _copy(state, seed), _anything).action for seed in range(20)} > {"look at rock"}
        state.learn([Hint("e1", "avoid", "focus on fountain", terminal=True)])
        assert state.fatal == {"focus on <object>"}
        for seed in range(20):
            fresh = _copy(state, seed)
            fresh.fatal = set(state.fatal)
            assert explore(valid, fresh, _anything).action == "look at rock"

    def test_llm_reply_parsing(self) -> None:
        valid = ["go to kitchen", "go to kitchen table", "look around"]
        assert parse_action("go to kitchen [E1]", valid) == "go to kitchen"
        assert parse_action("Action: `Look around`.", valid) == "look around"
        assert parse_action("I think I should go to kitchen table now", valid) == "go to kitchen table"
        assert parse_action("fly away", valid) is None
        assert parse_action("", valid) is None


def _anything(_: str) -> bool:
    return True


def _copy_plan(state: EpisodeState) -> EpisodeState:
    return replace(state, rng=random.Random("0"), looked=set(state.looked))  # noqa: S311 - a test


def _copy(state: EpisodeState, seed: int) -> EpisodeState:
    out = EpisodeState(rng=random.Random(str(seed)), room=state.room)  # noqa: S311 - a test
    out.looked, out.visited, out.opened, out.tried = (
        set(state.looked),
        set(state.visited),
        set(state.opened),
        state.tried.copy(),
    )
    return out


# --- the loop with a fake library -------------------------------------------------------------------


class FakeClient:
    """What AgentSession needs of a Client: answers from a list of items; trajectories kept."""

    def __init__(self, items: Sequence[RetrievedItem] = ()) -> None:
        self.items = list(items)
        self.posted: list[dict[str, Any]] = []
        self.asked = 0

    def retrieve(self, **_: Any) -> Retrieval:
        self.asked += 1
        return Retrieval(retrieval_id=f"r{self.asked}", items=self.items, tokens=0)

    def create_trajectory(self, **body: Any) -> Any:
        self.posted.append(body)

        @dataclass
        class Accepted:
            ids: list[str]
            event_id: str

        return Accepted([f"t{len(self.posted)}"], f"ev{len(self.posted)}")


def _session(client: Any, task: str = GARDEN_TASK) -> AgentSession:
    return AgentSession(client, task, agent_id="a", domain="garden")


class TestLoop:
    def test_play_follows_a_do_experience_and_records_used_ids(self) -> None:
        cat = RetrievedItem(
            kind="experience",
            id="e1",
            score=1,
            tokens=1,
            polarity="do",
            action=Action(template="focus on cat", example="focus on cat"),
        )
        client = FakeClient([cat])
        session = _session(client)
        result = play(EpisodeSpec("garden", 0), Garden(), session, RuleAgent(), max_steps=10, post=True)
        assert result.success and result.actions[-1] == "focus on cat"
        assert result.trajectory_id == "t1" and result.event_id == "ev1"
        steps = client.posted[0]["steps"]
        assert steps[-1]["used_item_ids"] == ["e1"] and steps[-1]["retrieval_id"] == f"r{len(steps)}"
        assert client.posted[0]["outcome"] == {"success": True, "score": 1.0}

    def test_bounded_steps_without_a_library(self) -> None:
        result = play(EpisodeSpec("garden", 0), Garden(), _session(FakeClient()), RuleAgent(), max_steps=3)
        assert result.steps <= 3 and result.trajectory_id is None

    def test_online_bookkeeping(self) -> None:
        specs = round_robin(["a", "b"], {"a": [1, 2], "b": [7]})
        assert specs == [EpisodeSpec("a", 1), EpisodeSpec("b", 7), EpisodeSpec("a", 2)]
        played: list[int] = []
        library: list[str] = []

        def one(index: int, spec: EpisodeSpec) -> EpisodeResult:
            played.append(index)
            score = 0.5 * len(library)
            return EpisodeResult(spec.task_type, spec.variation, score, score >= 1.0, 3, event_id=f"e{index}")

        def evolve(result: EpisodeResult) -> dict[str, int]:
            assert result.event_id == f"e{len(library)}"  # evolved after each, in order
            library.append(result.event_id)
            return {"runs": len(library)}

        steps = online(specs, one, evolve)
        assert played == [0, 1, 2] and [s.evolved["runs"] for s in steps] == [1, 2, 3]
        assert [s.result.score for s in steps] == [0.0, 0.5, 1.0]
        figures = by_task([s.result for s in steps])
        assert figures["a"].mean_score == 0.5 and figures["total"].success_rate == pytest.approx(1 / 3)
        assert figures["a"].solved_steps == 3 and figures["b"].solved_steps is None  # b was not solved
        assert running_mean([0.0, 1.0, 1.0], 2) == [0.0, 0.5, 1.0]

    def test_train_subset_takes_the_first_variations_per_task_type(self) -> None:
        runs = [
            {"metadata": {"task_name": t, "variation": v}, "i": i}
            for i, (t, v) in enumerate([("a", "0"), ("a", "0"), ("b", "5"), ("a", "1"), ("a", "2")])
        ]
        assert [r["i"] for r in train_subset(runs, 2)] == [0, 1, 2, 3]

    def test_llm_agent_through_a_real_openai_server(self) -> None:
        with openai_server.running() as server:
            server.script(
                openai_server.completion("go to garden"),
                openai_server.completion("no idea"),
                openai_server.completion("focus on cat [E1]"),
            )
            chat = openai_chat(server.url, "k", "m", timeout_s=5, max_retries=0)
            agent = LLMAgent(chat)
            result = play(EpisodeSpec("garden", 0), Garden(), _session(FakeClient()), agent, max_steps=5)
            prompt = server.requests[0]["messages"][1]["content"]
        assert "Valid actions:\nlook around\ngo to garden\ninventory" in prompt
        assert "Task: " + GARDEN_TASK in prompt and "This room is called the hallway" in prompt
        assert result.actions[0] == "go to garden" and result.success
        assert result.sources == {"llm": 2, "explore": 1} and agent.unparsed == 1


# --- through the real API -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    return get_embedder()


@pytest.fixture
def api(client: TestClient, db: Session, settings: Settings) -> TestClient:
    """The app logging retrievals in the test's transaction, never withholding an item."""

    @contextmanager
    def in_test() -> Iterator[Session]:
        yield db
        db.commit()

    changed = settings.model_copy(update={"retrieval_withhold_share": 0.0})
    client.app.dependency_overrides[get_log_sessions] = lambda: in_test
    client.app.dependency_overrides[get_app_settings] = lambda: changed
    return client


class TestThroughTheApi:
    def test_online_loop_learns_from_posted_runs(
        self, api: TestClient, db: Session, settings: Settings, embedder: SentenceTransformerEmbedder
    ) -> None:
        """A gold run learnt, then two online episodes: retrieve, fill, post with used ids, evolve."""
        tenant = make_tenant(db)
        key = make_key(db, tenant, Scope.AGENT)

        @contextmanager
        def scope() -> Iterator[Session]:
            yield db
            db.commit()

        http = Client("http://testserver", key, http_client=api)
        seeded = http.create_trajectory(**gold_run(0))
        evolve_in_process(scope, tenant.id, seeded.event_id, embedder=embedder, settings=settings)
        config = LoopConfig(task_types=("garden",), max_steps=6)

        def one(index: int, spec: EpisodeSpec) -> EpisodeResult:
            return play_one(http, spec, lambda _: Garden(), RuleAgent(), config, label=f"t{index}", post=True)

        def evolve(result: EpisodeResult) -> dict[str, Any]:
            assert result.event_id is not None
            return evolve_in_process(scope, tenant.id, result.event_id, embedder=embedder, settings=settings)

        steps = online([EpisodeSpec("garden", 1), EpisodeSpec("garden", 2)], one, evolve)
        first, second = (s.result for s in steps)
        assert all("experiences" in s.evolved for s in steps)
        # After two successful runs the library guides the agent: `do` experiences, straight to the cat.
        assert second.success and second.sources.get("do") and second.actions[-1] == "focus on cat"
        assert second.trajectory_id is not None and first.trajectory_id != second.trajectory_id
        stored = trajectories.steps_of(db, uuid.UUID(second.trajectory_id))
        assert any(step.used_item_ids for step in stored), "the online run names the items it used"


@pytest.mark.skipif(importlib.util.find_spec("scienceworld") is None, reason="needs the eval extra (Java)")
def test_scienceworld_episode_smoke() -> None:
    """One real ScienceWorld episode with no library: the adapter's observations and scores."""
    from app.evaluation_loop import scienceworld_games

    world, specs = scienceworld_games(["find-non-living-thing"], 1, max_steps=3)
    try:
        result = play(specs[0], world.episode(specs[0]), _session(FakeClient()), RuleAgent(), max_steps=3)
    finally:
        world.close()
    assert result.steps == 3 and 0.0 <= result.score <= 1.0


def test_every_condition_end_to_end_on_a_tiny_world(settings: Settings) -> None:
    """The whole harness on `Garden`: a scratch database, the API over HTTP, the conditions, online."""
    train = [{**gold_run(v), "domain": DOMAIN} for v in range(3)]  # the domain the harness's agent asks for
    config = LoopConfig(task_types=("garden",), train_sizes=(1,), max_steps=6, online_from=(0, 1))
    specs = [EpisodeSpec("garden", 10), EpisodeSpec("garden", 11)]
    report = run_closed_loop(
        settings, train, config, games=lambda _: Garden(), specs=specs, agent=RuleAgent()
    )
    assert [c.name for c in report.conditions] == ["empty", "train-1"]
    learnt = report.conditions[1]
    assert learnt.library["train_runs"] == 1 and all(r.success for r in learnt.results)
    # Online from an empty library and from train-1, each run posted and learnt from before the next.
    assert [run.name for run in report.online] == ["online from empty", "online from train-1"]
    from_empty, from_train = report.online
    assert from_train.steps[0].result.success, "from train-1: guided from the first episode"
    for run in report.online:
        assert len(run.steps) == 2
        assert all(s.result.trajectory_id and "experiences" in s.evolved for s in run.steps)
    rows = ["empty", "train-1", "online from empty", "online from train-1"]
    assert [name for name, _ in report.rows()] == rows
    assert [o["start"] for o in report.as_dict()["online"]] == ["empty", "train-1"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--online-from", "x"], "whole numbers"),
        (["--online-from", "0,0"], "distinct numbers of 0 or more"),
        (["--train-sizes", "0"], "distinct numbers of 1 or more"),
        (["--train-sizes", "", "--online-from", "0,1"], "need --train files"),
    ],
)
def test_closed_loop_cli_refuses_bad_library_counts(args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    from app.cli import app

    result = CliRunner().invoke(app, ["eval", "closed-loop", *args])
    assert result.exit_code == 2 and message in " ".join(result.output.replace("│", " ").split())
