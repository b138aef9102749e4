"""``citywatch`` commands: forecasts: backtest, train and list models."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from citywatch.ops.cli.common import load_settings, open_store
from citywatch.ops.cli.exits import USAGE

forecasts_app = typer.Typer(help="Forecasts: backtest, train and list models.",
                            no_args_is_help=True)

def _series(csv: Path, time_columns: str, value: str, freq: str) -> tuple[Any, Any, str]:
    """The history file as a regular series, its report and the pandas alias; exit 2 with
    one line when it cannot be read."""
    from citywatch.forecasts.candidates import FrequencyError, normal_freq
    from citywatch.forecasts.series import SeriesError, load_series

    columns = [c.strip() for c in time_columns.split(",") if c.strip()]
    try:
        alias = normal_freq(freq)
        series, report = load_series(str(csv), columns, value, freq=alias)
    except FrequencyError as exc:
        typer.echo(f"usage error: --{exc}", err=True)
        raise typer.Exit(USAGE) from None
    except (SeriesError, OSError) as exc:
        typer.echo(f"{csv}: {exc}", err=True)
        raise typer.Exit(USAGE) from None
    return series, report, alias


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def _seasons(text: str | None, freq: str, window: int) -> list[int]:
    from citywatch.forecasts.candidates import seasonalities

    if not text:
        return seasonalities(freq, window)
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        typer.echo(f"usage error: --seasons: {text!r} is not a list of whole numbers",
                   err=True)
        raise typer.Exit(USAGE) from None


@contextmanager
def _progress_bar(label: str, quiet: bool) -> Iterator[Any]:
    """A progress bar on stderr for long evaluations (none with --json or off a terminal)."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, planned: bar.update(task, completed=done, total=planned)


CsvOption = Annotated[Path, typer.Option(help="History file (CSV).")]
TimeOption = Annotated[str, typer.Option("--time", help="Time column, or several joined "
                                         "by commas (year,month,day,hour).")]
ValueOption = Annotated[str, typer.Option(help="Value column.")]


@forecasts_app.command("evaluate")
def forecasts_evaluate(
    csv: CsvOption, time_columns: TimeOption, value: ValueOption,
    freq: Annotated[str, typer.Option(help="Grid frequency (pandas alias, any case: h, "
                                           "H, D, 15min).")] = "h",
    horizon: Annotated[int, typer.Option(help="Points ahead.")] = 24,
    folds: Annotated[int, typer.Option(help="Rolling origins (the earlier half chooses, "
                                            "the later half scores).")] = 18,
    step: Annotated[int, typer.Option(help="Points between origins.")] = 168,
    train_window: Annotated[int, typer.Option(help="Training points per fold.")] = 1344,
    seasons: Annotated[str | None, typer.Option(
        help="Seasonal periods in points, comma-separated (default: a day and a week of "
             "--freq that fit the window: 24,168 hourly, 7 daily).")] = None,
    candidates: Annotated[str | None, typer.Option(
        help="Only these candidates, comma-separated (naive, seasonal_naive_N, ets, theta, "
             "mstl, arima, prophet).")] = None,
    margin: Annotated[float, typer.Option(
        help="How much lower a challenger's MAE must be than the best baseline's on the "
             "choosing folds to replace it.")] = 0.10,
    holiday_column: Annotated[str | None, typer.Option(
        help="Column naming holidays (used as Prophet holidays).")] = None,
    verbose: Annotated[bool, typer.Option(help="Show Prophet's and cmdstanpy's "
                                               "messages.")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object: every candidate's MAE, MAPE, MASE and coverage "
                       "over all and the later folds, the selection and why; duplicates, "
                       "gaps and NA found.")] = False,
) -> None:
    """Rolling-origin backtest of every candidate (persistence, seasonal naive per
    seasonality, ETS, Theta, MSTL, Prophet, the mean of the two best) and the model it
    selects: a challenger replaces the best baseline only when clearly better."""
    from citywatch.forecasts.backtest import backtest
    from citywatch.forecasts.models import holidays_from_column, quiet_prophet

    quiet_prophet(verbose)
    series, report, alias = _series(csv, time_columns, value, freq)
    season_list = _seasons(seasons, alias, train_window)
    holidays = (holidays_from_column(str(csv), time_columns.split(",")[0], holiday_column)
                if holiday_column else None)
    try:
        with _progress_bar("evaluating", as_json) as progress:
            result = backtest(series, horizon=horizon, folds=folds, step=step,
                              train_window=train_window, seasons=season_list,
                              holidays=holidays, candidates=_names(candidates),
                              margin=margin, progress=progress, verbose=verbose)
    except ValueError as exc:
        typer.echo(f"usage error: {exc}", err=True)
        raise typer.Exit(USAGE) from None
    result = {"series": {"file": str(csv), "value": value, "freq": alias,
                         **report.as_dict()}, "horizon": horizon, **result}
    if as_json:
        typer.echo(json.dumps(result))
        return
    console = Console()
    later = result.get("later_folds", {})
    scored = next(iter(later.values()))["folds"] if later else 0
    table = Table(title=f"{csv.name}: {value}, {horizon}-step backtest, "
                        f"{len(result['origins'])} folds, the later {scored} scored")
    for column in ("model", "MAE", "MASE", "80% coverage", "later MAE", "later MASE"):
        table.add_column(column)
    chosen = result.get("selected", {}).get("model")
    for name, block in result["candidates"].items():
        table.add_row(f"[bold]{name}[/]" if name == chosen else name, str(block["mae"]),
                      str(block["mase"]), str(block["coverage"]),
                      str(later.get(name, {}).get("mae", "-")),
                      str(later.get(name, {}).get("mase", "-")))
    console.print(table)
    if chosen:
        picked = result["selected"]
        console.print(f"selected: {chosen} ({picked['reason']}); later folds MAE "
                      f"{picked['mae']}, best baseline there "
                      f"{picked['best_baseline_later']['model']} "
                      f"{picked['best_baseline_later']['mae']}")


