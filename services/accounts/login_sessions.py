"""Login sessions: signing in, the session cookie's principal, switching workspace, signing out.

A login session copies the member's role in its workspace; changes to the membership keep that copy
in step (``_sync_login_sessions``).
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta

from sqlalchemy import ColumnElement, String, bindparam, cast, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import throttle
from services.accounts.emails import login_email
from services.accounts.hashing import hash_password, hash_token, needs_rehash, new_token, verify_password
from services.accounts.models import AuthSession, User
from services.accounts.passwords import MAX_PASSWORD_LENGTH
from services.ratelimit import RateLimiter
from services.settings import Settings
from tenants.base import new_id, utcnow
from tenants.errors import NotFound, Unauthorized
from tenants.isolation import bind_session
from tenants.models import Membership, Role, Tenant, TenantStatus
from tenants.principal import Principal
from tenants.sessions import bind_tenant, system_reads

# ---------------------------------------------------------------- login sessions


async def check_password(
    session: AsyncSession, raw_email: str, password: str, client: str, limiter: RateLimiter, settings: Settings
) -> User | None:
    """The account of ``raw_email`` if ``password`` is its password, else None; throttled per account
    and per client (429), and as slow for an unknown address as for a known one."""
    email = login_email(raw_email)
    await throttle.before_password_check(limiter, settings, email, client)
    user = await session.scalar(select(User).where(User.email == email))
    # An unknown address costs a verification too, so timing does not tell which addresses exist.
    matches = len(password) <= MAX_PASSWORD_LENGTH and await verify_password(
        user.password_hash if user else None, password
    )
    if user is None or not matches:
        await throttle.password_failed(limiter, settings, client)
        return None
    await throttle.password_succeeded(limiter, settings, email)
    if needs_rehash(user.password_hash):
        user.password_hash = await hash_password(password)
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
    User.locale,
    Tenant.locale.label("tenant_locale"),
)
_AUTH_WHERE = (AuthSession.token_hash == bindparam("token_hash"), AuthSession.expires_at > bindparam("now"))
_AUTH = (
    select(*_AUTH_COLUMNS)
    .join(User, User.id == AuthSession.user_id)
    .outerjoin(Tenant, Tenant.id == AuthSession.tenant_id)
    .where(*_AUTH_WHERE)
)
# On Postgres the same statement applies the session's tenant to the transaction for RLS.
_AUTH_PG = (
    select(
        *_AUTH_COLUMNS, func.set_config("app.tenant_id", func.coalesce(cast(AuthSession.tenant_id, String), ""), True)
    )
    .join(User, User.id == AuthSession.user_id)
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
        locale=row.locale,
        tenant_locale=row.tenant_locale if tenant_id is not None else None,
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
        locale=principal.locale,
    )


#: Called with (session, tenant_id, user_id, role or None) whenever a membership's role changes or it
#: ends, in the same transaction: the OAuth service keeps its tokens' copy of the role the same way.
MembershipListener = Callable[[AsyncSession, uuid.UUID, uuid.UUID, Role | None], Awaitable[None]]
_membership_listeners: list[MembershipListener] = []


def on_membership_change(listener: MembershipListener) -> None:
    """Have ``listener`` keep its own copy of members' roles in step (registered once, at import)."""
    if listener not in _membership_listeners:
        _membership_listeners.append(listener)


async def _sync_login_sessions(
    session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID, role: Role | None
) -> None:
    """Keep the role copied on the user's login sessions in ``tenant_id`` (and on every listener's
    copy: access tokens) equal to the membership."""
    where = (AuthSession.user_id == user_id, AuthSession.tenant_id == tenant_id)
    if role is None:
        await session.execute(update(AuthSession).where(*where).values(tenant_id=None, role=None))
    else:
        await session.execute(update(AuthSession).where(*where).values(role=role.value))
    for listener in _membership_listeners:
        await listener(session, tenant_id, user_id, role)


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


async def user_and_tenant(
    session: AsyncSession, principal: Principal, counts: Mapping[str, ColumnElement[int]] | None = None
) -> tuple[User, Tenant | None, dict[str, int]]:
    """The signed-in person, the workspace they work in and ``counts`` (scalar subqueries, by name: the
    navigation's badges), in one statement: every page needs them, and a round trip each would add up."""
    named = list((counts or {}).items())
    statement = (
        select(User, Tenant, *(column for _name, column in named))
        .outerjoin(Tenant, Tenant.id == principal.tenant_id)
        .where(User.id == principal.user_id)
    )
    row = (await session.execute(statement)).one()
    return row[0], row[1], {name: int(row[i] or 0) for i, (name, _column) in enumerate(named, start=2)}


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await session.get(User, user_id)
    assert user is not None
    return user
