"""The OAuth pages: the consent page, where a person connects an app to one of their workspaces,
and "Apps & API", where admins register developer apps and see the apps connected to their
workspace, and anyone makes personal access tokens for their scripts.

``GET /oauth/authorize`` is the authorization endpoint. Authlib checks the request (app, exact
redirect URI, PKCE, scopes); the page then shows the app's name, publisher and owner, each scope in
plain words, and a chooser of the person's workspaces. The form posts back with the same parameters,
checked again, and Authlib issues the code (or ``access_denied``) to the app's redirect URI.

"Apps & API" (``/developer``) calls the same service functions as the developer API, with its
input structs, so a refusal comes back with the API's problem codes, worded beside each field. A
secret (an app's, a personal token) is shown once, on the answer to the form that made it, and
never kept by a cache.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from authlib.oauth2 import OAuth2Error
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_422_UNPROCESSABLE_ENTITY
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import service as accounts
from services.http import CSP_OPT, PAGE_CSP
from services.oauth import service
from services.oauth.schemas import ClientIn, ClientPatch, PersonalTokenIn
from services.oauth.server import SERVER, AppClient, oauth_request, run_oauth
from services.settings import Settings
from services.web.extensions import register_settings_section
from services.web.forms import decode_form, field_name, form_errors, form_fields
from services.web.i18n import N_, translate
from services.web.pages import error_page, page, redirect
from services.web.scope_texts import scope_phrase
from services.web.viewer import Viewer
from tenants.errors import ProblemError
from tenants.models import Role
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
#: The consent and app pages show the app's own logo, from its https address.
LOGO_CSP = PAGE_CSP.replace("img-src 'self' blob: data:;", "img-src 'self' blob: data: https:;")
assert LOGO_CSP != PAGE_CSP


def _refused_request(viewer: Viewer, error: OAuth2Error) -> Template:
    """An authorization request that cannot go back to the app (unknown app, redirect URI not
    registered): said here, never redirected to an address the app did not register."""
    return error_page(viewer, 400, error.description or error.error)


class ConsentPages(Controller):
    path = "/oauth/authorize"
    include_in_schema = False

    @get("/", opt={CSP_OPT: LOGO_CSP})
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


# ---------------------------------------------------------------- Apps & API (settings)

SECRET_HEADERS = {"Cache-Control": "no-store"}  # a secret shown once stays in no cache

CLIENT_LABELS = {
    "name": N_("App name"),
    "publisher": N_("Publisher"),
    "description": N_("What it does"),
    "logo_url": N_("Logo address"),
    "kind": N_("Kind of app"),
    "redirect_uris": N_("Redirect URIs"),
    "scopes": N_("What it may do"),
    "internal": N_("Only this workspace"),
    "service_role": N_("Role when it acts on its own"),
}
TOKEN_LABELS = {"name": N_("Token name"), "scopes": N_("What it may do"), "expires_in_days": N_("Lasts (days)")}
KIND_LABELS = {
    service.CONFIDENTIAL: N_("Confidential: a server that keeps a secret"),
    service.PUBLIC: N_("Public: a phone or desktop app, or a script on someone's computer (no secret)"),
}
SERVICE_ROLE_LABELS = {
    Role.MEMBER.value: N_("Member"),
    Role.MANAGER.value: N_("Manager"),
    Role.ADMIN.value: N_("Admin"),
}
#: Problems whose words on these pages are more exact than the shared ones (field, code).
OWN_MESSAGES = {
    ("scopes", "required"): N_("Choose at least one thing it may do."),
    ("redirect_uris", "required"): N_("Enter a redirect URI: a public app needs one."),
}


def _scope_options(scopes: Iterable[str], locale: str) -> list[tuple[str, str]]:
    """(scope, plain words) in the catalog's order."""
    wanted = set(scopes)
    return [(scope, scope_phrase(scope, locale)) for scope in SCOPES if scope in wanted]


def _errors(error: ProblemError, labels: dict[str, str], locale: str) -> dict[str, str]:
    worded = form_errors(error, {name: translate(label, locale) for name, label in labels.items()}, locale)
    for problem in error.errors:
        own = OWN_MESSAGES.get((field_name(problem), problem.code))
        if own and field_name(problem) in worded:
            worded[field_name(problem)] = translate(own, locale)
    return worded


def _status(error: ProblemError) -> int:
    return error.status if error.status != 400 else HTTP_422_UNPROCESSABLE_ENTITY


def _lines(text: object) -> list[str]:
    return [line.strip() for line in str(text or "").splitlines() if line.strip()]


def _client_form(values: dict[str, Any], lists: dict[str, list[str]]) -> dict[str, Any]:
    """A posted app form as the API's body: redirect URIs one per line, scopes ticked."""
    body: dict[str, Any] = {k: v for k, v in values.items() if k in CLIENT_LABELS}
    body["redirect_uris"] = _lines(values.get("redirect_uris"))
    body["scopes"] = lists.get("scopes", [])
    body["internal"] = values.get("internal") == "true"
    return body


