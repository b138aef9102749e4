"""``citywatch`` commands: the responder API: serve it, and manage its tokens."""

from __future__ import annotations

from typing import Annotated

import typer

from citywatch.ops.cli.common import load_settings

app = typer.Typer()
tokens_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")

@app.command()
def serve() -> None:
    """Serve the responder API (CITYWATCH_API_HOST:CITYWATCH_API_PORT)."""
    import uvicorn

    from citywatch.ops.api.app import create_api

    settings = load_settings()
    uvicorn.run(create_api(settings), host=settings.api_host, port=settings.api_port,
                log_level="info")


@tokens_app.command("add")
def tokens_add(name: str, role: Annotated[str, typer.Option(
        help="viewer, operator, analyst or admin")] = "viewer") -> None:
    """Issue an API token; it is printed once and only its hash is stored."""
    from citywatch.ops.store.store import IncidentStore
    from citywatch.ops.store.tokens import ROLES, TokenBook

    if role not in ROLES:
        typer.echo(f"--role must be one of {', '.join(ROLES)}", err=True)
        raise typer.Exit(2)
    store = IncidentStore(load_settings().database_url)
    store.create_schema()
    typer.echo(TokenBook(store).issue(name, role))  # type: ignore[arg-type]
