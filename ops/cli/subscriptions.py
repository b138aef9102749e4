"""``citywatch subscriptions``: what teams receive: add (zones checked against the rule
set in force, with suggestions), list, remove, test (the recent alerts it would have
sent), feed-url (a secret Atom feed URL for feed readers; revocable). Ids may be
shortened to any unique prefix."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from citywatch.ops.cli.common import load_settings, open_store
from citywatch.ops.cli.exits import DATA, USAGE

if TYPE_CHECKING:
    from citywatch.ops.store.store import IncidentStore

subscriptions_app = typer.Typer(help="Team subscriptions: add, list, remove, test, feed-url.",
                                no_args_is_help=True)

ActorOption = Annotated[str, typer.Option(help="Who does it (recorded in the audit log).")]
IdArgument = Annotated[str, typer.Argument(help="Subscription id, or any unique start of it.")]


@subscriptions_app.command("add")
def subscriptions_add(
        team: Annotated[str, typer.Option(help="Team name: a-z, 0-9, '-', '_'.")],
        zone: Annotated[list[str] | None, typer.Option(
            help="Zone id or name of the rule set in force, any case (repeat; none: any).")]
        = None,
        domain: Annotated[list[str] | None, typer.Option(
            help="traffic, environment, food_safety or disaster (repeat; none: any).")]
        = None,
        category: Annotated[list[str] | None, typer.Option(
            help="CAP category such as Health, Transport, Geo (repeat; none: any).")] = None,
        min_severity: Annotated[str, typer.Option(
            help="Minor, Moderate, Severe or Extreme: this or worse.")] = "Unknown",
        webhook: Annotated[str | None, typer.Option(help="POST each alert here.")] = None,
        ngsi_ld: Annotated[str | None, typer.Option(
            help="Upsert each alert as a FIWARE Alert entity to this NGSI-LD context "
                 "broker (its base URL).")] = None,
        actor: ActorOption = "cli",
        as_json: Annotated[bool, typer.Option("--json", help="Print the subscription as "
                                                            "JSON.")] = False) -> None:
    """Subscribe a team to alerts; every value is checked before anything is stored."""
    from pydantic import ValidationError

    from citywatch.ops.live_zones import LiveZones
    from citywatch.ops.store.subscriptions import SubscriptionBook
    from citywatch.streams.subscriptions import SubscriptionIn
    from citywatch.streams.webhook_policy import WebhookPolicy

    try:
        wanted = SubscriptionIn.model_validate(
            {"team": team, "zones": zone or [], "domains": domain or [],
             "categories": category or [], "min_severity": min_severity,
             "webhook_url": webhook, "ngsi_ld_url": ngsi_ld})
    except ValidationError as exc:
        for err in exc.errors():
            field = str(err["loc"][0])
            option = "--" + {"zones": "zone", "domains": "domain", "categories": "category",
                             "webhook_url": "webhook", "ngsi_ld_url": "ngsi-ld"}.get(
                                 field, field.replace("_", "-"))
            typer.echo(f"usage error: {option}: {err['msg']}", err=True)
        raise typer.Exit(USAGE) from None
    settings = load_settings()
    policy = WebhookPolicy(settings.webhook_allow)
    for option, url in (("--webhook", webhook), ("--ngsi-ld", ngsi_ld)):
        problem = policy.check_url(url) if url else None
        if problem is not None:
            typer.echo(f"usage error: {option}: {problem}", err=True)
            raise typer.Exit(USAGE)
    store = open_store(settings, announce=not as_json)
    try:
        spelled, problems = LiveZones(store, settings).check(wanted.zones)
        if problems:
            for line in problems:
                typer.echo(f"usage error: --zone: {line}", err=True)
            raise typer.Exit(USAGE)
        created = SubscriptionBook(store).create(
            wanted.model_copy(update={"zones": spelled}), actor=actor)
    finally:
        store.close()
    if as_json:
        typer.echo(created.model_dump_json())
    else:
        typer.echo(f"subscription {created.id} for team {created.team}")


@subscriptions_app.command("list")
def subscriptions_list(
        team: Annotated[str | None, typer.Option(help="Only this team's.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object: store, "
                                                            "items.")] = False) -> None:
    """Every subscription, by team."""
    from citywatch.ops.store.subscriptions import SubscriptionBook

    settings = load_settings()
    store = open_store(settings, announce=not as_json)
    subs = SubscriptionBook(store).list(team)
    store.close()
    if as_json:
        typer.echo(json.dumps({"store": settings.database_url,
                               "items": [s.model_dump(mode="json") for s in subs]}))
        return
    table = Table(title=f"subscriptions ({len(subs)})", box=box.SIMPLE_HEAD)
    for column in ("id", "team", "zones", "domains", "categories", "min severity",
                   "webhook", "failures"):
        table.add_column(column)
    for s in subs:
        table.add_row(s.id, s.team, ", ".join(s.zones) or "any",
                      ", ".join(s.domains) or "any", ", ".join(s.categories) or "any",
                      s.min_severity, str(s.webhook_url or "-"), str(s.failures))
    Console(width=200).print(table)


def _resolved(store: IncidentStore, prefix: str) -> str:
    from citywatch.ops.store.queries import AmbiguousPrefix, resolve_prefix
    from citywatch.ops.store.schema import SubscriptionRow

    try:
        found = resolve_prefix(store, SubscriptionRow.id, prefix, "subscription")
    except AmbiguousPrefix as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(DATA) from None
    if found is None:
        typer.echo(f"subscription '{prefix}' not found", err=True)
        raise typer.Exit(DATA)
    return found


@subscriptions_app.command("remove")
def subscriptions_remove(subscription_id: IdArgument, actor: ActorOption = "cli") -> None:
    """Delete a subscription (audited)."""
    from citywatch.ops.store.subscriptions import SubscriptionBook

    store = open_store(load_settings())
    try:
        found = _resolved(store, subscription_id)
        SubscriptionBook(store).delete(found, actor=actor)
    finally:
        store.close()
    typer.echo(f"removed subscription {found}")


@subscriptions_app.command("test")
def subscriptions_test(
        subscription_id: IdArgument,
        limit: Annotated[int, typer.Option(help="How many of the newest to show.")] = 10,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object: "
                                                            "subscription, alerts.")]
        = False) -> None:
    """The newest stored alerts this subscription matches: what its team would have
    received (nothing is sent)."""
    from citywatch.ops.store.queries import recent_alerts
    from citywatch.ops.store.subscriptions import SubscriptionBook

    store = open_store(load_settings(), announce=not as_json)
    try:
        sub = SubscriptionBook(store).get(_resolved(store, subscription_id))
        assert sub is not None
        rows = recent_alerts(store, domains=list(sub.domains),
                             categories=list(sub.categories), zones=sub.zones,
                             min_severity=sub.min_severity, limit=max(1, limit))
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps({"subscription": sub.id, "alerts": [
            {"id": r.id, "raised_at": r.raised_at.isoformat(), "severity": r.severity,
             "zone": r.zone_name, "message": r.message} for r in rows]}))
        return
    typer.echo(f"subscription {sub.id} (team {sub.team}) matches {len(rows)} of the newest "
               "stored alerts" + (":" if rows else "; check its zones, domains and "
                                  "minimum severity"))
    for r in rows:
        typer.echo(f"  {r.raised_at:%Y-%m-%d %H:%M}  {r.severity:<8} "
                   f"{r.zone_name or '-':<20} {r.message}")


@subscriptions_app.command("feed-url")
def subscriptions_feed_url(
        subscription_id: IdArgument,
        revoke: Annotated[bool, typer.Option("--revoke", help="Stop the current URL "
                                                             "working.")] = False,
        base_url: Annotated[str | None, typer.Option(
            help="The API's address as feed readers reach it (default "
                 "http://CITYWATCH_API_HOST:CITYWATCH_API_PORT).")] = None,
        actor: ActorOption = "cli") -> None:
    """A secret URL of the subscription's Atom feed, for feed readers (no token needed);
    printed once; issuing a new one (or --revoke) stops the old one working."""
    from citywatch.ops.store.subscriptions import SubscriptionBook

    settings = load_settings()
    store = open_store(settings)
    try:
        found = _resolved(store, subscription_id)
        book = SubscriptionBook(store)
        if revoke:
            if not book.revoke_feed_key(found, actor=actor):
                typer.echo(f"subscription {found} has no feed URL", err=True)
                raise typer.Exit(DATA)
            typer.echo(f"revoked the feed URL of subscription {found}")
            return
        secret = book.issue_feed_key(found, actor=actor)
    finally:
        store.close()
    base = (base_url or f"http://{settings.api_host}:{settings.api_port}").rstrip("/")
    typer.echo(f"{base}/feeds/key/{secret}.atom")
