"""``citywatch status``: is the pipeline well? The store and the broker reachable, how far
behind each stage is, which workers are alive and on which rule-set version, the newest
alert, dead letters in the last hour, incidents by status.

Exit status 0 when the store and the broker answer, 3 when either does not.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from citywatch.ops.cli.common import load_settings
from citywatch.ops.cli.exits import OK, UNAVAILABLE, first_line
from citywatch.ops.pipeline_status import broker_status
from citywatch.ops.settings import Settings

app = typer.Typer()


def _store_part(settings: Settings) -> dict[str, Any]:
    from citywatch.ops.store.rulesets import RuleSetBook
    from citywatch.ops.store.store import IncidentStore, shown_url
    from citywatch.ops.store.summary import store_summary

    part: dict[str, Any] = {"url": shown_url(settings.database_url)}
    try:
        store = IncidentStore(settings.database_url)
        try:
            store.create_schema()
            summary = store_summary(store)
            book = RuleSetBook(store)
            live = book.current()
            alive_within = timedelta(seconds=max(10.0, 5 * settings.rules_poll_seconds))
            workers = [{"worker": w.worker, "rules_version": w.rules_version,
                        "problem": w.rules_problem, "seen_at": w.seen_at.isoformat()}
                       for w in book.workers(alive_within)]
        finally:
            store.close()
    except Exception as exc:  # unreachable or unusable: say so, carry on with the broker
        return {**part, "reachable": False, "error": first_line(exc)}
    last = summary["last_alert_at"]
    return {**part, "reachable": True, "rules_version": live.version if live else None,
            "workers": workers, "last_alert_at": last.isoformat() if last else None,
            "alerts_total": summary["alerts_total"],
            "incidents_by_status": summary["incidents_by_status"]}


@app.command()
def status(as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object: store (reachable, rules version, workers, newest "
                       "alert, incidents by status) and broker (reachable, lag per stage, "
                       "dead letters in the last hour).")] = False) -> None:
    """Is the pipeline well: store and broker reachable, lag per stage, workers alive
    with their rule version, the newest alert, dead letters in the last hour. Exit 0
    when the store and the broker answer, 3 when either does not."""
    settings = load_settings()
    report = {"checked_at": datetime.now(UTC).isoformat(), "store": _store_part(settings),
              "broker": broker_status(settings)}
    code = OK if report["store"]["reachable"] and report["broker"]["reachable"] \
        else UNAVAILABLE
    if as_json:
        typer.echo(json.dumps(report))
        raise typer.Exit(code)
    _print(report)
    raise typer.Exit(code)


def _print(report: dict[str, Any]) -> None:
    console = Console()
    store, broker = report["store"], report["broker"]
    console.print(f"store:  {store['url']}  "
                  + ("[green]reachable[/]" if store["reachable"]
                     else f"[red]unreachable[/]: {store['error']}"))
    console.print(f"broker: {broker['bootstrap'] or '-'}  "
                  + ("[green]reachable[/]" if broker["reachable"]
                     else f"[red]unreachable[/]: {broker['error']}"))
    if broker["reachable"]:
        lags = Table(title="lag (messages still to consume)")
        for stage in broker["lag"]:
            lags.add_column(stage, justify="right")
        lags.add_row(*map(str, broker["lag"].values()))
        console.print(lags)
        console.print(f"dead letters in the last hour: {broker['dead_letters_last_hour']}")
    if store["reachable"]:
        console.print(f"rule set in force: {store['rules_version'] or '(the configured file)'}")
        workers = Table(title=f"workers alive ({len(store['workers'])})")
        for column in ("worker", "rules version", "last heard", "problem"):
            workers.add_column(column)
        for w in store["workers"]:
            workers.add_row(w["worker"], w["rules_version"], w["seen_at"], w["problem"] or "")
        console.print(workers)
        console.print(f"newest alert: {store['last_alert_at'] or '-'}   alerts: "
                      f"{store['alerts_total']}   incidents: " + ", ".join(
                          f"{k} {v}" for k, v in store["incidents_by_status"].items()))
