"""The workspace: its settings and its entities, and what other services ask about its members
(which ids are members, their roles, languages and contacts)."""

from __future__ import annotations

import re
import uuid
import zoneinfo
from dataclasses import dataclass

from sqlalchemy import ColumnElement, ScalarSelect, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

from services.accounts.models import User
from services.accounts.schemas import EntityIn, TenantPatch
from services.db.statements import execute_core
from services.names import clean_name, name_problems
from tenants.base import new_id
from tenants.errors import Conflict, FieldProblem, NotFound, ValidationProblem
from tenants.isolation import session_tenant_id
from tenants.models import LOCALES, Entity, Membership, Role, Tenant, TenantStatus
from tenants.principal import Principal
from tenants.sessions import system_reads

# ---------------------------------------------------------------- input checks


def _timezone_ok(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


# ---------------------------------------------------------------- tenant, entities


async def tenant_locale(session: AsyncSession) -> str:
    """The default locale of the session's tenant (``zh-CN`` or ``en``); ``en`` outside a tenant."""
    tenant_id = session_tenant_id(session.sync_session)
    tenant = await session.get(Tenant, tenant_id) if tenant_id is not None else None
    return tenant.locale if tenant is not None and tenant.locale in LOCALES else "en"


async def current_tenant(session: AsyncSession, principal: Principal) -> Tenant:
    tenant = await session.get(Tenant, principal.require_tenant())
    assert tenant is not None
    return tenant


async def update_tenant(session: AsyncSession, principal: Principal, patch: TenantPatch) -> Tenant:
    principal.require_role(Role.ADMIN)
    tenant = await current_tenant(session, principal)
    problems = []
    if patch.locale is not None and patch.locale not in LOCALES:
        problems.append(
            FieldProblem.of(
                pointer="/locale", code="unknown_locale", message="use one of {options}", options=list(LOCALES)
            )
        )
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


async def member_names(session: AsyncSession, user_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The display names of those of ``user_ids`` who are members of the session's tenant."""
    if not user_ids:
        return {}
    rows = await session.execute(
        select(User.id, User.display_name)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.user_id.in_(user_ids))
    )
    return {user_id: name for user_id, name in rows}


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
    if not user_ids or session_tenant_id(session.sync_session) is None:
        return {}
    # Core on the session's connection: this runs for every notification an automation sends.
    # tenant_id is bound by execute_core from the session.
    rows = await execute_core(session, _MEMBER_LOCALES, {"user_ids": list(user_ids)})
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


# ---------------------------------------------------------------- API access (the OAuth service asks)


async def member_role(session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID) -> Role | None:
    """``user_id``'s role in ``tenant_id`` (any workspace, an active one), or None when they are no
    member there. A reviewed cross-tenant read, filtered to one person and one workspace: an app is
    connected to a workspace the person chooses, not the one their session works in."""
    async with system_reads(session):
        role = await session.scalar(
            select(Membership.role)
            .join(Tenant, Tenant.id == Membership.tenant_id)
            .where(
                Membership.tenant_id == tenant_id,
                Membership.user_id == user_id,
                Tenant.status == TenantStatus.ACTIVE,
            )
        )
    return Role(role) if role else None


async def member_role_and_locale(session: AsyncSession, user_id: uuid.UUID) -> tuple[Role | None, str | None]:
    """The role and language of ``user_id`` in the session's workspace; (None, None) for no member."""
    row = (
        await session.execute(
            select(Membership.role, User.locale)
            .join(User, User.id == Membership.user_id)
            .where(Membership.user_id == user_id)
        )
    ).first()
    return (Role(row.role), row.locale) if row else (None, None)


async def create_service_user(session: AsyncSession, display_name: str) -> uuid.UUID:
    """A user for an app acting on its own (client credentials): it has no password, so nobody signs
    in as it, and no membership, so no member list shows it; it only names who did what."""
    user = User(
        id=new_id(),
        email=f"app-{new_id().hex}@apps.invalid",
        password_hash="",
        display_name=clean_name(display_name)[:100],
    )
    session.add(user)
    await session.flush()
    return user.id


def user_locale_of(user_id: ColumnElement[uuid.UUID] | QueryableAttribute[uuid.UUID]) -> ScalarSelect[str]:
    """The language setting of the user ``user_id`` names, as a scalar subquery: a caller's own
    statement reads it without a round trip of its own (the OAuth service's Bearer lookup)."""
    return select(User.locale).where(User.id == user_id).scalar_subquery()
