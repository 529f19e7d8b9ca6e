"""The accounts service: sign-up, login sessions, tokens, invitations and members.

Functions take a session in the caller's transaction and never commit: the route opens one
transaction per request, so a failure anywhere leaves nothing half-created.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
import zoneinfo
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import String, bindparam, cast, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services import events
from services.accounts import throttle
from services.accounts.emails import login_email, normalize_email
from services.accounts.models import AuthSession, Invitation, User, UserToken
from services.accounts.passwords import MAX_PASSWORD_LENGTH, password_problems, personal_words
from services.accounts.schemas import (
    AcceptInvitationIn,
    EntityIn,
    InvitationIn,
    SignupIn,
    TenantPatch,
)
from services.db.statements import execute_core
from services.mail import service as mail
from services.names import clean_name, name_problems
from services.outbox import service as outbox
from services.ratelimit import RateLimiter
from services.settings import Settings
from services.validation import check, register_check
from services.web.i18n import pick_locale
from tenants import provisioning
from tenants.base import new_id, utcnow
from tenants.errors import (
    Conflict,
    FieldProblem,
    Forbidden,
    Gone,
    NotFound,
    Unauthorized,
    ValidationProblem,
)
from tenants.isolation import bind_session, session_tenant_id
from tenants.models import LOCALES, Entity, Industry, Membership, Role, Tenant, TenantStatus
from tenants.principal import Principal
from tenants.sessions import bind_tenant, system_reads

VERIFY_EMAIL = "verify_email"
RESET_PASSWORD = "reset_password"  # noqa: S105  (a token purpose, not a secret)
_hasher = PasswordHasher()


# ---------------------------------------------------------------- secrets and tokens


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    raw = secrets.token_urlsafe(32)
    return raw, hash_token(raw)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


_DUMMY_HASH = _hasher.hash("guiju-timing-equaliser")


# ---------------------------------------------------------------- input checks


def _timezone_ok(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


# ---------------------------------------------------------------- sign-up


def signup_problems(data: dict[str, Any], min_password_score: int = 3) -> list[FieldProblem]:
    """Every problem of a sign-up form beyond its types (fields absent from ``data`` are skipped).

    Password advice is in the form's language (its ``locale``, else the request's Accept-Language).
    """
    problems: list[FieldProblem] = []
    email = None
    if isinstance(data.get("email"), str):
        email, problem = normalize_email(data["email"])
        if problem:
            problems.append(problem)
    if data.get("locale") is not None and data["locale"] not in LOCALES:
        problems.append(FieldProblem(pointer="/locale", code="unknown_locale", message=f"use one of {list(LOCALES)}"))
    for field in ("display_name", "company_name"):
        if isinstance(data.get(field), str):
            problems += name_problems(data[field], f"/{field}")
    if isinstance(data.get("password"), str):
        details = (email or data.get("email"), data.get("display_name"), data.get("company_name"), data.get("slug"))
        problems += password_problems(
            data["password"],
            locale=pick_locale(data.get("locale")),
            min_score=min_password_score,
            user_inputs=personal_words(*(d for d in details if isinstance(d, str))),
        )
    if "industry" in data and data["industry"] not in {i.value for i in Industry}:
        problems.append(
            FieldProblem(
                pointer="/industry", code="unknown_industry", message=f"use one of {[i.value for i in Industry]}"
            )
        )
    if data.get("timezone") is not None and not _timezone_ok(data["timezone"]):
        problems.append(
            FieldProblem(pointer="/timezone", code="unknown_timezone", message="use an IANA time zone name")
        )
    slug = data.get("slug")
    if slug is not None and (not provisioning.SLUG_PATTERN.match(slug) or slug in provisioning.RESERVED_SLUGS):
        problems.append(
            FieldProblem(
                pointer="/slug",
                code="invalid_slug",
                message="3–63 lower-case letters, digits and dashes, not a reserved word",
            )
        )
    return problems


# Listing a body's type problems, the password is judged by the default minimum score.
register_check(SignupIn, signup_problems)


async def signup(session: AsyncSession, data: SignupIn, settings: Settings) -> tuple[User, Tenant]:
    """Create the user, their tenant, the owner membership and the default entity, in one transaction."""
    check(signup_problems(msgspec.structs.asdict(data), settings.password_min_score))
    email, _ = normalize_email(data.email)
    slug = data.slug
    locale = pick_locale(data.locale)
    display_name, company_name = clean_name(data.display_name), clean_name(data.company_name)
    assert email is not None

    if await session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict("An account with this email already exists; sign in instead.", code="email_taken")
    if slug is None:
        # A random suffix makes the slug; with many workspaces of one name, one may already be taken.
        slug = provisioning.slug_from_name(company_name)
        while await provisioning.slug_taken(session, slug):
            slug = provisioning.slug_from_name(company_name)
    elif await provisioning.slug_taken(session, slug):
        raise Conflict("This workspace address is taken.", code="slug_taken")

    user = User(
        id=new_id(),
        email=email,
        password_hash=hash_password(data.password),
        display_name=display_name,
        locale=locale,
    )
    session.add(user)
    try:
        await session.flush()
        tenant = await provisioning.create_tenant(
            session,
            slug=slug,
            name=company_name,
            industry=data.industry,
            timezone=data.timezone or ("Asia/Shanghai" if locale == "zh-CN" else "UTC"),
            locale=locale,
            owner_id=user.id,
        )
    except IntegrityError as exc:  # a concurrent sign-up won the race for the email or the slug
        raise Conflict("This email or workspace address was just taken.", code="signup_conflict") from exc
    await outbox.emit(
        session,
        events.TENANT_CREATED.name,
        {
            "tenant_id": str(tenant.id),
            "slug": tenant.slug,
            "name": tenant.name,
            "industry": tenant.industry,
            "owner_id": str(user.id),
        },
    )
    await send_verification(session, user, settings)
    return user, tenant


async def send_verification(session: AsyncSession, user: User, settings: Settings) -> None:
    raw = await _issue_user_token(session, user, VERIFY_EMAIL, timedelta(hours=settings.verify_token_ttl_hours))
    await mail.request_mail(
        session,
        to=user.email,
        template=VERIFY_EMAIL,
        locale=user.locale,
        variables={"name": user.display_name, "hours": settings.verify_token_ttl_hours},
        link=f"{settings.public_url}/verify-email?token={raw}",
    )


async def _issue_user_token(session: AsyncSession, user: User, purpose: str, ttl: timedelta) -> str:
    # A new token retires the older unused ones of the same purpose.
    await session.execute(
        update(UserToken)
        .where(UserToken.user_id == user.id, UserToken.purpose == purpose, UserToken.used_at.is_(None))
        .values(used_at=utcnow())
    )
    raw, digest = new_token()
    session.add(UserToken(id=new_id(), user_id=user.id, purpose=purpose, token_hash=digest, expires_at=utcnow() + ttl))
    await session.flush()
    return raw


async def _consume_user_token(session: AsyncSession, raw: str, purpose: str) -> User:
    token = await session.scalar(
        select(UserToken).where(UserToken.token_hash == hash_token(raw), UserToken.purpose == purpose).with_for_update()
    )
    if token is None:
        raise Gone("This link is not valid.", code="token_invalid")
    if token.used_at is not None:
        raise Gone("This link was already used.", code="token_used")
    if token.expires_at <= utcnow():
        raise Gone("This link has expired; ask for a new one.", code="token_expired")
    # A conditional update makes the token single-use even under concurrent requests.
    result = await session.execute(
        update(UserToken).where(UserToken.id == token.id, UserToken.used_at.is_(None)).values(used_at=utcnow())
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Gone("This link was already used.", code="token_used")
    user = await session.get(User, token.user_id)
    assert user is not None
    return user


async def verify_email(session: AsyncSession, raw_token: str) -> User:
    user = await _consume_user_token(session, raw_token, VERIFY_EMAIL)
    user.email_verified_at = user.email_verified_at or utcnow()
    return user


async def resend_verification(
    session: AsyncSession, principal: Principal, settings: Settings, limiter: RateLimiter
) -> None:
    user = await session.get(User, principal.user_id)
    assert user is not None
    if user.email_verified_at is not None:
        raise Conflict("This email is already verified.", code="already_verified")
    await throttle.before_mail_link(limiter, settings, user.email)
    await send_verification(session, user, settings)


async def request_password_reset(
    session: AsyncSession, raw_email: str, settings: Settings, limiter: RateLimiter, client: str
) -> None:
    """Mail a reset link if the account exists; answer the same either way (no account probing)."""
    email, problem = normalize_email(raw_email)
    if problem:
        raise ValidationProblem(errors=[problem])
    assert email is not None
    await throttle.before_mail_link(limiter, settings, email, client)
    user = await session.scalar(select(User).where(User.email == email))
    if user is None:
        return
    raw = await _issue_user_token(session, user, RESET_PASSWORD, timedelta(minutes=settings.reset_token_ttl_minutes))
    await mail.request_mail(
        session,
        to=user.email,
        template=RESET_PASSWORD,
        locale=user.locale,
        variables={"name": user.display_name, "minutes": settings.reset_token_ttl_minutes},
        link=f"{settings.public_url}/reset-password?token={raw}",
    )


async def reset_password(session: AsyncSession, raw_token: str, new_password: str, settings: Settings) -> User:
    """Set a new password from a reset link; every existing login session of the user ends.

    A refused password rolls the transaction back, so the link still works for a better one.
    """
    user = await _consume_user_token(session, raw_token, RESET_PASSWORD)
    check(new_password_problems(user, new_password, settings))
    user.password_hash = hash_password(new_password)
    user.password_changed_at = utcnow()
    user.email_verified_at = user.email_verified_at or utcnow()  # the link proved the mailbox
    await session.execute(delete(AuthSession).where(AuthSession.user_id == user.id))
    return user


def new_password_problems(
    user: User, password: str, settings: Settings, pointer: str = "/password"
) -> list[FieldProblem]:
    """The problems of ``user``'s new password, in their language, judged against their details."""
    return password_problems(
        password,
        locale=pick_locale(user.locale),
        min_score=settings.password_min_score,
        user_inputs=personal_words(user.email, user.display_name),
        pointer=pointer,
    )


