"""Forecast models keep their precomputed forecast grid (what the stream scores against).

Revision ID: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("forecast_models") as batch:
        batch.add_column(sa.Column("grid", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("forecast_models") as batch:
        batch.drop_column("grid")
