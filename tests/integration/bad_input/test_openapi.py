"""Bad input answers with what the OpenAPI document promises: a documented status, a documented
media type and a body that matches the documented schema, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import uuid
from typing import Any

import jsonschema

from services.openapi import OPENAPI_JSON_PATH
from tests.conftest import World

INT32_OVER = 2**31
INT64_OVER = 2**63


async def openapi_document(world: World) -> dict[str, Any]:
    response = await (await world.client()).get(OPENAPI_JSON_PATH)
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def assert_documented(document: dict[str, Any], method: str, path: str, response: Any) -> dict[str, Any]:
    """The response's status and media type are documented for the operation, and its body
    matches the documented schema; returns the body."""
    operation = document["paths"][path][method.lower()]
    status = str(response.status_code)
    assert status in operation["responses"], f"{method} {path}: {status} is not documented: {response.text}"
    assert response.status_code < 500
    content = operation["responses"][status].get("content") or {}
    media_type = response.headers.get("content-type", "").split(";")[0].strip()
    assert media_type in content, f"{method} {path} {status}: {media_type} is not documented"
    body: dict[str, Any] = response.json()
    schema = {**content[media_type]["schema"], "components": document["components"]}
    jsonschema.Draft202012Validator(schema).validate(body)
    return body


async def test_auth_and_csrf_failures_are_documented_problems(world: World) -> None:
    document = await openapi_document(world)
    anonymous = await world.client()
    body = assert_documented(document, "GET", "/api/v1/collections", await anonymous.get("/api/v1/collections"))
    assert body["code"] == "not_authenticated"

    owner, _ = await world.signup()
    refused = await owner.post("/api/v1/collections", {"key": "k", "name": "K"}, headers={"X-CSRF-Token": "wrong"})
    assert assert_documented(document, "POST", "/api/v1/collections", refused)["code"] == "csrf_failed"


async def test_unreadable_and_invalid_bodies_are_documented_problems(world: World) -> None:
    document = await openapi_document(world)
    owner, _ = await world.signup()
    headers = {"content-type": "application/json"}
    malformed = await owner.post("/api/v1/collections", content=b'{"key": ', headers=headers)
    assert malformed.status_code == 400
    assert_documented(document, "POST", "/api/v1/collections", malformed)

    unknown = await owner.post("/api/v1/collections", {"key": "orders", "name": "Orders", "colour": "red"})
    body = assert_documented(document, "POST", "/api/v1/collections", unknown)
    assert body["code"] == "validation_failed"
    assert {"pointer": "/colour", "code": "unknown_field", "message": "unknown field"} in body["errors"]

    not_json = await owner.post("/api/v1/entities", content=b"name=Shop", headers={"content-type": "text/plain"})
    assert not_json.status_code in (400, 415)
    assert_documented(document, "POST", "/api/v1/entities", not_json)


async def test_ids_of_the_wrong_form_or_unknown_are_documented_404s(world: World) -> None:
    document = await openapi_document(world)
    owner, _ = await world.signup()
    path = "/api/v1/collections/{collection_id}"
    unknown = await owner.get(f"/api/v1/collections/{uuid.uuid4()}")
    assert assert_documented(document, "GET", path, unknown)["code"] == "collection_not_found"
    malformed = await owner.get("/api/v1/collections/not-a-uuid")
    assert assert_documented(document, "GET", path, malformed)["code"] == "not_found"


async def test_numbers_past_their_bounds_are_documented_422s(world: World) -> None:
    """Integers past what the database stores are refused before they reach it."""
    document = await openapi_document(world)
    owner, _ = await world.signup()
    audit = await owner.get("/api/v1/audit", params={"before_seq": INT64_OVER})
    assert audit.status_code == 422
    assert_documented(document, "GET", "/api/v1/audit", audit)

    for limit in (0, 201):
        page = await owner.get("/api/v1/runs", params={"limit": limit})
        assert page.status_code == 422
        assert_documented(document, "GET", "/api/v1/runs", page)

    run_id = uuid.uuid4()
    step = await owner.post(f"/api/v1/runs/{run_id}/steps/{INT32_OVER}/claim")
    assert step.status_code == 422
    assert_documented(document, "POST", "/api/v1/runs/{run_id}/steps/{step_id}/claim", step)

    created = await owner.post("/api/v1/collections", {"key": "orders", "name": "Orders", "fields": []})
    collection_id = created.json()["id"]
    record = await owner.post(f"/api/v1/collections/{collection_id}/records", {"values": {}})
    assert record.status_code == 201, record.text
    stale = await owner.patch(
        f"/api/v1/collections/{collection_id}/records/{record.json()['id']}", {"values": {}, "version": INT32_OVER}
    )
    assert stale.status_code == 422
    body = assert_documented(document, "PATCH", "/api/v1/collections/{collection_id}/records/{record_id}", stale)
    assert [e["pointer"] for e in body["errors"]] == ["/version"]


async def test_the_export_is_documented_as_csv_or_xlsx(world: World) -> None:
    document = await openapi_document(world)
    owner, _ = await world.signup()
    created = await owner.post(
        "/api/v1/collections",
        {"key": "orders", "name": "Orders", "fields": [{"key": "customer", "label": "Customer", "type": "text"}]},
    )
    collection_id = created.json()["id"]
    await owner.post(f"/api/v1/collections/{collection_id}/records", {"values": {"customer": "Hamburg Tea"}})
    path = "/api/v1/collections/{collection_id}/export"
    documented = document["paths"][path]["get"]["responses"]["200"]["content"]
    for file_format in ("csv", "xlsx"):
        exported = await owner.get(f"/api/v1/collections/{collection_id}/export", params={"format": file_format})
        assert exported.status_code == 200
        assert exported.headers["content-type"].split(";")[0] in documented
    assert "Hamburg Tea" in (await owner.get(f"/api/v1/collections/{collection_id}/export")).text

    refused = await owner.get(f"/api/v1/collections/{collection_id}/export", params={"format": "pdf"})
    assert refused.status_code == 422
    assert_documented(document, "GET", path, refused)


async def test_a_body_past_the_size_limit_is_a_documented_413(world: World) -> None:
    document = await openapi_document(world)
    owner, _ = await world.signup()
    huge = b'{"name": "' + b"x" * (11 * 1024 * 1024) + b'"}'
    refused = await owner.post("/api/v1/entities", content=huge, headers={"content-type": "application/json"})
    assert refused.status_code == 413
    assert assert_documented(document, "POST", "/api/v1/entities", refused)["code"] == "payload_too_large"