# ---------------------------------------------------------------- login sessions


async def check_password(
    session: AsyncSession, raw_email: str, password: str, client: str, limiter: RateLimiter, settings: Settings
) -> User | None:
    """The account of ``raw_email`` if ``password`` is its password, else None; throttled per account
    and per client (429), and as slow for an unknown address as for a known one."""
    email = login_email(raw_email)
    await throttle.before_password_check(limiter, settings, email, client)
    user = await session.scalar(select(User).where(User.email == email))
    if user is None or len(password) > MAX_PASSWORD_LENGTH or not verify_password(user.password_hash, password):
        if user is None:
            verify_password(_DUMMY_HASH, password)  # same cost whether or not the account exists
        await throttle.password_failed(limiter, settings, client)
        return None
    await throttle.password_succeeded(limiter, settings, email)
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


async def login(
    session: AsyncSession, raw_email: str, password: str, client: str, limiter: RateLimiter, settings: Settings
) -> tuple[AuthSession, str]:
    """Check the password (throttled per account and per client) and open a login session."""
    user = await check_password(session, raw_email, password, client, limiter, settings)
    if user is None:
        raise Unauthorized("The email or password is wrong.", code="invalid_credentials")
    tenant_ids = await member_tenant_ids(session, user.id)
    return await open_login_session(
        session, user, tenant_ids[0] if tenant_ids else None, settings, password_checked=True
    )


