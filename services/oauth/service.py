"""The OAuth service: developer apps, authorization codes, access and refresh tokens, personal access
tokens, and the principal of a Bearer token.

Secrets (client secrets, codes, tokens) are random and stored only as SHA-256 hashes. Every token
is bound to one workspace and one user; its scopes never exceed what the user's role can use
(``tenants.scopes.scopes_for_role``) and the services still check the role on every call, so what a
token may do is its scopes intersected with the role its user holds now.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Select, String, bindparam, cast, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import service as accounts
from services.audit import service as audit
from services.oauth.models import OAuthClient, OAuthCode, OAuthToken
from services.oauth.schemas import ClientIn
from services.settings import Settings
from tenants.base import new_id, utcnow
from tenants.errors import FieldProblem, NotFound, Unauthorized, ValidationProblem
from tenants.isolation import bind_session
from tenants.models import Role, Tenant, TenantStatus
from tenants.principal import Principal
from tenants.scopes import SCOPES, parse_scopes, scope_text, scopes_for_role

CONFIDENTIAL = "confidential"
PUBLIC = "public"
CODE_TTL = timedelta(minutes=10)
TOKEN_PREFIX = "gjat_"  # noqa: S105 - access tokens (OAuth and personal): recognisable in a leaked log or repository
REFRESH_PREFIX = "gjrt_"
SECRET_PREFIX = "gjcs_"  # noqa: S105 - a prefix, not a secret
MAX_REDIRECT_URIS = 10


def hash_secret(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def new_secret(prefix: str) -> tuple[str, str]:
    raw = prefix + secrets.token_urlsafe(32)
    return raw, hash_secret(raw)


@dataclass(frozen=True)
class Grantee:
    """Whom a code or token acts for: a person in one workspace, or an app's own service user."""

    user_id: uuid.UUID
    tenant_id: uuid.UUID
    role: Role
    as_service: bool = False

    def get_user_id(self) -> uuid.UUID:  # Authlib reads the user this way
        return self.user_id


# ---------------------------------------------------------------- developer apps


@dataclass(frozen=True)
class ClientDraft:
    name: str
    publisher: str
    kind: str
    redirect_uris: Sequence[str]
    scopes: Sequence[str]
    description: str = ""
    logo_url: str | None = None
    internal: bool = False
    service_role: Role | None = None


def client_draft(data: ClientIn) -> ClientDraft:
    """The draft of an app from the API's (or the register form's) input."""
    return ClientDraft(
        name=data.name,
        publisher=data.publisher,
        kind=data.kind,
        redirect_uris=data.redirect_uris,
        scopes=data.scopes,
        description=data.description,
        logo_url=data.logo_url,
        internal=data.internal,
        service_role=Role(data.service_role) if data.service_role else None,
    )


def _redirect_problems(uris: Sequence[str], base: str) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    if len(uris) > MAX_REDIRECT_URIS:
        problems.append(
            FieldProblem.of(f"/{base}", "too_many", "At most {count} redirect URIs.", count=MAX_REDIRECT_URIS)
        )
    for index, uri in enumerate(uris):
        parts = urlsplit(uri)
        local = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if (
            parts.fragment
            or not parts.netloc
            or parts.scheme not in ("https", "http")
            or (parts.scheme == "http" and not local)
        ):
            problems.append(
                FieldProblem.of(
                    f"/{base}/{index}",
                    "invalid_redirect_uri",
                    "A redirect URI is an absolute https address without a fragment (http only for localhost).",
                )
            )
    return problems


