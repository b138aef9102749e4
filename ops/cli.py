"""The ``citywatch`` command line.

Example:
    $ citywatch demo --json
    $ CITYWATCH_KAFKA_BOOTSTRAP=kafka:9092 citywatch worker
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from citywatch.forecasts.grid import ForecastBook
    from citywatch.rules.model import RuleSet

app = typer.Typer(help="citywatch: smart-city event-stream governance engine.",
                  no_args_is_help=True, add_completion=False)


def _group(name: str, help_text: str) -> typer.Typer:
    """A ``citywatch NAME ...`` command group."""
    group = typer.Typer(help=help_text, no_args_is_help=True)
    app.add_typer(group, name=name)
    return group


rules_app = _group("rules", "Rule files: validate, test, apply, schema.")
tokens_app = _group("tokens", "API tokens.")
incidents_app = _group("incidents", "Incidents: list, acknowledge, resolve, reopen.")
connectors_app = _group("connectors", "Connectors: list built-ins and plug-ins.")
deadletter_app = _group("deadletter", "Dead letters: rejected records with their reasons.")
forecasts_app = _group("forecasts", "Forecasts: backtest, train and list models.")


def _settings():  # noqa: ANN202 - imported lazily to keep `citywatch --help` fast
    from pydantic import ValidationError

    from citywatch.ops.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        for err in exc.errors():
            field = "CITYWATCH_" + "_".join(map(str, err["loc"])).upper()
            typer.echo(f"configuration error: {field}: {err['msg']}", err=True)
        raise typer.Exit(2) from None


@app.command()
def demo(as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
         = False) -> None:
    """Run the whole pipeline on bundled real data and print a summary."""
    started = time.monotonic()
    from citywatch.ops.demo import run_demo
    from citywatch.ops.progress import PipelineStalled

    settings = _settings()
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
    console.print(f"incidents: {summary['incidents']}   dead letters: "
                  f"{summary['dead_letters']}   alerts this run: {summary['alerts_this_run']}")
    console.print(f"first alert after {summary['first_alert_seconds']} s; done in "
                  f"{summary['elapsed_seconds']} s; store: {summary['store_url']}")


@app.command()
def worker() -> None:
    """Run a stream worker (ingest, rules, store) against CITYWATCH_KAFKA_BOOTSTRAP."""
    settings = _settings()
    if settings.kafka_bootstrap is None:
        typer.echo("configuration error: CITYWATCH_KAFKA_BOOTSTRAP is required for a worker "
                   "(or run `citywatch broker` first)", err=True)
        raise typer.Exit(2)
    from citywatch.ops.kafka_admin import ensure_topics
    from citywatch.rules.loader import RuleSetError
    from citywatch.streams.worker import Pipeline

    ensure_topics(settings.kafka_bootstrap, settings.topics.all, settings.topic_partitions)
    try:
        pipeline = Pipeline(settings)
    except RuleSetError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    pipeline.run()


@app.command()
def broker(port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1.")] = 9092) -> None:
    """Run the embedded in-memory broker in the foreground (data is lost on exit)."""
    from citywatch.ops.broker import EmbeddedBroker

    with EmbeddedBroker(port=port) as running:
        typer.echo(f"embedded broker at {running.bootstrap} (memory only); Ctrl-C stops it")
        try:
            while running.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass


@app.command()
def replay(feeds: Annotated[list[Path], typer.Argument(help="Feed mapping YAML files.")]) -> None:
    """Replay feed files into Kafka (CITYWATCH_KAFKA_BOOTSTRAP) as fast as possible."""
    settings = _settings()
    if settings.kafka_bootstrap is None:
        typer.echo("configuration error: CITYWATCH_KAFKA_BOOTSTRAP is required", err=True)
        raise typer.Exit(2)
    from citywatch.connectors.file import FeedConfigError, FileSource, load_feed
    from citywatch.connectors.kafka_sink import PumpReport
    from citywatch.connectors.runner import produce
    from citywatch.ops.kafka_admin import ensure_topics

    ensure_topics(settings.kafka_bootstrap, settings.topics.all, settings.topic_partitions)
    report = PumpReport()
    try:
        sources = [FileSource(load_feed(f)) for f in feeds]
    except FeedConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    for source in sources:
        produce(source, settings.kafka_bootstrap, settings.topics, report=report)
    typer.echo(json.dumps(report.as_dict()))


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
    settings = _settings()
    if settings.kafka_bootstrap is None:
        typer.echo("configuration error: CITYWATCH_KAFKA_BOOTSTRAP is required "
                   "(or use --dry-run)", err=True)
        raise typer.Exit(2)
    path = checkpoint or settings.data_dir / "checkpoints" / f"{name}-{config.stem}.json"
    if from_start:
        path.unlink(missing_ok=True)
    report = produce(source, settings.kafka_bootstrap, settings.topics,
                     checkpoint_path=path)
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
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show the newest dead letters (source, locator, field, reason)."""
    from citywatch.ops.deadletters import tail

    settings = _settings()
    if settings.kafka_bootstrap is None:
        typer.echo("configuration error: CITYWATCH_KAFKA_BOOTSTRAP is required", err=True)
        raise typer.Exit(2)
    for letter in tail(settings.kafka_bootstrap, settings.topics.deadletter, lines, follow):
        if as_json:
            import msgspec

            typer.echo(msgspec.json.encode(letter).decode())
        else:
            where = f" field '{letter.field}':" if letter.field else ""
            typer.echo(f"{letter.time.isoformat()} [{letter.stage}] {letter.source} "
                       f"{letter.locator}:{where} {letter.error}")


