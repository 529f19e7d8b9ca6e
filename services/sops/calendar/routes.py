"""HTTP routes of the sops calendar service: parse, call the service, shape the answer."""

from __future__ import annotations

from litestar import Controller, get, put
from litestar.di import NamedDependency
from litestar.params import JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from services.sops.calendar import service
from services.sops.calendar.schemas import CalendarIn, CalendarOut
from tenants.models import Role
from tenants.principal import Principal
from tenants.scopes import api_scopes


class CalendarController(Controller):
    path = "/api/v1/calendar"
    tags = ["calendar"]
    opt = api_scopes("procedures")

    @get("/", summary="The business calendar SLAs are counted on")
    async def show(self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]) -> CalendarOut:
        principal.require_role(Role.MEMBER)
        return await service.show_calendar(db)

    @put("/", summary="Replace the business calendar (admins)")
    async def replace(
        self, data: JSONBody[CalendarIn], db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> CalendarOut:
        principal.require_role(Role.ADMIN)
        return await service.update_calendar(db, data, principal.user_id)


# Composed into the app by services.app.
CONTROLLERS: list[type[Controller]] = [CalendarController]
