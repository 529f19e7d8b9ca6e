"""Default SLA escalations: installed once per due step when a procedure is published; on overdue
they tell the managers, wait, and reassign the step if it is still open."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import dramatiq

from services.automation import escalations
from services.automation import service as automations
from services.db import open_session
from services.scheduler import service as scheduler
from tenants.base import utcnow
from tests.conftest import World, deliver_events

DUE_STEP = {
    "kind": "task",
    "key": "pack",
    "title": "Pack",
    "owner": {"kind": "starter"},
    "due": {"within": {"hours": 2, "business": False}, "remind_before": {"minutes": 30, "business": False}},
}


async def _publish(api: Any, steps: list[dict[str, Any]]) -> str:
    created = await api.post(
        "/api/v1/procedures",
        {"key": f"p_{uuid.uuid4().hex[:8]}", "title": "Ship", "definition": {"start": steps[0]["key"], "steps": steps}},
    )
    assert created.status_code == 201, created.text
    procedure_id = str(created.json()["id"])
    published = await api.post(
        f"/api/v1/procedures/{procedure_id}/versions/{created.json()['draft_version_id']}/publish",
        {"change_note": "v1"},
    )
    assert published.status_code == 200, published.text
    await deliver_events()
    return procedure_id


async def _escalations(api: Any, procedure_id: str) -> list[dict[str, Any]]:
    listed = (await api.get("/api/v1/automations")).json()
    return [a for a in listed if a["trigger"].get("procedure_id") == procedure_id]


async def _run_actions() -> None:
    broker = dramatiq.get_broker()
    for _ in range(5):
        await deliver_events()
        await asyncio.to_thread(broker.join, automations.ACTIONS_QUEUE, timeout=30_000)


async def test_installed_once_per_due_step(world: World) -> None:
    api, _ = await world.signup()
    plain = await _publish(api, [{"kind": "task", "key": "a", "title": "A", "owner": {"kind": "starter"}}])
    assert await _escalations(api, plain) == []
    procedure_id = await _publish(api, [DUE_STEP])
    installed = await _escalations(api, procedure_id)
    assert sorted(a["name"] for a in installed) == ["SLA escalation: Pack", "SLA reminder: Pack"]
    assert {a["trigger"]["step_key"] for a in installed} == {"pack"}
    assert [a["kind"] for a in next(a for a in installed if "escalation" in a["name"])["actions"]] == [
        "notify",
        "wait",
        "assign_step",
    ]
    # Publishing again (and a tenant that deleted one of them) installs nothing more.
    deleted = await api.delete(f"/api/v1/automations/{installed[0]['id']}")
    assert deleted.status_code == 204
    draft = await api.post(f"/api/v1/procedures/{procedure_id}/versions")
    assert draft.status_code == 201, draft.text
    republished = await api.post(
        f"/api/v1/procedures/{procedure_id}/versions/{draft.json()['id']}/publish", {"change_note": "v2"}
    )
    assert republished.status_code == 200, republished.text
    await deliver_events()
    assert len(await _escalations(api, procedure_id)) == 1


async def test_overdue_tells_the_managers_then_reassigns_an_open_step(world: World) -> None:
    api, body = await world.signup()
    manager, manager_id = await world.invite_and_join(api, "manager")
    procedure_id = await _publish(api, [DUE_STEP])
    run = await api.post("/api/v1/runs", {"procedure_id": procedure_id})
    assert run.status_code == 201, run.text
    run_id = run.json()["id"]
    assert run.json()["steps"][0]["assignee_id"] == body["user"]["id"]

    later = utcnow() + timedelta(hours=3)
    await scheduler.fire_due(later)  # the step's timer: step.overdue is emitted
    await _run_actions()
    told = (await manager.get("/api/v1/notifications")).json()["items"]
    assert [n["title"] for n in told] == ["Overdue: Pack"]

    # After the wait (4 working hours), the step is still open: it goes to the least loaded manager.
    chain = next(a for a in await _escalations(api, procedure_id) if "escalation" in a["name"])
    (execution,) = (await api.get(f"/api/v1/automations/{chain['id']}/executions")).json()
    assert execution["status"] == "waiting"
    # The resume timer's handler, as the scheduler calls it when the wait is over.
    timer = scheduler.DueTimer(
        tenant_id=uuid.UUID(body["tenant"]["id"]),
        id=uuid.uuid4(),
        kind=automations.RESUME_TIMER,
        key=f"resume:{execution['id']}",
        due_at=utcnow(),
        payload={"execution_id": execution["id"]},
    )
    async with open_session(uuid.UUID(body["tenant"]["id"])) as db:
        await automations.resume_waiting(db, timer)
    await _run_actions()
    detail = (await api.get(f"/api/v1/runs/{run_id}")).json()
    assert detail["steps"][0]["assignee_id"] == manager_id


def test_default_chain_validates_against_its_own_checks() -> None:
    procedure_id = uuid.uuid4()
    chain = escalations.default_automations(procedure_id, "pack", "Pack")
    assert [a.trigger.events for a in chain] == [["step.due_soon"], ["step.overdue"]]  # type: ignore[union-attr]
    assert chain[1].actions[2]["when"] == "step.open"
