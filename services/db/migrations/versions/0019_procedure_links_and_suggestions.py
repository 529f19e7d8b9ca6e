"""procedures: short links of their QR codes, and the changes members suggest

``procedure_links`` gives a procedure's page and each step's guide a short, stable address
(``/q/<code>``) to print under its QR code; ``procedure_suggestions`` keeps what members suggest
changing (at a step, as a version showed it) for the procedure's owner and its reviews.

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tenants.base
from services.db.rls import enable_tenant_rls, grant_app_role

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "procedure_links",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("procedure_id", sa.Uuid(), nullable=False),
        sa.Column("step_key", sa.String(length=63), nullable=False),
        sa.Column("created_at", tenants.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "procedure_id"],
            ["procedures.tenant_id", "procedures.id"],
            name=op.f("fk_procedure_links_tenant_id_procedure_id_procedures"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "code", name=op.f("pk_procedure_links")),
        sa.UniqueConstraint(
            "tenant_id", "procedure_id", "step_key", name=op.f("uq_procedure_links_tenant_id_procedure_id_step_key")
        ),
    )
    op.create_table(
        "procedure_suggestions",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("procedure_id", sa.Uuid(), nullable=False),
        sa.Column("version_id", sa.Uuid(), nullable=False),
        sa.Column("step_key", sa.String(length=63), nullable=False),
        sa.Column("author_id", sa.Uuid(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("created_at", tenants.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tenants.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_id"], ["users.id"], name=op.f("fk_procedure_suggestions_author_id_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "procedure_id"],
            ["procedures.tenant_id", "procedures.id"],
            name=op.f("fk_procedure_suggestions_tenant_id_procedure_id_procedures"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "version_id"],
            ["procedure_versions.tenant_id", "procedure_versions.id"],
            name=op.f("fk_procedure_suggestions_tenant_id_version_id_procedure_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_procedure_suggestions")),
    )
    with op.batch_alter_table("procedure_suggestions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_procedure_suggestions_tenant_id_procedure_id_status"),
            ["tenant_id", "procedure_id", "status"],
            unique=False,
        )
    enable_tenant_rls("procedure_links")
    enable_tenant_rls("procedure_suggestions")
    grant_app_role(op.get_context().config.attributes.get("app_role", "guiju_app"))  # type: ignore[union-attr]


def downgrade() -> None:
    with op.batch_alter_table("procedure_suggestions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_procedure_suggestions_tenant_id_procedure_id_status"))

    op.drop_table("procedure_suggestions")
    op.drop_table("procedure_links")