def _check_draft(draft: ClientDraft) -> None:
    problems = _redirect_problems(draft.redirect_uris, "redirect_uris")
    if not draft.name.strip():
        problems.append(FieldProblem.of("/name", "required", "Give the app a name."))
    if not draft.publisher.strip():
        problems.append(FieldProblem.of("/publisher", "required", "Say who publishes the app."))
    if draft.kind not in (CONFIDENTIAL, PUBLIC):
        problems.append(FieldProblem.of("/kind", "invalid_choice", "Choose confidential or public."))
    unknown = [scope for scope in draft.scopes if scope not in SCOPES]
    for scope in unknown:
        problems.append(FieldProblem.of("/scopes", "unknown_scope", "There is no scope '{scope}'.", scope=scope))
    if not draft.scopes:
        problems.append(FieldProblem.of("/scopes", "required", "Choose at least one scope."))
    if draft.kind == PUBLIC and draft.service_role is not None:
        problems.append(
            FieldProblem.of(
                "/service_role", "public_client", "A public app has no secret, so it cannot act on its own."
            )
        )
    if draft.kind == PUBLIC and not draft.redirect_uris:
        problems.append(FieldProblem.of("/redirect_uris", "required", "A public app needs a redirect URI."))
    if draft.logo_url and urlsplit(draft.logo_url).scheme != "https":
        problems.append(FieldProblem.of("/logo_url", "invalid_url", "The logo's address must start with https://."))
    if problems:
        raise ValidationProblem(errors=problems)


async def register_client(db: AsyncSession, principal: Principal, draft: ClientDraft) -> tuple[OAuthClient, str | None]:
    """Register an app in the caller's workspace (admins). Returns it and its secret, shown once."""
    tenant_id = principal.require_role(Role.ADMIN)
    _check_draft(draft)
    assert principal.role is not None
    if draft.service_role is not None and not principal.role.at_least(draft.service_role):
        raise ValidationProblem(
            errors=[FieldProblem.of("/service_role", "role_too_high", "An app cannot get a role above your own.")]
        )
    secret, secret_hash = new_secret(SECRET_PREFIX) if draft.kind == CONFIDENTIAL else (None, None)
    client = OAuthClient(
        id=new_id(),
        client_id="gj_" + secrets.token_urlsafe(18),
        tenant_id=tenant_id,
        name=draft.name.strip(),
        publisher=draft.publisher.strip(),
        description=draft.description.strip(),
        logo_url=draft.logo_url,
        kind=draft.kind,
        internal=draft.internal,
        secret_hash=secret_hash,
        secret_hint=secret[-4:] if secret else None,
        redirect_uris=list(dict.fromkeys(draft.redirect_uris)),
        scopes=[scope for scope in SCOPES if scope in set(draft.scopes)],
        service_role=draft.service_role.value if draft.service_role else None,
        created_by=principal.user_id,
    )
    if draft.service_role is not None:
        client.service_user_id = await accounts.create_service_user(db, f"{client.name} ({client.client_id})")
    db.add(client)
    await db.flush()
    await audit.record_change(
        db,
        actor_id=principal.user_id,
        action="oauth_client.registered",
        subject_type="oauth_client",
        subject_id=client.id,
        after=client_summary(client),
    )
    return client, secret


def client_summary(client: OAuthClient) -> dict[str, object]:
    return {
        "client_id": client.client_id,
        "name": client.name,
        "kind": client.kind,
        "redirect_uris": client.redirect_uris,
        "scopes": client.scopes,
        "service_role": client.service_role,
    }


async def list_clients(db: AsyncSession, principal: Principal) -> list[OAuthClient]:
    tenant_id = principal.require_role(Role.ADMIN)
    rows = await db.scalars(
        select(OAuthClient).where(OAuthClient.tenant_id == tenant_id).order_by(OAuthClient.created_at)
    )
    return list(rows)


async def get_client(db: AsyncSession, principal: Principal, client_pk: uuid.UUID) -> OAuthClient:
    tenant_id = principal.require_role(Role.ADMIN)
    client = await db.scalar(select(OAuthClient).where(OAuthClient.id == client_pk, OAuthClient.tenant_id == tenant_id))
    if client is None:
        raise NotFound("No such app.", code="oauth_client_not_found")
    return client