@forecasts_app.command("evaluate-warnings")
def forecasts_evaluate_warnings(
    csv: CsvOption, time_columns: TimeOption, value: ValueOption,
    threshold: Annotated[float, typer.Option(help="The value a warning is about.")],
    op: Annotated[str, typer.Option(help="Crossing: >, >=, < or <=.")] = ">",
    lookahead: Annotated[int, typer.Option(help="Points ahead a warning looks (the "
                                                "rule's horizon).")] = 24,
    bound: Annotated[str, typer.Option(help="yhat, or the interval's upper/lower.")]
    = "yhat",
    freq: Annotated[str, typer.Option(help="Grid frequency (pandas alias).")] = "h",
    origins: Annotated[int, typer.Option(help="Rolling origins.")] = 60,
    step: Annotated[int, typer.Option(help="Points between origins.")] = 24,
    train_window: Annotated[int, typer.Option(help="Training points per origin.")] = 1344,
    seasons: Annotated[str | None, typer.Option(
        help="Seasonal periods in points (default from --freq).")] = None,
    candidates: Annotated[str | None, typer.Option(
        help="Only these candidates, comma-separated (default: all).")] = None,
    verbose: Annotated[bool, typer.Option(help="Show Prophet's messages.")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object: hits, misses, false alarms, precision, recall "
                       "and median lead time per candidate.")] = False,
) -> None:
    """Warning skill: every candidate's forecasts at rolling origins through the
    forecast_exceedance rule's own grid lookup, scored as warnings (hits, misses, false
    alarms, precision, recall, lead time) beside the persistence warning (naive)."""
    from citywatch.forecasts.early_warning import warning_skill
    from citywatch.forecasts.models import quiet_prophet

    quiet_prophet(verbose)
    if op not in (">", ">=", "<", "<=") or bound not in ("yhat", "upper", "lower"):
        typer.echo("usage error: --op is one of >, >=, <, <= and --bound one of yhat, "
                   "upper, lower", err=True)
        raise typer.Exit(USAGE)
    series, _, alias = _series(csv, time_columns, value, freq)
    with _progress_bar("scoring warnings", as_json) as progress:
        skill = warning_skill(series, threshold=threshold, op=op, lookahead=lookahead,
                              step=step, origins=origins, train_window=train_window,
                              seasons=_seasons(seasons, alias, train_window), bound=bound,
                              candidates=_names(candidates), progress=progress)
    skill = {"series": {"file": str(csv), "value": value, "freq": alias}, **skill}
    if as_json:
        typer.echo(json.dumps(skill))
        return
    console = Console()
    for part, title in (("models", f"all {skill['origins']} origins, {skill['events']} "
                                   "followed by a real crossing"),
                        ("onsets", f"the {skill['onset_origins']} onset origins (not over "
                                   "the threshold yet)")):
        table = Table(title=f"warnings of {value} {op} {threshold:g} within {lookahead} "
                            f"points: {title}")
        for column in ("model", "hits", "misses", "false alarms", "precision", "recall",
                       "median lead h"):
            table.add_column(column)
        for name, m in skill[part].items():
            table.add_row(name, str(m["hits"]), str(m["misses"]), str(m["false_alarms"]),
                          str(m["precision"]), str(m["recall"]),
                          str(m["median_lead_hours"]))
        console.print(table)


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
