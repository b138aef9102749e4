"""``citywatch`` commands: forecasts: backtest, train and list models."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from citywatch.ops.cli.common import load_settings, open_store

forecasts_app = typer.Typer(help="Forecasts: backtest, train and list models.",
                            no_args_is_help=True)

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
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object: the report (per model MAE, MAPE, coverage; the "
                       "selection; duplicates, gaps and NA found).")] = False,
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

    from citywatch.forecasts.training import SeriesSpec, train_many
    from citywatch.ops.store.forecast_models import ModelRegistry
    from citywatch.streams.kafka_admin import read_topic

    try:
        raw = yaml.safe_load(config.read_text())
        specs = [SeriesSpec.model_validate(
            {**item, "csv": str(config.parent / item["csv"])} if item.get("csv") else item)
            for item in raw["series"]]
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValidationError) as exc:
        typer.echo(f"configuration error: {config}: {exc}", err=True)
        raise typer.Exit(2) from None
    store = open_store(load_settings())
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

                train_many(specs, workers=workers, progress=done, read_topic=read_topic)
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
    from citywatch.ops.store.forecast_models import ModelRegistry

    store = open_store(load_settings())
    table = Table(title="forecast models")
    for column in ("series", "model", "version", "trained on", "later-folds MAE"):
        table.add_column(column)
    for row in ModelRegistry(store).list():
        selected = row.metrics.get("backtest", {}).get("selected", {})
        table.add_row(row.series_key, row.kind, row.version,
                      f"{row.train_start:%Y-%m-%d} .. {row.train_end:%Y-%m-%d}",
                      str(selected.get("mae", "-")))
    Console().print(table)
