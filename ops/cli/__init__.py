"""The ``citywatch`` command line: one module per command group, composed here.

Example:
    $ citywatch demo --json
    $ CITYWATCH_KAFKA_BOOTSTRAP=kafka:9092 citywatch worker
"""

from __future__ import annotations

from typing import Annotated

import typer

from citywatch.ops.cli import api, connectors, explain, forecasts, incidents, pipeline, rules

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
        help="Print the version and exit.")] = False) -> None:
    """citywatch: smart-city event-stream governance engine."""
app.add_typer(pipeline.app)
app.add_typer(connectors.app)
app.add_typer(api.app)
app.add_typer(explain.app)
app.add_typer(rules.rules_app, name="rules")
app.add_typer(incidents.incidents_app, name="incidents")
app.add_typer(forecasts.forecasts_app, name="forecasts")