async def update_client(
    db: AsyncSession,
    principal: Principal,
    client_pk: uuid.UUID,
    *,
    name: str | None = None,
    description: str | None = None,
    logo_url: str | None = None,
    redirect_uris: Sequence[str] | None = None,
    scopes: Sequence[str] | None = None,
    disabled: bool | None = None,
) -> OAuthClient:
    client = await get_client(db, principal, client_pk)
    before = client_summary(client)
    draft = ClientDraft(
        name=name if name is not None else client.name,
        publisher=client.publisher,
        kind=client.kind,
        redirect_uris=redirect_uris if redirect_uris is not None else client.redirect_uris,
        scopes=scopes if scopes is not None else client.scopes,
        description=description if description is not None else client.description,
        logo_url=logo_url if logo_url is not None else client.logo_url,
    )
    _check_draft(draft)
    client.name, client.description, client.logo_url = draft.name.strip(), draft.description, draft.logo_url
    client.redirect_uris = list(dict.fromkeys(draft.redirect_uris))
    client.scopes = [scope for scope in SCOPES if scope in set(draft.scopes)]
    if disabled is not None:
        client.disabled_at = utcnow() if disabled else None
        if disabled:
            await _revoke_where(db, OAuthToken.client_pk == client.id)
    await audit.record_change(
        db,
        actor_id=principal.user_id,
        action="oauth_client.updated",
        subject_type="oauth_client",
        subject_id=client.id,
        before=before,
        after=client_summary(client) | {"disabled": client.disabled_at is not None},
    )
    return client


async def rotate_client_secret(db: AsyncSession, principal: Principal, client_pk: uuid.UUID) -> tuple[OAuthClient, str]:
    """A new secret for a confidential app; the old one stops working at once."""
    client = await get_client(db, principal, client_pk)
    if client.kind != CONFIDENTIAL:
        raise ValidationProblem(errors=[FieldProblem.of("", "public_client", "A public app has no secret to rotate.")])
    secret, client.secret_hash = new_secret(SECRET_PREFIX)
    client.secret_hint, client.secret_rotated_at = secret[-4:], utcnow()
    await audit.record_change(
        db,
        actor_id=principal.user_id,
        action="oauth_client.secret_rotated",
        subject_type="oauth_client",
        subject_id=client.id,
    )
    return client, secret


async def delete_client(db: AsyncSession, principal: Principal, client_pk: uuid.UUID) -> None:
    """Remove an app: its codes and tokens go with it."""
    client = await get_client(db, principal, client_pk)
    await _revoke_where(db, OAuthToken.client_pk == client.id)
    await audit.record_change(
        db,
        actor_id=principal.user_id,
        action="oauth_client.deleted",
        subject_type="oauth_client",
        subject_id=client.id,
        before=client_summary(client),
    )
    await db.delete(client)


async def client_by_client_id(db: AsyncSession, client_id: str) -> OAuthClient | None:
    """The live app with this public id, whichever workspace owns it (the token endpoint's lookup)."""
    if not client_id or len(client_id) > 64:
        return None
    client: OAuthClient | None = await db.scalar(
        select(OAuthClient).where(OAuthClient.client_id == client_id, OAuthClient.disabled_at.is_(None))
    )
    return client


async def public_client_id(db: AsyncSession, client_pk: uuid.UUID | None) -> str | None:
    if client_pk is None:
        return None
    public_id: str | None = await db.scalar(select(OAuthClient.client_id).where(OAuthClient.id == client_pk))
    return public_id


def check_client_secret(client: OAuthClient, raw: str) -> bool:
    return client.secret_hash is not None and hmac.compare_digest(client.secret_hash, hash_secret(raw))


async def owner_name(db: AsyncSession, client: OAuthClient) -> str:
    """The name of the workspace that registered ``client`` (shown beside its publisher)."""
    return await db.scalar(select(Tenant.name).where(Tenant.id == client.tenant_id)) or ""


# ---------------------------------------------------------------- consent and codes


