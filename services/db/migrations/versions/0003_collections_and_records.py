"""collections and records

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tenants.base
from services.db.rls import enable_tenant_rls, grant_app_role

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = ("collections", "collection_versions", "records", "record_unique_values")


def upgrade() -> None:
    op.create_table(
        "collections",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("entity_scoped", sa.Boolean(), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", tenants.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tenants.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_collections_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_collections")),
        sa.UniqueConstraint("tenant_id", "key", name=op.f("uq_collections_tenant_id_key")),
    )
    op.create_table(
        "collection_versions",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("collection_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", tenants.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "collection_id"],
            ["collections.tenant_id", "collections.id"],
            name=op.f("fk_collection_versions_tenant_id_collection_id_collections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "collection_id", "version", name=op.f("pk_collection_versions")),
    )
    op.create_table(
        "records",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("collection_id", sa.Uuid(), nullable=False),
        sa.Column("entity_id", sa.Uuid(), nullable=True),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("updated_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", tenants.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tenants.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", tenants.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id", "collection_id"],
            ["collections.tenant_id", "collections.id"],
            name=op.f("fk_records_tenant_id_collection_id_collections"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "entity_id"],
            ["entities.tenant_id", "entities.id"],
            name=op.f("fk_records_tenant_id_entity_id_entities"),
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_records")),
    )
    with op.batch_alter_table("records", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_records_tenant_id_collection_id_id"), ["tenant_id", "collection_id", "id"], unique=False
        )
    op.create_table(
        "record_unique_values",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("collection_id", sa.Uuid(), nullable=False),
        sa.Column("field_key", sa.String(length=63), nullable=False),
        sa.Column("value_hash", sa.String(length=64), nullable=False),
        sa.Column("record_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", tenants.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "collection_id"],
            ["collections.tenant_id", "collections.id"],
            name=op.f("fk_record_unique_values_tenant_id_collection_id_collections"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "record_id"],
            ["records.tenant_id", "records.id"],
            name=op.f("fk_record_unique_values_tenant_id_record_id_records"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "collection_id", "field_key", "value_hash", name=op.f("pk_record_unique_values")
        ),
    )
    with op.batch_alter_table("record_unique_values", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_record_unique_values_tenant_id_record_id"), ["tenant_id", "record_id"], unique=False
        )
    for table in TABLES:
        enable_tenant_rls(table)
    grant_app_role(op.get_context().config.attributes.get("app_role", "guiju_app"))  # type: ignore[union-attr]


def downgrade() -> None:
    with op.batch_alter_table("record_unique_values", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_record_unique_values_tenant_id_record_id"))
    op.drop_table("record_unique_values")
    with op.batch_alter_table("records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_records_tenant_id_collection_id_id"))
    op.drop_table("records")
    op.drop_table("collection_versions")
    op.drop_table("collections")
