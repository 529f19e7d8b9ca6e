"""Procedures over the API: versions from draft to published, immutability, diff, acknowledgement, roles."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from services.db import open_session
from services.outbox.models import OutboxEvent
from services.sops.procedures import service
from tenants.errors import Conflict, NotFound
from tests.conftest import Api, World

BASE = "/api/v1/procedures"


def task(key: str, next_key: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "task",
        "key": key,
        "title": key.title(),
        "owner": {"kind": "role", "role": "member"},
        "next": next_key,
        **extra,
    }


def simple_definition() -> dict[str, Any]:
    return {"start": "pick", "steps": [task("pick", "pack"), task("pack")]}


async def create(api: Api, key: str = "fulfil_order", definition: dict[str, Any] | None = None) -> dict[str, Any]:
    response = await api.post(
        BASE,
        {
            "key": key,
            "title": "Fulfil an order",
            "purpose": "Ship every paid order within a day",
            "metric": "orders shipped within 24h",
            "definition": definition or simple_definition(),
        },
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def publish(api: Api, procedure_id: str, version_id: str, note: str = "first release") -> Any:
    return await api.post(f"{BASE}/{procedure_id}/versions/{version_id}/publish", {"change_note": note})


async def test_lifecycle_from_draft_to_published_and_a_new_draft(world: World) -> None:
    api, body = await world.signup()
    created = await create(api)
    procedure_id, v1 = created["id"], created["draft_version_id"]
    assert created["latest_published_version"] is None and created["owner_id"] == body["user"]["id"]

    published = await publish(api, procedure_id, v1)
    assert published.status_code == 200, published.text
    assert published.json()["status"] == "published"
    assert published.json()["published_by"] == body["user"]["id"]

    fetched = (await api.get(f"{BASE}/{procedure_id}")).json()
    assert fetched["latest_published_version"] == 1 and fetched["draft_version_id"] is None

    draft = await api.post(f"{BASE}/{procedure_id}/versions")
    assert draft.status_code == 201, draft.text
    v2 = draft.json()
    assert (v2["number"], v2["status"], v2["based_on_version_id"]) == (2, "draft", v1)
    assert v2["definition"]["steps"][0]["key"] == "pick"

    changed = simple_definition()
    changed["steps"].append(task("ship"))
    changed["steps"][1]["next"] = "ship"
    put = await api.request("PUT", f"{BASE}/{procedure_id}/versions/{v2['id']}", json={"definition": changed})
    assert put.status_code == 200, put.text
    assert [s["key"] for s in put.json()["definition"]["steps"]] == ["pick", "pack", "ship"]
    assert (await publish(api, procedure_id, v2["id"], "ship after packing")).status_code == 200

    versions = (await api.get(f"{BASE}/{procedure_id}/versions")).json()
    assert [(v["number"], v["status"], v["change_note"]) for v in versions] == [
        (2, "published", "ship after packing"),
        (1, "published", "first release"),
    ]
    assert all(v["published_by"] == body["user"]["id"] for v in versions)

    tenant_id = uuid.UUID(body["tenant"]["id"])
    async with open_session(tenant_id) as db:
        current = await service.version_for_run(db, uuid.UUID(procedure_id))
        assert (current.number, current.version_id) == (2, uuid.UUID(v2["id"]))
        assert [s.key for s in current.definition.steps] == ["pick", "pack", "ship"]
        assert (await service.version_by_id(db, uuid.UUID(v1))).number == 1
        events = (await db.scalars(select(OutboxEvent).where(OutboxEvent.type == "procedure.published"))).all()
    assert sorted((e.payload["number"], e.payload["version_id"]) for e in events if e.tenant_id == tenant_id) == [
        (1, v1),
        (2, v2["id"]),
    ]


async def test_published_versions_never_change(world: World) -> None:
    api, _ = await world.signup()
    created = await create(api)
    procedure_id, v1 = created["id"], created["draft_version_id"]
    assert (await publish(api, procedure_id, v1)).status_code == 200

    edit = await api.request("PUT", f"{BASE}/{procedure_id}/versions/{v1}", json={"definition": simple_definition()})
    assert edit.status_code == 409 and edit.json()["code"] == "version_immutable"
    again = await publish(api, procedure_id, v1, "again")
    assert again.status_code == 409 and again.json()["code"] == "version_immutable"

    assert (await api.post(f"{BASE}/{procedure_id}/versions")).status_code == 201
    second = await api.post(f"{BASE}/{procedure_id}/versions")
    assert second.status_code == 409 and second.json()["code"] == "draft_exists"


async def test_a_procedure_is_not_runnable_until_published(world: World) -> None:
    api, body = await world.signup()
    created = await create(api)
    async with open_session(uuid.UUID(body["tenant"]["id"])) as db:
        with pytest.raises(Conflict) as refused:
            await service.version_for_run(db, uuid.UUID(created["id"]))
    assert refused.value.code == "procedure_not_published"
    async with open_session(uuid.UUID(body["tenant"]["id"])) as db:
        with pytest.raises(NotFound):
            await service.version_for_run(db, uuid.uuid4())
        with pytest.raises(NotFound):  # a draft is not a version a run can use
            await service.version_by_id(db, uuid.UUID(created["draft_version_id"]))


async def test_publishing_an_invalid_definition_lists_every_problem_and_changes_nothing(world: World) -> None:
    api, _ = await world.signup()
    created = await create(api)
    procedure_id, v1 = created["id"], created["draft_version_id"]
    broken = {
        "start": "pick",
        "steps": [
            task("pick", "nowhere"),
            task("orphan"),
            {
                "kind": "decision",
                "key": "route",
                "title": "Route",
                "branches": [{"when": "data.weight >", "next": None}],
            },
        ],
    }
    put = await api.request("PUT", f"{BASE}/{procedure_id}/versions/{v1}", json={"definition": broken})
    assert put.status_code == 200, put.text  # a draft may be unfinished

    checked = (await api.get(f"{BASE}/{procedure_id}/versions/{v1}/problems")).json()
    assert checked["valid"] is False

    response = await publish(api, procedure_id, v1)
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "procedure_invalid"
    found = {(e["pointer"], e["code"]) for e in problem["errors"]}
    assert {
        ("/steps/0/next", "unknown_step"),
        ("/steps/1", "unreachable_step"),
        ("/steps/2", "unreachable_step"),
        ("/steps/2/branches/0/when", "invalid_condition"),
    } <= found
    assert found == {(e["pointer"], e["code"]) for e in checked["errors"]}
    version = (await api.get(f"{BASE}/{procedure_id}/versions/{v1}")).json()
    assert version["status"] == "draft" and version["published_at"] is None


async def test_bad_input_lists_every_problem_with_pointers_into_the_definition(world: World) -> None:
    api, _ = await world.signup()
    response = await api.post(
        BASE,
        {
            "key": "bad",
            "title": "Bad",
            "owner_id": str(uuid.uuid4()),
            "collection_id": str(uuid.uuid4()),
            "definition": {
                "start": "a",
                "steps": [
                    {"kind": "task", "key": "a", "title": "A", "owner": {"kind": "role", "role": "boss"}},
                    {"kind": "teleport", "key": "b", "title": "B"},
                ],
            },
        },
    )
    assert response.status_code == 422, response.text
    pointers = {(e["pointer"], e["code"]) for e in response.json()["errors"]}
    assert ("/owner_id", "unknown_member") in pointers
    assert ("/collection_id", "collection_not_found") in pointers
    assert ("/definition/steps/0/owner/role", "invalid_step") in pointers
    assert ("/definition/steps/1/kind", "invalid_step") in pointers
    assert (await api.get(BASE)).json() == []

    await create(api, key="taken")
    again = await api.post(BASE, {"key": "taken", "title": "Again", "definition": simple_definition()})
    assert again.status_code == 409 and again.json()["code"] == "procedure_key_taken"


async def test_diff_between_versions_shows_steps_added_removed_and_changed(world: World) -> None:
    api, _ = await world.signup()
    created = await create(api)
    procedure_id, v1 = created["id"], created["draft_version_id"]
    await publish(api, procedure_id, v1)
    v2 = (await api.post(f"{BASE}/{procedure_id}/versions")).json()["id"]
    changed = {
        "start": "pick",
        "steps": [
            task("pick", "label", instructions={"what": "Pick the items", "how": "", "standard": ""}),
            task("label"),
        ],
    }
    await api.request("PUT", f"{BASE}/{procedure_id}/versions/{v2}", json={"definition": changed})

    diff = (await api.get(f"{BASE}/{procedure_id}/versions/{v2}/diff", params={"against": v1})).json()
    assert (diff["from_version"], diff["to_version"]) == (1, 2)
    assert diff["steps_added"] == ["label"] and diff["steps_removed"] == ["pack"]
    [pick] = diff["steps_changed"]
    assert pick["key"] == "pick"
    assert {(c["path"], c["before"], c["after"]) for c in pick["changes"]} == {
        ("/next", "pack", "label"),
        ("/instructions/what", "", "Pick the items"),
    }
    # Without ?against, the previous version; the other way round, the opposite.
    assert (await api.get(f"{BASE}/{procedure_id}/versions/{v2}/diff")).json() == diff
    back = (await api.get(f"{BASE}/{procedure_id}/versions/{v1}/diff", params={"against": v2})).json()
    assert back["steps_added"] == ["pack"] and back["steps_removed"] == ["label"]


async def test_acknowledgement_of_a_published_version(world: World) -> None:
    owner, body = await world.signup()
    member, member_id = await world.invite_and_join(owner, "member")
    created = await create(owner)
    procedure_id, v1 = created["id"], created["draft_version_id"]
    ack_path = f"{BASE}/{procedure_id}/versions/{v1}/acknowledge"

    draft_ack = await member.post(ack_path)
    assert draft_ack.status_code == 409 and draft_ack.json()["code"] == "version_not_published"
    await publish(owner, procedure_id, v1)
    first = await member.post(ack_path)
    assert first.status_code == 200 and first.json()["user_id"] == member_id
    repeat = await member.post(ack_path)
    assert repeat.json()["acknowledged_at"] == first.json()["acknowledged_at"]

    listing = f"{BASE}/{procedure_id}/versions/{v1}/acknowledgements"
    assert (await member.get(listing)).status_code == 403
    assert [a["user_id"] for a in (await owner.get(listing)).json()] == [member_id]

    async with open_session(uuid.UUID(body["tenant"]["id"])) as db:
        assert await service.has_acknowledged(db, uuid.UUID(member_id), uuid.UUID(v1))
        assert not await service.has_acknowledged(db, uuid.UUID(body["user"]["id"]), uuid.UUID(v1))


async def test_members_read_procedures_but_only_managers_change_them(world: World) -> None:
    owner, _ = await world.signup()
    member, _ = await world.invite_and_join(owner, "member")
    manager, manager_id = await world.invite_and_join(owner, "manager")
    created = await create(owner)
    procedure_id, v1 = created["id"], created["draft_version_id"]

    assert (await member.get(BASE)).json()[0]["id"] == procedure_id
    assert (await member.get(f"{BASE}/{procedure_id}/versions/{v1}")).status_code == 200
    for response in (
        await member.post(BASE, {"key": "mine", "title": "Mine", "definition": simple_definition()}),
        await member.request("PUT", f"{BASE}/{procedure_id}/versions/{v1}", json={"definition": simple_definition()}),
        await member.patch(f"{BASE}/{procedure_id}", {"title": "Renamed"}),
        await publish(member, procedure_id, v1),
        await member.post(f"{BASE}/{procedure_id}/archive"),
    ):
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "role_required"

    assert (await publish(manager, procedure_id, v1)).json()["published_by"] == manager_id
    renamed = await manager.patch(f"{BASE}/{procedure_id}", {"title": "Fulfil a paid order", "metric": None})
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["title"], renamed.json()["metric"]) == ("Fulfil a paid order", None)
    archived = await manager.post(f"{BASE}/{procedure_id}/archive")
    assert archived.json()["archived_at"] is not None
    assert (await owner.get(BASE)).json() == []
    assert [p["id"] for p in (await owner.get(BASE, params={"archived": "true"})).json()] == [procedure_id]
    blocked = await manager.post(f"{BASE}/{procedure_id}/versions")
    assert blocked.status_code == 409 and blocked.json()["code"] == "procedure_archived"


async def test_every_change_is_in_the_audit_trail(world: World) -> None:
    api, body = await world.signup()
    created = await create(api)
    procedure_id, v1 = created["id"], created["draft_version_id"]
    await api.request("PUT", f"{BASE}/{procedure_id}/versions/{v1}", json={"definition": simple_definition()})
    await publish(api, procedure_id, v1)
    await api.post(f"{BASE}/{procedure_id}/versions")
    await api.patch(f"{BASE}/{procedure_id}", {"title": "Fulfil a paid order"})
    await api.post(f"{BASE}/{procedure_id}/archive")
    # Archiving again changes nothing, so it records nothing.
    assert (await api.post(f"{BASE}/{procedure_id}/archive")).status_code == 200

    page = await api.get("/api/v1/audit", params={"subject_type": "procedure", "subject_id": procedure_id})
    events = list(reversed(page.json()["items"]))
    assert [e["action"] for e in events] == [
        "procedure.created",
        "procedure.draft_updated",
        "procedure.published",
        "procedure.draft_created",
        "procedure.updated",
        "procedure.archived",
    ]
    assert all(e["actor_id"] == body["user"]["id"] for e in events)
    published = events[2]
    assert (published["before"], published["after"]["published_version"]) == ({"published_version": None}, 1)
    updated = events[4]
    assert (updated["before"]["title"], updated["after"]["title"]) == ("Fulfil an order", "Fulfil a paid order")


async def test_a_procedure_linked_to_a_collection_reads_and_writes_its_fields(world: World) -> None:
    api, _ = await world.signup()
    collection = await api.post(
        "/api/v1/collections",
        {
            "key": "orders",
            "name": "Orders",
            "fields": [
                {"key": "status", "label": "Status", "type": "select", "options": ["new", "paid", "shipped"]},
                {"key": "promised_on", "label": "Promised on", "type": "date"},
            ],
        },
    )
    assert collection.status_code == 201, collection.text
    decision: dict[str, Any] = {
        "kind": "decision",
        "key": "paid",
        "title": "Paid?",
        "branches": [{"when": "record.status == 'paid'", "next": "ship"}],
    }
    definition = {
        "start": "paid",
        "steps": [
            decision,
            {
                "kind": "form",
                "key": "ship",
                "title": "Ship",
                "owner": {"kind": "role", "role": "member"},
                "due": {"within": {"days": 0}, "relative_to": "record.promised_on"},
                "fields": [{"key": "status", "label": "Status", "type": "select", "target": "record"}],
            },
        ],
    }
    response = await api.post(
        BASE,
        {"key": "ship_orders", "title": "Ship", "collection_id": collection.json()["id"], "definition": definition},
    )
    assert response.status_code == 201, response.text
    procedure_id, v1 = response.json()["id"], response.json()["draft_version_id"]
    assert response.json()["collection_id"] == collection.json()["id"]
    assert (await publish(api, procedure_id, v1)).status_code == 200

    v2 = (await api.post(f"{BASE}/{procedure_id}/versions")).json()["id"]
    decision["branches"][0]["when"] = "record.colour == 'red'"
    await api.request("PUT", f"{BASE}/{procedure_id}/versions/{v2}", json={"definition": definition})
    refused = await publish(api, procedure_id, v2, "by colour")
    assert refused.status_code == 422
    assert [(e["pointer"], e["code"]) for e in refused.json()["errors"]] == [
        ("/steps/0/branches/0/when", "unknown_record_field")
    ]

    unlinked = await api.patch(f"{BASE}/{procedure_id}", {"collection_id": None})
    assert unlinked.json()["collection_id"] is None
    codes = {e["code"] for e in (await api.get(f"{BASE}/{procedure_id}/versions/{v2}/problems")).json()["errors"]}
    assert codes == {"no_linked_collection"}
