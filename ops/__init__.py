"""Operational side of citywatch: CLI, settings, incident store, embedded broker, demo."""
