"""Request and response bodies of the OAuth service's API: developer apps, connected apps and
personal access tokens."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from services.schema_docs import documented
from tenants.models import Role
from tenants.scopes import SCOPES

Name = Annotated[str, Meta(max_length=100), documented(min_length=1)]
Url = Annotated[str, Meta(max_length=500)]
ScopeName = Annotated[str, Meta(max_length=40), documented(enum=list(SCOPES))]
Scopes = Annotated[list[ScopeName], Meta(max_length=len(SCOPES))]
RoleName = Annotated[
    str, Meta(max_length=16, description="admin, manager or member"), documented(enum=[r.value for r in Role])
]


class Input(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of request bodies: unknown fields are refused rather than silently ignored."""


class ClientIn(Input):
    name: Name
    publisher: Name
    kind: Annotated[Literal["confidential", "public"], Meta(description="public: no secret, PKCE required")]
    scopes: Scopes
    redirect_uris: Annotated[list[Url], Meta(max_length=10, description="exact-match redirect URIs")] = []
    description: Annotated[str, Meta(max_length=500)] = ""
    logo_url: Url | None = None
    internal: Annotated[bool, Meta(description="only this workspace's people can connect it")] = False
    service_role: Annotated[
        RoleName | None, Meta(description="for client credentials: the role the app acts with on its own")
    ] = None


class ClientPatch(Input):
    name: Name | None = None
    description: Annotated[str, Meta(max_length=500)] | None = None
    logo_url: Url | None = None
    redirect_uris: Annotated[list[Url], Meta(max_length=10)] | None = None
    scopes: Scopes | None = None
    disabled: bool | None = None


class ClientOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    client_id: str
    name: str
    publisher: str
    description: str
    logo_url: str | None
    kind: str
    internal: bool
    redirect_uris: list[str]
    scopes: list[str]
    service_role: str | None
    secret_hint: Annotated[str | None, Meta(description="the secret's last four characters")]
    created_at: datetime
    secret_rotated_at: datetime | None
    disabled: bool


class ClientWithSecretOut(msgspec.Struct, kw_only=True):
    client: ClientOut
    client_secret: Annotated[str | None, Meta(description="shown this once; keep it safe")]


class ConnectedAppOut(msgspec.Struct, kw_only=True):
    client_pk: uuid.UUID
    client_id: str
    name: str
    publisher: str
    people: Annotated[int, Meta(description="members who connected it (0 for the app acting on its own)")]
    scope: str
    connected_at: datetime
    last_issued_at: datetime


class PersonalTokenIn(Input):
    name: Name
    scopes: Scopes
    expires_in_days: Annotated[int, Meta(ge=1, le=366)] | None = 90


class PersonalTokenOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    name: str | None
    scopes: list[str]
    expires_at: datetime | None
    created_at: datetime


class PersonalTokenWithSecretOut(msgspec.Struct, kw_only=True):
    token: PersonalTokenOut
    access_token: Annotated[str, Meta(description="shown this once; send it as `Authorization: Bearer …`")]