async def open_login_session(
    session: AsyncSession,
    user: User,
    tenant_id: uuid.UUID | None,
    settings: Settings,
    *,
    password_checked: bool = False,
) -> tuple[AuthSession, str]:
    """Start a login session working in ``tenant_id``; returns it and the raw cookie token."""
    role: str | None = None
    if tenant_id is not None:
        await bind_tenant(session, tenant_id)
        role = await session.scalar(select(Membership.role).where(Membership.user_id == user.id))
    raw, digest = new_token()
    auth = AuthSession(
        id=new_id(),
        token_hash=digest,
        user_id=user.id,
        tenant_id=tenant_id if role else None,
        role=role,
        csrf_token=secrets.token_urlsafe(32),
        expires_at=utcnow() + timedelta(hours=settings.session_ttl_hours),
        password_checked_at=utcnow() if password_checked else None,
    )
    session.add(auth)
    await session.flush()
    return auth, raw


async def member_tenant_ids(session: AsyncSession, user_id: uuid.UUID) -> list[uuid.UUID]:
    """The active tenants a user belongs to, oldest membership first.

    Reads memberships across tenants, filtered to this user: a reviewed system-scope read.
    """
    async with system_reads(session):
        rows = await session.scalars(
            select(Membership.tenant_id)
            .join(Tenant, Tenant.id == Membership.tenant_id)
            .where(Membership.user_id == user_id, Tenant.status == TenantStatus.ACTIVE)
            .order_by(Membership.created_at)
        )
        return list(rows)


