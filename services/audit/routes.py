"""HTTP routes of the audit service: parse, call the service, shape the answer."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from services.audit import service
from services.audit.models import AuditEvent
from services.audit.schemas import AuditEventOut, AuditPageOut
from services.audit.service import AuditVerification
from services.outputs import struct_from
from services.validation import INT64_MAX
from tenants.models import Role
from tenants.principal import Principal
from tenants.scopes import only_scope


def event_out(event: AuditEvent) -> AuditEventOut:
    return struct_from(AuditEventOut, event, occurred_at=event.created_at)


class AuditController(Controller):
    path = "/api/v1/audit"
    tags = ["audit"]
    opt = only_scope("audit:read")

    @get("/", summary="The audit trail, newest first (admin); keyset pages by seq")
    async def list_events(
        self,
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        subject_type: Annotated[str | None, Parameter(max_length=50)] = None,
        subject_id: Annotated[str | None, Parameter(max_length=100)] = None,
        before_seq: Annotated[int | None, Parameter(ge=1, le=INT64_MAX)] = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    ) -> AuditPageOut:
        principal.require_role(Role.ADMIN)
        events = await service.list_events(
            db, subject_type=subject_type, subject_id=subject_id, limit=limit, before_seq=before_seq
        )
        next_before = events[-1].seq if len(events) == limit else None
        return AuditPageOut(items=[event_out(e) for e in events], next_before_seq=next_before)

    @get("/verify", summary="Check the workspace's audit chain for altered or deleted events (admin)")
    async def verify(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> AuditVerification:
        tenant_id = principal.require_role(Role.ADMIN)
        return await service.verify_chain(db, tenant_id)


# Composed into the app by services.app.
CONTROLLERS: list[type[Controller]] = [AuditController]
