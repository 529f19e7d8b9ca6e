"""Who is calling: the principal of a request or job, in which tenant, with which role.

It lives in the kernel so that the HTTP layer, every service, the pages and the OAuth layer can
depend on it without depending on the accounts service that signs people in.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from tenants.base import utcnow
from tenants.errors import Forbidden
from tenants.models import Role


@dataclass(frozen=True)
class Principal:
    """Who is calling, in which tenant, with which role (from the session cookie)."""

    user_id: uuid.UUID
    session_id: uuid.UUID
    tenant_id: uuid.UUID | None
    role: Role | None
    csrf_token: str
    password_checked_at: datetime | None = None  # when this login session last checked the password
    locale: str | None = None  # the person's own language setting
    tenant_locale: str | None = None  # their workspace's default language
    # A Bearer token's scopes (see tenants.scopes); None for a browser session, which only its
    # role limits. ``session_id`` is then the token's id.
    scopes: frozenset[str] | None = None
    client_id: uuid.UUID | None = None  # the OAuth client the token was issued to, if any

    @property
    def by_token(self) -> bool:
        return self.scopes is not None

    def allows(self, scope: str) -> bool:
        """Whether the credential reaches ``scope``'s area (a session reaches every area)."""
        return self.scopes is None or scope in self.scopes

    def require_tenant(self) -> uuid.UUID:
        if self.tenant_id is None or self.role is None:
            raise Forbidden("Choose a workspace first.", code="no_tenant_selected")
        return self.tenant_id

    def require_role(self, role: Role) -> uuid.UUID:
        tenant_id = self.require_tenant()
        assert self.role is not None
        if not self.role.at_least(role):
            raise Forbidden("This needs the {role} role or higher.", code="role_required", role=role.value)
        return tenant_id

    def require_recent_password(self, within: timedelta) -> None:
        """For sensitive actions: the password was checked in this session within ``within``."""
        if self.password_checked_at is None or utcnow() - self.password_checked_at > within:
            raise Forbidden(
                "Confirm your password first (POST /api/v1/auth/reauthenticate), then try again.",
                code="reauthentication_required",
            )
