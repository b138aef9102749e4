"""Reading whole topics back in tests (real Kafka protocol, no fakes)."""

from __future__ import annotations

from kafka import KafkaConsumer, TopicPartition


def read_topic(bootstrap: str, topic: str, timeout_s: float = 10.0) -> list[bytes]:
    """Every message currently in ``topic``, in partition order."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        values: list[bytes] = []
        remaining = sum(ends.values())
        polls = int(timeout_s * 10)
        while remaining > len(values) and polls > 0:
            for records in consumer.poll(timeout_ms=100).values():
                values.extend(r.value for r in records)
            polls -= 1
        return values
    finally:
        consumer.close()
