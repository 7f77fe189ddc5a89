"""`skillfoundry backup` / `restore` as a user runs them: a populated database out, a fresh one in."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from app.backup import libpq_url, shown
from app.storage import migrate
from app.storage.models import Scope
from app.storage.session import make_engine, make_sessionmaker, session_scope
from tests.conftest import create_database, drop_database
from tests.factories import improve_skill, make_experience, make_key, make_skill, make_tenant, make_trajectory

pytestmark = pytest.mark.e2e


def cli(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """`skillfoundry ARGS` in a child process, as a user runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def env_for(database_url: str | None = None, home: Path | None = None) -> dict[str, str]:
    """The environment of a CLI run: this DATABASE_URL, or none (the embedded server in `home`)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SKILLFOUNDRY_DATABASE_URL")}
    if database_url:
        env["DATABASE_URL"] = database_url
    if home:
        env["SKILLFOUNDRY_HOME"] = str(home)
    return env


def snapshot(url: str) -> dict[str, list[str]]:
    """Every row of every table in `public`, as sorted text: what "the rows match" means."""
    with psycopg.connect(libpq_url(url)) as conn:
        tables = [
            str(row[0])
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            ).fetchall()
        ]
        return {
            table: sorted(
                str(row[0])
                for row in conn.execute(
                    sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(table))
                ).fetchall()
            )
            for table in tables
        }


def populate(url: str) -> None:
    """A tenant with keys, distilled trajectories (embeddings, clusters, experiences), skills, audit."""
    from app.config import get_settings
    from app.embedding import get_embedder
    from app.evolver import pipeline
    from app.ingestion import service as ingestion

    engine = make_engine(url, pool_size=1)
    factory = make_sessionmaker(engine)
    try:
        with session_scope(factory) as session:
            tenant = make_tenant(session)
            make_key(session, tenant, Scope.ADMIN, name="admin")
            make_key(session, tenant, Scope.AGENT, name="bot")
            accepted = ingestion.accept(
                session,
                tenant.id,
                [make_trajectory(3), make_trajectory(2, outcome={"success": False, "score": 0.0})],
                schedule=False,
            )
            make_experience(session, tenant)
            improve_skill(session, make_skill(session, tenant))
        with session_scope(factory) as session:
            pipeline.process_ingest(
                session, accepted.event_id, embedder=get_embedder(), settings=get_settings()
            )
    finally:
        engine.dispose()


@pytest.fixture
def databases(server_url: str, worker_id_suffix: str) -> Iterator[tuple[str, str]]:
    """A migrated, populated source database and an empty target, on the test server."""
    source_name, target_name = f"sf_bk_src_{worker_id_suffix}", f"sf_bk_dst_{worker_id_suffix}"
    source = create_database(server_url, source_name)
    migrate.upgrade(source)
    populate(source)
    target = create_database(server_url, target_name)
    yield source, target
    drop_database(server_url, source_name)
    drop_database(server_url, target_name)


class TestUrls:
    def test_libpq_spelling_and_hidden_password(self) -> None:
        assert libpq_url("postgresql+psycopg://u:p@h/db") == "postgresql://u:p@h/db"
        assert libpq_url("postgres://u@h/db") == "postgresql://u@h/db"
        assert (
            shown("postgresql://u:secret@h:5/db?sslmode=require")
            == "postgresql://u:***@h:5/db?sslmode=require"
        )
        assert shown("postgresql://postgres:@/sf?host=/tmp/x") == "postgresql://postgres:@/sf?host=/tmp/x"


class TestBackupRestore:
    def test_round_trip_into_a_fresh_database(self, databases: tuple[str, str], tmp_path: Path) -> None:
        """Every row of every table comes back; the restored database is current and its triggers work."""
        source, target = databases
        dump = tmp_path / "sf.dump"
        out = cli("backup", str(dump), env=env_for(source)).stdout
        assert "Backing up database sf_bk_src_" in out and "Wrote" in out and "trajectory 2" in out, out
        assert dump.stat().st_size > 0 and not dump.with_name("sf.dump.partial").exists()

        out = cli("restore", str(dump), env=env_for(target)).stdout
        assert "Restoring" in out and "trajectory 2" in out, out
        before, after = snapshot(source), snapshot(target)
        assert before.keys() == after.keys()
        for table in before:
            assert before[table] == after[table], table
        assert len(after["trajectory_step"]) == 5 and after["experience"] and after["skill_version"]

        with psycopg.connect(libpq_url(target)) as conn:
            # Still append-only: the audit trigger came back with the data.
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute("UPDATE audit_log SET action = 'x'")
            conn.rollback()
            # And the vector index answers a nearest-neighbour query.
            nearest = conn.execute(
                "SELECT count(*) FROM (SELECT id FROM experience ORDER BY embedding <=> "
                "(SELECT embedding FROM experience LIMIT 1) LIMIT 1) t"
            ).fetchone()
            assert nearest == (1,)
        # Migrations see the restored database as current: upgrade is a no-op, not an error.
        migrate.upgrade(target)

    def test_refuses_a_database_that_is_not_empty_unless_forced(
        self, databases: tuple[str, str], tmp_path: Path
    ) -> None:
        source, target = databases
        dump = tmp_path / "sf.dump"
        cli("backup", str(dump), env=env_for(source))
        migrate.upgrade(target)  # a started service's schema: not empty
        refused = cli("restore", str(dump), env=env_for(target), check=False)
        assert refused.returncode == 1
        assert "Restore refused: database sf_bk_dst_" in refused.stderr and "--force" in refused.stderr
        assert snapshot(target)["trajectory"] == []

        forced = cli("restore", str(dump), "--force", env=env_for(target))
        assert "emptying database" in forced.stdout
        assert snapshot(target) == snapshot(source)

    def test_not_a_dump_and_a_failed_backup(self, tmp_path: Path, server_url: str) -> None:
        junk = tmp_path / "junk.dump"
        junk.write_text("not a dump")
        done = cli("restore", str(junk), env=env_for("postgresql://nobody@127.0.0.1:1/none"), check=False)
        assert done.returncode == 1 and "is not a pg_dump custom-format file" in done.stderr

        # A backup that fails leaves no file behind (neither the dump nor its partial).
        missing = server_url.rpartition("/")[0] + "/sf_no_such_database"
        dump = tmp_path / "x.dump"
        failed = cli("backup", str(dump), env=env_for(missing), check=False)
        assert failed.returncode == 1 and "Backup failed: cannot connect to" in failed.stderr
        assert not dump.exists() and not dump.with_name("x.dump.partial").exists()

        # A home without a database is a mistake (a wrong SKILLFOUNDRY_HOME), not an empty backup.
        nowhere = cli("backup", str(dump), env=env_for(home=tmp_path / "nowhere"), check=False)
        assert nowhere.returncode == 1 and "no embedded database in" in nowhere.stderr
        assert not (tmp_path / "nowhere").exists() and not dump.exists()

    def test_an_empty_database_is_not_backed_up(self, databases: tuple[str, str], tmp_path: Path) -> None:
        _, empty = databases
        done = cli("backup", str(tmp_path / "x.dump"), env=env_for(empty), check=False)
        assert done.returncode == 1 and "Backup refused: database" in done.stderr
        assert "is empty" in done.stderr


class TestEmbedded:
    def test_restore_into_a_new_home_then_back_up_again(
        self, databases: tuple[str, str], tmp_path: Path
    ) -> None:
        """Without DATABASE_URL both commands use (and then stop) the embedded server of SKILLFOUNDRY_HOME."""
        source, _ = databases
        dump = tmp_path / "sf.dump"
        cli("backup", str(dump), env=env_for(source))
        home = Path(tempfile.mkdtemp(prefix="sfbk-"))  # short: the server's unix socket lives under it
        try:
            out = cli("restore", str(dump), env=env_for(home=home)).stdout
            assert "Embedded PostgreSQL in" in out and "skillfoundry up" in out, out
            # The server was stopped after the restore: nothing runs on the home any more.
            assert not (home / "pgdata" / "postmaster.pid").exists()
            again = tmp_path / "again.dump"
            cli("backup", str(again), env=env_for(home=home))
            second = home.parent / f"{home.name}-2"
            cli("restore", str(again), env=env_for(home=second))
            try:
                from app.embedded import EmbeddedPostgres

                postgres = EmbeddedPostgres(second / "pgdata")
                url = postgres.start()
                try:
                    assert snapshot(url) == snapshot(source)
                finally:
                    postgres.stop()
            finally:
                subprocess.run(["rm", "-rf", str(second)], check=False)
        finally:
            subprocess.run(["rm", "-rf", str(home)], check=False)
