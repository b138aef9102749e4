"""Connectors: map external feeds into the canonical envelope and produce them to Kafka."""
