"""Closed-loop evaluation: an agent plays episodes with the library's guidance; does the library help?

The agent needs no LLM (`RuleAgent`). At every step it asks /v1/retrieve (task, current observation,
session id, step) through the Python client's `AgentSession`, then acts:

1. it drops every valid action that a listed `avoid` experience or the strategy's Pitfalls match
   (`avoided`), and, once a warned-against kind of action has raised the score (`focus on` the right
   thing), every further action of that kind; a move that ended failed runs (`focus on fountain`)
   warns against its whole kind (`kind_of`: `focus on <object>`); an action a literal `do` of the answer
   names is spared by warnings with slots (`focus on thermometer` against `focus on <other:object>`);
2. it *fills* templates from the environment's valid actions (`fill`): a valid action fills a template
   when it instantiates it (literal words equal; `<task:object>` by words of the task; `<task:animal>`
   by anything if the task names animals; `<object>` by anything). Slots are typed by the values the
   library has seen in them (the experience's example and slot examples, a procedure step's "e.g."
   list, and what the agent's own score-raising steps used): a place never fills a slot seen with
   things, `<object>` never takes what the task names, and a value never seen ranks by its *kinship*
   to the seen ones (`Kinship`: embedding cosine, `turtle` is like `tortoise`, not like `axe`);
   `<other:object>` in an `avoid` matches only values the task does not name (its words, or values
   of a category slot the task names, seen or akin);
3. it prefers, in this order: a `do` experience's fill that is also a next step (the earliest such) of
   the session's pinned strategy skill (its procedure, when the tier serves the body; a literal value
   the library has seen in a category slot reads as that slot, `as_categories`); the first next
   procedure step with a sure fill (seen values, or unseen ones akin enough); a sure fill of a `do`
   experience (answer order); any fill of a procedure step; then the fixed exploration policy
   (`explore`): follow through on the thing the score last rose on (`follow_through`: put it where
   the task says if that is here, else take it along, else go where the task says); head for a place
   the next steps name; look around a room not yet looked at, open a door not yet opened, go (or
   teleport) to a room not yet visited, else a random valid action (seeded per episode; never a kind
   of move that ended failed runs, `focus on <object>`, which only guidance may take; nor is an unsure
   fill of a procedure step). A goal place reached since the plan last moved on is not headed for
   again, and guidance to go elsewhere waits until the thing the score rose on is taken along. The
   next steps never reach past a literal step naming a place not reached yet (`go to outside` comes
   before `focus on <object>`) unless the plan has stalled there. An action already taken in the
   same room is not taken again unless nothing else is left, and guidance never repeats an action
   taken anywhere before unless the score has risen since (no `teleport to bedroom` from every room).

Each step is recorded with its reward, error and the ids of the items it used (the `do` experience,
the strategy skill), and the episode can be posted back as a trajectory (`AgentSession.finish`).
The LLM agent (`LLMAgent`) shares the loop: it is prompted with the guidance, the procedure, the
observation and the valid actions not avoided, and answers one action (`parse_action`).

`online` is the bookkeeping of the online condition: play, post, let the library evolve, repeat.
Everything here but `play` (HTTP through the client) is pure; environments implement `Environment`.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from statistics import fmean
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from app import skill_md
from app.evolver.generalise import object_runs, same_thing

if TYPE_CHECKING:
    from skillfoundry_client import AgentSession
    from skillfoundry_client.models import RetrievedItem

    from app.embedding import Embedder

DO, AVOID = "do", "avoid"
LOOK = "look around"
PLAN_WINDOW = 3  # procedure steps ahead of the agent's place that it may take
GUIDED_REPEATS = 1  # a guided action is not repeated in the same room
RANDOM_REPEATS = 2
MAX_PROMPT_ACTIONS = 150
KIN_THRESHOLD = 0.5  # cosine to the nearest seen value at which an unseen value counts as one of its kind
PLAN_STALL = 6  # steps the plan may wait on a literal step before the agent may skip it
_MOVES = ("go to ", "teleport to ")
_PLACE_VERBS = (*_MOVES, "open door to ", "close door to ")
_CARRY = ("pick up ", "take ")  # how a text world takes a thing along

_STEP_LINE = re.compile(r"^\s*\d+[.)]\s+(?P<body>.*)$")
_CODE_SPAN = re.compile(r"`(?P<code>[^`\n]+)`")
_EXAMPLES = re.compile(r"e\.g\.\s*(?P<list>[^)]*)\)")
_CATEGORY = re.compile(r"<task:(?P<category>[a-z0-9][a-z0-9-]*)>")
_ROOM = re.compile(r"This (?:room|outside location) is called the (?P<room>[^.\n]+)\.", re.IGNORECASE)
_PUNCTUATION = ".,;:!?\"'()`"
_QUALIFIER = re.compile(r" in [a-z]+(?= )")  # `in inventory`, a literal qualifier before the next word


# --- environments -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """What the agent sees after reset or an action."""

    text: str
    valid: tuple[str, ...]
    score: float = 0.0  # 0..1
    done: bool = False
    error: str | None = None  # the environment did not understand or refused the action


class Environment(Protocol):
    """One episode of a task: `task` is its text; `reset` starts it, `step` acts."""

    task: str

    def reset(self) -> Observation: ...

    def step(self, action: str) -> Observation: ...


# --- templates and fills ----------------------------------------------------------------------------


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def _bare(word: str) -> str:
    return word.strip(_PUNCTUATION) or word


# A template token: ("word", w) equals w; ("task", "") task words; ("category", c), ("other", ""),
# ("any", "") any words.
_Token = tuple[str, str]
Binding = tuple[tuple[str, str, str], ...]  # (kind, category, filler) per slot, in template order


def _tokens(template: str) -> tuple[_Token, ...]:
    out: list[_Token] = []
    for raw in template.lower().split():
        category = _CATEGORY.fullmatch(raw)
        if raw == "<task:object>":
            out.append(("task", ""))
        elif category is not None:
            out.append(("category", category.group("category")))
        elif raw.startswith("<other:"):
            out.append(("other", ""))
        elif raw.startswith("<") and raw.endswith(">"):
            out.append(("any", ""))
        else:
            out.append(("word", _bare(raw)))
    return tuple(out)


def bind(template: str, action: str, task: str) -> Binding | None:
    """How `action` instantiates `template` for `task` (each slot's filler), or None if it does not.

    `<task:object>` takes words of the task; a category slot (`<task:animal>`) needs the category among
    the task's words and takes any words; other slots take any words; every slot one word at least.
    """
    task_words = _words(task)
    tokens = _tokens(template)
    if any(kind == "category" and value not in task_words for kind, value in tokens):
        return None
    words = action.lower().split()

    def walk(i: int, j: int) -> Binding | None:
        if i == len(tokens):
            return () if j == len(words) else None
        kind, value = tokens[i]
        if kind == "word":
            if j < len(words) and _bare(words[j]) == value:
                return walk(i + 1, j + 1)
            return None
        for k in range(j + 1, len(words) + 1):  # shortest filler first
            filler = " ".join(words[j:k])
            if kind == "task" and not _words(filler) <= task_words:
                break
            rest = walk(i + 1, k)
            if rest is not None:
                return ((kind, value, filler), *rest)
        return None

    return walk(0, 0)


def _named(
    filler: str, task: str, categories: Mapping[str, frozenset[str]], kin: Kinship | None = None
) -> bool:
    """Whether the task names `filler`: its words, or a value of a category it names (seen, or akin)."""
    task_words = _words(task)
    if _words(filler) <= task_words:
        return True
    named = [values for category, values in categories.items() if category in task_words and values]
    if any(filler in values for values in named):
        return True
    return kin is not None and any(kin(filler, values) >= KIN_THRESHOLD for values in named)


@dataclass(frozen=True)
class Hint:
    """A listed experience as the agent uses it."""

    id: str
    polarity: str
    template: str
    example: str = ""
    known: frozenset[str] = frozenset()  # slot values the library has seen
    categories: Mapping[str, frozenset[str]] = field(default_factory=dict)  # category slot -> values
    terminal: bool = False  # an `avoid` of a move that ended failed runs (`focus on` the wrong thing)


# How the distiller says a move ended failed runs, in an experience's text and in a strategy's Pitfalls.
_ENDED = "ended a failed run"
# Words that join a verb to its objects; any other run of words in an action is an object.
_LINKS = frozenset("on to in into from at with onto up down off out for under over through".split())


def kind_of(template: str) -> str:
    """The kind of move a template is, whatever its objects: `focus on fountain` → `focus on <object>`.

    `in` after an object says where that object is (`focus on anode in violet light bulb`, `move egg
    turtle in inventory to orange box`): part of the object, not a link of the move.
    """
    words = template.split()
    out = words[:1]
    for word in words[1:]:
        if word.lower() == "in" and out[-1] == "<object>":
            continue
        if word.lower() in _LINKS:
            out.append(word.lower())
        elif out[-1] != "<object>":
            out.append("<object>")
    return " ".join(out)


def hints_of(items: Iterable[RetrievedItem]) -> list[Hint]:
    """The experiences of an answer with an action, in answer order."""
    out = []
    for item in items:
        if item.kind != "experience" or item.action is None or item.polarity not in (DO, AVOID):
            continue
        known: set[str] = set()
        categories: dict[str, frozenset[str]] = {}
        for slot in item.action.slots or []:
            values = {str(v).lower() for v in [slot.get("example"), *(slot.get("examples") or [])] if v}
            known |= values
            if slot.get("source") == "task_category" and slot.get("name"):
                categories[str(slot["name"]).lower()] = frozenset(values)
        template = item.action.template or item.action.example
        terminal = item.polarity == AVOID and _ENDED in (item.text or "").lower()
        out.append(
            Hint(
                item.id,
                item.polarity,
                template,
                item.action.example.lower(),
                frozenset(known),
                categories,
                terminal,
            )
        )
    return out


@dataclass(frozen=True)
class PlanStep:
    """One procedure step: its template and the example values of its slots."""

    template: str
    known: frozenset[str] = frozenset()


def pitfalls_of(skill_md_text: str, skill_id: str = "") -> tuple[Hint, ...]:
    """The action templates a strategy's Pitfalls section warns against, as `avoid` hints."""
    section = skill_md.parse(skill_md_text).section(skill_md.PITFALLS)
    if section is None:
        return ()
    out = []
    for line in section.body.split("\n"):
        span = _CODE_SPAN.search(line) if line.lstrip().startswith("-") else None
        if span is not None and span.group("code").strip():
            code = " ".join(span.group("code").split())
            out.append(Hint(skill_id, AVOID, code, terminal=_ENDED in line.lower()))
    return tuple(out)


def plan_of(skill_md_text: str) -> tuple[PlanStep, ...]:
    """The procedure of a strategy SKILL.md as steps with their "e.g." examples."""
    section = skill_md.parse(skill_md_text).section(skill_md.PROCEDURE)
    if section is None:
        return ()
    steps: list[PlanStep] = []
    for line in section.body.split("\n"):
        match = _STEP_LINE.match(line)
        if match is None:
            continue
        body = match.group("body")
        # Code spans are steps; a slot note ("(`<object>` varies by task ...") is not.
        spans = [m for m in _CODE_SPAN.finditer(body) if not body[: m.start()].endswith("(")]
        for n, span in enumerate(spans):
            # A step's examples are those noted after it, before the next step of the line.
            end = spans[n + 1].start() if n + 1 < len(spans) else len(body)
            examples = _EXAMPLES.search(body, span.end(), end)
            listed = examples.group("list").split(",") if examples else []
            template = " ".join(span.group("code").split())
            if template:
                steps.append(PlanStep(template, frozenset(e.strip().lower() for e in listed if e.strip())))
    return tuple(steps)


@dataclass(frozen=True)
class Fill:
    """A valid action that fills a template, and how sure the agent is of its slot values."""

    action: str
    rank: int  # 0: literal, task-filled or seen values; 1: some value never seen
    fit: float = 1.0  # the weakest slot's likeness to the values seen there (1: seen or from the task)


# How much a value is like some seen ones: the cosine to the nearest, in [-1, 1] (see `embedding_kinship`).
Kinship = Callable[[str, frozenset[str]], float]


def _slot_fit(
    kind: str,
    category: str,
    filler: str,
    task_words: set[str],
    known: frozenset[str],
    categories: Mapping[str, frozenset[str]],
    places: frozenset[str],
    kin: Kinship | None,
    carried: frozenset[str] = frozenset(),
) -> tuple[bool, float] | None:
    """Whether a slot value was seen (or comes from the task) and how well it fits; None if it cannot.

    A place never fills a slot whose seen values are all things (`focus on <object>` seen with dove and
    blue jay is not `focus on living room`). An unseen value is scored by its kinship to the seen things;
    a category slot (`<task:animal>`) takes it only at `KIN_THRESHOLD` or above, unless it is `carried`
    (what the agent's own score-raising steps used: the animal it found).
    """
    seen = (categories.get(category, known) if kind == "category" else known) | carried
    if filler in places and seen and not seen & places:
        return None
    if kind == "any" and seen and not seen & places and filler not in seen and _words(filler) <= task_words:
        return None  # the distiller writes a thing the task names as `<task:object>`: `<object>` is another
    if kind == "task":
        # From the task's own words; a place only after the things it names, unless places were seen.
        return True, 1.0 if filler not in places or seen & places else 0.9
    if filler in seen:
        return True, 1.0
    things = seen - places
    likeness = kin(filler, things) if kin is not None and things else 0.0
    if kind == "category" and kin is not None and likeness < KIN_THRESHOLD:
        return None
    return False, likeness


def fill(
    template: str,
    valid: Sequence[str],
    task: str,
    *,
    known: frozenset[str] = frozenset(),
    categories: Mapping[str, frozenset[str]] = {},  # noqa: B006 - read only
    example: str = "",
    places: frozenset[str] = frozenset(),
    kin: Kinship | None = None,
    carried: frozenset[str] = frozenset(),
) -> list[Fill]:
    """The valid actions that instantiate `template`, best first (rank, fit, then the valid list's order).

    `carried`: what the agent's own score-raising steps used, seen in every slot, category slots too.
    """
    task_words = _words(task)
    out: list[Fill] = []
    # A qualifier the recorded run needed (`move <object> in inventory to ...`) may be left out here.
    relaxed = _QUALIFIER.sub("", template)
    for action in valid:
        binding = bind(template, action, task)
        if binding is None and relaxed != template:
            binding = bind(relaxed, action, task)
        if binding is None:
            continue
        if action.lower() == example:
            out.append(Fill(action, 0))
            continue
        fits = [
            _slot_fit(kind, cat, filler, task_words, known, categories, places, kin, carried)
            for kind, cat, filler in binding
        ]
        if any(f is None for f in fits):
            continue
        sure = [f for f in fits if f is not None]
        out.append(Fill(action, 0 if all(s for s, _ in sure) else 1, min((v for _, v in sure), default=1.0)))
    return sorted(out, key=lambda f: (f.rank, -f.fit))


def avoided(
    action: str,
    avoids: Iterable[Hint],
    task: str,
    categories: Mapping[str, frozenset[str]],
    kin: Kinship | None = None,
    vouched: frozenset[str] = frozenset(),
) -> Hint | None:
    """The first `avoid` experience that matches `action`, if any.

    `<other:object>` matches only what the task does not name (see `_named`); other slots as in `bind`.
    An action a literal `do` lesson names (`vouched`: `focus on thermometer`) is avoided only by a
    literal `avoid`: the exact evidence beats the general warning (`focus on <other:object>`).
    """
    for hint in avoids:
        if action in vouched and "<" in hint.template:
            continue
        binding = bind(hint.template, action, task)
        if binding is None:
            continue
        if all(not _named(filler, task, categories, kin) for kind, _, filler in binding if kind == "other"):
            return hint
    return None


# --- the agent --------------------------------------------------------------------------------------


def room_of(text: str) -> str | None:
    """The room an observation describes, if it does."""
    match = _ROOM.search(text)
    return match.group("room").strip().lower() if match else None


@dataclass
class EpisodeState:
    """What the agent remembers within one episode."""

    rng: random.Random
    room: str | None = None
    looked: set[str] = field(default_factory=set)
    visited: set[str] = field(default_factory=set)
    opened: set[str] = field(default_factory=set)
    tried: Counter[tuple[str | None, str]] = field(default_factory=Counter)
    plan: tuple[PlanStep, ...] = ()
    pitfalls: tuple[Hint, ...] = ()  # the strategy's Pitfalls: avoided for the whole episode
    plan_pos: int = 0
    strategy_id: str | None = None
    categories: dict[str, frozenset[str]] = field(default_factory=dict)  # known category values
    places: set[str] = field(default_factory=set)  # rooms seen or reachable: never things to act on
    stalled: int = 0  # choices made since the plan last moved on
    moved_at: int = 0  # len(trail) when the plan last moved on
    risky: set[str] = field(default_factory=set)  # templates an `avoid` or a pitfall warned against
    spent: set[str] = field(default_factory=set)  # risky templates already taken for a gain: done with
    fatal: set[str] = field(default_factory=set)  # kinds of move that ended failed runs: never at random
    score: float = 0.0
    last_action: str | None = None
    last_template: str = ""  # the `do` lesson the last action filled, if any
    gained: set[str] = field(default_factory=set)  # slot values of guided steps that raised the score
    found: list[str] = field(default_factory=list)  # what any score-raising action acted on, in order
    trail: list[str] = field(default_factory=list)  # the rooms entered, in order
    found_at: dict[str, int] = field(default_factory=dict)  # thing -> len(trail) when it was found
    taken_at: dict[str, float] = field(default_factory=dict)  # action -> the score when last taken

    @classmethod
    def start(cls, seed: int | str, observation: Observation) -> EpisodeState:
        state = cls(rng=random.Random(str(seed)))  # noqa: S311 - reproducible play, not security
        state.see(observation)
        return state

    def see(self, observation: Observation) -> None:
        if self.last_action is not None and observation.score > self.score:
            # A risky kind of action paid off (`focus on` the right thing): another could only lose it.
            self.spent |= {t for t in self.risky if _fits_task_step(t, self.last_action)}
            # What it was done with is what the next steps are about (`pick up` the animal focused on).
            guided = [step.template for step in self.plan] + [self.last_template] * bool(self.last_template)
            for template in guided:
                binding = bind(_loose(template), self.last_action, "")
                self.gained |= {filler for _, _, filler in binding or () if filler not in self.places}
            thing = None if self.last_action.startswith(_PLACE_VERBS) else direct_object(self.last_action)
            if thing is not None and thing not in self.places and thing not in self.found:
                self.found.append(thing)
                self.found_at[thing] = len(self.trail)
        self.score = observation.score
        room = room_of(observation.text)
        if room is not None:
            if room != self.room:
                self.trail.append(room)
            self.room = room
            self.visited.add(room)
            self.places.add(room)
        for action in observation.valid:
            for verb in _PLACE_VERBS:
                place = action.lower().removeprefix(verb)
                if place != action.lower() and not place.startswith("door"):
                    self.places.add(place)
        self._settle()

    def times(self, action: str) -> int:
        return self.tried[self.room, action]

    def fatal_move(self, action: str) -> bool:
        """Of a kind of move that ended failed runs (`focus on <object>`): taken on sure guidance only."""
        return any(_fits_task_step(t, action) for t in self.fatal)

    def stale(self, action: str) -> bool:
        """Taken before, anywhere, and the score has not risen since: guidance would only loop."""
        return action in self.taken_at and self.taken_at[action] >= self.score

    def acted(self, action: str, template: str = "") -> None:
        """Book an action (and the `do` template it fills) before its observation is seen."""
        window = self._window()
        self.last_action, self.last_template = action, template
        self.tried[self.room, action] += 1
        self.taken_at[action] = self.score
        if action == LOOK and self.room is not None:
            self.looked.add(self.room)
        if action.startswith("open door to "):
            self.opened.add(action.removeprefix("open door to "))
        # A procedure step of the window that the action takes moves the agent's place in the plan past it.
        for pos in window:
            if _fits_task_step(self.plan[pos].template, action):
                self.plan_pos = pos + 1
                self.stalled, self.moved_at = 0, len(self.trail)
                break
        self._settle()

    def window(self) -> tuple[PlanStep, ...]:
        """The procedure steps the agent may take next.

        Up to `PLAN_WINDOW` steps not yet done, but never past a literal step that names a place not
        reached yet (`go to outside` before `focus on <object>`), unless the plan has waited on it for
        `PLAN_STALL` choices. A literal step is done where it names the current room or was taken in it.
        """
        return tuple(self.plan[pos] for pos in self._window())

    def _done(self, template: str) -> bool:
        """A literal step names the current room (`go to outside`, outside) or was taken in it."""
        here = self.room is not None and template.lower().endswith(" " + self.room)
        return "<" not in template and (here or self.times(template) > 0)

    def _settle(self) -> None:
        """Move the agent's place in the plan past literal steps already done."""
        while self.plan_pos < len(self.plan) and self._done(self.plan[self.plan_pos].template):
            self.plan_pos += 1
            self.stalled, self.moved_at = 0, len(self.trail)

    def _window(self) -> list[int]:
        out: list[int] = []
        for pos in range(self.plan_pos, len(self.plan)):
            if len(out) == PLAN_WINDOW:
                break
            template = self.plan[pos].template
            if self._done(template):
                continue
            out.append(pos)
            barrier = "<" not in template and any(template.lower().endswith(" " + p) for p in self.places)
            if barrier and self.stalled < PLAN_STALL:
                break  # a place to reach first
        return out

    def learn(self, hints: Sequence[Hint]) -> list[Hint]:
        """Take in an answer's hints; what to avoid now: the strategy's pitfalls and the `avoid` lessons."""
        avoids = [*self.pitfalls, *(h for h in hints if h.polarity == AVOID)]
        self.risky |= {h.template for h in avoids}
        # A move that ended failed runs with one object is risky with any: once it pays, it is done.
        self.fatal |= {kind_of(h.template) for h in avoids if h.terminal}
        self.risky |= self.fatal
        for hint in hints:
            for category, values in hint.categories.items():
                self.categories[category] = self.categories.get(category, frozenset()) | values
        self.plan = tuple(as_categories(step, self.categories, self.places) for step in self.plan)
        return avoids


def as_categories(
    step: PlanStep, categories: Mapping[str, frozenset[str]], places: Set[str] = frozenset()
) -> PlanStep:
    """A literal procedure step on a value the library has seen as a category's: a step on the category.

    Three recorded runs that all found a dove write `pick up dove` into the plan; the library has seen
    the dove as `<task:animal>`, so for this agent the step reads `pick up <task:animal>` (the animal it
    found, carried on from the focus that paid). An object is a run of words after the verb, as the
    distiller groups them; it is the seen value when one name holds the other's words (`egg dove egg`
    in the inventory, `dove` when focused on). Likewise a step's only `<object>` slot whose examples
    include such a value and no place (`focus on <object>`, e.g. dove, baby wolf) is `<task:animal>`:
    an unseen value then needs kinship, and a flower pot no longer fills it.
    """

    def category_of(obj: str) -> str | None:
        for category, values in sorted(categories.items()):
            if any(same_thing(obj, v) for v in values):
                return category
        return None

    tokens = step.template.split()
    known = set(step.known)
    if tokens.count("<object>") == 1 and step.known and not step.known & places:
        found = {category_of(v) for v in step.known} - {None}
        if len(found) == 1:
            category = found.pop()
            tokens[tokens.index("<object>")] = f"<task:{category}>"
            # Examples outside the category are not vouched for: an unseen one needs kinship.
            known = {v for v in known if category_of(v) == category}

    out = list(tokens)
    for start, end in reversed(object_runs(tokens)):
        obj = " ".join(tokens[start:end])
        category = category_of(obj)
        if category is not None:
            out[start:end] = [f"<task:{category}>"]
            known.add(obj)
    template = " ".join(out)
    return step if template == step.template else PlanStep(template, frozenset(known))


def _loose(template: str) -> str:
    """Every slot as `<object>`: plan bookkeeping ignores what fills a slot, any words will do."""
    return re.sub(r"<[^>]+>", "<object>", template)


def _fits_task_step(template: str, action: str) -> bool:
    return bind(_loose(template), action, "") is not None


@dataclass(frozen=True)
class Choice:
    """The action to take, the items it uses and where it came from."""

    action: str
    used: tuple[str, ...] = ()
    source: str = "explore"
    template: str = ""  # the `do` lesson's template it fills, if any


def destination(action: str) -> str | None:
    """Where a move goes (`teleport to kitchen`: kitchen); None for any other action."""
    verb = next((v for v in _MOVES if action.startswith(v)), None)
    return None if verb is None else action.removeprefix(verb)


def direct_object(action: str) -> str | None:
    """The first run of object words after the verb (`move egg turtle to blue box`: egg turtle)."""
    tokens = action.lower().split()
    runs = object_runs(tokens)
    return " ".join(tokens[runs[0][0] : runs[0][1]]) if runs else None


def _names(action: str, thing: str) -> bool:
    return re.search(rf"(?<![a-z0-9-]){re.escape(thing)}(?![a-z0-9-])", action.lower()) is not None


def take_along(actions: Iterable[str], state: EpisodeState) -> str | None:
    """`pick up` the thing the score last rose on, if it can be and never was (the most recent first)."""
    offered = {a.lower(): a for a in actions}
    for thing in reversed(state.found):
        for verb in _CARRY:
            action = offered.get(verb + thing)
            if action is not None and action not in state.taken_at:
                return action
    return None


def follow_through(fresh: Sequence[str], state: EpisodeState, task: str) -> str | None:
    """What to do with the thing the score rose on, before exploring further: put it where the task
    says when that is here (an action naming the thing and something the task names: `move thermometer
    to orange box`), else take it along (`pick up thermometer`), else go where the task says (`go to
    bathroom`) unless it has been there since. The most recent such thing first; nothing when nothing
    has raised the score.
    """
    task_words = _words(task)
    for thing in reversed(state.found):
        naming = sorted(a for a in fresh if _names(a, thing))
        for action in naming:
            tokens = action.lower().split()
            others = {" ".join(tokens[a:b]) for a, b in object_runs(tokens)} - {thing}
            if any(_words(o) <= task_words for o in others):
                return action
        carry = take_along(naming, state)
        if carry is not None:
            return carry
        been = set(state.trail[state.found_at.get(thing, 0) :])  # where it has been taken since
        for action in sorted(fresh):
            place = destination(action)
            if place and place not in been and not place.startswith("door") and _words(place) <= task_words:
                return action
    return None


def explore(
    valid: Sequence[str],
    state: EpisodeState,
    allowed: Callable[[str], bool],
    goals: frozenset[str] = frozenset(),
    task: str = "",
) -> Choice:
    """The fixed exploration policy: follow through on what raised the score (`follow_through`), head
    for a goal place, look around, open doors, go to unvisited rooms (walking, then teleporting where
    the world allows it), then a random action.

    `goals` are the places the next procedure steps name (`go to outside` when no door to it is here);
    one reached since the plan last moved on is not headed for again (no `teleport to bedroom` from
    every room while the step there waits on something not found yet).
    """
    fresh = [a for a in valid if allowed(a) and state.times(a) == 0]
    through = follow_through(fresh, state, task)  # the thing first: carried along to where the plan goes
    if through is not None:
        return Choice(through, source="explore")
    goals -= {state.room, *state.trail[state.moved_at :]}
    for action in sorted(fresh):
        if destination(action) in goals:
            return Choice(action, source="explore")
    if state.room is not None and state.room not in state.looked and LOOK in fresh:
        return Choice(LOOK, source="explore")
    for action in sorted(fresh):
        if action.startswith("open door to ") and action.removeprefix("open door to ") not in state.opened:
            return Choice(action, source="explore")
    for verb in _MOVES:
        for action in sorted(fresh):
            place = action.removeprefix(verb)
            if action.startswith(verb) and not place.startswith("door") and place not in state.visited:
                return Choice(action, source="explore")
    # A kind of move that ended failed runs (`focus on <object>`) is taken on guidance only.
    safe = [a for a in valid if allowed(a) and not state.fatal_move(a)]
    pool = sorted(a for a in safe if state.times(a) < RANDOM_REPEATS)
    pool = pool or safe or sorted(a for a in valid if allowed(a)) or sorted(valid) or [LOOK]
    return Choice(state.rng.choice(pool), source="random")


def embedding_kinship(embedder: Embedder) -> Kinship:
    """Kinship as the cosine of sentence embeddings (`turtle` is like `tortoise`, not like `axe`)."""
    vectors: dict[str, np.ndarray] = {}

    def vector(texts: Sequence[str]) -> np.ndarray:
        missing = sorted({t for t in texts if t not in vectors})
        for text, v in zip(missing, embedder.embed_documents(missing) if missing else [], strict=True):
            a = np.asarray(v, dtype=np.float32)
            vectors[text] = a / (float(np.linalg.norm(a)) or 1.0)
        return np.stack([vectors[t] for t in texts])

    def kin(value: str, seen: frozenset[str]) -> float:
        if not seen:
            return 0.0
        return float((vector(sorted(seen)) @ vector([value])[0]).max())

    return kin


class Agent(Protocol):
    """Chooses the next action from the task, the observation, the answer's hints and the plan."""

    def choose(
        self, task: str, observation: Observation, hints: Sequence[Hint], state: EpisodeState, prompt: str
    ) -> Choice: ...


def _goals(task: str, window: Sequence[PlanStep], places: Set[str]) -> frozenset[str]:
    """Places the next steps name: literally (`go to outside`), by task words (`go to <task:object>`)."""
    task_words = _words(task)
    return frozenset(
        p
        for step in window
        for p in places
        if step.template.lower().endswith(" " + p) or ("<task:" in step.template and _words(p) <= task_words)
    )


class RuleAgent:
    """The agent that needs no LLM: the library's guidance, filled from the valid actions; else explore.

    With `kin` it also uses values the library never saw when they resemble seen ones (`Kinship`).
    """

    def __init__(self, kin: Kinship | None = None) -> None:
        self.kin = kin

    def _sure(self, f: Fill) -> bool:
        """Seen values, or (with kinship) unseen ones akin enough to them."""
        return f.rank == 0 or (self.kin is not None and f.fit >= KIN_THRESHOLD)

    def choose(
        self,
        task: str,
        observation: Observation,
        hints: Sequence[Hint],
        state: EpisodeState,
        prompt: str = "",
    ) -> Choice:
        del prompt
        avoids = state.learn(hints)
        allowed_cache: dict[str, bool] = {}
        vouched = frozenset(h.template for h in hints if h.polarity == DO and "<" not in h.template)

        def allowed(action: str) -> bool:
            if action not in allowed_cache:
                spent = any(_fits_task_step(t, action) for t in state.spent)
                warned = avoided(action, avoids, task, state.categories, self.kin, vouched)
                allowed_cache[action] = not spent and warned is None
            return allowed_cache[action]

        valid = list(observation.valid)
        window = state.window()
        state.stalled += 1
        choice = self._guided(task, valid, hints, state, allowed, window)
        if choice is None:
            return explore(valid, state, allowed, _goals(task, window, state.places), task)
        if destination(choice.action) is not None:
            # Guidance to go elsewhere: not without the thing the score just rose on.
            carry = take_along((a for a in valid if allowed(a) and state.times(a) == 0), state)
            if carry is not None:
                return Choice(carry, source="explore")
        return choice

    def _guided(
        self,
        task: str,
        valid: list[str],
        hints: Sequence[Hint],
        state: EpisodeState,
        allowed: Callable[[str], bool],
        window: Sequence[PlanStep],
    ) -> Choice | None:
        """What the library's guidance says to do, or None: a `do` and the plan, in the order above."""
        places = frozenset(state.places)
        gained = frozenset(state.gained)

        def fills(template: str, known: frozenset[str], example: str = "") -> list[Fill]:
            found = fill(
                template,
                valid,
                task,
                known=known,
                categories=state.categories,
                example=example,
                places=places,
                kin=self.kin,
                carried=gained,
            )
            return [
                f
                for f in found
                if state.times(f.action) < GUIDED_REPEATS and not state.stale(f.action) and allowed(f.action)
            ]

        # In window order; each step's fills best first.
        step_fills = [fills(step.template, step.known) for step in window]
        plan_fills = [f for found in step_fills for f in found]
        strategy = (state.strategy_id,) if state.strategy_id and window else ()
        # A `do` from a nearby situation takes an unseen value only if it is akin to the seen ones.
        do_fills = [
            (hint, f)
            for hint in hints
            if hint.polarity == DO
            for f in fills(hint.template, hint.known, hint.example)
            if self._sure(f)
        ]
        for found in step_fills:  # the earliest next step a `do` also names: focus before pick up
            actions = {f.action for f in found}
            for hint, f in do_fills:
                if f.action in actions:
                    return Choice(f.action, (hint.id, *strategy), "plan+do", hint.template)
        for f in plan_fills:
            if self._sure(f):
                return Choice(f.action, strategy, "plan")
        for rank in (0, 1):
            for hint, f in do_fills:
                if f.rank == rank:
                    return Choice(f.action, (hint.id,), "do", hint.template)
        # An unsure fill never risks a kind of move that ended failed runs (`focus on` a wire as an animal).
        unsure = [f for f in plan_fills if not state.fatal_move(f.action)]
        if unsure:
            return Choice(unsure[0].action, strategy, "plan")
        return None


# --- the LLM agent ----------------------------------------------------------------------------------

SYSTEM_PROMPT = (
    "You are an agent in a text environment. Reply with exactly one action, copied from the list of "
    "valid actions, on one line and nothing else. If you follow a guidance item, you may add its tag "
    "in brackets after the action, e.g. `go to kitchen [E1]`."
)


def llm_messages(
    task: str, observation: Observation, prompt: str, plan: Sequence[PlanStep], actions: Sequence[str]
) -> list[dict[str, str]]:
    """The chat messages for one step: task, guidance, procedure, observation and valid actions."""
    parts = [f"Task: {task}"]
    if prompt:
        parts.append(prompt)
    if plan:
        parts.append(
            "Plan (the strategy skill's procedure):\n"
            + "\n".join(f"{n}. {s.template}" for n, s in enumerate(plan, 1))
        )
    parts.append(f"Observation:\n{observation.text.strip()}")
    parts.append("Valid actions:\n" + "\n".join(actions))
    parts.append("Your action:")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n\n".join(parts)}]


def parse_action(reply: str, valid: Sequence[str]) -> str | None:
    """The valid action a model's reply names: its first line, exactly; else the longest one it contains."""
    lines = [line.strip() for line in reply.strip().splitlines() if line.strip()]
    if not lines:
        return None
    first = re.sub(r"\[[SE][0-9]+\]", "", lines[0]).strip().strip("`'\"").strip()
    first = re.sub(r"^(action|answer)\s*:\s*", "", first, flags=re.IGNORECASE).strip().rstrip(".")
    by_lower = {a.lower(): a for a in valid}
    if first.lower() in by_lower:
        return by_lower[first.lower()]
    text = reply.lower()
    contained = [a for a in valid if re.search(rf"(?<![a-z0-9]){re.escape(a.lower())}(?![a-z0-9])", text)]
    return max(contained, key=len) if contained else None


Chat = Callable[[list[dict[str, str]]], str]


class LLMAgent:
    """Asks a chat model for the action; the rule agent's choice when the reply names no valid action."""

    def __init__(self, chat: Chat, fallback: RuleAgent | None = None) -> None:
        self._chat = chat
        self._fallback = fallback or RuleAgent()
        self.unparsed = 0

    def choose(
        self,
        task: str,
        observation: Observation,
        hints: Sequence[Hint],
        state: EpisodeState,
        prompt: str = "",
    ) -> Choice:
        avoids = state.learn(hints)
        kin = self._fallback.kin
        actions = [a for a in observation.valid if avoided(a, avoids, task, state.categories, kin) is None]
        reply = self._chat(llm_messages(task, observation, prompt, state.plan, actions[:MAX_PROMPT_ACTIONS]))
        action = parse_action(reply, actions)
        if action is None:
            self.unparsed += 1
            return self._fallback.choose(task, observation, hints, state)
        tags = re.findall(r"\[([SE][0-9]+)\]", reply)
        return Choice(action, tuple(tags), "llm")


def openai_chat(base_url: str, api_key: str, model: str, *, timeout_s: float, max_retries: int) -> Chat:
    """A `Chat` through an OpenAI-compatible endpoint (temperature 0)."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries)

    def chat(messages: list[dict[str, str]]) -> str:
        response = client.chat.completions.create(
            model=model,
            messages=messages,  # type: ignore[arg-type]
            temperature=0,
            max_tokens=60,
        )
        return str(response.choices[0].message.content or "")

    return chat


# --- episodes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpisodeSpec:
    """Which episode: a task type and one of its variations."""

    task_type: str
    variation: int


@dataclass(frozen=True)
class EpisodeResult:
    """How one episode went."""

    task_type: str
    variation: int
    score: float
    success: bool
    steps: int
    sources: dict[str, int] = field(default_factory=dict)  # how many actions each source chose
    strategy: bool = False  # a strategy procedure was served and followed
    actions: tuple[str, ...] = ()
    trajectory_id: str | None = None
    event_id: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "task_type": self.task_type,
            "variation": self.variation,
            "score": round(self.score, 4),
            "success": self.success,
            "steps": self.steps,
            "sources": self.sources,
            "strategy": self.strategy,
            "actions": list(self.actions),
        }


def _plan(session: AgentSession, strategy_id: str) -> tuple[tuple[PlanStep, ...], tuple[Hint, ...]]:
    """The pinned strategy's procedure and pitfalls; nothing when the tier withholds its body."""
    from skillfoundry_client import NotFoundError, PermissionDeniedError

    try:
        body = session.load_skill(strategy_id)
    except (PermissionDeniedError, NotFoundError, KeyError):
        return (), ()
    return plan_of(body), pitfalls_of(body, strategy_id)


def play(
    spec: EpisodeSpec,
    env: Environment,
    session: AgentSession,
    agent: Agent,
    *,
    max_steps: int,
    seed: int | str = 0,
    post: bool = False,
) -> EpisodeResult:
    """Play one episode, asking the library at every step; post it as a trajectory if `post`."""
    observation = env.reset()
    state = EpisodeState.start(f"{seed}-{spec.task_type}-{spec.variation}", observation)
    sources: Counter[str] = Counter()
    for _ in range(max_steps):
        guidance = session.step(observation.text)
        if guidance.strategy_id and guidance.strategy_id != state.strategy_id:
            state.strategy_id, state.plan, state.plan_pos = guidance.strategy_id, (), 0
            state.plan, state.pitfalls = _plan(session, guidance.strategy_id)
        hints = hints_of(guidance.items)
        choice = agent.choose(env.task, observation, hints, state, guidance.prompt)
        state.acted(choice.action, choice.template)
        after = env.step(choice.action)
        session.record(
            choice.action,
            used=list(choice.used),
            reward=round(after.score - observation.score, 4),
            error=after.error,
        )
        sources[choice.source] += 1
        observation = after
        state.see(observation)
        if observation.done:
            break
    success = observation.score >= 1.0
    result = EpisodeResult(
        spec.task_type,
        spec.variation,
        observation.score,
        success,
        len(session.steps),
        dict(sources),
        bool(state.plan),
        tuple(str(step["action"]) for step in session.steps),
    )
    if post:
        trajectory_id = session.finish(success=success, score=observation.score)
        return replace(result, trajectory_id=trajectory_id, event_id=session.event_id)
    return result


# --- conditions and the online loop -----------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """Success rate and mean score of some episodes, and how many steps the solved ones took."""

    episodes: int
    success_rate: float | None
    mean_score: float | None
    solved_steps: float | None = None  # mean steps of the solved episodes (None: none solved)

    def as_dict(self) -> dict[str, object]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 4)

        return {
            "episodes": self.episodes,
            "success_rate": r(self.success_rate),
            "mean_score": r(self.mean_score),
            "solved_steps": r(self.solved_steps),
        }


