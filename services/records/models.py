"""Tables of the records service: collections, their schema versions, records and unique values."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKeyConstraint, Index, String, UniqueConstraint
from sqlalchemy import false as sa_false
from sqlalchemy.orm import Mapped, mapped_column

from tenants.base import Base, new_id, utcnow
from tenants.isolation import TenantScoped


class Collection(TenantScoped, Base):
    """A tenant-defined table (Order, Supplier, Patient); its fields live in its current version."""

    __tablename__ = "collections"
    __table_args__ = (
        UniqueConstraint("tenant_id", "key"),
        ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    key: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(200))
    entity_scoped: Mapped[bool] = mapped_column(default=False)
    schema_version: Mapped[int] = mapped_column(default=1)
    # The current version's field definitions (removed ones included, flagged), copied here so that
    # reading a record needs one row, not a join on the versions.
    fields: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_by: Mapped[uuid.UUID | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Archived collections leave the lists (unless asked for) and keep every record.
    archived_at: Mapped[datetime | None] = mapped_column(default=None)


class CollectionVersion(TenantScoped, Base):
    """One schema version of a collection: every change to its fields appends one, never edits one."""

    __tablename__ = "collection_versions"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "collection_id"], ["collections.tenant_id", "collections.id"], ondelete="CASCADE"
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    collection_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True)
    fields: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    summary: Mapped[list[str]] = mapped_column(JSON, default=list)
    actor_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Record(TenantScoped, Base):
    """One row of a collection; ``values`` holds each field's canonical value by field key."""

    __tablename__ = "records"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "collection_id"], ["collections.tenant_id", "collections.id"], ondelete="CASCADE"
        ),
        ForeignKeyConstraint(["tenant_id", "entity_id"], ["entities.tenant_id", "entities.id"]),
        # Listing a collection in id order (the default keyset) without a sort.
        Index(None, "tenant_id", "collection_id", "id"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    collection_id: Mapped[uuid.UUID] = mapped_column()
    entity_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    values: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    version: Mapped[int] = mapped_column(default=1)
    created_by: Mapped[uuid.UUID | None] = mapped_column(default=None)
    updated_by: Mapped[uuid.UUID | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Deleted records leave the lists and free their unique values; the row stays for the history.
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)
    # Made as an example (a template's sample data): shown as such, removable in one go.
    sample: Mapped[bool] = mapped_column(default=False, server_default=sa_false())


class RecordUniqueValue(TenantScoped, Base):
    """The database's guarantee for ``unique`` fields: two records, even written concurrently,
    cannot hold the same value (a hash of its canonical JSON) in one field."""

    __tablename__ = "record_unique_values"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "collection_id"], ["collections.tenant_id", "collections.id"], ondelete="CASCADE"
        ),
        ForeignKeyConstraint(["tenant_id", "record_id"], ["records.tenant_id", "records.id"], ondelete="CASCADE"),
        Index(None, "tenant_id", "record_id"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    collection_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    field_key: Mapped[str] = mapped_column(String(63), primary_key=True)
    value_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    record_id: Mapped[uuid.UUID] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