async def grantable_scopes(
    db: AsyncSession, client: OAuthClient, user_id: uuid.UUID, tenant_id: uuid.UUID, requested: str | None
) -> tuple[Grantee, frozenset[str], frozenset[str]]:
    """For a person connecting ``client`` to ``tenant_id``: who they are there, the scopes they can
    grant, and the requested scopes their role cannot (shown, then left out). 404 when they are no
    member, or the app is internal to another workspace."""
    role = await accounts.member_role(db, tenant_id, user_id)
    if role is None or (client.internal and client.tenant_id != tenant_id):
        raise NotFound("No such workspace.", code="tenant_not_found")
    asked = parse_scopes(requested) if requested else frozenset(client.scopes)
    allowed = scopes_for_role(role)
    return Grantee(user_id, tenant_id, role), asked & allowed, asked - allowed


async def save_code(
    db: AsyncSession,
    raw_code: str,
    client: OAuthClient,
    grantee: Grantee,
    *,
    redirect_uri: str,
    scope: str,
    code_challenge: str | None,
    code_challenge_method: str | None,
) -> None:
    db.add(
        OAuthCode(
            code_hash=hash_secret(raw_code),
            client_pk=client.id,
            tenant_id=grantee.tenant_id,
            user_id=grantee.user_id,
            redirect_uri=redirect_uri,
            scope=scope,
            code_challenge=code_challenge,
            code_challenge_method=code_challenge_method,
            expires_at=utcnow() + CODE_TTL,
        )
    )
    await bind_and_audit(db, grantee, "oauth_app.connected", client, scope)
    await db.flush()


async def bind_and_audit(db: AsyncSession, grantee: Grantee, action: str, client: OAuthClient, scope: str) -> None:
    bind_session(db.sync_session, grantee.tenant_id)
    await audit.record_change(
        db,
        actor_id=grantee.user_id,
        action=action,
        subject_type="oauth_client",
        subject_id=client.id,
        after={"client_id": client.client_id, "name": client.name, "scope": scope},
    )


async def take_code(db: AsyncSession, raw_code: str, client: OAuthClient) -> OAuthCode | None:
    """The unused, unexpired code for ``client``, now marked used. A code presented again revokes
    every token issued from it (RFC 6749 §4.1.2) and is refused."""
    code = await db.scalar(
        select(OAuthCode).where(OAuthCode.code_hash == hash_secret(raw_code), OAuthCode.client_pk == client.id)
    )
    if code is None:
        return None
    if code.used_at is not None:
        await _revoke_where(db, OAuthToken.family_id == code.family_id)
        return None
    if code.expires_at <= utcnow():
        return None
    code.used_at = utcnow()
    await db.flush()
    return code


async def grantee_of_code(db: AsyncSession, code: OAuthCode) -> Grantee | None:
    role = await accounts.member_role(db, code.tenant_id, code.user_id)
    return Grantee(code.user_id, code.tenant_id, role) if role else None


# ---------------------------------------------------------------- tokens


async def store_token(
    db: AsyncSession,
    settings: Settings,
    token: dict[str, object],
    *,
    client: OAuthClient,
    grantee: Grantee,
    grant_type: str,
    family_id: uuid.UUID | None,
) -> None:
    """Keep the hashes of a token response Authlib generated, bound to the grantee's workspace."""
    now = utcnow()
    refresh = token.get("refresh_token")
    db.add(
        OAuthToken(
            kind="oauth",
            access_hash=hash_secret(str(token["access_token"])),
            refresh_hash=hash_secret(str(refresh)) if refresh else None,
            client_pk=client.id,
            tenant_id=grantee.tenant_id,
            user_id=grantee.user_id,
            as_service=grantee.as_service,
            role=grantee.role.value,
            scope=str(token.get("scope") or ""),
            grant_type=grant_type,
            family_id=family_id or new_id(),
            access_expires_at=now + timedelta(seconds=int(str(token["expires_in"]))),
            refresh_expires_at=now + timedelta(days=settings.oauth_refresh_token_days) if refresh else None,
        )
    )
    await db.flush()


