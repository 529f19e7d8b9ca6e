"""Another tenant's ids in a request body: tenant B naming tenant A's procedures, versions,
collections, records and members where a body takes an id is refused (404 or 422), and nothing of
either tenant is created or changed.

The path parameters are covered by test_isolation.py; these are the ids a body carries.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Api, World, deliver_events
from tests.isolation import SeededTenant, seed_tenant

REFUSED = (404, 422)


@pytest.fixture
async def two_tenants(world: World) -> tuple[SeededTenant, SeededTenant]:
    return await seed_tenant(world), await seed_tenant(world)


def codes(response: Any) -> set[str]:
    """The problem's code and every listed problem's code."""
    body = response.json()
    return {body.get("code")} | {e.get("code") for e in body.get("errors") or []}


async def runs_of(api: Api) -> list[dict[str, Any]]:
    listed = await api.get("/api/v1/runs")
    assert listed.status_code == 200, listed.text
    return list(listed.json()["items"])


async def run_detail(api: Api, run_id: str) -> dict[str, Any]:
    answer = await api.get(f"/api/v1/runs/{run_id}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def procedures_of(api: Api) -> list[dict[str, Any]]:
    listed = await api.get("/api/v1/procedures")
    assert listed.status_code == 200, listed.text
    return list(listed.json())


async def automations_of(api: Api) -> list[dict[str, Any]]:
    listed = await api.get("/api/v1/automations")
    assert listed.status_code == 200, listed.text
    return list(listed.json())


async def test_runs_refuse_another_tenants_procedure_record_version_and_member(two_tenants: Any) -> None:
    a, b = two_tenants
    a_runs, b_runs = await runs_of(a.api), await runs_of(b.api)
    b_run_before = await run_detail(b.api, b.ids["run_id"])
    a_run_before = await run_detail(a.api, a.ids["run_id"])

    # Starting a run of A's procedure, or of B's own collection-linked procedure about A's record.
    started = await b.api.post("/api/v1/runs", {"procedure_id": a.ids["procedure_id"]})
    assert started.status_code in REFUSED, started.text
    about = await b.api.post("/api/v1/runs", {"procedure_id": b.ids["procedure_id"], "record_id": a.ids["record_id"]})
    assert about.status_code in REFUSED, about.text

    # Moving B's run to A's version, one run or every run of a procedure.
    migrated = await b.api.post(f"/api/v1/runs/{b.ids['run_id']}/migrate", {"version_id": a.ids["version_id"]})
    assert migrated.status_code in REFUSED, migrated.text
    b_procedure = b_run_before["procedure_id"]
    for procedure_id in (b_procedure, a_run_before["procedure_id"]):
        bulk = await b.api.post(
            "/api/v1/runs/migrate", {"procedure_id": procedure_id, "version_id": a.ids["version_id"]}
        )
        assert bulk.status_code in REFUSED, bulk.text

    # Assigning B's open step to A's owner.
    assigned = await b.api.post(
        f"/api/v1/runs/{b.ids['run_id']}/steps/{b.ids['step_id']}/assign", {"user_id": a.ids["user_id"]}
    )
    assert assigned.status_code in REFUSED, assigned.text
    assert "not_a_member" in codes(assigned) or assigned.status_code == 404

    assert await runs_of(b.api) == b_runs
    assert await runs_of(a.api) == a_runs
    assert await run_detail(b.api, b.ids["run_id"]) == b_run_before
    assert await run_detail(a.api, a.ids["run_id"]) == a_run_before


def _one_step(owner: dict[str, Any]) -> dict[str, Any]:
    return {"start": "do", "steps": [{"kind": "task", "key": "do", "title": "Do", "owner": owner}]}


async def test_procedures_refuse_another_tenants_collection_owner_member_and_procedure(two_tenants: Any) -> None:
    a, b = two_tenants
    b_procedures, a_procedures = await procedures_of(b.api), await procedures_of(a.api)

    # A procedure linked to A's collection, or owned by A's owner: refused, nothing created.
    for extra in ({"collection_id": a.ids["collection_id"]}, {"owner_id": a.ids["user_id"]}):
        created = await b.api.post(
            "/api/v1/procedures",
            {"key": "borrowed", "title": "Borrowed", "definition": _one_step({"kind": "starter"}), **extra},
        )
        assert created.status_code in REFUSED, created.text
        assert codes(created) & {"collection_not_found", "unknown_member"}, created.text
    assert await procedures_of(b.api) == b_procedures

    # Relinking B's procedure to A's collection, or handing it to A's owner: refused, unchanged.
    path = f"/api/v1/procedures/{b.ids['procedure_id']}"
    before = (await b.api.get(path)).json()
    for patch in ({"collection_id": a.ids["collection_id"]}, {"owner_id": a.ids["user_id"]}):
        patched = await b.api.patch(path, patch)
        assert patched.status_code in REFUSED, patched.text
    assert (await b.api.get(path)).json() == before

    # A definition naming A's owner as a step's owner, or A's procedure as a sub-procedure: a draft
    # may hold it (drafts are checked on publish), but it never publishes, so no run can start.
    definitions = {
        "unknown_member": _one_step({"kind": "member", "user_id": a.ids["user_id"]}),
        "unknown_procedure": {
            "start": "sub",
            "steps": [{"kind": "subprocedure", "key": "sub", "title": "Sub", "procedure_id": a.ids["procedure_id"]}],
        },
    }
    for code, definition in definitions.items():
        draft = await b.api.post("/api/v1/procedures", {"key": code, "title": code, "definition": definition})
        assert draft.status_code == 201, draft.text
        version_path = f"/api/v1/procedures/{draft.json()['id']}/versions/{draft.json()['draft_version_id']}"
        published = await b.api.post(f"{version_path}/publish", {"change_note": "borrowed"})
        assert published.status_code == 422, published.text
        assert code in codes(published), published.text
        assert (await b.api.get(version_path)).json()["status"] == "draft"
        not_runnable = await b.api.post("/api/v1/runs", {"procedure_id": draft.json()["id"]})
        assert not_runnable.status_code == 409, not_runnable.text
    assert await procedures_of(a.api) == a_procedures


async def test_automations_refuse_another_tenants_collection_procedure_and_member(
    world: World, two_tenants: Any
) -> None:
    a, b = two_tenants
    b_automations = await automations_of(b.api)
    a_collection, a_procedure, a_user = a.ids["collection_id"], a.ids["procedure_id"], a.ids["user_id"]
    own_collection = b.ids["collection_id"]
    wait = {"kind": "wait", "duration": {"minutes": 5, "business": False}}
    webhook = {"type": "webhook"}
    borrowed = {
        "trigger on A's collection": {
            "trigger": {"type": "record_event", "collection_id": a_collection, "events": ["created"]},
            "actions": [wait],
        },
        "trigger on A's procedure": {
            "trigger": {"type": "run_event", "events": ["run.started"], "procedure_id": a_procedure},
            "actions": [wait],
        },
        "record in A's collection": {
            "trigger": webhook,
            "actions": [{"kind": "create_record", "collection_id": a_collection, "values": {}}],
        },
        "update in A's collection": {
            "trigger": webhook,
            "actions": [
                {"kind": "update_record", "collection_id": a_collection, "record_id": a.ids["record_id"], "values": {}}
            ],
        },
        "run of A's procedure": {
            "trigger": webhook,
            "actions": [{"kind": "start_run", "procedure_id": a_procedure}],
        },
        "step to A's owner": {
            "trigger": webhook,
            "actions": [
                {"kind": "assign", "run_id": b.ids["run_id"], "step_id": int(b.ids["step_id"]), "user_id": a_user}
            ],
        },
        "notice to A's owner": {
            "trigger": webhook,
            "actions": [{"kind": "notify", "to": [a_user], "title": "Hello"}],
        },
        "owned by A's owner": {"trigger": webhook, "actions": [wait], "owner_id": a_user},
    }
    for name, body in borrowed.items():
        created = await b.api.post("/api/v1/automations", {"name": name, **body})
        assert created.status_code in REFUSED, f"{name}: {created.text}"
    assert await automations_of(b.api) == b_automations

    # Changing B's own automation to act on A's collection: refused, unchanged.
    path = f"/api/v1/automations/{b.ids['automation_id']}"
    before = (await b.api.get(path)).json()
    for patch in (
        {"trigger": {"type": "record_event", "collection_id": a_collection, "events": ["updated"]}},
        {"actions": [{"kind": "create_record", "collection_id": a_collection, "values": {}}]},
    ):
        patched = await b.api.patch(path, patch)
        assert patched.status_code in REFUSED, patched.text
    assert (await b.api.get(path)).json() == before

    # An id that arrives at run time (a webhook's payload) is looked up in B's workspace alone:
    # the execution fails and A's record stays as it was.
    a_record_path = f"/api/v1/collections/{a_collection}/records/{a.ids['record_id']}"
    a_record = (await a.api.get(a_record_path)).json()
    created = await b.api.post(
        "/api/v1/automations",
        {
            "name": "Update what the payload names",
            "trigger": {"type": "webhook", "mapping": {"record_id": "payload.record_id"}},
            "actions": [
                {
                    "kind": "update_record",
                    "collection_id": own_collection,
                    "record_id": "=event.record_id",
                    "values": {"code": "taken"},
                }
            ],
        },
    )
    assert created.status_code == 201, created.text
    rotated = await b.api.post(f"/api/v1/automations/{created.json()['id']}/webhook/rotate")
    url = rotated.json()["url"]
    called = await (await world.client()).client.post(
        url[url.index("/hooks/") :],
        content=json.dumps({"record_id": a.ids["record_id"]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert called.status_code == 202, called.text
    await deliver_events()
    executions = (await b.api.get(f"/api/v1/automations/{created.json()['id']}/executions")).json()
    assert [(e["status"], e["error"].split(":")[0]) for e in executions] == [("failed", "record_not_found")]
    assert (await a.api.get(a_record_path)).json() == a_record
