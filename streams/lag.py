"""How far behind each stage is: consumer-group lag, upstream first.

Example:
    >>> with KafkaAdmin("127.0.0.1:9092") as admin:     # doctest: +SKIP
    ...     stage_lags(admin, StreamSettings())
    {'ingest': 0, 'rules': 0, 'zone_rules': 0, 'store': 0}
"""

from __future__ import annotations

from citywatch.streams.ingest import ingest_group
from citywatch.streams.kafka_admin import KafkaAdmin
from citywatch.streams.settings import StreamSettings
from citywatch.streams.store_stage import store_group


def stage_lags(admin: KafkaAdmin, settings: StreamSettings) -> dict[str, int]:
    """Unprocessed messages per stage, upstream first."""
    topics = settings.topics
    return {
        "ingest": admin.group_lag(ingest_group(settings), topics.raw_all),
        "rules": admin.group_lag(settings.app_id, [topics.events]),
        "zone_rules": admin.group_lag(settings.app_id, [topics.events_keyed]),
        "store": admin.group_lag(store_group(settings), [topics.alerts]),
    }
