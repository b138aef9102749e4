"""Reading whole topics back in tests (real Kafka protocol, no fakes)."""

from __future__ import annotations

import time

from kafka import KafkaConsumer

from citywatch.ops.kafka_admin import KafkaAdmin


def read_topic(bootstrap: str, topic: str, timeout_s: float = 10.0) -> list[bytes]:
    """Every message currently in ``topic``, in partition order."""
    with KafkaAdmin(bootstrap) as admin:
        ends = admin.end_offsets([topic])  # true ends (see KafkaAdmin.end_offsets)
    if not ends:
        return []
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        consumer.assign(list(ends))
        consumer.seek_to_beginning(*ends)
        values: dict = {tp: [] for tp in ends}
        deadline = time.monotonic() + timeout_s
        while (any(len(values[tp]) < end for tp, end in ends.items())
               and time.monotonic() < deadline):
            for tp, records in consumer.poll(timeout_ms=100).items():
                values[tp].extend(r.value for r in records if r.offset < ends[tp])
        return [v for tp in sorted(ends, key=lambda t: t.partition) for v in values[tp]]
    finally:
        consumer.close()
