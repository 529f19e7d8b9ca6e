"""Response bodies of the notifications API."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec


class NotificationOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    title: str
    body: str
    link: str | None
    read_at: datetime | None
    created_at: datetime


class NotificationPage(msgspec.Struct, kw_only=True):
    items: list[NotificationOut]
    next_cursor: str | None
