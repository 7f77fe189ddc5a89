"""The schema is owned by Alembic: up, down, up again, and it matches the models."""

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from app.storage import migrate
from app.storage.models import Base
from app.storage.session import make_engine
from tests.conftest import create_database, drop_database

TABLES = {
    "tenant", "api_key", "trajectory", "trajectory_step", "event", "audit_log", "idempotency_record",
    "state_cluster", "situation_embedding", "experience", "experience_evidence",
    "task_cluster", "skill", "skill_version", "skill_version_evidence", "skill_link", "skill_event",
    "retrieval", "retrieval_item", "retrieval_session",
}  # fmt: skip


@pytest.fixture
def scratch_url(server_url: str, worker_id_suffix: str) -> Iterator[str]:
    """An empty database for this test only."""
    name = f"sf_migrations_{worker_id_suffix}"
    yield create_database(server_url, name)
    drop_database(server_url, name)


class TestMigrations:
    def test_up_down_up(self, scratch_url: str) -> None:
        """Upgrade makes the tables and the vector extension; downgrade removes them; upgrade again."""
        engine = make_engine(scratch_url, pool_size=1)
        try:
            migrate.upgrade(scratch_url)
            assert TABLES <= set(inspect(engine).get_table_names())
            with engine.connect() as conn:
                assert conn.scalar(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'"))
                dims = conn.scalar(
                    text("SELECT atttypmod FROM pg_attribute WHERE attrelid = 'trajectory_step'::regclass "
                         "AND attname = 'embedding'")
                )  # fmt: skip
                assert dims == 384
            migrate.downgrade(scratch_url, "base")
            engine.dispose()
            assert not TABLES & set(inspect(engine).get_table_names())
            migrate.upgrade(scratch_url)
            engine.dispose()
            assert TABLES <= set(inspect(engine).get_table_names())
        finally:
            engine.dispose()

    def test_models_match_migrations(self, database_url: str) -> None:
        """Autogenerate finds nothing to add: the models and the migrations agree."""
        engine = make_engine(database_url, pool_size=1)
        try:
            with engine.connect() as conn:
                diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            assert diff == []
        finally:
            engine.dispose()