async def service_grantee(db: AsyncSession, client: OAuthClient) -> Grantee | None:
    if client.service_user_id is None or client.service_role is None:
        return None
    return Grantee(client.service_user_id, client.tenant_id, Role(client.service_role), as_service=True)


async def refresh_token_row(db: AsyncSession, raw: str, client: OAuthClient) -> OAuthToken | None:
    """The live refresh token ``raw`` of ``client``. A rotated one presented again revokes its
    whole family and is refused: either the client or a thief holds a copy."""
    row = await db.scalar(
        select(OAuthToken).where(OAuthToken.refresh_hash == hash_secret(raw), OAuthToken.client_pk == client.id)
    )
    if row is None or row.revoked_at is not None:
        return None
    if row.rotated_at is not None:
        await _revoke_where(db, OAuthToken.family_id == row.family_id)
        return None
    if row.refresh_expires_at is None or row.refresh_expires_at <= utcnow():
        return None
    return row


async def grantee_of_token(db: AsyncSession, row: OAuthToken, client: OAuthClient) -> Grantee | None:
    if row.as_service:
        return await service_grantee(db, client)
    role = await accounts.member_role(db, row.tenant_id, row.user_id)
    return Grantee(row.user_id, row.tenant_id, role) if role else None


async def rotate(db: AsyncSession, row: OAuthToken) -> None:
    """The refresh token ``row`` has been exchanged: it and its access token stop working."""
    row.rotated_at = utcnow()
    row.access_expires_at = utcnow()
    await db.flush()


async def token_by_secret(db: AsyncSession, raw: str, hint: str | None) -> OAuthToken | None:
    """The token whose access or refresh secret is ``raw`` (revocation and introspection)."""
    digest = hash_secret(raw)
    columns = [OAuthToken.access_hash, OAuthToken.refresh_hash]
    if hint == "refresh_token":
        columns.reverse()
    for column in columns:
        row = await db.scalar(select(OAuthToken).where(column == digest))
        if row is not None:
            return row
    return None


async def revoke_token_row(db: AsyncSession, row: OAuthToken) -> None:
    """Revoking either half of a token revokes its family (RFC 7009 §2.1 allows it; the app asked
    to be disconnected)."""
    await _revoke_where(db, OAuthToken.family_id == row.family_id)


async def _revoke_where(db: AsyncSession, *where: object) -> None:
    await db.execute(
        update(OAuthToken).where(*where, OAuthToken.revoked_at.is_(None)).values(revoked_at=utcnow())  # type: ignore[arg-type]
    )


def token_active(row: OAuthToken) -> bool:
    now = utcnow()
    return row.revoked_at is None and row.access_expires_at is not None and row.access_expires_at > now


# ---------------------------------------------------------------- personal access tokens


async def create_personal_token(
    db: AsyncSession, principal: Principal, *, name: str, scopes: Sequence[str], expires_in_days: int | None
) -> tuple[OAuthToken, str]:
    """A token for the caller's own scripts, in their current workspace, with the same scope model
    as an app's. The raw token is returned once."""
    tenant_id = principal.require_tenant()
    if principal.by_token:
        raise Unauthorized("Personal access tokens are made in a signed-in session.", code="session_required")
    assert principal.role is not None
    problems: list[FieldProblem] = []
    allowed = scopes_for_role(principal.role)
    for scope in scopes:
        if scope not in SCOPES:
            problems.append(FieldProblem.of("/scopes", "unknown_scope", "There is no scope '{scope}'.", scope=scope))
        elif scope not in allowed:
            problems.append(
                FieldProblem.of(
                    "/scopes", "scope_above_role", "Your role cannot grant the scope '{scope}'.", scope=scope
                )
            )
    if not scopes:
        problems.append(FieldProblem.of("/scopes", "required", "Choose at least one scope."))
    if not name.strip():
        problems.append(FieldProblem.of("/name", "required", "Give the token a name."))
    if expires_in_days is not None and not 1 <= expires_in_days <= 366:
        problems.append(FieldProblem.of("/expires_in_days", "out_of_range", "A token lasts between 1 and 366 days."))
    if problems:
        raise ValidationProblem(errors=problems)
    raw, digest = new_secret(TOKEN_PREFIX)
    row = OAuthToken(
        id=new_id(),
        kind="personal",
        access_hash=digest,
        tenant_id=tenant_id,
        user_id=principal.user_id,
        role=principal.role.value,
        name=name.strip(),
        scope=scope_text(scopes),
        grant_type="personal",
        access_expires_at=utcnow() + timedelta(days=expires_in_days) if expires_in_days else None,
    )
    db.add(row)
    await db.flush()
    await audit.record_change(
        db,
        actor_id=principal.user_id,
        action="personal_token.created",
        subject_type="personal_token",
        subject_id=row.id,
        after={"name": row.name, "scope": row.scope},
    )
    return row, raw


