"""HTTP routes of the notifications service: parse, call the service, shape the answer."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import service as accounts
from services.notifications import service
from services.notifications.schemas import (
    MarkedRead,
    NotificationOut,
    NotificationPage,
    PreferenceOut,
    PreferencesIn,
    UnreadCount,
)
from services.schema_docs import Cursor
from services.web.i18n import pick_locale
from tenants.principal import Principal
from tenants.scopes import api_scopes


def notification_out(notice: service.Notice) -> NotificationOut:
    return NotificationOut(
        id=notice.id,
        kind=notice.kind,
        params=notice.params,
        title=notice.title,
        body=notice.body,
        link=notice.link,
        read_at=notice.read_at,
        created_at=notice.created_at,
    )


async def _locale(db: AsyncSession, principal: Principal) -> str:
    """The caller's own language, else the request's Accept-Language."""
    own = await accounts.member_locales(db, {principal.user_id})
    return pick_locale(own.get(principal.user_id))


def _preferences_out(found: list[service.Preference]) -> list[PreferenceOut]:
    return [PreferenceOut(kind=p.kind.key, email=p.email, messaging=p.messaging) for p in found]


class NotificationsController(Controller):
    path = "/api/v1/notifications"
    tags = ["notifications"]
    opt = api_scopes("notifications")

    @get("/", summary="The caller's notifications in their language, newest first, with keyset pagination")
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
        notices = await service.render(db, rows, await _locale(db, principal))
        return NotificationPage(items=[notification_out(n) for n in notices], next_cursor=next_cursor)

    @get("/unread-count", summary="How many of the caller's notifications are unread")
    async def unread_count(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> UnreadCount:
        principal.require_tenant()
        return UnreadCount(unread=await service.unread_count(db, principal.user_id))

    @post("/{notification_id:uuid}/read", status_code=200, summary="Mark one of the caller's notifications read")
    async def mark_read(
        self,
        notification_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> NotificationOut:
        principal.require_tenant()
        row = await service.mark_read(db, principal.user_id, notification_id)
        return notification_out((await service.render(db, [row], await _locale(db, principal)))[0])

    @post("/read-all", status_code=200, summary="Mark every notification of the caller read")
    async def mark_all_read(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> MarkedRead:
        principal.require_tenant()
        return MarkedRead(marked=await service.mark_all_read(db, principal.user_id))

    @get("/preferences", summary="Which notices the caller also gets by e-mail and through the messaging plugin")
    async def preferences(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> list[PreferenceOut]:
        principal.require_tenant()
        return _preferences_out(await service.preferences(db, principal.user_id))

    @put("/preferences", summary="Choose which notices the caller also gets by e-mail and through messaging")
    async def set_preferences(
        self, data: JSONBody[PreferencesIn], db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> list[PreferenceOut]:
        principal.require_tenant()
        return _preferences_out(await service.set_preferences(db, principal.user_id, data.email, data.messaging))


# Composed into the app by services.app.
CONTROLLERS: list[type[Controller]] = [NotificationsController]
