"""Creating and suspending tenants. Callers own the transaction: nothing here commits."""

from __future__ import annotations

import re
import secrets
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tenants.base import new_id
from tenants.models import Entity, Membership, Role, Tenant, TenantStatus
from tenants.sessions import bind_tenant

SLUG_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])$")
RESERVED_SLUGS = frozenset({"admin", "api", "app", "docs", "www", "static", "guiju", "system", "healthz", "readyz"})


def slug_from_name(name: str) -> str:
    """A URL-safe slug from a company name; names without Latin letters get a random one."""
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-")
    if len(base) < 3:
        base = "team"
    return f"{base}-{secrets.token_hex(3)}"


async def slug_taken(session: AsyncSession, slug: str) -> bool:
    return (await session.scalar(select(Tenant.id).where(Tenant.slug == slug))) is not None


async def create_tenant(
    session: AsyncSession,
    *,
    slug: str,
    name: str,
    industry: str,
    timezone: str,
    locale: str,
    owner_id: uuid.UUID,
) -> Tenant:
    """Create a tenant, its owner's membership and its default legal entity.

    Binds ``session`` to the new tenant, so the caller's later writes in the same transaction land
    in it (and, on Postgres, pass its Row-Level Security checks).
    """
    tenant = Tenant(
        id=new_id(),
        slug=slug,
        name=name,
        industry=industry,
        timezone=timezone,
        locale=locale,
        status=TenantStatus.ACTIVE,
    )
    session.add(tenant)
    await session.flush()
    await bind_tenant(session, tenant.id)
    session.add(Membership(tenant_id=tenant.id, user_id=owner_id, role=Role.OWNER))
    session.add(Entity(tenant_id=tenant.id, id=new_id(), name=name, legal_name=name, is_default=True))
    await session.flush()
    return tenant


async def set_status(session: AsyncSession, tenant: Tenant, status: TenantStatus) -> Tenant:
    tenant.status = status
    await session.flush()
    return tenant
