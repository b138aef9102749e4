"""Applied rule sets (hot reload and governance).

Revision ID: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from citywatch.ops.store.schema import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rule_sets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("version", sa.String(32), nullable=False, index=True),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("base_dir", sa.String(2000), nullable=False),
        sa.Column("applied_by", sa.String(200), nullable=False),
        sa.Column("applied_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rule_sets")
