"""What every ``citywatch`` command shares: the settings (one-line errors, exit 2), the
store (named first; exit 2 or 3), the broker (checked within seconds; exit 3) and rule
files (every error as ``FILE:LINE:COL: message``, exit 1). Exit statuses:
:mod:`citywatch.ops.cli.exits`."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from citywatch.ops.cli.exits import UNAVAILABLE, USAGE, Failure, first_line

if TYPE_CHECKING:
    from citywatch.ops.settings import Settings
    from citywatch.ops.store.store import IncidentStore
    from citywatch.rules.model import RuleSet


def load_settings() -> Settings:
    """The process's settings from ``CITYWATCH_*`` (imported lazily: `--help` stays fast).
    A ``CITYWATCH_*`` variable that is no setting gets a warning naming the closest one."""
    from pydantic import ValidationError

    from citywatch.ops.settings import Settings, unknown_variables

    for name, closest in unknown_variables(os.environ):
        hint = f"; did you mean {closest}?" if closest else ""
        typer.echo(f"warning: {name} is not a citywatch setting (ignored){hint}", err=True)
    try:
        return Settings()
    except ValidationError as exc:
        for err in exc.errors():
            field = "CITYWATCH_" + "_".join(map(str, err["loc"])).upper()
            typer.echo(f"configuration error: {field}: {err['msg']}", err=True)
        raise typer.Exit(USAGE) from None


def open_store(settings: Settings, *, announce: bool = True) -> IncidentStore:
    """The incident store, brought to the newest schema; first says which one it is
    (``store: URL`` on stderr, password hidden). A URL that cannot be used exits 2, a
    server that does not answer (within seconds) exits 3, each with one line."""
    from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError

    from citywatch.ops.store.store import IncidentStore, shown_url

    url, shown = settings.database_url, shown_url(settings.database_url)
    default = url == f"sqlite:///{settings.default_store_path}"
    if default:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        legacy = Path("citywatch.db")
        if legacy.is_file() and legacy.resolve() != settings.default_store_path.resolve():
            typer.echo(f"note: ./citywatch.db is a store from an older citywatch; the "
                       f"default store is now {settings.default_store_path} (move the file "
                       "there, or set CITYWATCH_DATABASE_URL=sqlite:///citywatch.db)",
                       err=True)
    if announce:
        typer.echo(f"store: {shown}", err=True)
    try:
        store = IncidentStore(url)
    except ArgumentError as exc:
        raise Failure(USAGE, f"configuration error: CITYWATCH_DATABASE_URL={shown}: "
                             f"{first_line(exc)}") from None
    try:
        store.create_schema()
    except (OperationalError, InterfaceError) as exc:
        store.close()
        if store.engine.dialect.name == "sqlite":
            raise Failure(USAGE, f"configuration error: cannot open the SQLite store "
                                 f"{shown}: {first_line(exc)} (CITYWATCH_DATABASE_URL, "
                                 "CITYWATCH_DATA_DIR)") from None
        raise Failure(UNAVAILABLE, f"unavailable: the incident store at {shown} does not "
                                   f"answer: {first_line(exc)}") from None
    return store


def broker_answers_or_exit(bootstrap: str, timeout: float = 4.0) -> None:
    """Exit 3 (one line) unless a Kafka broker at ``bootstrap`` answers within seconds:
    a refused connection at once, a silent host in under 10 s."""
    from citywatch.streams.kafka_admin import broker_problem

    reasons = []
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "localhost", int(port)),
                                          timeout=timeout):
                break
        except (OSError, ValueError) as exc:
            reasons.append(f"{server.strip()}: {getattr(exc, 'strerror', None) or exc}")
    else:
        raise Failure(UNAVAILABLE, "unavailable: no Kafka broker answers at "
                                   f"{'; '.join(reasons)} (CITYWATCH_KAFKA_BOOTSTRAP)")
    problem = broker_problem(bootstrap, timeout_s=timeout)
    if problem is not None:
        raise Failure(UNAVAILABLE, f"unavailable: no Kafka broker answers at {bootstrap} "
                                   f"(CITYWATCH_KAFKA_BOOTSTRAP): {problem}")


def as_utc(moment: datetime | None) -> datetime | None:
    """A time given on the command line without a zone is UTC (the store's)."""
    return moment.replace(tzinfo=UTC) if moment and moment.tzinfo is None else moment


def ruleset_or_exit(path: Path) -> RuleSet:
    """The rule file, or every error as FILE:LINE:COL: message and exit 1."""
    from citywatch.rules.loader import RuleSetError, load_ruleset

    try:
        return load_ruleset(path)
    except RuleSetError as exc:
        for line in exc.errors:
            typer.echo(line, err=True)
        raise typer.Exit(1) from None


def topics_or_exit(settings: Settings) -> None:
    """Create citywatch's topics with the configured partition counts; a broker that
    cannot be reached, or topics laid out otherwise, is a configuration error (exit 2)."""
    from kafka.errors import KafkaError

    from citywatch.streams.kafka_admin import KafkaAdmin

    bootstrap = settings.kafka_bootstrap or ""
    broker_answers_or_exit(bootstrap)
    try:
        with KafkaAdmin(bootstrap, timeout_ms=10_000) as admin:
            admin.ensure_topics(settings.topics.all, settings.topic_partitions)
            problems = admin.layout_problems(settings.topics.all, settings.topic_partitions,
                                             settings.topics.any_partitions)
    except KafkaError as exc:
        raise Failure(UNAVAILABLE, f"unavailable: the Kafka broker at {bootstrap} "
                                   f"(CITYWATCH_KAFKA_BOOTSTRAP) does not answer: "
                                   f"{type(exc).__name__}") from None
    if problems:
        typer.echo(f"configuration error: {'; '.join(problems)}; delete those topics or "
                   "set CITYWATCH_TOPIC_PARTITIONS to match", err=True)
        raise typer.Exit(2)
