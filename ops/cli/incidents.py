"""``citywatch`` commands: incidents from the shell: list (with the API's filters),
acknowledge, resolve, reopen. Ids may be shortened to any unique prefix, as in git."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from citywatch.ops.cli.common import as_utc, load_settings, open_store
from citywatch.ops.cli.exits import DATA, USAGE

incidents_app = typer.Typer(help="Incidents: list, acknowledge, resolve, reopen.",
                            no_args_is_help=True)

SHORT_ID = 8


def short_ids(ids: list[str]) -> dict[str, str]:
    """Each id cut to the shortest length (at least 8) that keeps them apart.

    >>> short_ids(["4ba77de0-1", "4ba77de0-2", "9f00aa11-3"])["4ba77de0-1"]
    '4ba77de0-1'
    """
    length = SHORT_ID
    while length < max(map(len, ids), default=0) and len({i[:length] for i in ids}) < len(
            set(ids)):
        length += 1
    return {i: i[:length] for i in ids}


StatusOption = Annotated[list[str] | None, typer.Option(
    help="new, acknowledged, resolved or reopened (repeat for several).")]
MinSeverityOption = Annotated[str | None, typer.Option(
    help="Minor, Moderate, Severe or Extreme: this or worse.")]
DomainOption = Annotated[list[str] | None, typer.Option(
    help="environment, traffic, food_safety or disaster (repeat for several).")]
ZoneOption = Annotated[list[str] | None, typer.Option(
    help="Zone id or name, any case (repeat for several).")]
BboxOption = Annotated[str | None, typer.Option(help="min_lon,min_lat,max_lon,max_lat")]
SinceOption = Annotated[datetime | None, typer.Option(help="Last seen at or after.")]
UntilOption = Annotated[datetime | None, typer.Option(help="First seen at or before.")]


@incidents_app.command("list")
def incidents_list(
        status: StatusOption = None, min_severity: MinSeverityOption = None,
        domain: DomainOption = None, zone: ZoneOption = None, bbox: BboxOption = None,
        since: SinceOption = None, until: UntilOption = None,
        limit: Annotated[int, typer.Option(help="How many (1-1000).")] = 20,
        offset: Annotated[int, typer.Option(help="Skip this many first.")] = 0,
        wide: Annotated[bool, typer.Option(
            "--wide", help="Full ids and every column, never cut to the terminal.")] = False,
        as_json: Annotated[bool, typer.Option(
            "--json", help="One JSON object: store, total, items (each with summary).")]
        = False) -> None:
    """List incidents, most recently seen first, with what the newest alert says."""
    from citywatch.ops.api.models import Incident
    from citywatch.ops.store.queries import latest_messages, list_incidents

    query = _filter_or_exit(status=status, min_severity=min_severity, domain=domain,
                            zone=zone, bbox=bbox, since=since, until=until, limit=limit,
                            offset=offset)
    settings = load_settings()
    store = open_store(settings, announce=not as_json)
    rows, total = list_incidents(store, query)
    items = [Incident.model_validate(r) for r in rows]
    summaries = latest_messages(store, [i.id for i in items])
    store.close()
    if as_json:
        typer.echo(json.dumps({"store": settings.database_url, "total": total, "items": [
            {**i.model_dump(mode="json"), "summary": summaries.get(i.id, i.title)}
            for i in items]}))
        return
    _print_table(items, summaries, total, wide)



def _filter_or_exit(*, bbox: str | None, since: datetime | None, until: datetime | None,
                    **values: Any) -> Any:
    """The incident filter of the command's options; one line per mistake and exit 2."""
    from pydantic import ValidationError

    from citywatch.ops.store.queries import IncidentFilter

    try:
        box = tuple(float(v) for v in bbox.split(",")) if bbox else None
        return IncidentFilter.model_validate(
            {**values, "bbox": box, "since": as_utc(since), "until": as_utc(until)})
    except (ValueError, ValidationError) as exc:
        errors = exc.errors() if isinstance(exc, ValidationError) else [
            {"loc": ("bbox",), "msg": str(exc)}]
        for err in errors:
            option = "--" + str(err["loc"][0]).replace("_", "-")
            typer.echo(f"usage error: {option}: {err['msg']}", err=True)
        raise typer.Exit(USAGE) from None


