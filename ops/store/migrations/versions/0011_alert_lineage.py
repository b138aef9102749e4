"""Alerts keep where their source events came from (``file:line``, raw topic position)
and what a stateful or forecast rule computed, for ``citywatch explain``.

Revision ID: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("source_origins", sa.JSON, nullable=True))
        batch.add_column(sa.Column("evaluation", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("evaluation")
        batch.drop_column("source_origins")
