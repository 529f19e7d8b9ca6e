"""The SOP library: every published procedure as its people read it, and who confirmed reading which version.

What a member sees is the latest published version of each procedure that is not archived; a
procedure with only a draft is not in the library yet.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.sops.definition import HUMAN_STEPS, Definition
from services.sops.procedures.flow import NumberedStep, numbered_steps
from services.sops.procedures.models import Acknowledgement, Procedure, ProcedureVersion, VersionStatus
from services.sops.procedures.service import _cached_definition
from tenants.errors import NotFound
from tenants.principal import Principal


@dataclass(frozen=True)
class LibraryEntry:
    procedure_id: uuid.UUID
    title: str
    purpose: str
    version_id: uuid.UUID
    version_number: int
    definition: Definition
    owner_id: uuid.UUID
    acknowledged: bool  # the viewer confirmed reading this version
    collection_id: uuid.UUID | None = None  # a run is about one record of it: started from the record

    @property
    def needs_acknowledgement(self) -> bool:
        """Some step of this version asks its people to confirm they read it first."""
        return any(isinstance(s, HUMAN_STEPS) and s.requires_acknowledgement for s in self.definition.steps)

    def steps(self, locale: str) -> list[NumberedStep]:
        return numbered_steps(self.definition, locale)

    @property
    def step_count(self) -> int:
        return sum(1 for n in numbered_steps(self.definition, "en") if n.number is not None)


async def _entries(db: AsyncSession, principal: Principal, procedure_id: uuid.UUID | None = None) -> list[LibraryEntry]:
    principal.require_tenant()
    statement = (
        select(
            Procedure.id,
            Procedure.title,
            Procedure.purpose,
            Procedure.owner_id,
            Procedure.collection_id,
            ProcedureVersion.id.label("version_id"),
            ProcedureVersion.number,
        )
        .join(ProcedureVersion, ProcedureVersion.procedure_id == Procedure.id)
        .where(Procedure.archived_at.is_(None), ProcedureVersion.status == VersionStatus.PUBLISHED)
        .order_by(Procedure.title, ProcedureVersion.number.desc())
    )
    if procedure_id is not None:
        statement = statement.where(Procedure.id == procedure_id)
    latest: dict[uuid.UUID, Any] = {}
    for row in (await db.execute(statement)).all():
        latest.setdefault(row.id, row)
    if not latest:
        return []
    version_ids = [row.version_id for row in latest.values()]
    definitions = {
        row.id: _cached_definition(row.id, row.definition)
        for row in (
            await db.execute(
                select(ProcedureVersion.id, ProcedureVersion.definition).where(ProcedureVersion.id.in_(version_ids))
            )
        ).all()
    }
    acknowledged = set(
        await db.scalars(
            select(Acknowledgement.version_id).where(
                Acknowledgement.user_id == principal.user_id, Acknowledgement.version_id.in_(version_ids)
            )
        )
    )
    return [
        LibraryEntry(
            procedure_id=row.id,
            title=row.title,
            purpose=row.purpose,
            version_id=row.version_id,
            version_number=row.number,
            definition=definitions[row.version_id],
            owner_id=row.owner_id,
            acknowledged=row.version_id in acknowledged,
            collection_id=row.collection_id,
        )
        for row in latest.values()
    ]


async def library(db: AsyncSession, principal: Principal, search: str = "") -> list[LibraryEntry]:
    """The published procedures by title; ``search`` matches their title or purpose (any case)."""
    entries = await _entries(db, principal)
    needle = search.strip().casefold()
    if needle:
        entries = [e for e in entries if needle in e.title.casefold() or needle in e.purpose.casefold()]
    return entries


async def library_entry(db: AsyncSession, principal: Principal, procedure_id: uuid.UUID) -> LibraryEntry:
    """One procedure of the library: 404 if unknown, archived or not published yet."""
    entries = await _entries(db, principal, procedure_id)
    if not entries:
        raise NotFound("No such procedure.", code="procedure_not_found")
    return entries[0]