async def list_personal_tokens(db: AsyncSession, principal: Principal) -> list[OAuthToken]:
    tenant_id = principal.require_tenant()
    rows = await db.scalars(
        select(OAuthToken)
        .where(
            OAuthToken.tenant_id == tenant_id,
            OAuthToken.user_id == principal.user_id,
            OAuthToken.kind == "personal",
            OAuthToken.revoked_at.is_(None),
        )
        .order_by(OAuthToken.created_at.desc())
    )
    return list(rows)


async def revoke_personal_token(db: AsyncSession, principal: Principal, token_id: uuid.UUID) -> None:
    tenant_id = principal.require_tenant()
    row = await db.scalar(
        select(OAuthToken).where(
            OAuthToken.id == token_id,
            OAuthToken.tenant_id == tenant_id,
            OAuthToken.user_id == principal.user_id,
            OAuthToken.kind == "personal",
            OAuthToken.revoked_at.is_(None),
        )
    )
    if row is None:
        raise NotFound("No such token.", code="personal_token_not_found")
    row.revoked_at = utcnow()
    await audit.record_change(
        db,
        actor_id=principal.user_id,
        action="personal_token.revoked",
        subject_type="personal_token",
        subject_id=row.id,
        before={"name": row.name, "scope": row.scope},
    )


# ---------------------------------------------------------------- connected apps


@dataclass(frozen=True)
class ConnectedApp:
    client: OAuthClient
    people: int
    scope: str
    connected_at: datetime
    last_issued_at: datetime


async def connected_apps(db: AsyncSession, principal: Principal) -> list[ConnectedApp]:
    """The apps holding live tokens in the caller's workspace (admins)."""
    tenant_id = principal.require_role(Role.ADMIN)
    now = utcnow()
    live = (
        (OAuthToken.tenant_id == tenant_id)
        & (OAuthToken.revoked_at.is_(None))
        & (OAuthToken.rotated_at.is_(None))
        & ((OAuthToken.refresh_expires_at > now) | (OAuthToken.access_expires_at > now))
    )
    rows = await db.execute(
        select(
            OAuthToken.client_pk,
            func.count(func.distinct(OAuthToken.user_id)),
            func.min(OAuthToken.created_at),
            func.max(OAuthToken.created_at),
        )
        .where(live, OAuthToken.client_pk.is_not(None))
        .group_by(OAuthToken.client_pk)
    )
    summary = {pk: (people, first, last) for pk, people, first, last in rows.tuples()}
    if not summary:
        return []
    clients = {c.id: c for c in await db.scalars(select(OAuthClient).where(OAuthClient.id.in_(list(summary))))}
    scopes: dict[uuid.UUID, set[str]] = {}
    for pk, scope in (await db.execute(select(OAuthToken.client_pk, OAuthToken.scope).where(live))).tuples():
        if pk is not None:
            scopes.setdefault(pk, set()).update(scope.split())
    return sorted(
        (
            ConnectedApp(clients[pk], people, scope_text(scopes.get(pk, ())), first, last)
            for pk, (people, first, last) in summary.items()
            if pk in clients
        ),
        key=lambda app: app.connected_at,
    )


