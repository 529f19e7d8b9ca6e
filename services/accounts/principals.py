"""The principal of a request from its session cookie (the OAuth service adds Bearer tokens and
gives every route the dependency).

They live with the accounts service, which owns login sessions, so that the HTTP plumbing
(:mod:`services.http`) needs nothing from accounts.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import service as accounts
from services.http import CSRF_HEADER, SAFE_METHODS, SESSION_COOKIE, mark_private
from services.logs import request_log_context
from services.web.i18n import remember_reader
from tenants.errors import Forbidden
from tenants.principal import Principal


async def session_principal(request: Request[Any, Any, Any], db: AsyncSession) -> Principal | None:
    """The principal of the session cookie, or None; 403 on a cookie write without CSRF."""
    principal = await accounts.authenticate(db, request.cookies.get(SESSION_COOKIE))
    if principal is None:
        return None
    mark_private(request)
    remember_reader(request, principal.locale, principal.tenant_locale)
    if request.method not in SAFE_METHODS and not accounts.csrf_ok(principal, request.headers.get(CSRF_HEADER)):
        raise Forbidden(
            "Cookie-authenticated writes must send the session's CSRF token in the X-CSRF-Token header.",
            code="csrf_failed",
        )
    shared = request_log_context.get()
    if shared is not None:
        shared["actor"] = f"user:{principal.user_id}"
        if principal.tenant_id:
            shared["tenant_id"] = str(principal.tenant_id)
    return principal
