"""What every ``citywatch`` command shares: the settings (one-line errors, exit 2) and
rule files (every error as ``FILE:LINE:COL: message``, exit 1)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from citywatch.ops.settings import Settings
    from citywatch.rules.model import RuleSet


def load_settings() -> Settings:
    """The process's settings from ``CITYWATCH_*`` (imported lazily: `--help` stays fast)."""
    from pydantic import ValidationError

    from citywatch.ops.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        for err in exc.errors():
            field = "CITYWATCH_" + "_".join(map(str, err["loc"])).upper()
            typer.echo(f"configuration error: {field}: {err['msg']}", err=True)
        raise typer.Exit(2) from None


def ruleset_or_exit(path: Path) -> RuleSet:
    """The rule file, or every error as FILE:LINE:COL: message and exit 1."""
    from citywatch.rules.loader import RuleSetError, load_ruleset

    try:
        return load_ruleset(path)
    except RuleSetError as exc:
        for line in exc.errors:
            typer.echo(line, err=True)
        raise typer.Exit(1) from None