@rules_app.command("validate")
def rules_validate(path: Path) -> None:
    """Validate a rule file: prints FILE:LINE:COL: message per error; exit 1 if any."""
    ruleset = _ruleset_or_exit(path)
    for rule in ruleset.rules:
        typer.echo(f"{rule.id}  version {rule.version}")


@app.command()
def serve() -> None:
    """Serve the responder API (CITYWATCH_API_HOST:CITYWATCH_API_PORT)."""
    import uvicorn

    from citywatch.ops.api.app import create_api

    settings = _settings()
    uvicorn.run(create_api(settings), host=settings.api_host, port=settings.api_port,
                log_level="info")


@tokens_app.command("add")
def tokens_add(name: str, role: Annotated[str, typer.Option(
        help="viewer, operator, analyst or admin")] = "viewer") -> None:
    """Issue an API token; it is printed once and only its hash is stored."""
    from citywatch.ops.store.store import IncidentStore
    from citywatch.ops.store.tokens import ROLES, TokenBook

    if role not in ROLES:
        typer.echo(f"--role must be one of {', '.join(ROLES)}", err=True)
        raise typer.Exit(2)
    store = IncidentStore(_settings().database_url)
    store.create_schema()
    typer.echo(TokenBook(store).issue(name, role))  # type: ignore[arg-type]


