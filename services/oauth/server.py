"""Authlib's authorization server, and the one adapter between it and Litestar.

Authlib's grants and endpoints are synchronous; our database is not. A request's OAuth work runs
on a worker thread (:func:`run_oauth`), and each storage hook Authlib calls there runs its
coroutine back on the event loop with the request's own session (:func:`_wait`), so the whole
exchange is one transaction of the request, rolled back if anything fails.

The protocol is Authlib's: the code grant with PKCE (S256 only; required for public apps), client
credentials, refresh with rotation, revocation (RFC 7009), introspection (RFC 7662) and the
server's metadata (RFC 8414). What is ours: the storage, reuse detection (a reused code or refresh
token revokes its family), scopes bounded by the app and by the person's role, and the mapping of
a Litestar request to Authlib's and of Authlib's answer back.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio.from_thread
import anyio.to_thread
from authlib.oauth2 import AuthorizationServer as AuthlibServer
from authlib.oauth2.rfc6749 import (
    AuthorizationCodeMixin,
    ClientMixin,
    OAuth2Request,
    TokenMixin,
    grants,
)
from authlib.oauth2.rfc6749.errors import InvalidRequestError, InvalidScopeError
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from litestar import Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from services.oauth import service
from services.oauth.models import OAuthClient, OAuthCode, OAuthToken
from services.settings import Settings
from tenants.base import utcnow
from tenants.models import Role
from tenants.scopes import SCOPES, parse_scopes, scope_text, scopes_for_role

T = TypeVar("T")


@dataclass
class _Call:
    """What the hooks of one request's OAuth exchange need: its session and settings."""

    db: AsyncSession
    settings: Settings


_call: contextvars.ContextVar[_Call] = contextvars.ContextVar("oauth_call")


