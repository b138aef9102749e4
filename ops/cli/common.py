"""What every ``citywatch`` command shares: the settings (one-line errors, exit 2) and
rule files (every error as ``FILE:LINE:COL: message``, exit 1)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from citywatch.ops.settings import Settings
    from citywatch.rules.model import RuleSet


def load_settings() -> Settings:
    """The process's settings from ``CITYWATCH_*`` (imported lazily: `--help` stays fast)."""
    from pydantic import ValidationError

    from citywatch.ops.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        for err in exc.errors():
            field = "CITYWATCH_" + "_".join(map(str, err["loc"])).upper()
            typer.echo(f"configuration error: {field}: {err['msg']}", err=True)
        raise typer.Exit(2) from None


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
    try:
        with KafkaAdmin(bootstrap) as admin:
            admin.ensure_topics(settings.topics.all, settings.topic_partitions)
            problems = admin.layout_problems(settings.topics.all, settings.topic_partitions,
                                             settings.topics.any_partitions)
    except KafkaError as exc:
        typer.echo(f"configuration error: no Kafka broker answers at {bootstrap} "
                   f"(CITYWATCH_KAFKA_BOOTSTRAP): {type(exc).__name__}", err=True)
        raise typer.Exit(2) from None
    if problems:
        typer.echo(f"configuration error: {'; '.join(problems)}; delete those topics or "
                   "set CITYWATCH_TOPIC_PARTITIONS to match", err=True)
        raise typer.Exit(2)
