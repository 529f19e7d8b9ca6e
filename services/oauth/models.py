"""Tables of the OAuth service.

All three are platform tables that name a tenant, like login sessions: a client, a code or a token
is looked up by its public id or by the hash of its secret before any tenant is known, so no tenant
lock can scope the lookup. Every read on behalf of a person filters by the caller's tenant in
``service.py``, and ``tests/integration/test_oauth.py`` shows tenant B never reaches tenant A's rows.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tenants.base import Base, new_id, utcnow


class OAuthClient(Base):
    """A developer app, registered by an admin of its owning workspace.

    A confidential app holds a secret (kept as a hash; shown once) and may use client credentials,
    acting in its owning workspace as its own service user with ``service_role``. A public app (a
    script on a desktop, a single-page app) has no secret and must use PKCE. People of any
    workspace may connect an app to theirs unless it is ``internal``.
    """

    __tablename__ = "oauth_clients"
    __table_args__ = (Index(None, "tenant_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    publisher: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(500), default="")
    logo_url: Mapped[str | None] = mapped_column(String(500), default=None)
    kind: Mapped[str] = mapped_column(String(16))  # confidential | public
    internal: Mapped[bool] = mapped_column(default=False)
    secret_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    secret_hint: Mapped[str | None] = mapped_column(String(8), default=None)
    redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Client credentials act as this user (no password, no membership) with this role.
    service_user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    service_role: Mapped[str | None] = mapped_column(String(16), default=None)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    secret_rotated_at: Mapped[datetime | None] = mapped_column(default=None)
    disabled_at: Mapped[datetime | None] = mapped_column(default=None)


class OAuthCode(Base):
    """An authorization code: single use, ten minutes, bound to its client, redirect URI, PKCE
    challenge, person, workspace and scope. A code presented twice revokes what it issued."""

    __tablename__ = "oauth_codes"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_pk: Mapped[uuid.UUID] = mapped_column(ForeignKey("oauth_clients.id", ondelete="CASCADE"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    redirect_uri: Mapped[str] = mapped_column(String(500))
    scope: Mapped[str] = mapped_column(Text)
    code_challenge: Mapped[str | None] = mapped_column(String(128), default=None)
    code_challenge_method: Mapped[str | None] = mapped_column(String(8), default=None)
    # The tokens issued from this code share it as their family.
    family_id: Mapped[uuid.UUID] = mapped_column(default=new_id)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OAuthToken(Base):
    """An access token and its refresh token, stored as hashes, bound to one workspace and one user.

    A refresh rotates: the old row is marked ``rotated_at`` and a new row of the same ``family_id``
    is issued. Presenting a rotated refresh token again revokes the whole family (the token was
    stolen, or copied). A personal access token (``kind`` = ``personal``) has no client and no
    refresh token; its ``name`` says what the script is.
    """

    __tablename__ = "oauth_tokens"
    __table_args__ = (
        Index(None, "tenant_id", "user_id"),
        Index(None, "family_id"),
        Index(None, "client_pk"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16))  # oauth | personal
    access_hash: Mapped[str] = mapped_column(String(64), unique=True)
    refresh_hash: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    client_pk: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("oauth_clients.id", ondelete="CASCADE"), default=None
    )
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # Client credentials: the app's own identity, whose role is the client's service role.
    as_service: Mapped[bool] = mapped_column(default=False)
    # The role the token acts with: a copy of its person's membership, kept in step by every change
    # of it (``service.sync_token_roles``), so that a Bearer call is one statement like a session's.
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(100), default=None)
    scope: Mapped[str] = mapped_column(Text)
    grant_type: Mapped[str] = mapped_column(String(32))
    family_id: Mapped[uuid.UUID] = mapped_column(default=new_id)
    access_expires_at: Mapped[datetime | None]
    refresh_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    rotated_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
