"""Heuristic skill distillation: stored trajectories into strategy, functional and atomic skills.

Pure: no database, no model. Three levels, after SkillX:

- strategy: the plan for one task cluster, the consensus of its successful runs (`consensus_procedure`);
- functional: a run of steps that successful runs of at least two task clusters share (`mine_functional`);
- atomic: how to use one action verb well, its preconditions and its errors with their fixes
  (`atomic_notes`).

Each level renders to a `SkillDocument` (app.skill_md) with the sections When to use, Procedure,
Pitfalls and Evidence.

Templates come in two forms. A step's *plain* template is `template_action(action, task)`: words the
task names become `<task:object>` and everything else stays literal. Its *canonical* form
(`canonical`) is what makes one sub-procedure in two tasks the same key: the verb phrase stays, as do
stopwords, short words and numbers, and every other run of object words, a `<task:object>` or an
`<other:object>` slot included, becomes one `<object>` slot ("open door to kitchen" and
"open door to greenhouse" are both `open <object> to <object>`). Whether a word is a task word depends
on the task, so the canonical form keeps no task/other distinction.

Steps that raised an error never enter a plan or a pattern; they are what atomic notes learn from.
A functional pattern needs two different moves besides `look around`, `wait` and `inventory`, so one
move repeated, or one move between looks and waits, is no sub-procedure.

Every function sorts its input by run id first, so its output does not depend on input order.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from app.evolver.extract import STOPWORDS, template_action
from app.skill_md import EVIDENCE, PITFALLS, PROCEDURE, WHEN_TO_USE, Section, SkillDocument, slugify

# ScienceWorld-style verbs of more than one word; any other action's verb is its first word.
MULTIWORD_VERBS = frozenset(
    {"pick up", "look at", "look around", "look in", "focus on", "go to", "put down", "turn on", "turn off"}
)
# Words that start an action: where one template ends and the next begins in space-joined text.
KNOWN_VERBS = frozenset(
    {v.split()[0] for v in MULTIWORD_VERBS}
    | set(
        "move open close pour mix activate deactivate connect disconnect wait wait1 inventory read use eat "
        "flush dunk".split()
    )
)
# Moves that only observe or pass time: a run made only of them is not a procedure.
IDLE_VERBS = frozenset({"look around", "wait", "wait1", "inventory"})
# Words of task statements that say nothing about the task (ScienceWorld's "Your task is to ... First, ...").
BOILERPLATE = frozenset(
    "task first next then finally thing please need needs want should must once done when after before "
    "order following".split()
)
SLOT = "<object>"
TASK_SLOT = "<task:object>"
LEVELS = ("strategy", "functional", "atomic")
NAME_MAX = 64
DESCRIPTION_MAX = 1024
MAX_EXAMPLES = 3
MAX_LIST = 8  # items per rendered list, so bodies stay short
MAX_STEPS = 60  # rendered steps of a plan
MAX_FIX_GAP = 5  # a same-verb retry further on than this is another move, not the fix
NAME_WORDS = 6


@dataclass(frozen=True)
class RunStep:
    """One step of a stored trajectory: the action, its error if any, and its reward."""

    action: str
    error: str | None = None
    reward: float | None = None
    explored: bool = False  # the agent asked the library here and used none of its items (`extract`)


@dataclass(frozen=True)
class RunView:
    """One stored trajectory as the skill distiller sees it."""

    id: uuid.UUID
    task: str
    task_cluster_id: uuid.UUID
    agent_id: str
    success: bool | None
    score: float | None
    steps: tuple[RunStep, ...]


@dataclass(frozen=True)
class AvoidNote:
    """An active `avoid` experience: its template, text and support, used as an atomic pitfall."""

    template: str
    text: str
    failures: int


@dataclass(frozen=True)
class ProcedureStep:
    """One consensus step: its template, up to three concrete actions, and the share of runs with it."""

    template: str
    examples: tuple[str, ...]
    support: float


@dataclass(frozen=True)
class Procedure:
    """The consensus plan of one task cluster and the successful runs it came from."""

    steps: tuple[ProcedureStep, ...]
    runs: tuple[uuid.UUID, ...]
    medoid: uuid.UUID | None = None
    agents: tuple[str, ...] = ()


@dataclass(frozen=True)
class FunctionalPattern:
    """A run of canonical templates that successful runs of several task clusters share."""

    templates: tuple[str, ...]
    examples: tuple[tuple[str, ...], ...]
    task_clusters: frozenset[uuid.UUID]
    runs: tuple[uuid.UUID, ...]
    occurrences: int
    agents: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """A stable id: the sha256 of the templates."""
        return hashlib.sha256("\n".join(self.templates).encode()).hexdigest()


@dataclass(frozen=True)
class ErrorFix:
    """An error an action raised, the action (plain template) and the fix that followed, if found."""

    error: str
    action: str
    fix: str | None
    count: int


@dataclass(frozen=True)
class AtomicNote:
    """What the runs teach about one verb: uses, errors and fixes, preconditions and pitfalls."""

    verb: str
    uses: int
    successes: int
    errors: tuple[ErrorFix, ...]
    preconditions: tuple[tuple[str, float], ...]
    pitfalls: tuple[str, ...]
    runs: tuple[uuid.UUID, ...]
    successful_runs: int = 0
    agents: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Step:
    """A non-erroring step prepared for alignment."""

    action: str
    task: str
    template: str  # plain: task words slotted
    key: str  # canonical
    fillers: tuple[str, ...]  # what fills each `<object>` of the key, lowercased
    task_only: tuple[bool, ...]  # whether each filler is made of task words only


# --- templates ------------------------------------------------------------------------------


def verb_of(action: str) -> str:
    """The action's verb phrase, lowercased: a known multiword verb, else the first word."""
    words = [w.strip(".,;:!?\"'()") for w in action.lower().split()]
    if len(words) >= 2 and f"{words[0]} {words[1]}" in MULTIWORD_VERBS:
        return f"{words[0]} {words[1]}"
    return words[0] if words else ""


