"""automations

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tenants.base
from services.db.rls import enable_tenant_rls, grant_app_role

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_TABLES = ("automations", "automation_executions", "automation_action_runs")


def _utc(name: str, nullable: bool) -> sa.Column[object]:
    return sa.Column(name, tenants.base.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "automations",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description_zh", sa.Text(), nullable=False),
        sa.Column("description_en", sa.Text(), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("trigger_type", sa.String(length=32), nullable=False),
        sa.Column("trigger", sa.JSON(), nullable=False),
        sa.Column("conditions", sa.JSON(), nullable=False),
        sa.Column("actions", sa.JSON(), nullable=False),
        sa.Column("missed_fire", sa.String(length=16), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        _utc("created_at", False),
        _utc("updated_at", False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_automations_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_automations_owner_id_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_automations_created_by_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_automations")),
    )
    op.create_index(
        op.f("ix_automations_tenant_id_trigger_type_enabled"), "automations", ["tenant_id", "trigger_type", "enabled"]
    )

    op.create_table(
        "automation_executions",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("automation_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("event", sa.JSON(), nullable=False),
        sa.Column("action_index", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _utc("next_attempt_at", True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("dead_reason", sa.Text(), nullable=True),
        _utc("created_at", False),
        _utc("updated_at", False),
        _utc("finished_at", True),
        sa.ForeignKeyConstraint(
            ["tenant_id", "automation_id"],
            ["automations.tenant_id", "automations.id"],
            name=op.f("fk_automation_executions_tenant_id_automation_id_automations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_automation_executions")),
        sa.UniqueConstraint(
            "tenant_id",
            "automation_id",
            "event_id",
            name=op.f("uq_automation_executions_tenant_id_automation_id_event_id"),
        ),
    )
    op.create_index(
        op.f("ix_automation_executions_tenant_id_automation_id_id"),
        "automation_executions",
        ["tenant_id", "automation_id", "id"],
    )
    op.create_index(
        op.f("ix_automation_executions_tenant_id_status_updated_at"),
        "automation_executions",
        ["tenant_id", "status", "updated_at"],
    )
    op.create_index(
        op.f("ix_automation_executions_tenant_id_created_at"), "automation_executions", ["tenant_id", "created_at"]
    )

    op.create_table(
        "automation_action_runs",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("execution_id", sa.Uuid(), nullable=False),
        sa.Column("action_index", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("output", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _utc("started_at", False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        _utc("created_at", False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "execution_id"],
            ["automation_executions.tenant_id", "automation_executions.id"],
            name="fk_automation_action_runs_execution",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_automation_action_runs")),
        sa.UniqueConstraint(
            "tenant_id",
            "execution_id",
            "action_index",
            "attempt",
            name="uq_automation_action_runs_attempt",
        ),
    )

    for table in _TABLES:
        enable_tenant_rls(table)
    grant_app_role(op.get_context().config.attributes.get("app_role", "guiju_app"))  # type: ignore[union-attr]


def downgrade() -> None:
    for table in reversed(_TABLES):
        op.drop_table(table)
