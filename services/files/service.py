"""Files: bytes kept by a :class:`FileStorage`, described by a row of ``files`` in the tenant.

The storage key is ``<tenant id>/<file id>``, never built from anything a user sent, so a name
like ``../../etc/passwd`` is only ever a name. The bytes are written before the row: a transaction
that rolls back leaves unreferenced bytes behind, never a row without bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import tempfile
import unicodedata
import uuid
from pathlib import Path
from typing import Protocol

from PIL import Image, ImageOps
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.files.models import StoredFile
from services.files.schemas import StoredFileOut
from services.outputs import struct_from
from services.settings import Settings, load_settings
from tenants.base import new_id
from tenants.context import TenantContextError
from tenants.errors import NotFound, ProblemError
from tenants.isolation import session_tenant_id

__all__ = [
    "FileStorage",
    "FileTooLarge",
    "LocalDiskStorage",
    "StoredFileOut",
    "configure",
    "files_exist",
    "get_file",
    "max_upload_bytes",
    "open_file_bytes",
    "save_file",
    "storage",
    "thumbnail",
]

DEFAULT_CONTENT_TYPE = "application/octet-stream"
#: A thumbnail's longest side, in pixels (twice the size pages show it at, for sharp phone screens),
#: and the most bytes it may weigh: pages load thumbnails lazily, each within the budget.
THUMBNAIL_EDGE = 240
THUMBNAIL_BUDGET = 30 * 1024
#: An image of more pixels than this is not decoded for a thumbnail (a decompression bomb).
THUMBNAIL_MAX_PIXELS = 60_000_000
_KEY = re.compile(r"[0-9a-f-]{36}/[0-9a-f-]{36}")
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")


class FileStorage(Protocol):
    """Where file bytes live, by key. Keys are ``<tenant id>/<file id>``."""

    async def put(self, key: str, data: bytes) -> None: ...

    async def open(self, key: str) -> bytes:
        """The bytes under ``key``; raises :class:`FileNotFoundError` when there are none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key``'s bytes; nothing happens when there are none."""
        ...


class LocalDiskStorage:
    """Files under a root directory, one per key, written atomically (temporary file, then rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if not _KEY.fullmatch(key):
            raise ValueError(f"not a storage key: {key!r}")
        return self.root / key

    def _put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, key, data)

    async def open(self, key: str) -> bytes:
        return await asyncio.to_thread(self._path(key).read_bytes)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)


class FileTooLarge(ProblemError):
    status = 413
    code = "file_too_large"
    title = "The file is too large"


_storage: FileStorage | None = None
_max_upload_bytes: int | None = None


def configure(settings: Settings, file_storage: FileStorage | None = None) -> None:
    """Use ``file_storage`` (default: local disk under ``settings.files_dir``) and the upload limit."""
    global _storage, _max_upload_bytes
    _storage = file_storage or LocalDiskStorage(settings.files_dir)
    _max_upload_bytes = settings.max_upload_mb * 1024 * 1024


def _configure_from_environment() -> None:
    if _storage is None or _max_upload_bytes is None:
        configure(load_settings("admin"))


def storage() -> FileStorage:
    _configure_from_environment()
    assert _storage is not None
    return _storage


def max_upload_bytes() -> int:
    _configure_from_environment()
    assert _max_upload_bytes is not None
    return _max_upload_bytes


def too_large() -> FileTooLarge:
    limit_mb = max_upload_bytes() / (1024 * 1024)
    return FileTooLarge("A file may carry at most {limit_mb} MB.", limit_mb=format(limit_mb, "g"))


def clean_name(name: str | None) -> str:
    """A display name: the last path part, without control characters, at most 255 characters."""
    base = re.split(r"[\\/]", name or "")[-1]
    printable = "".join(c for c in base if unicodedata.category(c)[0] != "C").strip()
    return printable[:255] or "file"


def clean_content_type(content_type: str | None) -> str:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type if _MEDIA_TYPE.fullmatch(media_type) else DEFAULT_CONTENT_TYPE


def storage_key(tenant_id: uuid.UUID, file_id: uuid.UUID) -> str:
    return f"{tenant_id}/{file_id}"


def file_out(row: StoredFile) -> StoredFileOut:
    return struct_from(StoredFileOut, row)


async def save_file(
    db: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    name: str,
    content_type: str | None,
    data: bytes,
    uploaded_by: uuid.UUID | None,
) -> StoredFileOut:
    """Store ``data`` for ``tenant_id`` and describe it in the caller's transaction (413 when too large)."""
    if session_tenant_id(db.sync_session) != tenant_id:
        raise TenantContextError("save_file: the session is not bound to this tenant")
    if len(data) > max_upload_bytes():
        raise too_large()
    file_id = new_id()
    key = storage_key(tenant_id, file_id)
    await storage().put(key, data)
    row = StoredFile(
        tenant_id=tenant_id,
        id=file_id,
        name=clean_name(name),
        content_type=clean_content_type(content_type),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        storage_key=key,
        uploaded_by=uploaded_by,
    )
    db.add(row)
    await db.flush()
    return file_out(row)


