"""Tables of the sops procedures service: procedures, their versions, who acknowledged which version,
the short links of their QR codes, and the changes members suggest.

A version's ``definition`` is the JSON form of :class:`services.sops.definition.Definition`. Only a
draft's definition changes; a published version is immutable (the service refuses edits), so
runs can keep the version they started on.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, ForeignKeyConstraint, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from tenants.base import Base, new_id, utcnow
from tenants.isolation import TenantScoped


class VersionStatus(enum.StrEnum):
    DRAFT = "draft"
    PUBLISHED = "published"


class Procedure(TenantScoped, Base):
    """A standard operating procedure: what it is for, who owns it, and what a run is about."""

    __tablename__ = "procedures"
    __table_args__ = (
        UniqueConstraint("tenant_id", "key"),
        ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    key: Mapped[str] = mapped_column(String(63))
    title: Mapped[str] = mapped_column(String(200))
    purpose: Mapped[str] = mapped_column(Text, default="")
    metric: Mapped[str | None] = mapped_column(String(500), default=None)
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    # The collection a run is about (one record of it); checked through the records service.
    collection_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    archived_at: Mapped[datetime | None] = mapped_column(default=None)


class ProcedureVersion(TenantScoped, Base):
    """One numbered version of a procedure: a draft, or published (and then immutable)."""

    __tablename__ = "procedure_versions"
    __table_args__ = (
        UniqueConstraint("tenant_id", "procedure_id", "number"),
        # At most one draft per procedure, even under concurrent "new draft" requests.
        Index(
            "ix_procedure_versions_one_draft",
            "tenant_id",
            "procedure_id",
            unique=True,
            sqlite_where=text("status = 'draft'"),
            postgresql_where=text("status = 'draft'"),
        ),
        ForeignKeyConstraint(
            ["tenant_id", "procedure_id"], ["procedures.tenant_id", "procedures.id"], ondelete="CASCADE"
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    procedure_id: Mapped[uuid.UUID]
    number: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default=VersionStatus.DRAFT)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    change_note: Mapped[str | None] = mapped_column(Text, default=None)  # why it was published
    based_on_version_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    published_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    published_at: Mapped[datetime | None] = mapped_column(default=None)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Acknowledgement(TenantScoped, Base):
    """A member confirmed they read a version (``created_at`` is when)."""

    __tablename__ = "acknowledgements"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "version_id"],
            ["procedure_versions.tenant_id", "procedure_versions.id"],
            ondelete="CASCADE",
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    version_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProcedureLink(TenantScoped, Base):
    """A short, stable address of a procedure's page or one of its steps' guides: ``/q/<code>``,
    printed under its QR code. One per procedure and step key, made when its QR sheet is first shown."""

    __tablename__ = "procedure_links"
    __table_args__ = (
        UniqueConstraint("tenant_id", "procedure_id", "step_key"),
        ForeignKeyConstraint(
            ["tenant_id", "procedure_id"], ["procedures.tenant_id", "procedures.id"], ondelete="CASCADE"
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    procedure_id: Mapped[uuid.UUID]
    step_key: Mapped[str] = mapped_column(String(63), default="")  # "" is the procedure's own page
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SuggestionStatus(enum.StrEnum):
    OPEN = "open"
    DONE = "done"


class ProcedureSuggestion(TenantScoped, Base):
    """A change a member suggests to a procedure (at one of its steps, as a version showed it), for
    its owner; the open ones feed the procedure's review."""

    __tablename__ = "procedure_suggestions"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "procedure_id"], ["procedures.tenant_id", "procedures.id"], ondelete="CASCADE"
        ),
        ForeignKeyConstraint(
            ["tenant_id", "version_id"],
            ["procedure_versions.tenant_id", "procedure_versions.id"],
            ondelete="CASCADE",
        ),
        Index(None, "tenant_id", "procedure_id", "status"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    procedure_id: Mapped[uuid.UUID]
    version_id: Mapped[uuid.UUID]
    step_key: Mapped[str] = mapped_column(String(63), default="")  # "" is the procedure as a whole
    author_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    text: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(8), default=SuggestionStatus.OPEN)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
