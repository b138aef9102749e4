"""The ``citywatch`` command line: one module per command group, composed here.
:func:`main` is the entry point: it turns environment mistakes that reach it into one
line and a documented status (:mod:`citywatch.ops.cli.exits`); ``--debug`` shows the
traceback instead.

Example:
    $ citywatch demo --json
    $ CITYWATCH_KAFKA_BOOTSTRAP=kafka:9092 citywatch worker
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from citywatch.ops.cli import (
    api,
    backtest,
    connectors,
    explain,
    forecasts,
    incidents,
    pipeline,
    replay,
    rules,
    status,
    subscriptions,
)
from citywatch.ops.cli.exits import failure

app = typer.Typer(help="citywatch: smart-city event-stream governance engine.",
                  no_args_is_help=True)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"citywatch {version('citywatch')}")
        raise typer.Exit()


@app.callback()
def _main(show_version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True,
        help="Print the version and exit.")] = False,
        data_dir: Annotated[Path | None, typer.Option(
            "--data-dir", help="Where citywatch keeps its state: the default store, "
                               "checkpoints, worker state (CITYWATCH_DATA_DIR; default: the "
                               "user data directory).")] = None,
        debug: Annotated[bool, typer.Option(
            "--debug", help="Show the traceback of an error instead of one line.")]
        = False) -> None:
    """citywatch: smart-city event-stream governance engine."""
    if data_dir is not None:  # the settings of this process and of those it starts
        os.environ["CITYWATCH_DATA_DIR"] = str(data_dir.absolute())


app.add_typer(pipeline.app)
app.add_typer(connectors.app)
app.add_typer(api.app)
app.add_typer(explain.app)
app.add_typer(status.app)
app.add_typer(backtest.app)
app.add_typer(replay.app)
app.add_typer(rules.rules_app, name="rules")
app.add_typer(incidents.incidents_app, name="incidents")
app.add_typer(subscriptions.subscriptions_app, name="subscriptions")
app.add_typer(forecasts.forecasts_app, name="forecasts")


def main() -> None:
    """Run the command line; an environment mistake is one line and its exit status."""
    debug = "--debug" in sys.argv[1:]
    try:
        app()
    except Exception as exc:
        known = failure(exc)
        if known is None or debug:
            raise
        status, message = known
        print(message, file=sys.stderr)
        sys.exit(status)
