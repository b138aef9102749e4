"""``citywatch backtest``: what a candidate rule set would have done compared with a
baseline, on the same events, before it goes live (``citywatch.rules.backtest``).

Example:
    $ citywatch backtest --baseline rules.yaml --candidate rules-new.yaml \\
        --events ops/demo/feeds/epa_pm25_nyc.yaml --expect expected.yaml
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from citywatch.ops.cli.common import as_utc, load_settings, open_store, ruleset_or_exit
from citywatch.ops.cli.exits import DATA, USAGE

if TYPE_CHECKING:
    from citywatch.rules.model import RuleSet
    from citywatch.streams.envelope import Envelope

app = typer.Typer()


def _ruleset(reference: str) -> RuleSet:
    """A rule file, or a rule-set version stored in the incident store."""
    path = Path(reference)
    if path.exists() or reference.endswith((".yaml", ".yml")):
        return ruleset_or_exit(path)
    from citywatch.ops.store.rulesets import RuleSetBook

    settings = load_settings()
    store = open_store(settings)
    try:
        book = RuleSetBook(store)
        applied = book.version(reference)
        if applied is None:
            typer.echo(f"usage error: {reference!r} is neither a rule file nor a stored "
                       "rule-set version (see `citywatch rules history`)", err=True)
            raise typer.Exit(USAGE)
        return book.materialise(applied, settings.data_dir / "rulesets")
    finally:
        store.close()


def _events(sources: list[Path], since: datetime | None, until: datetime | None,
            ) -> tuple[list[Envelope], int]:
    """Envelopes from feed mappings (YAML) and event files (JSON Lines, full or
    hand-written), within [since, until]; and how many records were refused."""
    from citywatch.connectors.file import FeedConfigError, FileSource, load_feed
    from citywatch.streams.envelope import Envelope, EnvelopeError
    from citywatch.streams.event_lines import read_event_lines

    events: list[Envelope] = []
    refused = 0
    for source in sources:
        if str(source) in ("kafka", "kafka:raw", "kafka:events"):  # a deployment's topics
            from citywatch.ops.cli.common import broker_answers_or_exit
            from citywatch.ops.replay import events_from_kafka
            from citywatch.streams.kafka_admin import KafkaAdmin

            settings = load_settings()
            if settings.kafka_bootstrap is None:
                typer.echo("usage error: --events kafka needs CITYWATCH_KAFKA_BOOTSTRAP",
                           err=True)
                raise typer.Exit(USAGE)
            broker_answers_or_exit(settings.kafka_bootstrap)
            with KafkaAdmin(settings.kafka_bootstrap) as admin:
                found, unreadable = events_from_kafka(
                    admin, settings.topics, since=since, until=until,
                    source="events" if str(source) == "kafka:events" else "raw")
            events += found
            refused += unreadable
            continue
        if not source.is_file():
            typer.echo(f"usage error: --events: {source}: no such file", err=True)
            raise typer.Exit(USAGE)
        if source.suffix in (".yaml", ".yml"):
            try:
                items: Any = FileSource(load_feed(source)).run()
            except FeedConfigError as exc:
                typer.echo(str(exc), err=True)
                raise typer.Exit(USAGE) from None
        else:
            items = read_event_lines(source)
        for item in items:
            if isinstance(item, Envelope):
                if (since is None or item.time >= since) and (until is None
                                                              or item.time <= until):
                    events.append(item)
            elif isinstance(item, EnvelopeError):
                refused += 1
                typer.echo(f"refused {item}", err=True)
            elif item is not None:  # a connector's dead letter
                refused += 1
    return events, refused



@app.command()
def backtest(
        baseline: Annotated[str, typer.Option(
            help="The rule set in force: a rule file or a stored version id.")],
        candidate: Annotated[str, typer.Option(
            help="The rule set to compare: a rule file or a stored version id.")],
        events: Annotated[list[Path], typer.Option(
            help="Feed mapping (YAML), JSON Lines events (full or hand-written), or "
                 "'kafka' (or 'kafka:raw'): the deployment's raw.* topics, 'kafka:events': "
                 "its internal events topic (repeat).")],
        since: Annotated[datetime | None, typer.Option(
            "--from", help="Only events at or after this time (UTC unless given).")] = None,
        until: Annotated[datetime | None, typer.Option(
            "--to", help="Only events at or before this time (UTC unless given).")] = None,
        expect: Annotated[Path | None, typer.Option(
            help="YAML of expected alert counts of the candidate per rule (`rule: N` or "
                 "`rule: {min: A, max: B}`); exit 1 when one is off.")] = None,
        labels: Annotated[Path | None, typer.Option(
            help="Real incidents (CSV or JSON: time, lon/lat or zone, category): report "
                 "each version's precision, recall and median lead time.")] = None,
        label_before: Annotated[str, typer.Option(
            help="An alert up to this long before a label catches it (e.g. 24h).")]
        = "24h",
        label_after: Annotated[str, typer.Option(
            help="An alert up to this long after a label catches it (e.g. 1h).")] = "1h",
        label_distance_m: Annotated[float, typer.Option(
            help="An alert this close to a label's place catches it (great-circle metres)."
        )] = 50_000.0,
        noisy_per_day: Annotated[float, typer.Option(
            help="Flag rules raising more alerts than this per day.")] = 50.0,
        out: Annotated[Path | None, typer.Option(
            help="Also write the JSON report to this file.")] = None,
        html: Annotated[Path | None, typer.Option(
            "--html", help="Also write a self-contained HTML report (tables, alerts per "
                           "day and added/removed per rule as inline SVG plots).")] = None,
        as_json: Annotated[bool, typer.Option(
            "--json", help="Print the JSON report (events, versions, alerts, per_rule, "
                           "daily, diff, totals, noisy, expectations).")] = False) -> None:
    """Compare two rule-set versions on the same events: alerts per rule and per day, and
    which alerts the candidate adds, removes or keeps (matched by rule and source
    events, not by alert id), with samples and what changed in each rule. Exit 1 when an
    expectation fails."""
    import yaml

    from citywatch.rules.backtest import backtest as run_backtest
    from citywatch.rules.backtest import expectation_problems

    expected: dict[str, Any] = {}
    if expect is not None:
        try:
            loaded = yaml.safe_load(expect.read_text())
        except (OSError, yaml.YAMLError) as exc:
            typer.echo(f"usage error: --expect: {expect}: {exc}", err=True)
            raise typer.Exit(USAGE) from None
        if not isinstance(loaded, dict) or not isinstance(loaded.get("rules"), dict):
            typer.echo(f"usage error: --expect: {expect}: needs a 'rules' mapping of rule "
                       "id to a count or {min, max}", err=True)
            raise typer.Exit(USAGE)
        expected = loaded["rules"]
    from datetime import timedelta

    from pydantic import TypeAdapter, ValidationError

    from citywatch.rules.labels import LabelError, read_labels
    from citywatch.rules.model import Tolerance

    try:
        before, after = (timedelta(seconds=TypeAdapter(Tolerance).validate_python(value))
                         for value in (label_before, label_after))
    except ValidationError:
        typer.echo("usage error: --label-before/--label-after take durations such as 24h, "
                   "30m or 3600", err=True)
        raise typer.Exit(USAGE) from None
    try:
        known = read_labels(labels) if labels is not None else None
    except LabelError as exc:
        typer.echo(f"usage error: --labels: {exc}", err=True)
        raise typer.Exit(USAGE) from None
    old, new = _ruleset(baseline), _ruleset(candidate)
    found, refused = _events(events, as_utc(since), as_utc(until))
    report = run_backtest(old, new, found, noisy_per_day=noisy_per_day, labels=known,
                          before=before, after=after, within_m=label_distance_m)
    report["refused_records"] = refused
    problems = expectation_problems(report, expected) if expected else []
    report["expectations"] = {"checked": len(expected), "failed": problems}
    text = json.dumps(report, indent=2)
    if out is not None:
        out.write_text(text + "\n")
    if html is not None:
        from citywatch.ops.backtest_report import html_report

        html.write_text(html_report(report), encoding="utf-8")
    if as_json:
        typer.echo(text)
    else:
        _print(report)
        for written in (out, html):
            if written is not None:
                typer.echo(f"report: {written.resolve()}")
    for problem in problems:
        typer.echo(f"expectation failed: {problem}", err=True)
    if problems:
        raise typer.Exit(DATA)


def _print(report: dict[str, Any]) -> None:
    console = Console(width=160)
    span = report["event_time"]
    console.print(f"{report['events']:,} events from {span['from']} to {span['to']}; "
                  f"baseline {report['versions']['baseline']}: "
                  f"{report['alerts']['baseline']} alerts, candidate "
                  f"{report['versions']['candidate']}: {report['alerts']['candidate']}")
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("rule", "baseline", "candidate", "added", "removed", "unchanged",
                   "per day (cand.)", "what changed"):
        table.add_column(column, justify="left" if column in ("rule", "what changed")
                         else "right")
    for rule, d in report["diff"].items():
        old = report["per_rule"]["baseline"].get(rule, {})
        new = report["per_rule"]["candidate"].get(rule, {})
        table.add_row(rule, str(old.get("alerts", 0)), str(new.get("alerts", 0)),
                      str(d["counts"]["added"]), str(d["counts"]["removed"]),
                      str(d["counts"]["unchanged"]), str(new.get("per_day", 0)),
                      "; ".join(d["rule_changes"])[:80])
    console.print(table)
    totals = report["totals"]
    console.print(f"added {totals['added']}, removed {totals['removed']}, unchanged "
                  f"{totals['unchanged']}; noisy (> threshold per day): "
                  f"{', '.join(report['noisy']['candidate']) or 'none'}")
    if report["labels"]:
        for side in ("baseline", "candidate"):
            got = report["labels"][side]
            console.print(f"{side}: precision {got['precision']}, recall {got['recall']} "
                          f"({got['labels_caught']} of {got['labels']} labels), median lead "
                          f"{got['median_lead_seconds']} s")
