"""The notifications' pages: the list (all, unread, mentions), opening one, marking all read, the
bell's live count, and the section of the settings page where a member chooses their channels.

The bell's count and the settings section reach every page through :mod:`services.web.extensions`,
registered when this module is imported (the app imports it with the other pages).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from sqlalchemy import ScalarSelect
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications import service
from services.web.extensions import register_badge, register_settings_section
from services.web.forms import form_fields
from services.web.i18n import N_, translate
from services.web.pages import page, redirect
from services.web.viewer import Viewer
from tenants.errors import ValidationProblem
from tenants.principal import Principal

PAGE_SIZE = 30
TABS = (("all", N_("All")), ("unread", N_("Unread")), ("mentions", N_("@Me")))


def _unread(principal: Principal) -> ScalarSelect[int]:
    return service.unread_count_column(principal.user_id)


async def _settings_section(db: AsyncSession, viewer: Viewer) -> dict[str, Any]:
    found = await service.preferences(db, viewer.member.user_id)
    return {
        "options": [(p.kind.key, translate(p.kind.label, viewer.locale)) for p in found],
        "email": [p.kind.key for p in found if p.email],
        "messaging": [p.kind.key for p in found if p.messaging],
        "messaging_available": await service.messaging_available(db),
    }


register_badge("notifications", _unread)
register_settings_section("notifications", "notifications/settings_section.html", _settings_section)


def _groups(notices: list[service.Notice], zone: str) -> list[tuple[str, list[service.Notice]]]:
    """The notices under "Today" and "Earlier" (days in the viewer's time zone)."""
    tz = ZoneInfo(zone)
    today = datetime.now(tz).date()
    groups: dict[str, list[service.Notice]] = {"today": [], "earlier": []}
    for notice in notices:
        groups["today" if notice.created_at.astimezone(tz).date() == today else "earlier"].append(notice)
    return [(key, items) for key, items in groups.items() if items]


def _safe_link(link: str | None) -> str:
    if not link:
        return "/notifications"
    if link.startswith(("https://", "http://")):
        return link
    if link.startswith("/") and not link.startswith("//") and "\\" not in link:
        return link
    return "/notifications"


class NotificationPages(Controller):
    include_in_schema = False

    @get("/notifications")
    async def notifications_page(
        self,
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
        show: FromQuery[str] = "all",
        cursor: FromQuery[str | None] = None,
        notice: FromQuery[str | None] = None,
    ) -> Template:
        chosen: service.Filter = "unread" if show == "unread" else "mentions" if show == "mentions" else "all"
        try:
            rows, next_cursor = await service.list_notifications(
                db, member.member.user_id, show=chosen, cursor=cursor, limit=PAGE_SIZE
            )
        except ValidationProblem:  # a stale or mangled cursor: start from the newest
            rows, next_cursor = await service.list_notifications(
                db, member.member.user_id, show=chosen, limit=PAGE_SIZE
            )
        notices = await service.render(db, rows, member.locale)
        return page(
            member,
            "notifications/list.html",
            nav_current="notifications",
            notice=notice,
            show=chosen,
            tabs=TABS,
            groups=_groups(notices, member.timezone),
            next_cursor=next_cursor,
            unread=member.badges.get("notifications", 0),
        )

    @get("/notifications/bell")
    async def bell(self, member: NamedDependency[Viewer]) -> Template:
        """The bell and the tab's count, for the page's poll (the viewer read the count)."""
        return page(member, "notifications/bell_fragment.html")

    @get("/notifications/{notification_id:uuid}/open")
    async def open_notice(
        self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession], notification_id: FromPath[uuid.UUID]
    ) -> Redirect:
        """Opening a notice marks it read and goes where it points."""
        row = await service.mark_read(db, member.member.user_id, notification_id)
        return Redirect(_safe_link(row.link), status_code=303)

    @post("/notifications/read-all")
    async def read_all(
        self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession], request: Request[Any, Any, Any]
    ) -> Redirect:
        await service.mark_all_read(db, member.member.user_id)
        fields = await form_fields(request)
        show = fields.get("show")
        return redirect(
            f"/notifications?show={show}" if show in {"unread", "mentions"} else "/notifications", notice="all_read"
        )

    @post("/me/notifications")
    async def save_preferences(
        self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession], request: Request[Any, Any, Any]
    ) -> Redirect:
        fields = await form_fields(request, lists=frozenset({"email", "messaging"}))
        async with db.begin_nested():
            await service.set_preferences(
                db, member.member.user_id, fields.get("email") or [], fields.get("messaging") or []
            )
        return redirect("/me", notice="saved")


PAGES = [NotificationPages]
