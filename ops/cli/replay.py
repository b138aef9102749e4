"""``citywatch replay``: history into Kafka, from feed files or from the deployment's
own topics (``raw.*`` or the internal ``events``), bounded by event time, at N× real
time, into production or into a sandbox (``citywatch.ops.replay``) whose results
production never sees."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from citywatch.ops.cli.common import as_utc, load_settings, open_store, topics_or_exit
from citywatch.ops.cli.exits import USAGE

app = typer.Typer()



def _speed(value: str) -> float | None:
    if value == "max":
        return None
    try:
        speed = float(value)
    except ValueError:
        speed = 0.0
    if speed <= 0:
        typer.echo(f"usage error: --speed: {value!r} is not 'max' or a number above 0",
                   err=True)
        raise typer.Exit(USAGE)
    return speed


def _say(state: dict[str, Any]) -> None:
    typer.echo(f"... {state['seconds']} s: {state['events']:,} of {state['total']:,} "
               f"events, event time {state['event_time']}, {state['rate']:,}/s, "
               f"ETA {state['eta_seconds']} s", err=True)


@contextmanager
def _progress(total: int, quiet: bool) -> Iterator[Callable[[dict[str, Any]], None] | None]:
    """A progress bar on a terminal (events, event-time position, rate, ETA), a line
    twice a second otherwise (logs), nothing when ``quiet``."""
    if quiet:
        yield None
        return
    if not sys.stderr.isatty():
        yield _say
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("event time {task.fields[event_time]}"),
                  TextColumn("{task.fields[rate]}/s"),
                  TextColumn("ETA {task.fields[eta]}"),
                  console=Console(stderr=True)) as bar:
        task = bar.add_task("replay", total=total, event_time="-", rate=0, eta="-")

        def update(state: dict[str, Any]) -> None:
            bar.update(task, completed=state["events"], event_time=state["event_time"],
                       rate=f"{state['rate']:,}", eta=f"{state['eta_seconds']:.0f} s")

        yield update
        bar.update(task, completed=total)


@app.command()
def replay(
        feeds: Annotated[list[Path] | None, typer.Argument(
            help="Feed mapping YAML files to replay.")] = None,
        from_kafka: Annotated[bool, typer.Option(
            "--from-kafka", help="Replay what the deployment's Kafka topics hold (see "
                                 "--kafka-topics).")] = False,
        kafka_topics: Annotated[str, typer.Option(
            help="With --from-kafka: 'raw' (the raw.* topics connectors wrote) or "
                 "'events' (the internal topic of validated events).")] = "raw",
        since: Annotated[datetime | None, typer.Option(
            "--from", help="Only events at or after this event time (UTC unless given).")]
        = None,
        until: Annotated[datetime | None, typer.Option(
            "--to", help="Only events at or before this event time (UTC unless given).")]
        = None,
        speed: Annotated[str, typer.Option(
            help="N× real time by event time (3600: an hour a second), or 'max'.")]
        = "max",
        sandbox: Annotated[str | None, typer.Option(
            help="Replay into sandbox NAME (own topics, consumer group and SQLite store; "
                 "a worker runs it until drained) instead of production.")] = None,
        as_json: Annotated[bool, typer.Option(
            "--json", help="One JSON object: events by domain, dead letters, seconds, and "
                           "for a sandbox its store and alerts.")] = False) -> None:
    """Replay history into Kafka (CITYWATCH_KAFKA_BOOTSTRAP). Into production by default;
    with --sandbox, nothing production reads is touched, and the sandbox's own worker
    evaluates the replay. Ctrl-C stops cleanly: what was sent is acknowledged."""
    from citywatch.connectors.file import FeedConfigError, FileSource, load_feed
    from citywatch.connectors.kafka_sink import KafkaSink, PumpReport
    from citywatch.ops.replay import (
        KAFKA_SOURCES,
        events_from_kafka,
        paced_produce,
        sandbox_settings,
    )
    from citywatch.streams.envelope import Envelope
    from citywatch.streams.kafka_admin import KafkaAdmin

    pace = _speed(speed)
    if kafka_topics not in KAFKA_SOURCES:
        typer.echo(f"usage error: --kafka-topics: {kafka_topics!r} is not one of "
                   f"{', '.join(KAFKA_SOURCES)}", err=True)
        raise typer.Exit(USAGE)
    if not feeds and not from_kafka:
        typer.echo("usage error: give feed files, or --from-kafka", err=True)
        raise typer.Exit(USAGE)
    if from_kafka and not sandbox:  # production's own topics into themselves: doubled
        typer.echo("usage error: --from-kafka replays into a sandbox: give --sandbox NAME",
                   err=True)
        raise typer.Exit(USAGE)
    settings = load_settings()
    if settings.kafka_bootstrap is None:
        typer.echo("configuration error: CITYWATCH_KAFKA_BOOTSTRAP is required", err=True)
        raise typer.Exit(USAGE)
    topics_or_exit(settings)
    try:
        target = sandbox_settings(settings, sandbox) if sandbox else settings
    except ValueError as exc:
        typer.echo(f"usage error: --sandbox: {exc}", err=True)
        raise typer.Exit(USAGE) from None
    start, end = as_utc(since), as_utc(until)
    report = PumpReport()
    letters: list[Any] = []
    events: list[Envelope] = []
    try:
        for feed in feeds or []:
            for item in FileSource(load_feed(feed)).run():
                if isinstance(item, Envelope):
                    if (start is None or item.time >= start) and (end is None
                                                                  or item.time <= end):
                        events.append(item)
                elif item is not None:
                    letters.append(item)
    except FeedConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(USAGE) from None
    if from_kafka:
        with KafkaAdmin(settings.kafka_bootstrap) as admin:
            found, _ = events_from_kafka(admin, settings.topics, since=start, until=end,
                                         source=kafka_topics)
        events += found
    events.sort(key=lambda e: (e.time, e.id))
    if target is not settings:
        topics_or_exit(target)
    summary: dict[str, Any] = {"target": target.topic_prefix}
    worker = None
    try:
        if sandbox:
            from citywatch.ops.worker_process import WorkerProcess

            open_store(target, announce=not as_json).close()
            worker = WorkerProcess(target, settings.kafka_bootstrap,
                                   target.data_dir / "worker.log").start()
        with KafkaSink(settings.kafka_bootstrap, target.topics) as sink:
            for letter in letters:
                sink.send(letter)
                report.dead_letters += 1
            with _progress(len(events), quiet=as_json) as progress:
                summary["replay_seconds"] = round(paced_produce(
                    events, sink, speed=pace, report=report, progress=progress), 3)
        if worker is not None:
            from citywatch.ops.progress import wait_until_drained

            with KafkaAdmin(settings.kafka_bootstrap) as admin:
                wait_until_drained(admin, target, alive=worker.alive)
    except KeyboardInterrupt:
        typer.echo(f"interrupted after {report.events} events; everything sent was "
                   "acknowledged", err=True)
    finally:
        if worker is not None:
            worker.stop()
    summary.update(report.as_dict())
    if sandbox:
        store = open_store(target, announce=False)
        summary.update({"sandbox": sandbox, "store": target.database_url,
                        "alerts": store.counts()["alerts_total"]})
        store.close()
    if as_json:
        typer.echo(json.dumps(summary))
        return
    typer.echo(f"replayed {report.events:,} events ({report.dead_letters} dead letters) "
               f"into {target.topic_prefix}* in {summary.get('replay_seconds', '-')} s"
               + (f"; sandbox {sandbox}: {summary['alerts']} alerts in {summary['store']}"
                  if sandbox else ""))