def canonical(template: str) -> str:
    """The cross-task form of an action or template: every run of object words becomes `<object>`."""
    verb = verb_of(template)
    tokens = template.split()
    n = len(verb.split())
    out = [t.lower() for t in tokens[:n]]
    for token in tokens[n:]:
        if _is_object(token):
            if not out or out[-1] != SLOT:
                out.append(SLOT)
        elif token.strip(".,;:!?\"'()").isdigit() and out and out[-1] == SLOT:
            continue  # "flower pot 5": a number that tells objects apart belongs to the object
        else:
            out.append(token.lower())
    return " ".join(out)


def _is_object(token: str) -> bool:
    if token.startswith("<") and token.endswith(">"):
        return True
    word = token.lower().strip(".,;:!?\"'()")
    return word not in STOPWORDS and len(word) > 2 and not word.isdigit()


def _plain(action: str, task: str) -> str:
    """`template_action`, with the words of a multiword verb ("look around") kept literal."""
    tokens = action.split()
    n = len(verb_of(action).split())
    if n <= 1 or len(tokens) < n:
        return template_action(action, task).template
    head = " ".join(t.lower() for t in tokens[: n - 1])
    # The verb's last word leads, so `template_action` treats it as the verb and never slots it.
    return f"{head} {template_action(' '.join(tokens[n - 1 :]), task).template}"


def _task_words(task: str) -> frozenset[str]:
    return frozenset(w for w in re.findall(r"[a-z0-9]+", task.lower()) if w not in STOPWORDS and len(w) > 2)


def _fillers(key: str, action: str) -> tuple[str, ...]:
    """What fills each `<object>` of a canonical key in a concrete action ("" where it does not fit)."""
    parts = [r"(.+?)" if t == SLOT else re.escape(t) for t in key.split()]
    found = re.fullmatch(r"\s+".join(parts), " ".join(action.lower().split()))
    if found is None:
        return tuple("" for t in key.split() if t == SLOT)
    return tuple(found.groups())


def _prepare(action: str, task: str) -> _Step:
    template = _plain(action, task)
    key = canonical(template)
    fillers = _fillers(key, action)
    words = _task_words(task)
    task_only = tuple(bool(f) and all(w.strip(".,;:!?\"'()") in words for w in f.split()) for f in fillers)
    return _Step(
        action=action.strip(), task=task, template=template, key=key, fillers=fillers, task_only=task_only
    )


def _succeeded(run: RunView, do_min_score: float) -> bool:
    if run.success is not None:
        return run.success
    return run.score is not None and run.score >= do_min_score


