"""The principal of an API request: a Bearer token (an app's or a personal one) or the session
cookie. This is the one guard of what a token may do: the route's scope (``tenants.scopes``) must
be among the token's, and each app or personal token has its own rate limit, reported in the
``RateLimit-*`` headers of every answer. What the person's role allows is checked by the services,
as for a session.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts.principals import session_principal
from services.http import mark_private
from services.logs import request_log_context
from services.oauth import service as oauth
from services.ratelimit import Limit, RateLimiter, too_many
from services.settings import Settings
from services.web.i18n import N_, remember_reader
from tenants.errors import Forbidden, Unauthorized
from tenants.principal import Principal
from tenants.scopes import required_scope

#: Where a request keeps its rate-limit headers until the answer goes out.
QUOTA_HEADERS_KEY = "api_quota_headers"


def _bearer_credential(request: Request[Any, Any, Any]) -> str | None:
    scheme, _, credential = (request.headers.get("authorization") or "").partition(" ")
    return credential.strip() if scheme.lower() == "bearer" else None


def _invalid_token() -> Unauthorized:
    return Unauthorized(
        "The access token is unknown, expired or revoked.",
        code="invalid_token",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


async def _token_principal(request: Request[Any, Any, Any], db: AsyncSession, credential: str) -> Principal:
    principal = await oauth.authenticate_bearer(db, credential) if credential else None
    if principal is None:
        raise _invalid_token()
    needed = required_scope(request.route_handler.opt, request.method)
    if needed is None:
        raise Forbidden(
            "This address does not take access tokens: sign in to use it.",
            code="token_not_accepted",
        )
    if not principal.allows(needed):
        raise Forbidden(
            "The access token does not have the scope {scope}.",
            code="insufficient_scope",
            scope=needed,
            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{needed}"'},
        )
    settings: Settings = request.app.state.settings
    limiter: RateLimiter = request.app.state.rate_limiter
    caller = f"client:{principal.client_id}" if principal.client_id else f"token:{principal.session_id}"
    quota = await limiter.take(Limit.parse("api", settings.api_client_limits), caller)
    request.scope.setdefault("state", {})[QUOTA_HEADERS_KEY] = quota.headers()
    if quota.retry_after is not None:
        raise too_many(
            quota.retry_after, "api_rate_limited", N_("Too many API calls from this app; wait and try again.")
        )
    mark_private(request)
    remember_reader(request, principal.locale, principal.tenant_locale)
    shared = request_log_context.get()
    if shared is not None:
        shared["actor"] = f"user:{principal.user_id}"
        shared["credential"] = caller
        shared["tenant_id"] = str(principal.tenant_id)
    return principal


async def _resolve(request: Request[Any, Any, Any], db: AsyncSession) -> Principal | None:
    credential = _bearer_credential(request)
    if credential is not None:
        return await _token_principal(request, db, credential)
    return await session_principal(request, db)


async def provide_principal(request: Request[Any, Any, Any], db: NamedDependency[AsyncSession]) -> Principal:
    """The caller, by token or by session; 401 without either, 403 on a scope the token lacks, a
    route tokens may not use, or a cookie write without CSRF; 429 over the app's rate limit."""
    principal = await _resolve(request, db)
    if principal is None:
        raise Unauthorized("Sign in first.", code="not_authenticated")
    return principal


async def provide_optional_principal(
    request: Request[Any, Any, Any], db: NamedDependency[AsyncSession]
) -> Principal | None:
    return await _resolve(request, db)


async def send_quota_headers(message: Any, scope: Any) -> None:
    """``before_send``: a token's answer (a refusal too) carries its rate limit's headers."""
    if message.get("type") != "http.response.start":
        return
    quota = scope.get("state", {}).get(QUOTA_HEADERS_KEY)
    if quota:
        message["headers"] = [
            *message.get("headers", []),
            *((name.lower().encode(), value.encode()) for name, value in quota.items()),
        ]
