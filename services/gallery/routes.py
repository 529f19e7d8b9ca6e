"""HTTP routes of the template gallery: the packs on offer, and a workspace's installed packs."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.response import Stream
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from sqlalchemy.ext.asyncio import AsyncSession

from services.gallery import service
from services.gallery.schemas import (
    InstallationOut,
    InstallIn,
    InstallReportOut,
    PackPreviewOut,
    PackSummaryOut,
    UninstallIn,
    UninstallReportOut,
    UpgradeIn,
    UpgradeReportOut,
)
from tenants.models import LOCALES, Industry
from tenants.principal import Principal
from tenants.scopes import api_scopes


class GalleryController(Controller):
    path = "/api/v1/gallery"
    tags = ["gallery"]
    opt = api_scopes("templates")

    @get("/packs", summary="Template packs on offer, by industry, required plugin or text")
    async def list_packs(
        self,
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        industry: Annotated[
            str | None, QueryParameter(max_length=32, schema_extra={"enum": [i.value for i in Industry]})
        ] = None,
        plugin: Annotated[str | None, QueryParameter(max_length=100, description="packs that need this plugin")] = None,
        q: Annotated[str | None, QueryParameter(max_length=200, description="words of the name or summary")] = None,
    ) -> list[PackSummaryOut]:
        return await service.list_packs(db, principal, industry=industry, plugin=plugin, query=q)

    @get("/packs/{pack_id:str}", summary="A pack's preview: flowcharts, steps, collections, automations, plugins")
    async def get_pack(
        self,
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        pack_id: FromPath[str],
        language: Annotated[str | None, QueryParameter(max_length=8, schema_extra={"enum": list(LOCALES)})] = None,
    ) -> PackPreviewOut:
        return await service.get_pack(db, principal, pack_id, language)

    @get("/schema", summary="The JSON Schema of a template pack's files")
    async def schema(self, principal: NamedDependency[Principal]) -> dict[str, Any]:
        return service.schema_document()


class TemplatesController(Controller):
    path = "/api/v1/templates"
    tags = ["gallery"]
    opt = api_scopes("templates")

    @get("", summary="The workspace's installed packs")
    async def list_installed(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> list[InstallationOut]:
        return await service.list_installations(db, principal)

    @get("/{pack_id:str}", summary="One installed pack and what it put where")
    async def get_installed(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal], pack_id: FromPath[str]
    ) -> InstallationOut:
        return await service.get_installation(db, principal, pack_id)

    @post(
        "/{pack_id:str}/install",
        status_code=HTTP_201_CREATED,
        summary="Install a pack (Accept: application/x-ndjson streams its progress)",
    )
    async def install(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        pack_id: FromPath[str],
        data: JSONBody[InstallIn],
    ) -> Response[InstallReportOut] | Stream:
        if service.NDJSON in request.headers.get("accept", ""):
            return Stream(service.install_stream(principal, pack_id, data), media_type=service.NDJSON)
        report = await service.install(db, principal, pack_id, data)
        return Response(report, status_code=HTTP_201_CREATED if report.changed else HTTP_200_OK)

    @post("/{pack_id:str}/upgrade", status_code=HTTP_200_OK, summary="Upgrade by three-way merge (dry run first)")
    async def upgrade(
        self,
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        pack_id: FromPath[str],
        data: JSONBody[UpgradeIn],
    ) -> UpgradeReportOut:
        return await service.upgrade(db, principal, pack_id, data)

    @post("/{pack_id:str}/uninstall", status_code=HTTP_200_OK, summary="Remove the definitions that hold no data")
    async def uninstall(
        self,
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        pack_id: FromPath[str],
        data: JSONBody[UninstallIn],
    ) -> UninstallReportOut:
        return await service.uninstall(db, principal, pack_id, data)


CONTROLLERS = [GalleryController, TemplatesController]
