"""OAuth scopes: what a token may do, by API area.

A route names the scopes it needs in its handler's ``opt`` (:func:`api_scopes` on a controller, an
override on a handler); the principal resolver compares them with the token's scopes in one place.
A browser session is not limited by scope, only by role; a token is limited by both: its scopes say
which areas it may reach, the user's role (checked by the services as for a session) what it may do
there. A route that names no scope cannot be reached with a token at all (signing in, passwords,
the publisher's and the platform's own routes).

The catalog lives in the kernel so that routes, the OAuth server, the webhook subscriptions and the
pages (the consent screen's plain words) share one list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from tenants.models import Role

#: Every scope, with the lowest role that can use it (a token never gets a scope its user's role
#: could not use: the consent page and the token endpoint cut it off).
SCOPES: Final[Mapping[str, Role]] = {
    "records:read": Role.MEMBER,
    "records:write": Role.MEMBER,
    "files:read": Role.MEMBER,
    "files:write": Role.MEMBER,
    "procedures:read": Role.MEMBER,
    "procedures:write": Role.MANAGER,
    "runs:read": Role.MEMBER,
    "runs:write": Role.MEMBER,
    "automations:read": Role.MEMBER,
    "automations:write": Role.MANAGER,
    "templates:read": Role.MEMBER,
    "templates:write": Role.ADMIN,
    "plugins:read": Role.MEMBER,
    "plugins:write": Role.ADMIN,
    "members:read": Role.MEMBER,
    "members:write": Role.ADMIN,
    "notifications:read": Role.MEMBER,
    "notifications:write": Role.MEMBER,
    "audit:read": Role.ADMIN,
    "analytics:read": Role.MEMBER,
    "webhooks:manage": Role.ADMIN,
}

#: Where a handler's ``opt`` keeps the scopes it needs: ``{"GET": "records:read", "*": "records:write"}``.
OPT_KEY: Final = "api_scopes"
READ_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


def api_scopes(area: str, *, write: str | None = None) -> dict[str, Any]:
    """``opt`` for a controller of ``area``: reads need ``<area>:read``, anything else
    ``<area>:write`` (or ``write``, for an area whose changes have their own scope)."""
    read_scope = f"{area}:read"
    write_scope = write or f"{area}:write"
    for scope in (read_scope, write_scope):
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
    return {OPT_KEY: {"read": read_scope, "write": write_scope}}


def only_scope(scope: str) -> dict[str, Any]:
    """``opt`` for a handler (or controller) that needs ``scope`` whatever its method."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    return {OPT_KEY: {"read": scope, "write": scope}}


def no_tokens() -> dict[str, Any]:
    """``opt`` for a handler of a scoped controller that tokens may not call at all (it overrides
    the controller's scopes)."""
    return {OPT_KEY: None}


def required_scope(opt: Mapping[str, Any], method: str) -> str | None:
    """The scope a request with ``method`` needs on a handler with ``opt``; None when tokens may not
    call it at all."""
    named = opt.get(OPT_KEY)
    if not named:
        return None
    return str(named["read"] if method.upper() in READ_METHODS else named["write"])


def parse_scopes(text: str | Iterable[str] | None) -> frozenset[str]:
    """The scopes of a space-separated ``scope`` parameter (RFC 6749 §3.3), unknown ones dropped."""
    if text is None:
        return frozenset()
    words = text.split() if isinstance(text, str) else list(text)
    return frozenset(word for word in words if word in SCOPES)


def scopes_for_role(role: Role) -> frozenset[str]:
    """The scopes a member with ``role`` can hold."""
    return frozenset(scope for scope, lowest in SCOPES.items() if role.at_least(lowest))


def scope_text(scopes: Iterable[str]) -> str:
    """``scopes`` as the ``scope`` parameter writes them: space-separated, in catalog order."""
    chosen = set(scopes)
    return " ".join(scope for scope in SCOPES if scope in chosen)
