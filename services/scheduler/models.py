"""Tables of the scheduler service.

``timers`` holds every pending timer of every tenant (cron automations, waits, delayed retries, SLA
reminders): one row per ``(tenant_id, key)``, fired by ``guiju scheduler`` when ``due_at`` comes.
The index ``(tenant_id, due_at)`` serves the tenant-bound claim (``WHERE tenant_id = :t AND due_at
<= :now ORDER BY due_at``) and the scheduler's small cross-tenant read of which tenants have
something due; it keeps tenant_id leading, like every key of a tenant table.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKeyConstraint, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tenants.base import Base, new_id, utcnow
from tenants.isolation import TenantScoped


class Timer(TenantScoped, Base):
    """A pending timer: at ``due_at`` the handler registered for ``kind`` runs with ``payload``."""

    __tablename__ = "timers"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        UniqueConstraint("tenant_id", "key"),
        Index(None, "tenant_id", "due_at"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(200))
    due_at: Mapped[datetime]
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
