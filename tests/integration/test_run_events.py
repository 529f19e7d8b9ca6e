"""What run events carry: the step timers' events name the run and its record (so an automation's
notice can say which run is late), an action step's input can read the linked record's id, and
every event a workspace's work emits matches its payload in the catalog (services.events)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

import dramatiq
from sqlalchemy import select

from services import events
from services.automation import service as automations
from services.db import open_session
from services.outbox.models import OutboxEvent
from services.scheduler import service as scheduler
from tests.conftest import Api, World, deliver_events
from tests.integration.test_runs import (
    EXCEPTION_FLOW,
    ORDER_FLOW,
    STARTER,
    act,
    events_of,
    open_step,
    orders_collection,
    publish,
    start,
)

DUE_STEP: dict[str, Any] = {
    "kind": "task",
    "key": "pack",
    "title": "Pack",
    "owner": STARTER,
    "due": {"within": {"hours": 4, "business": False}, "remind_before": {"hours": 1, "business": False}},
}


async def _record(api: Api, collection_id: str) -> str:
    created = await api.post(f"/api/v1/collections/{collection_id}/records", {"values": {"status": "new"}})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def _tenant_events(tenant_id: uuid.UUID) -> list[OutboxEvent]:
    async with open_session(system=True) as db:
        rows = await db.scalars(select(OutboxEvent).where(OutboxEvent.tenant_id == tenant_id))
        return list(rows.all())


def _catalog_problems(rows: list[OutboxEvent]) -> list[str]:
    return [f"{r.type}: {p}" for r in rows if (p := events.payload_problem(r.type, r.payload)) is not None]


async def test_step_timer_events_name_the_run_and_its_record(world: World) -> None:
    owner, body = await world.signup()
    tenant_id = uuid.UUID(body["tenant"]["id"])
    collection_id = await orders_collection(owner)
    record_id = await _record(owner, collection_id)
    procedure_id, _ = await publish(owner, {"start": "pack", "steps": [DUE_STEP]}, collection_id=collection_id)
    run = await start(owner, procedure_id, record_id=record_id, title="Ship SO-42")
    unlinked_id, _ = await publish(owner, {"start": "pack", "steps": [DUE_STEP]})
    unlinked = await start(owner, unlinked_id)
    due_at = datetime.fromisoformat(open_step(run, "pack")["due_at"])

    await scheduler.fire_due(due_at - timedelta(minutes=30))
    (reminder,) = await events_of("step.due_soon", run["id"])
    await scheduler.fire_due(due_at + timedelta(minutes=1))
    (overdue,) = await events_of("step.overdue", run["id"])
    for payload in (reminder, overdue):
        assert payload["run_title"] == "Ship SO-42"
        assert (payload["collection_id"], payload["record_id"]) == (collection_id, record_id)
        assert (payload["step_key"], payload["title"]) == ("pack", "Pack")
        assert events.payload_problem("step.overdue", {k: v for k, v in payload.items() if k != "remind_at"}) is None
    assert events.payload_problem("step.due_soon", reminder) is None
    (alone,) = await events_of("step.overdue", unlinked["id"])
    assert (alone["run_title"], alone["record_id"], alone["collection_id"]) == ("Ship an order", None, None)
    assert _catalog_problems(await _tenant_events(tenant_id)) == []


async def test_an_overdue_notice_names_the_late_run(world: World) -> None:
    owner, _ = await world.signup()
    procedure_id, _ = await publish(owner, {"start": "pack", "steps": [DUE_STEP]})
    # Publishing installs the step's default escalations from the outbox; settle that first so the
    # overdue event meets both automations whatever order the relay would have taken.
    await deliver_events()
    created = await owner.post(
        "/api/v1/automations",
        {
            "name": "Late packing",
            "trigger": {"type": "run_event", "events": ["step.overdue"], "procedure_id": procedure_id},
            "actions": [
                {
                    "kind": "notify",
                    "to": [{"role": "owner"}],
                    "title": {"en": "Late: {{ run_title }} ({{ title }})"},
                    "body": {"en": "{{ step_key }} was due at {{ due_at }}"},
                }
            ],
        },
    )
    assert created.status_code == 201, created.text
    run = await start(owner, procedure_id, title="Ship SO-42")
    due_at = datetime.fromisoformat(open_step(run, "pack")["due_at"])
    await scheduler.fire_due(due_at + timedelta(minutes=1))
    broker = dramatiq.get_broker()
    for _ in range(3):
        await deliver_events()
        await asyncio.to_thread(broker.join, automations.ACTIONS_QUEUE, timeout=30_000)
    # The automation's own words and the default escalation's (the platform's notices of the step,
    # its kinds, come besides); the owner is also a manager, so both reach them.
    told = [n for n in (await owner.get("/api/v1/notifications")).json()["items"] if n["kind"] == "message"]
    assert sorted((n["title"], n["body"]) for n in told) == [
        ("Late: Ship SO-42 (Pack)", f"pack was due at {due_at.isoformat()}"),
        ("Overdue: Pack", f"The step 'Pack' was due at {due_at.isoformat()}."),
    ]


ACTION_ON_RECORD: dict[str, Any] = {
    "start": "invoice",
    "steps": [
        {
            "kind": "action",
            "key": "invoice",
            "title": "Invoice the order",
            "plugin": "messaging",
            "action": "send_email",
            "input": {"record_id": "record.id", "status": "record.status"},
        }
    ],
}


async def test_an_action_step_reads_the_linked_record_id(world: World) -> None:
    owner, _ = await world.signup()
    collection_id = await orders_collection(owner)
    record_id = await _record(owner, collection_id)
    procedure_id, _ = await publish(owner, ACTION_ON_RECORD, collection_id=collection_id)
    run = await start(owner, procedure_id, record_id=record_id)
    (requested,) = await events_of("action.requested", run["id"])
    assert requested["data"]["input"] == {"record_id": record_id, "status": "new"}
    assert requested["record_id"] == record_id

    # Only a procedure linked to a collection has a record to read.
    unlinked = await owner.post(
        "/api/v1/procedures", {"key": f"p_{uuid.uuid4().hex[:8]}", "title": "Invoice", "definition": ACTION_ON_RECORD}
    )
    assert unlinked.status_code == 201, unlinked.text
    refused = await owner.post(
        f"/api/v1/procedures/{unlinked.json()['id']}/versions/{unlinked.json()['draft_version_id']}/publish",
        {"change_note": "first"},
    )
    assert refused.status_code == 422, refused.text
    assert {e["code"] for e in refused.json()["errors"]} == {"no_linked_collection"}


async def test_every_event_of_a_workspace_matches_the_catalog(world: World) -> None:
    owner, body = await world.signup()
    tenant_id = uuid.UUID(body["tenant"]["id"])
    member, _ = await world.invite_and_join(owner, "member")
    collection_id = await orders_collection(owner)
    record_id = await _record(owner, collection_id)
    changed = await owner.patch(f"/api/v1/collections/{collection_id}/records/{record_id}", {"values": {"status": "x"}})
    assert changed.status_code == 200, changed.text
    procedure_id, _ = await publish(owner, ORDER_FLOW, collection_id=collection_id)
    run = await start(owner, procedure_id, record_id=record_id)
    run = await act(member, run, "intake", "complete", {"values": {"amount": 5000, "status": "checked"}})
    run = await act(owner, run, "approve", "reject", {"note": "check"})
    run = await act(member, run, "intake", "complete", {"values": {"amount": 10}})
    run = await act(member, run, "invoice", "claim")
    run = await act(member, run, "invoice", "start")
    comment = await owner.post(f"/api/v1/runs/{run['id']}/comments", {"body": "soon"})
    assert comment.status_code == 201, comment.text
    aborted = await owner.post(f"/api/v1/runs/{run['id']}/abort", {"reason": "cancelled"})
    assert aborted.status_code == 200, aborted.text

    exceptions_id, _ = await publish(owner, EXCEPTION_FLOW)
    other = await start(owner, exceptions_id)
    raised = await member.post(
        f"/api/v1/runs/{other['id']}/exceptions", {"kind": "damaged", "step_id": open_step(other, "deliver")["id"]}
    )
    assert raised.status_code == 201, raised.text
    other = (await owner.get(f"/api/v1/runs/{other['id']}")).json()
    await act(owner, other, "call_customer", "complete", {})
    deleted = await owner.delete(f"/api/v1/collections/{collection_id}/records/{record_id}")
    assert deleted.status_code == 204, deleted.text

    rows = await _tenant_events(tenant_id)
    assert _catalog_problems(rows) == []
    emitted = {r.type for r in rows}
    assert {
        "record.created",
        "record.updated",
        "record.deleted",
        "run.started",
        "run.aborted",
        "run.commented",
        "step.ready",
        "step.assigned",
        "step.started",
        "step.completed",
        "step.rejected",
        "record.update_requested",
        "exception.raised",
        "exception.resolved",
        "member.invited",
        "member.joined",
        "procedure.published",
    } <= emitted
