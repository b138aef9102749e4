"""``citywatch`` commands for connectors: run one, list them, read the dead letters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from citywatch.ops.cli.common import broker_answers_or_exit, load_settings

app = typer.Typer()
connectors_app = typer.Typer(help="Connectors: list built-ins and plug-ins.",
                             no_args_is_help=True)
deadletter_app = typer.Typer(help="Dead letters: rejected records with their reasons.",
                             no_args_is_help=True)
app.add_typer(connectors_app, name="connectors")
app.add_typer(deadletter_app, name="deadletter")

@app.command()
def connect(
    name: Annotated[str, typer.Argument(help="Connector name (see `connectors list`).")],
    config: Annotated[Path, typer.Option("--config", help="Connector config (YAML).")],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print envelopes (stdout) and rejects (stderr); no broker.")] = False,
    checkpoint: Annotated[Path | None, typer.Option(
        help="Checkpoint file (default: <data_dir>/checkpoints/<name>-<config>.json).")]
    = None,
    from_start: Annotated[bool, typer.Option(
        "--from-start", help="Ignore and replace an existing checkpoint.")] = False,
    metrics: Annotated[Path | None, typer.Option(
        help="Write the counts in Prometheus text format to this file.")] = None,
) -> None:
    """Run a connector: into Kafka (resuming from its checkpoint), or as a dry run.

    Exit status: 0 done (dry run: every record valid), 1 a dry run rejected records,
    2 a bad configuration or unknown connector.
    """
    import sys

    from citywatch.connectors.config import ConnectorConfigError, read_config
    from citywatch.connectors.registry import UnknownConnector, load_connector
    from citywatch.connectors.runner import dry_run as run_dry
    from citywatch.connectors.runner import produce

    try:
        source = load_connector(name).from_config(read_config(config), config.parent)
        # a user's own feed: say so when it runs newest first (the demo's are known)
        source.warn_when_backwards = True
    except UnknownConnector as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    except ConnectorConfigError as exc:
        for line in str(exc).splitlines():
            where = "" if line.startswith(str(config)) else f"{config}: "
            typer.echo(f"configuration error: {where}{line}", err=True)
        raise typer.Exit(2) from None
    if dry_run:
        raise typer.Exit(run_dry(source, sys.stdout, sys.stderr))
    settings = load_settings()
    if settings.kafka_bootstrap is None:
        typer.echo("configuration error: CITYWATCH_KAFKA_BOOTSTRAP is required "
                   "(or use --dry-run)", err=True)
        raise typer.Exit(2)
    broker_answers_or_exit(settings.kafka_bootstrap)
    path = checkpoint or settings.data_dir / "checkpoints" / f"{name}-{config.stem}.json"
    if from_start:
        path.unlink(missing_ok=True)
    from citywatch.connectors.kafka_sink import DeliveryError
    from citywatch.connectors.runner import BrokerUnavailable
    from citywatch.streams.broker_watch import EXIT_BROKER_LOST

    try:
        report = produce(source, settings.kafka_bootstrap, settings.topics,
                         checkpoint_path=path, partitions=settings.topic_partitions,
                         patience=settings.broker_lost_seconds)
    except (DeliveryError, BrokerUnavailable) as exc:  # the checkpoint holds only what
        # the broker took
        typer.echo(f"the broker did not take the records: {exc}; run again to resume "
                   f"from the checkpoint {path}", err=True)
        raise typer.Exit(EXIT_BROKER_LOST) from None
    if metrics is not None:
        metrics.write_text(report.prometheus(source.name))
    typer.echo(json.dumps({"connector": name, **report.as_dict()}))


@connectors_app.command("list")
def connectors_list() -> None:
    """Built-in and plug-in connectors, one line each."""
    from citywatch.connectors.registry import available

    for info in sorted(available().values(), key=lambda i: (not i.builtin, i.name)):
        origin = "built-in" if info.builtin else f"plug-in from {info.distribution}"
        try:
            summary = info.load().summary or "-"
        except Exception as exc:  # a broken plug-in must not hide the others
            summary = f"cannot load: {exc}"
        typer.echo(f"{info.name:<12} {origin:<28} {summary}")


@deadletter_app.command("tail")
def deadletter_tail(
    lines: Annotated[int, typer.Option("-n", help="How many of the newest to show.")] = 20,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new ones.")]
    = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object per dead letter (stage, source, locator, field, "
                       "error, raw).")] = False,
) -> None:
    """Show the newest dead letters (source, locator, field, reason)."""
    from citywatch.ops.deadletters import tail

    settings = load_settings()
    if settings.kafka_bootstrap is None:
        typer.echo("configuration error: CITYWATCH_KAFKA_BOOTSTRAP is required", err=True)
        raise typer.Exit(2)
    broker_answers_or_exit(settings.kafka_bootstrap)
    for letter in tail(settings.kafka_bootstrap, settings.topics.deadletter, lines, follow):
        if as_json:
            import msgspec

            typer.echo(msgspec.json.encode(letter).decode())
        else:
            where = f" field '{letter.field}':" if letter.field else ""
            typer.echo(f"{letter.time.isoformat()} [{letter.stage}] {letter.source} "
                       f"{letter.locator}:{where} {letter.error}")
