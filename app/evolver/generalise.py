"""Category slots: `do` lessons that made one move on different objects become `<task:CATEGORY>`.

Pure, but for `embedding_scorer`, which adapts the embedder port. `template_action` slots only the
words a task names; in "find a(n) animal ... focus on the thing" the animal is never named, so
each variation teaches a literal `focus on dove`, `focus on blue jay`. When one state cluster
holds such lessons for at least two different objects, and every source task shares a content
word whose embedding is close to the objects' mean embedding (clearly closer than any other
candidate word), they become one lesson `focus on <task:animal>`: "the animal your task asks for".
When the choice is not clear, or the objects look like things tasks name rather than members of a
category (see `propose`), nothing is proposed. The same run's later moves on that object (`pick up
dove`) then become moves on the category too (`corefer`).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.embedding import Embedder
from app.evolver.extract import MAX_WORDS, STOPWORDS, TRIGGER_WORDS

SOURCE = "task_category"
HOLE = "<?>"
_CATEGORY_SLOT = re.compile(r"<task:([a-z0-9][a-z0-9-]*)>")
_OBJECT_WORD = re.compile(r"[a-z][a-z0-9'-]*")

# Cosine similarity of each word to the mean embedding of the objects, in the order of `words`.
Scorer = Callable[[Sequence[str], Sequence[str]], Sequence[float]]


@dataclass(frozen=True)
class Lesson:
    """What generalisation needs of one active `do` experience of a state cluster."""

    id: uuid.UUID
    cluster_id: uuid.UUID
    template: str
    task: str
    support: int = 0
    example: str = ""
    # Objects an already generalised lesson was seen with (empty for a literal one).
    examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class GeneraliseConfig:
    """When a category word is clear enough to generalise on."""

    min_similarity: float = 0.4
    min_margin: float = 0.1
    min_examples: int = 2


@dataclass(frozen=True)
class Generalisation:
    """One proposal: merge `members` into a lesson whose template has a `<task:category>` slot."""

    cluster_id: uuid.UUID
    template: str
    category: str
    examples: tuple[str, ...]
    members: tuple[uuid.UUID, ...]
    # An existing generalised lesson that takes the members in, or None for a new one.
    into: uuid.UUID | None
    similarity: float
    runner_up: str | None
    runner_up_similarity: float | None
    # For `corefer`: the category examples the members' objects were (empty: a category of its own).
    coreferent: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Fit:
    lesson: Lesson
    pattern: tuple[str, ...]
    # The literal object; None where the hole is a slot: `<task:CATEGORY>` (see below) or `<task:object>`.
    obj: str | None
    category: str | None


def category_of(template: str) -> str | None:
    """The category of a template's `<task:CATEGORY>` slot (not `<task:object>`), if it has one."""
    for token in template.split():
        match = _CATEGORY_SLOT.fullmatch(token)
        if match and match.group(1) != "object":
            return match.group(1)
    return None