def _clean(run: RunView) -> list[_Step]:
    """The steps that make the run's path: no errors, and no exploration that gained nothing."""
    return [
        _prepare(s.action, run.task)
        for s in run.steps
        if not s.error and s.action.strip() and (not s.explored or (s.reward or 0.0) > 0)
    ]


def _by_id(runs: Sequence[RunView]) -> list[RunView]:
    return sorted(runs, key=lambda r: r.id.bytes)


# --- strategy: consensus of one task cluster --------------------------------------------------


def _codes(seqs: Sequence[Sequence[_Step]]) -> list[list[tuple[int, int]]]:
    """Each step as (plain template id, canonical key id), so alignment compares integers."""
    ids: dict[str, int] = {}
    return [
        [(ids.setdefault(s.template, len(ids)), ids.setdefault(s.key, len(ids))) for s in seq] for seq in seqs
    ]


def _align(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> tuple[int, list[tuple[int, int]]]:
    """Weighted LCS: same plain template weighs 2, same canonical form 1; its weight and matched pairs."""
    rows, cols = len(a), len(b)
    table = [[0] * (cols + 1) for _ in range(rows + 1)]
    weights = [[2 if x[0] == y[0] else 1 if x[1] == y[1] else 0 for y in b] for x in a]
    for i in range(rows - 1, -1, -1):
        here, below, w_row = table[i], table[i + 1], weights[i]
        for j in range(cols - 1, -1, -1):
            best = below[j] if below[j] >= here[j + 1] else here[j + 1]
            w = w_row[j]
            if w and w + below[j + 1] > best:
                best = w + below[j + 1]
            here[j] = best
    pairs: list[tuple[int, int]] = []
    i = j = 0
    while i < rows and j < cols:
        w = weights[i][j]
        if w and table[i][j] == w + table[i + 1][j + 1]:
            pairs.append((i, j))
            i, j = i + 1, j + 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return table[0][0], pairs


def _similarity(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> float:
    if not a and not b:
        return 1.0
    return _align(a, b)[0] / (len(a) + len(b))


def consensus_procedure(
    runs: Sequence[RunView], *, do_min_score: float = 0.7, min_support: float = 0.5
) -> Procedure:
    """The consensus plan of one task cluster: the medoid run's steps most successful runs share."""
    good = [r for r in _by_id(runs) if _succeeded(r, do_min_score)]
    if not good:
        return Procedure(steps=(), runs=())
    seqs = [_clean(r) for r in good]
    codes = _codes(seqs)
    n = len(good)
    sims = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            sims[i][j] = sims[j][i] = _similarity(codes[i], codes[j])

    def rank(i: int) -> tuple[float, int, bytes]:
        mean = sum(sims[i][j] for j in range(n) if j != i) / (n - 1) if n > 1 else 1.0
        return (-mean, len(seqs[i]), good[i].id.bytes)

    m = min(range(n), key=rank)
    medoid = seqs[m]
    matched: list[list[_Step]] = [[step] for step in medoid]
    for i in range(n):
        if i != m:
            for a, b in _align(codes[m], codes[i])[1]:
                matched[a].append(seqs[i][b])
    steps = tuple(
        ProcedureStep(template=_unify(group), examples=_examples(group), support=len(group) / n)
        for group in matched
        if len(group) / n >= min_support - 1e-9
    )
    return Procedure(
        steps=steps,
        runs=tuple(r.id for r in good),
        medoid=good[m].id,
        agents=tuple(sorted({r.agent_id for r in good})),
    )


def _unify(group: Sequence[_Step]) -> str:
    """Anti-unification: an object that differs between runs and is no task word becomes `<object>`."""
    first = group[0]
    if all(s.template == first.template for s in group):
        return first.template
    varying = [
        len({s.fillers[k] for s in group}) > 1 for k in range(len(first.fillers))
    ]  # same key, so the same number of fillers
    if not any(varying):
        return first.template
    out: list[str] = []
    k = 0
    for token in first.key.split():
        if token != SLOT:
            out.append(token)
            continue
        if not varying[k] and first.fillers[k]:
            # Rendered as the plain template renders it: task words slotted, other words literal.
            out.append(template_action(f"x {first.fillers[k]}", first.task).template.split(" ", 1)[-1])
        elif all(s.task_only[k] for s in group):
            out.append(TASK_SLOT)
        else:
            out.append(SLOT)
        k += 1
    return " ".join(out)


def _examples(group: Sequence[_Step]) -> tuple[str, ...]:
    """Up to three distinct concrete actions: the medoid's first, then the most frequent."""
    counts = Counter(s.action for s in group[1:])
    rest = sorted((a for a in counts if a != group[0].action), key=lambda a: (-counts[a], a))
    return (group[0].action, *rest)[:MAX_EXAMPLES]


# --- functional: sub-procedures shared by task clusters ---------------------------------------


@dataclass
class _Tally:
    clusters: set[uuid.UUID]
    runs: list[uuid.UUID]
    agents: set[str]
    occurrences: int
    examples: dict[uuid.UUID, list[tuple[str, ...]]]


def mine_functional(
    runs: Sequence[RunView],
    *,
    min_clusters: int = 2,
    min_len: int = 2,
    max_len: int = 6,
    do_min_score: float = 0.7,
) -> list[FunctionalPattern]:
    """Maximal runs of canonical templates that successful runs of `min_clusters` task clusters share."""
    tallies: dict[tuple[str, ...], _Tally] = {}
    for run in _by_id(runs):
        if not _succeeded(run, do_min_score):
            continue
        seq = _clean(run)
        for size in range(min_len, max_len + 1):
            for start in range(len(seq) - size + 1):
                window = seq[start : start + size]
                keys = tuple(s.key for s in window)
                if not _is_procedure(keys):
                    continue
                tally = tallies.setdefault(keys, _Tally(set(), [], set(), 0, {}))
                tally.clusters.add(run.task_cluster_id)
                if run.id not in tally.runs:
                    tally.runs.append(run.id)
                tally.agents.add(run.agent_id)
                tally.occurrences += 1
                seen = tally.examples.setdefault(run.task_cluster_id, [])
                actions = tuple(s.action for s in window)
                if len(seen) < MAX_EXAMPLES and actions not in seen:
                    seen.append(actions)
    found = [
        FunctionalPattern(
            templates=keys,
            examples=_spread(t.examples),
            task_clusters=frozenset(t.clusters),
            runs=tuple(t.runs),
            occurrences=t.occurrences,
            agents=tuple(sorted(t.agents)),
        )
        for keys, t in tallies.items()
        if len(t.clusters) >= min_clusters
    ]
    # Not maximal: a one-step-longer n-gram has the same clusters (any longer pattern holding it with
    # the same clusters holds such an n-gram, and that n-gram qualifies as well).
    clusters = {p.templates: p.task_clusters for p in found}
    covered: set[tuple[str, ...]] = set()
    for p in found:
        for part in (p.templates[1:], p.templates[:-1]):
            if clusters.get(part) == p.task_clusters:
                covered.add(part)
    return sorted((p for p in found if p.templates not in covered), key=_pattern_order)


def _is_procedure(keys: Sequence[str]) -> bool:
    """Two different moves at least: one move repeated, or between waits and looks, is none."""
    return len({k for k in keys if verb_of(k) not in IDLE_VERBS}) >= 2


def _pattern_order(p: FunctionalPattern) -> tuple[int, int, str]:
    return (-len(p.task_clusters), -p.occurrences, p.key)


def _spread(examples: Mapping[uuid.UUID, list[tuple[str, ...]]]) -> tuple[tuple[str, ...], ...]:
    """Up to three examples, one per task cluster before any cluster gives a second."""
    ordered = [examples[c] for c in sorted(examples, key=lambda c: c.bytes)]
    out: list[tuple[str, ...]] = []
    for depth in range(MAX_EXAMPLES):
        out.extend(group[depth] for group in ordered if depth < len(group) and group[depth] not in out)
    return tuple(out[:MAX_EXAMPLES])


def functional_cover(
    procedure: Procedure, patterns: Sequence[FunctionalPattern]
) -> dict[int, FunctionalPattern]:
    """Greedy, left to right: at each step, the longest pattern that matches from there; no overlaps."""
    keys = [canonical(s.template) for s in procedure.steps]
    ordered = sorted(patterns, key=lambda p: (-len(p.templates), *_pattern_order(p)))
    cover: dict[int, FunctionalPattern] = {}
    i = 0
    while i < len(keys):
        hit = next(
            (p for p in ordered if p.templates and tuple(keys[i : i + len(p.templates)]) == p.templates),
            None,
        )
        if hit is None:
            i += 1
        else:
            cover[i] = hit
            i += len(hit.templates)
    return cover


# --- atomic: one verb ---------------------------------------------------------------------------


def atomic_notes(
    runs: Sequence[RunView],
    avoid: Sequence[AvoidNote] = (),
    *,
    min_uses: int = 3,
    do_min_score: float = 0.7,
    min_share: float = 0.2,
) -> list[AtomicNote]:
    """Per verb: uses, successes, errors with their fixes, preconditions and pitfalls."""
    ordered = _by_id(runs)
    uses: Counter[str] = Counter()
    successes: Counter[str] = Counter()
    before: dict[str, Counter[str]] = defaultdict(Counter)
    used_by: dict[str, dict[uuid.UUID, RunView]] = defaultdict(dict)
    errors: dict[str, list[tuple[str, str, str | None]]] = defaultdict(list)
    gold = _gold_paths(ordered, do_min_score)
    for run in ordered:
        good = _succeeded(run, do_min_score)
        previous: str | None = None  # plain template of the last step that did not error
        previous_verb: str | None = None
        for idx, step in enumerate(run.steps):
            verb = verb_of(step.action)
            if not verb:
                continue
            uses[verb] += 1
            used_by[verb].setdefault(run.id, run)
            if step.error:
                failed = _plain(step.action, run.task)
                fix = _fix_in_run(run, idx) or _fix_from_gold(gold, run, previous, failed)
                errors[verb].append((" ".join(step.error.split())[:200], failed, fix))
                continue
            if good:
                successes[verb] += 1
                if previous_verb and previous_verb != verb:
                    before[verb][previous_verb] += 1
            previous, previous_verb = _plain(step.action, run.task), verb
    notes: list[AtomicNote] = []
    for verb in sorted(uses, key=lambda v: (-uses[v], v)):
        if uses[verb] < min_uses:
            continue
        pitfalls = _pitfalls(verb, avoid)
        pre = tuple(
            (v, round(c / successes[verb], 3))
            for v, c in sorted(before[verb].items(), key=lambda kv: (-kv[1], kv[0]))[:2]
            if c / successes[verb] >= min_share
        )
        fixes = _group_errors(errors[verb])
        if not (fixes or pitfalls or pre):
            continue
        users = list(used_by[verb].values())
        notes.append(
            AtomicNote(
                verb=verb,
                uses=uses[verb],
                successes=successes[verb],
                errors=fixes,
                preconditions=pre,
                pitfalls=pitfalls,
                runs=tuple(r.id for r in users),
                successful_runs=sum(_succeeded(r, do_min_score) for r in users),
                agents=tuple(sorted({r.agent_id for r in users})),
            )
        )
    return notes


def _same_move(a: str, b: str) -> bool:
    return verb_of(a) == verb_of(b) or a.lower().split()[:1] == b.lower().split()[:1]


def _fix_in_run(run: RunView, idx: int) -> str | None:
    """The next non-erroring action of the same verb (or first word), a few steps on at most."""
    failed = run.steps[idx].action
    for step in run.steps[idx + 1 : idx + 1 + MAX_FIX_GAP]:
        if not step.error and _same_move(step.action, failed):
            return _plain(step.action, run.task)
    return None


def _gold_paths(runs: Sequence[RunView], do_min_score: float) -> dict[uuid.UUID, list[list[str]]]:
    """Plain templates of the non-erroring steps of each task cluster's successful runs."""
    paths: dict[uuid.UUID, list[list[str]]] = defaultdict(list)
    for run in runs:
        if _succeeded(run, do_min_score):
            paths[run.task_cluster_id].append([s.template for s in _clean(run)])
    return paths


def _fix_from_gold(
    gold: Mapping[uuid.UUID, list[list[str]]], run: RunView, previous: str | None, failed: str
) -> str | None:
    """What successful runs of the same task cluster did next after the last step that worked."""
    found: Counter[str] = Counter()
    for path in gold.get(run.task_cluster_id, []):
        start = 0 if previous is None else path.index(previous) + 1 if previous in path else len(path)
        found.update(t for t in path[start : start + 1] if t != failed)
    if not found:
        return None
    return min(found, key=lambda t: (-found[t], t))


def _group_errors(raw: Sequence[tuple[str, str, str | None]]) -> tuple[ErrorFix, ...]:
    """Identical (error, fix) pairs counted; the action shown is the most frequent one."""
    groups: dict[tuple[str, str | None], Counter[str]] = defaultdict(Counter)
    for error, action, fix in raw:
        groups[(error, fix)][action] += 1
    out = [
        ErrorFix(
            error=error,
            action=min(actions, key=lambda a: (-actions[a], a)),
            fix=fix,
            count=sum(actions.values()),
        )
        for (error, fix), actions in groups.items()
    ]
    return tuple(sorted(out, key=lambda e: (-e.count, e.error, e.fix or "", e.action)))


def _pitfalls(verb: str, avoid: Sequence[AvoidNote]) -> tuple[str, ...]:
    mine = sorted((a for a in avoid if verb_of(a.template) == verb), key=lambda a: (-a.failures, a.text))
    out: list[str] = []
    for note in mine:
        text = " ".join(note.text.split())
        if text and text not in out:
            out.append(text)
    return tuple(out[:MAX_LIST])


# --- names ------------------------------------------------------------------------------------


def skill_name(level: str, words_source: str) -> str:
    """A readable, spec-valid name: task content words, `verb-then-verb`, or `use-<verb>`."""
    if level not in LEVELS:
        raise ValueError(f"unknown skill level: {level!r}")
    if level == "strategy":
        words = [
            w
            for w in re.findall(r"[a-z0-9]+", words_source.lower())
            if w not in STOPWORDS and w not in BOILERPLATE and len(w) > 2
        ]
        slug = "-".join(list(dict.fromkeys(words))[:NAME_WORDS])
    elif level == "functional":
        verbs: list[str] = []
        for part in _actions_in(words_source):
            verb = verb_of(part)
            if verb and (not verbs or verbs[-1] != verb):
                verbs.append(verb)
        slug = ""
        for verb in verbs:
            longer = f"{slug}-then-{verb}" if slug else verb
            if len(slugify(longer, max_len=4 * NAME_MAX)) > NAME_MAX:
                break
            slug = longer
    else:
        slug = f"use {verb_of(words_source)}" if re.search(r"[a-z0-9]", verb_of(words_source)) else ""
    # slugify would fall back to one name for every level; ours says which level had no words.
    return slugify(slug) if re.search(r"[a-z0-9]", slug) else f"{level}-skill"


def _actions_in(text: str) -> list[str]:
    """The templates of a pattern: one a line (or `;`/`|`-separated), else split at each new verb."""
    if re.search(r"[\n;|]", text):
        return [part for part in re.split(r"[\n;|]+", text) if part.strip()]
    parts: list[list[str]] = []
    for token in text.split():
        word = token.lower()
        # After a slot comes a preposition of the same action, or the next action's verb.
        after_slot = bool(parts) and parts[-1][-1].startswith("<")
        if not parts or word in KNOWN_VERBS or (after_slot and word not in STOPWORDS and word[:1] != "<"):
            parts.append([token])
        else:
            parts[-1].append(token)
    return [" ".join(p) for p in parts]


# --- documents ----------------------------------------------------------------------------------


def _short(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3].rstrip() + "..."


def _description(text: str) -> str:
    return _short(text, DESCRIPTION_MAX)


def _slot_note(template: str, examples: Sequence[str]) -> str:
    """' (`<object>` varies by task; e.g. dove, frog)': what fills each `<object>` in the examples."""
    if SLOT not in template.split():
        return ""
    key = canonical(template)
    positions = [k for k, group in enumerate(_object_groups(template)) if SLOT in group]
    seen: list[list[str]] = [[] for _ in positions]
    for example in examples:
        fillers = _fillers(key, example)
        for n, k in enumerate(positions):
            if k < len(fillers) and fillers[k] and fillers[k] not in seen[n]:
                seen[n].append(fillers[k])
    if len(positions) == 1:
        shown = [f"e.g. {', '.join(seen[0][:MAX_EXAMPLES])}"] if seen[0] else []
    else:
        shown = [f"#{n} e.g. {', '.join(s[:MAX_EXAMPLES])}" for n, s in enumerate(seen, start=1) if s]
    return f" (`{SLOT}` varies by task" + "".join(f"; {s}" for s in shown) + ")"


def _legend(templates: Sequence[str]) -> list[str]:
    """One line per kind of slot the templates use."""
    tokens = {t for template in templates for t in template.split()}
    legend = [f"`{TASK_SLOT}`: fill from your own task."] if TASK_SLOT in tokens else []
    if SLOT in tokens:
        legend.append(f"`{SLOT}`: varies by task; examples are given per step.")
    return [*legend, ""] if legend else []


def _object_groups(template: str) -> list[tuple[str, ...]]:
    """The runs of object tokens after the verb: one per `<object>` of the canonical form."""
    groups: list[list[str]] = []
    open_group = False
    for token in template.split()[len(verb_of(template).split()) :]:
        if _is_object(token):
            if not open_group:
                groups.append([])
            groups[-1].append(token)
        open_group = _is_object(token)
    return [tuple(g) for g in groups]


def _link(name: str) -> str:
    return f"[{name}](../{name}/SKILL.md)"


def _bullets(items: Sequence[str]) -> str:
    shown = [f"- {item}" for item in items[:MAX_LIST]]
    if len(items) > MAX_LIST:
        shown.append(f"- ...and {len(items) - MAX_LIST} more.")
    return "\n".join(shown) if shown else "None seen yet."


def _metadata(level: str, domain: str, runs: int, successes: int, failures: int) -> dict[str, str]:
    return {
        "level": level,
        "domain": domain,
        "evidence-runs": str(runs),
        "evidence-successes": str(successes),
        "evidence-failures": str(failures),
    }


def _agents_line(agents: Sequence[str]) -> list[str]:
    return [f"- Agents: {len(agents)}."] if agents else []


def strategy_document(
    name: str,
    task_example: str,
    procedure: Procedure,
    *,
    domain: str,
    functional: Mapping[int, str] | None = None,
    pitfalls: Sequence[str] = (),
    failures: int = 0,
    spans: Mapping[int, int] | None = None,
) -> SkillDocument:
    """The strategy skill of a task cluster; `functional[i]` names the skill whose run starts at step i.

    `spans[i]` (optional) is how many steps that skill covers: they are folded into its one line.
    """
    functional = functional or {}
    spans = spans or {}
    task = _short(task_example, 200)
    quoted = task.rstrip(". ")
    description = _description(
        f"Plan for tasks like '{quoted}'. Use at the start of such a task to order the steps, filling "
        f"{TASK_SLOT} slots from your own task. Not for other kinds of task, nor for how to use "
        "a single action (see the atomic use-* skills)."
    )
    lines: list[str] = []
    number = 1
    i = 0
    steps = procedure.steps
    while i < len(steps):
        if number > MAX_STEPS:
            lines.append(f"...and {len(steps) - i} more steps, in the Evidence run(s).")
            break
        if i in functional:
            span = max(1, min(spans.get(i, 1), len(steps) - i))
            covered = steps[i : i + span]
            body = ", then ".join(f"`{s.template}`{_slot_note(s.template, s.examples)}" for s in covered)
            lead = ": " if i in spans else ", starting with "
            lines.append(f"{number}. Use the {_link(functional[i])} skill{lead}{body}.")
            i += span
        else:
            step = steps[i]
            lines.append(f"{number}. `{step.template}`{_slot_note(step.template, step.examples)}")
            i += 1
        number += 1
    successes = len(procedure.runs)
    support = ", ".join(f"{n}: {s.support:.0%}" for n, s in enumerate(steps[:20], start=1))
    evidence = [
        f"- Runs: {successes + failures} ({successes} successful, {failures} failed).",
        *_agents_line(procedure.agents),
        f"- Support per step: {support}." if support else "- No consensus steps yet.",
    ]
    return SkillDocument(
        name=name,
        description=description,
        metadata={
            **_metadata("strategy", domain, successes + failures, successes, failures),
            "task-example": task,
        },
        sections=(
            Section(
                WHEN_TO_USE,
                f"At the start of a task like '{quoted}'. The plan below is the consensus of "
                f"{successes} successful run(s) of such tasks.",
            ),
            Section(PROCEDURE, "\n".join(_legend([s.template for s in steps]) + lines) or "No steps yet."),
            Section(PITFALLS, _bullets([" ".join(p.split()) for p in pitfalls])),
            Section(EVIDENCE, "\n".join(evidence)),
        ),
        title=f"Strategy: {name.replace('-', ' ')}",
    )


def functional_document(name: str, pattern: FunctionalPattern, *, domain: str) -> SkillDocument:
    """The functional skill of one shared sub-procedure."""
    steps = " then ".join(f"`{t}`" for t in pattern.templates[:MAX_LIST])
    description = _description(
        f"Sub-procedure: {steps}. Use inside a plan when this run of steps is next, filling each "
        f"{SLOT} from your situation; seen in {len(pattern.task_clusters)} kinds of task. "
        "Not a whole-task plan, nor for how to use a single action."
    )
    lines = []
    for n, template in enumerate(pattern.templates, start=1):
        concrete = [ex[n - 1] for ex in pattern.examples if len(ex) >= n]
        lines.append(f"{n}. `{template}`{_slot_note(template, concrete)}")
    shown = [" -> ".join(f"`{a}`" for a in ex) for ex in pattern.examples[:MAX_EXAMPLES]]
    if shown:
        lines.append("")
        lines.append("Examples:")
        lines.extend(f"- {s}" for s in shown)
    runs = len(pattern.runs)
    evidence = [
        f"- Runs: {runs} successful, in {len(pattern.task_clusters)} task clusters.",
        f"- Occurrences: {pattern.occurrences}.",
        *_agents_line(pattern.agents),
    ]
    return SkillDocument(
        name=name,
        description=description,
        metadata=_metadata("functional", domain, runs, runs, 0),
        sections=(
            Section(
                WHEN_TO_USE,
                f"When your plan reaches `{pattern.templates[0]}` and the steps after it match; "
                f"seen in {len(pattern.task_clusters)} kinds of task.",
            ),
            Section(PROCEDURE, "\n".join(_legend(pattern.templates) + lines)),
            Section(PITFALLS, "None seen yet."),
            Section(EVIDENCE, "\n".join(evidence)),
        ),
        title=f"Functional: {name.replace('-', ' ')}",
    )


def atomic_document(name: str, note: AtomicNote, *, domain: str) -> SkillDocument:
    """The atomic skill of one verb: preconditions, errors with their fixes, pitfalls."""
    description = _description(
        f"How to use the `{note.verb}` action well: its preconditions, common errors and their fixes. "
        f"Use before a `{note.verb}` step or after one fails. Not a plan for a whole task, "
        "nor a multi-step procedure."
    )
    lines: list[str] = []
    if note.preconditions:
        before = " or ".join(f"`{v}` ({share:.0%})" for v, share in note.preconditions)
        lines.append(
            f"{len(lines) + 1}. First make sure it can work: successful uses usually follow {before}."
        )
    lines.append(f"{len(lines) + 1}. Do `{note.verb} ...` with the exact object names you can see.")
    if note.errors:
        lines.append(f"{len(lines) + 1}. If it fails, find the error under Pitfalls and do its fix instead.")
    pitfalls = [
        f'`{e.action}` failed with "{_short(e.error, 160)}" ({e.count}x)'
        + (f"; fix: `{e.fix}`." if e.fix else "; no fix seen.")
        for e in note.errors
    ] + list(note.pitfalls)
    errors = sum(e.count for e in note.errors)
    runs = len(note.runs)
    evidence = [
        f"- Uses: {note.uses} ({note.successes} in successful runs without error, {errors} errors).",
        f"- Runs: {runs} ({note.successful_runs} successful, {runs - note.successful_runs} not).",
        *_agents_line(note.agents),
    ]
    return SkillDocument(
        name=name,
        description=description,
        metadata=_metadata("atomic", domain, runs, note.successful_runs, runs - note.successful_runs),
        sections=(
            Section(WHEN_TO_USE, f"Before a `{note.verb}` step, or after one fails."),
            Section(PROCEDURE, "\n".join(lines)),
            Section(PITFALLS, _bullets(pitfalls)),
            Section(EVIDENCE, "\n".join(evidence)),
        ),
        title=f"Atomic: {note.verb}",
    )
