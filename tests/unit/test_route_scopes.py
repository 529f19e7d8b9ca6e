"""Every API route names the scopes a token needs to call it, or is on the reviewed list of routes
that tokens may not call at all: a new route without either fails here, not in production."""

from __future__ import annotations

from pathlib import Path

import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute

from services.app import create_app
from services.settings import Settings
from services.web.i18n import catalog
from services.web.scope_texts import SCOPE_TEXTS
from tenants.models import LOCALES
from tenants.scopes import OPT_KEY, READ_METHODS, SCOPES, api_scopes, no_tokens, only_scope, required_scope

API_PREFIX = "/api/v1/"

#: Routes a token may not call, each with why. Adding one is a decision: a token acting for a
#: person must not reach these.
TOKEN_REFUSED: dict[str, str] = {
    # Signing in and out, passwords, login sessions and one's own account are the person's alone.
    "POST /api/v1/auth/signup": "creates an account",
    "POST /api/v1/auth/login": "signs in with a password",
    "POST /api/v1/auth/logout": "ends a login session",
    "POST /api/v1/auth/reauthenticate": "checks the password for sensitive actions",
    "POST /api/v1/auth/change-password": "changes the password",
    "POST /api/v1/auth/password-reset": "mails a password-reset link",
    "POST /api/v1/auth/password-reset/confirm": "sets a new password",
    "POST /api/v1/auth/verify-email": "confirms an email address",
    "POST /api/v1/auth/resend-verification": "mails a verification link",
    "POST /api/v1/auth/accept-invitation": "joins a workspace",
    "GET /api/v1/auth/session": "the login session and its CSRF token",
    "PATCH /api/v1/auth/profile": "the person's own name, language and time zone",
    "POST /api/v1/auth/switch-tenant": "a token belongs to one workspace",
    # The person's own word that they read a version.
    "POST /api/v1/procedures/{procedure_id}/versions/{version_id}/acknowledge": "a personal attestation",
    # What a workspace publishes is signed off by a person in the portal.
    "GET /api/v1/publisher/plugins": "the publisher portal",
    "POST /api/v1/publisher/plugins/remote": "the publisher portal",
    "POST /api/v1/publisher/plugins/source": "the publisher portal",
    # Tokens and apps are made and revoked by a signed-in person: a token never makes or sees tokens.
    "GET /api/v1/oauth/clients": "developer apps",
    "POST /api/v1/oauth/clients": "developer apps",
    "GET /api/v1/oauth/clients/{client_pk}": "developer apps",
    "PATCH /api/v1/oauth/clients/{client_pk}": "developer apps",
    "DELETE /api/v1/oauth/clients/{client_pk}": "developer apps",
    "POST /api/v1/oauth/clients/{client_pk}/rotate-secret": "developer apps",
    "GET /api/v1/oauth/connected-apps": "connected apps",
    "DELETE /api/v1/oauth/connected-apps/{client_pk}": "connected apps",
    "GET /api/v1/personal-tokens": "personal access tokens",
    "POST /api/v1/personal-tokens": "personal access tokens",
    "DELETE /api/v1/personal-tokens/{token_id}": "personal access tokens",
    # The platform's own administration.
    "POST /api/v1/admin/publishers": "platform administration",
    "GET /api/v1/admin/plugin-versions": "platform administration",
    "GET /api/v1/admin/plugin-versions/{plugin}/{version}/source": "platform administration",
    "POST /api/v1/admin/plugin-versions/{plugin}/{version}/approve": "platform administration",
    "POST /api/v1/admin/plugin-versions/{plugin}/{version}/reject": "platform administration",
}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Litestar:
    tmp: Path = tmp_path_factory.mktemp("scopes")
    settings = Settings(var_dir=tmp, database_url=f"sqlite+aiosqlite:///{tmp}/unused.db", secret_key="t" * 48)
    return create_app(settings)


def api_operations(app: Litestar) -> dict[str, str | None]:
    """``METHOD /path`` of every API operation → the scope a token needs (None: tokens refused)."""
    found: dict[str, str | None] = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or not route.path.startswith(API_PREFIX):
            continue
        for method, (handler, _) in route.route_handler_map.items():
            if method in ("HEAD", "OPTIONS"):  # Litestar's own, answered for every path
                continue
            found[f"{method} {route.path_format}"] = required_scope(handler.opt, method)
    return found


def test_every_api_route_has_scopes_or_is_refused_on_purpose(app: Litestar) -> None:
    operations = api_operations(app)
    assert len(operations) > 100
    unscoped = {key for key, scope in operations.items() if scope is None}
    assert sorted(unscoped - TOKEN_REFUSED.keys()) == [], "add opt=api_scopes(...) or list the route above"
    # The list names only routes that exist and are refused.
    assert sorted(TOKEN_REFUSED.keys() - unscoped) == []


def test_declared_scopes_are_in_the_catalog_and_reads_need_a_read_scope(app: Litestar) -> None:
    for key, scope in api_operations(app).items():
        if scope is None:
            continue
        assert scope in SCOPES, key
        if key.split(" ", 1)[0] in READ_METHODS:
            assert scope.endswith((":read", ":manage")), key


def test_a_handler_override_wins_over_its_controller() -> None:
    controller = api_scopes("records")
    assert required_scope(controller, "GET") == "records:read"
    assert required_scope(controller, "delete") == "records:write"
    assert required_scope({**controller, **only_scope("records:read")}, "POST") == "records:read"
    assert required_scope({**controller, **no_tokens()}, "POST") is None
    assert required_scope({}, "GET") is None
    assert OPT_KEY in controller
    with pytest.raises(ValueError, match="unknown scope"):
        api_scopes("nothing")


def test_every_scope_has_plain_words_in_every_language() -> None:
    assert list(SCOPE_TEXTS) == list(SCOPES)
    for locale in LOCALES:
        missing = [text for text in SCOPE_TEXTS.values() if not catalog(locale).get(text)]
        assert missing == [], locale
