"""``citywatch`` commands: rule files: validate, test, apply, schema."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from citywatch.ops.cli.common import load_settings, open_store, ruleset_or_exit

if TYPE_CHECKING:
    from citywatch.forecasts.grid import ForecastBook
    from citywatch.ops.settings import Settings
    from citywatch.ops.store.rulesets import RuleSetBook
    from citywatch.ops.store.store import IncidentStore
    from citywatch.rules.model import RuleSet
    from citywatch.rules.validate import ValidationReport

rules_app = typer.Typer(
    help="Rule sets: validate, test, schema; apply, or propose and approve (two-person "
         "rule); history, show, diff, rollback, status. Exit codes: 0 done; 1 the rule "
         "file does not validate or cannot load; 2 configuration error; 3 refused (token, "
         "role, deciding on one's own proposal, already decided, approval required); 4 no "
         "such version.", no_args_is_help=True)
EXIT_REFUSED = 3
EXIT_UNKNOWN = 4
TOKEN_HELP = "Your API token (or CITYWATCH_TOKEN): says who you are and your role."

FEEDS_HELP = ("Feed configurations (files or folders) whose declared attributes alert "
              "messages may use; default: the bundled demo feeds.")


@rules_app.command("validate")
def rules_validate(path: Path, feeds: Annotated[list[Path] | None, typer.Option(
        "--feeds", help=FEEDS_HELP)] = None) -> None:
    """Validate a rule file completely (schema, zone and site files, zone names, message
    templates, forecast series): FILE:LINE:COL: message per problem; exit 1 on errors."""
    report = report_or_exit(path, feeds)
    assert report.ruleset is not None
    for rule in report.ruleset.rules:
        typer.echo(f"{rule.id}  version {rule.version}")


def report_or_exit(path: Path, feeds: list[Path] | None) -> ValidationReport:
    """The complete validation of ``path``: warnings printed; errors printed, exit 1."""
    from citywatch.ops.rule_checks import DEMO_FEEDS, check_rules

    report = check_rules(path, load_settings(), feeds or [DEMO_FEEDS])
    for finding in report.findings:
        typer.echo(str(finding), err=True)
    if not report.ok:
        raise typer.Exit(1)
    return report


@rules_app.command("schema")
def rules_schema() -> None:
    """Print the JSON Schema of rule files."""
    from citywatch.rules.model import RuleSet

    typer.echo(json.dumps(RuleSet.model_json_schema(), indent=2))


@rules_app.command("test")
def rules_test(
    path: Path,
    events: Annotated[Path, typer.Option(
        "--events", help="Events, one JSON object per line: full envelopes, or written by "
                         "hand (domain, kind, time, entity, geometry, attributes).")],
) -> None:
    """Dry-run a rule file over events and print the alerts it raises (JSON Lines), in
    event-time order as a worker would (the same core as ``citywatch backtest``)."""
    from citywatch.rules.backtest import run_rules
    from citywatch.streams.alert import encode_alert
    from citywatch.streams.envelope import Envelope, EnvelopeError
    from citywatch.streams.event_lines import read_event_lines

    ruleset = ruleset_or_exit(path)
    if not events.is_file():
        typer.echo(f"usage error: --events: {events}: no such file", err=True)
        raise typer.Exit(2)
    batch: list[Envelope] = []
    bad = 0
    for item in read_event_lines(events):
        if isinstance(item, EnvelopeError):
            bad += 1
            typer.echo(f"rejected {item}", err=True)
        else:
            batch.append(item)
    late: list[tuple[Envelope, str, str]] = []
    for alert in run_rules(ruleset, batch, forecasts=_forecast_book(ruleset), late=late):
        typer.echo(encode_alert(alert).decode())
    for envelope, rule_id, reason in late:
        typer.echo(f"late for {rule_id}: {envelope.id}: {reason}", err=True)
    if bad:
        raise typer.Exit(1)


def _forecast_book(ruleset: RuleSet) -> ForecastBook:
    """Grids of the registry models the rule set scores against (none needed: empty)."""
    from citywatch.forecasts.grid import ForecastBook
    from citywatch.ops.store.forecast_models import ModelRegistry

    book = ForecastBook()
    if any(rule.forecast_series() for rule in ruleset.rules):
        store = open_store(load_settings())
        book.refresh(ModelRegistry(store).newest_grids())
        store.close()
    return book


@rules_app.command("apply")
def rules_apply(
    path: Path,
    actor: Annotated[str, typer.Option(help="Who applies it (recorded in the audit log); "
                                            "a --token names you instead.")] = "cli",
    feeds: Annotated[list[Path] | None, typer.Option("--feeds", help=FEEDS_HELP)] = None,
    token: Annotated[str | None, typer.Option(envvar="CITYWATCH_TOKEN",
                                              help=TOKEN_HELP)] = None,
) -> None:
    """Validate a rule file completely and make it live at once (single-person; refused
    with exit 3 while two-person approval is on: use propose and approve)."""
    from citywatch.ops.store.rulesets import approval_required
    from citywatch.ops.store.tokens import TokenBook
    from citywatch.rules.loader import load_ruleset

    report_or_exit(path, feeds)
    settings = load_settings()
    with _governed_store(settings) as (book, store):
        if token:
            actor = _caller_or_exit(store, token, {"admin"})
        if approval_required(settings.rules_approval, TokenBook(store).count("admin")):
            typer.echo("two-person approval is on (CITYWATCH_RULES_APPROVAL="
                       f"{settings.rules_approval}, more than one admin): use "
                       "'citywatch rules propose' and have another admin approve",
                       err=True)
            raise typer.Exit(EXIT_REFUSED)
        configured = load_ruleset(settings.rules_path).version
        old, new = book.apply(path, actor=actor, previous=configured)
    typer.echo(f"applied rule set {new} (was {old}); workers switch within "
               f"{settings.rules_poll_seconds:g} s")


@rules_app.command("propose")
def rules_propose(
    path: Path,
    token: Annotated[str | None, typer.Option(envvar="CITYWATCH_TOKEN", help=TOKEN_HELP)]
    = None,
    feeds: Annotated[list[Path] | None, typer.Option("--feeds", help=FEEDS_HELP)] = None,
) -> None:
    """Propose a rule file (analyst or admin): stored with its validation result and its
    diff against the live version, for another admin to approve or reject."""
    from citywatch.ops.store.rulesets import diff_versions

    report = report_or_exit(path, feeds)
    settings = load_settings()
    with _governed_store(settings) as (book, store):
        actor = _caller_or_exit(store, token, {"analyst", "admin"})
        proposal = book.propose(path, actor=actor,
                                findings=[str(f) for f in report.findings])
        candidate = book.version(proposal.version)
        assert candidate is not None
        typer.echo(f"proposed rule set {proposal.version} by {actor}")
        _print_diff(diff_versions(book.current(), candidate))


@rules_app.command("approve")
def rules_approve(version: str, token: Annotated[str | None, typer.Option(
        envvar="CITYWATCH_TOKEN", help=TOKEN_HELP)] = None) -> None:
    """Approve a proposed version (an admin other than its proposer): it goes live."""
    settings = load_settings()
    with _governed_store(settings) as (book, store):
        actor = _caller_or_exit(store, token, {"admin"})
        old, new = book.approve(version, actor=actor)
    typer.echo(f"approved rule set {new} (was {old}); workers switch within "
               f"{settings.rules_poll_seconds:g} s")


@rules_app.command("reject")
def rules_reject(version: str, reason: Annotated[str, typer.Option(
        help="Why (recorded, shown to the proposer).")], token: Annotated[
        str | None, typer.Option(envvar="CITYWATCH_TOKEN", help=TOKEN_HELP)] = None) -> None:
    """Reject a proposed version (an admin other than its proposer)."""
    with _governed_store(load_settings()) as (book, store):
        actor = _caller_or_exit(store, token, {"admin"})
        book.reject(version, actor=actor, reason=reason)
    typer.echo(f"rejected rule set {version}")


@rules_app.command("rollback")
def rules_rollback(version: str, token: Annotated[str | None, typer.Option(
        envvar="CITYWATCH_TOKEN", help=TOKEN_HELP)] = None) -> None:
    """Make a version that was live before live again (admin; audited). It was reviewed
    when it first went live, so one admin may restore it."""
    settings = load_settings()
    with _governed_store(settings) as (book, store):
        actor = _caller_or_exit(store, token, {"admin"})
        old, new = book.rollback(version, actor=actor)
    typer.echo(f"rolled back to rule set {new} (was {old}); workers switch within "
               f"{settings.rules_poll_seconds:g} s")


@rules_app.command("history")
def rules_history() -> None:
    """Every version that went live (newest first) and every proposal."""
    with _governed_store(load_settings()) as (book, _):
        for applied in book.history():
            typer.echo(f"{applied.applied_at:%Y-%m-%d %H:%M:%S}  live      "
                       f"{applied.version}  by {applied.applied_by}")
        for proposal in book.proposals():
            decided = f", {proposal.status} by {proposal.decided_by}" if (
                proposal.decided_by) else ""
            typer.echo(f"{proposal.proposed_at:%Y-%m-%d %H:%M:%S}  {proposal.status:<9} "
                       f"{proposal.version}  proposed by {proposal.proposed_by}{decided}")


@rules_app.command("status")
def rules_status() -> None:
    """The live version, and which version each running worker evaluates."""
    from datetime import timedelta

    settings = load_settings()
    with _governed_store(settings) as (book, _):
        live = book.current()
        workers = book.workers(timedelta(seconds=max(10.0, 5 * settings.rules_poll_seconds)))
    typer.echo(f"live: {live.version if live else '(none applied: the configured file)'}"
               + (f" applied by {live.applied_by} at {live.applied_at:%Y-%m-%d %H:%M:%S}"
                  if live else ""))
    for worker in workers:
        state = "ok" if live is None or worker.rules_version == live.version else (
            f"NOT LIVE: {worker.rules_problem or 'switching'}")
        typer.echo(f"  worker {worker.worker}: {worker.rules_version} ({state}), seen "
                   f"{worker.seen_at:%H:%M:%S}")
    if not workers:
        typer.echo("  no worker heard from recently")


@rules_app.command("show")
def rules_show(version: str) -> None:
    """The rule text of a version and its layer files."""
    with _governed_store(load_settings()) as (book, _):
        found = book.version(version)
        if found is None:
            typer.echo(f"no rule set version {version}", err=True)
            raise typer.Exit(EXIT_UNKNOWN)
    for layer in found.layers:
        typer.echo(f"# {layer.kind} {layer.layer}: {layer.name} sha256:{layer.sha256}")
    typer.echo(found.content)


@rules_app.command("diff")
def rules_diff(old: str, new: str) -> None:
    """What version NEW changes against version OLD."""
    from citywatch.ops.store.rulesets import diff_versions

    with _governed_store(load_settings()) as (book, _):
        versions = [book.version(v) for v in (old, new)]
    for name, found in zip((old, new), versions, strict=True):
        if found is None:
            typer.echo(f"no rule set version {name}", err=True)
            raise typer.Exit(EXIT_UNKNOWN)
    _print_diff(diff_versions(versions[0], versions[1]))  # type: ignore[arg-type]


def _print_diff(diff: dict) -> None:
    typer.echo(f"changes from {diff['from'] or '(none)'} to {diff['to']}:")
    lines = [f"  + rule {r}" for r in diff["added"]]
    lines += [f"  - rule {r}" for r in diff["removed"]]
    lines += [f"  ~ rule {r}: {', '.join(fields)}" for r, fields in diff["changed"].items()]
    lines += [f"  + layer {r}" for r in diff["layers_added"]]
    lines += [f"  - layer {r}" for r in diff["layers_removed"]]
    lines += [f"  ~ layer {r}: file content changed" for r in diff["layers_changed"]]
    typer.echo("\n".join(lines) if lines else "  (no change)")


@contextlib.contextmanager
def _governed_store(settings: Settings) -> Iterator[tuple[RuleSetBook, IncidentStore]]:
    """The rule-set book over the store; governance refusals become one line and their
    exit code."""
    from citywatch.ops.store.rulesets import (
        DecisionRefused,
        RuleSetBook,
        UnknownVersion,
        UnloadableRuleSet,
    )
    from citywatch.rules.loader import RuleSetError

    store = open_store(settings)
    try:
        yield RuleSetBook(store), store
    except RuleSetError as exc:
        for line in exc.errors:
            typer.echo(line, err=True)
        raise typer.Exit(1) from None
    except UnloadableRuleSet as exc:
        typer.echo(f"refused, workers could not load it: {exc}", err=True)
        raise typer.Exit(1) from None
    except DecisionRefused as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(EXIT_REFUSED) from None
    except UnknownVersion as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_UNKNOWN) from None
    finally:
        store.close()


def _caller_or_exit(store: IncidentStore, token: str | None, roles: set[str]) -> str:
    """The name behind ``token`` when its role is one of ``roles``; else exit 3."""
    from citywatch.ops.store.tokens import TokenBook

    found = TokenBook(store).resolve(token) if token else None
    if found is None:
        typer.echo("refused: give your API token (--token or CITYWATCH_TOKEN)" if not token
                   else "refused: unknown token", err=True)
        raise typer.Exit(EXIT_REFUSED)
    name, role = found
    if role not in roles:
        typer.echo(f"refused: {name} has role '{role}'; this needs "
                   f"{' or '.join(sorted(roles))}", err=True)
        raise typer.Exit(EXIT_REFUSED)
    return name
