"""Connectors: map external feeds into the canonical envelope and produce them to Kafka;
the ``Source`` base class, built-ins, the runner with checkpoints and the contract kit.

May use: ``citywatch.streams`` (envelope, dead letters, topics, Kafka admin). Not the
rules, forecasts or the store.
"""
