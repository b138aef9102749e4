"""Streams: what flows through citywatch and how it flows.

Holds: the canonical messages (event envelope, columnar event frames, alert, dead letter,
the CAP vocabulary), topic names, the stream settings, Kafka plumbing (admin, the
embedded broker launcher), the ingest and store stages (each in a process of its own),
the rule-state changelog, team deliveries and the Faust worker, which knows the rule
engine and the store only through interfaces it owns (``worker.RuleSource``,
``worker.ModelSource``, ``store_stage.AlertSink``, ``routing.DeliveryQueue``).

May use: third-party libraries only (Kafka clients, Faust, msgspec, numpy); no other
citywatch package. It is the bottom layer (see docs/architecture.md).
"""
