"""A subscription may have a secret feed URL (its key kept hashed), for feed readers that
cannot send a Bearer token.

Revision ID: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("feed_key_hash", sa.String(64), nullable=True))
        batch.create_unique_constraint("uq_subscriptions_feed_key_hash", ["feed_key_hash"])


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_constraint("uq_subscriptions_feed_key_hash", type_="unique")
        batch.drop_column("feed_key_hash")
