"""records: archived collections, sample records; gallery: a workspace's onboarding wizard

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tenants.base
from services.db.rls import enable_tenant_rls, grant_app_role

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("collections", schema=None) as batch_op:
        batch_op.add_column(sa.Column("archived_at", tenants.base.UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table("records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sample", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "onboarding_wizards",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("updated_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", tenants.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tenants.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_onboarding_wizards_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_onboarding_wizards")),
    )
    enable_tenant_rls("onboarding_wizards")
    grant_app_role(op.get_context().config.attributes.get("app_role", "guiju_app"))  # type: ignore[union-attr]


def downgrade() -> None:
    op.drop_table("onboarding_wizards")
    with op.batch_alter_table("records", schema=None) as batch_op:
        batch_op.drop_column("sample")
    with op.batch_alter_table("collections", schema=None) as batch_op:
        batch_op.drop_column("archived_at")
