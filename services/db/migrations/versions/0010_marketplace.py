"""marketplace: publishers, listings, versions and tenants' plugin installations

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tenants.base
from services.db.rls import enable_tenant_rls, grant_app_role

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _utc(name: str, nullable: bool) -> sa.Column[object]:
    return sa.Column(name, tenants.base.UTCDateTime(timezone=True), nullable=nullable)


def _user_fk(column: str, table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], ["users.id"], name=op.f(f"fk_{table}_{column}_users"), ondelete="SET NULL")


def upgrade() -> None:
    op.create_table(
        "plugin_publishers",
        sa.Column("publisher_tenant_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        _utc("created_at", False),
        sa.ForeignKeyConstraint(
            ["publisher_tenant_id"],
            ["tenants.id"],
            name=op.f("fk_plugin_publishers_publisher_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("publisher_tenant_id", name=op.f("pk_plugin_publishers")),
        sa.UniqueConstraint("name", name=op.f("uq_plugin_publishers_name")),
    )
    op.create_table(
        "plugin_listings",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("publisher", sa.String(length=200), nullable=False),
        sa.Column("publisher_tenant_id", sa.Uuid(), nullable=True),
        sa.Column("category", sa.String(length=32), nullable=False),
        _utc("created_at", False),
        sa.ForeignKeyConstraint(
            ["publisher_tenant_id"],
            ["tenants.id"],
            name=op.f("fk_plugin_listings_publisher_tenant_id_tenants"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_plugin_listings")),
    )
    op.create_table(
        "plugin_versions",
        sa.Column("plugin", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("endpoint", sa.String(length=2000), nullable=True),
        sa.Column("signing_secret", sa.Text(), nullable=True),
        sa.Column("source_file_id", sa.Uuid(), nullable=True),
        sa.Column("source_sha256", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("check_report", sa.JSON(), nullable=True),
        sa.Column("review_reason", sa.Text(), nullable=True),
        sa.Column("submitted_by", sa.Uuid(), nullable=True),
        _utc("submitted_at", False),
        sa.Column("reviewed_by", sa.Uuid(), nullable=True),
        _utc("reviewed_at", True),
        sa.ForeignKeyConstraint(
            ["plugin"],
            ["plugin_listings.name"],
            name=op.f("fk_plugin_versions_plugin_plugin_listings"),
            ondelete="CASCADE",
        ),
        _user_fk("submitted_by", "plugin_versions"),
        _user_fk("reviewed_by", "plugin_versions"),
        sa.PrimaryKeyConstraint("plugin", "version", name=op.f("pk_plugin_versions")),
    )
    op.create_index(op.f("ix_plugin_versions_status_plugin"), "plugin_versions", ["status", "plugin"])
    op.create_table(
        "plugin_installations",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("plugin", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("previous_version", sa.String(length=64), nullable=True),
        sa.Column("previous_scopes", sa.JSON(), nullable=True),
        sa.Column("pinned", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("granted_scopes", sa.JSON(), nullable=False),
        sa.Column("granted_collections", sa.JSON(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("secrets", sa.JSON(), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        _utc("circuit_open_until", True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("health", sa.JSON(), nullable=True),
        sa.Column("installed_by", sa.Uuid(), nullable=True),
        _utc("created_at", False),
        _utc("updated_at", False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_plugin_installations_tenant_id_tenants"), ondelete="CASCADE"
        ),
        _user_fk("installed_by", "plugin_installations"),
        sa.PrimaryKeyConstraint("tenant_id", "plugin", name=op.f("pk_plugin_installations")),
    )
    enable_tenant_rls("plugin_installations")
    grant_app_role(op.get_context().config.attributes.get("app_role", "guiju_app"))  # type: ignore[union-attr]


def downgrade() -> None:
    for table in ("plugin_installations", "plugin_versions", "plugin_listings", "plugin_publishers"):
        op.drop_table(table)
