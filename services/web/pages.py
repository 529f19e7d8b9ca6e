"""The shared pages and the plumbing every service's pages use.

- :func:`page` renders a template in the app's layout for a :class:`~services.web.viewer.Viewer`;
- :func:`redirect` answers a form post with "see other" (and an optional notice shown once);
- :func:`error_page` shows a refused or failed page request as a page, never JSON;
- the landing page at ``/`` lives here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from litestar import Controller, get
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.params import FromQuery
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from services.web.i18n import N_, translate
from services.web.navigation import visible_items
from services.web.viewer import Viewer

#: The notices a redirect may ask the next page to show once (``?notice=<key>``): a fixed list, so
#: that no link can make a page say something else.
NOTICES: dict[str, tuple[str, str]] = {
    "saved": ("success", N_("Saved.")),
    "signed_out": ("info", N_("You are signed out.")),
    "password_changed": ("success", N_("Your password is changed.")),
    "password_reset": ("success", N_("Your new password is set; you are signed in.")),
    "email_verified": ("success", N_("Your email address is confirmed.")),
    "verification_sent": ("info", N_("We sent you a new link; check your inbox.")),
    "reset_sent": ("info", N_("If an account uses this address, we sent it a link to set a new password.")),
    "joined": ("success", N_("Welcome: you have joined the workspace.")),
    "task_claimed": ("success", N_("You claimed this task: it is yours now.")),
    "acknowledged": ("success", N_("Thanks: you confirmed reading this version.")),
    "suggestion_sent": ("success", N_("Thanks: your suggestion is sent to the owner of this procedure.")),
    "samples_deleted": ("success", N_("The sample records are deleted.")),
    "all_read": ("success", N_("All notifications are marked read.")),
    "invitation_sent": ("success", N_("The invitation is sent.")),
    "invitation_revoked": ("success", N_("The invitation is revoked: its link no longer works.")),
    "member_removed": ("success", N_("The member is deactivated: they can no longer sign in to this workspace.")),
    "app_disabled": ("success", N_("The app is switched off: its tokens no longer work and nobody can connect it.")),
    "app_enabled": ("success", N_("The app is switched on again: people can connect it.")),
    "app_deleted": ("success", N_("The app is deleted: its tokens no longer work.")),
    "app_disconnected": ("success", N_("The app is disconnected: its tokens in this workspace no longer work.")),
    "token_revoked": ("success", N_("The token is revoked: it no longer works.")),
}


class Flash:
    """A notice shown once on top of a page (``role=status``, focused)."""

    def __init__(self, kind: str, text: str) -> None:
        self.kind = kind
        self.text = text


def flash_for(viewer: Viewer, notice: str | None) -> Flash | None:
    if notice and notice in NOTICES:
        kind, message = NOTICES[notice]
        return Flash(kind, translate(message, viewer.locale))
    return None


def page(
    viewer: Viewer,
    template: str,
    *,
    status_code: int = 200,
    nav_current: str = "",
    notice: str | None = None,
    cookies: list[Cookie] | None = None,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Template:
    """``template`` rendered for ``viewer`` in the app's layout (its navigation, its language)."""
    context.setdefault("errors", {})
    return Template(
        template_name=template,
        context={
            "viewer": viewer,
            "nav": visible_items(viewer.at_least) if viewer.signed_in else [],
            "nav_current": nav_current,
            "flash": flash_for(viewer, notice),
            **context,
        },
        status_code=status_code,
        cookies=cookies or [],
        headers=headers or {},
    )


def redirect(path: str, *, notice: str | None = None, cookies: list[Cookie] | None = None) -> Redirect:
    """See-other to ``path`` (after a form post), with a notice the next page shows once."""
    if notice:
        path = f"{path}{'&' if '?' in path else '?'}{urlencode({'notice': notice})}"
    return Redirect(path, status_code=HTTP_303_SEE_OTHER, cookies=cookies or [])


# ---------------------------------------------------------------- errors as pages

ERROR_HEADINGS: Mapping[int, str] = {
    403: N_("You cannot do this"),
    404: N_("This page does not exist"),
    409: N_("Someone else got there first"),
    422: N_("Some answers need fixing"),
    429: N_("Too many tries"),
}
ERROR_MESSAGES: Mapping[int, str] = {
    403: N_("Your role does not allow this. Ask an owner or admin of your workspace."),
    404: N_("It may have been moved or deleted, or it belongs to another workspace."),
    409: N_("The page changed while you were on it. Reload it to see what happened."),
    429: N_("Wait a minute, then try again."),
}
CRASH_MESSAGE = N_("Nothing you entered was saved. Try again; if it happens again, tell support.")


def error_page(viewer: Viewer, status: int, detail: str | None, *, request_id: str | None = None) -> Template:
    """A refused or failed request as a page in the viewer's words (a request id for support on 5xx)."""
    heading = translate(ERROR_HEADINGS.get(status, N_("Something went wrong")), viewer.locale)
    message = translate(ERROR_MESSAGES.get(status, detail if status < 500 and detail else CRASH_MESSAGE), viewer.locale)
    return page(viewer, "web/error.html", status_code=status, heading=heading, message=message, request_id=request_id)


# ---------------------------------------------------------------- shared pages


class WebPages(Controller):
    """The landing page: what Guiju is, in the visitor's language, leading to sign-up and sign-in."""

    include_in_schema = False

    @get("/")
    async def landing(self, viewer: NamedDependency[Viewer], notice: FromQuery[str | None] = None) -> Template:
        return page(viewer, "web/landing.html", notice=notice)


PAGES = [WebPages]
