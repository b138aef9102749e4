"""``citywatch`` commands that run the pipeline: demo, worker, embedded broker, replay."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from citywatch.ops.cli.common import load_settings, topics_or_exit

app = typer.Typer()

@app.command()
def demo(as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
         = False) -> None:
    """Run the whole pipeline on bundled real data and print a summary."""
    started = time.monotonic()
    from citywatch.ops.demo import run_demo
    from citywatch.ops.progress import PipelineStalled

    settings = load_settings()
    try:
        summary = run_demo(settings, started=started)
    except PipelineStalled as exc:
        typer.echo(f"demo failed: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(summary))
        return
    console = Console()
    table = Table(title="citywatch demo")
    for column in ("domain", "events", "alerts (store)"):
        table.add_column(column, justify="right" if column != "domain" else "left")
    for domain, events in summary["events_by_domain"].items():
        table.add_row(domain, str(events), str(summary["alerts_by_domain"][domain]))
    table.add_row("total", str(sum(summary["events_by_domain"].values())),
                  str(summary["alerts_total"]), style="bold")
    console.print(table)
    console.print(f"alerts emitted {summary['alerts_emitted']} = "
                  f"{summary['alerts_emitted'] - summary['alerts_repeated']} distinct + "
                  f"{summary['alerts_repeated']} repeated (same source record again); "
                  f"newly stored {summary['alerts_new']}; the store holds "
                  f"{summary['alerts_total']}")
    console.print(f"incidents: {summary['incidents']}   dead letters: "
                  f"{summary['dead_letters']}")
    console.print(f"first alert after {summary['first_alert_seconds']} s; done in "
                  f"{summary['elapsed_seconds']} s; store: {summary['store_url']}")


@app.command()
def worker() -> None:
    """Run a stream worker (ingest, rules, store) against CITYWATCH_KAFKA_BOOTSTRAP.

    Exit status: 0 stopped (SIGTERM/SIGINT), 2 a configuration error (no broker, topics
    with another partition count, a rule set that cannot load), 75 the broker was lost
    (unreachable for CITYWATCH_BROKER_LOST_SECONDS, or restarted without its data):
    restart the worker.
    """
    settings = load_settings()
    if settings.kafka_bootstrap is None:
        typer.echo("configuration error: CITYWATCH_KAFKA_BOOTSTRAP is required for a worker "
                   "(or run `citywatch broker` first)", err=True)
        raise typer.Exit(2)
    from citywatch.ops.worker import build_pipeline
    from citywatch.rules.loader import RuleSetError

    topics_or_exit(settings)
    try:
        pipeline = build_pipeline(settings)
    except RuleSetError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    pipeline.run()


@app.command()
def broker(port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1.")] = 9092) -> None:
    """Run the embedded in-memory broker in the foreground (data is lost on exit)."""
    from citywatch.streams.broker import BrokerStartError, EmbeddedBroker

    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # SIGTERM stops the broker child too
    try:
        with EmbeddedBroker(port=port) as running:
            typer.echo(f"embedded broker at {running.bootstrap} (memory only); Ctrl-C "
                       "stops it")
            while running.running:
                time.sleep(0.5)
    except BrokerStartError as exc:
        typer.echo(f"cannot start the embedded broker: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass


@app.command()
def replay(feeds: Annotated[list[Path], typer.Argument(help="Feed mapping YAML files.")]) -> None:
    """Replay feed files into Kafka (CITYWATCH_KAFKA_BOOTSTRAP) as fast as possible."""
    settings = load_settings()
    if settings.kafka_bootstrap is None:
        typer.echo("configuration error: CITYWATCH_KAFKA_BOOTSTRAP is required", err=True)
        raise typer.Exit(2)
    from citywatch.connectors.file import FeedConfigError, FileSource, load_feed
    from citywatch.connectors.kafka_sink import PumpReport
    from citywatch.connectors.runner import produce

    topics_or_exit(settings)
    report = PumpReport()
    try:
        sources = [FileSource(load_feed(f)) for f in feeds]
    except FeedConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    for source in sources:
        produce(source, settings.kafka_bootstrap, settings.topics, report=report,
                partitions=settings.topic_partitions)
    typer.echo(json.dumps(report.as_dict()))
