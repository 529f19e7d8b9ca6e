"""Tables of the template gallery: which packs a tenant installed, and what each pack put where.

The packs themselves are files (shipped with the platform or by plugins); only what a tenant did
with them is stored. An installed item keeps its *base*: the item exactly as the pack installed it
in this workspace (its language chosen, its references resolved). The base is one side of the
three-way merge of an upgrade, so it must survive the pack's own files moving on to new versions.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, ForeignKeyConstraint, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tenants.base import Base, utcnow
from tenants.isolation import TenantScoped


class TemplateInstallation(TenantScoped, Base):
    """A pack installed in a tenant: its version, language and how its roles map to members."""

    __tablename__ = "template_installations"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        UniqueConstraint("tenant_id", "pack_id"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    pack_id: Mapped[str] = mapped_column(String(64))
    publisher: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(8))
    # Pack role key -> the member's user id (as a string) the role's steps are assigned to.
    role_mapping: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    installed_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class TemplateItem(TenantScoped, Base):
    """One collection, procedure, automation or document an installed pack created."""

    __tablename__ = "template_items"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        ForeignKeyConstraint(
            ["tenant_id", "installation_id"],
            ["template_installations.tenant_id", "template_installations.id"],
            ondelete="CASCADE",
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    installation_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    object_id: Mapped[uuid.UUID]
    # The item as the installed version put it in this workspace: the base of an upgrade's merge.
    base: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OnboardingWizard(TenantScoped, Base):
    """Where a workspace's owner is in the onboarding wizard, and what they chose so far (each step
    is saved as it is left, so the wizard resumes where it stopped)."""

    __tablename__ = "onboarding_wizards"
    __table_args__ = (ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    step: Mapped[int] = mapped_column(default=1)
    # {"packs": [...], "roles": {pack: {role: choice}}, "samples": bool, "collections": {...}, "results": {...}}
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_by: Mapped[uuid.UUID | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
