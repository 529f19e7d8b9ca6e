"""runs

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tenants.base
from services.db.rls import enable_tenant_rls, grant_app_role

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TABLES = ("runs", "step_instances", "run_comments", "run_exceptions")


def _utc(name: str, nullable: bool) -> sa.Column[object]:
    return sa.Column(name, tenants.base.UTCDateTime(timezone=True), nullable=nullable)


def _run_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id", "run_id"],
        ["runs.tenant_id", "runs.id"],
        name=op.f(f"fk_{table}_tenant_id_run_id_runs"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("procedure_id", sa.Uuid(), nullable=False),
        sa.Column("version_id", sa.Uuid(), nullable=False),
        sa.Column("version_number", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("collection_id", sa.Uuid(), nullable=True),
        sa.Column("record_id", sa.Uuid(), nullable=True),
        sa.Column("parent_run_id", sa.Uuid(), nullable=True),
        sa.Column("parent_step_id", sa.Integer(), nullable=True),
        sa.Column("started_by", sa.Uuid(), nullable=True),
        _utc("started_at", False),
        _utc("finished_at", True),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("lock_version", sa.Integer(), nullable=False),
        _utc("created_at", False),
        _utc("updated_at", False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_runs_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["started_by"], ["users.id"], name=op.f("fk_runs_started_by_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_runs")),
    )
    op.create_index(op.f("ix_runs_tenant_id_status_id"), "runs", ["tenant_id", "status", "id"])
    op.create_index(
        op.f("ix_runs_tenant_id_procedure_id_status_id"), "runs", ["tenant_id", "procedure_id", "status", "id"]
    )
    op.create_index(op.f("ix_runs_tenant_id_parent_run_id"), "runs", ["tenant_id", "parent_run_id"])

    op.create_table(
        "step_instances",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("step_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("procedure_id", sa.Uuid(), nullable=False),
        sa.Column("run_title", sa.String(length=300), nullable=False),
        sa.Column("key", sa.String(length=63), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("optional", sa.Boolean(), nullable=False),
        sa.Column("assignee_id", sa.Uuid(), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=True),
        _utc("ready_at", True),
        _utc("due_at", True),
        _utc("expires_at", True),
        _utc("wait_until", True),
        _utc("remind_at", True),
        _utc("reminded_at", True),
        _utc("overdue_notified_at", True),
        _utc("action_requested_at", True),
        _utc("finished_at", True),
        sa.Column("finished_by", sa.Uuid(), nullable=True),
        sa.Column("outcome", sa.String(length=200), nullable=True),
        _utc("created_at", False),
        _utc("updated_at", False),
        _run_fk("step_instances"),
        sa.PrimaryKeyConstraint("tenant_id", "run_id", "step_id", name=op.f("pk_step_instances")),
    )
    op.create_index(
        op.f("ix_step_instances_tenant_id_assignee_id_status_due_at"),
        "step_instances",
        ["tenant_id", "assignee_id", "status", "due_at"],
    )
    op.create_index(
        op.f("ix_step_instances_tenant_id_status_due_at"), "step_instances", ["tenant_id", "status", "due_at"]
    )
    op.create_index(
        op.f("ix_step_instances_tenant_id_role_status_due_at"),
        "step_instances",
        ["tenant_id", "role", "status", "due_at"],
    )
    op.create_index(
        op.f("ix_step_instances_tenant_id_procedure_id_key_ready_at"),
        "step_instances",
        ["tenant_id", "procedure_id", "key", "ready_at"],
    )

    op.create_table(
        "run_comments",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("step_id", sa.Integer(), nullable=True),
        sa.Column("author_id", sa.Uuid(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("file_ids", sa.JSON(), nullable=False),
        _utc("created_at", False),
        _run_fk("run_comments"),
        sa.ForeignKeyConstraint(
            ["author_id"], ["users.id"], name=op.f("fk_run_comments_author_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_run_comments")),
    )
    op.create_index(op.f("ix_run_comments_tenant_id_run_id_id"), "run_comments", ["tenant_id", "run_id", "id"])

    op.create_table(
        "run_exceptions",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("exception_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=63), nullable=False),
        sa.Column("step_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("file_ids", sa.JSON(), nullable=False),
        sa.Column("raised_by", sa.Uuid(), nullable=True),
        _utc("raised_at", False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("resolved_by", sa.Uuid(), nullable=True),
        _utc("resolved_at", True),
        _utc("escalate_at", True),
        _utc("escalated_at", True),
        _utc("created_at", False),
        _run_fk("run_exceptions"),
        sa.PrimaryKeyConstraint("tenant_id", "run_id", "exception_id", name=op.f("pk_run_exceptions")),
    )
    op.create_index(
        op.f("ix_run_exceptions_tenant_id_status_raised_at"), "run_exceptions", ["tenant_id", "status", "raised_at"]
    )

    for table in _TABLES:
        enable_tenant_rls(table)
    grant_app_role(op.get_context().config.attributes.get("app_role", "guiju_app"))  # type: ignore[union-attr]


def downgrade() -> None:
    for table in reversed(_TABLES):
        op.drop_table(table)