@incidents_app.command("export")
def incidents_export(
        out: Annotated[Path, typer.Option(help="File to write (.geojson, .gpkg or .csv).")],
        fmt: Annotated[str | None, typer.Option(
            "--format", help="geojson, gpkg or csv (default: from --out's suffix).")] = None,
        status: StatusOption = None, min_severity: MinSeverityOption = None,
        domain: DomainOption = None, zone: ZoneOption = None, bbox: BboxOption = None,
        since: SinceOption = None, until: UntilOption = None) -> None:
    """Every incident the filters select as a GIS layer 'incidents' (points, WGS 84, with
    severity, status, times and zone), for QGIS, ArcGIS or a spreadsheet."""
    from citywatch.ops.api.models import Incident
    from citywatch.ops.gis import FORMATS, write_incidents
    from citywatch.ops.store.queries import list_incidents

    chosen = (fmt or out.suffix.lstrip(".")).lower()
    chosen = "geojson" if chosen == "json" else chosen
    if chosen not in FORMATS:
        typer.echo(f"usage error: --format: {chosen!r} is not one of {', '.join(FORMATS)}",
                   err=True)
        raise typer.Exit(USAGE)
    query = _filter_or_exit(status=status, min_severity=min_severity, domain=domain,
                            zone=zone, bbox=bbox, since=since, until=until, limit=1000,
                            offset=0)
    store = open_store(load_settings())
    rows: list[dict[str, Any]] = []
    while True:
        page, total = list_incidents(store, query)
        rows += [Incident.model_validate(r).model_dump() for r in page]
        if not page or len(rows) >= total:
            break
        query = query.model_copy(update={"offset": len(rows)})
    store.close()
    count = write_incidents(rows, out, chosen)  # type: ignore[arg-type]
    typer.echo(f"wrote {count} incidents to {out} ({chosen})")


def _print_table(items: list[Any], summaries: dict[str, str], total: int,
                 wide: bool) -> None:
    ids = {i.id: i.id for i in items} if wide else short_ids([i.id for i in items])
    columns = ["id", "status", "severity", "domain", "zone", "alerts", "last seen"]
    columns += ["first seen", "rule", "summary"] if wide else ["summary"]
    table = Table(title=f"incidents ({len(items)} of {total})", box=box.SIMPLE_HEAD)
    for column in columns:
        table.add_column(column, no_wrap=column != "summary",
                         overflow="fold" if column == "summary" else "ellipsis")
    for i in items:
        row = [ids[i.id], i.status, i.severity, i.domain, i.zone_name or "-",
               str(i.alert_count), f"{i.last_seen:%Y-%m-%d %H:%M}"]
        if wide:
            row += [f"{i.first_seen:%Y-%m-%d %H:%M}", i.rule_id]
        table.add_row(*row, summaries.get(i.id, i.title))
    # piped output is not cut to 80 columns; a terminal folds the summary to fit
    Console(width=10_000 if wide else None if sys.stdout.isatty() else 160).print(table)


def _incident_action(action: str, prefix: str, actor: str) -> None:
    from citywatch.ops.store.lifecycle import IncidentDesk, IncidentNotFound, InvalidTransition
    from citywatch.ops.store.queries import AmbiguousPrefix, resolve_prefix
    from citywatch.ops.store.schema import IncidentRow

    store = open_store(load_settings())
    try:
        incident_id = resolve_prefix(store, IncidentRow.id, prefix)
        if incident_id is None:
            raise IncidentNotFound(prefix)
        row = getattr(IncidentDesk(store), action)(incident_id, actor=actor)
    except (IncidentNotFound, InvalidTransition, AmbiguousPrefix) as exc:
        typer.echo(str(exc).strip("'\""), err=True)
        raise typer.Exit(DATA) from None
    finally:
        store.close()
    typer.echo(f"{row.id} {row.status}")


IdArgument = Annotated[str, typer.Argument(help="Incident id, or any unique start of it.")]
ActorOption = Annotated[str, typer.Option(help="Who does it (recorded in the audit log).")]


@incidents_app.command("ack")
def incidents_ack(incident_id: IdArgument, actor: ActorOption = "cli") -> None:
    """Acknowledge an incident."""
    _incident_action("acknowledge", incident_id, actor)


@incidents_app.command("resolve")
def incidents_resolve(incident_id: IdArgument, actor: ActorOption = "cli") -> None:
    """Resolve an incident."""
    _incident_action("resolve", incident_id, actor)


@incidents_app.command("reopen")
def incidents_reopen(incident_id: IdArgument, actor: ActorOption = "cli") -> None:
    """Reopen a resolved incident."""
    _incident_action("reopen", incident_id, actor)
