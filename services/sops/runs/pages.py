"""The runs' pages: the dashboard (the app's front door)."""

from __future__ import annotations

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromQuery
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from services.web.pages import page
from services.web.viewer import Viewer


class RunPages(Controller):
    include_in_schema = False

    @get("/app")
    async def dashboard(
        self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession], notice: FromQuery[str | None] = None
    ) -> Template:
        return page(member, "sops/dashboard.html", nav_current="dashboard", notice=notice)


PAGES = [RunPages]
