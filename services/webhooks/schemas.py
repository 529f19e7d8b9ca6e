"""Bodies of the webhooks API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType


class SubscriptionIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: Annotated[str, Meta(description="https URL that receives the events (POST, JSON, signed)")] = ""
    event_types: Annotated[list[str], Meta(description="event types of GET /api/v1/webhooks/event-types")] = []
    description: Annotated[str, Meta(description="what the subscription is for, at most 200 characters")] = ""
    enabled: bool = True


class SubscriptionPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: str | UnsetType = UNSET
    event_types: list[str] | UnsetType = UNSET
    description: str | UnsetType = UNSET
    enabled: Annotated[bool | UnsetType, Meta(description="true also clears the failures in a row")] = UNSET


class RotateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    overlap_hours: Annotated[
        int | None,
        Meta(description="hours the current secret still signs next to the new one (0-168; default: the setting)"),
    ] = None


class SubscriptionOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    disabled_reason: Annotated[str | None, Meta(description="failures (turned off by the platform), by_hand")]
    disabled_at: datetime | None
    consecutive_failures: int
    client_id: Annotated[uuid.UUID | None, Meta(description="the app whose token made it; null: a person")]
    scopes: Annotated[list[str] | None, Meta(description="the read scopes its deliveries are limited to; null: none")]
    previous_secret_expires_at: Annotated[
        datetime | None, Meta(description="until when the secret before the last rotation still signs")
    ]
    created_at: datetime
    updated_at: datetime


class SubscriptionWithSecret(SubscriptionOut, kw_only=True):
    secret: Annotated[str, Meta(description="whsec_<base64>: shown only now, keep it")]


class DeliveryOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    subscription_id: uuid.UUID
    event_id: Annotated[uuid.UUID, Meta(description="sent as webhook-id, the same on every attempt")]
    event_type: str
    status: Annotated[str, Meta(description="pending (on its way or waiting to retry), succeeded, failed")]
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    request_excerpt: Annotated[str, Meta(description="the start of the body sent")]
    response_status: int | None
    response_excerpt: Annotated[str, Meta(description="the start of the receiver's answer")]
    duration_ms: int | None
    error: str | None
    created_at: datetime


class AttemptOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    manual: Annotated[bool, Meta(description="a redelivery asked for by hand")]
    response_status: Annotated[int | None, Meta(description="null: no answer (timeout, refused, unreachable)")]
    response_excerpt: str
    duration_ms: int
    error: str | None
    created_at: datetime


class DeliveryDetailOut(DeliveryOut, kw_only=True):
    event: Annotated[dict[str, Any], Meta(description="the body sent: id, type, timestamp, data")]
    history: Annotated[list[AttemptOut], Meta(description="every attempt, oldest first")]


class DeliveryPage(msgspec.Struct, kw_only=True):
    items: list[DeliveryOut]
    next_cursor: str | None


class EventTypeOut(msgspec.Struct, kw_only=True):
    type: Annotated[str, Meta(description="an event type, or a family's pattern (plugin.<plugin>.<trigger>)")]
    group: str
    description: str
    scope: Annotated[str, Meta(description="the read scope a token needs to subscribe to it")]
