"""The FastAPI application: lifespan, error handlers, the /v1 router."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
from anyio import CapacityLimiter, to_thread
from fastapi import APIRouter, FastAPI

from app import __version__, admin
from app.api import errors
from app.api.deps import KeyCache
from app.api.middleware import BodySizeLimit, InFlightLimit
from app.api.ratelimit import RateLimiter
from app.api.routes import (
    agents,
    audit,
    events,
    experiences,
    health,
    keys,
    retrieve,
    review,
    skills,
    trajectories,
)
from app.config import Settings, get_settings
from app.embedding import SentenceTransformerEmbedder, get_embedder
from app.embedding.sentence import quiet_threads
from app.limits import DESCRIPTION, MAX_REQUEST_BYTES
from app.observability import http as observability
from app.retrieval.service import QueryEmbeddings
from app.storage.session import make_engine, make_sessionmaker


def _warm(threads: int) -> None:
    embedder = get_embedder()
    if isinstance(embedder, SentenceTransformerEmbedder):
        if threads:
            _torch_threads(threads)
        embedder.warm()


def _torch_threads(threads: int) -> None:
    """Run each embedding on `threads` torch threads (process-wide, threads started later included)."""
    quiet_threads()
    import torch

    torch.set_num_threads(threads)


def api_router() -> APIRouter:
    """Every /v1 route."""
    v1 = APIRouter(prefix="/v1")
    v1.include_router(keys.router)
    v1.include_router(trajectories.router)
    v1.include_router(events.router)
    v1.include_router(experiences.router)
    v1.include_router(skills.router)
    v1.include_router(review.router)
    v1.include_router(audit.router)
    v1.include_router(retrieve.router)
    v1.include_router(agents.router)
    return v1


# Health checks and metrics answer even when every request slot is taken.
UNLIMITED_PATHS = ("/healthz", "/readyz", "/metrics")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; connections open in the lifespan, not at import."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.require_database_url(), pool_size=settings.db_pool_size)
        client = (
            redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
            if settings.redis_url
            else None
        )
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
        app.state.redis = client
        app.state.rate_limiter = RateLimiter(client, settings.rate_limit_per_minute)
        to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        if settings.api_warm_embedder:
            # Load the model now, off the event loop, so the first /v1/retrieve does not pay for it;
            # a request that comes sooner waits on the embedder's own load lock.
            threading.Thread(
                target=_warm, args=(settings.api_embedding_threads,), name="embedder-warm", daemon=True
            ).start()
        try:
            yield
        finally:
            if client is not None:
                client.close()
            engine.dispose()

    app = FastAPI(
        title="Skillfoundry",
        version=__version__,
        description="A self-hosted skill library for LLM agents.\n" + DESCRIPTION,
        lifespan=lifespan,
    )
    # Per-process state that does no I/O: the settings, and the caches that keep retrieval off the
    # database and the model (checked keys, query embeddings).
    app.state.settings = settings
    app.state.key_cache = KeyCache(settings.api_key_cache_ttl_s, settings.api_key_cache_size)
    app.state.query_embeddings = QueryEmbeddings(settings.retrieval_embedding_cache_size)
    # Threads that end requests' transactions, apart from the endpoints' pool (see `deps.get_session`);
    # as many as the engine has connections.
    app.state.session_limiter = CapacityLimiter(2 * settings.db_pool_size)
    errors.install(app)
    app.add_middleware(BodySizeLimit, limit=MAX_REQUEST_BYTES)
    app.add_middleware(
        InFlightLimit, limit=settings.api_threads, wait_s=settings.api_queue_wait_s, exempt=UNLIMITED_PATHS
    )
    observability.install(app, settings)  # request ids, request metrics and GET /metrics
    app.include_router(health.router)
    app.include_router(api_router())
    admin.install(app)  # the web UI at /admin
    return app
