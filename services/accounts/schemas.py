"""Request and response bodies of the accounts API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import Meta

from services.schema_docs import documented
from tenants.models import LOCALES, Industry, Role

# What the service checks itself (every problem at once, each with its own code) is documented here.
Email = Annotated[str, Meta(max_length=254, description="An email address"), documented(format="email", min_length=3)]
Name = Annotated[str, Meta(max_length=100), documented(min_length=1)]
CompanyName = Annotated[str, Meta(max_length=200), documented(min_length=1)]
Password = Annotated[
    str,
    Meta(max_length=1024, description="10–128 characters, hard to guess (zxcvbn score 3 or more by default)"),
    documented(min_length=10, max_length=128),
]
Token = Annotated[str, Meta(max_length=200), documented(min_length=1)]
Locale = Annotated[str, Meta(max_length=8), documented(enum=list(LOCALES))]
TimeZone = Annotated[str, Meta(max_length=64, description="An IANA time zone name, e.g. Asia/Shanghai")]
RoleName = Annotated[
    str, Meta(max_length=16, description="owner, admin, manager or member"), documented(enum=[r.value for r in Role])
]
PackRoleKey = Annotated[
    str,
    Meta(max_length=130, description="A role of a template pack: `<pack id>:<role key>`, e.g. `general-starter:hr`"),
    documented(min_length=3),
]
PackRoleKeys = Annotated[list[PackRoleKey], Meta(max_length=50)]


class Input(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of request bodies: unknown fields are refused rather than silently ignored."""


class SignupIn(Input):
    email: Email
    password: Password
    display_name: Name
    company_name: CompanyName
    industry: Annotated[
        str,
        Meta(max_length=32, description="ecommerce, foreign_trade, clinic or general"),
        documented(enum=[i.value for i in Industry]),
    ]
    locale: (
        Annotated[
            str,
            Meta(max_length=8, description="zh-CN or en; default: from Accept-Language, else zh-CN"),
            documented(enum=list(LOCALES)),
        ]
        | None
    ) = None
    timezone: TimeZone | None = None
    slug: (
        Annotated[
            str,
            Meta(max_length=63, description="The workspace's address: lower-case letters, digits and dashes"),
            documented(pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$"),
        ]
        | None
    ) = None


class LoginIn(Input):
    email: Email
    password: Password


class TokenIn(Input):
    token: Token


class EmailIn(Input):
    email: Email


class ResetPasswordIn(Input):
    token: Token
    password: Password


class PasswordIn(Input):
    password: Password


class ChangePasswordIn(Input):
    current_password: Password
    new_password: Password


class ReauthenticationOut(msgspec.Struct):
    """Sensitive actions (plugin review, publisher rights, source downloads) are allowed until then."""

    valid_until: datetime


class SwitchTenantIn(Input):
    tenant_id: uuid.UUID


class InvitationIn(Input):
    """``pack_roles``: the roles of the workspace's packs (or of the packs chosen in onboarding, not
    yet installed) the invitee holds once they join."""

    email: Email
    role: RoleName = "member"
    pack_roles: PackRoleKeys = []


class PackRoleAssignIn(Input):
    """The member who holds a pack role from now on; ``null``: nobody."""

    user_id: uuid.UUID | None


class AcceptInvitationIn(Input):
    token: Token
    display_name: Name | None = None
    password: Password | None = None
    locale: Locale | None = None


class RoleIn(Input):
    role: RoleName


class TenantPatch(Input):
    name: CompanyName | None = None
    timezone: TimeZone | None = None
    locale: Locale | None = None


class ProfilePatch(Input):
    display_name: Name | None = None
    locale: Locale | None = None
    timezone: (
        Annotated[str, Meta(max_length=64, description="An IANA time zone name; empty: the workspace's time zone")]
        | None
    ) = None


class EntityIn(Input):
    name: CompanyName
    legal_name: Annotated[str, Meta(max_length=300)] | None = None
    country: Annotated[str, Meta(max_length=2, description="ISO 3166-1 alpha-2"), documented(pattern="^[A-Z]{2}$")] = (
        "CN"
    )
    currency: Annotated[str, Meta(max_length=3, description="ISO 4217"), documented(pattern="^[A-Z]{3}$")] = "CNY"


class UserOut(msgspec.Struct):
    id: uuid.UUID
    email: str
    display_name: str
    locale: str
    email_verified: bool
    timezone: str | None = None


class TenantOut(msgspec.Struct):
    id: uuid.UUID
    slug: str
    name: str
    industry: str
    timezone: str
    locale: str
    status: str


class WorkspaceOut(msgspec.Struct):
    tenant: TenantOut
    role: str


class SessionOut(msgspec.Struct):
    """The signed-in user, the workspace they work in, and the CSRF token for cookie-authenticated writes."""

    user: UserOut
    tenant: TenantOut | None
    role: str | None
    csrf_token: str
    workspaces: list[WorkspaceOut]


class SignupOut(msgspec.Struct):
    user: UserOut
    tenant: TenantOut
    csrf_token: str


class MemberOut(msgspec.Struct):
    user_id: uuid.UUID
    email: str
    display_name: str
    role: str
    joined_at: datetime


class InvitationOut(msgspec.Struct):
    id: uuid.UUID
    email: str
    role: str
    pack_roles: list[str]
    expires_at: datetime
    created_at: datetime


class PackRoleOut(msgspec.Struct):
    """A role of an installed pack and the member who holds it (``null``: nobody)."""

    key: str
    title: str
    pack_title: str
    description: str
    user_id: uuid.UUID | None


class EntityOut(msgspec.Struct):
    id: uuid.UUID
    name: str
    legal_name: str
    country: str
    currency: str
    is_default: bool
