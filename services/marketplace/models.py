"""Tables of the marketplace: the catalog (platform-wide) and each tenant's installed plugins.

The catalog tables (publishers, listings, versions) belong to the platform, not to a tenant: every
tenant reads the same listings. ``plugin_installations`` is tenant-owned like every other table:
``tenant_id`` leads its key and RLS guards it. Secret settings are stored only encrypted
(``secrets`` maps a field to an AES-GCM token), never in ``config``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, ForeignKeyConstraint, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tenants.base import Base, utcnow
from tenants.isolation import TenantScoped


class PluginPublisher(Base):
    """A tenant allowed to publish plugins (the publisher flag), under a public name."""

    __tablename__ = "plugin_publishers"

    # Named apart from ``tenant_id``: the platform's table of publishers, not a tenant's own rows.
    publisher_tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PluginListing(Base):
    """A plugin in the catalog; its versions are ``plugin_versions`` rows."""

    __tablename__ = "plugin_listings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    publisher: Mapped[str] = mapped_column(String(200))
    # None: deployed by the operator (found in the workers' environment), not submitted by a tenant.
    publisher_tenant_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="SET NULL"), default=None
    )
    category: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PluginVersion(Base):
    """One version of a listed plugin: its manifest, where its code is, and its review."""

    __tablename__ = "plugin_versions"
    __table_args__ = (Index(None, "status", "plugin"),)

    plugin: Mapped[str] = mapped_column(ForeignKey("plugin_listings.name", ondelete="CASCADE"), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # python | remote
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    endpoint: Mapped[str | None] = mapped_column(String(2000), default=None)
    # The HMAC key the host signs a remote plugin's requests with, encrypted like tenant secrets.
    signing_secret: Mapped[str | None] = mapped_column(Text, default=None)
    # An in-process plugin's source distribution, kept as a file of the publisher's workspace.
    source_file_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    source_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    # checking | pending (checks passed, awaiting review) | approved | rejected
    status: Mapped[str] = mapped_column(String(16))
    check_report: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    review_reason: Mapped[str | None] = mapped_column(Text, default=None)
    submitted_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    submitted_at: Mapped[datetime] = mapped_column(default=utcnow)
    reviewed_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    reviewed_at: Mapped[datetime | None] = mapped_column(default=None)


class PluginInstallation(TenantScoped, Base):
    """A plugin a tenant installed: the version, what the admin granted, and its configuration."""

    __tablename__ = "plugin_installations"
    __table_args__ = (ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    plugin: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    # The version (and grant) before the last upgrade: what a rollback returns to.
    previous_version: Mapped[str | None] = mapped_column(String(64), default=None)
    previous_scopes: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    pinned: Mapped[bool] = mapped_column(default=False)
    enabled: Mapped[bool] = mapped_column(default=True)
    granted_scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    granted_collections: Mapped[list[str]] = mapped_column(JSON, default=list)  # collection keys
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    secrets: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)  # field -> encrypted token
    # The circuit breaker of this tenant x plugin.
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    circuit_open_until: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    # The last health check: {"ok": bool, "message": str, "checked_at": iso time}.
    health: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    installed_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PluginSequence(TenantScoped, Base):
    """A plugin's numbering sequence in a tenant (``PluginContext.next_number``): the last number
    given. Its row is locked while a number is drawn, so numbers are gapless and never repeat."""

    __tablename__ = "plugin_sequences"
    __table_args__ = (ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    plugin: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    last_number: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PluginSequenceKey(TenantScoped, Base):
    """The number a sequence gave to a key: asked again with that key, the sequence answers it."""

    __tablename__ = "plugin_sequence_keys"
    __table_args__ = (ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    plugin: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    number: Mapped[int] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
