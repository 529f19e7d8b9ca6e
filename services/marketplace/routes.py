"""HTTP routes of the marketplace: the catalog, and a tenant's installed plugins."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED
from sqlalchemy.ext.asyncio import AsyncSession

from services.http import content_disposition, read_upload
from services.marketplace import publishing, service
from services.marketplace.models import PluginVersion
from services.marketplace.schemas import (
    ConfigIn,
    InstallationOut,
    InstallIn,
    ListingOut,
    PinIn,
    PublisherIn,
    PublisherOut,
    RemoteSubmissionIn,
    RemoteSubmissionOut,
    ReviewIn,
    SubmissionOut,
    UninstallPreviewOut,
    UpgradeIn,
    UpgradePlanOut,
)
from services.outputs import struct_from
from tenants.principal import Principal
from tenants.scopes import api_scopes


class CatalogController(Controller):
    path = "/api/v1/marketplace/plugins"
    tags = ["marketplace"]
    opt = api_scopes("plugins")

    @get("", summary="Plugins in the marketplace (approved versions), by category or text")
    async def list_plugins(
        self,
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        category: Annotated[str | None, QueryParameter(max_length=100)] = None,
        q: Annotated[str | None, QueryParameter(max_length=200, description="words of the name or summary")] = None,
    ) -> list[ListingOut]:
        return await service.list_catalog(db, principal, category=category, query=q)

    @get("/{name:str}", summary="One plugin: its versions, scopes, settings, actions and triggers")
    async def get_plugin(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal], name: FromPath[str]
    ) -> ListingOut:
        return await service.get_listing(db, principal, name)


class InstallationController(Controller):
    path = "/api/v1/plugins"
    tags = ["marketplace"]
    opt = api_scopes("plugins")

    @get("", summary="The workspace's installed plugins")
    async def list_installed(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> list[InstallationOut]:
        return [await service.installation_out(db, i) for i in await service.list_installations(db, principal)]

    @get("/{name:str}", summary="One installed plugin (secrets masked)")
    async def get_installed(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal], name: FromPath[str]
    ) -> InstallationOut:
        return await service.installation_out(db, await service.get_installation(db, principal, name))

    @post("/{name:str}/install", status_code=HTTP_201_CREATED, summary="Install, consenting to the scopes")
    async def install(
        self,
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        name: FromPath[str],
        data: JSONBody[InstallIn],
    ) -> InstallationOut:
        return await service.installation_out(db, await service.install(db, principal, name, data))

    @put("/{name:str}/config", summary="Change settings (validated against the plugin's schema)")
    async def configure(
        self,
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        name: FromPath[str],
        data: JSONBody[ConfigIn],
    ) -> InstallationOut:
        return await service.installation_out(db, await service.configure_installation(db, principal, name, data))

    @post("/{name:str}/pin", status_code=HTTP_200_OK, summary="Pin to (or unpin from) the installed version")
    async def pin(
        self,
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        name: FromPath[str],
        data: JSONBody[PinIn],
    ) -> InstallationOut:
        return await service.installation_out(db, await service.set_pinned(db, principal, name, data.pinned))

    @post("/{name:str}/enable", status_code=HTTP_200_OK, summary="Enable (also closes an open circuit)")
    async def enable(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal], name: FromPath[str]
    ) -> InstallationOut:
        return await service.installation_out(db, await service.set_enabled(db, principal, name, True))

    @post("/{name:str}/disable", status_code=HTTP_200_OK, summary="Disable: its actions and triggers vanish")
    async def disable(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal], name: FromPath[str]
    ) -> InstallationOut:
        return await service.installation_out(db, await service.set_enabled(db, principal, name, False))

    @post("/{name:str}/health-check", status_code=HTTP_202_ACCEPTED, summary="Run the health check in a worker")
    async def health_check(
        self, name: FromPath[str], db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> InstallationOut:
        return await service.installation_out(db, await service.request_health_check(db, principal, name))

    @post("/{name:str}/upgrade", status_code=HTTP_200_OK, summary="Upgrade after a compatibility check (dry run first)")
    async def upgrade(
        self,
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        name: FromPath[str],
        data: JSONBody[UpgradeIn],
    ) -> UpgradePlanOut:
        return await service.upgrade(db, principal, name, data)

    @post("/{name:str}/rollback", status_code=HTTP_200_OK, summary="Return to the version before the last upgrade")
    async def rollback(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal], name: FromPath[str]
    ) -> InstallationOut:
        return await service.installation_out(db, await service.rollback(db, principal, name))

    @get("/{name:str}/uninstall", summary="What uninstalling deletes and keeps, before confirming")
    async def uninstall_preview(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal], name: FromPath[str]
    ) -> UninstallPreviewOut:
        return await service.uninstall_preview(db, principal, name)

    @delete("/{name:str}", status_code=HTTP_200_OK, summary="Uninstall (confirm=<name>)")
    async def uninstall(
        self,
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        name: FromPath[str],
        confirm: Annotated[str, QueryParameter(max_length=200, description="the plugin's name, to confirm")] = "",
        delete_data: FromQuery[bool] = False,
    ) -> dict[str, int]:
        disabled = await service.uninstall(db, principal, name, delete_data=delete_data, confirm=confirm)
        return {"automations_disabled": disabled}


def submission_out(row: PluginVersion) -> SubmissionOut:
    return struct_from(SubmissionOut, row)


class PublisherController(Controller):
    # No scopes: what a workspace publishes is signed off by a person in the portal, never by a token.
    path = "/api/v1/publisher/plugins"
    tags = ["publishing"]

    @get("", summary="This publisher's submitted versions, with their checks and reviews")
    async def list_submissions(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> list[SubmissionOut]:
        return [submission_out(r) for r in await publishing.list_submissions(db, principal)]

    @post("/remote", status_code=HTTP_201_CREATED, summary="Submit a remote plugin version (its manifest)")
    async def submit_remote(
        self,
        data: JSONBody[RemoteSubmissionIn],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> RemoteSubmissionOut:
        row, signing_secret = await publishing.submit_remote(db, principal, data.manifest)
        return RemoteSubmissionOut(submission=submission_out(row), signing_secret=signing_secret)

    @post(
        "/source",
        status_code=HTTP_201_CREATED,
        summary="Submit an in-process plugin version (its sdist, multipart field `file`); checks run in a worker",
        request_max_body_size=publishing.MAX_SOURCE_BYTES + 64 * 1024,
    )
    async def submit_source(
        self, request: Request[Any, Any, Any], db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> SubmissionOut:
        name, _content_type, data = await read_upload(request)
        return submission_out(await publishing.submit_source(db, principal, name, data))


class PlatformAdminController(Controller):
    """For the platform's admins (GUIJU_PLATFORM_ADMINS); to anyone else these routes answer 404.
    No scopes: a token cannot reach them."""

    path = "/api/v1/admin"
    tags = ["platform admin"]

    @post("/publishers", status_code=HTTP_201_CREATED, summary="Give a workspace the publisher flag")
    async def grant_publisher(
        self, data: JSONBody[PublisherIn], db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> PublisherOut:
        row = await publishing.grant_publisher(db, principal, data.tenant_id, data.name)
        return PublisherOut(tenant_id=row.publisher_tenant_id, name=row.name)

    @get("/plugin-versions", summary="Submitted versions by status (default: awaiting review)")
    async def list_versions(
        self,
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        status: Annotated[str, QueryParameter(max_length=16, description="empty: every status")] = "pending",
    ) -> list[SubmissionOut]:
        return [submission_out(r) for r in await publishing.list_for_review(db, principal, status or None)]

    @post("/plugin-versions/{plugin:str}/{version:str}/approve", status_code=HTTP_200_OK, summary="Approve")
    async def approve(
        self,
        plugin: FromPath[str],
        version: FromPath[str],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> SubmissionOut:
        return submission_out(await publishing.review(db, principal, plugin, version, approve=True))

    @post(
        "/plugin-versions/{plugin:str}/{version:str}/reject", status_code=HTTP_200_OK, summary="Reject, with a reason"
    )
    async def reject(
        self,
        plugin: FromPath[str],
        version: FromPath[str],
        data: JSONBody[ReviewIn],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> SubmissionOut:
        row = await publishing.review(db, principal, plugin, version, approve=False, reason=data.reason)
        return submission_out(row)

    @get(
        "/plugin-versions/{plugin:str}/{version:str}/source",
        summary="Download a submitted source distribution",
        media_type="application/gzip",
    )
    async def source(
        self,
        plugin: FromPath[str],
        version: FromPath[str],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> Response[bytes]:
        name, data = await publishing.source_of(db, principal, plugin, version)
        return Response(data, media_type="application/gzip", headers={"Content-Disposition": content_disposition(name)})


CONTROLLERS = [CatalogController, InstallationController, PublisherController, PlatformAdminController]
