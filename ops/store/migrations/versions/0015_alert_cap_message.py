"""Alerts raised from a CAP message keep which one (``sender,identifier``), so a later
CAP ``Update`` or ``Cancel`` that references it finds the incidents it raised.

Revision ID: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("cap_message", sa.String(512), nullable=True))
        batch.create_index("ix_alerts_cap_message", ["cap_message"])


def downgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.drop_index("ix_alerts_cap_message")
        batch.drop_column("cap_message")
