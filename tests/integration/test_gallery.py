"""The template gallery for a workspace: list and preview packs, install (roles, idempotence,
refusals that leave the workspace untouched, progress), customise-then-upgrade by three-way merge
(dry run, conflicts, runs under way), and uninstall."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.gallery import service as gallery
from tests.conftest import World, deliver_events

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "packs"
PACK = "mini-shop"


def offer(world: World, version: str) -> None:
    """Offer the fixture pack at ``version`` (its directory of the fixtures) as the operator's own."""
    gallery.configure(dataclasses.replace(world.settings, template_packs=(str(FIXTURES / version),)))


@pytest.fixture
def offered(world: World) -> Iterator[None]:
    offer(world, "v1")
    yield
    gallery.configure(world.settings)


async def _install(api: Any, body: dict[str, Any] | None = None) -> Any:
    return await api.post(f"/api/v1/templates/{PACK}/install", body or {})


async def _member(world: World, admin: Any) -> str:
    _, user_id = await world.invite_and_join(admin, "member")
    return user_id


async def _collection(api: Any, key: str) -> dict[str, Any]:
    found = [c for c in (await api.get("/api/v1/collections")).json() if c["key"] == key]
    assert len(found) == 1, found
    return dict(found[0])


async def _procedure(api: Any, key: str) -> dict[str, Any]:
    found = [p for p in (await api.get("/api/v1/procedures")).json() if p["key"] == key]
    assert len(found) == 1, found
    return dict(found[0])


async def _latest_definition(api: Any, procedure_id: str) -> dict[str, Any]:
    versions = (await api.get(f"/api/v1/procedures/{procedure_id}/versions")).json()
    latest = max(versions, key=lambda v: v["number"])
    version = (await api.get(f"/api/v1/procedures/{procedure_id}/versions/{latest['id']}")).json()
    return dict(version["definition"])


async def _start_run(api: Any, procedure_id: str) -> Any:
    orders = await _collection(api, "shop_orders")
    record = (await api.get(f"/api/v1/collections/{orders['id']}/records")).json()["items"][0]
    response = await api.post("/api/v1/runs", {"procedure_id": procedure_id, "record_id": record["id"]})
    assert response.status_code == 201, response.text
    return response


