"""The consent page: a person connects an app to one of their workspaces.

``GET /oauth/authorize`` is the authorization endpoint. Authlib checks the request (app, exact
redirect URI, PKCE, scopes); the page then shows the app's name, publisher and owner, each scope in
plain words, and a chooser of the person's workspaces. The form posts back with the same parameters,
checked again, and Authlib issues the code (or ``access_denied``) to the app's redirect URI.
"""

from __future__ import annotations

import uuid
from typing import Any

from authlib.oauth2 import OAuth2Error
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import service as accounts
from services.oauth import service
from services.oauth.server import SERVER, AppClient, oauth_request, run_oauth
from services.settings import Settings
from services.web.i18n import translate
from services.web.pages import error_page, page
from services.web.scope_texts import scope_phrase
from services.web.viewer import Viewer
from tenants.scopes import SCOPES, parse_scopes, scope_text, scopes_for_role

#: The parameters of an authorization request the form carries back unchanged.
OAUTH_PARAMETERS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
)


def _refused_request(viewer: Viewer, error: OAuth2Error) -> Template:
    """An authorization request that cannot go back to the app (unknown app, redirect URI not
    registered): said here, never redirected to an address the app did not register."""
    return error_page(viewer, 400, error.description or error.error)


class ConsentPages(Controller):
    path = "/oauth/authorize"
    include_in_schema = False

    @get("/")
    async def consent(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
        member: NamedDependency[Viewer],
    ) -> Template | Response[Any]:
        oauth = await oauth_request(request, form=False)
        try:
            grant = await run_oauth(db, settings, lambda: SERVER.get_consent_grant(oauth))
        except OAuth2Error as error:
            if error.redirect_uri:
                answer: Response[Any] = SERVER.handle_error_response(oauth, error)
                return answer
            return _refused_request(member, error)
        client: AppClient = grant.client
        assert member.principal is not None
        workspaces = await accounts.tenants_of(db, member.principal.user_id)
        if client.row.internal:
            workspaces = [(tenant, role) for tenant, role in workspaces if tenant.id == client.row.tenant_id]
        if not workspaces:
            return error_page(
                member, 403, translate("This app can only be connected by its own workspace.", member.locale)
            )
        requested = parse_scopes(oauth.payload.scope) if oauth.payload.scope else frozenset(client.row.scopes)
        chosen = (
            member.principal.tenant_id
            if any(t.id == member.principal.tenant_id for t, _ in workspaces)
            else workspaces[0][0].id
        )
        return page(
            member,
            "oauth/consent.html",
            client=client.row,
            owner=await service.owner_name(db, client.row),
            scopes=[(scope, scope_phrase(scope, member.locale)) for scope in SCOPES if scope in requested],
            workspaces=[
                {
                    "id": tenant.id,
                    "name": tenant.name,
                    "role": role.value,
                    "withheld": [
                        scope_phrase(s, member.locale) for s in SCOPES if s in requested - scopes_for_role(role)
                    ],
                }
                for tenant, role in workspaces
            ],
            chosen=chosen,
            parameters={name: oauth.payload.data[name] for name in OAUTH_PARAMETERS if oauth.payload.data.get(name)},
        )

    @post("/")
    async def decide(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
        member: NamedDependency[Viewer],
    ) -> Template | Response[Any]:
        oauth = await oauth_request(request, form=True)
        form = await request.form()
        assert member.principal is not None
        user_id = member.principal.user_id
        try:
            grant = await run_oauth(db, settings, lambda: SERVER.get_consent_grant(oauth))
        except OAuth2Error as error:
            if error.redirect_uri:
                refused: Response[Any] = SERVER.handle_error_response(oauth, error)
                return refused
            return _refused_request(member, error)
        grantee = None
        if form.get("decision") == "allow":
            try:
                tenant_id = uuid.UUID(str(form.get("tenant_id", "")))
            except ValueError:
                tenant_id = member.principal.tenant_id or uuid.UUID(int=0)
            client: AppClient = grant.client
            grantee, granted, _withheld = await service.grantable_scopes(
                db, client.row, user_id, tenant_id, oauth.payload.scope
            )
            oauth.granted_scope = scope_text(granted)
            if not granted:
                grantee = None  # nothing their role can grant: the app hears access_denied
        answer: Response[Any] = await run_oauth(
            db, settings, lambda: SERVER.create_authorization_response(oauth, grant_user=grantee, grant=grant)
        )
        return answer


PAGES = [ConsentPages]