@incidents_app.command("list")
def incidents_list(
        status: Annotated[list[str] | None, typer.Option(help="new, acknowledged, ...")] = None,
        domain: Annotated[list[str] | None, typer.Option()] = None,
        limit: int = 20, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List incidents, most recently seen first."""
    from pydantic import ValidationError

    from citywatch.ops.api.models import Incident
    from citywatch.ops.store.queries import IncidentFilter, list_incidents
    from citywatch.ops.store.store import IncidentStore

    store = IncidentStore(_settings().database_url)
    store.create_schema()
    try:
        query = IncidentFilter(status=status, domain=domain, limit=limit)
    except ValidationError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    rows, total = list_incidents(store, query)
    items = [Incident.model_validate(r) for r in rows]
    if as_json:
        typer.echo(json.dumps({"total": total,
                               "items": [i.model_dump(mode="json") for i in items]}))
        return
    table = Table(title=f"incidents ({len(items)} of {total})")
    for column in ("id", "status", "severity", "domain", "zone", "alerts", "last seen",
                   "title"):
        table.add_column(column)
    for i in items:
        table.add_row(i.id, i.status, i.severity, i.domain, i.zone_name or "-",
                      str(i.alert_count), i.last_seen.isoformat(), i.title)
    Console().print(table)


def _incident_action(action: str, incident_id: str, actor: str) -> None:
    from citywatch.ops.store.lifecycle import IncidentDesk, IncidentNotFound, InvalidTransition
    from citywatch.ops.store.store import IncidentStore

    store = IncidentStore(_settings().database_url)
    store.create_schema()
    try:
        row = getattr(IncidentDesk(store), action)(incident_id, actor=actor)
    except (IncidentNotFound, InvalidTransition) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{row.id} {row.status}")


ActorOption = Annotated[str, typer.Option(help="Who does it (recorded in the audit log).")]


@incidents_app.command("ack")
def incidents_ack(incident_id: str, actor: ActorOption = "cli") -> None:
    """Acknowledge an incident."""
    _incident_action("acknowledge", incident_id, actor)


@incidents_app.command("resolve")
def incidents_resolve(incident_id: str, actor: ActorOption = "cli") -> None:
    """Resolve an incident."""
    _incident_action("resolve", incident_id, actor)


@incidents_app.command("reopen")
def incidents_reopen(incident_id: str, actor: ActorOption = "cli") -> None:
    """Reopen a resolved incident."""
    _incident_action("reopen", incident_id, actor)


@rules_app.command("schema")
def rules_schema() -> None:
    """Print the JSON Schema of rule files."""
    from citywatch.rules.model import RuleSet

    typer.echo(json.dumps(RuleSet.model_json_schema(), indent=2))


@rules_app.command("test")
def rules_test(
    path: Path,
    events: Annotated[Path, typer.Option("--events", help="Envelopes, one JSON per line.")],
) -> None:
    """Dry-run a rule file over envelopes and print the alerts it raises (JSON Lines)."""
    from citywatch.rules.alert import encode_alert
    from citywatch.rules.engine import RuleEngine
    from citywatch.streams.envelope import EnvelopeError, decode_envelope

    ruleset = _ruleset_or_exit(path)
    engine = RuleEngine.from_ruleset(ruleset, forecasts=_forecast_book(ruleset))
    batch, bad = [], 0
    with events.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                batch.append(decode_envelope(line, locator=f"{events.name}:{number}"))
            except EnvelopeError as exc:
                bad += 1
                typer.echo(f"rejected {exc}", err=True)
    result = engine.process(batch)
    result.commit_state()
    for alert in [*result.alerts, *engine.flush()]:  # end of input closes open windows
        typer.echo(encode_alert(alert).decode())
    for envelope, rule_id, reason in result.late:
        typer.echo(f"late for {rule_id}: {envelope.id}: {reason}", err=True)
    if bad:
        raise typer.Exit(1)


def _ruleset_or_exit(path: Path) -> RuleSet:
    """The rule file, or every error as FILE:LINE:COL: message and exit 1."""
    from citywatch.rules.loader import RuleSetError, load_ruleset

    try:
        return load_ruleset(path)
    except RuleSetError as exc:
        for line in exc.errors:
            typer.echo(line, err=True)
        raise typer.Exit(1) from None


def _forecast_book(ruleset: RuleSet) -> ForecastBook:
    """Grids of the registry models the rule set scores against (none needed: empty)."""
    from citywatch.forecasts.grid import ForecastBook
    from citywatch.forecasts.registry import ModelRegistry
    from citywatch.ops.store.store import IncidentStore

    book = ForecastBook()
    if any(rule.forecast_series() for rule in ruleset.rules):
        store = IncidentStore(_settings().database_url)
        store.create_schema()
        book.refresh(ModelRegistry(store).newest_grids())
        store.close()
    return book


@rules_app.command("apply")
def rules_apply(
    path: Path,
    actor: Annotated[str, typer.Option(help="Who applies it (recorded in the audit log).")]
    = "cli",
) -> None:
    """Validate a rule file and make it the one running workers use (no restart)."""
    from citywatch.ops.store.rulesets import RuleSetBook
    from citywatch.ops.store.store import IncidentStore
    from citywatch.rules.loader import RuleSetError, load_ruleset

    settings = _settings()
    store = IncidentStore(settings.database_url)
    store.create_schema()
    try:
        configured = load_ruleset(settings.rules_path).version
        old, new = RuleSetBook(store).apply(path, actor=actor, previous=configured)
    except RuleSetError as exc:
        for line in exc.errors:
            typer.echo(line, err=True)
        raise typer.Exit(1) from None
    typer.echo(f"applied rule set {new} (was {old}); workers switch within "
               f"{settings.rules_poll_seconds:g} s")


@forecasts_app.command("evaluate")
def forecasts_evaluate(
    csv: Annotated[Path, typer.Option(help="History file (CSV).")],
    time_columns: Annotated[str, typer.Option("--time", help="Time column, or several "
                                              "joined by commas (year,month,day,hour).")],
    value: Annotated[str, typer.Option(help="Value column.")],
    freq: Annotated[str, typer.Option(help="Grid frequency (pandas alias).")] = "h",
    horizon: Annotated[int, typer.Option(help="Points ahead.")] = 24,
    folds: Annotated[int, typer.Option(help="Rolling origins.")] = 18,
    step: Annotated[int, typer.Option(help="Points between origins.")] = 168,
    train_window: Annotated[int, typer.Option(help="Training points per fold.")] = 1344,
    season: Annotated[int, typer.Option(help="Seasonal-naive lag in points.")] = 168,
    holiday_column: Annotated[str | None, typer.Option(
        help="Column naming holidays (used as Prophet holidays).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Rolling-origin backtest: Prophet vs seasonal naive, and the model it selects."""
    from citywatch.forecasts.backtest import backtest
    from citywatch.forecasts.models import holidays_from_column
    from citywatch.forecasts.series import SeriesError, load_series

    columns = [c.strip() for c in time_columns.split(",") if c.strip()]
    try:
        series, report = load_series(str(csv), columns, value, freq=freq)
    except (SeriesError, OSError) as exc:
        typer.echo(f"{csv}: {exc}", err=True)
        raise typer.Exit(2) from None
    holidays = (holidays_from_column(str(csv), columns[0], holiday_column)
                if holiday_column else None)
    result = backtest(series, horizon=horizon, folds=folds, step=step,
                      train_window=train_window, season=season, holidays=holidays)
    result = {"series": {"file": str(csv), "value": value, **report.as_dict()},
              "horizon": horizon, **result}
    if as_json:
        typer.echo(json.dumps(result))
        return
    console = Console()
    table = Table(title=f"{csv.name}: {value}, {horizon}-step backtest, "
                        f"{result['prophet']['folds']} folds")
    for column in ("model", "MAE", "MAPE %", "80% coverage"):
        table.add_column(column)
    for name in ("prophet", "seasonal_naive"):
        block = result[name]
        table.add_row(name, str(block["mae"]), str(block["mape"]),
                      str(block.get("coverage", "-")))
    console.print(table)
    if "selected" in result:
        chosen = result["selected"]
        console.print(f"selected: {chosen['model']} ({chosen['reason']}); later folds MAE "
                      f"{chosen['mae']}")


@forecasts_app.command("train")
def forecasts_train(
    config: Annotated[Path, typer.Argument(help="YAML: a list under 'series' of "
                                           "{key, csv, time, value, ...}.")],
    workers: Annotated[int, typer.Option(help="Training processes.")] = 2,
    every: Annotated[float | None, typer.Option(
        help="Retrain on this schedule (seconds) until stopped; workers swap the new "
             "versions in without a restart.")] = None,
    rounds: Annotated[int, typer.Option(help="With --every: stop after this many rounds "
                                        "(0: never).")] = 0,
) -> None:
    """Train every series (backtest, choose, fit) in parallel and store them in the registry."""
    import yaml
    from pydantic import ValidationError
    from rich.progress import Progress

    from citywatch.forecasts.registry import ModelRegistry
    from citywatch.forecasts.training import SeriesSpec, train_many
    from citywatch.ops.store.store import IncidentStore

    try:
        raw = yaml.safe_load(config.read_text())
        specs = [SeriesSpec.model_validate(
            {**item, "csv": str(config.parent / item["csv"])} if item.get("csv") else item)
            for item in raw["series"]]
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValidationError) as exc:
        typer.echo(f"configuration error: {config}: {exc}", err=True)
        raise typer.Exit(2) from None
    store = IncidentStore(_settings().database_url)
    store.create_schema()
    registry = ModelRegistry(store)
    done_rounds = 0
    try:
        while True:
            with Progress() as progress:
                task = progress.add_task("training", total=len(specs))

                def done(model, task=task) -> None:  # noqa: ANN001 - TrainedModel
                    saved = registry.save_if_new(model)
                    progress.advance(task)
                    progress.console.print(f"{model.series_key}: {model.kind} "
                                           f"{model.version}{'' if saved else ' (unchanged)'}")

                train_many(specs, workers=workers, progress=done)
            done_rounds += 1
            if every is None or (rounds and done_rounds >= rounds):
                return
            time.sleep(every)
    except KeyboardInterrupt:
        return
    finally:
        store.close()


@forecasts_app.command("list")
def forecasts_list() -> None:
    """The newest model of every series in the registry."""
    from citywatch.forecasts.registry import ModelRegistry
    from citywatch.ops.store.store import IncidentStore

    store = IncidentStore(_settings().database_url)
    store.create_schema()
    table = Table(title="forecast models")
    for column in ("series", "model", "version", "trained on", "later-folds MAE"):
        table.add_column(column)
    for row in ModelRegistry(store).list():
        selected = row.metrics.get("backtest", {}).get("selected", {})
        table.add_row(row.series_key, row.kind, row.version,
                      f"{row.train_start:%Y-%m-%d} .. {row.train_end:%Y-%m-%d}",
                      str(selected.get("mae", "-")))
    Console().print(table)


if __name__ == "__main__":
    app()
