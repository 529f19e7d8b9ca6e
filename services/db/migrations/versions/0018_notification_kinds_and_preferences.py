"""notifications: a kind and its params, worded when read; members' delivery preferences

A notice the platform writes is stored as a kind and params and worded in the reader's language
when it is read. Existing rows keep their words as ``message`` notices, except the plugin circuit
notices (written in English), which become ``plugin_paused`` notices with the plugin's name.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

import tenants.base
from services.db.rls import enable_tenant_rls, grant_app_role

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_PAUSED = re.compile(r"^(?P<plugin>\S+) paused after (?P<count>\d+) failures in a row$")


def upgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=40), nullable=False, server_default="message"))
        batch_op.add_column(sa.Column("params", sa.JSON(), nullable=False, server_default="{}"))

    notifications = sa.table(
        "notifications",
        sa.column("tenant_id", sa.Uuid()),
        sa.column("id", sa.Uuid()),
        sa.column("title", sa.String()),
        sa.column("dedupe_key", sa.String()),
        sa.column("kind", sa.String()),
        sa.column("params", sa.JSON()),
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(notifications.c.tenant_id, notifications.c.id, notifications.c.title).where(
            notifications.c.dedupe_key.like("plugin-circuit:%")
        )
    ).all()
    for tenant_id, notification_id, title in rows:
        found = _PAUSED.match(title or "")
        if found is None:
            continue
        bind.execute(
            sa.update(notifications)
            .where(notifications.c.tenant_id == tenant_id, notifications.c.id == notification_id)
            .values(kind="plugin_paused", params={"plugin": found["plugin"], "failures": int(found["count"])})
        )

    op.create_table(
        "notification_preferences",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("by_email", sa.Boolean(), nullable=False),
        sa.Column("by_messaging", sa.Boolean(), nullable=False),
        sa.Column("created_at", tenants.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tenants.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_notification_preferences_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_notification_preferences_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("tenant_id", "user_id", "kind", name=op.f("pk_notification_preferences")),
    )
    enable_tenant_rls("notification_preferences")
    grant_app_role(op.get_context().config.attributes.get("app_role", "guiju_app"))  # type: ignore[union-attr]


def downgrade() -> None:
    op.drop_table("notification_preferences")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_column("params")
        batch_op.drop_column("kind")
