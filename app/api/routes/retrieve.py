"""Retrieval: what helps at this step (`/retrieve`), and whether it did (`/feedback`); agent keys."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Request, Response
from sqlalchemy.orm import Session

from app.api.deps import CurrentAgent, EmbedderDep, SessionDep, SettingsDep
from app.api.schemas.common import ERROR_RESPONSES
from app.api.schemas.experiences import ActionOut
from app.api.schemas.retrieve import FeedbackIn, FeedbackOut, RetrievedItem, RetrieveIn, RetrieveOut
from app.observability.http import MetricsDep
from app.retrieval import feedback, service
from app.retrieval.ranking import Ranked
from app.retrieval.search import SearchFilters
from app.retrieval.service import QueryEmbeddings, RetrievalResult, RetrieveRequest
from app.storage.models import ItemKind, Polarity, SkillLevel, TrustTier
from app.storage.session import session_scope

# What each tier lets an agent do with a skill; the server decides, never the skill.
TIER_NOTES = {
    TrustTier.UNVETTED: "Unvetted: only its name and description are served until a reviewer accepts it.",
    TrustTier.REVIEWED: "Reviewed instructions; they grant no tools, whatever the skill declares.",
}

LogSessions = Callable[[], AbstractContextManager[Session]]


async def get_query_embeddings(request: Request) -> QueryEmbeddings:
    """The process's cache of query embeddings."""
    cache: QueryEmbeddings = request.app.state.query_embeddings
    return cache


async def get_log_sessions(request: Request) -> LogSessions:
    """Units of work for recording answers after they are sent (tests swap in their own transaction)."""
    factory = request.app.state.sessionmaker
    return lambda: session_scope(factory)


QueryCache = Annotated[QueryEmbeddings, Depends(get_query_embeddings)]
LogSessionsDep = Annotated[LogSessions, Depends(get_log_sessions)]

router = APIRouter(tags=["retrieval"], responses=ERROR_RESPONSES)


@router.post("/retrieve", response_model_exclude_none=True)
def retrieve(
    body: RetrieveIn,
    session: SessionDep,
    agent: CurrentAgent,
    settings: SettingsDep,
    embedder: EmbedderDep,
    cache: QueryCache,
    log_sessions: LogSessionsDep,
    background: BackgroundTasks,
    response: Response,
    metrics: MetricsDep,
) -> RetrieveOut:
    """The skills and experiences that fit this step, best first, within `top_k` and the token budget."""
    started = time.perf_counter()
    result = service.retrieve(
        session, agent.tenant_id, _request(body), embedder=embedder, settings=settings, cache=cache,
        api_key_id=agent.key_id,
    )  # fmt: skip
    answer = _answer(result)
    latency_ms = (time.perf_counter() - started) * 1000
    response.headers["Server-Timing"] = server_timing(latency_ms, result)
    metrics.observe_retrieve(result.timings, latency_ms / 1000)
    # Recorded after the answer is sent, in its own transaction: the answer waits for no write.
    background.add_task(service.record_after_answer, log_sessions, result.log, latency_ms)
    return answer


@router.post("/feedback")
def give_feedback(body: FeedbackIn, session: SessionDep, agent: CurrentAgent) -> FeedbackOut:
    """Report how a retrieval's answer worked out and which of its items were used (once per retrieval)."""
    used = list(dict.fromkeys(body.used_item_ids))
    row = feedback.give(session, agent.tenant_id, body.retrieval_id, used, body.outcome, body.reason)
    return FeedbackOut(retrieval_id=row.id, outcome=body.outcome, used_item_ids=used)


def server_timing(latency_ms: float, result: RetrievalResult) -> str:
    """`retrieve;dur=` (the whole answer) first, then its stages."""
    t = result.timings
    stages = (("embed", t.embed_s), ("search", t.search_s), ("rank", t.rank_s))
    return ", ".join(
        [f"retrieve;dur={latency_ms:.1f}", *(f"{name};dur={s * 1000:.1f}" for name, s in stages)]
    )


def _request(body: RetrieveIn) -> RetrieveRequest:
    f = body.filters
    return RetrieveRequest(
        task=body.task,
        observation=body.observation,
        step=body.step,
        recent_actions=tuple(body.recent_actions),
        session_id=body.session_id,
        plan_step=body.plan_step,
        filters=SearchFilters(
            domain=f.domain,
            level=f.level.value if f.level is not None else None,
            polarity=f.polarity.value if f.polarity is not None else None,
        ),
        tags=tuple(f.tags),
        top_k=body.top_k,
        token_budget=body.token_budget,
        include_body=body.include_body,
        explain=body.explain,
    )


def _answer(result: RetrievalResult) -> RetrieveOut:
    return RetrieveOut(
        retrieval_id=result.retrieval_id,
        items=[_item(r) for r in result.items],
        strategy_id=result.strategy_id,
        tokens=sum(r.tokens for r in result.items),
    )


def _item(r: Ranked) -> RetrievedItem:
    c = r.candidate
    explain = dict(r.explain) if r.explain else None
    if c.kind == ItemKind.EXPERIENCE:
        return RetrievedItem(
            kind=c.kind,
            id=c.id,
            score=r.score,
            tokens=r.tokens,
            text=c.text,
            polarity=Polarity(c.polarity) if c.polarity else None,
            action=ActionOut(
                template=c.action_template or "",
                example=c.action_example or "",
                slots=[dict(s) for s in c.slots],
            ),
            explain=explain,
        )
    tier = TrustTier(c.trust_tier if c.trust_tier is not None else TrustTier.UNVETTED)
    served = tier >= TrustTier.REVIEWED
    return RetrievedItem(
        kind=c.kind,
        id=c.id,
        version=c.version,
        score=r.score,
        tokens=r.tokens,
        name=c.name,
        description=c.description,
        level=SkillLevel(c.level) if c.level else None,
        pinned=r.pinned,
        trust_tier=tier.label,
        note=TIER_NOTES.get(tier),
        allowed_tools=list(c.allowed_tools) if c.allowed_tools else None,
        body_url=f"/v1/skills/{c.id}/versions/{c.version}" if served else None,
        body=c.body if r.include_body and served else None,
        explain=explain,
    )
