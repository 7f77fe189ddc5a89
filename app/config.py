"""Settings from the environment, read when asked for, never at import time."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything configurable; `SKILLFOUNDRY_*` variables, plus plain `DATABASE_URL` / `REDIS_URL`."""

    model_config = SettingsConfigDict(env_prefix="SKILLFOUNDRY_", extra="ignore")

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "SKILLFOUNDRY_DATABASE_URL")
    )
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "SKILLFOUNDRY_REDIS_URL")
    )
    home: Path = Path(".skillfoundry")
    host: str = "127.0.0.1"
    port: int = 8000

    embedding_device: str = "cpu"
    embedding_batch_size: int = 64
    # Embedding speed. "auto" runs the model in bfloat16 where the CPU multiplies bfloat16 natively
    # (AVX512-BF16 or AMX): about 2x faster, vectors within 1e-4 cosine of float32 (docs/benchmarks.md).
    embedding_precision: Literal["auto", "float32", "bfloat16"] = "auto"

    worker_concurrency: int = 1
    # A safety net under the worker's own bounds (app/evolver/memory.py): a pool process whose resident
    # memory passes this after a job is replaced by a fresh one, which loads the model again (seconds).
    # The job's result is in first, so nothing accepted is dropped. A distilling process levels off
    # below 1 GiB (docs/deployment.md, "Worker memory").
    worker_max_memory_mb: int = Field(
        default=2048, ge=0, description="RSS in MiB after which a worker process is replaced; 0: never."
    )
    # Recovery (README "Faults and backups"). A job whose worker died is delivered again once it has been
    # unacknowledged this long, so it must exceed the longest task (960 s); the sweeper sends again, every
    # `sweep_every_s`, the jobs of events still open after `sweep_stale_after_s` (Redis was down at send).
    broker_visibility_timeout_s: float = Field(
        default=1200.0, gt=0, description="Seconds before an unacknowledged job is delivered again."
    )
    sweep_every_s: float = Field(default=60.0, gt=0, description="Period of the stale-event sweep.")
    sweep_stale_after_s: float = Field(
        default=120.0, gt=0, description="Age at which an open event's job is sent again."
    )
    rate_limit_per_minute: int = Field(default=6000, ge=0, description="Requests per key per minute; 0: off.")
    db_pool_size: int = 10
    # Endpoints run on a thread pool; more threads than database connections only makes requests wait
    # for a connection (and answer 503 after 10 s) instead of queueing in order. 2 x db_pool_size are
    # open at most, so the default leaves room for the after-answer writes.
    api_threads: int = Field(default=16, ge=1, description="Threads running endpoints per API process.")
    # As many requests as threads are let in at once; the others wait (holding no connection) this long.
    api_queue_wait_s: float = Field(default=10.0, gt=0, description="Seconds a request may wait for a slot.")

    # Optional OpenAI-compatible endpoint (ending in /v1) that rewrites experience texts; unset: no LLM.
    llm_base_url: str | None = None
    # Many local servers ignore the key, but the client refuses to start without one.
    llm_api_key: str = "not-needed"
    llm_model: str = "gpt-4o-mini"
    llm_timeout_s: float = Field(default=20.0, gt=0)
    llm_max_retries: int = Field(default=2, ge=0)

    # Evolver: state clusters, experience admission, dedup and consolidation.
    cluster_threshold: float = Field(
        default=0.85, gt=0, le=1, description="Cosine similarity to join a cluster."
    )
    merge_threshold: float = Field(
        default=0.92, gt=0, le=1, description="Cosine similarity to merge experiences."
    )
    do_min_score: float = Field(
        default=0.7, ge=0, le=1, description="Outcome score a run needs to teach `do`."
    )
    max_new_experiences_per_trajectory: int = Field(default=5, ge=0)
    max_new_experiences_per_minute: int = Field(default=120, ge=0)
    max_experiences_per_cluster: int = Field(default=20, ge=1)
    retire_below_utility: float = Field(default=0.3, ge=0, le=1)
    retire_min_observations: float = Field(default=10.0, ge=0, description="alpha + beta before retiring.")
    # Consolidation: `do` lessons of one cluster that made one move on different objects their tasks do not
    # name become one `<task:CATEGORY>` lesson, when a shared task word clearly names what the objects are.
    generalise_experiences: bool = Field(default=True, description="Merge lessons into category slots.")
    generalise_min_similarity: float = Field(
        default=0.4, ge=-1, le=1, description="Cosine of the category word to the objects' mean embedding."
    )
    generalise_margin: float = Field(
        default=0.1, ge=0, le=2, description="How far the category word must beat the runner-up word."
    )
    generalise_min_examples: int = Field(default=2, ge=2, description="Distinct objects before generalising.")

    # Skills (evolver II): task clusters, distillation and collective refinement.
    task_cluster_threshold: float = Field(
        # On ScienceWorld, tasks of one type are at least 0.84 alike and of different types at most 0.82.
        default=0.83,
        gt=0,
        le=1,
        description="Cosine similarity of task texts to share a task cluster.",
    )
    skill_min_successes: int = Field(default=2, ge=1, description="Successful runs before a strategy skill.")
    skill_runs_per_cluster: int = Field(default=200, ge=1, description="Newest runs a distillation reads.")
    skill_refine_min_runs: int = Field(default=3, ge=1, description="New runs of a group before refining.")
    skill_refine_min_agents: int = Field(default=2, ge=1, description="Distinct agents before refining.")
    skill_failure_spike: float = Field(
        default=0.5, ge=0, le=1, description="Failure share of new runs that refines with fewer agents."
    )
    skill_rewrite_share: float = Field(
        default=0.5, ge=0, le=1, description="Body share an edit may change without a rewrite reason."
    )
    skill_retire_below: float = Field(
        default=0.25, ge=0, le=1, description="Success rate of runs using a skill below which it retires."
    )
    max_functional_skills: int = Field(default=10, ge=0, description="Functional skills per domain.")
    atomic_min_uses: int = Field(default=3, ge=1, description="Uses of a verb before an atomic skill.")
    skill_evolve_every_s: float = Field(default=300.0, gt=0, description="Period of the beat-driven cycle.")
    retention_days: int = Field(
        default=0,
        ge=0,
        description="Raw trajectories older than this many days are removed hourly; 0 keeps them.",
    )

    # Retrieval (issue 5): how wide /v1/retrieve searches, how it ranks (app/retrieval/ranking.py), the
    # share of answers that withhold one item to measure uplift, and the in-process caches of the API.
    # bench retrieve (docs/benchmarks.md): a tenant holding a quarter of a 100k index needs about 320 for
    # recall@10 >= 0.95 on MiniLM queries; 40 gave 0.82.
    retrieval_ef_search_floor: int = Field(
        default=320, ge=1, le=1000, description="Least hnsw.ef_search per query (else 4 x top_k)."
    )
    retrieval_per_source: int = Field(
        default=16, ge=1, le=1000, description="Least candidates per source (else 2 x top_k)."
    )
    retrieval_clusters: int = Field(default=3, ge=1, le=100, description="Nearest state clusters searched.")
    retrieval_text_terms: int = Field(default=12, ge=0, le=64, description="Content words in the text query.")
    retrieval_text_matches: int = Field(
        default=100, ge=1, le=10_000, description="Full-text matches ranked per kind (the first found)."
    )
    retrieval_experience_task_fit: float = Field(
        # Lessons are about a kind of task: "focus on the thermometer" fits finding a non-living thing, not
        # finding an animal in the same kitchen. As `task_cluster_threshold`: same kind at or over it.
        default=0.83,
        ge=0,
        le=1,
        description="Cosine similarity of the query's task to the task an experience was learned on (or to "
        "a strategy's task cluster), at or over which it is served (0: every task); experiences without a "
        "task embedding and skills of other levels always are.",
    )
    retrieval_rrf_k: int = Field(default=60, ge=1, description="Reciprocal-rank fusion constant.")
    retrieval_utility_weight: float = Field(default=1.0, ge=0, description="Weight of the utility posterior.")
    retrieval_child_boost: float = Field(
        default=1.5, ge=1, description="Score factor of the pinned strategy's children."
    )
    retrieval_duplicate_jaccard: float = Field(
        default=0.8, gt=0, le=1, description="Word overlap that makes two experiences duplicates."
    )
    retrieval_skill_share: float = Field(
        default=0.5, ge=0, le=1, description="Share of top_k that skills may take, unless filtered by level."
    )
    retrieval_withhold_share: float = Field(
        default=0.05, ge=0, le=1, description="Share of answers that withhold one item (uplift)."
    )
    retrieval_embedding_cache_size: int = Field(
        default=4096, ge=0, description="Query embeddings kept per API process (0: none)."
    )
    # Measured on 2 shared cores: one query embedding cost 15 ms of CPU on one torch thread, 23 ms on two
    # (and more wall time); an API process already runs requests in parallel, so one thread each is best.
    # Set when the API warms the embedder (`api_warm_embedder`), before the model loads.
    api_embedding_threads: int = Field(
        default=1, ge=0, description="Torch threads per API process for query embeddings (0: torch's own)."
    )
    api_warm_embedder: bool = Field(
        default=True, description="Load the embedding model when the API starts, not on the first retrieve."
    )
    api_key_cache_ttl_s: float = Field(
        default=10.0, ge=0, description="Seconds a process trusts a checked API key (0: check every call)."
    )
    api_key_cache_size: int = Field(default=10_000, ge=0, description="API keys cached per API process.")
    # The admin UI (/admin) signs its session cookies with this. Unset: a random secret is made on first
    # use and kept in `home`/admin-secret (mode 0600); set it when several API hosts serve /admin.
    admin_secret: SecretStr | None = Field(default=None, min_length=32, description="Admin cookie key.")

    # Skill distiller (app/evolver/skill_llm.py): "heuristic" writes the offline drafts; "llm" has the
    # llm_* endpoint above edit each draft, within a daily token budget per tenant counted in Redis, and
    # falls back to the draft when the model fails, answers badly or the budget is spent.
    skill_distiller: str = Field(
        default="heuristic", pattern=r"^(heuristic|llm)$", description="Who writes skill versions."
    )
    llm_skill_tokens_per_day: int = Field(
        default=200_000, ge=1, description="LLM tokens per tenant per UTC day for skill distillation."
    )

    # Observability (app/observability): GET /metrics for Prometheus, open unless turned off or bound to a
    # bearer token; log lines as text for a terminal, or one JSON object per line for a log collector.
    metrics_enabled: bool = Field(default=True, description="Serve GET /metrics.")
    metrics_token: SecretStr | None = Field(default=None, description="Bearer token GET /metrics requires.")
    log_format: Literal["text", "json"] = Field(default="text", description="Log lines: text or json.")

    def require_database_url(self) -> str:
        """The database URL, or a clear error telling how to get one."""
        if not self.database_url:
            raise RuntimeError(
                "DATABASE_URL is not set: run `skillfoundry up` (embedded PostgreSQL) or point "
                "DATABASE_URL at a PostgreSQL server with pgvector."
            )
        return sqlalchemy_url(self.database_url)

    def require_redis_url(self) -> str:
        """The Redis URL, or a clear error telling how to get one."""
        if not self.redis_url:
            raise RuntimeError(
                "REDIS_URL is not set: run `skillfoundry up` (embedded Redis) or point REDIS_URL at a server."
            )
        return self.redis_url


def sqlalchemy_url(url: str) -> str:
    """Any PostgreSQL URL, spelt for SQLAlchemy with the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def broker_url(redis_url: str) -> str:
    """A Redis URL spelt for Celery (kombu names unix sockets `redis+socket://`)."""
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url[len("unix://") :]
    return redis_url


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings()
