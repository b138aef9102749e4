"""Alerts and incidents (the walking-skeleton schema).

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from citywatch.ops.store.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("rule_id", sa.String(64), nullable=False, index=True),
        sa.Column("domain", sa.String(32), nullable=False, index=True),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("scope", sa.String(200), nullable=False),
        sa.Column("zone_layer", sa.String(64)),
        sa.Column("zone_id", sa.String(200), index=True),
        sa.Column("zone_name", sa.String(200)),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("severity_rank", sa.Integer, nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("first_seen", UTCDateTime, nullable=False, index=True),
        sa.Column("last_seen", UTCDateTime, nullable=False),
        sa.Column("alert_count", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("incident_id", sa.String(36), sa.ForeignKey("incidents.id"),
                  nullable=False, index=True),
        sa.Column("rule_id", sa.String(64), nullable=False, index=True),
        sa.Column("rule_version", sa.String(32), nullable=False),
        sa.Column("model_id", sa.String(64)),
        sa.Column("model_version", sa.String(32)),
        sa.Column("domain", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("urgency", sa.String(16), nullable=False),
        sa.Column("certainty", sa.String(16), nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("entity_id", sa.String(200), nullable=False),
        sa.Column("event_time", UTCDateTime, nullable=False),
        sa.Column("raised_at", UTCDateTime, nullable=False),
        sa.Column("zone_layer", sa.String(64)),
        sa.Column("zone_id", sa.String(200)),
        sa.Column("zone_name", sa.String(200)),
        sa.Column("geometry", sa.JSON),
        sa.Column("attributes", sa.JSON, nullable=False),
        sa.Column("source_event_ids", sa.JSON, nullable=False),
    )
    op.create_index("ix_alerts_domain_time", "alerts", ["domain", "event_time"])


def downgrade() -> None:
    op.drop_table("alerts")
    op.drop_table("incidents")
