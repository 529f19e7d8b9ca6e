"""business calendar: the country whose public holidays and make-up working days it follows

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("business_calendars", schema=None) as batch_op:
        batch_op.add_column(sa.Column("holiday_country", sa.String(length=2), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("business_calendars", schema=None) as batch_op:
        batch_op.drop_column("holiday_country")
