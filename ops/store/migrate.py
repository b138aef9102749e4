"""Schema migrations with Alembic, run in-process on the store's engine.

Example:
    >>> from sqlalchemy import create_engine
    >>> engine = create_engine("sqlite://")
    >>> migrate(engine)
    >>> current_revision(engine)
    '0016'
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

MIGRATIONS = Path(__file__).parent / "migrations"


def _config(connection: object) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


MIGRATION_LOCK = 0x63697479  # "city": the PostgreSQL advisory lock key of migrations


@contextlib.contextmanager
def _file_lock(engine: Engine) -> Iterator[None]:
    """An exclusive lock beside a SQLite database file (none for in-memory ones)."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    lock_path = Path(database).with_name(Path(database).name + ".migrate-lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade to ``revision``, safely when many processes start at once: migrations
    run under a PostgreSQL advisory lock (or a file lock beside a SQLite file), so one
    process migrates and the others find the schema current. A database made by the
    pre-Alembic skeleton (tables but no version) is stamped at 0001 first."""
    with _file_lock(engine), engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        tables = set(inspect(conn).get_table_names())
        if "alerts" in tables and "alembic_version" not in tables:
            command.stamp(_config(conn), "0001")
        command.upgrade(_config(conn), revision)
