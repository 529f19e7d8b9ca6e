"""Tables of the audit service.

``audit_events`` is an append-only, hash-chained log per tenant: ``seq`` counts 1, 2, 3 … within a
tenant and every event's ``hash`` covers its content and the previous event's hash.
``audit_heads`` holds each tenant's last ``seq`` and hash: appends lock it, which serialises them
per tenant, and it reveals a deleted tail (the head names an event that is gone).

No foreign key points from an event to a user or a subject on purpose: a ``SET NULL`` or a cascade
would rewrite hashed history.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKeyConstraint, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from tenants.base import Base, utcnow
from tenants.isolation import TenantScoped


class AuditEvent(TenantScoped, Base):
    """One change: who, when (``created_at``, the time of the change's transaction), what, before/after."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index(None, "tenant_id", "id", unique=True),
        Index(None, "tenant_id", "subject_type", "subject_id", "seq"),
        ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    id: Mapped[uuid.UUID]
    created_at: Mapped[datetime]
    actor_id: Mapped[uuid.UUID | None]
    action: Mapped[str] = mapped_column(String(100))
    subject_type: Mapped[str] = mapped_column(String(50))
    subject_id: Mapped[str] = mapped_column(String(100))
    before: Mapped[Any] = mapped_column(JSON, nullable=True)
    after: Mapped[Any] = mapped_column(JSON, nullable=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(TenantScoped, Base):
    """The tail of a tenant's chain; its row lock is the queue for appends in that tenant."""

    __tablename__ = "audit_heads"
    __table_args__ = (ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
