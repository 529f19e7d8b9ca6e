"""notifications and webhooks

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tenants.base
from services.db.rls import enable_tenant_rls, grant_app_role

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_TABLES = (
    "notifications",
    "automation_webhooks",
    "automation_webhook_deliveries",
    "automation_default_escalations",
)


def _utc(name: str, nullable: bool) -> sa.Column[object]:
    return sa.Column(name, tenants.base.UTCDateTime(timezone=True), nullable=nullable)


def _automation_fk(name: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id", "automation_id"], ["automations.tenant_id", "automations.id"], name=name, ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("link", sa.String(length=2000), nullable=True),
        sa.Column("dedupe_key", sa.String(length=200), nullable=True),
        _utc("read_at", True),
        _utc("created_at", False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_notifications_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_notifications_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_notifications")),
        sa.UniqueConstraint(
            "tenant_id", "user_id", "dedupe_key", name=op.f("uq_notifications_tenant_id_user_id_dedupe_key")
        ),
    )
    op.create_index(op.f("ix_notifications_tenant_id_user_id_id"), "notifications", ["tenant_id", "user_id", "id"])

    op.create_table(
        "automation_webhooks",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("automation_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("signing_nonce", sa.String(length=64), nullable=False),
        _utc("rotated_at", False),
        _utc("created_at", False),
        _automation_fk(op.f("fk_automation_webhooks_tenant_id_automation_id_automations")),
        sa.PrimaryKeyConstraint("tenant_id", "automation_id", name=op.f("pk_automation_webhooks")),
        sa.UniqueConstraint("tenant_id", "token_hash", name=op.f("uq_automation_webhooks_tenant_id_token_hash")),
    )

    op.create_table(
        "automation_webhook_deliveries",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("automation_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        _utc("created_at", False),
        _automation_fk("fk_automation_webhook_deliveries_automation"),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_automation_webhook_deliveries")),
    )
    op.create_index(
        op.f("ix_automation_webhook_deliveries_tenant_id_automation_id_id"),
        "automation_webhook_deliveries",
        ["tenant_id", "automation_id", "id"],
    )

    op.create_table(
        "automation_default_escalations",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("procedure_id", sa.Uuid(), nullable=False),
        sa.Column("step_key", sa.String(length=63), nullable=False),
        _utc("created_at", False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_automation_default_escalations_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "procedure_id", "step_key", name=op.f("pk_automation_default_escalations")
        ),
    )

    for table in _TABLES:
        enable_tenant_rls(table)
    grant_app_role(op.get_context().config.attributes.get("app_role", "guiju_app"))  # type: ignore[union-attr]


def downgrade() -> None:
    for table in reversed(_TABLES):
        op.drop_table(table)
