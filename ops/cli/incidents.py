"""``citywatch`` commands: incidents from the shell: list, acknowledge, resolve, reopen."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from citywatch.ops.cli.common import load_settings

incidents_app = typer.Typer(help="Incidents: list, acknowledge, resolve, reopen.",
                            no_args_is_help=True)

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

    store = IncidentStore(load_settings().database_url)
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

    store = IncidentStore(load_settings().database_url)
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
