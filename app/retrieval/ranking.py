"""Ranking of retrieval candidates (pure): reciprocal-rank fusion, utility, diversity, token budget.

No database, no model. `search` returns candidates with their rank in each source; `rank` fuses them:

    fused = sum over sources of 1 / (rrf_k + rank)  *  (1 + utility_weight * (alpha / (alpha + beta) - 1/2))
    final = fused * child_boost   (a child of the session's pinned strategy, later steps only)

then orders by (tier, -final, kind, id), where the tier puts the strategy a first step pins ahead of
all and, later in a session, other strategies behind all; drops near-duplicates of a better item;
fills top_k and the token budget greedily; swaps in the other polarity of experience when missing;
and adds skill bodies where asked for or where the budget left over holds them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain

from app.skill_md import estimate_tokens
from app.storage.models import ItemKind

# Candidate sources, in the order `explain` lists them.
VECTOR = "vector"  # HNSW over experience / skill embeddings
CLUSTER = "cluster"  # experiences of the state clusters nearest to the observation
TEXT = "text"  # PostgreSQL full text over experience text and SKILL.md content
SOURCES = (VECTOR, CLUSTER, TEXT)


@dataclass(frozen=True)
class Candidate:
    """One skill or experience a source proposed, with what ranking and the answer need."""

    kind: ItemKind
    id: uuid.UUID
    ranks: Mapping[str, int]  # source -> 1-based rank within that source
    similarity: float  # cosine similarity to the query embedding (0 when unknown)
    alpha: float
    beta: float
    # experiences
    text: str = ""
    polarity: str | None = None  # "do" / "avoid"
    action_template: str | None = None
    action_example: str | None = None
    slots: tuple[Mapping[str, object], ...] = ()
    # skills
    version: int | None = None
    name: str = ""
    description: str = ""
    level: str | None = None  # strategy / functional / atomic
    body: str | None = None  # the head SKILL.md, when fetched and its tier serves it
    domain: str = ""
    trust_tier: int | None = None  # skills: the head version's tier (T1 up; T0 is never a candidate)
    allowed_tools: tuple[str, ...] = ()  # skills at T3 and up: the tools their head declares


@dataclass(frozen=True)
class RankQuery:
    """What the caller asked for and the session context."""

    top_k: int = 8
    token_budget: int = 500
    include_body: bool = False
    explain: bool = False
    pinned_strategy: uuid.UUID | None = None  # the session's strategy skill
    strategy_children: frozenset[uuid.UUID] = frozenset()  # its functional and atomic skills
    first_step: bool = False  # step 0 or a new session: choose a strategy to pin
    recent_actions: tuple[str, ...] = ()  # what the agent just did: lessons to do it again rank lower
    max_skills: int | None = None  # at most this many skills, so lessons for the step keep their place


@dataclass(frozen=True)
class RankConfig:
    """Weights; see Settings.retrieval_*."""

    rrf_k: int = 60
    utility_weight: float = 1.0
    child_boost: float = 1.5
    duplicate_jaccard: float = 0.8
    repeat_factor: float = 0.3


@dataclass(frozen=True)
class Ranked:
    """A candidate in the answer, with its final score, token cost and, if asked, the breakdown."""

    candidate: Candidate
    score: float
    tokens: int
    include_body: bool = False
    explain: Mapping[str, float] = field(default_factory=dict)
    pinned: bool = False  # the session's strategy, or the one this first step pins: never withheld


# Answer tiers, compared before score: the strategy a first step pins leads, other strategies trail
# once a session has one. The answer's order, not `Ranked.score`, is what the service shows.
_LEAD = 0
_NORMAL = 1
_TRAIL = 2

_STRATEGY = "strategy"
_WORD = re.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class _Scored:
    """A candidate with its fused score and where session context puts it."""

    candidate: Candidate
    rrf: float
    utility: float
    score: float
    tier: int = _NORMAL
    boosted: bool = False
    pinned: bool = False
    repeated: bool = False


@dataclass(frozen=True, slots=True)
class _Pick:
    """A chosen candidate and the tokens it costs in the answer."""

    scored: _Scored
    tokens: int
    body: bool


def payload_tokens(candidate: Candidate, *, with_body: bool) -> int:
    """Estimated tokens of a candidate's payload in the answer, with or without its SKILL.md body."""
    if candidate.kind == ItemKind.EXPERIENCE:
        return (
            estimate_tokens(candidate.text)
            + estimate_tokens(candidate.action_template or "")
            + estimate_tokens(candidate.action_example or "")
        )
    tokens = estimate_tokens(candidate.name) + estimate_tokens(candidate.description)
    if with_body and candidate.body:
        tokens += estimate_tokens(candidate.body)
    return tokens


