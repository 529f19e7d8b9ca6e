"""HTTP routes of the records service: parse, call the service, shape the answer."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_204_NO_CONTENT
from sqlalchemy.ext.asyncio import AsyncSession

from services.outputs import struct_from
from services.records import service
from services.records.models import Collection, CollectionVersion, Record
from services.records.schemas import (
    CollectionIn,
    CollectionOut,
    CollectionPatch,
    CollectionVersionOut,
    ImportReport,
    PurgeIn,
    RecordIn,
    RecordOut,
    RecordPage,
    RecordPatch,
    RenameIn,
    SamplesDeleted,
)
from services.schema_docs import Cursor
from tenants.errors import FieldProblem, ValidationProblem
from tenants.principal import Principal
from tenants.scopes import api_scopes

# Litestar refuses request bodies over 10 MB before this handler runs.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024


def collection_out(collection: Collection) -> CollectionOut:
    defs = service.all_fields(collection)
    return struct_from(
        CollectionOut,
        collection,
        fields=[d for d in defs if not d.removed],
        hidden_fields=[d for d in defs if d.removed],
    )


def version_out(version: CollectionVersion) -> CollectionVersionOut:
    return struct_from(CollectionVersionOut, version, fields=service.parse_field_defs(version.fields)[0])


def record_out(collection: Collection, record: Record) -> RecordOut:
    return struct_from(RecordOut, record, values=service.visible_values(service.all_fields(collection), record.values))


class CollectionController(Controller):
    path = "/api/v1/collections"
    tags = ["collections"]
    opt = api_scopes("records")

    @get("", summary="Collections of the workspace (archived ones only when asked for)")
    async def list_collections(
        self,
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        archived: Annotated[
            str,
            QueryParameter(
                max_length=5,
                schema_extra={"enum": ["false", "true", "all"]},
                description="false: live ones (default); true: archived ones; all: both",
            ),
        ] = "false",
    ) -> list[CollectionOut]:
        which = {"false": False, "true": True, "all": None}.get(archived, False)
        return [collection_out(c) for c in await service.list_collections(db, principal, archived=which)]

    @post("/delete-samples", status_code=HTTP_200_OK, summary="Delete every sample record in one go (admin)")
    async def delete_samples(
        self, db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> SamplesDeleted:
        return SamplesDeleted(deleted=await service.delete_samples(db, principal))

    @post("/{collection_id:uuid}/archive", status_code=HTTP_200_OK, summary="Archive: hidden from lists, data kept")
    async def archive(
        self,
        collection_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> CollectionOut:
        return collection_out(await service.archive_collection(db, principal, collection_id))

    @post("/{collection_id:uuid}/restore", status_code=HTTP_200_OK, summary="Restore an archived collection")
    async def restore(
        self,
        collection_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> CollectionOut:
        return collection_out(await service.restore_collection(db, principal, collection_id))

    @post(
        "/{collection_id:uuid}/rename",
        status_code=HTTP_200_OK,
        summary="Give a collection a new key (admin); relation fields naming it follow",
    )
    async def rename(
        self,
        collection_id: FromPath[uuid.UUID],
        data: JSONBody[RenameIn],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> CollectionOut:
        return collection_out(await service.rename_collection_key(db, principal, collection_id, data.key))

    @post("", status_code=201, summary="Define a collection and its fields (manager)")
    async def create_collection(
        self, data: JSONBody[CollectionIn], db: NamedDependency[AsyncSession], principal: NamedDependency[Principal]
    ) -> CollectionOut:
        return collection_out(await service.create_collection(db, principal, data))

    @get("/{collection_id:uuid}", summary="One collection with its current fields")
    async def get_collection(
        self,
        collection_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> CollectionOut:
        return collection_out(await service.read_collection(db, principal, collection_id))

    @patch(
        "/{collection_id:uuid}",
        summary="Change the name or the fields (manager): a new schema version; values are converted, never lost",
    )
    async def alter_collection(
        self,
        collection_id: FromPath[uuid.UUID],
        data: JSONBody[CollectionPatch],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> CollectionOut:
        return collection_out(await service.alter_collection(db, principal, collection_id, data))

    @get("/{collection_id:uuid}/versions", summary="Schema versions, newest first")
    async def list_versions(
        self,
        collection_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> list[CollectionVersionOut]:
        return [version_out(v) for v in await service.list_versions(db, principal, collection_id)]

    @post(
        "/{collection_id:uuid}/purge",
        status_code=HTTP_200_OK,
        summary="Delete hidden fields and their values for good (admin)",
    )
    async def purge_fields(
        self,
        collection_id: FromPath[uuid.UUID],
        data: JSONBody[PurgeIn],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> CollectionOut:
        return collection_out(await service.purge_fields(db, principal, collection_id, data.field_keys))


class RecordController(Controller):
    path = "/api/v1/collections/{collection_id:uuid}"
    tags = ["records"]
    opt = api_scopes("records")

    @get(
        "/records",
        summary="List records: filter[<field>][<op>]=<value>, sort=[-]<field>, keyset pages via cursor",
    )
    async def list_records(
        self,
        request: Request[Any, Any, Any],
        collection_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        sort: Annotated[str | None, QueryParameter(max_length=100, description="[-]<field key>")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=service.MAX_PAGE)] = service.DEFAULT_PAGE,
        cursor: Cursor = None,
    ) -> RecordPage:
        params = {key: request.query_params.getall(key) for key in request.query_params}
        collection, rows, next_cursor = await service.list_records(
            db, principal, collection_id, params, sort_spec=sort, limit=limit, cursor=cursor
        )
        return RecordPage(items=[record_out(collection, r) for r in rows], next_cursor=next_cursor)

    @post("/records", status_code=201, summary="Create a record")
    async def create_record(
        self,
        collection_id: FromPath[uuid.UUID],
        data: JSONBody[RecordIn],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> RecordOut:
        record = await service.create_record(db, principal, collection_id, data)
        collection, _ = await service.read_record(db, principal, collection_id, record.id)
        return record_out(collection, record)

    @get("/records/{record_id:uuid}", summary="One record")
    async def get_record(
        self,
        collection_id: FromPath[uuid.UUID],
        record_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> RecordOut:
        collection, record = await service.read_record(db, principal, collection_id, record_id)
        return record_out(collection, record)

    @patch("/records/{record_id:uuid}", summary="Change some values of a record")
    async def update_record(
        self,
        collection_id: FromPath[uuid.UUID],
        record_id: FromPath[uuid.UUID],
        data: JSONBody[RecordPatch],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> RecordOut:
        record = await service.update_record(db, principal, collection_id, record_id, data)
        collection, _ = await service.read_record(db, principal, collection_id, record.id)
        return record_out(collection, record)

    @delete("/records/{record_id:uuid}", status_code=HTTP_204_NO_CONTENT, summary="Delete a record")
    async def delete_record(
        self,
        collection_id: FromPath[uuid.UUID],
        record_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> None:
        await service.delete_record(db, principal, collection_id, record_id)

    @get("/export", summary="Download every record as CSV or XLSX")
    async def export_records(
        self,
        collection_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        file_format: Annotated[
            str, QueryParameter(name="format", max_length=8, schema_extra={"enum": ["csv", "xlsx"]})
        ] = "csv",
    ) -> Response[bytes]:
        content, media_type, filename = await service.export_records(db, principal, collection_id, file_format)
        return Response(
            content,
            media_type=media_type,
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    @post(
        "/import",
        status_code=HTTP_200_OK,
        summary="Import a CSV or XLSX file (multipart field 'file'); all or nothing unless skip_invalid=true",
    )
    async def import_records(
        self,
        request: Request[Any, Any, Any],
        collection_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        skip_invalid: FromQuery[bool] = False,
    ) -> ImportReport:
        # The collection is looked up before the upload is read: another tenant's id is a plain 404.
        await service.read_collection(db, principal, collection_id)
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ValidationProblem(
                errors=[
                    FieldProblem(pointer="/file", code="required", message="upload the file as multipart field 'file'")
                ]
            )
        content = await upload.read(MAX_UPLOAD_BYTES + 1)
        if len(content) > MAX_UPLOAD_BYTES:
            raise ValidationProblem(
                errors=[FieldProblem(pointer="/file", code="too_large", message="at most 10 MB per import")]
            )
        imported, skipped = await service.import_records(
            db, principal, collection_id, content, upload.filename or "", skip_invalid=skip_invalid
        )
        return ImportReport(imported=imported, skipped=skipped)


# Composed into the app by services.app.
CONTROLLERS: list[type[Controller]] = [CollectionController, RecordController]
