"""HTTP routes of the sops procedures service: parse, call the service, shape the answer."""

from __future__ import annotations

import uuid

from litestar import Controller, get, patch, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK
from sqlalchemy.ext.asyncio import AsyncSession

from services.outputs import struct_from
from services.sops.procedures import service
from services.sops.procedures.models import Acknowledgement, ProcedureVersion
from services.sops.procedures.schemas import (
    AcknowledgementOut,
    DiffOut,
    DraftIn,
    ProblemsOut,
    ProcedureIn,
    ProcedureOut,
    ProcedurePatch,
    PublishIn,
    VersionOut,
    VersionSummaryOut,
)
from services.sops.procedures.service import ProcedureView
from tenants.principal import Principal
from tenants.scopes import api_scopes, no_tokens


def procedure_out(view: ProcedureView) -> ProcedureOut:
    return struct_from(
        ProcedureOut,
        view.procedure,
        latest_published_version=view.latest_published_version,
        draft_version_id=view.draft_version_id,
    )


def version_summary_out(v: ProcedureVersion) -> VersionSummaryOut:
    return struct_from(VersionSummaryOut, v)


def version_out(v: ProcedureVersion) -> VersionOut:
    return struct_from(VersionOut, v)


def acknowledgement_out(a: Acknowledgement) -> AcknowledgementOut:
    return struct_from(AcknowledgementOut, a, acknowledged_at=a.created_at)


class ProceduresController(Controller):
    path = "/api/v1/procedures"
    tags = ["procedures"]
    opt = api_scopes("procedures")

    @get("/", summary="Procedures of the workspace (archived ones with ?archived=true)")
    async def list_procedures(
        self,
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        archived: FromQuery[bool] = False,
    ) -> list[ProcedureOut]:
        return [procedure_out(v) for v in await service.list_procedures(db, principal, archived=archived)]

    @post("/", status_code=201, summary="Create a procedure with its draft v1 (manager)")
    async def create_procedure(
        self, data: JSONBody[ProcedureIn], db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> ProcedureOut:
        return procedure_out(await service.create_procedure(db, principal, data))

    @get("/{procedure_id:uuid}", summary="One procedure")
    async def get_procedure(
        self,
        procedure_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> ProcedureOut:
        return procedure_out(await service.get_procedure(db, principal, procedure_id))

    @patch("/{procedure_id:uuid}", summary="Change a procedure's title, purpose, metric, owner or collection (manager)")
    async def update_procedure(
        self,
        procedure_id: FromPath[uuid.UUID],
        data: JSONBody[ProcedurePatch],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> ProcedureOut:
        return procedure_out(await service.update_procedure(db, principal, procedure_id, data))

    @post("/{procedure_id:uuid}/archive", status_code=HTTP_200_OK, summary="Archive a procedure (manager)")
    async def archive_procedure(
        self,
        procedure_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> ProcedureOut:
        return procedure_out(await service.archive_procedure(db, principal, procedure_id))

    @get("/{procedure_id:uuid}/versions", summary="Versions, newest first, with who published them and why")
    async def list_versions(
        self,
        procedure_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> list[VersionSummaryOut]:
        return [version_summary_out(v) for v in await service.list_versions(db, principal, procedure_id)]

    @post("/{procedure_id:uuid}/versions", status_code=201, summary="Start a new draft from the latest version")
    async def new_draft(
        self,
        procedure_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> VersionOut:
        return version_out(await service.new_draft(db, principal, procedure_id))

    @get("/{procedure_id:uuid}/versions/{version_id:uuid}", summary="One version with its definition")
    async def get_version(
        self,
        procedure_id: FromPath[uuid.UUID],
        version_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> VersionOut:
        return version_out(await service.get_version(db, principal, procedure_id, version_id))

    @put("/{procedure_id:uuid}/versions/{version_id:uuid}", summary="Replace a draft's definition (manager)")
    async def update_draft(
        self,
        procedure_id: FromPath[uuid.UUID],
        version_id: FromPath[uuid.UUID],
        data: JSONBody[DraftIn],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> VersionOut:
        return version_out(await service.update_draft(db, principal, procedure_id, version_id, data))

    @get("/{procedure_id:uuid}/versions/{version_id:uuid}/problems", summary="What publishing would refuse")
    async def check_version(
        self,
        procedure_id: FromPath[uuid.UUID],
        version_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> ProblemsOut:
        problems = await service.check_version(db, principal, procedure_id, version_id)
        return ProblemsOut(valid=not problems, errors=problems)

    @post(
        "/{procedure_id:uuid}/versions/{version_id:uuid}/publish",
        status_code=HTTP_200_OK,
        summary="Validate and publish a draft, saying why (manager)",
    )
    async def publish(
        self,
        procedure_id: FromPath[uuid.UUID],
        version_id: FromPath[uuid.UUID],
        data: JSONBody[PublishIn],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> VersionOut:
        return version_out(await service.publish(db, principal, procedure_id, version_id, data))

    @get(
        "/{procedure_id:uuid}/versions/{version_id:uuid}/diff",
        summary="What changed since another version (?against=<version id>; default: the previous one)",
    )
    async def diff(
        self,
        procedure_id: FromPath[uuid.UUID],
        version_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        against: FromQuery[uuid.UUID | None] = None,
    ) -> DiffOut:
        return await service.diff_versions(db, principal, procedure_id, version_id, against)

    @post(
        "/{procedure_id:uuid}/versions/{version_id:uuid}/acknowledge",
        status_code=HTTP_200_OK,
        summary="Confirm you have read this version",
        # The person's own word that they read it: an app holding their token cannot give it.
        opt=no_tokens(),
    )
    async def acknowledge(
        self,
        procedure_id: FromPath[uuid.UUID],
        version_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> AcknowledgementOut:
        return acknowledgement_out(await service.acknowledge(db, principal, procedure_id, version_id))

    @get(
        "/{procedure_id:uuid}/versions/{version_id:uuid}/acknowledgements",
        summary="Who acknowledged this version (manager)",
    )
    async def list_acknowledgements(
        self,
        procedure_id: FromPath[uuid.UUID],
        version_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> list[AcknowledgementOut]:
        acks = await service.list_acknowledgements(db, principal, procedure_id, version_id)
        return [acknowledgement_out(a) for a in acks]


# Composed into the app by services.app.
CONTROLLERS: list[type[Controller]] = [ProceduresController]
