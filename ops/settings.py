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

from pathlib import Path
from typing import Literal

from pydantic import Field

from citywatch.streams.settings import CommaList, StreamSettings

DEMO_DIR = Path(__file__).parent / "demo"


class Settings(StreamSettings):
    """citywatch configuration; every field can be set as ``CITYWATCH_<FIELD>``."""

    database_url: str = Field(default="sqlite:///citywatch.db",
                              description="SQLAlchemy URL of the incident store.")
    rules_path: Path = Field(default=DEMO_DIR / "rules.yaml",
                             description="Rule set (YAML) with its zone layers.")
    cap_sender: str = Field(default="citywatch@city.example", pattern=r"^[^\s,<&]+$",
                            description="CAP <sender> of exported alerts.")
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
