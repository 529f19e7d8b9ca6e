"""Files: upload, describe, download; stored per tenant under keys no user can steer."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.db import open_session
from services.files import service as files
from services.files.service import (
    LocalDiskStorage,
    clean_content_type,
    clean_name,
    files_exist,
    get_file,
    open_file_bytes,
    save_file,
)
from tests.conftest import Api, World


async def upload(api: Api, name: str, data: bytes, content_type: str = "text/plain") -> Any:
    return await api.post("/api/v1/files", files={"file": (name, data, content_type)})


async def test_upload_describe_and_download(world: World) -> None:
    api, body = await world.signup()
    data = "采购单 order #42\n".encode() * 100
    response = await upload(api, "采购单 March.txt", data, "text/plain; charset=utf-8")
    assert response.status_code == 201, response.text
    meta = response.json()
    assert meta["name"] == "采购单 March.txt"
    assert meta["content_type"] == "text/plain"
    assert meta["size"] == len(data)
    assert meta["sha256"] == hashlib.sha256(data).hexdigest()
    assert meta["uploaded_by"] == body["user"]["id"]

    described = await api.get(f"/api/v1/files/{meta['id']}")
    assert described.status_code == 200
    assert described.json() == meta

    content = await api.get(f"/api/v1/files/{meta['id']}/content")
    assert content.status_code == 200
    assert content.content == data
    assert content.headers["content-type"].startswith("text/plain")
    assert content.headers["content-disposition"] == (
        "attachment; filename=\"___ March.txt\"; filename*=UTF-8''%E9%87%87%E8%B4%AD%E5%8D%95%20March.txt"
    )
    assert content.headers["x-content-type-options"] == "nosniff"

    # The bytes are on disk under the tenant's directory, named by the file id alone.
    stored = world.settings.files_dir / body["tenant"]["id"] / meta["id"]
    assert stored.read_bytes() == data


async def test_a_member_may_upload_and_names_cannot_steer_the_storage_path(world: World) -> None:
    owner, body = await world.signup()
    member, _ = await world.invite_and_join(owner, "member")
    response = await upload(member, "../../../etc/passwd.txt", b"root:x:0:0", "bogus type")
    assert response.status_code == 201, response.text
    meta = response.json()
    assert meta["name"] == "passwd.txt"
    assert meta["content_type"] == "application/octet-stream"
    root = world.settings.files_dir
    assert [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()] == [
        f"{body['tenant']['id']}/{meta['id']}"
    ]
    assert (await owner.get(f"/api/v1/files/{meta['id']}/content")).content == b"root:x:0:0"


async def test_an_empty_file_is_fine_and_a_missing_one_is_listed(world: World) -> None:
    api, _ = await world.signup()
    empty = await upload(api, "empty.bin", b"", "application/octet-stream")
    assert empty.status_code == 201
    assert empty.json()["size"] == 0
    missing = await api.post("/api/v1/files", files={"other": ("a.txt", b"x", "text/plain")})
    assert missing.status_code == 422
    assert missing.json()["code"] == "validation_failed"
    assert missing.json()["errors"] == [{"pointer": "/file", "code": "required", "message": "a file is required"}]
    not_multipart = await api.post("/api/v1/files", {"file": "x"})
    assert not_multipart.status_code == 422


async def test_too_large_is_413_and_nothing_is_kept(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    api, body = await world.signup()
    files.configure(dataclasses.replace(world.settings, max_upload_mb=1))
    try:
        limit = 1024 * 1024
        at_limit = await upload(api, "ok.bin", b"a" * limit, "application/octet-stream")
        assert at_limit.status_code == 201, at_limit.text
        over = await upload(api, "big.bin", b"a" * (limit + 1), "application/octet-stream")
        assert over.status_code == 413
        assert over.headers["content-type"] == "application/problem+json"
        assert over.json()["code"] == "file_too_large"
        way_over = await upload(api, "huge.bin", b"a" * (3 * limit), "application/octet-stream")
        assert way_over.status_code == 413
        assert way_over.json()["code"] == "file_too_large"

        # Without a Content-Length (chunked), the body is cut off as it streams in.
        async def chunked() -> AsyncIterator[bytes]:
            yield b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="s.bin"\r\n\r\n'
            for _ in range(3 * 16):
                yield b"a" * (64 * 1024)
            yield b"\r\n--xyz--\r\n"

        async def never_reached(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("the streamed body should have been cut off before the service")

        monkeypatch.setattr(files, "save_file", never_reached)
        streamed = await api.post(
            "/api/v1/files", content=chunked(), headers={"content-type": "multipart/form-data; boundary=xyz"}
        )
        assert streamed.status_code == 413
        assert streamed.json()["code"] == "file_too_large"
    finally:
        files.configure(world.settings)
    tenant_dir = world.settings.files_dir / body["tenant"]["id"]
    assert len([p for p in tenant_dir.iterdir() if not p.name.startswith(".")]) == 1


async def test_unknown_or_other_tenants_files_are_404(world: World) -> None:
    a, _ = await world.signup()
    b, _ = await world.signup()
    meta = (await upload(a, "a.txt", b"tenant a")).json()
    for path in (f"/api/v1/files/{meta['id']}", f"/api/v1/files/{meta['id']}/content"):
        response = await b.get(path)
        assert response.status_code == 404
        assert response.json()["code"] == "file_not_found"
    assert (await a.get(f"/api/v1/files/{uuid.uuid4()}")).status_code == 404
    anonymous = await world.client()
    assert (await anonymous.get(f"/api/v1/files/{meta['id']}")).status_code == 401


async def test_service_functions_for_other_services(world: World) -> None:
    _api, body = await world.signup()
    _api2, other = await world.signup()
    tenant_id = uuid.UUID(body["tenant"]["id"])
    async with open_session(tenant_id) as db:
        saved = await save_file(
            db, tenant_id=tenant_id, name="photo.jpg", content_type="image/jpeg", data=b"\xff\xd8", uploaded_by=None
        )
    async with open_session(uuid.UUID(other["tenant"]["id"])) as db:
        foreign = await save_file(
            db,
            tenant_id=uuid.UUID(other["tenant"]["id"]),
            name="x",
            content_type=None,
            data=b"x",
            uploaded_by=None,
        )
    unknown = uuid.uuid4()
    async with open_session(tenant_id) as db:
        assert (await get_file(db, saved.id)).name == "photo.jpg"
        meta, data = await open_file_bytes(db, saved.id)
        assert (meta.content_type, data) == ("image/jpeg", b"\xff\xd8")
        assert await files_exist(db, [saved.id, unknown, foreign.id, saved.id, unknown]) == [unknown, foreign.id]
        assert await files_exist(db, []) == []

    # A rolled-back transaction leaves no row behind.
    with pytest.raises(RuntimeError):
        async with open_session(tenant_id) as db:
            dropped = await save_file(
                db, tenant_id=tenant_id, name="gone", content_type=None, data=b"gone", uploaded_by=None
            )
            raise RuntimeError("the change failed")
    async with open_session(tenant_id) as db:
        assert await files_exist(db, [dropped.id]) == [dropped.id]


async def test_corrupted_bytes_are_refused(world: World) -> None:
    api, body = await world.signup()
    meta = (await upload(api, "a.txt", b"original")).json()
    (world.settings.files_dir / body["tenant"]["id"] / meta["id"]).write_bytes(b"tampered")
    response = await api.get(f"/api/v1/files/{meta['id']}/content")
    assert response.status_code == 500
    assert response.json()["code"] == "file_corrupted"


async def test_local_disk_storage_refuses_keys_that_are_not_tenant_and_file_ids(tmp_path: Path) -> None:
    store = LocalDiskStorage(tmp_path)
    key = f"{uuid.uuid4()}/{uuid.uuid4()}"
    await store.put(key, b"data")
    assert await store.open(key) == b"data"
    await store.delete(key)
    await store.delete(key)  # already gone: nothing happens
    with pytest.raises(FileNotFoundError):
        await store.open(key)
    for bad in ("../x", f"{uuid.uuid4()}/../../etc", "/etc/passwd", "a/b"):
        with pytest.raises(ValueError, match="not a storage key"):
            await store.put(bad, b"x")


def test_names_and_content_types_are_cleaned() -> None:
    assert clean_name("..\\..\\windows\\evil\x00\n.exe") == "evil.exe"
    assert clean_name("/") == "file"
    assert clean_name("a" * 300) == "a" * 255
    assert clean_content_type("Image/PNG; charset=x") == "image/png"
    assert clean_content_type("text/html\r\nX-Evil: 1") == "application/octet-stream"
    assert clean_content_type(None) == "application/octet-stream"
