"""Every name people type, in every service, refuses control and bidirectional-override characters
(a name that displays as something else), listing each place at once; nothing is half-saved."""

from __future__ import annotations

from typing import Any

from tests.conftest import World

RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: "Refund\u202eexe.pdf" shows as "Refundfdp.exe"
BELL = "\x07"


def problems(response: Any) -> set[tuple[str, str]]:
    assert response.status_code == 422, response.text
    return {(e["pointer"], e["code"]) for e in response.json()["errors"]}


async def test_collection_procedure_automation_run_and_calendar_names_refuse_hidden_characters(world: World) -> None:
    api, body = await world.signup()
    me = body["user"]["id"]

    collection = await api.post(
        "/api/v1/collections",
        {
            "key": "orders",
            "name": f"Orders{RLO}",
            "fields": [
                {"key": "code", "label": f"Code{BELL}", "type": "text"},
                {"key": "qty", "label": "Qty", "type": "number"},
            ],
        },
    )
    assert problems(collection) == {("/name", "invalid_characters"), ("/fields/0/label", "invalid_characters")}
    assert (await api.get("/api/v1/collections")).json() == []

    created = await api.post(
        "/api/v1/collections",
        {"key": "orders", "name": " Orders ", "fields": [{"key": "code", "label": "Code", "type": "text"}]},
    )
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "Orders"
    collection_id = created.json()["id"]
    renamed = await api.patch(f"/api/v1/collections/{collection_id}", {"name": f"Bad{RLO}name"})
    assert problems(renamed) == {("/name", "invalid_characters")}
    assert (await api.get(f"/api/v1/collections/{collection_id}")).json()["name"] == "Orders"

    step = {"kind": "task", "key": "pack", "title": f"Pack{RLO}", "owner": {"kind": "starter"}}
    procedure = await api.post(
        "/api/v1/procedures",
        {"key": "ship", "title": f"Ship{BELL}", "definition": {"start": "pack", "steps": [step]}},
    )
    assert problems(procedure) == {("/title", "invalid_characters")}
    procedure = await api.post(
        "/api/v1/procedures", {"key": "ship", "title": "Ship", "definition": {"start": "pack", "steps": [step]}}
    )
    assert procedure.status_code == 201, procedure.text
    procedure_id, version_id = procedure.json()["id"], procedure.json()["draft_version_id"]
    retitled = await api.patch(f"/api/v1/procedures/{procedure_id}", {"title": f"Ship{RLO}"})
    assert problems(retitled) == {("/title", "invalid_characters")}
    publish = f"/api/v1/procedures/{procedure_id}/versions/{version_id}/publish"
    refused = await api.post(publish, {"change_note": "first"})
    assert ("/steps/0/title", "invalid_characters") in problems(refused)
    fixed = {"start": "pack", "steps": [{**step, "title": "Pack"}]}
    draft = f"/api/v1/procedures/{procedure_id}/versions/{version_id}"
    assert (await api.request("PUT", draft, {"definition": fixed})).status_code == 200
    assert (await api.post(publish, {"change_note": "first"})).status_code == 200

    run = await api.post("/api/v1/runs", {"procedure_id": procedure_id, "title": f"Order{RLO}7"})
    assert problems(run) == {("/title", "invalid_characters")}
    assert (await api.get("/api/v1/runs")).json()["items"] == []

    automation = await api.post(
        "/api/v1/automations",
        {
            "name": f"Notify{RLO}",
            "trigger": {"type": "record_event", "collection_id": collection_id, "events": ["created"]},
            "actions": [{"kind": "notify", "to": [me], "title": "new order"}],
        },
    )
    assert ("/name", "invalid_characters") in problems(automation)

    changed = await api.request(
        "PUT", "/api/v1/calendar", {"holidays": [{"date": "2026-10-01", "name": f"National{BELL} Day"}]}
    )
    assert ("/holidays/0/name", "invalid_characters") in problems(changed)
