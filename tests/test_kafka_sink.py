"""The connector's Kafka sink against a real embedded broker that restarts empty."""

from __future__ import annotations

import time
from pathlib import Path

from citywatch.connectors.kafka_sink import KafkaSink
from citywatch.streams.broker import EmbeddedBroker
from citywatch.streams.kafka_admin import KafkaAdmin
from citywatch.streams.topics import TopicNames


def test_sink_recreates_topics_a_restarted_broker_lost_and_loses_nothing_after(
        tmp_path: Path) -> None:
    """The memory-only broker restarts between two sends: what was sent before is gone
    with it, but every message sent after reaches the re-created topic. Whether the
    producer learns of the loss from a delivery report or refuses the send itself (its
    metadata already says the topic is gone: this used to end the connector with a
    traceback) depends on timing; both paths re-create the topic and send."""
    topics = TopicNames("sink.")
    created: list[list[str]] = []
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as broker, \
            KafkaAdmin(broker.bootstrap) as admin:
        admin.ensure_topics([topics.deadletter], 1)

        def recreate(lost: list[str]) -> None:
            created.append(lost)
            admin.ensure_topics(lost, 1)

        with KafkaSink(broker.bootstrap, topics, recreate=recreate) as sink:
            sink._produce(topics.deadletter, b"before", b"k")
            sink.flush()
            broker.stop()
            broker.start_process()
            broker.wait_ready()
            for i in range(40):
                sink._produce(topics.deadletter, f"after {i}".encode(), b"k")
                time.sleep(0.1)
            sink.flush()
        assert created and all(lost == [topics.deadletter] for lost in created)
        values = [value for _, value in admin.read_partition(topics.deadletter, 0)]
    # each once; not in order: those refused while the topic was gone are sent again
    # at the flush, after the ones sent once it was back
    assert sorted(values) == sorted(f"after {i}".encode() for i in range(40))
