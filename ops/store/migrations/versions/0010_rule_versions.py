"""Rule-set versions as governed artefacts: proposed with their validation result,
approved or rejected by a second person; workers report the version they evaluate.

Revision ID: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from citywatch.ops.store.schema import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rule_versions",
        sa.Column("version", sa.String(32), primary_key=True),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("base_dir", sa.String(2000), nullable=False),
        sa.Column("layers", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("findings", sa.JSON, nullable=False),
        sa.Column("based_on", sa.String(32), nullable=True),
        sa.Column("proposed_by", sa.String(200), nullable=False),
        sa.Column("proposed_at", UTCDateTime, nullable=False),
        sa.Column("decided_by", sa.String(200), nullable=True),
        sa.Column("decided_at", UTCDateTime, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
    )
    op.create_table(
        "worker_heartbeats",
        sa.Column("worker", sa.String(200), primary_key=True),
        sa.Column("rules_version", sa.String(32), nullable=False),
        sa.Column("rules_problem", sa.Text, nullable=True),
        sa.Column("seen_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("worker_heartbeats")
    op.drop_table("rule_versions")
