"""The ``citywatch`` command line: one module per command group, composed here.

Example:
    $ citywatch demo --json
    $ CITYWATCH_KAFKA_BOOTSTRAP=kafka:9092 citywatch worker
"""

from __future__ import annotations

import typer

from citywatch.ops.cli import api, connectors, forecasts, incidents, pipeline, rules

app = typer.Typer(help="citywatch: smart-city event-stream governance engine.",
                  no_args_is_help=True, add_completion=False)
app.add_typer(pipeline.app)
app.add_typer(connectors.app)
app.add_typer(api.app)
app.add_typer(rules.rules_app, name="rules")
app.add_typer(incidents.incidents_app, name="incidents")
app.add_typer(forecasts.forecasts_app, name="forecasts")
