"""Alembic migrations of the incident store."""