def utility_factor(alpha: float, beta: float, weight: float) -> float:
    """The score multiplier 1 + weight * (mean - 1/2) of a Beta(alpha, beta) utility posterior."""
    # Linear in the posterior mean: 1 for an unproven item (mean 1/2), 1 ± weight/2 at the extremes,
    # floored at 0 so a weight above 2 cannot flip the order of the worst items.
    total = alpha + beta
    mean = alpha / total if total > 0 else 0.5
    return max(0.0, 1.0 + weight * (mean - 0.5))


def rank(candidates: Sequence[Candidate], query: RankQuery, config: RankConfig | None = None) -> list[Ranked]:
    """The answer to one retrieve call: fused, utility-weighted, session-aware, deduplicated, cut."""
    config = config or RankConfig()
    if not candidates or query.top_k < 1 or query.token_budget < 1:
        return []
    session = query.pinned_strategy is not None and not query.first_step
    scored = [_score(c, query, config, session=session) for c in candidates]
    if query.first_step:
        _pin_best_strategy(scored, query.token_budget)
    scored.sort(key=_order)
    distinct = _distinct(scored, config.duplicate_jaccard)
    chosen, passed = _fill(distinct, query)
    if query.top_k >= 2:
        chosen = _balance_polarity(chosen, chain(passed, distinct), scored, query.token_budget)
    return _disclose(chosen, query, config)


def choose_withheld(ranked: Sequence[Ranked], *, share: float, draw: float) -> Ranked | None:
    """The item to withhold from this answer for the uplift experiment, or None (draw in [0, 1))."""
    # Never the pinned strategy (the session depends on it) nor the only item (the answer would be
    # empty); the same draw that decides whether to withhold picks which, so this stays pure.
    if len(ranked) < 2 or not 0.0 <= draw < share:
        return None
    eligible = [r for r in ranked if not r.pinned]
    if not eligible:
        return None
    return eligible[min(int(draw / share * len(eligible)), len(eligible) - 1)]


def _score(candidate: Candidate, query: RankQuery, config: RankConfig, *, session: bool) -> _Scored:
    rrf = sum(1.0 / (config.rrf_k + r) for r in candidate.ranks.values() if r >= 1)
    utility = utility_factor(candidate.alpha, candidate.beta, config.utility_weight)
    score = rrf * utility
    if query.recent_actions and _repeats(candidate, query.recent_actions):
        # The agent has just done this; a lesson saying "do it" is rarely what the next step needs.
        return _Scored(candidate, rrf, utility, score * config.repeat_factor, repeated=True)
    if not session or candidate.kind != ItemKind.SKILL:
        return _Scored(candidate, rrf, utility, score)
    if candidate.id == query.pinned_strategy:
        return _Scored(candidate, rrf, utility, score, pinned=True)
    if candidate.id in query.strategy_children:
        return _Scored(candidate, rrf, utility, score * config.child_boost, boosted=True)
    if candidate.level == _STRATEGY:
        # Mid-task an agent rarely needs a different plan: keep other strategies, behind everything.
        return _Scored(candidate, rrf, utility, score, tier=_TRAIL)
    return _Scored(candidate, rrf, utility, score)


def _repeats(candidate: Candidate, recent: Sequence[str]) -> bool:
    """Whether a `do` lesson recommends exactly an action the agent has just taken."""
    if candidate.kind != ItemKind.EXPERIENCE or candidate.polarity != "do":
        return False
    done = {" ".join(a.lower().split()) for a in recent}
    own = {
        " ".join((candidate.action_example or "").lower().split()),
        " ".join((candidate.action_template or "").lower().split()),
    }
    return bool(done & own)


def _pin_best_strategy(scored: list[_Scored], budget: int) -> None:
    # Only a strategy whose description fits can lead the answer, else the pin would be cut away.
    strategies = [
        i
        for i, s in enumerate(scored)
        if s.candidate.kind == ItemKind.SKILL
        and s.candidate.level == _STRATEGY
        and s.score > 0
        and payload_tokens(s.candidate, with_body=False) <= budget
    ]
    if strategies:
        # A plan is for a kind of task: the strategy closest to the query (the task, when the caller
        # searched skills by it) wins; fused score only breaks ties. Words of the room the agent happens
        # to start in must not pick the plan.
        best = min(strategies, key=lambda i: (-round(scored[i].candidate.similarity, 6), _order(scored[i])))
        scored[best] = replace(scored[best], tier=_LEAD, pinned=True)


def _order(s: _Scored) -> tuple[int, float, str, uuid.UUID]:
    return (s.tier, -s.score, s.candidate.kind, s.candidate.id)


