"""webhook replays: signed inbound deliveries remembered while their signature is accepted

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tenants.base
from services.db.rls import enable_tenant_rls, grant_app_role

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "automation_webhook_replays",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("automation_id", sa.Uuid(), nullable=False),
        sa.Column("signature", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("answer", sa.JSON(), nullable=False),
        sa.Column("expires_at", tenants.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", tenants.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "automation_id"],
            ["automations.tenant_id", "automations.id"],
            name="fk_automation_webhook_replays_automation",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "automation_id", "signature", name=op.f("pk_automation_webhook_replays")),
    )
    op.create_index(
        op.f("ix_automation_webhook_replays_tenant_id_expires_at"),
        "automation_webhook_replays",
        ["tenant_id", "expires_at"],
    )
    enable_tenant_rls("automation_webhook_replays")
    grant_app_role(op.get_context().config.attributes.get("app_role", "guiju_app"))  # type: ignore[union-attr]


def downgrade() -> None:
    op.drop_table("automation_webhook_replays")