def _wait(function: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """Run ``function(db, *args, **kwargs)`` on the event loop from Authlib's thread, and wait."""
    call = _call.get()

    async def on_the_loop() -> T:
        return await function(call.db, *args, **kwargs)

    return anyio.from_thread.run(on_the_loop)


async def run_oauth(db: AsyncSession, settings: Settings, work: Callable[[], T]) -> T:
    """Run ``work`` (a call into Authlib) on a worker thread; its storage hooks come back here."""
    token = _call.set(_Call(db, settings))
    try:
        return await anyio.to_thread.run_sync(work)
    finally:
        _call.reset(token)


# ---------------------------------------------------------------- Authlib's view of our rows


class AppClient(ClientMixin):
    """An :class:`OAuthClient` as Authlib asks about it."""

    def __init__(self, row: OAuthClient) -> None:
        self.row = row
        self.client_id = row.client_id

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.row.redirect_uris[0] if len(self.row.redirect_uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return scope_text(self.row.scopes)
        return scope_text(parse_scopes(scope) & set(self.row.scopes))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # Exact match, as OAuth 2.1 requires: no prefixes, no patterns.
        return redirect_uri in self.row.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return service.check_client_secret(self.row, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.row.kind == service.PUBLIC:
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        if grant_type == "client_credentials":
            return self.row.kind == service.CONFIDENTIAL and self.row.service_role is not None
        return grant_type in ("authorization_code", "refresh_token")

    @property
    def is_public(self) -> bool:
        return self.row.kind == service.PUBLIC


class AppCode(AuthorizationCodeMixin):
    def __init__(self, row: OAuthCode) -> None:
        self.row = row

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope

    def get_nonce(self) -> None:
        return None

    def get_auth_time(self) -> None:
        return None

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


class AppToken(TokenMixin):
    def __init__(self, row: OAuthToken, client: OAuthClient | None) -> None:
        self.row = row
        self.client = client

    def check_client(self, client: AppClient) -> bool:
        return self.row.client_pk == client.row.id

    def get_scope(self) -> str:
        return self.row.scope

    def get_expires_in(self) -> int:
        if self.row.access_expires_at is None:
            return 0
        return max(0, int((self.row.access_expires_at - utcnow()).total_seconds()))

    def is_expired(self) -> bool:
        return self.row.access_expires_at is not None and self.row.access_expires_at <= utcnow()

    def is_revoked(self) -> bool:
        return self.row.revoked_at is not None or self.row.rotated_at is not None


# ---------------------------------------------------------------- grants


def _check_scope_within_client(grant: grants.BaseGrant, redirect_uri: str | None = None) -> None:
    """A requested scope the app was not registered for is refused, not silently dropped: the
    developer learns at once (``invalid_scope``)."""
    requested = grant.request.payload.scope
    client: AppClient | None = grant.request.client
    if not requested:
        return
    words = set(requested.split())
    if not words <= set(SCOPES) or (client is not None and not words <= set(client.row.scopes)):
        raise InvalidScopeError(redirect_uri=redirect_uri, state=grant.request.payload.state)


class PkceS256(CodeChallenge):
    """PKCE with S256 only; a public app must send a challenge (a confidential one may)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: grants.AuthorizationCodeGrant, redirect_uri: str) -> None:
        request = grant.request
        client: AppClient = request.client
        if client.is_public and not request.payload.data.get("code_challenge"):
            raise InvalidRequestError("A public app must send a PKCE code_challenge (S256).")
        if request.payload.data.get("code_challenge") and not request.payload.data.get("code_challenge_method"):
            raise InvalidRequestError("Send code_challenge_method=S256.")
        super().validate_code_challenge(grant, redirect_uri)

    def get_authorization_code_challenge(self, authorization_code: AppCode) -> str | None:
        return authorization_code.row.code_challenge

    def get_authorization_code_challenge_method(self, authorization_code: AppCode) -> str | None:
        return authorization_code.row.code_challenge_method


class CodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    def validate_authorization_request(self) -> str:
        redirect_uri: str = super().validate_authorization_request()
        _check_scope_within_client(self, redirect_uri)
        return redirect_uri

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        grantee: service.Grantee = request.user
        client: AppClient = request.client
        data = request.payload.data
        _wait(
            service.save_code,
            code,
            client.row,
            grantee,
            redirect_uri=request.payload.redirect_uri or client.get_default_redirect_uri() or "",
            scope=getattr(request, "granted_scope", ""),
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
        )

    def query_authorization_code(self, code: str, client: AppClient) -> AppCode | None:
        row = _wait(service.take_code, code, client.row)
        return AppCode(row) if row else None

    def delete_authorization_code(self, authorization_code: AppCode) -> None:
        """The code was marked used when it was taken; it is kept to recognise a replay."""

    def authenticate_user(self, authorization_code: AppCode) -> service.Grantee | None:
        grantee = _wait(service.grantee_of_code, authorization_code.row)
        if grantee is not None:
            self.request.family_id = authorization_code.row.family_id
        return grantee


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    def validate_token_request(self) -> None:
        super().validate_token_request()
        _check_scope_within_client(self)
        client: AppClient = self.request.client
        role = client.row.service_role
        requested = parse_scopes(self.request.payload.scope) if self.request.payload.scope else set(client.row.scopes)
        if role is not None and not requested <= scopes_for_role(Role(role)):
            raise InvalidScopeError("The app's role cannot use every scope asked for.")


class RefreshGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> AppToken | None:
        client: AppClient = self.request.client
        row = _wait(service.refresh_token_row, refresh_token, client.row)
        return AppToken(row, client.row) if row else None

    def authenticate_user(self, refresh_token: AppToken) -> service.Grantee | None:
        client: AppClient = self.request.client
        grantee = _wait(service.grantee_of_token, refresh_token.row, client.row)
        if grantee is not None:
            self.request.family_id = refresh_token.row.family_id
        return grantee

    def revoke_old_credential(self, refresh_token: AppToken) -> None:
        _wait(service.rotate, refresh_token.row)


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> AppToken | None:
        row = _wait(service.token_by_secret, token_string, token_type_hint)
        return AppToken(row, None) if row else None

    def revoke_token(self, token: AppToken, request: OAuth2Request) -> None:
        _wait(service.revoke_token_row, token.row)


class Introspection(IntrospectionEndpoint):
    """For confidential apps, about their own tokens."""

    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> AppToken | None:
        row = _wait(service.token_by_secret, token_string, token_type_hint)
        return AppToken(row, None) if row else None

    def check_permission(self, token: AppToken, client: AppClient, request: OAuth2Request) -> bool:
        return token.check_client(client)

    def introspect_token(self, token: AppToken) -> dict[str, Any]:
        row = token.row
        return {
            "active": True,
            "client_id": _wait(service.public_client_id, row.client_pk),
            "scope": row.scope,
            "token_type": "Bearer",
            "exp": int(row.access_expires_at.timestamp()) if row.access_expires_at else None,
            "iat": int(row.created_at.timestamp()),
            "sub": str(row.user_id),
            "tenant_id": str(row.tenant_id),
        }


# ---------------------------------------------------------------- the server


class GuijuAuthorizationServer(AuthlibServer):
    def __init__(self) -> None:
        super().__init__(scopes_supported=list(SCOPES))
        self.register_grant(CodeGrant, [PkceS256(required=True)])
        self.register_grant(ClientCredentialsGrant)
        self.register_grant(RefreshGrant)
        self.register_endpoint(Revocation)
        self.register_endpoint(Introspection)
        self.register_token_generator("default", self._generate)

    def _generate(
        self,
        grant_type: str,
        client: AppClient,
        user: service.Grantee | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        settings = _call.get().settings
        generator = BearerTokenGenerator(
            lambda **_: service.new_secret(service.TOKEN_PREFIX)[0],
            lambda **_: service.new_secret(service.REFRESH_PREFIX)[0],
            lambda _client, _grant_type: settings.oauth_access_token_minutes * 60,
        )
        token: dict[str, Any] = generator.generate(
            grant_type,
            client,
            user=user,
            scope=scope,
            expires_in=expires_in,
            include_refresh_token=include_refresh_token,
        )
        return token

    def query_client(self, client_id: str) -> AppClient | None:
        row = _wait(service.client_by_client_id, client_id)
        return AppClient(row) if row else None

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        client: AppClient = request.client
        grant_type = request.payload.grant_type or ""
        grantee = request.user
        if grant_type == "client_credentials":
            grantee = _wait(service.service_grantee, client.row)
        assert grantee is not None
        _wait(
            service.store_token,
            _call.get().settings,
            token,
            client=client.row,
            grantee=grantee,
            grant_type=grant_type,
            family_id=getattr(request, "family_id", None),
        )

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Authlib's signals: nothing listens (grants and revocations are audited in the service)."""

    def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
        return request  # already made from the Litestar request by :func:`oauth_request`

    def create_json_request(self, request: Any) -> Any:
        raise NotImplementedError("no endpoint here takes JSON")

    def handle_response(self, status: int, body: Any, headers: Any) -> Response[Any]:
        if isinstance(body, dict):
            body = json.dumps(body)
        pairs = dict(headers or [])
        media_type = pairs.pop("Content-Type", "text/plain; charset=utf-8")
        return Response(content=body or "", status_code=status, headers=pairs, media_type=media_type)


SERVER = GuijuAuthorizationServer()


class _Payload(BasicOAuth2Payload):
    def __init__(self, data: Mapping[str, str], datalist: dict[str, list[str]]) -> None:
        self._data = dict(data)
        self._datalist = datalist


async def oauth_request(request: Request[Any, Any, Any], *, form: bool) -> OAuth2Request:
    """Authlib's request for a Litestar one: the query's parameters (the authorization endpoint's
    GET) or the form's (every POST), every repeated parameter kept (Authlib refuses repeats)."""
    if form:
        data = await request.form()
        items = list(data.multi_items())
    else:
        items = list(request.query_params.multi_items())
    datalist: dict[str, list[str]] = {}
    for key, value in items:
        datalist.setdefault(key, []).append(str(value))
    oauth = OAuth2Request(request.method, str(request.url), headers=request.headers)
    oauth.payload = _Payload({key: values[0] for key, values in datalist.items()}, datalist)
    oauth._body = {key: values[0] for key, values in datalist.items()}  # Authlib reads `form` from here
    return oauth


def metadata(base_url: str) -> dict[str, Any]:
    """The server's metadata (RFC 8414), checked by Authlib's own validator when served over https
    (RFC 8414 wants an https issuer; a laptop's http://127.0.0.1 is served as it is)."""
    document = AuthorizationServerMetadata(
        {
            "issuer": base_url,
            "authorization_endpoint": f"{base_url}/oauth/authorize",
            "token_endpoint": f"{base_url}/oauth/token",
            "revocation_endpoint": f"{base_url}/oauth/revoke",
            "introspection_endpoint": f"{base_url}/oauth/introspect",
            "scopes_supported": list(SCOPES),
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "service_documentation": f"{base_url}/api/docs",
        }
    )
    if base_url.startswith("https://"):
        document.validate()
    return dict(document)
