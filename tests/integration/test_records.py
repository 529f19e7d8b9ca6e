"""Collections and records through the API, on SQLite and Postgres: typed fields, versioned schema
changes that never lose data, filtering/sorting/keyset pages, events, import and export."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from typing import Any

import openpyxl  # type: ignore[import-untyped]
import pytest
from sqlalchemy import select

from services.audit.models import AuditEvent
from services.db import open_session
from services.outbox.models import OutboxEvent
from services.records import service as records
from tenants.errors import ValidationProblem
from tests.conftest import Api, World

ORDER_FIELDS: list[dict[str, Any]] = [
    {"key": "code", "label": "Code", "type": "text", "required": True, "unique": True},
    {"key": "amount", "label": "Amount", "type": "money", "currency": "CNY"},
    {"key": "qty", "label": "Quantity", "type": "number", "min": 0},
    {"key": "status", "label": "Status", "type": "select", "options": ["open", "shipped"], "default": "open"},
    {"key": "tags", "label": "Tags", "type": "multi_select", "options": ["急", "vip", "new"]},
    {"key": "due", "label": "Due", "type": "date"},
    {"key": "paid", "label": "Paid", "type": "boolean"},
    {"key": "contact", "label": "Contact", "type": "email"},
    {"key": "phone", "label": "Phone", "type": "phone"},
    {"key": "note", "label": "Note", "type": "long_text"},
    {
        "key": "lines",
        "label": "Lines",
        "type": "line_items",
        "fields": [
            {"key": "sku", "label": "SKU", "type": "text", "required": True},
            {"key": "qty", "label": "Qty", "type": "number", "min": 1},
            {"key": "unit_price", "label": "Unit price", "type": "money", "currency": "CNY"},
        ],
    },
]


async def make_collection(api: Api, key: str = "orders", fields: list[dict[str, Any]] | None = None, **kw: Any) -> str:
    response = await api.post(
        "/api/v1/collections", {"key": key, "name": key.title(), "fields": fields or ORDER_FIELDS, **kw}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def create(api: Api, collection_id: str, values: dict[str, Any], **kw: Any) -> dict[str, Any]:
    response = await api.post(f"/api/v1/collections/{collection_id}/records", {"values": values, **kw})
    assert response.status_code == 201, response.text
    return dict(response.json())


def pointers(response: Any) -> set[tuple[str, str]]:
    return {(e["pointer"], e["code"]) for e in response.json().get("errors", [])}


async def events_of(record_id: str) -> list[OutboxEvent]:
    async with open_session(system=True) as db:
        query = select(OutboxEvent).where(OutboxEvent.type.like("record.%")).order_by(OutboxEvent.created_at)
        return [e for e in await db.scalars(query) if e.payload.get("record_id") == record_id]


async def test_record_lifecycle_emits_events_and_audits(world: World) -> None:
    api, body = await world.signup()
    collection_id = await make_collection(api)
    base = f"/api/v1/collections/{collection_id}/records"
    record = await create(
        api,
        collection_id,
        {
            "code": "PO-1",
            "amount": {"amount": 129900, "currency": "CNY"},
            "qty": 3,
            "tags": ["急", "vip"],
            "due": "2026-04-01",
            "contact": "buyer@example.com",
            "phone": "13800138000",
            "lines": [{"sku": "T-1", "qty": 2, "unit_price": {"amount": 500, "currency": "CNY"}}],
        },
    )
    assert record["values"]["status"] == "open"  # the default
    assert record["values"]["phone"] == "+8613800138000"
    assert record["values"]["paid"] is None
    assert record["version"] == 1

    got = await api.get(f"{base}/{record['id']}")
    assert got.status_code == 200 and got.json()["values"] == record["values"]

    patched = await api.patch(f"{base}/{record['id']}", {"values": {"qty": 5, "paid": True}, "version": 1})
    assert patched.status_code == 200, patched.text
    assert patched.json()["values"]["qty"] == 5 and patched.json()["values"]["code"] == "PO-1"
    assert patched.json()["version"] == 2
    stored = (await api.get(f"{base}/{record['id']}")).json()
    assert stored["values"] == {**record["values"], "qty": 5, "paid": True} and stored["version"] == 2
    stale = await api.patch(f"{base}/{record['id']}", {"values": {"qty": 6}, "version": 1})
    assert stale.status_code == 409 and stale.json()["code"] == "version_conflict"
    assert (await api.get(f"{base}/{record['id']}")).json() == stored  # the stale write changed nothing

    assert (await api.delete(f"{base}/{record['id']}")).status_code == 204
    assert (await api.get(f"{base}/{record['id']}")).status_code == 404
    assert record["id"] not in (await api.get(base)).text
    assert (await api.patch(f"{base}/{record['id']}", {"values": {"qty": 1}})).status_code == 404

    created, updated, deleted = await events_of(record["id"])
    assert [created.type, updated.type, deleted.type] == ["record.created", "record.updated", "record.deleted"]
    assert created.payload["collection_key"] == "orders" and created.payload["collection_id"] == collection_id
    assert created.payload["before"] is None and created.payload["values"]["code"] == "PO-1"
    assert sorted(updated.payload["changed_fields"]) == ["paid", "qty"]
    assert updated.payload["before"]["qty"] == 3 and updated.payload["values"]["qty"] == 5
    assert deleted.payload["values"] is None and deleted.payload["before"]["qty"] == 5
    assert str(created.tenant_id) == body["tenant"]["id"]

    async with open_session(uuid.UUID(body["tenant"]["id"])) as db:
        actions = list(await db.scalars(select(AuditEvent.action).where(AuditEvent.subject_id == record["id"])))
    assert sorted(actions) == ["record.created", "record.deleted", "record.updated"]


async def test_invalid_field_definitions_are_listed_at_once(world: World) -> None:
    api, _ = await world.signup()
    response = await api.post(
        "/api/v1/collections",
        {
            "key": "Bad Key",
            "name": "Orders",
            "fields": [
                {"key": "a", "label": "A", "type": "number", "min": 10, "max": 1},
                {"key": "a", "label": "A again", "type": "text", "pattern": "(["},
                {"key": "s", "label": "S", "type": "select"},
                {"key": "r", "label": "R", "type": "relation", "target_collection": "nowhere"},
                {"key": "m", "label": "M", "type": "money", "min": "lots"},
                {"key": "x", "label": "X", "type": "wat", "surprise": 1},
            ],
        },
    )
    assert response.status_code == 422, response.text
    assert pointers(response) >= {
        ("/key", "invalid_key"),
        ("/fields/0/min", "min_above_max"),
        ("/fields/1/key", "duplicate_key"),
        ("/fields/1/pattern", "invalid_pattern"),
        ("/fields/2/options", "options_required"),
        ("/fields/4/min", "wrong_type"),
        ("/fields/5/surprise", "unknown_field"),
        ("/fields/5/type", "unknown_type"),
    }
    # The relation's target is checked once the definitions themselves are sound.
    sound = await api.post(
        "/api/v1/collections",
        {
            "key": "orders",
            "name": "Orders",
            "fields": [{"key": "r", "label": "R", "type": "relation", "target_collection": "nowhere"}],
        },
    )
    assert sound.status_code == 422 and pointers(sound) == {("/fields/0/target_collection", "unknown_collection")}
    assert (await api.get("/api/v1/collections")).json() == []
    await make_collection(api)
    again = await api.post("/api/v1/collections", {"key": "orders", "name": "Again"})
    assert again.status_code == 409 and again.json()["code"] == "collection_key_taken"


async def test_wrong_values_are_all_listed_and_nothing_is_written(world: World) -> None:
    api, _ = await world.signup()
    collection_id = await make_collection(api)
    response = await api.post(
        f"/api/v1/collections/{collection_id}/records",
        {
            "values": {
                "amount": 12.5,
                "qty": -1,
                "status": "lost",
                "tags": ["nope"],
                "due": "2026-13-01",
                "contact": "nobody",
                "phone": "123",
                "lines": [{"qty": 0}],
                "ghost": 1,
            }
        },
    )
    assert response.status_code == 422, response.text
    assert pointers(response) == {
        ("/values/code", "required"),
        ("/values/amount", "wrong_type"),
        ("/values/qty", "below_min"),
        ("/values/status", "not_an_option"),
        ("/values/tags", "not_an_option"),
        ("/values/due", "invalid_date"),
        ("/values/contact", "invalid_email"),
        ("/values/phone", "invalid_phone"),
        ("/values/lines/0/sku", "required"),
        ("/values/ghost", "unknown_field"),
    }
    listed = await api.get(f"/api/v1/collections/{collection_id}/records")
    assert listed.json()["items"] == []
    record = await create(api, collection_id, {"code": "A"})
    bad_patch = await api.patch(
        f"/api/v1/collections/{collection_id}/records/{record['id']}", {"values": {"code": None, "qty": "7"}}
    )
    assert bad_patch.status_code == 422
    assert pointers(bad_patch) == {("/values/code", "required"), ("/values/qty", "wrong_type")}


async def test_unique_values_are_enforced_even_concurrently(world: World) -> None:
    api, _ = await world.signup()
    collection_id = await make_collection(api)
    first = await create(api, collection_id, {"code": "PO-1"})
    dup = await api.post(f"/api/v1/collections/{collection_id}/records", {"values": {"code": "PO-1"}})
    assert dup.status_code == 409 and dup.json()["code"] == "duplicate_value"
    assert pointers(dup) == {("/values/code", "duplicate_value")}
    other = await create(api, collection_id, {"code": "PO-2"})
    clash = await api.patch(f"/api/v1/collections/{collection_id}/records/{other['id']}", {"values": {"code": "PO-1"}})
    assert clash.status_code == 409
    # Deleting frees the value.
    await api.delete(f"/api/v1/collections/{collection_id}/records/{first['id']}")
    await create(api, collection_id, {"code": "PO-1"})

    results = await asyncio.gather(
        *(api.post(f"/api/v1/collections/{collection_id}/records", {"values": {"code": "RACE"}}) for _ in range(4))
    )
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(201) == 1, [r.text for r in results]
    assert set(statuses) <= {201, 409}
    assert all(r.json()["code"] == "duplicate_value" for r in results if r.status_code == 409)


async def test_schema_changes_are_versioned_and_keep_values(world: World) -> None:
    api, _ = await world.signup()
    fields = [
        {"key": "code", "label": "Code", "type": "text"},
        {"key": "size", "label": "Size", "type": "text"},
        {"key": "weight", "label": "Weight", "type": "text"},
    ]
    collection_id = await make_collection(api, "parts", fields)
    base = f"/api/v1/collections/{collection_id}"
    one = await create(api, collection_id, {"code": "P1", "size": "10", "weight": "1.5"})
    two = await create(api, collection_id, {"code": "P2", "size": "large", "weight": "2"})

    # Add a field with a default: existing records have it at once.
    added = await api.patch(
        base,
        {
            "fields": [
                *fields,
                {"key": "grade", "label": "Grade", "type": "select", "options": ["A", "B"], "default": "A"},
            ]
        },
    )
    assert added.status_code == 200, added.text
    assert added.json()["schema_version"] == 2
    assert (await api.get(f"{base}/records/{one['id']}")).json()["values"]["grade"] == "A"
    assert (await api.get(f"{base}/records?filter[grade]=A")).json()["items"] != []
    fields.append(added.json()["fields"][-1])

    # Rename: the label changes, the key and the values stay.
    fields[0] = {**fields[0], "label": "Part number"}
    renamed = await api.patch(base, {"fields": fields, "summary": "clearer name"})
    assert renamed.json()["fields"][0]["label"] == "Part number"
    assert (await api.get(f"{base}/records/{one['id']}")).json()["values"]["code"] == "P1"

    # Remove: hidden, values kept; listed again: restored with its values.
    removed = await api.patch(base, {"fields": [f for f in fields if f["key"] != "weight"]})
    assert [f["key"] for f in removed.json()["hidden_fields"]] == ["weight"]
    assert "weight" not in (await api.get(f"{base}/records/{one['id']}")).json()["values"]
    hidden_write = await api.patch(f"{base}/records/{one['id']}", {"values": {"weight": "9"}})
    assert hidden_write.status_code == 422 and pointers(hidden_write) == {("/values/weight", "removed_field")}
    restored = await api.patch(base, {"fields": fields})
    assert restored.json()["hidden_fields"] == []
    assert (await api.get(f"{base}/records/{one['id']}")).json()["values"]["weight"] == "1.5"

    # Type change refused with every record that would not convert; nothing changes.
    as_number = [{**f, "type": "number"} if f["key"] in ("size", "weight") else f for f in fields]
    refused = await api.patch(base, {"fields": as_number})
    assert refused.status_code == 422, refused.text
    assert pointers(refused) == {(f"/records/{two['id']}/size", "not_convertible")}
    after_refusal = await api.get(base)
    assert after_refusal.json()["schema_version"] == restored.json()["schema_version"]
    assert (await api.get(f"{base}/records/{one['id']}")).json()["values"]["size"] == "10"

    # Fix the record, then the type change converts every value.
    await api.patch(f"{base}/records/{two['id']}", {"values": {"size": "12"}})
    converted = await api.patch(base, {"fields": as_number})
    assert converted.status_code == 200, converted.text
    assert (await api.get(f"{base}/records/{one['id']}")).json()["values"] == {
        "code": "P1",
        "size": 10,
        "weight": 1.5,
        "grade": "A",
    }
    assert [r["values"]["size"] for r in (await api.get(f"{base}/records?sort=-size")).json()["items"]] == [12, 10]

    # Making a field unique is refused while records share a value.
    dup = await create(api, collection_id, {"code": "P1"})
    unique = await api.patch(base, {"fields": [{**as_number[0], "unique": True}, *as_number[1:]]})
    assert unique.status_code == 409 and pointers(unique) == {(f"/records/{dup['id']}/code", "duplicate_value")}

    versions = (await api.get(f"{base}/versions")).json()
    assert [v["version"] for v in versions] == list(range(versions[0]["version"], 0, -1))
    assert "clearer name" in versions[-3]["summary"] or any("clearer name" in v["summary"] for v in versions)
    assert any(s.startswith("changed the type of size") for v in versions for s in v["summary"])


async def test_purge_needs_an_admin_and_a_hidden_field(world: World) -> None:
    owner, _ = await world.signup()
    manager, _ = await world.invite_and_join(owner, "manager")
    fields = [{"key": "code", "label": "Code", "type": "text"}, {"key": "secret", "label": "Secret", "type": "text"}]
    collection_id = await make_collection(manager, "things", fields)
    base = f"/api/v1/collections/{collection_id}"
    record = await create(manager, collection_id, {"code": "a", "secret": "s3"})
    not_hidden = await owner.post(f"{base}/purge", {"field_keys": ["secret", "nope"]})
    assert not_hidden.status_code == 422
    assert pointers(not_hidden) == {("/field_keys/0", "not_hidden"), ("/field_keys/1", "unknown_field")}
    await manager.patch(base, {"fields": fields[:1]})
    assert (await manager.post(f"{base}/purge", {"field_keys": ["secret"]})).status_code == 403
    purged = await owner.post(f"{base}/purge", {"field_keys": ["secret"]})
    assert purged.status_code == 200, purged.text
    assert purged.json()["hidden_fields"] == []
    # Listing the field again now starts from nothing: the values are gone for good.
    await manager.patch(base, {"fields": fields})
    assert (await manager.get(f"{base}/records/{record['id']}")).json()["values"]["secret"] is None


async def test_roles(world: World) -> None:
    owner, _ = await world.signup()
    member, _ = await world.invite_and_join(owner, "member")
    denied = await member.post("/api/v1/collections", {"key": "x", "name": "X"})
    assert denied.status_code == 403 and denied.json()["code"] == "role_required"
    collection_id = await make_collection(owner)
    name = (await owner.get(f"/api/v1/collections/{collection_id}")).json()["name"]
    assert (await member.patch(f"/api/v1/collections/{collection_id}", {"name": "Mine"})).status_code == 403
    assert (await owner.get(f"/api/v1/collections/{collection_id}")).json()["name"] == name
    # Members do the daily work on records.
    record = await create(member, collection_id, {"code": "M-1"})
    base = f"/api/v1/collections/{collection_id}/records/{record['id']}"
    assert (await member.patch(base, {"values": {"qty": 1}})).status_code == 200
    assert (await member.get(base)).status_code == 200
    assert (await owner.get(base)).json()["values"]["qty"] == 1  # the member's change is stored
    assert (await member.delete(base)).status_code == 204
    assert (await owner.get(base)).status_code == 404


async def test_filters_sorting_and_keyset_pages(world: World) -> None:
    api, _ = await world.signup()
    collection_id = await make_collection(api)
    base = f"/api/v1/collections/{collection_id}/records"
    amounts = [500, None, 100, 500, 2500, None, 100]
    made = []
    for i, amount in enumerate(amounts):
        values: dict[str, Any] = {"code": f"PO-{i}", "qty": i, "paid": i % 2 == 0, "contact": f"c{i}@shop.example"}
        if amount is not None:
            values["amount"] = {"amount": amount, "currency": "CNY"}
        if i in (1, 4):
            values["tags"] = ["急", "new"] if i == 1 else ["急"]
        if i == 2:
            values["due"] = "2026-02-01"
        made.append(await create(api, collection_id, values))
    ids = [m["id"] for m in made]

    async def codes(query: str) -> list[str]:
        response = await api.get(f"{base}?{query}")
        assert response.status_code == 200, response.text
        return [r["values"]["code"] for r in response.json()["items"]]

    assert await codes("filter[amount][gte]=5&sort=code") == ["PO-0", "PO-3", "PO-4"]
    assert await codes("filter[amount][lt]=5.00 CNY&sort=code") == ["PO-2", "PO-6"]
    assert await codes("filter[amount]=1") == ["PO-2", "PO-6"]
    assert await codes("filter[amount][is_null]=true") == ["PO-1", "PO-5"]
    assert await codes("filter[qty][in]=1,3,99") == ["PO-1", "PO-3"]
    assert await codes("filter[qty][ne]=0&filter[qty][lte]=2") == ["PO-1", "PO-2"]
    assert await codes("filter[paid]=false") == ["PO-1", "PO-3", "PO-5"]
    assert await codes("filter[tags][contains]=急") == ["PO-1", "PO-4"]
    assert await codes("filter[tags][contains]=new") == ["PO-1"]
    assert await codes("filter[contact][contains]=C3@") == ["PO-3"]
    assert await codes("filter[due][lt]=2026-03-01") == ["PO-2"]
    assert await codes("filter[code][eq]=PO-5") == ["PO-5"]

    bad = await api.get(f"{base}?filter[amount][gte]=lots&filter[nope]=1&filter[qty][like]=1&filter[tags][eq]=x")
    assert bad.status_code == 422
    assert {p for p, _ in pointers(bad)} == {
        "/query/filter[amount][gte]",
        "/query/filter[nope][eq]",
        "/query/filter[qty][like]",
        "/query/filter[tags][eq]",
    }
    assert (await api.get(f"{base}?sort=lines")).status_code == 422

    async def walk(sort: str, limit: int = 2) -> list[str]:
        seen: list[str] = []
        cursor = None
        for _ in range(10):
            query = f"{base}?sort={sort}&limit={limit}" + (f"&cursor={cursor}" if cursor else "")
            page = (await api.get(query)).json()
            seen += [r["id"] for r in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                return seen
        raise AssertionError("pagination did not end")

    # Ascending: nulls last; ties by id (creation order). Descending: the exact reverse.
    ascending = [ids[2], ids[6], ids[0], ids[3], ids[4], ids[1], ids[5]]
    assert await walk("amount") == ascending
    assert await walk("-amount") == ascending[::-1]
    assert await walk("amount", limit=3) == ascending
    assert await walk("-created_at", limit=3) == ids[::-1]
    assert await walk("") == ids
    page = (await api.get(f"{base}?sort=amount&limit=2")).json()
    wrong_sort = await api.get(f"{base}?sort=qty&cursor={page['next_cursor']}")
    assert wrong_sort.status_code == 422 and pointers(wrong_sort) == {("/query/cursor", "invalid_cursor")}


async def test_entity_scoped_collections_and_references(world: World) -> None:
    api, body = await world.signup()
    entities = (await api.get("/api/v1/entities")).json()
    entity_id = entities[0]["id"]
    other_api, _ = await world.signup()
    foreign_entity = (await other_api.get("/api/v1/entities")).json()[0]["id"]
    supplier_collection = await make_collection(api, "suppliers", [{"key": "name", "label": "Name", "type": "text"}])
    supplier = await create(api, supplier_collection, {"name": "Acme"})
    fields = [
        {"key": "supplier", "label": "Supplier", "type": "relation", "target_collection": "suppliers"},
        {"key": "owner", "label": "Owner", "type": "user"},
        {"key": "brand", "label": "Brand", "type": "entity"},
        {"key": "scan", "label": "Scan", "type": "file"},
    ]
    collection_id = await make_collection(api, "invoices", fields, entity_scoped=True)
    base = f"/api/v1/collections/{collection_id}/records"
    missing = await api.post(base, {"values": {}})
    assert missing.status_code == 422 and pointers(missing) == {("/entity_id", "required")}
    stranger = str(uuid.uuid4())
    wrong = await api.post(
        base,
        {
            "entity_id": foreign_entity,
            "values": {"supplier": stranger, "owner": stranger, "brand": foreign_entity, "scan": stranger},
        },
    )
    assert wrong.status_code == 422
    assert pointers(wrong) == {
        ("/entity_id", "unknown_entity"),
        ("/values/supplier", "unknown_record"),
        ("/values/owner", "unknown_member"),
        ("/values/brand", "unknown_entity"),
        ("/values/scan", "unknown_file"),
    }
    uploaded = await api.post("/api/v1/files", files={"file": ("invoice.pdf", b"%PDF-1.4", "application/pdf")})
    assert uploaded.status_code == 201, uploaded.text
    good = await create(
        api,
        collection_id,
        {"supplier": supplier["id"], "owner": body["user"]["id"], "brand": entity_id, "scan": uploaded.json()["id"]},
        entity_id=entity_id,
    )
    assert good["entity_id"] == entity_id
    listed = await api.get(f"{base}?filter[entity_id]={entity_id}&filter[supplier]={supplier['id']}")
    assert [r["id"] for r in listed.json()["items"]] == [good["id"]]
    unscoped = await api.post(
        f"/api/v1/collections/{supplier_collection}/records", {"values": {"name": "B"}, "entity_id": entity_id}
    )
    assert unscoped.status_code == 422 and pointers(unscoped) == {("/entity_id", "not_entity_scoped")}


async def test_service_functions_for_other_services(world: World) -> None:
    api, body = await world.signup()
    collection_id = await make_collection(api)
    record = await create(api, collection_id, {"code": "F-1"})
    tenant_id = uuid.UUID(body["tenant"]["id"])
    cid, rid = uuid.UUID(collection_id), uuid.UUID(record["id"])
    actor = uuid.UUID(body["user"]["id"])
    async with open_session(tenant_id) as db:
        info = await records.get_collection(db, cid)
        assert info.key == "orders" and [f.key for f in info.fields][:2] == ["code", "amount"]
        assert [f.key for f in await records.collection_fields(db, cid)] == [f["key"] for f in ORDER_FIELDS]
        await records.update_record_values(db, cid, rid, {"qty": 4, "paid": True}, actor)
        values = await records.get_record_values(db, cid, rid)
        assert values["qty"] == 4 and values["paid"] is True and values["code"] == "F-1"
        assert records.validate_value("money", {"amount": 5, "currency": "USD"}) == {"amount": 5, "currency": "USD"}
        with pytest.raises(ValidationProblem) as refused:
            await records.update_record_values(db, cid, rid, {"qty": "four"}, actor)
        assert [e.pointer for e in refused.value.errors] == ["/values/qty"]
    [_, updated] = await events_of(record["id"])
    assert updated.type == "record.updated" and sorted(updated.payload["changed_fields"]) == ["paid", "qty"]


def csv_bytes(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode()


async def upload(api: Api, collection_id: str, name: str, content: bytes, skip: bool = False) -> Any:
    query = "?skip_invalid=true" if skip else ""
    return await api.post(
        f"/api/v1/collections/{collection_id}/import{query}", files={"file": (name, content, "text/csv")}
    )


async def test_import_is_all_or_nothing_unless_skipping(world: World) -> None:
    api, _ = await world.signup()
    collection_id = await make_collection(api)
    await create(api, collection_id, {"code": "OLD"})
    rows = [
        ["Code", "amount", "Quantity", "tags", "paid"],
        ["N-1", "12.50", "2", "急; vip", "yes"],
        ["N-2", "abc", "-1", "", "no"],
        ["OLD", "", "", "", ""],
        ["N-1", "", "", "", ""],
        ["N-5", "3 CNY", "1", "new", "是"],
    ]
    refused = await upload(api, collection_id, "orders.csv", csv_bytes(rows))
    assert refused.status_code == 422, refused.text
    assert pointers(refused) == {
        ("/rows/3/amount", "wrong_type"),
        ("/rows/3/qty", "below_min"),
        ("/rows/4/code", "duplicate_value"),
        ("/rows/5/code", "duplicate_value"),
    }
    assert len((await api.get(f"/api/v1/collections/{collection_id}/records")).json()["items"]) == 1

    skipped = await upload(api, collection_id, "orders.csv", csv_bytes(rows), skip=True)
    assert skipped.status_code == 200, skipped.text
    assert skipped.json()["imported"] == 2
    assert {(s["row"], s["field"]) for s in skipped.json()["skipped"]} == {
        (3, "amount"),
        (3, "qty"),
        (4, "code"),
        (5, "code"),
    }
    items = (await api.get(f"/api/v1/collections/{collection_id}/records?sort=code")).json()["items"]
    assert [(r["values"]["code"], r["values"]["amount"], r["values"]["tags"], r["values"]["paid"]) for r in items] == [
        ("N-1", {"amount": 1250, "currency": "CNY"}, ["急", "vip"], True),
        ("N-5", {"amount": 300, "currency": "CNY"}, ["new"], True),
        ("OLD", None, None, None),
    ]

    header = await upload(api, collection_id, "x.csv", csv_bytes([["code", "colour"], ["a", "red"]]))
    assert header.status_code == 422 and pointers(header) == {("/rows/1/colour", "unknown_column")}
    garbage = await upload(api, collection_id, "x.xlsx", b"PK\x03\x04 not really a workbook")
    assert garbage.status_code == 422 and pointers(garbage) == {("/file", "unreadable_file")}
    no_file = await api.post(f"/api/v1/collections/{collection_id}/import", files={"other": ("a", b"b")})
    assert no_file.status_code == 422 and pointers(no_file) == {("/file", "required")}


async def test_export_then_import_gives_equal_records(world: World) -> None:
    api, _ = await world.signup()
    source = await make_collection(api)
    await create(
        api,
        source,
        {
            "code": "=HYPERLINK(1)",
            "amount": {"amount": 129999, "currency": "CNY"},
            "qty": 2.5,
            "tags": ["急", "vip"],
            "due": "2026-04-01",
            "paid": False,
            "contact": "a@shop.example",
            "phone": "+8613800138000",
            "note": "line one\nline two, with a comma",
            "lines": [{"sku": "T-1", "qty": 2, "unit_price": {"amount": 500, "currency": "CNY"}}],
        },
    )
    await create(api, source, {"code": "B-2", "status": "shipped"})
    original = (await api.get(f"/api/v1/collections/{source}/records")).json()["items"]

    for file_format in ("csv", "xlsx"):
        exported = await api.get(f"/api/v1/collections/{source}/export?format={file_format}")
        assert exported.status_code == 200, exported.text
        disposition = exported.headers["content-disposition"]
        assert disposition.startswith('attachment; filename="orders-') and disposition.endswith(f'.{file_format}"')
        if file_format == "csv":
            assert exported.headers["content-type"].startswith("text/csv")
            text = exported.content.decode("utf-8-sig")
            assert "'=HYPERLINK(1)" in text and "1299.99 CNY" in text and "急; vip" in text
        else:
            assert exported.headers["content-type"] == records.XLSX_MEDIA_TYPE
            sheet = openpyxl.load_workbook(io.BytesIO(exported.content)).active
            assert sheet["B2"].value == "=HYPERLINK(1)" and sheet["B2"].data_type == "s"
        target = await make_collection(api, f"copy_{file_format}")
        imported = await api.post(
            f"/api/v1/collections/{target}/import", files={"file": (f"orders.{file_format}", exported.content)}
        )
        assert imported.status_code == 200, imported.text
        assert imported.json() == {"imported": 2, "skipped": []}
        copy = (await api.get(f"/api/v1/collections/{target}/records")).json()["items"]
        assert [r["values"] for r in copy] == [r["values"] for r in original]

    assert (await api.get(f"/api/v1/collections/{source}/export?format=pdf")).status_code == 422
