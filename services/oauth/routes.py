"""HTTP routes of the OAuth service: the protocol's endpoints (token, revocation, introspection,
metadata) and the developer API (apps, connected apps, personal access tokens).

The protocol's endpoints hand the request to Authlib (``server.py``) and its answer back; they are
described by the server's metadata, not by the API's OpenAPI document. The developer API is for a
signed-in person only: a token cannot make or see tokens.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT
from sqlalchemy.ext.asyncio import AsyncSession

from services.oauth import service
from services.oauth.models import OAuthClient, OAuthToken
from services.oauth.schemas import (
    ClientIn,
    ClientOut,
    ClientPatch,
    ClientWithSecretOut,
    ConnectedAppOut,
    PersonalTokenIn,
    PersonalTokenOut,
    PersonalTokenWithSecretOut,
)
from services.oauth.server import SERVER, metadata, oauth_request, run_oauth
from services.outputs import struct_from
from services.settings import Settings
from tenants.principal import Principal


def client_out(client: OAuthClient) -> ClientOut:
    return struct_from(ClientOut, client, disabled=client.disabled_at is not None)


def personal_token_out(row: OAuthToken) -> PersonalTokenOut:
    return PersonalTokenOut(
        id=row.id, name=row.name, scopes=row.scope.split(), expires_at=row.access_expires_at, created_at=row.created_at
    )


def base_url(request: Request[Any, Any, Any], settings: NamedDependency[Settings]) -> str:
    return (settings.base_url or str(request.base_url)).rstrip("/")


class OAuthProtocolController(Controller):
    path = "/"
    include_in_schema = False

    @post("/oauth/token", status_code=HTTP_200_OK)
    async def token(
        self, request: Request[Any, Any, Any], db: NamedDependency[AsyncSession], settings: NamedDependency[Settings]
    ) -> Response[Any]:
        oauth = await oauth_request(request, form=True)
        answer: Response[Any] = await run_oauth(db, settings, lambda: SERVER.create_token_response(oauth))
        return answer

    @post("/oauth/revoke", status_code=HTTP_200_OK)
    async def revoke(
        self, request: Request[Any, Any, Any], db: NamedDependency[AsyncSession], settings: NamedDependency[Settings]
    ) -> Response[Any]:
        oauth = await oauth_request(request, form=True)
        answer: Response[Any] = await run_oauth(
            db, settings, lambda: SERVER.create_endpoint_response("revocation", oauth)
        )
        return answer

    @post("/oauth/introspect", status_code=HTTP_200_OK)
    async def introspect(
        self, request: Request[Any, Any, Any], db: NamedDependency[AsyncSession], settings: NamedDependency[Settings]
    ) -> Response[Any]:
        oauth = await oauth_request(request, form=True)
        answer: Response[Any] = await run_oauth(
            db, settings, lambda: SERVER.create_endpoint_response("introspection", oauth)
        )
        return answer

    @get("/.well-known/oauth-authorization-server", sync_to_thread=False)
    def server_metadata(self, request: Request[Any, Any, Any], settings: NamedDependency[Settings]) -> dict[str, Any]:
        return metadata(base_url(request, settings))


class DeveloperAppsController(Controller):
    """Apps registered by this workspace (admins)."""

    path = "/api/v1/oauth/clients"
    tags = ["developer apps"]

    @get("/")
    async def list_clients(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> list[ClientOut]:
        return [client_out(c) for c in await service.list_clients(db, principal)]

    @post("/", status_code=HTTP_201_CREATED)
    async def register(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal], data: JSONBody[ClientIn]
    ) -> ClientWithSecretOut:
        client, secret = await service.register_client(db, principal, service.client_draft(data))
        return ClientWithSecretOut(client=client_out(client), client_secret=secret)

    @get("/{client_pk:uuid}")
    async def get_client(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal], client_pk: FromPath[uuid.UUID]
    ) -> ClientOut:
        return client_out(await service.get_client(db, principal, client_pk))

    @patch("/{client_pk:uuid}")
    async def update_client(
        self,
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        client_pk: FromPath[uuid.UUID],
        data: JSONBody[ClientPatch],
    ) -> ClientOut:
        client = await service.update_client(
            db,
            principal,
            client_pk,
            name=data.name,
            description=data.description,
            logo_url=data.logo_url,
            redirect_uris=data.redirect_uris,
            scopes=data.scopes,
            disabled=data.disabled,
        )
        return client_out(client)

    @post("/{client_pk:uuid}/rotate-secret", status_code=HTTP_200_OK)
    async def rotate_secret(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal], client_pk: FromPath[uuid.UUID]
    ) -> ClientWithSecretOut:
        client, secret = await service.rotate_client_secret(db, principal, client_pk)
        return ClientWithSecretOut(client=client_out(client), client_secret=secret)

    @delete("/{client_pk:uuid}", status_code=HTTP_204_NO_CONTENT)
    async def delete_client(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal], client_pk: FromPath[uuid.UUID]
    ) -> None:
        await service.delete_client(db, principal, client_pk)


class ConnectedAppsController(Controller):
    """Apps holding tokens in this workspace, whoever registered them (admins)."""

    path = "/api/v1/oauth/connected-apps"
    tags = ["developer apps"]

    @get("/")
    async def list_connected(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> list[ConnectedAppOut]:
        return [
            ConnectedAppOut(
                client_pk=app.client.id,
                client_id=app.client.client_id,
                name=app.client.name,
                publisher=app.client.publisher,
                people=app.people,
                scope=app.scope,
                connected_at=app.connected_at,
                last_issued_at=app.last_issued_at,
            )
            for app in await service.connected_apps(db, principal)
        ]

    @delete("/{client_pk:uuid}", status_code=HTTP_204_NO_CONTENT)
    async def disconnect(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal], client_pk: FromPath[uuid.UUID]
    ) -> None:
        await service.disconnect_app(db, principal, client_pk)


class PersonalTokensController(Controller):
    """The caller's own tokens for scripts, in the workspace they work in."""

    path = "/api/v1/personal-tokens"
    tags = ["developer apps"]

    @get("/")
    async def list_tokens(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> list[PersonalTokenOut]:
        return [personal_token_out(row) for row in await service.list_personal_tokens(db, principal)]

    @post("/", status_code=HTTP_201_CREATED)
    async def create_token(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal], data: JSONBody[PersonalTokenIn]
    ) -> PersonalTokenWithSecretOut:
        row, raw = await service.create_personal_token(
            db, principal, name=data.name, scopes=data.scopes, expires_in_days=data.expires_in_days
        )
        return PersonalTokenWithSecretOut(token=personal_token_out(row), access_token=raw)

    @delete("/{token_id:uuid}", status_code=HTTP_204_NO_CONTENT)
    async def revoke_token(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal], token_id: FromPath[uuid.UUID]
    ) -> None:
        await service.revoke_personal_token(db, principal, token_id)


CONTROLLERS = [OAuthProtocolController, DeveloperAppsController, ConnectedAppsController, PersonalTokensController]
