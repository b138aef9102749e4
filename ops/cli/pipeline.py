"""``citywatch`` commands that run the pipeline: demo, worker, embedded broker, replay."""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from citywatch.ops.cli.common import (
    broker_answers_or_exit,
    load_settings,
    open_store,
    topics_or_exit,
)
from citywatch.ops.cli.exits import USAGE

app = typer.Typer()

@app.command()
def demo(as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
         = False) -> None:
    """Run the whole pipeline on bundled real data and print a summary."""
    started = time.monotonic()
    from citywatch.ops.demo import run_demo
    from citywatch.ops.progress import PipelineStalled

    settings = load_settings()
    open_store(settings, announce=not as_json).close()
    if settings.kafka_bootstrap is not None:
        broker_answers_or_exit(settings.kafka_bootstrap)
    try:
        with DemoProgress(enabled=not as_json) as progress:
            summary = run_demo(settings, started=started, on_progress=progress.update)
    except PipelineStalled as exc:
        typer.echo(f"demo failed: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(summary))
        return
    _print_summary(summary)


def _print_summary(summary: dict[str, Any]) -> None:
    """The demo's numbers, each reconciled with the next, and what to do next."""
    console = Console()
    table = Table(title="citywatch demo")
    for column in ("domain", "events", "alerts (store)"):
        table.add_column(column, justify="right" if column != "domain" else "left")
    for domain, events in summary["events_by_domain"].items():
        table.add_row(domain, str(events), str(summary["alerts_by_domain"][domain]))
    table.add_row("total", str(sum(summary["events_by_domain"].values())),
                  str(summary["alerts_total"]), style="bold")
    console.print(table)
    distinct = summary["alerts_emitted"] - summary["alerts_repeated"]
    console.print(
        f"alerts this run: {summary['alerts_emitted']} emitted = {distinct} distinct + "
        f"{summary['alerts_repeated']} repeats (the same source record read again, as "
        "the I-94 file's duplicated rows are; an alert's id comes from its rule and "
        "record, so a repeat is stored once)")
    console.print(
        f"stored this run: {summary['alerts_new']} new"
        + (f" ({distinct - summary['alerts_new']} of the {distinct} were already stored "
           "by an earlier run)" if distinct != summary["alerts_new"] else "")
        + f"; the store holds {summary['alerts_total']} alerts in "
        f"{summary['incidents']} incidents")
    console.print(f"dead letters: {summary['dead_letters']} record(s) refused, each with "
                  "the field and the reason (citywatch deadletter tail)")
    console.print(f"first alert after {summary['first_alert_seconds']} s; done in "
                  f"{summary['elapsed_seconds']} s; store: {summary['store_url']}")
    console.print("next: [bold]citywatch incidents list[/] (what responders see), "
                  "[bold]citywatch explain ID[/] (why an alert fired), "
                  "[bold]citywatch serve[/] then http://127.0.0.1:8080/docs (the API), "
                  "[bold]citywatch status[/]")


class DemoProgress:
    """What the demo does while it runs: events per domain, alerts, lag per stage. On a
    terminal a live table (on stderr, gone when done); otherwise a line at most every
    2 s on stderr."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.live: Any = None
        self._said = 0.0

    def __enter__(self) -> DemoProgress:
        if self.enabled and sys.stderr.isatty():
            from rich.live import Live

            self.live = Live(self._table({}), console=Console(stderr=True),
                             transient=True, refresh_per_second=4)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    @staticmethod
    def _table(state: dict[str, Any]) -> Table:
        table = Table(title=f"citywatch demo: {state.get('elapsed_seconds', 0)} s")
        for column in ("", "value"):
            table.add_column(column)
        for domain, events in sorted(state.get("events_by_domain", {}).items()):
            table.add_row(f"events {domain}", f"{events:,}")
        table.add_row("alerts emitted", f"{state.get('alerts_emitted', 0):,}")
        for stage, lag in state.get("lag", {}).items():
            table.add_row(f"lag {stage}", f"{lag:,}")
        return table

    def update(self, state: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.live is not None:
            self.live.update(self._table(state))
        elif time.monotonic() - self._said >= 2:
            self._said = time.monotonic()
            lags = " ".join(f"{k} {v}" for k, v in state.get("lag", {}).items())
            typer.echo(f"... {state.get('elapsed_seconds', 0)} s: "
                       f"{sum(state.get('events_by_domain', {}).values()):,} events, "
                       f"{state.get('alerts_emitted', 0)} alerts"
                       + (f", lag {lags}" if lags else ""), err=True)


LogLevel = Literal["critical", "error", "warn", "info", "debug"]


@app.command()
def worker(log_level: Annotated[LogLevel | None, typer.Option(
        help="critical, error, warn, info or debug (CITYWATCH_LOG_LEVEL; default warn).")]
        = None,
           metrics_port: Annotated[int | None, typer.Option(
               min=1, max=65535, help="Serve Prometheus metrics on this port at /metrics "
                                      "(CITYWATCH_METRICS_PORT; default: none).")] = None,
           ) -> None:
    """Run a stream worker (ingest, rules, store) against CITYWATCH_KAFKA_BOOTSTRAP.
    Once it has its partitions it prints one line: ``ready: consuming ..., rules version
    ..., store ...``.

    Exit status: 0 stopped (SIGTERM/SIGINT), 2 a configuration error (topics with another
    partition count, a rule set that cannot load), 3 the broker or the store does not
    answer, 75 the broker was lost (unreachable for CITYWATCH_BROKER_LOST_SECONDS, or
    restarted without its data): restart the worker.
    """
    from citywatch.streams.broker import port_taken

    settings = load_settings()
    overrides = {k: v for k, v in (("log_level", log_level), ("metrics_port", metrics_port))
                 if v is not None}
    settings = settings.model_copy(update=overrides)
    if settings.metrics_port is not None and port_taken(settings.metrics_port, "0.0.0.0"):
        typer.echo(f"configuration error: port {settings.metrics_port} is already in use; "
                   "choose another with --metrics-port (CITYWATCH_METRICS_PORT)", err=True)
        raise typer.Exit(USAGE)
    if settings.kafka_bootstrap is None:
        typer.echo("configuration error: CITYWATCH_KAFKA_BOOTSTRAP is required for a worker "
                   "(or run `citywatch broker` first)", err=True)
        raise typer.Exit(USAGE)
    from citywatch.ops.worker import build_pipeline
    from citywatch.rules.loader import RuleSetError

    topics_or_exit(settings)
    open_store(settings).close()
    try:
        pipeline = build_pipeline(settings)
    except RuleSetError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(USAGE) from None
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