async def logout(session: AsyncSession, principal: Principal) -> None:
    await session.execute(delete(AuthSession).where(AuthSession.id == principal.session_id))


_AUTH_COLUMNS = (
    AuthSession.id,
    AuthSession.user_id,
    AuthSession.tenant_id,
    AuthSession.role,
    AuthSession.csrf_token,
    AuthSession.password_checked_at,
    Tenant.status,
)
_AUTH_WHERE = (AuthSession.token_hash == bindparam("token_hash"), AuthSession.expires_at > bindparam("now"))
_AUTH = select(*_AUTH_COLUMNS).outerjoin(Tenant, Tenant.id == AuthSession.tenant_id).where(*_AUTH_WHERE)
# On Postgres the same statement applies the session's tenant to the transaction for RLS.
_AUTH_PG = (
    select(
        *_AUTH_COLUMNS, func.set_config("app.tenant_id", func.coalesce(cast(AuthSession.tenant_id, String), ""), True)
    )
    .outerjoin(Tenant, Tenant.id == AuthSession.tenant_id)
    .where(*_AUTH_WHERE)
)


async def authenticate(session: AsyncSession, raw_token: str | None) -> Principal | None:
    """The principal of a session cookie, or None. Binds ``session`` to the session's tenant.

    One statement: on Postgres it also applies the tenant to the transaction for Row-Level
    Security (``set_config`` with the value read from the row, a bound parameter throughout).
    """
    if not raw_token:
        return None
    connection = await session.connection()
    statement = _AUTH_PG if connection.dialect.name == "postgresql" else _AUTH
    row = (await connection.execute(statement, {"token_hash": hash_token(raw_token), "now": utcnow()})).first()
    if row is None:
        return None
    tenant_id, role = row.tenant_id, row.role
    if tenant_id is None or role is None or row.status != TenantStatus.ACTIVE:
        tenant_id, role = None, None
    else:
        bind_session(session.sync_session, tenant_id)  # the statement above already told Postgres
    return Principal(
        user_id=row.user_id,
        session_id=row.id,
        tenant_id=tenant_id,
        role=Role(role) if role else None,
        csrf_token=row.csrf_token,
        password_checked_at=row.password_checked_at,
    )


def csrf_ok(principal: Principal, header: str | None) -> bool:
    return bool(header) and hmac.compare_digest(principal.csrf_token, header or "")


