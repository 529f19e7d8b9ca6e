"""The roles a template pack brings (a shop's "Warehouse clerk", a clinic's "Nurse") and who holds
them.

Which roles exist and who holds each belongs to the template gallery, which sits above this
service: it registers its :class:`PackRoles` here when it is imported, and accounts asks it to
check the roles an invitation carries, to give them to the invitee on joining, and (for the
members page) to list and hand them over. A role is named ``<pack id>:<role key>``; each is held by
one member at most, and a member may hold several.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from tenants.principal import Principal


@dataclass(frozen=True)
class PackRole:
    """A role of an installed pack, in the viewer's language, and its holder (None: nobody)."""

    key: str  # <pack id>:<role key>
    title: str
    pack_title: str
    description: str
    holder_id: uuid.UUID | None


class PackRoles(Protocol):
    def unknown(self, keys: Sequence[str]) -> list[str]:
        """The keys no pack of the gallery has."""
        ...

    async def installed(self, db: AsyncSession, principal: Principal, locale: str) -> list[PackRole]:
        """The roles of the workspace's installed packs, in pack order."""
        ...

    async def assign(self, db: AsyncSession, principal: Principal, key: str, user_id: uuid.UUID | None) -> None:
        """Give the role ``key`` to a member, or to nobody (admin): the steps it owns go to them
        from now on."""
        ...

    async def grant_on_join(self, db: AsyncSession, acting: Principal, user_id: uuid.UUID, keys: Sequence[str]) -> None:
        """Give a new member the roles their invitation carried, on the inviter's (``acting``) behalf."""
        ...


class _NoPacks:
    """Before the gallery registers (a process without it): no pack roles at all."""

    def unknown(self, keys: Sequence[str]) -> list[str]:
        return list(keys)

    async def installed(self, db: AsyncSession, principal: Principal, locale: str) -> list[PackRole]:
        return []

    async def assign(self, db: AsyncSession, principal: Principal, key: str, user_id: uuid.UUID | None) -> None:
        return None

    async def grant_on_join(self, db: AsyncSession, acting: Principal, user_id: uuid.UUID, keys: Sequence[str]) -> None:
        return None


_registered: list[PackRoles] = [_NoPacks()]


def register_pack_roles(provider: PackRoles) -> None:
    """The gallery's pack roles (called once, when the gallery is imported)."""
    _registered[0] = provider


def pack_roles() -> PackRoles:
    return _registered[0]