async def _row(db: AsyncSession, file_id: uuid.UUID) -> StoredFile:
    row = await db.scalar(select(StoredFile).where(StoredFile.id == file_id))
    if row is None:
        raise NotFound("No such file.", code="file_not_found")
    return row


async def get_file(db: AsyncSession, file_id: uuid.UUID) -> StoredFileOut:
    """A file of the session's tenant; 404 ``file_not_found`` otherwise."""
    return file_out(await _row(db, file_id))


async def open_file_bytes(db: AsyncSession, file_id: uuid.UUID) -> tuple[StoredFileOut, bytes]:
    """A file's description and bytes; the bytes are checked against the stored SHA-256."""
    row = await _row(db, file_id)
    try:
        data = await storage().open(row.storage_key)
    except FileNotFoundError as exc:
        raise ProblemError(
            "The file's content is missing from storage.", status=500, code="file_content_missing"
        ) from exc
    if hashlib.sha256(data).hexdigest() != row.sha256:
        raise ProblemError("The file's content no longer matches its checksum.", status=500, code="file_corrupted")
    return file_out(row), data


async def files_exist(db: AsyncSession, ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """The ids among ``ids`` that name no file of the session's tenant (in the given order, once each)."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return []
    found = set(await db.scalars(select(StoredFile.id).where(StoredFile.id.in_(wanted))))
    return [i for i in wanted if i not in found]


class NoThumbnail(ProblemError):
    status = 404
    code = "no_thumbnail"
    title = "The file has no thumbnail"


def _thumbnail_bytes(data: bytes, edge: int) -> bytes:
    """A JPEG at most ``edge`` pixels on its long side and :data:`THUMBNAIL_BUDGET` bytes, turned
    upright from the photo's EXIF orientation; :class:`NoThumbnail` when ``data`` is no image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > THUMBNAIL_MAX_PIXELS:
                raise NoThumbnail("The image is too large to preview.")
            image.draft("RGB", (edge, edge))  # a JPEG decodes at a fraction of its size: fast
            upright = ImageOps.exif_transpose(image)
            upright.thumbnail((edge, edge))
            rgb = upright.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise NoThumbnail("The file is not an image that can be previewed.") from exc
    quality = 75
    while True:
        out = io.BytesIO()
        rgb.save(out, "JPEG", quality=quality, optimize=True, progressive=True)
        if out.tell() <= THUMBNAIL_BUDGET or quality <= 30:
            return out.getvalue()
        quality -= 15


async def thumbnail(db: AsyncSession, file_id: uuid.UUID, *, edge: int = THUMBNAIL_EDGE) -> bytes:
    """A small JPEG preview of an image of the session's tenant (404 ``file_not_found``, or 404
    ``no_thumbnail`` for a file that is no image). Made from the stored bytes when asked: a file
    never changes under its id, so browsers keep the answer and the server keeps no second copy."""
    meta, data = await open_file_bytes(db, file_id)
    if not meta.content_type.startswith("image/"):
        raise NoThumbnail("The file is not an image.")
    return await asyncio.to_thread(_thumbnail_bytes, data, edge)
