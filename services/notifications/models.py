"""Tables of the notifications service."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKeyConstraint, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tenants.base import Base, new_id, utcnow
from tenants.isolation import TenantScoped


class Notification(TenantScoped, Base):
    """One in-app notification for one member.

    ``dedupe_key`` names what caused it (an automation's ``execution_id:action_index``): unique per
    recipient, so a redelivered action can never notify the same person twice.
    """

    __tablename__ = "notifications"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        UniqueConstraint("tenant_id", "user_id", "dedupe_key"),
        Index(None, "tenant_id", "user_id", "id"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID]
    title: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text, default="")
    link: Mapped[str | None] = mapped_column(String(2000), default=None)
    dedupe_key: Mapped[str | None] = mapped_column(String(200), default=None)
    read_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
