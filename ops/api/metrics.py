"""The API's Prometheus metrics (prometheus-client), in a registry of the app's own:
requests by method, route and status, and what the store holds, read when scraped.

Example:
    >>> from citywatch.ops.store.store import IncidentStore
    >>> store = IncidentStore("sqlite://"); store.create_schema()
    >>> metrics = ApiMetrics(store)
    >>> metrics.requests.labels(method="GET", route="/incidents", status="200").inc()
    >>> text = metrics.exposition().decode()
    >>> 'citywatch_incidents{status="new"} 0.0' in text
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from citywatch.ops.store.store import IncidentStore
from citywatch.ops.store.summary import store_summary


class _StoreCollector(Collector):
    """Gauges of the store's contents, read at each scrape."""

    def __init__(self, store: IncidentStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            summary = store_summary(self.store)
        except Exception:  # the store away: /health says so; no store gauges meanwhile
            return
        incidents = GaugeMetricFamily("citywatch_incidents", "Incidents by status.",
                                      labels=["status"])
        for status, count in summary["incidents_by_status"].items():
            incidents.add_metric([status], count)
        yield incidents
        alerts = GaugeMetricFamily("citywatch_alerts_stored", "Alerts in the store.",
                                   labels=["domain"])
        for domain, count in sorted(summary["alerts_by_domain"].items()):
            alerts.add_metric([domain], count)
        yield alerts
        if summary["last_alert_at"] is not None:
            yield GaugeMetricFamily("citywatch_last_alert_timestamp_seconds",
                                    "When the newest alert was raised (Unix time).",
                                    value=summary["last_alert_at"].timestamp())


class ApiMetrics:
    """Request counts and store gauges for ``GET /metrics``."""

    def __init__(self, store: IncidentStore) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("citywatch_api_requests", "API requests answered.",
                                ["method", "route", "status"], registry=self.registry)
        self.registry.register(_StoreCollector(store))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class CountRequests:
    """ASGI middleware counting each answered request by method, route template and
    status (streams such as ``/stream`` pass straight through)."""

    def __init__(self, app: Any, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def noting_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(method=scope["method"], route=route,
                                         status=str(status)).inc()