async def switch_tenant(session: AsyncSession, principal: Principal, tenant_id: uuid.UUID) -> Principal:
    if tenant_id not in await member_tenant_ids(session, principal.user_id):
        raise NotFound("No such workspace.", code="tenant_not_found")
    await bind_tenant(session, tenant_id)
    role = await session.scalar(select(Membership.role).where(Membership.user_id == principal.user_id))
    assert role is not None
    await session.execute(
        update(AuthSession).where(AuthSession.id == principal.session_id).values(tenant_id=tenant_id, role=role)
    )
    return Principal(
        user_id=principal.user_id,
        session_id=principal.session_id,
        tenant_id=tenant_id,
        role=Role(role),
        csrf_token=principal.csrf_token,
        password_checked_at=principal.password_checked_at,
    )


async def _sync_login_sessions(
    session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID, role: Role | None
) -> None:
    """Keep the role copied on the user's login sessions in ``tenant_id`` equal to the membership."""
    where = (AuthSession.user_id == user_id, AuthSession.tenant_id == tenant_id)
    if role is None:
        await session.execute(update(AuthSession).where(*where).values(tenant_id=None, role=None))
    else:
        await session.execute(update(AuthSession).where(*where).values(role=role.value))


async def tenants_of(session: AsyncSession, user_id: uuid.UUID) -> list[tuple[Tenant, Role]]:
    ids = await member_tenant_ids(session, user_id)
    async with system_reads(session):
        rows = await session.execute(
            select(Tenant, Membership.role)
            .join(Membership, Membership.tenant_id == Tenant.id)
            .where(Membership.user_id == user_id, Tenant.id.in_(ids))
        )
        result = [(t, Role(r)) for t, r in rows.tuples()]
    order = {tid: i for i, tid in enumerate(ids)}
    return sorted(result, key=lambda tr: order[tr[0].id])


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await session.get(User, user_id)
    assert user is not None
    return user


# ---------------------------------------------------------------- tenant, entities


async def current_tenant(session: AsyncSession, principal: Principal) -> Tenant:
    tenant = await session.get(Tenant, principal.require_tenant())
    assert tenant is not None
    return tenant


async def update_tenant(session: AsyncSession, principal: Principal, patch: TenantPatch) -> Tenant:
    principal.require_role(Role.ADMIN)
    tenant = await current_tenant(session, principal)
    problems = []
    if patch.locale is not None and patch.locale not in LOCALES:
        problems.append(FieldProblem(pointer="/locale", code="unknown_locale", message=f"use one of {list(LOCALES)}"))
    if patch.timezone is not None and not _timezone_ok(patch.timezone):
        problems.append(
            FieldProblem(pointer="/timezone", code="unknown_timezone", message="use an IANA time zone name")
        )
    if patch.name is not None:
        problems += name_problems(patch.name, "/name")
    if problems:
        raise ValidationProblem(errors=problems)
    for field in ("name", "timezone", "locale"):
        value = getattr(patch, field)
        if value is not None:
            setattr(tenant, field, clean_name(value) if field == "name" else value)
    return tenant


async def list_entities(session: AsyncSession, principal: Principal) -> list[Entity]:
    principal.require_tenant()
    return list(await session.scalars(select(Entity).order_by(Entity.created_at)))


async def create_entity(session: AsyncSession, principal: Principal, data: EntityIn) -> Entity:
    principal.require_role(Role.ADMIN)
    problems = name_problems(data.name, "/name")
    if data.legal_name is not None:
        problems += name_problems(data.legal_name, "/legal_name", required=False)
    if not re.fullmatch(r"[A-Z]{2}", data.country):
        problems.append(FieldProblem(pointer="/country", code="invalid_country", message="an ISO 3166 alpha-2 code"))
    if not re.fullmatch(r"[A-Z]{3}", data.currency):
        problems.append(FieldProblem(pointer="/currency", code="invalid_currency", message="an ISO 4217 code"))
    if problems:
        raise ValidationProblem(errors=problems)
    name = clean_name(data.name)
    if await session.scalar(select(Entity.id).where(Entity.name == name)) is not None:
        raise Conflict("An entity with this name exists.", code="entity_name_taken")
    entity = Entity(
        id=new_id(),
        name=name,
        legal_name=clean_name(data.legal_name or "") or name,
        country=data.country,
        currency=data.currency,
    )
    session.add(entity)
    await session.flush()
    return entity


