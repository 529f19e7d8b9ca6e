"""The isolation suite's registry: what every tenant-owned table and every path parameter needs.

A new tenant-owned table must be seeded here (``seed_tenant`` makes at least one row of every
tenant-scoped table); a new path parameter must say which of tenant A's rows it names. The tests
fail when either is missing, so nothing joins the platform without its isolation test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tenants.base import Base
from tenants.isolation import TenantScoped
from tests.conftest import World, unique_email


def tenant_scoped_models() -> list[type[Any]]:
    return sorted(
        (m.class_ for m in Base.registry.mappers if issubclass(m.class_, TenantScoped)), key=lambda c: c.__tablename__
    )


@dataclass
class SeededTenant:
    """A tenant with at least one row in every tenant-owned table, and its ids by path parameter."""

    api: Any
    body: dict[str, Any]
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def tenant_id(self) -> str:
        return str(self.body["tenant"]["id"])


async def seed_tenant(world: World) -> SeededTenant:
    api, body = await world.signup()
    seeded = SeededTenant(api, body)
    entity = await api.post("/api/v1/entities", {"name": f"Branch {unique_email()[:12]}"})
    invitation = await api.post("/api/v1/invitations", {"email": unique_email("pending")})
    assert entity.status_code == invitation.status_code == 201
    seeded.ids = {
        "user_id": body["user"]["id"],
        "entity_id": entity.json()["id"],
        "invitation_id": invitation.json()["id"],
    }
    return seeded


# Bodies for writes whose validation would otherwise answer before the lookup does.
REQUEST_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/api/v1/members/{user_id:uuid}"): {"role": "member"},
}
