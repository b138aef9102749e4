"""One settings object for the whole process, read from ``CITYWATCH_*`` env vars.

:class:`Settings` is the stream layer's :class:`~citywatch.streams.settings.StreamSettings`
plus what only the top layer needs (store, API, rule files, CAP export). The composition
root builds one and passes it down; lower layers see it as ``StreamSettings``.

Example:
    >>> s = Settings(kafka_bootstrap="kafka:9092", topic_prefix="city.")
    >>> s.topics.alerts
    'city.alerts'
    >>> Settings(**s.model_dump()).kafka_bootstrap
    'kafka:9092'
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from citywatch.streams.settings import CommaList, StreamSettings

DEMO_DIR = Path(__file__).parent / "demo"


class Settings(StreamSettings):
    """citywatch configuration; every field can be set as ``CITYWATCH_<FIELD>``."""

    database_url: str = Field(default="", description="SQLAlchemy URL of the incident "
                                                      "store (default: SQLite "
                                                      "citywatch.db in the data directory).")
    rules_path: Path = Field(default=DEMO_DIR / "rules.yaml",
                             description="Rule set (YAML) with its zone layers.")
    cap_sender: str = Field(default="citywatch@city.example", pattern=r"^[^\s,<&]+$",
                            description="CAP <sender> of exported alerts.")
    cap_status: Literal["Actual", "Exercise", "Test", "System", "Draft"] = Field(
        default="Actual", description="CAP <status> of exported alerts: 'Exercise' or "
                                      "'Test' for a sandbox or a replay of history.")
    rules_approval: Literal["auto", "required", "off"] = Field(
        default="auto", description="Two-person approval of rule changes: 'required', "
                                    "'off', or 'auto' (required once more than one admin "
                                    "token exists).")
    api_host: str = Field(default="127.0.0.1", description="API bind address.")
    api_port: int = Field(default=8080, ge=1, le=65535, description="API port.")
    stream_poll_seconds: float = Field(default=1.0, gt=0,
                                       description="How often /stream looks for changes.")
    api_max_body_bytes: int = Field(default=1_000_000, ge=1024,
                                    description="Largest request body the API reads (413).")
    api_max_rules_bytes: int = Field(
        default=20_000_000, ge=1024, description="Largest rule proposal (with its zone "
                                                 "files) the API reads (413).")
    api_max_url_bytes: int = Field(default=8192, ge=256,
                                   description="Longest URL the API accepts (414).")
    api_max_header_bytes: int = Field(default=32768, ge=1024,
                                      description="Largest request head the API accepts (431).")
    api_auth_failures_per_minute: int = Field(
        default=20, ge=1, description="Failed authentications per client address and minute "
                                      "before the API answers 429.")
    api_cors_origins: CommaList = Field(
        default=[], description="Origins allowed cross-origin requests (comma-separated); "
                                "none by default.")
    console_tiles: str | None = Field(
        default=None, description="Tile URL template for the console's map "
                                  "(https://tiles.city.example/{z}/{x}/{y}.png); unset: "
                                  "the zone layers alone, which works offline.")

    @model_validator(mode="after")
    def _default_store(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.default_store_path}"
        return self

    @property
    def default_store_path(self) -> Path:
        """Where the default SQLite store lives: ``<data_dir>/citywatch.db``."""
        return self.data_dir / "citywatch.db"


NOT_SETTINGS = frozenset({
    "CITYWATCH_TOKEN",  # the CLI's API token (rules, tokens commands)
    "CITYWATCH_TEST_DATABASE_URL", "CITYWATCH_SHARED_DATA",  # the test suite's
})
"""``CITYWATCH_*`` variables that are read, but not as settings."""


def unknown_variables(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """Each ``CITYWATCH_*`` variable that is no setting, with the closest setting's name.

    >>> unknown_variables({"CITYWATCH_API_PROT": "8081", "CITYWATCH_API_PORT": "8081"})
    [('CITYWATCH_API_PROT', 'CITYWATCH_API_PORT')]
    """
    fields = [name.upper() for name in Settings.model_fields]
    unknown = sorted(name for name in environ if name.upper().startswith("CITYWATCH_")
                     and name.upper()[10:] not in fields and name.upper() not in NOT_SETTINGS)
    closest = {name: difflib.get_close_matches(name.upper()[10:], fields, n=1, cutoff=0.7)
               for name in unknown}
    return [(name, f"CITYWATCH_{closest[name][0]}" if closest[name] else None)
            for name in unknown]
