"""Telling a store outage (try again later) from a real error.

Connection refused or lost, a locked SQLite file and a full connection pool are
outages: the worker retries, the API answers 503. Anything else is a bug or bad data.

Example:
    >>> from sqlalchemy.exc import OperationalError
    >>> exc = OperationalError("SELECT 1", {}, Exception("connection refused\\nmore"))
    >>> store_outage(exc)
    'connection refused'
    >>> store_outage(ValueError("no")) is None
    True
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

OUTAGE_ERRORS = (OperationalError, InterfaceError, SQLAlchemyTimeoutError, DBAPIError)


def store_outage(exc: BaseException) -> str | None:
    """The first line of what went wrong when ``exc`` is a store outage, else None."""
    outage = isinstance(exc, OperationalError | InterfaceError | SQLAlchemyTimeoutError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated)
    if not outage:
        return None
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
