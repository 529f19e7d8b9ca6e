"""What a new owner's onboarding needs of the gallery and records: a collection key clash decided
per collection (use the existing one, or install under another key with the pack's references
following), collections archived, restored and given a new key, installed names in the workspace's
language, unassigned roles said and never given to the owner, sample records removed in one call;
and another workspace sees and touches none of it."""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.db import open_session
from services.gallery import service as gallery
from services.gallery.install import rekey, vacate
from services.records import service as records
from tests.conftest import World, deliver_events

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "packs"
PACK = "mini-shop"
ORDER_FIELDS = [
    {"key": "order_no", "label": "Order number", "type": "text", "required": True, "unique": True},
    {"key": "amount", "label": "Amount", "type": "number"},
    {"key": "status", "label": "Status", "type": "select", "options": ["To ship", "Shipped"]},
]


@pytest.fixture
def offered(world: World) -> Iterator[None]:
    gallery.configure(dataclasses.replace(world.settings, template_packs=(str(FIXTURES / "v1"),)))
    yield
    gallery.configure(world.settings)


async def _install(api: Any, body: dict[str, Any] | None = None) -> Any:
    return await api.post(f"/api/v1/templates/{PACK}/install", body or {})


async def _collections(api: Any, archived: str | None = None) -> dict[str, dict[str, Any]]:
    params = {"archived": archived} if archived else None
    return {c["key"]: c for c in (await api.get("/api/v1/collections", params=params)).json()}


async def _records(api: Any, collection_id: str) -> list[dict[str, Any]]:
    return list((await api.get(f"/api/v1/collections/{collection_id}/records")).json()["items"])


async def _mine(api: Any) -> dict[str, Any]:
    created = await api.post("/api/v1/collections", {"key": "shop_orders", "name": "Mine", "fields": ORDER_FIELDS})
    assert created.status_code == 201, created.text
    return dict(created.json())


async def test_a_clash_without_a_choice_lists_each_key_and_a_free_one(world: World, offered: None) -> None:
    api, _ = await world.signup()
    await _mine(api)
    await api.post("/api/v1/collections", {"key": "shop_orders_2", "name": "Also mine", "fields": ORDER_FIELDS})
    refused = await _install(api)
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert problem["code"] == "template_name_conflicts"
    assert problem["clashes"] == [{"kind": "collection", "key": "shop_orders", "suggested": "shop_orders_3"}]
    assert "install_as" in problem["errors"][0]["message"] and "shop_orders_3" in problem["errors"][0]["message"]
    assert (await api.get("/api/v1/templates")).json() == []
    # A choice that cannot be followed is refused with what is wrong, nothing kept.
    bad = await _install(
        api, {"collections": {"nope": {"action": "use_existing"}, "shop_orders": {"action": "install_as"}}}
    )
    assert bad.status_code == 422, bad.text
    assert {e["code"] for e in bad.json()["errors"]} == {"unknown_collection", "invalid_key"}
    taken = await _install(api, {"collections": {"shop_orders": {"action": "install_as", "key": "shop_orders_2"}}})
    assert taken.status_code == 409 and taken.json()["code"] == "collection_key_taken"
    assert (await api.get("/api/v1/procedures")).json() == []


async def test_install_uses_the_existing_collection(world: World, offered: None) -> None:
    api, _ = await world.signup()
    mine = await _mine(api)
    installed = await _install(api, {"collections": {"shop_orders": {"action": "use_existing"}}})
    assert installed.status_code == 201, installed.text
    report = installed.json()
    item = next(i for i in report["items"] if i["kind"] == "collection")
    assert item["object_id"] == mine["id"] and item["installed_key"] == "shop_orders"
    assert list(await _collections(api)) == ["shop_orders"]
    assert await _records(api, mine["id"]) == []  # no samples poured into the workspace's own table
    automation_id = next(i["object_id"] for i in report["items"] if i["kind"] == "automation")
    automation = (await api.get(f"/api/v1/automations/{automation_id}")).json()
    assert automation["trigger"]["collection_id"] == mine["id"]
    procedure = next(p for p in (await api.get("/api/v1/procedures")).json() if p["key"] == "ship_order")
    assert procedure["collection_id"] == mine["id"]
    # Uninstalling leaves the workspace's own collection alone.
    removed = await api.post(f"/api/v1/templates/{PACK}/uninstall", {"delete_data": True, "confirm": PACK})
    assert removed.status_code == 200, removed.text
    assert "shop_orders" in await _collections(api)


