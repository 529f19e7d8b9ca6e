"""Who is looking at a page (read by the accounts service from the same session cookie as the API),
with the page's locale and time zone.

- The locale is the person's own setting when signed in; otherwise the language cookie the header's
  switch sets, then Accept-Language, then the platform default. The time zone is the person's own,
  else their workspace's.
- A page that needs a signed-in person sends everyone else to the sign-in page, back here after.
- Form posts are checked twice against cross-site forgery: the browser must say the form came from
  this site (``Sec-Fetch-Site``/``Origin``), and a signed-in person's form carries the session's CSRF
  token (the same token the API takes in ``X-CSRF-Token``; htmx sends it in that header).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from litestar import Request
from litestar.datastructures import Cookie

from services.http import CSRF_HEADER, SAFE_METHODS, csp_nonce
from services.web.i18n import DEFAULT_LOCALE, negotiate
from tenants.errors import Forbidden, ProblemError
from tenants.models import LOCALES, Role
from tenants.principal import Principal

LOCALE_COOKIE = "guiju_locale"
CSRF_FIELD = "csrf_token"


class SignInRequired(ProblemError):
    """A page for signed-in people, opened by someone who is not: they go to the sign-in page."""

    status = 401
    code = "not_authenticated"
    title = "Sign in first"

    def __init__(self, next_path: str) -> None:
        super().__init__()
        self.next_path = next_path


@dataclass(frozen=True)
class Viewer:
    """The person a page is for, signed in or not, with their locale and time zone."""

    locale: str
    timezone: str
    nonce: str
    path: str
    principal: Principal | None = None
    display_name: str = ""
    email: str = ""
    email_verified: bool = True
    tenant_name: str = ""
    # Counts beside navigation entries, by entry key (see services.web.extensions).
    badges: Mapping[str, int] = field(default_factory=dict)

    @property
    def signed_in(self) -> bool:
        return self.principal is not None

    @property
    def member(self) -> Principal:
        """The signed-in principal (pages that need one get it through :func:`provide_member`)."""
        assert self.principal is not None
        return self.principal

    @property
    def csrf_token(self) -> str:
        return self.principal.csrf_token if self.principal else ""

    @property
    def role(self) -> Role | None:
        return self.principal.role if self.principal else None

    def at_least(self, role: str) -> bool:
        return self.role is not None and self.role.at_least(Role(role))

    @property
    def other_locale(self) -> str:
        return next(code for code in LOCALES if code != self.locale)


def cookie_locale(request: Request[Any, Any, Any]) -> str | None:
    chosen = request.cookies.get(LOCALE_COOKIE)
    return chosen if chosen in LOCALES else None


def locale_cookie(locale: str) -> Cookie:
    return Cookie(key=LOCALE_COOKIE, value=locale, path="/", max_age=365 * 24 * 3600, samesite="lax", httponly=True)


def anonymous_viewer(request: Request[Any, Any, Any]) -> Viewer:
    """Someone not signed in: the language they chose here, else their browser's."""
    locale = cookie_locale(request) or negotiate(request.headers.get("accept-language"), DEFAULT_LOCALE)
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    zone = "Asia/Shanghai" if locale == "zh-CN" else "UTC"
    return Viewer(locale=locale, timezone=zone, nonce=csp_nonce(request), path=path)


def wants_page(request: Request[Any, Any, Any]) -> bool:
    """A browser navigating (GET for HTML, not the API's or the static files' addresses)."""
    path = request.url.path
    return (
        request.method in SAFE_METHODS
        and "text/html" in request.headers.get("accept", "")
        and not path.startswith(("/api/", "/static/"))
    )


def safe_next(target: str | None, default: str = "/app") -> str:
    """A same-site path to go to after a form (never another site: ``//evil``, ``https://…``)."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def sign_in_url(next_path: str) -> str:
    return f"/login?next={quote(next_path, safe='/')}"


def same_site(request: Request[Any, Any, Any]) -> bool:
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site in {"same-origin", "none"}
    origin = request.headers.get("origin")
    if origin is None:
        return False
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def check_form_origin(request: Request[Any, Any, Any], principal: Principal | None) -> None:
    """Refuse a form post that another site made the browser send (see the module's notes)."""
    if request.method in SAFE_METHODS:
        return
    if not same_site(request):
        raise Forbidden("This form was not sent from this site.", code="csrf_failed")
    if principal is None:
        return
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent, principal.csrf_token):
        raise Forbidden("This form has expired; reload the page and try again.", code="csrf_failed")
