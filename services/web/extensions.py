"""What services above the web layer add to every page, without the layers below them knowing
them: a count beside a navigation entry (the bell's unread notices), and a section of the
person's settings page.

A count is a SQL expression (a scalar subquery), not a query of its own: the accounts service
reads every count in the statement that reads the viewer, so a badge costs no round trip.

A service registers its parts when its pages module is imported (the app imports every service's
pages); the accounts service, which reads the viewer and renders the settings page, asks here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncSession

from services.web.viewer import Viewer
from tenants.principal import Principal

#: How many things wait for a signed-in member behind a navigation entry (``key`` is the entry's):
#: a scalar SQL expression of the member, read with the viewer (tenant criteria apply to it as to
#: any query of the session, and Row-Level Security on Postgres).
BadgeCount = Callable[[Principal], ColumnElement[int]]
#: The context of a settings section's template, for the viewer.
SectionLoader = Callable[[AsyncSession, Viewer], Awaitable[Mapping[str, Any]]]

_badges: dict[str, BadgeCount] = {}
_sections: dict[str, tuple[str, SectionLoader]] = {}


def register_badge(key: str, count: BadgeCount) -> None:
    """Show ``count``'s value beside the navigation entry ``key`` on every signed-in page."""
    _badges[key] = count


def badge_columns(principal: Principal) -> dict[str, ColumnElement[int]]:
    """Every registered count of a member working in a workspace, as columns to read with the viewer."""
    if principal.tenant_id is None:
        return {}
    return {key: count(principal) for key, count in _badges.items()}


@dataclass(frozen=True)
class SettingsSection:
    key: str
    template: str
    context: Mapping[str, Any]


def register_settings_section(key: str, template: str, loader: SectionLoader) -> None:
    """Add ``template`` (rendered with what ``loader`` gives, as ``section``) to the settings page."""
    _sections[key] = (template, loader)


async def settings_sections(db: AsyncSession, viewer: Viewer) -> list[SettingsSection]:
    """The registered sections of the settings page, for a member working in a workspace."""
    if viewer.principal is None or viewer.principal.tenant_id is None:
        return []
    return [SettingsSection(key, template, await loader(db, viewer)) for key, (template, loader) in _sections.items()]
