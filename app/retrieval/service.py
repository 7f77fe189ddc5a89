"""`retrieve()`: the step-conditioned answer behind /v1/retrieve, with one database round trip.

normalise the observation -> its embedding (in-process LRU) -> `search` (one SQL text) -> `rank` (pure)
-> now and then withhold one item (uplift) -> pin the session's strategy on its first step.

Nothing is written while answering: the result carries a `RetrievalLog`, which the caller records
after the answer is sent (`record_after_answer`, its own transaction). Until then feedback on the
retrieval answers 404, and a session's next step may not see the strategy pinned a moment ago (it
then pins again, usually the same one).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.config import Settings
from app.embedding import Embedder
from app.evolver.situations import key_hash, situation_key
from app.retrieval import ranking
from app.retrieval.ranking import RankConfig, Ranked, RankQuery
from app.retrieval.search import (
    QueryVector,
    SearchConfig,
    SearchFilters,
    SearchQuery,
    content_words,
    search,
)
from app.storage.repositories import retrievals
from app.storage.repositories.retrievals import LoggedItem, RetrievalLog

log = logging.getLogger(__name__)


class QueryEmbeddings:
    """Query embeddings by model and normalised observation, least recently used out first; thread-safe.

    Agents revisit the same situations, so most steps skip the model. The model runs outside the lock:
    two requests for a new situation may both embed it, which is cheaper than making one wait. Each
    entry is the vector's pgvector text (`QueryVector`): formatted once, and about 5 KiB where a tuple
    of 384 floats took 12 KiB (4096 entries: 20 MiB, not 50, per API process).
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[str, str], QueryVector] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, embedder: Embedder) -> QueryVector:
        """The embedding of `key`, from the cache or the model."""
        entry = (embedder.model_name, key)
        with self._lock:
            vector = self._entries.get(entry)
            if vector is not None:
                self._entries.move_to_end(entry)
                return vector
        vector = QueryVector.of(embedder.embed_query(key))
        if self._size > 0:
            with self._lock:
                self._entries[entry] = vector
                while len(self._entries) > self._size:
                    self._entries.popitem(last=False)
        return vector

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


@dataclass(frozen=True)
class RetrieveRequest:
    """What the agent sent, as the service needs it."""

    task: str
    observation: str
    step: int | None = None
    recent_actions: tuple[str, ...] = ()
    session_id: str | None = None
    plan_step: str | None = None
    filters: SearchFilters = SearchFilters()
    tags: tuple[str, ...] = ()
    top_k: int = 8
    token_budget: int = 500
    include_body: bool = False
    explain: bool = False


@dataclass(frozen=True)
class Timings:
    """Seconds one answer spent on each stage: query embeddings (mostly cache hits), the search, ranking."""

    embed_s: float = 0.0
    search_s: float = 0.0
    rank_s: float = 0.0


@dataclass(frozen=True)
class RetrievalResult:
    """The answer: listed items in order, the one withheld (not shown), the session's strategy, the log."""

    retrieval_id: uuid.UUID
    items: tuple[Ranked, ...]
    withheld: Ranked | None
    strategy_id: uuid.UUID | None
    log: RetrievalLog
    timings: Timings = Timings()


def search_config(settings: Settings) -> SearchConfig:
    """How wide the search looks, from settings."""
    return SearchConfig(
        ef_search_floor=settings.retrieval_ef_search_floor,
        per_source_floor=settings.retrieval_per_source,
        clusters=settings.retrieval_clusters,
        text_matches=settings.retrieval_text_matches,
        experience_task_fit=settings.retrieval_experience_task_fit,
    )


def rank_config(settings: Settings) -> RankConfig:
    """Ranking weights, from settings."""
    return RankConfig(
        rrf_k=settings.retrieval_rrf_k,
        utility_weight=settings.retrieval_utility_weight,
        child_boost=settings.retrieval_child_boost,
        duplicate_jaccard=settings.retrieval_duplicate_jaccard,
    )


