"""Self-contained rule-set versions: the zone and site layer files a version uses are
stored with it (by content hash), so any worker loads a version from the store alone.

Revision ID: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rule_layer_files",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    with op.batch_alter_table("rule_sets") as batch:
        batch.add_column(sa.Column("layers", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rule_sets") as batch:
        batch.drop_column("layers")
    op.drop_table("rule_layer_files")
