"""Bodies of the notifications API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta


class NotificationOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    kind: Annotated[str, Meta(description="message (words someone wrote), step_assigned, step_claimable, …")]
    params: Annotated[dict[str, Any], Meta(description="what the notice is about (names as authored, ids)")]
    title: Annotated[str, Meta(description="the notice in the caller's language")]
    body: str
    link: str | None
    read_at: datetime | None
    created_at: datetime


class NotificationPage(msgspec.Struct, kw_only=True):
    items: list[NotificationOut]
    next_cursor: str | None


class UnreadCount(msgspec.Struct, kw_only=True):
    unread: int


class MarkedRead(msgspec.Struct, kw_only=True):
    marked: Annotated[int, Meta(description="how many were unread")]


class PreferenceOut(msgspec.Struct, kw_only=True):
    kind: str
    email: bool
    messaging: bool


class PreferencesIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    email: Annotated[list[str], Meta(description="the kinds also sent by e-mail")] = []
    messaging: Annotated[list[str], Meta(description="the kinds also sent through the messaging plugin")] = []