async def get_entity(session: AsyncSession, principal: Principal, entity_id: uuid.UUID) -> Entity:
    principal.require_tenant()
    entity = await session.scalar(select(Entity).where(Entity.id == entity_id))
    if entity is None:
        raise NotFound("No such entity.", code="entity_not_found")
    return entity


async def existing_entity_ids(session: AsyncSession, entity_ids: set[uuid.UUID]) -> set[uuid.UUID]:
    """Which of ``entity_ids`` are entities of the session's tenant."""
    if not entity_ids:
        return set()
    return set(await session.scalars(select(Entity.id).where(Entity.id.in_(entity_ids))))


async def existing_member_ids(session: AsyncSession, user_ids: set[uuid.UUID]) -> set[uuid.UUID]:
    """Which of ``user_ids`` are members of the session's tenant."""
    if not user_ids:
        return set()
    return set(await session.scalars(select(Membership.user_id).where(Membership.user_id.in_(user_ids))))


async def member_ids_with_role(session: AsyncSession, at_least: Role) -> list[uuid.UUID]:
    """The members of the session's tenant whose role is ``at_least`` or higher."""
    rows = await session.execute(select(Membership.user_id, Membership.role))
    return [user_id for user_id, role in rows if Role(role).at_least(at_least)]


_MEMBER_LOCALES = (
    select(User.id, User.locale)
    .join(Membership, Membership.user_id == User.id)
    .where(Membership.tenant_id == bindparam("tenant_id"), User.id.in_(bindparam("user_ids", expanding=True)))
)


