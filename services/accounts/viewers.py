"""The viewer of a page, from the session cookie: the dependencies the app gives every page, and the
pages shown when a page request is refused or fails.

They live with the accounts service, which owns login sessions, as the API's principals do
(:mod:`services.accounts.principals`); the viewer itself is the web layer's
(:class:`services.web.viewer.Viewer`).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from litestar import Request, Response
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts.login_sessions import authenticate, user_and_tenant
from services.http import (
    SAFE_METHODS,
    SESSION_COOKIE,
    csp_nonce,
    handle_http_exception,
    mark_private,
)
from services.logs import request_log_context
from services.web.extensions import badge_columns
from services.web.i18n import DEFAULT_LOCALE, remember_reader, translate
from services.web.pages import error_page
from services.web.viewer import (
    SignInRequired,
    Viewer,
    anonymous_viewer,
    check_form_origin,
    sign_in_url,
    wants_page,
)
from tenants.errors import ProblemError
from tenants.models import LOCALES

log = logging.getLogger(__name__)


VIEWER_STATE = "viewer"


async def load_viewer(request: Request[Any, Any, Any], db: AsyncSession) -> Viewer:
    viewer = await _read_viewer(request, db)
    # Kept for the error page, should the page fail after this.
    request.scope.setdefault("state", {})[VIEWER_STATE] = viewer
    await check_form_origin(request, viewer.principal)
    return viewer


async def _read_viewer(request: Request[Any, Any, Any], db: AsyncSession) -> Viewer:
    principal = await authenticate(db, request.cookies.get(SESSION_COOKIE))
    if principal is None:
        return anonymous_viewer(request)
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    nonce = csp_nonce(request)
    mark_private(request)
    remember_reader(request, principal.locale, principal.tenant_locale)
    shared = request_log_context.get()
    if shared is not None:
        shared["actor"] = f"user:{principal.user_id}"
        if principal.tenant_id:
            shared["tenant_id"] = str(principal.tenant_id)
    user, tenant, badges = await user_and_tenant(db, principal, badge_columns(principal))
    locale = user.locale if user.locale in LOCALES else (tenant.locale if tenant else DEFAULT_LOCALE)
    return Viewer(
        locale=locale,
        timezone=user.timezone or (tenant.timezone if tenant else "UTC"),
        nonce=nonce,
        path=path,
        principal=principal,
        display_name=user.display_name,
        email=user.email,
        email_verified=user.email_verified_at is not None,
        tenant_name=tenant.name if tenant else "",
        badges=badges,
    )


async def provide_viewer(request: Request[Any, Any, Any], db: NamedDependency[AsyncSession]) -> Viewer:
    """Anyone: signed in or not."""
    return await load_viewer(request, db)


async def provide_member(request: Request[Any, Any, Any], db: NamedDependency[AsyncSession]) -> Viewer:
    """A signed-in person working in a workspace; anyone else is sent to sign in first."""
    viewer = await load_viewer(request, db)
    if viewer.principal is None:
        raise SignInRequired(viewer.path if request.method in SAFE_METHODS else "/app")
    viewer.principal.require_tenant()
    return viewer


#: The dependencies of every page: ``viewer`` (anyone) and ``member`` (signed in, in a workspace).
PAGE_DEPENDENCIES = {"viewer": Provide(provide_viewer), "member": Provide(provide_member)}


def _viewer_for_error(request: Request[Any, Any, Any]) -> Viewer:
    """Who an error page is for: the viewer the request already read, else an anonymous one
    (exception handlers run synchronously, and the request's transaction has failed)."""
    known = request.scope.get("state", {}).get(VIEWER_STATE)
    if isinstance(known, Viewer):
        return known
    return anonymous_viewer(request)


def page_problem(request: Request[Any, Any, Any], error: ProblemError) -> Response[Any]:
    """A refused page request as a page: sign in first, or what was refused, in the viewer's words."""
    if isinstance(error, SignInRequired):
        return Redirect(sign_in_url(error.next_path), status_code=HTTP_303_SEE_OTHER)
    viewer = _viewer_for_error(request)
    template: Template = error_page(viewer, error.status, error.worded(partial(translate, locale=viewer.locale)))
    return template


def page_crash(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    log.exception("page failed", exc_info=error)
    shared = request_log_context.get()
    request_id = str(shared.get("request_id")) if shared and shared.get("request_id") else None
    template: Template = error_page(_viewer_for_error(request), 500, None, request_id=request_id)
    return template


PAGE_ERRORS: dict[type[Exception] | int, Any] = {ProblemError: page_problem, Exception: page_crash}


def unknown_address(request: Request[Any, Any, Any], error: NotFoundException) -> Response[Any]:
    """An address no route has: a page for a browser finding its way, problem+json for the API."""
    if wants_page(request):
        template: Template = error_page(anonymous_viewer(request), 404, None)
        return template
    return handle_http_exception(request, error)