async def test_install_under_another_key_rewrites_the_references(world: World, offered: None) -> None:
    api, _ = await world.signup(locale="zh-CN")
    mine = await _mine(api)
    choice = {"shop_orders": {"action": "install_as", "key": "shop_orders_2"}}
    installed = await _install(api, {"collections": choice})
    assert installed.status_code == 201, installed.text
    report = installed.json()
    collections = await _collections(api)
    assert set(collections) == {"shop_orders", "shop_orders_2"}
    new = collections["shop_orders_2"]
    assert new["name"] == "店铺订单" and new["id"] != mine["id"]
    item = next(i for i in report["items"] if i["kind"] == "collection")
    assert item["object_id"] == new["id"] and item["installed_key"] == "shop_orders_2"
    automation_id = next(i["object_id"] for i in report["items"] if i["kind"] == "automation")
    automation = (await api.get(f"/api/v1/automations/{automation_id}")).json()
    assert automation["trigger"]["collection_id"] == new["id"]
    procedure = next(p for p in (await api.get("/api/v1/procedures")).json() if p["key"] == "ship_order")
    assert procedure["collection_id"] == new["id"]
    assert [r["values"]["order_no"] for r in await _records(api, new["id"])] == ["T-0001"]
    assert await _records(api, mine["id"]) == []


def test_references_by_key_follow_a_new_key() -> None:
    keys = {"orders": "orders_2"}
    data = {
        "fields": [{"key": "o", "type": "relation", "target_collection": "orders"}],
        "steps": [{"action": {"collection": "'orders'", "other": "orders"}}, {"collection": "customers"}],
    }
    assert rekey(data, keys) == {
        "fields": [{"key": "o", "type": "relation", "target_collection": "orders_2"}],
        "steps": [{"action": {"collection": "'orders_2'", "other": "orders"}}, {"collection": "customers"}],
    }
    owners = {"owner": {"kind": "member", "user_id": "@role:qc"}, "to": ["@role:qc", "@role:boss", "owner"]}
    assert vacate(owners, frozenset({"qc"})) == {
        "owner": {"kind": "vacant", "role": "qc"},
        "to": ["@role:boss", "owner"],
    }