async def disconnect_app(db: AsyncSession, principal: Principal, client_pk: uuid.UUID) -> None:
    """Revoke every token ``client_pk`` holds in the caller's workspace (admins)."""
    tenant_id = principal.require_role(Role.ADMIN)
    client = await db.scalar(select(OAuthClient).where(OAuthClient.id == client_pk))
    held = await db.scalar(
        select(func.count()).where(
            OAuthToken.client_pk == client_pk, OAuthToken.tenant_id == tenant_id, OAuthToken.revoked_at.is_(None)
        )
    )
    if client is None or not held:
        raise NotFound("No such app.", code="oauth_client_not_found")
    await _revoke_where(db, OAuthToken.client_pk == client_pk, OAuthToken.tenant_id == tenant_id)
    await audit.record_change(
        db,
        actor_id=principal.user_id,
        action="oauth_app.disconnected",
        subject_type="oauth_client",
        subject_id=client.id,
        before={"client_id": client.client_id, "name": client.name},
    )


# ---------------------------------------------------------------- Bearer tokens


_BEARER_COLUMNS = (
    OAuthToken.id,
    OAuthToken.user_id,
    OAuthToken.tenant_id,
    OAuthToken.scope,
    OAuthToken.role,
    OAuthToken.client_pk,
    OAuthClient.disabled_at,
    Tenant.status,
    Tenant.locale.label("tenant_locale"),
    accounts.user_locale_of(OAuthToken.user_id).label("locale"),
)
_BEARER_WHERE = (
    OAuthToken.access_hash == bindparam("access_hash"),
    OAuthToken.revoked_at.is_(None),
    (OAuthToken.access_expires_at.is_(None)) | (OAuthToken.access_expires_at > bindparam("now")),
)


def _bearer_statement(*extra: Any) -> Select[Any]:
    return (
        select(*_BEARER_COLUMNS, *extra)
        .join(Tenant, Tenant.id == OAuthToken.tenant_id)
        .outerjoin(OAuthClient, OAuthClient.id == OAuthToken.client_pk)
        .where(*_BEARER_WHERE)
    )


_BEARER = _bearer_statement()
# On Postgres the same statement applies the token's tenant to the transaction for RLS.
_BEARER_PG = _bearer_statement(func.set_config("app.tenant_id", cast(OAuthToken.tenant_id, String), True))


async def authenticate_bearer(db: AsyncSession, raw_token: str) -> Principal | None:
    """The principal of a Bearer token, or None when it is unknown, expired, revoked, its app is
    disabled or its workspace suspended. Binds ``db`` to the token's workspace.

    One statement, like a session's: the token keeps a copy of its person's role, which every change
    of the membership updates (a person who leaves the workspace has their tokens revoked)."""
    connection = await db.connection()
    statement = _BEARER_PG if connection.dialect.name == "postgresql" else _BEARER
    row = (await connection.execute(statement, {"access_hash": hash_secret(raw_token), "now": utcnow()})).first()
    if row is None or row.status != TenantStatus.ACTIVE or row.disabled_at is not None:
        return None
    bind_session(db.sync_session, row.tenant_id)
    return Principal(
        user_id=row.user_id,
        session_id=row.id,
        tenant_id=row.tenant_id,
        role=Role(row.role),
        csrf_token="",
        locale=row.locale,
        tenant_locale=row.tenant_locale,
        scopes=frozenset(row.scope.split()),
        client_id=row.client_pk,
    )


async def sync_token_roles(db: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID, role: Role | None) -> None:
    """A membership changed: the person's tokens in that workspace take the new role, or are revoked
    when they left. Their scopes stay; the services check the role as ever."""
    where = (
        OAuthToken.tenant_id == tenant_id,
        OAuthToken.user_id == user_id,
        OAuthToken.as_service.is_(False),
    )
    if role is None:
        await _revoke_where(db, *where)
    else:
        await db.execute(update(OAuthToken).where(*where).values(role=role.value))


accounts.on_membership_change(sync_token_roles)
