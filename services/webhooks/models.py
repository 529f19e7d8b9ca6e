"""Tables of the webhooks service: subscriptions, and one delivery per subscription and event."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKeyConstraint, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tenants.base import Base, new_id, utcnow
from tenants.isolation import TenantScoped


class WebhookSubscription(TenantScoped, Base):
    """A URL that receives the workspace's events of ``event_types``.

    The signing secret is never stored: it is derived from the platform's secret key and
    ``secret_nonce`` (a rotation draws a new nonce). During a rotation's overlap the previous nonce's
    secret signs too, until ``previous_secret_expires_at``.

    ``client_id`` and ``scopes`` are those of the token that created it (None for a person signed in
    in a browser): deliveries carry only the events those scopes may read.
    """

    __tablename__ = "webhook_subscriptions"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["created_by"], ["users.id"], ondelete="SET NULL"),
        Index(None, "tenant_id", "enabled"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(200), default="")
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    enabled: Mapped[bool] = mapped_column(default=True)
    client_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    scopes: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    created_by: Mapped[uuid.UUID | None] = mapped_column(default=None)
    secret_nonce: Mapped[str] = mapped_column(String(64))
    previous_secret_nonce: Mapped[str | None] = mapped_column(String(64), default=None)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    disabled_reason: Mapped[str | None] = mapped_column(String(40), default=None)
    disabled_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(TenantScoped, Base):
    """One event on its way to one subscription, with what its latest attempt sent and got back
    (every attempt is in :class:`WebhookAttempt`).

    Unique per subscription and event, so a redelivered outbox event never delivers twice; the
    receiver sees the event's id as ``webhook-id`` on every attempt and every manual redelivery.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "subscription_id"],
            ["webhook_subscriptions.tenant_id", "webhook_subscriptions.id"],
            ondelete="CASCADE",
        ),
        UniqueConstraint("tenant_id", "subscription_id", "event_id"),
        Index(None, "tenant_id", "subscription_id", "id"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    subscription_id: Mapped[uuid.UUID]
    event_id: Mapped[uuid.UUID]
    event_type: Mapped[str] = mapped_column(String(100))
    event: Mapped[dict[str, Any]] = mapped_column(JSON)  # the body sent, as an object
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending, succeeded, failed
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    request_excerpt: Mapped[str] = mapped_column(Text, default="")
    response_status: Mapped[int | None] = mapped_column(default=None)
    response_excerpt: Mapped[str] = mapped_column(Text, default="")
    duration_ms: Mapped[int | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(String(1000), default=None)
    last_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookAttempt(TenantScoped, Base):
    """One HTTP attempt of a delivery: what came back (or why nothing did), and how long it took."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "delivery_id"],
            ["webhook_deliveries.tenant_id", "webhook_deliveries.id"],
            ondelete="CASCADE",
        ),
        Index(None, "tenant_id", "delivery_id", "id"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    delivery_id: Mapped[uuid.UUID]
    manual: Mapped[bool] = mapped_column(default=False)  # a redelivery asked for by hand
    response_status: Mapped[int | None] = mapped_column(default=None)
    response_excerpt: Mapped[str] = mapped_column(Text, default="")
    duration_ms: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(String(1000), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
