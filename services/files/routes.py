"""HTTP routes of the files service: parse, call the service, shape the answer."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.types import ReceiveMessage
from sqlalchemy.ext.asyncio import AsyncSession

from services.files import service
from services.files.schemas import StoredFileOut
from services.http import content_disposition, read_upload
from tenants.models import Role
from tenants.principal import Principal
from tenants.scopes import api_scopes

# Room for the multipart envelope (boundaries, part headers) around the file itself.
MULTIPART_OVERHEAD = 64 * 1024


def _limit_body(request: Request[Any, Any, Any], limit: int) -> None:
    """Refuse the upload with 413 ``file_too_large`` as soon as the body passes ``limit`` bytes."""
    if (request.content_length or 0) > limit:
        raise service.too_large()
    receive = request.receive
    received = 0

    async def counting_receive() -> ReceiveMessage:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise service.too_large()
        return message

    request.receive = counting_receive


class FilesController(Controller):
    path = "/api/v1/files"
    tags = ["files"]
    opt = api_scopes("files")

    @post(
        "/",
        status_code=201,
        summary="Upload a file (multipart/form-data, field `file`)",
        description="Any member may upload. Files larger than GUIJU_MAX_UPLOAD_MB answer 413 `file_too_large`.",
        # The service's own limit applies, enforced while the body streams in.
        request_max_body_size=None,
    )
    async def upload(
        self, request: Request[Any, Any, Any], db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> StoredFileOut:
        tenant_id = principal.require_role(Role.MEMBER)
        limit = service.max_upload_bytes()
        _limit_body(request, limit + MULTIPART_OVERHEAD)
        name, content_type, data = await read_upload(request)
        return await service.save_file(
            db, tenant_id=tenant_id, name=name, content_type=content_type, data=data, uploaded_by=principal.user_id
        )

    @get("/{file_id:uuid}", summary="A file's description")
    async def get_file(
        self, file_id: FromPath[uuid.UUID], db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> StoredFileOut:
        principal.require_role(Role.MEMBER)
        return await service.get_file(db, file_id)

    @get("/{file_id:uuid}/content", summary="Download a file", media_type="application/octet-stream")
    async def download(
        self, file_id: FromPath[uuid.UUID], db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> Response[bytes]:
        principal.require_role(Role.MEMBER)
        meta, data = await service.open_file_bytes(db, file_id)
        return Response(
            data,
            media_type=meta.content_type,
            headers={
                "Content-Disposition": content_disposition(meta.name),
                # Uploaded content is never rendered as a page of this site.
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "sandbox",
                "Cache-Control": "private, no-cache",
            },
        )


# Composed into the app by services.app.
CONTROLLERS: list[type[Controller]] = [FilesController]