def _developer_nav(viewer: Viewer) -> str:
    return "developer" if viewer.at_least("admin") else "me"


class DeveloperPages(Controller):
    """Apps & API: developer apps and connected apps (admins), personal access tokens (anyone)."""

    path = "/developer"
    include_in_schema = False

    @get("")
    async def overview(
        self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession], notice: FromQuery[str | None] = None
    ) -> Template:
        principal = member.member
        admin = member.at_least("admin")
        apps = await service.list_clients(db, principal) if admin else []
        connected = await service.connected_apps(db, principal) if admin else []
        return page(
            member,
            "oauth/developer.html",
            nav_current=_developer_nav(member),
            notice=notice,
            admin=admin,
            apps=apps,
            connected=[(app, _scope_options(app.scope.split(), member.locale)) for app in connected],
            tokens=[
                (row, _scope_options(row.scope.split(), member.locale))
                for row in await service.list_personal_tokens(db, principal)
            ],
        )

    # ------------------------------------------------------------ developer apps

    def _client_page(
        self, viewer: Viewer, template: str, values: dict[str, Any], *, errors: dict[str, str] | None = None, **kw: Any
    ) -> Template:
        principal = viewer.member
        assert principal.role is not None
        return page(
            viewer,
            template,
            status_code=kw.pop("status_code", 200),
            nav_current="developer",
            errors=errors or {},
            values=values,
            scope_options=_scope_options(SCOPES, viewer.locale),
            kind_options=[(k, translate(label, viewer.locale)) for k, label in KIND_LABELS.items()],
            role_options=[
                (value, translate(label, viewer.locale))
                for value, label in SERVICE_ROLE_LABELS.items()
                if principal.role.at_least(Role(value))
            ],
            **kw,
        )

    @get("/apps/new")
    async def new_app(self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession]) -> Template:
        await service.list_clients(db, member.member)  # admins only: 403 for anyone else
        return self._client_page(member, "oauth/app_new.html", {"kind": service.CONFIDENTIAL, "scopes": []})

    @post("/apps/new")
    async def register(
        self, request: Request[Any, Any, Any], member: NamedDependency[Viewer], db: NamedDependency[AsyncSession]
    ) -> Template:
        values = await form_fields(request, lists=frozenset({"scopes"}))
        body = _client_form(values, {"scopes": values.get("scopes", [])})
        try:
            async with db.begin_nested():
                data = decode_form(ClientIn, body)
                client, secret = await service.register_client(db, member.member, service.client_draft(data))
        except ProblemError as error:
            values["redirect_uris"] = "\n".join(body["redirect_uris"])
            return self._client_page(
                member,
                "oauth/app_new.html",
                values | {"scopes": body["scopes"]},
                errors=_errors(error, CLIENT_LABELS, member.locale),
                status_code=_status(error),
            )
        return page(
            member,
            "oauth/secret.html",
            nav_current="developer",
            headers=SECRET_HEADERS,
            purpose="registered",
            client=client,
            secret=secret,
        )

    @get("/apps/{client_pk:uuid}", opt={CSP_OPT: LOGO_CSP})
    async def app(
        self,
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
        client_pk: FromPath[uuid.UUID],
        notice: FromQuery[str | None] = None,
    ) -> Template:
        client = await service.get_client(db, member.member, client_pk)
        return self._app_page(member, client, notice=notice)

    def _app_page(self, viewer: Viewer, client: Any, **kw: Any) -> Template:
        values = kw.pop("values", None) or {
            "name": client.name,
            "description": client.description,
            "logo_url": client.logo_url or "",
            "redirect_uris": "\n".join(client.redirect_uris),
            "scopes": list(client.scopes),
        }
        return self._client_page(
            viewer,
            "oauth/app.html",
            values,
            client=client,
            client_scopes=_scope_options(client.scopes, viewer.locale),
            kind_label=translate(KIND_LABELS[client.kind], viewer.locale),
            role_label=translate(SERVICE_ROLE_LABELS[client.service_role], viewer.locale)
            if client.service_role in SERVICE_ROLE_LABELS
            else None,
            **kw,
        )

    @post("/apps/{client_pk:uuid}", opt={CSP_OPT: LOGO_CSP})
    async def edit_app(
        self,
        request: Request[Any, Any, Any],
        member: NamedDependency[Viewer],
        db: NamedDependency[AsyncSession],
        client_pk: FromPath[uuid.UUID],
    ) -> Template | Redirect:
        values = await form_fields(request, lists=frozenset({"scopes"}))
        body = {
            "name": values.get("name", ""),
            "description": values.get("description", ""),
            "logo_url": values.get("logo_url", ""),
            "redirect_uris": _lines(values.get("redirect_uris")),
            "scopes": values.get("scopes", []),
        }
        try:
            async with db.begin_nested():
                data = decode_form(ClientPatch, body)
                await service.update_client(
                    db,
                    member.member,
                    client_pk,
                    name=data.name,
                    description=data.description,
                    logo_url=data.logo_url or "",
                    redirect_uris=data.redirect_uris,
                    scopes=data.scopes,
                )
        except ProblemError as error:
            if error.status == 404:
                raise
            client = await service.get_client(db, member.member, client_pk)
            return self._app_page(
                member,
                client,
                values=values | {"scopes": body["scopes"]},
                errors=_errors(error, CLIENT_LABELS, member.locale),
                status_code=_status(error),
            )
        return redirect(f"/developer/apps/{client_pk}", notice="saved")

    @post("/apps/{client_pk:uuid}/rotate-secret")
    async def rotate_secret(
        self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession], client_pk: FromPath[uuid.UUID]
    ) -> Template:
        client, secret = await service.rotate_client_secret(db, member.member, client_pk)
        return page(
            member,
            "oauth/secret.html",
            nav_current="developer",
            headers=SECRET_HEADERS,
            purpose="rotated",
            client=client,
            secret=secret,
        )

    @post("/apps/{client_pk:uuid}/disable")
    async def disable(
        self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession], client_pk: FromPath[uuid.UUID]
    ) -> Redirect:
        await service.update_client(db, member.member, client_pk, disabled=True)
        return redirect(f"/developer/apps/{client_pk}", notice="app_disabled")

    @post("/apps/{client_pk:uuid}/enable")
    async def enable(
        self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession], client_pk: FromPath[uuid.UUID]
    ) -> Redirect:
        await service.update_client(db, member.member, client_pk, disabled=False)
        return redirect(f"/developer/apps/{client_pk}", notice="app_enabled")

    @post("/apps/{client_pk:uuid}/delete")
    async def delete(
        self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession], client_pk: FromPath[uuid.UUID]
    ) -> Redirect:
        await service.delete_client(db, member.member, client_pk)
        return redirect("/developer", notice="app_deleted")

    # ------------------------------------------------------------ connected apps

    @post("/connected/{client_pk:uuid}/disconnect")
    async def disconnect(
        self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession], client_pk: FromPath[uuid.UUID]
    ) -> Redirect:
        await service.disconnect_app(db, member.member, client_pk)
        return redirect("/developer", notice="app_disconnected")

    # ------------------------------------------------------------ personal access tokens

    def _token_page(self, viewer: Viewer, values: dict[str, Any], **kw: Any) -> Template:
        role = viewer.member.role
        return page(
            viewer,
            "oauth/token_new.html",
            nav_current=_developer_nav(viewer),
            values=values,
            scope_options=_scope_options(scopes_for_role(role) if role else (), viewer.locale),
            **kw,
        )

    @get("/tokens/new")
    async def new_token(self, member: NamedDependency[Viewer]) -> Template:
        return self._token_page(member, {"expires_in_days": "90", "scopes": []})

    @post("/tokens/new")
    async def create_token(
        self, request: Request[Any, Any, Any], member: NamedDependency[Viewer], db: NamedDependency[AsyncSession]
    ) -> Template:
        values = await form_fields(request, lists=frozenset({"scopes"}))
        days = str(values.get("expires_in_days", "")).strip()
        body = {
            "name": values.get("name", ""),
            "scopes": values.get("scopes", []),
            "expires_in_days": int(days) if days.isdigit() else days or None,
        }
        try:
            async with db.begin_nested():
                data = decode_form(PersonalTokenIn, body)
                row, raw = await service.create_personal_token(
                    db, member.member, name=data.name, scopes=data.scopes, expires_in_days=data.expires_in_days
                )
        except ProblemError as error:
            return self._token_page(
                member,
                values | {"scopes": body["scopes"]},
                errors=_errors(error, TOKEN_LABELS, member.locale),
                status_code=_status(error),
            )
        return page(
            member,
            "oauth/secret.html",
            nav_current=_developer_nav(member),
            headers=SECRET_HEADERS,
            purpose="token",
            token=row,
            token_scopes=_scope_options(row.scope.split(), member.locale),
            secret=raw,
        )

    @post("/tokens/{token_id:uuid}/revoke")
    async def revoke_token(
        self, member: NamedDependency[Viewer], db: NamedDependency[AsyncSession], token_id: FromPath[uuid.UUID]
    ) -> Redirect:
        await service.revoke_personal_token(db, member.member, token_id)
        return redirect("/developer", notice="token_revoked")


async def _settings_section(db: AsyncSession, viewer: Viewer) -> dict[str, Any]:
    return {}


register_settings_section("developer", "oauth/settings_section.html", _settings_section)

PAGES = [ConsentPages, DeveloperPages]
