"""``citywatch`` commands: the responder API: serve it, and manage its tokens."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from citywatch.ops.cli.common import load_settings, open_store
from citywatch.ops.cli.exits import USAGE, Failure

if TYPE_CHECKING:
    from citywatch.ops.store.tokens import TokenBook

app = typer.Typer()
tokens_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")

@app.command()
def serve(host: Annotated[str | None, typer.Option(
        help="Bind address (default CITYWATCH_API_HOST, 127.0.0.1).")] = None,
          port: Annotated[int | None, typer.Option(
              min=1, max=65535, help="Port (default CITYWATCH_API_PORT, 8080).")] = None,
          ) -> None:
    """Serve the responder API."""
    from citywatch.ops.api.server import serve as serve_api
    from citywatch.streams.broker import port_taken

    settings = load_settings()
    overrides = {k: v for k, v in (("api_host", host), ("api_port", port)) if v is not None}
    settings = settings.model_copy(update=overrides)
    if port_taken(settings.api_port, settings.api_host):
        raise Failure(USAGE, f"configuration error: {settings.api_host}:{settings.api_port} "
                             "is already in use or cannot be bound; choose another with "
                             "--port/--host (CITYWATCH_API_PORT, CITYWATCH_API_HOST)")
    open_store(settings).close()
    serve_api(settings)


@tokens_app.command("add")
def tokens_add(name: str, role: Annotated[str, typer.Option(
        help="viewer, operator, analyst or admin")] = "viewer",
               expires: Annotated[str | None, typer.Option(
                   help="Valid for this long: 90d, 12h, 30m (default: until revoked).")]
               = None) -> None:
    """Issue an API token; it is printed once and only its hash is stored. A name has one
    valid token at a time (revoke the old one first)."""
    from citywatch.ops.store.tokens import ROLES, TokenNameTaken

    if role not in ROLES:
        typer.echo(f"--role must be one of {', '.join(ROLES)}", err=True)
        raise typer.Exit(2)
    until = None
    if expires is not None:
        match = re.fullmatch(r"(\d+)([dhm])", expires.strip())
        if match is None or int(match[1]) == 0:
            typer.echo("--expires takes a duration such as 90d, 12h or 30m", err=True)
            raise typer.Exit(2)
        unit = {"d": "days", "h": "hours", "m": "minutes"}[match[2]]
        until = datetime.now(UTC) + timedelta(**{unit: int(match[1])})
    book = _token_book()
    try:
        typer.echo(book.issue(name, role, expires_at=until))  # type: ignore[arg-type]
    except TokenNameTaken as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@tokens_app.command("list")
def tokens_list(as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object per token instead of a table.")] = False) -> None:
    """Every token: name, role, created, last used, expiry, revoked (never the secret)."""
    rows = _token_book().list()
    if as_json:
        for row in rows:
            typer.echo(json.dumps({k: (v.isoformat() if isinstance(v, datetime) else v)
                                   for k, v in row._asdict().items()}))
        return
    for row in rows:
        state = ("revoked" if row.revoked_at else "expired" if row.expires_at
                 and row.expires_at <= datetime.now(UTC) else "valid")
        used = f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never"
        until = f"{row.expires_at:%Y-%m-%d %H:%M}" if row.expires_at else "-"
        typer.echo(f"{row.name:<24} {row.role:<9} {state:<8} created "
                   f"{row.created_at:%Y-%m-%d %H:%M}  last used {used:<16}  expires {until}")


@tokens_app.command("revoke")
def tokens_revoke(name: str) -> None:
    """Revoke a name's token: the API refuses it (401) from the next request on."""
    if not _token_book().revoke(name):
        typer.echo(f"no valid token named '{name}'", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked the token of '{name}'")


def _token_book() -> TokenBook:
    from citywatch.ops.store.tokens import TokenBook

    return TokenBook(open_store(load_settings()))