def _distinct(ordered: Iterable[_Scored], threshold: float) -> Iterator[_Scored]:
    """The candidates in order, less any near-duplicate of an earlier (better) one."""
    # Lazy: the fill usually stops after a few items, and the pairwise Jaccard is the costly part.
    names: set[str] = set()
    templates: set[tuple[str | None, str]] = set()
    word_sets: dict[tuple[str | None, str], list[tuple[int, frozenset[str]]]] = {}
    for s in ordered:
        c = s.candidate
        if c.kind == ItemKind.SKILL:
            name = c.name.strip().casefold()
            if name in names:
                continue
            if name:
                names.add(name)
            yield s
            continue
        # Opposite polarities are never duplicates: "do X" and "avoid X" say different things.
        template = " ".join((c.action_template or "").split()).casefold()
        if template and (c.polarity, template) in templates:
            continue
        words = frozenset(_WORD.findall(c.text.casefold()))
        # Lessons that recommend different actions are different lessons, however alike their wording.
        kept = word_sets.setdefault((c.polarity, template), [])
        if words and _near(words, kept, threshold):
            continue
        if template:
            templates.add((c.polarity, template))
        if words:
            kept.append((len(words), words))
        yield s


def _near(words: frozenset[str], kept: Iterable[tuple[int, frozenset[str]]], threshold: float) -> bool:
    """Whether `words` has a word-set Jaccard of at least `threshold` with one of `kept`."""
    n = len(words)
    for m, other in kept:
        # Jaccard is at most min/max of the sizes: most pairs are decided without an intersection.
        if min(n, m) < threshold * max(n, m):
            continue
        common = len(words & other)
        if common >= threshold * (n + m - common):
            return True
    return False


def _fill(distinct: Iterator[_Scored], query: RankQuery) -> tuple[list[_Pick], list[_Scored]]:
    """Greedy: take items in order while they fit; return the answer and those that did not fit."""
    chosen: list[_Pick] = []
    passed: list[_Scored] = []
    room = query.token_budget
    skills = 0
    for s in distinct:
        c = s.candidate
        if c.kind == ItemKind.SKILL and query.max_skills is not None and skills >= query.max_skills:
            continue
        tokens = payload_tokens(c, with_body=False)
        body = False
        if query.include_body and c.kind == ItemKind.SKILL and c.body:
            with_body = tokens + estimate_tokens(c.body)
            # A body the budget cannot hold falls back to the description (progressive disclosure).
            if with_body <= room:
                tokens, body = with_body, True
        if tokens > room:
            passed.append(s)
            continue
        chosen.append(_Pick(s, tokens, body))
        room -= tokens
        skills += c.kind == ItemKind.SKILL
        if len(chosen) == query.top_k:
            break
    return chosen, passed


def _balance_polarity(
    chosen: list[_Pick], rest: Iterable[_Scored], scored: Sequence[_Scored], budget: int
) -> list[_Pick]:
    """Swap the last experience for the best of a missing polarity, so both "do" and "avoid" show."""
    experiences = [
        p
        for p in chosen
        if p.scored.candidate.kind == ItemKind.EXPERIENCE and p.scored.candidate.polarity is not None
    ]
    present = {p.scored.candidate.polarity for p in experiences}
    # With a single experience a swap would still show one polarity, and lose the better lesson.
    if len(present) != 1 or len(experiences) < 2:
        return chosen

    def missing(s: _Scored) -> bool:
        c = s.candidate
        other = c.polarity is not None and c.polarity not in present
        return c.kind == ItemKind.EXPERIENCE and other and s.score > 0

    if not any(missing(s) for s in scored):
        return chosen
    victim = experiences[-1]
    room = budget - sum(p.tokens for p in chosen) + victim.tokens
    for s in rest:
        if missing(s) and (tokens := payload_tokens(s.candidate, with_body=False)) <= room:
            kept = [p for p in chosen if p is not victim]
            return sorted([*kept, _Pick(s, tokens, False)], key=lambda p: _order(p.scored))
    return chosen


def _disclose(chosen: list[_Pick], query: RankQuery, config: RankConfig) -> list[Ranked]:
    """The answer: skill bodies added, in order, where the budget left after every item holds them."""
    room = query.token_budget - sum(p.tokens for p in chosen)
    answer: list[Ranked] = []
    for p in chosen:
        c = p.scored.candidate
        tokens, body = p.tokens, p.body
        if not body and c.kind == ItemKind.SKILL and c.body:
            extra = estimate_tokens(c.body)
            if extra <= room:
                tokens, body, room = tokens + extra, True, room - extra
        explain = _explain(p.scored, config) if query.explain else {}
        pinned = p.scored.pinned
        answer.append(Ranked(c, p.scored.score, tokens, include_body=body, explain=explain, pinned=pinned))
    return answer


def _explain(s: _Scored, config: RankConfig) -> dict[str, float]:
    ranks = s.candidate.ranks
    sources = [src for src in SOURCES if src in ranks] + sorted(set(ranks) - set(SOURCES))
    out = {f"rrf_{src}": 1.0 / (config.rrf_k + ranks[src]) for src in sources if ranks[src] >= 1}
    out["utility"] = s.utility
    if s.boosted:
        out["child_boost"] = config.child_boost
    if s.repeated:
        out["repeat_penalty"] = config.repeat_factor
    if s.tier == _LEAD:
        out["strategy_pin"] = 1.0
    if s.tier == _TRAIL:
        out["strategy_demoted"] = 1.0
    out["fused"] = s.rrf * s.utility
    out["final"] = s.score
    return out