def retrieve(
    session: Session,
    tenant_id: uuid.UUID,
    request: RetrieveRequest,
    *,
    embedder: Embedder,
    settings: Settings,
    cache: QueryEmbeddings,
    api_key_id: uuid.UUID | None = None,
    draw: Callable[[], float] = random.random,
) -> RetrievalResult:
    """The skills and experiences for this step, ranked and cut to `top_k` and the token budget."""
    # Remembered per process: agents resend the same task every step and revisit situations.
    key = situation_key(request.observation)
    # Words the agent chose (tags, its plan step) first: they say most about what it looks for.
    terms = content_words(
        (*request.tags, request.plan_step or "", key, request.task), settings.retrieval_text_terms
    )
    started = time.perf_counter()
    embedding = cache.get(key, embedder)
    task_embedding = cache.get(situation_key(request.task), embedder) if request.task else None
    embedded = time.perf_counter()
    found = search(
        session,
        SearchQuery(
            tenant_id=tenant_id,
            embedding=embedding,
            task_embedding=task_embedding,
            terms=terms,
            top_k=request.top_k,
            filters=request.filters,
            session_id=request.session_id,
            include_body=request.include_body,
        ),
        search_config(settings),
    )
    searched = time.perf_counter()
    state = found.session
    # A new session, its step 0, or one whose first step found no strategy: choose one now.
    first_step = request.step == 0 or state.strategy_id is None
    ranked = ranking.rank(
        found.candidates,
        RankQuery(
            top_k=request.top_k,
            token_budget=request.token_budget,
            include_body=request.include_body,
            explain=request.explain,
            pinned_strategy=None if first_step else state.strategy_id,
            strategy_children=frozenset() if first_step else state.children,
            first_step=first_step,
            recent_actions=request.recent_actions[-1:],
            max_skills=None
            if request.filters.level
            else max(1, int(request.top_k * settings.retrieval_skill_share)),
        ),
        rank_config(settings),
    )
    withheld = ranking.choose_withheld(ranked, share=settings.retrieval_withhold_share, draw=draw())
    pinned = next((r.candidate.id for r in ranked if r.pinned), None)
    strategy_id = pinned if first_step else state.strategy_id
    retrieval_id = uuid.uuid4()
    timings = Timings(
        embed_s=embedded - started, search_s=searched - embedded, rank_s=time.perf_counter() - searched
    )
    return RetrievalResult(
        retrieval_id=retrieval_id,
        items=tuple(r for r in ranked if r is not withheld),
        withheld=withheld,
        strategy_id=strategy_id,
        log=RetrievalLog(
            retrieval_id=retrieval_id,
            tenant_id=tenant_id,
            api_key_id=api_key_id,
            session_id=request.session_id,
            step=request.step,
            situation_hash=key_hash(key),
            strategy_id=strategy_id,
            pin=first_step and request.session_id is not None,
            items=_logged(ranked, withheld),
        ),
        timings=timings,
    )


def record(session: Session, entry: RetrievalLog, *, latency_ms: float) -> None:
    """Write what an answer listed and withheld, and the session's pin, in the caller's transaction."""
    retrievals.add(session, entry, latency_ms=latency_ms)


def record_after_answer(
    sessions: Callable[[], AbstractContextManager[Session]], entry: RetrievalLog, latency_ms: float
) -> None:
    """Record an answer in its own transaction once it was sent; a failure is logged, never raised.

    The answer is out already, and losing one log entry only costs its feedback (which then answers
    404) and one uplift sample; an error here must not reach the client or the server's error page.
    """
    try:
        with sessions() as session:
            record(session, entry, latency_ms=latency_ms)
    except Exception:
        log.exception("could not record retrieval %s; feedback on it will answer 404", entry.retrieval_id)


def _logged(ranked: Sequence[Ranked], withheld: Ranked | None) -> tuple[LoggedItem, ...]:
    return tuple(
        LoggedItem(
            item_id=r.candidate.id,
            kind=r.candidate.kind,
            version=r.candidate.version,
            rank=place,
            score=r.score,
            withheld=r is withheld,
        )
        for place, r in enumerate(ranked, start=1)
    )