async def _automation(api: Any, installed: dict[str, Any]) -> dict[str, Any]:
    automation_id = next(i["object_id"] for i in installed["items"] if i["kind"] == "automation")
    response = await api.get(f"/api/v1/automations/{automation_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_the_gallery_lists_filters_and_previews_a_pack(world: World, offered: None) -> None:
    api, _ = await world.signup()
    listed = (await api.get("/api/v1/gallery/packs")).json()
    mine = next(p for p in listed if p["id"] == PACK)
    assert mine["version"] == "1.0.0" and mine["publisher"] == "Local" and mine["installed_version"] is None
    assert (mine["procedures"], mine["collections"], mine["automations"]) == (1, 1, 1)
    assert [p["id"] for p in (await api.get("/api/v1/gallery/packs", params={"q": "小店"})).json()] == [PACK]
    assert PACK in [p["id"] for p in (await api.get("/api/v1/gallery/packs?industry=ecommerce")).json()]
    assert PACK not in [p["id"] for p in (await api.get("/api/v1/gallery/packs?industry=clinic")).json()]
    assert PACK not in [p["id"] for p in (await api.get("/api/v1/gallery/packs?plugin=customs")).json()]

    preview = (await api.get(f"/api/v1/gallery/packs/{PACK}?language=en")).json()
    procedure = preview["procedures"][0]
    assert [s["key"] for s in procedure["steps"]] == ["pack", "check", "ship"]
    assert procedure["steps"][0]["owner"] == "Packer" and procedure["steps"][0]["due"] == "4h (business)"
    edges = {(e["source"], e["target"], e["label"]) for e in procedure["edges"]}
    assert ("check", "pack", "rejected") in edges and ("pack", "check", "") in edges
    assert procedure["mermaid"].startswith("flowchart TD") and 'check -->|"rejected"| pack' in procedure["mermaid"]
    assert preview["collections"][0]["fields"][2]["options"] == ["To ship", "Shipped"]
    assert preview["documents"] == ["Packing standard"]
    chinese = (await api.get(f"/api/v1/gallery/packs/{PACK}?language=zh-CN")).json()
    assert chinese["language"] == "zh-CN" and chinese["procedures"][0]["title"] == "订单发货"
    assert (await api.get(f"/api/v1/gallery/packs/{PACK}")).json()["language"] == "en"  # the workspace's
    assert (await api.get("/api/v1/gallery/packs/no-such-pack")).json()["code"] == "template_pack_not_found"
    schema = (await api.get("/api/v1/gallery/schema")).json()
    assert {"Pack", "Collection", "Procedure", "Automation", "Document"} <= set(schema["$defs"])


async def test_install_creates_everything_once_and_maps_roles(world: World, offered: None) -> None:
    api, body = await world.signup(locale="zh-CN")
    packer = await _member(world, api)
    installed = await _install(api, {"roles": {"packer": packer}})
    assert installed.status_code == 201, installed.text
    report = installed.json()
    assert report["changed"] is True and report["language"] == "zh-CN"
    roles = {r["role"]: r for r in report["roles"]}
    assert roles["packer"]["user_id"] == packer and not roles["packer"]["unassigned"]
    # A role mapped to nobody stays unassigned, said so, and is never the owner's.
    assert roles["checker"]["user_id"] is None and roles["checker"]["unassigned"]
    assert report["unassigned_roles"] == ["checker"]
    assert any("checker" in note and "nobody can claim" in note for note in report["notes"])
    assert [p["stage"] for p in report["progress"] if p["event"] == "item"] == [
        "collections",
        "procedures",
        "automations",
        "documents",
        "samples",
    ]

    orders = await _collection(api, "shop_orders")
    assert orders["name"] == "店铺订单"
    records = (await api.get(f"/api/v1/collections/{orders['id']}/records")).json()["items"]
    assert [r["values"]["status"] for r in records] == ["待发货"]
    procedure = await _procedure(api, "ship_order")
    assert procedure["latest_published_version"] == 1 and procedure["owner_id"] == body["user"]["id"]
    definition = await _latest_definition(api, procedure["id"])
    assert definition["steps"][0]["owner"] == {"kind": "member", "user_id": packer}
    assert definition["steps"][1]["owner"] == {"kind": "vacant", "role": "checker"}
    automation = await _automation(api, report)
    assert automation["enabled"] is True
    assert automation["trigger"]["collection_id"] == orders["id"]
    assert automation["actions"][0]["procedure_id"] == procedure["id"]
    document = next(i for i in report["items"] if i["kind"] == "document")
    content = await api.get(f"/api/v1/files/{document['object_id']}/content")
    assert content.status_code == 200 and "易碎品" in content.text

    again = await _install(api, {"roles": {"packer": packer}})
    assert again.status_code == 200, again.text
    assert again.json()["changed"] is False
    assert len((await api.get("/api/v1/procedures")).json()) == 1
    assert len((await api.get(f"/api/v1/collections/{orders['id']}/records")).json()["items"]) == 1
    installations = (await api.get("/api/v1/templates")).json()
    assert [(i["pack_id"], i["version"], i["latest_version"]) for i in installations] == [(PACK, "1.0.0", "1.0.0")]
    listed = (await api.get("/api/v1/gallery/packs")).json()
    assert next(p for p in listed if p["id"] == PACK)["installed_version"] == "1.0.0"


async def test_install_in_english_without_samples(world: World, offered: None) -> None:
    api, _ = await world.signup()
    installed = await _install(api, {"language": "en", "samples": False})
    assert installed.status_code == 201, installed.text
    orders = await _collection(api, "shop_orders")
    assert orders["name"] == "Shop orders"
    assert (await api.get(f"/api/v1/collections/{orders['id']}/records")).json()["items"] == []


async def test_refused_installs_leave_the_workspace_untouched(world: World, offered: None) -> None:
    api, _ = await world.signup()
    taken = await api.post(
        "/api/v1/collections",
        {"key": "shop_orders", "name": "Mine", "fields": [{"key": "code", "label": "Code", "type": "text"}]},
    )
    assert taken.status_code == 201, taken.text
    refused = await _install(api)
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert problem["code"] == "template_name_conflicts"
    assert [(e["pointer"], e["code"]) for e in problem["errors"]] == [
        ("collections/shop_orders.yaml#/key", "collection_key_taken")
    ]
    assert problem["clashes"] == [{"kind": "collection", "key": "shop_orders", "suggested": "shop_orders_2"}]
    bad_roles = await _install(
        api, {"roles": {"packer": "00000000-0000-0000-0000-000000000001", "cook": taken.json()["id"]}}
    )
    assert bad_roles.status_code == 422, bad_roles.text
    assert {e["code"] for e in bad_roles.json()["errors"]} == {"not_a_member", "unknown_role"}
    assert (await api.get("/api/v1/templates")).json() == []
    assert (await api.get("/api/v1/procedures")).json() == []
    assert [c["key"] for c in (await api.get("/api/v1/collections")).json()] == ["shop_orders"]
    assert (await api.get("/api/v1/automations")).json() == []


async def test_members_cannot_install(world: World, offered: None) -> None:
    api, _ = await world.signup()
    member, _ = await world.invite_and_join(api, "manager")
    refused = await _install(member)
    assert refused.status_code == 403, refused.text
    assert (await api.get("/api/v1/templates")).json() == []


async def test_install_streams_its_progress(world: World, offered: None) -> None:
    api, _ = await world.signup()
    response = await api.post(f"/api/v1/templates/{PACK}/install", {}, headers={"accept": gallery.NDJSON})
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith(gallery.NDJSON)
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines[0]["event"] == "started"
    items = [line for line in lines if line["event"] == "item"]
    assert [i["done"] for i in items] == list(range(1, len(items) + 1)) and items[-1]["total"] == len(items)
    assert lines[-1]["event"] == "report" and lines[-1]["report"]["changed"] is True
    assert (await api.get("/api/v1/templates")).json()[0]["pack_id"] == PACK
    # A refusal arrives as the last line, problem+json inside; nothing was kept.
    other, _ = await world.signup()
    await other.post(
        "/api/v1/procedures",
        {
            "key": "ship_order",
            "title": "Mine",
            "definition": {
                "start": "a",
                "steps": [{"kind": "task", "key": "a", "title": "A", "owner": {"kind": "starter"}}],
            },
        },
    )
    refused = await other.post(f"/api/v1/templates/{PACK}/install", {}, headers={"accept": gallery.NDJSON})
    last = json.loads(refused.text.splitlines()[-1])
    assert last["event"] == "problem" and last["problem"]["code"] == "template_name_conflicts"
    assert (await other.get("/api/v1/templates")).json() == []


async def test_customise_then_upgrade_by_three_way_merge(world: World, offered: None) -> None:
    """The story: install 1.0.0, customise (a step renamed, an SLA changed, a field added, a
    condition changed), start a run, then upgrade to 1.1.0 which also changed the SLA and the
    condition, renamed another step, added a step and a field."""
    api, _ = await world.signup(locale="zh-CN")
    assert (await _install(api)).status_code == 201
    procedure = await _procedure(api, "ship_order")
    orders = await _collection(api, "shop_orders")
    installed = (await api.get(f"/api/v1/templates/{PACK}")).json()
    automation = await _automation(api, installed)

    # The workspace customises its procedure in a new version, its collection and its automation.
    draft = await api.post(f"/api/v1/procedures/{procedure['id']}/versions")
    assert draft.status_code == 201, draft.text
    definition = await _latest_definition(api, procedure["id"])
    definition["steps"][0]["due"]["within"]["hours"] = 6  # the pack changes it to 2: a conflict
    definition["steps"][1]["title"] = "主管复核"  # the pack leaves it: kept
    saved = await api.request(
        "PUT", f"/api/v1/procedures/{procedure['id']}/versions/{draft.json()['id']}", json={"definition": definition}
    )
    assert saved.status_code == 200, saved.text
    published = await api.post(
        f"/api/v1/procedures/{procedure['id']}/versions/{draft.json()['id']}/publish", {"change_note": "ours"}
    )
    assert published.status_code == 200, published.text
    fields = [*orders["fields"], {"key": "gift_note", "label": "礼品备注", "type": "text"}]
    altered = await api.patch(f"/api/v1/collections/{orders['id']}", {"fields": fields})
    assert altered.status_code == 200, altered.text
    changed = await api.patch(f"/api/v1/automations/{automation['id']}", {"conditions": ["event.record.amount > 1500"]})
    assert changed.status_code == 200, changed.text
    run = await _start_run(api, procedure["id"])

    offer(world, "v2")
    listed = (await api.get("/api/v1/gallery/packs")).json()
    assert next(p for p in listed if p["id"] == PACK)["upgrade_available"] is True

    dry = await api.post(f"/api/v1/templates/{PACK}/upgrade", {"dry_run": True})
    assert dry.status_code == 200, dry.text
    plan = dry.json()
    assert (plan["from_version"], plan["to_version"], plan["applied"]) == ("1.0.0", "1.1.0", False)
    by_item = {f"{i['kind']}:{i['key']}": i for i in plan["items"]}
    sla = "procedure:ship_order/definition/steps/pack/due/within/hours"
    condition = "automation:big_order_check/conditions"
    assert sorted(plan["unresolved"]) == sorted([sla, condition])
    conflict = next(c for c in by_item["procedure:ship_order"]["conflicts"] if c["id"] == sla)
    assert (conflict["base"], conflict["theirs"], conflict["ours"]) == (4, 6, 2)
    changes = {c["id"] for c in by_item["procedure:ship_order"]["changes"]}
    assert "procedure:ship_order/definition/steps/ship" in changes  # only the pack changed this step
    assert "procedure:ship_order/definition/steps/notify_customer" in changes
    assert "procedure:ship_order/definition/steps/check" in by_item["procedure:ship_order"]["kept"]
    assert "collection:shop_orders/fields/courier" in {c["id"] for c in by_item["collection:shop_orders"]["changes"]}
    assert by_item["document:packing_standard"]["action"] == "recreate"

    # Unresolved conflicts: refused, nothing changed.
    refused = await api.post(f"/api/v1/templates/{PACK}/upgrade", {"dry_run": False})
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "template_merge_conflicts"
    assert {e["pointer"] for e in refused.json()["errors"]} == {sla, condition}
    assert (await api.get(f"/api/v1/templates/{PACK}")).json()["version"] == "1.0.0"
    assert (await _procedure(api, "ship_order"))["latest_published_version"] == 2

    applied = await api.post(
        f"/api/v1/templates/{PACK}/upgrade",
        {"dry_run": False, "resolutions": {sla: "ours", condition: "theirs"}},
    )
    assert applied.status_code == 200, applied.text
    assert applied.json()["applied"] is True and applied.json()["unresolved"] == []

    merged = await _latest_definition(api, procedure["id"])
    steps = {s["key"]: s for s in merged["steps"]}
    assert steps["pack"]["due"]["within"]["hours"] == 2  # resolved: ours
    assert steps["check"]["title"] == "主管复核"  # the workspace's change kept
    assert steps["ship"]["title"] == "发货出库" and steps["ship"]["next"] == "notify_customer"
    assert steps["notify_customer"]["owner"] == {"kind": "vacant", "role": "packer"}  # the role has no member
    assert (await _procedure(api, "ship_order"))["latest_published_version"] == 3
    keys = [f["key"] for f in (await _collection(api, "shop_orders"))["fields"]]
    assert keys == ["order_no", "amount", "status", "gift_note", "courier"]
    assert (await _automation(api, installed))["conditions"] == ["event.record.amount > 1500"]  # resolved: theirs

    # The run under way keeps the version it started on; a new run takes the upgraded one.
    kept = (await api.get(f"/api/v1/runs/{run.json()['id']}")).json()
    assert kept["version_id"] == run.json()["version_id"]
    new_run = await _start_run(api, procedure["id"])
    assert new_run.json()["version_id"] != run.json()["version_id"]

    assert (await api.get(f"/api/v1/templates/{PACK}")).json()["version"] == "1.1.0"
    again = await api.post(f"/api/v1/templates/{PACK}/upgrade", {"dry_run": True})
    assert again.status_code == 409 and again.json()["code"] == "template_up_to_date"


async def test_upgrade_without_customisation_applies_everything(world: World, offered: None) -> None:
    api, _ = await world.signup(locale="zh-CN")
    assert (await _install(api)).status_code == 201
    offer(world, "v2")
    applied = await api.post(f"/api/v1/templates/{PACK}/upgrade", {"dry_run": False})
    assert applied.status_code == 200, applied.text
    assert applied.json()["conflicts"] == 0
    installed = (await api.get(f"/api/v1/templates/{PACK}")).json()
    assert (await _automation(api, installed))["conditions"] == ["event.record.amount > 2000"]
    documents = [i for i in installed["items"] if i["kind"] == "document"]
    content = await api.get(f"/api/v1/files/{documents[0]['object_id']}/content")
    assert "箱内放发货单" in content.text


async def test_uninstall_keeps_data_unless_asked(world: World, offered: None) -> None:
    api, _ = await world.signup()
    assert (await _install(api)).status_code == 201
    procedure = await _procedure(api, "ship_order")
    await _start_run(api, procedure["id"])

    unconfirmed = await api.post(f"/api/v1/templates/{PACK}/uninstall", {"delete_data": True})
    assert unconfirmed.status_code == 422 and unconfirmed.json()["code"] == "confirmation_required"
    removed = await api.post(f"/api/v1/templates/{PACK}/uninstall", {})
    assert removed.status_code == 200, removed.text
    report = removed.json()
    assert {(i["kind"], i["key"]) for i in report["removed"]} == {("automation", "big_order_check")}
    kept = {i["kind"]: i["note"] for i in report["kept"]}
    assert kept["procedure"].startswith("has runs") and kept["collection"] == "holds 1 record(s): kept"
    assert (await api.get("/api/v1/automations")).json() == []
    assert (await api.get("/api/v1/templates")).json() == []
    assert (await api.get(f"/api/v1/templates/{PACK}")).status_code == 404

    # Installed again (the kept names now belong to the workspace): refused until they go.
    assert (await _install(api)).json()["code"] == "template_name_conflicts"


async def test_uninstall_with_delete_data_removes_records(world: World, offered: None) -> None:
    api, _ = await world.signup()
    assert (await _install(api)).status_code == 201
    await deliver_events()  # publishing installed the due step's default SLA escalations
    names = sorted(a["name"] for a in (await api.get("/api/v1/automations")).json())
    assert names == ["Big orders start the shipping procedure", "SLA escalation: Pack", "SLA reminder: Pack"]
    removed = await api.post(f"/api/v1/templates/{PACK}/uninstall", {"delete_data": True, "confirm": PACK})
    assert removed.status_code == 200, removed.text
    assert removed.json()["records_deleted"] == 1
    assert (await api.get("/api/v1/collections")).json() == []
    assert (await api.get("/api/v1/procedures")).json() == []
    assert (await api.get("/api/v1/automations")).json() == []
    # Now installable again from scratch.
    assert (await _install(api)).status_code == 201


async def test_another_workspace_sees_nothing_of_an_install(world: World, offered: None) -> None:
    api, _ = await world.signup()
    other, _ = await world.signup()
    assert (await _install(api)).status_code == 201
    assert (await other.get("/api/v1/templates")).json() == []
    assert (await other.get(f"/api/v1/templates/{PACK}")).status_code == 404
    listed = (await other.get("/api/v1/gallery/packs")).json()
    assert next(p for p in listed if p["id"] == PACK)["installed_version"] is None
    assert (await other.post(f"/api/v1/templates/{PACK}/upgrade", {})).status_code == 404
    assert (await other.post(f"/api/v1/templates/{PACK}/uninstall", {})).status_code == 404
    # Installing the same pack there is its own install.
    assert (await _install(other)).status_code == 201
