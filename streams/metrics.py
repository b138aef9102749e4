"""A worker's Prometheus metrics (prometheus-client), in a registry of its own.

Per stage (``ingest``: raw records → event frames; ``rules``: events → alerts;
``store``: alerts → the incident store): messages in and out, dead letters, consumer lag;
plus store write latency, rule evaluation time, the live rule-set version and the
forecast model versions. ``citywatch worker --metrics-port N`` serves them on
``http://0.0.0.0:N/metrics``.

Example:
    >>> metrics = WorkerMetrics()
    >>> metrics.records.labels(stage="ingest", direction="in").inc(3)
    >>> metrics.set_ruleset("ab12cd34ef56")
    >>> text = metrics.exposition().decode()
    >>> 'citywatch_records_total{direction="in",stage="ingest"} 3.0' in text
    True
    >>> 'citywatch_ruleset_info{version="ab12cd34ef56"} 1.0' in text
    True
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

STAGES = ("ingest", "rules", "zone_rules", "store")


class WorkerMetrics:
    """The metrics one worker process keeps; :meth:`serve` exposes them over HTTP."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.records = Counter(
            "citywatch_records", "Messages a stage consumed (in) and produced (out): raw "
            "records and events at ingest, events and alerts at rules, alerts and newly "
            "stored alerts at store.", ["stage", "direction"], registry=self.registry)
        self.dead_letters = Counter("citywatch_dead_letters", "Messages dead-lettered.",
                                    ["stage"], registry=self.registry)
        self.store_write = Histogram(
            "citywatch_store_write_seconds", "Time to write one batch of alerts (with its "
            "deliveries) to the incident store.", registry=self.registry)
        self.rule_evaluation = Histogram(
            "citywatch_rule_evaluation_seconds", "Time to evaluate one frame of events.",
            registry=self.registry)
        self.lag = Gauge("citywatch_consumer_lag", "Messages a stage has still to consume.",
                         ["stage"], registry=self.registry)
        self.ruleset = Gauge("citywatch_ruleset_info", "The rule-set version evaluated (1).",
                             ["version"], registry=self.registry)
        self.models = Gauge("citywatch_forecast_model_info",
                            "Forecast model version in use per series (1).",
                            ["series", "version"], registry=self.registry)
        for stage in STAGES:  # every series exists from the start, at 0
            for direction in ("in", "out"):
                self.records.labels(stage=stage, direction=direction)
            self.dead_letters.labels(stage=stage)
            self.lag.labels(stage=stage)

    def set_ruleset(self, version: str) -> None:
        self.ruleset.clear()
        self.ruleset.labels(version=version).set(1)

    def set_models(self, versions: Mapping[str, str]) -> None:
        self.models.clear()
        for series, version in versions.items():
            self.models.labels(series=series, version=version).set(1)

    def set_lags(self, lags: Mapping[str, int]) -> None:
        for stage, lag in lags.items():
            self.lag.labels(stage=stage).set(lag)

    def exposition(self) -> bytes:
        """The metrics in Prometheus text format."""
        return generate_latest(self.registry)

    def serve(self, port: int, host: str = "0.0.0.0") -> None:  # noqa: S104 - scraped
        """Serve ``/metrics`` on ``host:port`` from a background thread."""
        start_http_server(port, addr=host, registry=self.registry)
