"""The app's navigation: the phone's tab bar and the desktop's sidebar, from one list.

A page that belongs in the navigation adds its entry here; ``phone`` entries are the tab bar (at
most five), every entry is in the sidebar under its ``section``. ``role`` is the least role that
sees it.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.web.i18n import N_


@dataclass(frozen=True)
class NavItem:
    key: str
    href: str
    label: str  # a message id, translated when shown
    icon: str
    section: str  # a message id: the sidebar's heading
    phone: bool = True
    role: str = "member"


WORK = N_("Work")
ADMIN = N_("Administration")

NAV_ITEMS: tuple[NavItem, ...] = (
    NavItem("dashboard", "/app", N_("Dashboard"), "home", WORK, role="admin"),
    NavItem("tasks", "/tasks", N_("My tasks"), "tasks", WORK),
    NavItem("library", "/sops", N_("SOP library"), "book", WORK),
    NavItem("notifications", "/notifications", N_("Notifications"), "bell", WORK),
    NavItem("me", "/me", N_("Me"), "user", WORK),
    NavItem("members", "/members", N_("Members and roles"), "users", ADMIN, phone=False, role="admin"),
    NavItem("developer", "/developer", N_("Apps & API"), "key", ADMIN, phone=False, role="admin"),
)


def visible_items(viewer_role_at_least: object) -> list[NavItem]:
    """The entries a viewer sees; ``viewer_role_at_least(role)`` tells whether they hold ``role``."""
    check = viewer_role_at_least
    assert callable(check)
    return [item for item in NAV_ITEMS if check(item.role)]
