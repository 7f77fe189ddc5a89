"""Settings from the environment, read when asked for, never at import time."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
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

    worker_concurrency: int = 1
    rate_limit_per_minute: int = Field(default=6000, ge=0, description="Requests per key per minute; 0: off.")
    db_pool_size: int = 10

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
