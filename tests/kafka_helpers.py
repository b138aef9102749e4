"""Reading whole topics back in tests (real Kafka protocol, no fakes)."""

from __future__ import annotations

from citywatch.streams.kafka_admin import KafkaAdmin


def read_topic(bootstrap: str, topic: str, timeout_s: float = 10.0) -> list[bytes]:
    """Every message currently in ``topic``, in partition order."""
    with KafkaAdmin(bootstrap) as admin:
        partitions = sorted(tp.partition for tp in admin.end_offsets([topic]))
        return [value for p in partitions
                for _, value in admin.read_partition(topic, p, timeout_s=timeout_s)]
