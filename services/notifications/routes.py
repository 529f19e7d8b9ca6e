"""HTTP routes of the notifications service: parse, call the service, shape the answer."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications import service
from services.notifications.models import Notification
from services.notifications.schemas import NotificationOut, NotificationPage
from services.outputs import struct_from
from services.schema_docs import Cursor
from tenants.principal import Principal


def notification_out(row: Notification) -> NotificationOut:
    return struct_from(NotificationOut, row)


class NotificationsController(Controller):
    path = "/api/v1/notifications"
    tags = ["notifications"]

    @get("/", summary="The caller's notifications, newest first, with keyset pagination")
    async def list_notifications(
        self,
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        unread: FromQuery[bool] = False,
        cursor: Cursor = None,
        limit: Annotated[int, QueryParameter(ge=1, le=service.MAX_PAGE)] = 50,
    ) -> NotificationPage:
        principal.require_tenant()
        rows, next_cursor = await service.list_notifications(
            db, principal.user_id, unread=unread, cursor=cursor, limit=limit
        )
        return NotificationPage(items=[notification_out(r) for r in rows], next_cursor=next_cursor)

    @post("/{notification_id:uuid}/read", status_code=200, summary="Mark one of the caller's notifications read")
    async def mark_read(
        self,
        notification_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> NotificationOut:
        principal.require_tenant()
        return notification_out(await service.mark_read(db, principal.user_id, notification_id))


# Composed into the app by services.app.
CONTROLLERS: list[type[Controller]] = [NotificationsController]
