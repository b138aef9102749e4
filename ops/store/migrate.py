"""Schema migrations with Alembic, run in-process on the store's engine.

Example:
    >>> from sqlalchemy import create_engine
    >>> engine = create_engine("sqlite://")
    >>> migrate(engine)
    >>> current_revision(engine)
    '0006'
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

MIGRATIONS = Path(__file__).parent / "migrations"


def _config(connection: object) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade to ``revision``. A database made by the pre-Alembic skeleton (tables but no
    version) is stamped at 0001 first."""
    with engine.begin() as conn:
        tables = set(inspect(conn).get_table_names())
        if "alerts" in tables and "alembic_version" not in tables:
            command.stamp(_config(conn), "0001")
        command.upgrade(_config(conn), revision)
