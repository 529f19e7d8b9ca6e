"""Infinity and NaN have no place in JSON: wherever they could arise (a webhook's mapping, a
number typed into a field or a spreadsheet), the answer is a 4xx naming the problem, the same on
SQLite and PostgreSQL (whose JSONB refuses them), and nothing is stored."""

from __future__ import annotations

from tests.conftest import World
from tests.integration import test_automations as automation_tests
from tests.integration.test_automations import Probe, probe  # noqa: F401
from tests.integration.test_records import csv_bytes, make_collection, pointers, upload
from tests.integration.test_webhooks_inbound import _webhook_automation


async def test_a_webhook_mapping_that_overflows_is_refused_and_logged(world: World) -> None:
    api, _ = await world.signup()
    automation_id, path, _secret = await _webhook_automation(
        api, verify=False, mapping={"total": "payload.qty * payload.price", "gap": "payload.qty - 1e308"}
    )
    sender = (await world.client()).client
    json_headers = {"Content-Type": "application/json"}

    overflow = await sender.post(path, content=b'{"qty": 10, "price": 1e308}', headers=json_headers)
    assert overflow.status_code == 422, overflow.text
    assert overflow.json()["code"] == "not_finite"
    assert [e["code"] for e in overflow.json()["errors"]] == ["not_finite"]
    assert "'total'" in overflow.json()["errors"][0]["message"]

    # JSON has no Infinity or NaN: a payload spelling them, or a number beyond a double, is not JSON.
    for body in (b'{"qty": 1e999, "price": 1}', b'{"qty": NaN, "price": 1}', b'{"qty": -Infinity, "price": 1}'):
        refused = await sender.post(path, content=body, headers=json_headers)
        assert refused.status_code == 400 and refused.json()["code"] == "invalid_json", refused.text

    fine = await sender.post(path, content=b'{"qty": 10, "price": 1e300}', headers=json_headers)
    assert fine.status_code == 202, fine.text
    executions = (await api.get(f"/api/v1/automations/{automation_id}/executions")).json()
    assert [e["id"] for e in executions] == [fine.json()["execution_id"]]
    deliveries = (await api.get(f"/api/v1/automations/{automation_id}/webhook/deliveries")).json()
    assert [(d["status"], d["code"]) for d in deliveries] == [
        ("accepted", None),
        ("refused", "invalid_json"),
        ("refused", "invalid_json"),
        ("refused", "invalid_json"),
        ("refused", "not_finite"),
    ]


async def test_an_expression_cannot_spell_an_infinite_number(world: World) -> None:
    api, _ = await world.signup()
    refused = await api.post(
        "/api/v1/automations",
        {
            "name": "Huge",
            "trigger": {"type": "webhook", "mapping": {"big": "1e999", "ok": "1e308"}},
            "actions": [{"kind": "wait", "duration": {"minutes": 5, "business": False}}],
        },
    )
    assert refused.status_code == 422, refused.text
    assert pointers(refused) == {("/trigger/mapping/big", "invalid_expression")}
    assert "too large" in refused.json()["errors"][0]["message"]


async def test_numbers_that_are_not_finite_never_reach_a_record(world: World) -> None:
    api, _ = await world.signup()
    collection_id = await make_collection(api)
    records = f"/api/v1/collections/{collection_id}/records"
    for body in (b'{"values": {"qty": 1e999}}', b'{"values": {"qty": NaN}}', b'{"values": {"qty": -Infinity}}'):
        refused = await api.client.post(
            records, content=body, headers={"Content-Type": "application/json", "X-CSRF-Token": api.csrf}
        )
        assert 400 <= refused.status_code < 500, refused.text

    rows = [["code", "qty", "amount"], ["A", "inf", ""], ["B", "NaN", ""], ["C", "", "-Infinity CNY"], ["D", "1", ""]]
    imported = await upload(api, collection_id, "numbers.csv", csv_bytes(rows))
    assert imported.status_code == 422, imported.text
    assert pointers(imported) == {
        ("/rows/2/qty", "not_finite"),
        ("/rows/3/qty", "not_finite"),
        ("/rows/4/amount", "not_finite"),
    }
    assert (await api.get(records)).json()["items"] == []


async def test_an_action_answering_infinity_fails_its_execution_and_stores_nothing_of_it(
    world: World,
    probe: Probe,  # noqa: F811
) -> None:
    probe.output = {"total": float("inf"), "rows": [1.5, float("nan")]}
    owner, _ = await world.signup()
    collection = await automation_tests._collection(owner)
    created = await owner.post("/api/v1/automations", automation_tests._record_automation(collection["id"]))
    assert created.status_code == 201, created.text
    records = f"/api/v1/collections/{collection['id']}/records"
    record = (await owner.post(records, {"values": {"status": "new"}})).json()
    await owner.patch(f"{records}/{record['id']}", {"values": {"status": "paid"}})
    await automation_tests.run_automations()
    [execution] = await automation_tests._executions(owner, created.json()["id"])
    assert execution["status"] == "failed", execution
    assert "not finite" in execution["error"]
    assert len(probe.calls) == 1  # refused for good, not retried
    detail = (await owner.get(f"/api/v1/automations/executions/{execution['id']}")).json()
    assert [a["status"] for a in detail["actions"]] == ["failed"]
    assert detail["actions"][0]["output"] in (None, {})
