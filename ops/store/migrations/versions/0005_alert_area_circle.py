"""Alerts keep the circle of a proximity rule (for CAP <circle>).

Revision ID: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("area_circle", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("area_circle")