def content_words(text: str) -> set[str]:
    """Lower-case words of `text` that can name a category: no stopwords, digits or short words."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {w for w in words if w not in STOPWORDS and len(w) > 2 and not w.isdigit()}


def object_runs(tokens: Sequence[str]) -> list[tuple[int, int]]:
    """(start, end) of each maximal run of object words after the verb, as `template_action` groups them."""
    runs: list[tuple[int, int]] = []
    start: int | None = None
    for i in range(1, len(tokens) + 1):  # the verb (token 0) is never the object
        word = i < len(tokens) and bool(_OBJECT_WORD.fullmatch(tokens[i])) and tokens[i] not in STOPWORDS
        if word and start is None:
            start = i
        elif not word and start is not None:
            runs.append((start, i))
            start = None
    return runs


def _fits(lesson: Lesson) -> list[_Fit]:
    """Each way of reading the lesson as `<pattern with a hole>` + object."""
    tokens = lesson.template.split()
    fits: list[_Fit] = []
    ends = {end: start for start, end in object_runs(tokens)}
    for i in range(1, len(tokens) + 1):
        if i in ends:
            start = ends[i]
            fits.append(_Fit(lesson, (*tokens[:start], HOLE, *tokens[i:]), " ".join(tokens[start:i]), None))
        token = tokens[i] if i < len(tokens) else ""
        match = _CATEGORY_SLOT.fullmatch(token)
        if match:
            pattern = (*tokens[:i], HOLE, *tokens[i + 1 :])
            category = match.group(1)
            fits.append(_Fit(lesson, pattern, None, None if category == "object" else category))
    return fits


def whole_objects(actions: Iterable[str]) -> set[str]:
    """The objects of concrete actions, as `template_action` would group them (`go to kitchen`: kitchen)."""
    objects: set[str] = set()
    for action in actions:
        run: list[str] = []
        for token in [*action.lower().split()[1:], ""]:
            word = token.strip(".,;:!?\"'()")
            if _OBJECT_WORD.fullmatch(word) and word not in STOPWORDS:
                run.append(word)
            elif run:
                objects.add(" ".join(run))
                run = []
    return objects


def choose_category(
    examples: Sequence[str],
    tasks: Sequence[str],
    excluded: set[str],
    score: Scorer,
    config: GeneraliseConfig,
) -> tuple[str, float, str | None, float | None] | None:
    """The task word the examples belong to: (word, similarity, runner-up, its similarity), or None.

    Candidates are the content words every task has, less `excluded` and the examples' own words.
    """
    if not tasks:
        return None
    shared = set.intersection(*(content_words(t) for t in tasks))
    in_examples = {w for e in examples for w in re.findall(r"[a-z0-9]+", e.lower())}
    candidates = sorted(shared - excluded - in_examples)
    if not candidates:
        return None
    scores = [float(s) for s in score(sorted(examples), candidates)]
    ranked = sorted(zip(scores, candidates, strict=True), key=lambda p: (-p[0], p[1]))
    best_score, best = ranked[0]
    if best_score < config.min_similarity:
        return None
    if len(ranked) == 1:
        return best, best_score, None, None
    second_score, second = ranked[1]
    if best_score - second_score < config.min_margin:
        return None
    return best, best_score, second, second_score


def propose(
    lessons: Sequence[Lesson],
    score: Scorer,
    config: GeneraliseConfig,
    *,
    other_actions: Iterable[str] = (),
) -> list[Generalisation]:
    """Generalisations of one tenant's active `do` lessons; no lesson is in two of them.

    Two signs that the objects are things like those the task names, rather than members of a
    category, rule a generalisation out. A task word that some action (of these lessons or
    `other_actions`) takes as its whole object is not a category: `go to kitchen` rules "kitchen"
    out for `open door to greenhouse` and `open door to outside`. And a move that, in any cluster,
    takes an object named by a task with the category word (`go to <task:object>`, "... in the
    kitchen") varies with the route, not with the category: `go to greenhouse` and `go to hallway`
    do not become `go to <task:plant>` because a greenhouse sounds like plants.
    """
    things = whole_objects([*(lesson.example for lesson in lessons), *other_actions])
    groups: dict[tuple[uuid.UUID, tuple[str, ...]], list[_Fit]] = defaultdict(list)
    named: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for lesson in lessons:
        for fit in _fits(lesson):
            groups[(lesson.cluster_id, fit.pattern)].append(fit)
            if fit.obj is None and fit.category is None:
                named[fit.pattern].add(lesson.task)

    found: list[Generalisation] = []
    for (cluster_id, pattern), fits in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        proposal = _decide(cluster_id, pattern, fits, things, score, config)
        if proposal is not None and not any(proposal.category in content_words(t) for t in named[pattern]):
            found.append(proposal)

    # A lesson read two ways (two unnamed objects) joins the larger, clearer generalisation only.
    found.sort(key=lambda g: (-len(g.members), -g.similarity, g.template))
    taken: set[uuid.UUID] = set()
    kept: list[Generalisation] = []
    for proposal in found:
        involved = set(proposal.members) | ({proposal.into} if proposal.into else set())
        if involved & taken:
            continue
        taken |= involved
        kept.append(proposal)
    return kept


def _decide(
    cluster_id: uuid.UUID,
    pattern: tuple[str, ...],
    fits: list[_Fit],
    things: set[str],
    score: Scorer,
    config: GeneraliseConfig,
) -> Generalisation | None:
    literal = [
        f for f in fits if f.obj is not None and not (content_words(f.obj) & content_words(f.lesson.task))
    ]
    general = sorted(
        (f for f in fits if f.category is not None), key=lambda f: (-f.lesson.support, f.lesson.template)
    )
    if not literal:
        return None
    examples = sorted(
        {f.obj for f in literal if f.obj is not None} | {e for f in general for e in f.lesson.examples}
    )
    if len(examples) < config.min_examples:
        return None
    fixed = {w for token in pattern for w in re.findall(r"[a-z0-9]+", token) if not token.startswith("<")}
    tasks = sorted({f.lesson.task for f in literal} | {f.lesson.task for f in general})
    choice = choose_category(examples, tasks, fixed | things, score, config)
    if choice is None:
        return None
    category, similarity, runner_up, runner_up_similarity = choice
    into = next((f.lesson.id for f in general if f.category == category), None)
    if general and into is None:
        return None  # the cluster already generalised this move under another word: unsure, leave it
    members = sorted(literal, key=lambda f: (-f.lesson.support, f.lesson.template))
    return Generalisation(
        cluster_id=cluster_id,
        template=" ".join(f"<task:{category}>" if t == HOLE else t for t in pattern),
        category=category,
        examples=tuple(examples),
        members=tuple(f.lesson.id for f in members),
        into=into,
        similarity=similarity,
        runner_up=runner_up,
        runner_up_similarity=runner_up_similarity,
    )


def corefer(
    lessons: Sequence[Lesson], proposals: Sequence[Generalisation], score: Scorer
) -> list[Generalisation]:
    """Literal `do` lessons on an object a category lesson was seen with: lessons on the category too.

    A run that found the animal goes on with it: `focus on dove` raised the score, then `pick up dove`
    and `move dove in inventory to <task:object>`. Once `focus on dove` is read as `focus on
    <task:animal>` (by `propose`, or in an earlier pass), the later moves on the dove were moves on the
    animal the task asked for: `pick up <task:animal>`. An object is that example when one name holds
    the other's words (`dove`, `egg dove egg`), the lesson's task has the category word, and the task
    does not name the object. Lessons `proposals` already take are left alone; a cluster that reads
    the same move under another category word keeps its literal lesson.
    """
    examples: dict[str, set[str]] = defaultdict(set)
    for lesson in lessons:
        category = category_of(lesson.template)
        if category is not None:
            examples[category] |= set(lesson.examples)
    for proposal in proposals:
        examples[proposal.category] |= set(proposal.examples)
    taken = {i for p in proposals for i in (*p.members, *((p.into,) if p.into else ()))}
    general = {
        (lesson.cluster_id, lesson.template): lesson for lesson in lessons if category_of(lesson.template)
    }
    groups: dict[tuple[uuid.UUID, str, str], list[tuple[_Fit, str]]] = defaultdict(list)
    for lesson in lessons:
        if lesson.id in taken or category_of(lesson.template) is not None:
            continue
        task_words = content_words(lesson.task)
        for fit in _fits(lesson):
            if fit.obj is None or content_words(fit.obj) & task_words:
                continue
            for category in sorted(examples.keys() & task_words):
                seen = next((e for e in sorted(examples[category]) if same_thing(fit.obj, e)), None)
                if seen is not None:
                    template = " ".join(f"<task:{category}>" if t == HOLE else t for t in fit.pattern)
                    groups[(lesson.cluster_id, template, category)].append((fit, seen))
                    break
    found: list[Generalisation] = []
    used: set[uuid.UUID] = set()
    for (cluster_id, template, category), fits in sorted(groups.items(), key=lambda kv: kv[0][1:]):
        pattern = template.split()
        elsewhere = [t for c, t in general if c == cluster_id and category_of(t) != category]
        if any(_same_move(t, pattern) for t in elsewhere):
            continue  # this cluster reads the move under another category word
        members = sorted(
            {f.lesson.id: f.lesson for f, _ in fits if f.lesson.id not in used}.values(),
            key=lambda lesson: (-lesson.support, lesson.template),
        )
        if not members:
            continue
        used |= {m.id for m in members}
        into = general.get((cluster_id, template))
        seen_with = tuple(sorted(examples[category] | {f.obj for f, _ in fits if f.obj is not None}))
        found.append(
            Generalisation(
                cluster_id=cluster_id,
                template=template,
                category=category,
                examples=seen_with,
                members=tuple(m.id for m in members),
                into=into.id if into is not None else None,
                similarity=float(score(sorted(examples[category]), [category])[0]),
                runner_up=None,
                runner_up_similarity=None,
                coreferent=tuple(sorted({seen for _, seen in fits})),
            )
        )
    return found


def same_thing(a: str, b: str) -> bool:
    """One name holds the other's words: `dove`, and `egg dove egg` (its name once in the inventory)."""
    x, y = set(a.split()), set(b.split())
    return bool(x) and bool(y) and (x <= y or y <= x)


def _same_move(template: str, pattern: Sequence[str]) -> bool:
    """Whether `template` is `pattern` with its category slot under some other word."""
    tokens = template.split()
    if len(tokens) != len(pattern):
        return False
    slot = _CATEGORY_SLOT.fullmatch
    return all(a == b or bool(slot(a) and slot(b)) for a, b in zip(tokens, pattern, strict=True))


def slots_for(
    template: str, base: Sequence[dict[str, Any]], category: str, examples: Sequence[str]
) -> list[dict[str, Any]]:
    """The slots of a generalised template: the category slot where it stands, `base`'s others in order."""
    others = iter(base)
    slots: list[dict[str, Any]] = []
    for token in template.split():
        if token == f"<task:{category}>":
            slots.append(
                {"name": category, "source": SOURCE, "example": examples[0], "examples": list(examples)}
            )
        elif token.startswith("<") and token.endswith(">"):
            slots.append(dict(next(others, {"name": token.strip("<>").split(":")[0], "source": "unknown"})))
    return slots


def examples_of(slots: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """The objects a generalised lesson's category slots were seen with."""
    return tuple(str(e) for s in slots if s.get("source") == SOURCE for e in s.get("examples", []))


def dedup_key(cluster_id: uuid.UUID, template: str) -> str:
    """The key admission gives a `do` lesson of this cluster and template."""
    return hashlib.sha256(f"do|{cluster_id}|{template}".encode()).hexdigest()


def render_text(situation: str, template: str, category: str, *, coreferent: bool = False) -> str:
    """'When <situation>, do `<template>` (the CATEGORY your task asks for) because ...', at most 64 words."""
    article = "an" if category[0] in "aeiou" else "a"
    because = (
        f"a run took this step here with the {category} it had found"
        if coreferent
        else f"successful runs took this step here, each on {article} {category} of their own"
    )
    filling = f"filling <task:{category}> with the {category} your task asks for"
    tail = f"do `{template}` ({filling}) because {because}."
    trigger = situation.split()
    keep = max(3, min(TRIGGER_WORDS, MAX_WORDS - len(tail.split()) - 1))
    lead = " ".join(trigger[:keep]) + ("..." if len(trigger) > keep else "")
    return " ".join(f"When {lead}, {tail}".split()[:MAX_WORDS])


def embedding_scorer(embedder: Embedder) -> Scorer:
    """A scorer backed by the embedder port; each distinct text is embedded once."""
    cache: dict[str, np.ndarray[Any, np.dtype[np.float64]]] = {}

    def vectors(texts: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float64]]:
        missing = sorted({t for t in texts if t not in cache})
        for text, vector in zip(missing, embedder.embed_documents(missing), strict=True):
            array = np.asarray(vector, dtype=np.float64)
            cache[text] = array / max(float(np.linalg.norm(array)), 1e-12)
        return np.stack([cache[t] for t in texts])

    def score(objects: Sequence[str], words: Sequence[str]) -> list[float]:
        mean = vectors(objects).mean(axis=0)
        mean /= max(float(np.linalg.norm(mean)), 1e-12)
        return [float(x) for x in vectors(words) @ mean]

    return score
