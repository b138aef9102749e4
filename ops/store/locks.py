"""Database locks that order writers.

Example:
    >>> from sqlalchemy import create_engine
    >>> with create_engine("sqlite://").begin() as conn:
    ...     lock_change_order(conn)      # a no-op on SQLite: one writer at a time
"""

from __future__ import annotations

from sqlalchemy import Connection, text

# an arbitrary constant: the one PostgreSQL advisory lock key for incident changes
_CHANGE_ORDER_LOCK = 0x63770001


def lock_change_order(conn: Connection) -> None:
    """Hold the incident change-order lock until the caller's transaction ends, so change
    ids (audit rows of incidents) become visible in increasing order. PostgreSQL takes a
    transaction advisory lock; on SQLite one writer at a time holds the database from its
    first write to its commit, which gives the same order."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHANGE_ORDER_LOCK})
