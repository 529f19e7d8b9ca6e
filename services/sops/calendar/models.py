"""Tables of the sops calendar service: one business calendar per tenant."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, ForeignKeyConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from tenants.base import Base, utcnow
from tenants.isolation import TenantScoped


class BusinessCalendar(TenantScoped, Base):
    """A tenant's working calendar; no row means the defaults (Mon–Fri 09:00–18:00, tenant timezone).

    ``intervals`` hold ``{"start": "HH:MM", "end": "HH:MM"}``; ``holidays`` and ``extra_working_days``
    hold ``{"date": "YYYY-MM-DD", "name": str}``, both sorted by date. ``holiday_country`` (ISO 3166-1
    alpha-2) adds that country's public holidays and make-up working days beneath them; None: none.
    """

    __tablename__ = "business_calendars"
    __table_args__ = (ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    timezone: Mapped[str | None] = mapped_column(String(64), default=None)  # None: the tenant's timezone
    working_days: Mapped[list[int]] = mapped_column(JSON)
    intervals: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    holidays: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    extra_working_days: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    holiday_country: Mapped[str | None] = mapped_column(String(2), default=None)
    updated_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
