"""Tables of the notifications service."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKeyConstraint, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tenants.base import Base, new_id, utcnow
from tenants.isolation import TenantScoped


class Notification(TenantScoped, Base):
    """One in-app notification for one member.

    A notice the platform writes is a ``kind`` and its ``params`` (names of things as authored, ids
    of people), worded when it is read, in the reader's language. A ``message`` carries the words
    someone wrote (an automation's notify action, a plugin) in ``title`` and ``body``.

    ``dedupe_key`` names what caused it (an event's id, an automation's ``execution_id:action_index``):
    unique per recipient, so a redelivered event or action can never notify the same person twice.
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
    kind: Mapped[str] = mapped_column(String(40), default="message")
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    title: Mapped[str] = mapped_column(String(300), default="")
    body: Mapped[str] = mapped_column(Text, default="")
    link: Mapped[str | None] = mapped_column(String(2000), default=None)
    dedupe_key: Mapped[str | None] = mapped_column(String(200), default=None)
    read_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class NotificationPreference(TenantScoped, Base):
    """How a member also wants one kind of notice, besides in the app: by e-mail, and through the
    workspace's messaging plugin (WeCom, DingTalk, Feishu, Slack). No row: the kind's defaults."""

    __tablename__ = "notification_preferences"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40), primary_key=True)
    by_email: Mapped[bool] = mapped_column(default=False)
    by_messaging: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