async def test_collections_archive_restore_and_take_a_new_key(world: World) -> None:
    api, _ = await world.signup()
    customers = (
        await api.post(
            "/api/v1/collections",
            {"key": "customers", "name": "Customers", "fields": [{"key": "name", "label": "Name", "type": "text"}]},
        )
    ).json()
    orders = await api.post(
        "/api/v1/collections",
        {
            "key": "orders",
            "name": "Orders",
            "fields": [
                {"key": "no", "label": "No", "type": "text"},
                {"key": "customer", "label": "Customer", "type": "relation", "target_collection": "customers"},
            ],
        },
    )
    assert orders.status_code == 201, orders.text
    record = await api.post(f"/api/v1/collections/{customers['id']}/records", {"values": {"name": "Li"}})
    assert record.status_code == 201, record.text

    renamed = await api.post(f"/api/v1/collections/{customers['id']}/rename", {"key": "clients"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["key"] == "clients"
    relation = next(f for f in (await _collections(api))["orders"]["fields"] if f["key"] == "customer")
    assert relation["target_collection"] == "clients"
    linked = await api.post(
        f"/api/v1/collections/{orders.json()['id']}/records",
        {"values": {"no": "A1", "customer": record.json()["id"]}},
    )
    assert linked.status_code == 201, linked.text  # the relation still finds its target
    taken = await api.post(f"/api/v1/collections/{customers['id']}/rename", {"key": "orders"})
    assert taken.status_code == 409 and taken.json()["code"] == "collection_key_taken"
    assert taken.json()["errors"][0]["message"] == "orders_2"
    invalid = await api.post(f"/api/v1/collections/{customers['id']}/rename", {"key": "Bad Key"})
    assert invalid.status_code in (400, 422)

    archived = await api.post(f"/api/v1/collections/{customers['id']}/archive")
    assert archived.status_code == 200 and archived.json()["archived_at"] is not None
    assert list(await _collections(api)) == ["orders"]
    assert list(await _collections(api, "true")) == ["clients"]
    assert set(await _collections(api, "all")) == {"clients", "orders"}
    assert [r["values"]["name"] for r in await _records(api, customers["id"])] == ["Li"]  # data kept
    restored = await api.post(f"/api/v1/collections/{customers['id']}/restore")
    assert restored.status_code == 200 and restored.json()["archived_at"] is None
    assert set(await _collections(api)) == {"clients", "orders"}

    member, _ = await world.invite_and_join(api, "manager")
    assert (await member.post(f"/api/v1/collections/{customers['id']}/archive")).status_code == 403


async def test_installed_names_follow_the_workspace_language(world: World, offered: None) -> None:
    chinese, _ = await world.signup(locale="zh-CN")
    english, _ = await world.signup(locale="en")
    for api in (chinese, english):
        assert (await _install(api)).status_code == 201
    await deliver_events()  # publishing installs the default SLA automations
    zh = sorted(a["name"] for a in (await chinese.get("/api/v1/automations")).json())
    en = sorted(a["name"] for a in (await english.get("/api/v1/automations")).json())
    assert zh == ["大额订单发货流程", "时限提醒：打包", "超时升级：打包"]
    assert not [name for name in zh if re.search(r"[A-Za-z]{3,}", name)]
    assert en == ["Big orders start the shipping procedure", "SLA escalation: Pack", "SLA reminder: Pack"]


async def test_unassigned_roles_are_reported_and_never_the_owners(world: World, offered: None) -> None:
    api, body = await world.signup()
    owner = body["user"]["id"]
    installed = await _install(api, {"roles": {"packer": None}})
    assert installed.status_code == 201, installed.text
    report = installed.json()
    assert sorted(report["unassigned_roles"]) == ["checker", "packer"]
    assert all(r["user_id"] is None and r["unassigned"] for r in report["roles"])
    procedure = next(p for p in (await api.get("/api/v1/procedures")).json() if p["key"] == "ship_order")
    versions = (await api.get(f"/api/v1/procedures/{procedure['id']}/versions")).json()
    version = (await api.get(f"/api/v1/procedures/{procedure['id']}/versions/{versions[0]['id']}")).json()
    owners = [s["owner"] for s in version["definition"]["steps"]]
    assert {"kind": "vacant", "role": "packer"} in owners
    assert not [o for o in owners if o.get("user_id") == owner]
    installation = (await api.get(f"/api/v1/templates/{PACK}")).json()
    assert installation["roles"] == {}
    # A run's first step is then assigned to nobody, and the owner cannot claim it.
    orders = (await _collections(api))["shop_orders"]
    record = (await _records(api, orders["id"]))[0]
    run = await api.post("/api/v1/runs", {"procedure_id": procedure["id"], "record_id": record["id"]})
    assert run.status_code == 201, run.text
    step = next(s for s in run.json()["steps"] if s["status"] == "ready")
    assert step["assignee_id"] is None


async def _sample_count(body: dict[str, Any]) -> int:
    async with open_session(uuid.UUID(body["tenant"]["id"])) as db:
        return await records.count_samples(db)


async def test_samples_are_marked_and_removed_in_one_call(world: World, offered: None) -> None:
    api, mine = await world.signup()
    other, theirs_body = await world.signup()
    for each in (api, other):
        assert (await _install(each)).status_code == 201
    orders = (await _collections(api))["shop_orders"]
    own = await api.post(f"/api/v1/collections/{orders['id']}/records", {"values": {"order_no": "R-1", "amount": 5}})
    assert own.status_code == 201 and own.json()["sample"] is False
    listed = await _records(api, orders["id"])
    assert {r["values"]["order_no"]: r["sample"] for r in listed} == {"T-0001": True, "R-1": False}
    removed = await api.post("/api/v1/collections/delete-samples")
    assert removed.status_code == 200 and removed.json() == {"deleted": 1}
    assert [r["values"]["order_no"] for r in await _records(api, orders["id"])] == ["R-1"]
    assert (await api.post("/api/v1/collections/delete-samples")).json() == {"deleted": 0}
    assert (await _sample_count(mine), await _sample_count(theirs_body)) == (0, 1)  # each counts its own
    # The other workspace's samples are its own.
    theirs = (await _collections(other))["shop_orders"]
    assert [r["sample"] for r in await _records(other, theirs["id"])] == [True]


async def test_another_workspace_cannot_touch_these(world: World) -> None:
    api, _ = await world.signup()
    other, _ = await world.signup()
    mine = (
        await api.post(
            "/api/v1/collections",
            {"key": "orders", "name": "Orders", "fields": [{"key": "n", "label": "N", "type": "text"}]},
        )
    ).json()
    for action, body in (("archive", None), ("restore", None), ("rename", {"key": "stolen"})):
        response = await other.post(f"/api/v1/collections/{mine['id']}/{action}", body)
        assert response.status_code == 404, (action, response.text)
    assert (await other.get("/api/v1/collections", params={"archived": "all"})).json() == []
    assert list(await _collections(api)) == ["orders"]
