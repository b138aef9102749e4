"""``citywatch`` commands: rule files: validate, test, apply, schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from citywatch.ops.cli.common import load_settings, ruleset_or_exit

if TYPE_CHECKING:
    from citywatch.forecasts.grid import ForecastBook
    from citywatch.rules.model import RuleSet

rules_app = typer.Typer(help="Rule files: validate, test, apply, schema.",
                        no_args_is_help=True)

@rules_app.command("validate")
def rules_validate(path: Path) -> None:
    """Validate a rule file: prints FILE:LINE:COL: message per error; exit 1 if any."""
    ruleset = ruleset_or_exit(path)
    for rule in ruleset.rules:
        typer.echo(f"{rule.id}  version {rule.version}")


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
    from citywatch.rules.engine import RuleEngine
    from citywatch.streams.alert import encode_alert
    from citywatch.streams.envelope import EnvelopeError, decode_envelope

    ruleset = ruleset_or_exit(path)
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


def _forecast_book(ruleset: RuleSet) -> ForecastBook:
    """Grids of the registry models the rule set scores against (none needed: empty)."""
    from citywatch.forecasts.grid import ForecastBook
    from citywatch.ops.store.forecast_models import ModelRegistry
    from citywatch.ops.store.store import IncidentStore

    book = ForecastBook()
    if any(rule.forecast_series() for rule in ruleset.rules):
        store = IncidentStore(load_settings().database_url)
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

    settings = load_settings()
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