async def member_locales(session: AsyncSession, user_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The preferred locale (``zh-CN`` or ``en``) of each of ``user_ids`` that is a member of the
    session's tenant (the others are left out)."""
    tenant_id = session_tenant_id(session.sync_session)
    if not user_ids or tenant_id is None:
        return {}
    # Core on the session's connection: this runs for every notification an automation sends.
    rows = await execute_core(session, _MEMBER_LOCALES, {"tenant_id": tenant_id, "user_ids": list(user_ids)})
    return {row[0]: row[1] for row in rows}


@dataclass(frozen=True)
class MemberContact:
    """Where a member is reached outside the app: for messages sent on through a channel."""

    user_id: uuid.UUID
    email: str
    display_name: str
    locale: str


async def member_contacts(session: AsyncSession, user_ids: set[uuid.UUID]) -> list[MemberContact]:
    """The e-mail address, name and locale of each of ``user_ids`` that is a member of the session's
    tenant (the others are left out)."""
    if not user_ids:
        return []
    rows = await session.execute(
        select(User.id, User.email, User.display_name, User.locale)
        .join(Membership, Membership.user_id == User.id)
        .where(User.id.in_(user_ids))
    )
    return [MemberContact(*row) for row in rows]


# ---------------------------------------------------------------- members


_LIST_MEMBERS = (
    select(
        User.id.label("user_id"),
        User.email,
        User.display_name,
        Membership.role,
        Membership.created_at.label("joined_at"),
    )
    .join(User, User.id == Membership.user_id)
    .order_by(Membership.created_at)
)


async def list_members(session: AsyncSession, principal: Principal) -> list[Any]:
    """Rows of (user_id, email, display_name, role, joined_at), oldest member first."""
    principal.require_tenant()
    return list((await session.execute(_LIST_MEMBERS)).all())


async def _membership(session: AsyncSession, user_id: uuid.UUID) -> Membership:
    membership = await session.scalar(select(Membership).where(Membership.user_id == user_id).with_for_update())
    if membership is None:
        raise NotFound("No such member.", code="member_not_found")
    return membership


async def _owner_count(session: AsyncSession) -> int:
    return int(
        await session.scalar(select(func.count()).select_from(Membership).where(Membership.role == Role.OWNER)) or 0
    )


async def change_role(session: AsyncSession, principal: Principal, user_id: uuid.UUID, role: str) -> Membership:
    principal.require_role(Role.ADMIN)
    if role not in {r.value for r in Role}:
        raise ValidationProblem(
            errors=[FieldProblem(pointer="/role", code="unknown_role", message=f"use one of {[r.value for r in Role]}")]
        )
    membership = await _membership(session, user_id)
    new_role = Role(role)
    assert principal.role is not None
    if (Role(membership.role) == Role.OWNER or new_role == Role.OWNER) and principal.role != Role.OWNER:
        raise Forbidden("Only an owner can grant or take away the owner role.", code="owner_required")
    if Role(membership.role) == Role.OWNER and new_role != Role.OWNER and await _owner_count(session) <= 1:
        raise Conflict("A workspace keeps at least one owner.", code="last_owner")
    membership.role = new_role
    await _sync_login_sessions(session, membership.tenant_id, user_id, new_role)
    await outbox.emit(session, events.MEMBER_ROLE_CHANGED.name, {"user_id": str(user_id), "role": new_role.value})
    return membership


async def remove_member(session: AsyncSession, principal: Principal, user_id: uuid.UUID) -> None:
    if user_id != principal.user_id:
        principal.require_role(Role.ADMIN)
    else:
        principal.require_tenant()
    membership = await _membership(session, user_id)
    assert principal.role is not None
    if Role(membership.role) == Role.OWNER:
        if principal.role != Role.OWNER:
            raise Forbidden("Only an owner can remove an owner.", code="owner_required")
        if await _owner_count(session) <= 1:
            raise Conflict("A workspace keeps at least one owner.", code="last_owner")
    await session.delete(membership)
    await _sync_login_sessions(session, membership.tenant_id, user_id, None)
    await outbox.emit(session, events.MEMBER_REMOVED.name, {"user_id": str(user_id)})


# ---------------------------------------------------------------- invitations

INVITATION_TOKEN = re.compile(r"^([0-9a-f]{32})\.([A-Za-z0-9_-]{20,100})$")


async def invite(session: AsyncSession, principal: Principal, data: InvitationIn, settings: Settings) -> Invitation:
    tenant_id = principal.require_role(Role.ADMIN)
    problems = []
    email, problem = normalize_email(data.email)
    if problem:
        problems.append(problem)
    if data.role not in {r.value for r in Role}:
        problems.append(
            FieldProblem(pointer="/role", code="unknown_role", message=f"use one of {[r.value for r in Role]}")
        )
    if problems:
        raise ValidationProblem(errors=problems)
    assert principal.role is not None and email is not None
    if Role(data.role) == Role.OWNER and principal.role != Role.OWNER:
        raise Forbidden("Only an owner can invite an owner.", code="owner_required")
    existing_member = await session.scalar(
        select(Membership.user_id).join(User, User.id == Membership.user_id).where(User.email == email)
    )
    if existing_member is not None:
        raise Conflict("This person is already a member.", code="already_member")
    now = utcnow()
    await session.execute(
        update(Invitation)
        .where(Invitation.email == email, Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    secret, _ = new_token()
    raw = f"{tenant_id.hex}.{secret}"
    invitation = Invitation(
        id=new_id(),
        email=email,
        role=data.role,
        token_hash=hash_token(raw),
        invited_by=principal.user_id,
        expires_at=now + timedelta(days=settings.invitation_ttl_days),
    )
    session.add(invitation)
    await session.flush()
    inviter = await get_user(session, principal.user_id)
    tenant = await current_tenant(session, principal)
    await mail.request_mail(
        session,
        to=email,
        template="invitation",
        locale=tenant.locale,
        variables={
            "inviter": inviter.display_name,
            "tenant": tenant.name,
            "role": data.role,
            "days": settings.invitation_ttl_days,
        },
        link=f"{settings.public_url}/invitations/accept?token={raw}",
    )
    await outbox.emit(session, events.MEMBER_INVITED.name, {"invitation_id": str(invitation.id), "role": data.role})
    return invitation


async def list_invitations(session: AsyncSession, principal: Principal) -> list[Invitation]:
    principal.require_role(Role.ADMIN)
    return list(
        await session.scalars(
            select(Invitation)
            .where(Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None))
            .order_by(Invitation.created_at)
        )
    )


async def revoke_invitation(session: AsyncSession, principal: Principal, invitation_id: uuid.UUID) -> None:
    principal.require_role(Role.ADMIN)
    invitation = await session.scalar(select(Invitation).where(Invitation.id == invitation_id))
    if invitation is None or invitation.revoked_at is not None or invitation.accepted_at is not None:
        raise NotFound("No such pending invitation.", code="invitation_not_found")
    invitation.revoked_at = utcnow()


async def accept_invitation(
    session: AsyncSession, data: AcceptInvitationIn, principal: Principal | None, settings: Settings
) -> tuple[User, Tenant, bool]:
    """Join the invitation's tenant: as the signed-in user, or as a new account created here.

    Returns the user, the tenant and whether the user was created.
    """
    match = INVITATION_TOKEN.match(data.token)
    if not match:
        raise Gone("This invitation link is not valid.", code="token_invalid")
    tenant_id = uuid.UUID(match.group(1))
    await bind_tenant(session, tenant_id)
    invitation = await session.scalar(
        select(Invitation).where(Invitation.token_hash == hash_token(data.token)).with_for_update()
    )
    if invitation is None or invitation.revoked_at is not None:
        raise Gone("This invitation is not valid.", code="token_invalid")
    if invitation.accepted_at is not None:
        raise Gone("This invitation was already used.", code="token_used")
    if invitation.expires_at <= utcnow():
        raise Gone("This invitation has expired; ask for a new one.", code="token_expired")
    tenant = await session.get(Tenant, tenant_id)
    assert tenant is not None
    if tenant.status != TenantStatus.ACTIVE:
        raise Forbidden("This workspace is suspended.", code="tenant_suspended")

    created = False
    if principal is not None:
        user = await get_user(session, principal.user_id)
        if user.email != invitation.email:
            raise Forbidden("This invitation was sent to another email address.", code="invitation_email_mismatch")
    else:
        user_or_none = await session.scalar(select(User).where(User.email == invitation.email))
        if user_or_none is not None:
            raise Unauthorized("An account with this email exists: sign in, then accept.", code="sign_in_to_accept")
        problems = name_problems(data.display_name or "", "/display_name")
        if data.password is None:
            problems.append(FieldProblem(pointer="/password", code="required", message="this field is required"))
        else:
            problems += password_problems(
                data.password,
                locale=pick_locale(data.locale, tenant.locale),
                min_score=settings.password_min_score,
                user_inputs=personal_words(invitation.email, data.display_name, tenant.name),
            )
        if data.locale is not None and data.locale not in LOCALES:
            problems.append(
                FieldProblem(pointer="/locale", code="unknown_locale", message=f"use one of {list(LOCALES)}")
            )
        if problems:
            raise ValidationProblem(errors=problems)
        assert data.password is not None and data.display_name is not None
        user = User(
            id=new_id(),
            email=invitation.email,
            password_hash=hash_password(data.password),
            display_name=clean_name(data.display_name),
            locale=data.locale or tenant.locale,
            email_verified_at=utcnow(),
        )  # the invitation link proved the mailbox
        session.add(user)
        created = True
        await session.flush()
    if await session.scalar(select(Membership.user_id).where(Membership.user_id == user.id)) is not None:
        raise Conflict("You are already a member of this workspace.", code="already_member")
    result = await session.execute(
        update(Invitation)
        .where(Invitation.id == invitation.id, Invitation.accepted_at.is_(None))
        .values(accepted_at=utcnow(), accepted_by=user.id)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Gone("This invitation was already used.", code="token_used")
    session.add(Membership(user_id=user.id, role=invitation.role))
    await session.flush()
    await outbox.emit(session, events.MEMBER_JOINED.name, {"user_id": str(user.id), "role": invitation.role})
    return user, tenant, created