def summarise(results: Sequence[EpisodeResult]) -> Summary:
    if not results:
        return Summary(0, None, None)
    solved = [r.steps for r in results if r.success]
    return Summary(
        len(results),
        fmean(r.success for r in results),
        fmean(r.score for r in results),
        fmean(solved) if solved else None,
    )


def by_task(results: Sequence[EpisodeResult]) -> dict[str, Summary]:
    """A summary per task type (first seen first), then `total`."""
    kinds = list(dict.fromkeys(r.task_type for r in results))
    out = {k: summarise([r for r in results if r.task_type == k]) for k in kinds}
    out["total"] = summarise(results)
    return out


@dataclass(frozen=True)
class OnlineStep:
    """One episode of the online condition and what the library did after it."""

    index: int
    result: EpisodeResult
    evolved: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {"index": self.index, **self.result.as_dict(), "evolved": dict(self.evolved)}


def online(
    specs: Sequence[EpisodeSpec],
    play_one: Callable[[int, EpisodeSpec], EpisodeResult],
    evolve: Callable[[EpisodeResult], Mapping[str, Any]],
    echo: Callable[[str], None] = lambda _: None,
    label: str = "online",
) -> list[OnlineStep]:
    """Play `specs` in order, the library evolving after each (`play_one` posts; `evolve` learns)."""
    out = []
    for index, spec in enumerate(specs):
        result = play_one(index, spec)
        evolved = evolve(result)
        out.append(OnlineStep(index, result, evolved))
        echo(
            f"[eval] {label} {index + 1}/{len(specs)} {spec.task_type} v{spec.variation}: "
            f"score {result.score:.2f}; library {dict(evolved)}"
        )
    return out


def running_mean(values: Sequence[float], window: int) -> list[float]:
    """The mean of the last `window` values at each place (fewer at the start)."""
    return [fmean(values[max(0, i + 1 - window) : i + 1]) for i in range(len(values))]


def round_robin(task_types: Sequence[str], variations: Mapping[str, Sequence[int]]) -> list[EpisodeSpec]:
    """Episodes interleaved by task type: the first variation of each, then the second..."""
    out = []
    longest = max((len(variations.get(t, ())) for t in task_types), default=0)
    for n in range(longest):
        for task_type in task_types:
            vs = variations.get(task_type, ())
            if n < len(vs):
                out.append(EpisodeSpec(task_type, vs[n]))
    return out
