"""Exit statuses every ``citywatch`` command uses, and how a mistake in the configuration
or the environment becomes one or two lines instead of a traceback.

======  =================================================================
status  meaning
======  =================================================================
0       done
1       data problems: records rejected, checks failed, not found
2       usage or configuration: a bad option, setting, URL or file
3       a dependency is unavailable: the store, the broker, a port
75      the broker was lost while running: restart (a supervisor's cue)
======  =================================================================

Example:
    >>> import errno
    >>> failure(OSError(errno.EADDRINUSE, "Address already in use"))
    (2, 'configuration error: Address already in use (choose another port)')
    >>> failure(FileNotFoundError(2, "No such file or directory", "feeds/air.yaml"))
    (2, 'configuration error: feeds/air.yaml: No such file or directory')
    >>> from kafka.errors import KafkaTimeoutError
    >>> failure(KafkaTimeoutError("Unable to bootstrap from k:9092"))[0]
    3
    >>> failure(ZeroDivisionError()) is None
    True
"""

from __future__ import annotations

import errno

OK = 0
DATA = 1
USAGE = 2
UNAVAILABLE = 3
BROKER_LOST = 75  # the same as citywatch.streams.broker_watch.EXIT_BROKER_LOST


class Failure(Exception):
    """A mistake already put in words: print ``message`` (no traceback), exit ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (its type when it has none)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def failure(exc: BaseException) -> tuple[int, str] | None:
    """Status and one line for an exception the environment caused, ``None`` for a bug.

    Commands check what they can where they know the setting's name; this is the net
    under them, for what reaches the top."""
    if isinstance(exc, Failure):
        return exc.status, exc.message
    from kafka.errors import KafkaError
    from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError

    if isinstance(exc, ArgumentError):
        return USAGE, f"configuration error: CITYWATCH_DATABASE_URL: {first_line(exc)}"
    if isinstance(exc, OperationalError | InterfaceError):
        return UNAVAILABLE, f"unavailable: the incident store: {first_line(exc)}"
    if isinstance(exc, KafkaError):
        return UNAVAILABLE, (f"unavailable: no Kafka broker answers "
                             f"(CITYWATCH_KAFKA_BOOTSTRAP): {first_line(exc)}")
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return USAGE, f"configuration error: {exc.strerror} (choose another port)"
    if isinstance(exc, OSError) and exc.filename is not None:
        return USAGE, f"configuration error: {exc.filename}: {exc.strerror}"
    return None
