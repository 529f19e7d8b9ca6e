"""Runs: what people do with procedures, end to end through the API, on SQLite and Postgres."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, delete, event, insert, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from services.audit import service as audit
from services.db import open_session
from services.outbox.models import OutboxEvent
from services.scheduler import service as scheduler
from services.scheduler.models import Timer
from services.sops.calendar import hours
from services.sops.calendar import service as calendar
from services.sops.definition import Duration
from services.sops.engine import ActionSucceeded, Actor
from services.sops.runs import service as runs
from services.sops.runs import state as run_state
from tenants.base import Base, utcnow
from tests.conftest import Api, World, deliver_events

# ---------------------------------------------------------------- helpers


def role(name: str) -> dict[str, Any]:
    return {"kind": "role", "role": name}


STARTER = {"kind": "starter"}


async def publish(
    api: Api, definition: dict[str, Any], *, collection_id: str | None = None, key: str | None = None
) -> tuple[str, str]:
    """Create a procedure with ``definition`` and publish it; returns (procedure_id, version_id)."""
    body: dict[str, Any] = {
        "key": key or f"p_{uuid.uuid4().hex[:10]}",
        "title": "Ship an order",
        "definition": definition,
    }
    if collection_id:
        body["collection_id"] = collection_id
    created = await api.post("/api/v1/procedures", body)
    assert created.status_code == 201, created.text
    procedure = created.json()
    version_id = procedure["draft_version_id"]
    published = await api.post(
        f"/api/v1/procedures/{procedure['id']}/versions/{version_id}/publish", {"change_note": "first"}
    )
    assert published.status_code == 200, published.text
    return procedure["id"], version_id


async def publish_next(api: Api, procedure_id: str, definition: dict[str, Any]) -> str:
    draft = await api.post(f"/api/v1/procedures/{procedure_id}/versions")
    assert draft.status_code == 201, draft.text
    version_id = draft.json()["id"]
    put = await api.request(
        "PUT", f"/api/v1/procedures/{procedure_id}/versions/{version_id}", {"definition": definition}
    )
    assert put.status_code == 200, put.text
    published = await api.post(
        f"/api/v1/procedures/{procedure_id}/versions/{version_id}/publish", {"change_note": "next"}
    )
    assert published.status_code == 200, published.text
    return str(version_id)


async def start(api: Api, procedure_id: str, **extra: Any) -> dict[str, Any]:
    response = await api.post("/api/v1/runs", {"procedure_id": procedure_id, **extra})
    assert response.status_code == 201, response.text
    return dict(response.json())


def open_step(run: dict[str, Any], key: str) -> dict[str, Any]:
    found = [s for s in run["steps"] if s["key"] == key and s["status"] in ("ready", "in_progress")]
    assert len(found) == 1, (key, run["steps"])
    return dict(found[0])


async def act(api: Api, run: dict[str, Any], key: str, verb: str, body: Any = None, status: int = 200) -> Any:
    step = open_step(run, key)
    response = await api.post(f"/api/v1/runs/{run['id']}/steps/{step['id']}/{verb}", body)
    assert response.status_code == status, response.text
    return response.json()


async def upload(api: Api, name: str = "photo.jpg") -> str:
    response = await api.client.post(
        "/api/v1/files",
        files={"file": (name, b"\xff\xd8\xff fake jpeg", "image/jpeg")},
        headers={"X-CSRF-Token": api.csrf or ""},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def events_of(type_: str, run_id: str) -> list[dict[str, Any]]:
    async with open_session(system=True) as db:
        rows = (await db.scalars(select(OutboxEvent).where(OutboxEvent.type == type_))).all()
        return [r.payload for r in rows if r.payload.get("run_id") == run_id]


ORDER_FLOW: dict[str, Any] = {
    "start": "intake",
    "steps": [
        {
            "kind": "form",
            "key": "intake",
            "title": "Take the order",
            "owner": role("member"),
            "fields": [
                {"key": "amount", "label": "Amount", "type": "number", "required": True},
                {"key": "status", "label": "Status", "type": "text", "target": "record"},
            ],
            "next": "route",
        },
        {
            "kind": "decision",
            "key": "route",
            "title": "Large order?",
            "branches": [{"when": "data.amount > 1000", "next": "approve"}],
            "default": "prepare",
        },
        {
            "kind": "approval",
            "key": "approve",
            "title": "Approve a large order",
            "owner": role("manager"),
            "on_reject": {"goto": "intake"},
            "next": "prepare",
        },
        {"kind": "parallel", "key": "prepare", "title": "Prepare", "branches": ["pack", "invoice"], "join": "ready"},
        {
            "kind": "task",
            "key": "pack",
            "title": "Pack and weigh",
            "owner": STARTER,
            "evidence": {"note": True, "value": {"label": "Weight", "target": 5, "tolerance": 0.5, "unit": "kg"}},
            "next": "ready",
        },
        {
            "kind": "task",
            "key": "invoice",
            "title": "Issue the invoice",
            "owner": role("member"),
            "evidence": {"file": True},
            "next": "ready",
        },
        {"kind": "join", "key": "ready", "title": "Ready", "next": "survey"},
        {"kind": "task", "key": "survey", "title": "Ask for feedback", "owner": STARTER, "optional": True},
    ],
}


async def orders_collection(api: Api) -> str:
    response = await api.post(
        "/api/v1/collections",
        {
            "key": f"orders_{uuid.uuid4().hex[:6]}",
            "name": "Orders",
            "fields": [{"key": "status", "label": "Status", "type": "text"}],
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


# ---------------------------------------------------------------- the whole story


async def test_a_realistic_run_from_start_to_finish(world: World) -> None:
    owner, body = await world.signup()
    owner_id = body["user"]["id"]
    member, member_id = await world.invite_and_join(owner, "member")
    collection_id = await orders_collection(owner)
    record = await owner.post(f"/api/v1/collections/{collection_id}/records", {"values": {"status": "new"}})
    assert record.status_code == 201, record.text
    record_id = record.json()["id"]
    procedure_id, _ = await publish(owner, ORDER_FLOW, collection_id=collection_id)

    # A linked procedure needs its record; every problem of the input is listed.
    missing = await owner.post("/api/v1/runs", {"procedure_id": procedure_id, "data": {"nope": 1}})
    assert missing.status_code == 422
    assert {e["pointer"] for e in missing.json()["errors"]} == {"/record_id", "/data/nope"}

    run = await start(owner, procedure_id, record_id=record_id)
    assert run["status"] == "running" and run["record_id"] == record_id
    intake = open_step(run, "intake")
    assert intake["assignee_id"] is None and intake["role"] == "member"

    # The form: wrong types and a missing required value are all listed, nothing is written.
    bad = await member.post(
        f"/api/v1/runs/{run['id']}/steps/{intake['id']}/complete", {"values": {"status": 12, "colour": "red"}}
    )
    assert bad.status_code == 422, bad.text
    pointers = {e["pointer"] for e in bad.json()["errors"]}
    assert {"/values/amount", "/values/status", "/values/colour"} <= pointers

    run = await act(member, run, "intake", "complete", {"values": {"amount": 5000, "status": "checked"}})
    assert run["data"]["amount"] == 5000
    stored = await owner.get(f"/api/v1/collections/{collection_id}/records/{record_id}")
    assert stored.json()["values"]["status"] == "checked"  # the form wrote into the linked record

    # The decision took the large-order branch: the approval waits for a manager; a member may not vote.
    await act(member, run, "approve", "approve", {}, status=403)
    run = await act(owner, run, "approve", "reject", {"note": "check the amount"})
    assert [s["status"] for s in run["steps"] if s["key"] == "approve"] == ["done"]
    run = await act(member, run, "intake", "complete", {"values": {"amount": 4800}})
    run = await act(owner, run, "approve", "approve", {"note": "fine"})

    # Parallel: packing (the starter's) and invoicing (claimable by members) are both open.
    pack, invoice = open_step(run, "pack"), open_step(run, "invoice")
    assert pack["assignee_id"] == owner_id and invoice["assignee_id"] is None
    await act(member, run, "pack", "complete", {"evidence": {"note": "x", "value": 5}}, status=403)

    # Evidence: everything missing is listed at once.
    denied = await owner.post(f"/api/v1/runs/{run['id']}/steps/{pack['id']}/complete", {"evidence": {"value": 7.5}})
    assert denied.status_code == 422, denied.text
    assert {(e["pointer"], e["code"]) for e in denied.json()["errors"]} == {
        ("/evidence/note", "required"),
        ("/evidence/value", "out_of_range"),
    }
    ghost = str(uuid.uuid4())
    unknown_file = await member.post(
        f"/api/v1/runs/{run['id']}/steps/{invoice['id']}/complete", {"evidence": {"files": [ghost]}}
    )
    assert unknown_file.status_code == 422
    assert unknown_file.json()["errors"][0]["code"] == "file_not_found"

    run = await act(owner, run, "pack", "complete", {"evidence": {"note": "2 boxes", "value": 5.2}})
    run = await act(member, run, "invoice", "claim")
    assert open_step(run, "invoice")["assignee_id"] == member_id
    run = await act(member, run, "invoice", "start")
    assert open_step(run, "invoice")["status"] == "in_progress"
    file_id = await upload(member)
    run = await act(member, run, "invoice", "complete", {"evidence": {"files": [file_id]}})

    # The join fired once; the optional survey is skipped, which ends the run.
    assert [s["status"] for s in run["steps"] if s["key"] == "ready"] == ["done"]
    run = await act(owner, run, "survey", "skip")
    assert run["status"] == "completed" and run["finished_at"] is not None
    assert all(s["status"] not in ("ready", "in_progress", "pending") for s in run["steps"])

    # A finished run takes nothing more.
    late = await owner.post(f"/api/v1/runs/{run['id']}/steps/{pack['id']}/complete", {})
    assert late.status_code == 409 and late.json()["code"] == "run_finished"
    again = await owner.post(f"/api/v1/runs/{run['id']}/abort", {})
    assert again.status_code == 409

    # Comments work on finished runs too, with attachments that must exist.
    comment = await member.post(
        f"/api/v1/runs/{run['id']}/comments", {"body": "all good", "step_id": pack["id"], "file_ids": [file_id]}
    )
    assert comment.status_code == 201, comment.text
    bad_comment = await member.post(
        f"/api/v1/runs/{run['id']}/comments", {"body": "x", "step_id": 999, "file_ids": [ghost]}
    )
    assert bad_comment.status_code == 422
    assert {e["pointer"] for e in bad_comment.json()["errors"]} == {"/step_id", "/file_ids/0"}
    listed = await member.get(f"/api/v1/runs/{run['id']}/comments")
    assert [c["body"] for c in listed.json()] == ["all good"]

    # Events went out through the outbox, and the list shows the run.
    assert len(await events_of("run.completed", run["id"])) == 1
    assert {e["step_key"] for e in await events_of("step.completed", run["id"])} >= {"intake", "pack", "invoice"}
    page = await owner.get("/api/v1/runs", params={"procedure_id": procedure_id, "status": "completed"})
    assert [r["id"] for r in page.json()["items"]] == [run["id"]]


ACK_FLOW: dict[str, Any] = {
    "start": "sterilise",
    "steps": [
        {
            "kind": "task",
            "key": "sterilise",
            "title": "Sterilise the instruments",
            "owner": STARTER,
            "requires_acknowledgement": True,
        }
    ],
}


async def test_acknowledgement_is_required_before_completing(world: World) -> None:
    owner, _ = await world.signup()
    procedure_id, version_id = await publish(owner, ACK_FLOW)
    run = await start(owner, procedure_id)
    refused = await act(owner, run, "sterilise", "complete", {}, status=409)
    assert refused["code"] == "acknowledgement_required"
    acknowledged = await owner.post(f"/api/v1/procedures/{procedure_id}/versions/{version_id}/acknowledge")
    assert acknowledged.status_code == 200, acknowledged.text
    run = await act(owner, run, "sterilise", "complete", {})
    assert run["status"] == "completed"


EXCEPTION_FLOW: dict[str, Any] = {
    "start": "deliver",
    "steps": [
        {
            "kind": "task",
            "key": "deliver",
            "title": "Deliver the parcel",
            "owner": role("member"),
            "exceptions": [
                {"key": "damaged", "label": "Parcel damaged", "notify": [STARTER], "fallback": ["call_customer"]},
                {"key": "refused", "label": "Customer refused", "then": "abort"},
            ],
        },
        {"kind": "task", "key": "call_customer", "title": "Call the customer", "owner": STARTER},
    ],
}


async def test_exception_with_fallback_then_resume_and_abort(world: World) -> None:
    owner, _ = await world.signup()
    member, _member_id = await world.invite_and_join(owner, "member")
    procedure_id, _ = await publish(owner, EXCEPTION_FLOW)
    run = await start(owner, procedure_id)
    deliver = open_step(run, "deliver")

    photo = await upload(member)
    raised = await member.post(
        f"/api/v1/runs/{run['id']}/exceptions",
        {"kind": "damaged", "step_id": deliver["id"], "note": "box crushed", "file_ids": [photo]},
    )
    assert raised.status_code == 201, raised.text
    exception = raised.json()
    assert exception["status"] == "open" and exception["file_ids"] == [photo]
    assert len(await events_of("exception.raised", run["id"])) == 1

    run = (await owner.get(f"/api/v1/runs/{run['id']}")).json()
    # The step waits while its exception's fallback runs.
    blocked = await member.post(f"/api/v1/runs/{run['id']}/steps/{deliver['id']}/complete", {})
    assert blocked.status_code == 409 and blocked.json()["code"] == "step_blocked_by_exception"
    run = await act(owner, run, "call_customer", "complete", {})
    assert run["exceptions"][0]["status"] == "resolved" and run["exceptions"][0]["outcome"] == "resume"
    run = await act(member, run, "deliver", "complete", {})
    assert run["status"] == "completed"

    # Without a fallback, an exception waits for a manager (a member who is not notified may not).
    second = await start(owner, procedure_id)
    deliver = open_step(second, "deliver")
    raised = await member.post(f"/api/v1/runs/{second['id']}/exceptions", {"kind": "refused", "step_id": deliver["id"]})
    exception_id = raised.json()["id"]
    unknown = await member.post(f"/api/v1/runs/{second['id']}/exceptions", {"kind": "nope"})
    assert unknown.status_code == 422
    refused = await member.post(f"/api/v1/runs/{second['id']}/exceptions/{exception_id}/resolve", {})
    assert refused.status_code == 403
    resolved = await owner.post(f"/api/v1/runs/{second['id']}/exceptions/{exception_id}/resolve", {})
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["status"] == "aborted"


async def test_abort_needs_a_manager_and_closes_every_step(world: World) -> None:
    owner, _ = await world.signup()
    member, _ = await world.invite_and_join(owner, "member")
    procedure_id, _ = await publish(owner, EXCEPTION_FLOW)
    run = await start(owner, procedure_id)
    assert (await member.post(f"/api/v1/runs/{run['id']}/abort", {})).status_code == 403
    aborted = await owner.post(f"/api/v1/runs/{run['id']}/abort", {"reason": "customer cancelled"})
    assert aborted.status_code == 200, aborted.text
    assert aborted.json()["status"] == "aborted"
    assert all(s["status"] == "failed" for s in aborted.json()["steps"])
    assert len(await events_of("run.aborted", run["id"])) == 1


async def test_assign_and_reassign(world: World) -> None:
    owner, _ = await world.signup()
    member, member_id = await world.invite_and_join(owner, "member")
    procedure_id, _ = await publish(owner, EXCEPTION_FLOW)
    run = await start(owner, procedure_id)
    assert (await act(member, run, "deliver", "assign", {"user_id": member_id}, status=403))["code"] == "role_required"
    stranger = await act(owner, run, "deliver", "assign", {"user_id": str(uuid.uuid4())}, status=422)
    assert stranger["errors"][0]["code"] == "not_a_member"
    run = await act(owner, run, "deliver", "assign", {"user_id": member_id})
    assert open_step(run, "deliver")["assignee_id"] == member_id
    # Assigned to the member, the step is no longer the owner's to complete.
    assert (await act(owner, run, "deliver", "complete", {}, status=403))["code"] == "not_step_owner"
    run = await act(member, run, "deliver", "complete", {})
    assert run["status"] == "completed"


# ---------------------------------------------------------------- concurrency


async def test_concurrent_completion_exactly_one_wins(world: World) -> None:
    owner, _ = await world.signup()
    two_steps = {
        "start": "count",
        "steps": [
            {"kind": "task", "key": "count", "title": "Count the stock", "owner": STARTER, "next": "report"},
            {"kind": "task", "key": "report", "title": "Report", "owner": STARTER},
        ],
    }
    procedure_id, _ = await publish(owner, two_steps)
    for _ in range(3):
        run = await start(owner, procedure_id)
        step = open_step(run, "count")
        path = f"/api/v1/runs/{run['id']}/steps/{step['id']}/complete"
        first, second = await asyncio.gather(owner.post(path, {}), owner.post(path, {}))
        assert sorted([first.status_code, second.status_code]) == [200, 409], (first.text, second.text)
        loser = first if first.status_code == 409 else second
        assert loser.json()["code"] in ("step_conflict", "step_not_open")
        assert len(await events_of("step.completed", run["id"])) == 1
        after = (await owner.get(f"/api/v1/runs/{run['id']}")).json()
        assert [s["key"] for s in after["steps"] if s["status"] == "ready"] == ["report"]


# ---------------------------------------------------------------- my tasks and SLAs


def _task_flow(due_minutes: int | None) -> dict[str, Any]:
    step: dict[str, Any] = {"kind": "task", "key": "check", "title": "Check", "owner": STARTER}
    if due_minutes is not None:
        step["due"] = {"within": {"minutes": due_minutes, "business": False}}
    return {"start": "check", "steps": [step]}


async def test_my_tasks_ordering_filters_and_pages(world: World) -> None:
    owner, _ = await world.signup()
    member, member_id = await world.invite_and_join(owner, "member")
    late_id, _ = await publish(owner, _task_flow(0))
    soon_id, _ = await publish(owner, _task_flow(60))
    later_id, _ = await publish(owner, _task_flow(600))
    never_id, _ = await publish(owner, _task_flow(None))
    claim_id, _ = await publish(
        owner, {"start": "pick", "steps": [{"kind": "task", "key": "pick", "title": "Pick", "owner": role("member")}]}
    )
    never = await start(member, never_id)
    later = await start(member, later_id)
    soon = await start(member, soon_id)
    late = await start(member, late_id)
    claimable = await start(owner, claim_id)
    await start(owner, soon_id)  # the owner's own task: not the member's

    # By default the list holds the steps the member's role may claim too (no due time: last).
    with_claimable = (await member.get("/api/v1/my/tasks")).json()
    assert [t["run_id"] for t in with_claimable["items"]][-1] == claimable["id"]
    assert with_claimable["items"][-1]["assignee_id"] is None

    tasks = (await member.get("/api/v1/my/tasks", params={"include_claimable": "false"})).json()
    assert [t["run_id"] for t in tasks["items"]] == [late["id"], soon["id"], later["id"], never["id"]]
    assert [t["overdue"] for t in tasks["items"]] == [True, False, False, False]
    assert all(t["assignee_id"] == member_id for t in tasks["items"])

    overdue = (await member.get("/api/v1/my/tasks", params={"overdue": "true"})).json()
    assert [t["run_id"] for t in overdue["items"]] == [late["id"]]
    by_procedure = (await member.get("/api/v1/my/tasks", params={"procedure_id": later_id})).json()
    assert [t["run_id"] for t in by_procedure["items"]] == [later["id"]]
    before = (utcnow() + timedelta(minutes=120)).isoformat()
    due_soon = (await member.get("/api/v1/my/tasks", params={"due_before": before})).json()
    assert [t["run_id"] for t in due_soon["items"]] == [late["id"], soon["id"]]

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1, "include_claimable": "false"}
        if cursor:
            params["cursor"] = cursor
        page = (await member.get("/api/v1/my/tasks", params=params)).json()
        seen += [t["run_id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [late["id"], soon["id"], later["id"], never["id"]]
    assert (await member.get("/api/v1/my/tasks", params={"cursor": "garbage"})).status_code == 422


async def run_timers_due(tenant_id: uuid.UUID, now: datetime) -> list[str]:
    """Keys of the tenant's step and escalation timers due at ``now``."""
    async with open_session(tenant_id) as db:
        keys = await db.scalars(
            select(Timer.key)
            .where(Timer.due_at <= now, Timer.kind.in_([runs.STEP_TIMER, runs.ESCALATION_TIMER]))
            .order_by(Timer.key)
        )
        return list(keys)


async def test_overdue_steps_emit_step_overdue_once(world: World) -> None:
    owner, body = await world.signup()
    tenant_id = uuid.UUID(body["tenant"]["id"])
    procedure_id, _ = await publish(owner, _task_flow(60))
    run = await start(owner, procedure_id)
    optional_id, _ = await publish(
        owner,
        {
            "start": "tidy",
            "steps": [
                {
                    "kind": "task",
                    "key": "tidy",
                    "title": "Tidy up",
                    "owner": STARTER,
                    "optional": True,
                    "expires_after": {"hours": 1, "business": False},
                }
            ],
        },
    )
    expiring = await start(owner, optional_id)
    wait_id, _ = await publish(
        owner,
        {
            "start": "cool",
            "steps": [
                {"kind": "wait", "key": "cool", "title": "Let it cool", "duration": {"hours": 2, "business": False}}
            ],
        },
    )
    waiting = await start(owner, wait_id)
    assert waiting["status"] == "running"

    assert await run_timers_due(tenant_id, utcnow()) == []  # nothing is due yet
    later = utcnow() + timedelta(days=1)
    # One timer per step with an SLA moment: the overdue notice, the expiry, the end of the wait.
    assert await run_timers_due(tenant_id, later) == sorted(
        f"step:{r['id']}:{r['steps'][0]['id']}" for r in (run, expiring, waiting)
    )
    await scheduler.fire_due(later)  # every tenant's due timers, each in its own transaction
    assert len(await events_of("step.overdue", run["id"])) == 1
    await scheduler.fire_due(later + timedelta(hours=1))
    assert len(await events_of("step.overdue", run["id"])) == 1
    assert await run_timers_due(tenant_id, later + timedelta(days=365)) == []  # nothing left to do

    expired = (await owner.get(f"/api/v1/runs/{expiring['id']}")).json()
    assert expired["status"] == "completed" and expired["steps"][0]["status"] == "expired"
    waited = (await owner.get(f"/api/v1/runs/{waiting['id']}")).json()
    assert waited["status"] == "completed"
    still = (await owner.get(f"/api/v1/runs/{run['id']}")).json()
    assert still["status"] == "running" and still["steps"][0]["overdue"] is False  # due tomorrow, not yet
    await deliver_events()


# ---------------------------------------------------------------- moving runs to a new version


async def test_migrating_runs_to_a_new_version(world: World) -> None:
    owner, _ = await world.signup()
    member, _ = await world.invite_and_join(owner, "member")
    v1 = {
        "start": "a",
        "steps": [
            {"kind": "task", "key": "a", "title": "A", "owner": STARTER, "next": "b"},
            {"kind": "task", "key": "b", "title": "B", "owner": STARTER},
        ],
    }
    procedure_id, v1_id = await publish(owner, v1)
    run = await start(owner, procedure_id)
    other = await start(owner, procedure_id)
    run = await act(owner, run, "a", "complete", {})  # b is open in this one, a in the other

    v2 = {
        "start": "a",
        "steps": [
            {"kind": "task", "key": "a", "title": "A, done better", "owner": STARTER, "next": "b"},
            {"kind": "task", "key": "b", "title": "B, done better", "owner": STARTER},
        ],
    }
    v2_id = await publish_next(owner, procedure_id, v2)
    assert (await member.post(f"/api/v1/runs/{run['id']}/migrate", {"version_id": v2_id})).status_code == 403
    moved = await owner.post(f"/api/v1/runs/{run['id']}/migrate", {"version_id": v2_id})
    assert moved.status_code == 200, moved.text
    assert moved.json()["version_id"] == v2_id and open_step(moved.json(), "b")["title"] == "B, done better"

    v3 = {"start": "a", "steps": [{"kind": "task", "key": "a", "title": "A only", "owner": STARTER}]}
    v3_id = await publish_next(owner, procedure_id, v3)
    refused = await owner.post(f"/api/v1/runs/{run['id']}/migrate", {"version_id": v3_id})
    assert refused.status_code == 409 and refused.json()["code"] == "migration_refused"
    assert "'b'" in refused.json()["errors"][0]["message"]

    bulk = await owner.post("/api/v1/runs/migrate", {"procedure_id": procedure_id, "version_id": v3_id})
    assert bulk.status_code == 200, bulk.text
    results = {r["run_id"]: r for r in bulk.json()["results"]}
    assert results[other["id"]]["migrated"] is True
    assert results[run["id"]]["migrated"] is False and results[run["id"]]["problems"]
    after = (await owner.get(f"/api/v1/runs/{other['id']}")).json()
    assert after["version_id"] == v3_id
    finished = await act(owner, after, "a", "complete", {})
    assert finished["status"] == "completed"  # v3 has no step b
    assert (await owner.get(f"/api/v1/runs/{run['id']}")).json()["version_id"] == v2_id
    assert v1_id != v2_id


# ---------------------------------------------------------------- the hot query


async def test_my_tasks_is_one_indexed_query_on_postgres(world: World) -> None:
    """With 50,000 step instances over 200 tenants, the plan is an index scan of the caller's rows."""
    if world.backend.name != "postgres":
        pytest.skip("the plan is Postgres's")
    tenant_table, run_table, step_table = (Base.metadata.tables[n] for n in ("tenants", "runs", "step_instances"))
    tenants = [uuid.uuid4() for _ in range(200)]
    users = [uuid.uuid4() for _ in range(10)]
    now = utcnow()
    admin = create_async_engine(world.backend.admin_url, poolclass=NullPool)
    try:
        async with admin.begin() as conn:
            await conn.execute(
                insert(tenant_table),
                [
                    {
                        "id": t,
                        "slug": f"bulk-{t.hex[:12]}",
                        "name": "Bulk",
                        "industry": "general",
                        "timezone": "UTC",
                        "locale": "en",
                        "status": "active",
                        "created_at": now,
                    }
                    for t in tenants
                ],
            )
            run_rows, step_rows = [], []
            for t in tenants:
                for _ in range(5):
                    run_id = uuid.uuid4()
                    run_rows.append(
                        {
                            "tenant_id": t,
                            "id": run_id,
                            "procedure_id": t,
                            "version_id": t,
                            "version_number": 1,
                            "status": "running",
                            "title": "Bulk",
                            "started_at": now,
                            "state": {},
                            "lock_version": 1,
                            "created_at": now,
                            "updated_at": now,
                        }
                    )
                    for step_id in range(1, 51):
                        step_rows.append(
                            {
                                "tenant_id": t,
                                "run_id": run_id,
                                "step_id": step_id,
                                "procedure_id": t,
                                "run_title": "Bulk",
                                "key": "k",
                                "title": "K",
                                "kind": "task",
                                "status": "ready" if step_id % 3 else "done",
                                "optional": False,
                                "assignee_id": users[step_id % len(users)],
                                "due_at": now + timedelta(minutes=step_id),
                                "created_at": now,
                                "updated_at": now,
                            }
                        )
            await conn.execute(insert(run_table), run_rows)
            await conn.execute(insert(step_table), step_rows)
            await conn.execute(text("analyze runs"))
            await conn.execute(text("analyze step_instances"))
        actor = Actor(user_id=users[3], role="member")
        query = runs.my_tasks_query(tenants[7], actor, runs.TaskFilters(), limit=50)
        sql = str(query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))  # type: ignore[no-untyped-call]
        async with open_session(tenants[7]) as db:
            plan = "\n".join(r[0] for r in (await db.execute(text("explain " + sql))).all())
            rows, _ = await runs.my_tasks(db, actor, runs.TaskFilters())
        assert "ix_step_instances_tenant_id_assignee_id_status_due_at" in plan, plan
        assert "Seq Scan on step_instances" not in plan, plan
        assert len(rows) == 5 * 3 and [r.due_at for r in rows] == sorted(r.due_at for r in rows)
    finally:
        async with admin.begin() as conn:
            await conn.execute(delete(tenant_table).where(tenant_table.c.id.in_(tenants)))
        await admin.dispose()


# ---------------------------------------------------------------- owners, sub-procedures, actions


def _owned_by(owner: dict[str, Any], data: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "start": "work",
        "data": data or [],
        "steps": [{"kind": "task", "key": "work", "title": "Work", "owner": owner}],
    }


async def test_owner_rules_round_robin_least_loaded_and_field(world: World) -> None:
    owner, _ = await world.signup()
    _m1, m1_id = await world.invite_and_join(owner, "member")
    _m2, m2_id = await world.invite_and_join(owner, "member")
    members = sorted([m1_id, m2_id])

    robin_id, _ = await publish(owner, _owned_by({"kind": "round_robin", "role": "member"}))
    robin = [open_step(await start(owner, robin_id), "work")["assignee_id"] for _ in range(3)]
    assert robin == [members[0], members[1], members[0]]

    # members[0] now has two open steps, members[1] one: the least loaded is members[1].
    least_id, _ = await publish(owner, _owned_by({"kind": "least_loaded", "role": "member"}))
    assert open_step(await start(owner, least_id), "work")["assignee_id"] == members[1]

    field_id, _ = await publish(
        owner,
        _owned_by({"kind": "field", "field": "data.reviewer"}, [{"key": "reviewer", "type": "user", "label": "Who"}]),
    )
    assert open_step(await start(owner, field_id, data={"reviewer": m2_id}), "work")["assignee_id"] == m2_id
    # Nobody named: the step waits for a manager to assign it.
    assert open_step(await start(owner, field_id), "work")["assignee_id"] is None


async def test_a_sub_procedure_runs_as_a_child_and_resumes_its_parent(world: World) -> None:
    owner, _ = await world.signup()
    child_id, _ = await publish(owner, _owned_by(STARTER))
    parent_id, _ = await publish(
        owner,
        {
            "start": "sub",
            "steps": [
                {
                    "kind": "subprocedure",
                    "key": "sub",
                    "title": "Quality check",
                    "procedure_id": child_id,
                    "next": "end",
                },
                {"kind": "task", "key": "end", "title": "Close", "owner": STARTER},
            ],
        },
    )
    parent = await start(owner, parent_id)
    children = (await owner.get("/api/v1/runs", params={"procedure_id": child_id})).json()["items"]
    assert len(children) == 1 and children[0]["parent_run_id"] == parent["id"]
    child = (await owner.get(f"/api/v1/runs/{children[0]['id']}")).json()
    child = await act(owner, child, "work", "complete", {})
    assert child["status"] == "completed"
    parent = (await owner.get(f"/api/v1/runs/{parent['id']}")).json()
    assert [s["status"] for s in parent["steps"] if s["key"] == "sub"] == ["done"]
    parent = await act(owner, parent, "end", "complete", {})
    assert parent["status"] == "completed"


async def test_an_action_step_asks_the_workers_and_waits(world: World) -> None:
    owner, body = await world.signup()
    procedure_id, _ = await publish(
        owner,
        {
            "start": "notify",
            "steps": [
                {
                    "kind": "action",
                    "key": "notify",
                    "title": "Tell the customer",
                    "plugin": "messaging",
                    "action": "send_email",
                    "input": {"text": "'shipped'"},
                }
            ],
        },
    )
    run = await start(owner, procedure_id)
    assert run["status"] == "running" and run["steps"][0]["status"] == "in_progress"
    requested = await events_of("step.action_requested", run["id"])
    assert len(requested) == 1 and requested[0]["data"]["plugin"] == "messaging"
    async with open_session(uuid.UUID(body["tenant"]["id"])) as db:
        await runs.apply_system_action(
            db,
            uuid.UUID(run["id"]),
            ActionSucceeded(step_id=run["steps"][0]["id"], output={"id": "m-1"}),
            audit_action="run.action_succeeded",
        )
    done = (await owner.get(f"/api/v1/runs/{run['id']}")).json()
    assert done["status"] == "completed"


async def test_the_scheduler_fires_a_step_timer(world: World) -> None:
    owner, _ = await world.signup()
    procedure_id, _ = await publish(owner, _task_flow(0))
    run = await start(owner, procedure_id)
    await asyncio.sleep(0.01)
    await scheduler.fire_due()
    assert len(await events_of("step.overdue", run["id"])) == 1


@contextlib.contextmanager
def statements() -> Iterator[list[str]]:
    """The SQL statements every engine of this process sends while the block runs."""
    sent: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", count)


async def test_step_timers_are_written_only_when_their_moment_changes(world: World) -> None:
    owner, body = await world.signup()
    tenant_id = uuid.UUID(body["tenant"]["id"])
    plain_id, _ = await publish(
        owner,
        {
            "start": "a",
            "steps": [
                {"kind": "task", "key": "a", "title": "A", "owner": STARTER, "next": "b"},
                {"kind": "task", "key": "b", "title": "B", "owner": STARTER},
            ],
        },
    )
    plain = await start(owner, plain_id)
    with statements() as sent:
        plain = await act(owner, plain, "a", "complete", {})
    assert plain["steps"][1]["status"] == "ready"
    assert [s for s in sent if "timers" in s] == []  # no SLA moment before or after: no timer row

    due_id, _ = await publish(owner, _task_flow(60))
    due = await start(owner, due_id)
    key = f"step:{due['id']}:{due['steps'][0]['id']}"
    async with open_session(tenant_id) as db:
        armed = await scheduler.get_timer(db, key)
    assert armed is not None and armed.kind == runs.STEP_TIMER
    assert armed.due_at == datetime.fromisoformat(due["steps"][0]["due_at"])
    with statements() as sent:
        await act(owner, due, "check", "complete", {})
    assert len([s for s in sent if "timers" in s]) == 1  # the completion disarms it, once
    async with open_session(tenant_id) as db:
        assert await scheduler.get_timer(db, key) is None


async def test_a_step_timer_never_waits_for_a_locked_run(world: World) -> None:
    """The scheduler holds the timer row; a request holding the run would then wait for that row:
    the handler takes the run lock without waiting, so the timer is retried after the run is free."""
    if world.backend.name != "postgres":
        pytest.skip("row locks are Postgres's (SQLite has a single writer)")
    owner, body = await world.signup()
    tenant_id = uuid.UUID(body["tenant"]["id"])
    procedure_id, _ = await publish(owner, _task_flow(0))
    run = await start(owner, procedure_id)
    key = f"step:{run['id']}:{run['steps'][0]['id']}"
    async with open_session(tenant_id) as holder:
        await holder.execute(text("SELECT id FROM runs WHERE id = :id FOR UPDATE"), {"id": uuid.UUID(run["id"])})
        # The pass returns at once (no deadlock, no wait) and the timer is pushed back a little.
        await asyncio.wait_for(scheduler.fire_due(utcnow() + timedelta(seconds=1)), timeout=10)
        async with open_session(tenant_id) as db:
            busy = (await db.execute(select(Timer.attempts, Timer.last_error).where(Timer.key == key))).one()
        assert busy.attempts == 1 and busy.last_error.startswith("RunBusy")
        assert await events_of("step.overdue", run["id"]) == []
        # What a request does next with the run held: take the timer row. The scheduler let it go.
        await asyncio.wait_for(
            holder.execute(text("SELECT id FROM timers WHERE key = :key FOR UPDATE"), {"key": key}), timeout=10
        )
    await scheduler.fire_due(utcnow() + timedelta(minutes=10))
    assert len(await events_of("step.overdue", run["id"])) == 1
    async with open_session(tenant_id) as db:
        assert await scheduler.get_timer(db, key) is None


# ---------------------------------------------------------------- escalation, reminders, the tenant's date


def _escalating_flow(escalate_to: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "start": "deliver",
        "steps": [
            {
                "kind": "task",
                "key": "deliver",
                "title": "Deliver the parcel",
                "owner": role("member"),
                "exceptions": [
                    {
                        "key": "stuck",
                        "label": "Parcel stuck at customs",
                        "notify": [STARTER],
                        "escalate_after": {"hours": 2, "business": False},
                        "escalate_to": escalate_to,
                    },
                    {
                        "key": "lost",
                        "label": "Parcel lost",
                        "escalate_after": {"hours": 1},  # working hours
                        "escalate_to": [role("manager")],
                    },
                ],
            }
        ],
    }


async def test_an_unanswered_exception_escalates_once(world: World) -> None:
    owner, body = await world.signup()
    owner_id = body["user"]["id"]
    tenant_id = uuid.UUID(body["tenant"]["id"])
    chief, chief_id = await world.invite_and_join(owner, "member")
    bystander, _ = await world.invite_and_join(owner, "member")
    _manager, manager_id = await world.invite_and_join(owner, "manager")
    flow = _escalating_flow([{"kind": "member", "user_id": chief_id}, role("manager"), STARTER])
    procedure_id, _ = await publish(owner, flow)
    run = await start(owner, procedure_id)
    deliver = open_step(run, "deliver")

    raised = await bystander.post(f"/api/v1/runs/{run['id']}/exceptions", {"kind": "stuck", "step_id": deliver["id"]})
    assert raised.status_code == 201, raised.text
    exception = raised.json()
    raised_at = datetime.fromisoformat(exception["raised_at"])
    escalate_at = datetime.fromisoformat(exception["escalate_at"])
    assert escalate_at == raised_at + timedelta(hours=2) and exception["escalated_at"] is None
    resolve = f"/api/v1/runs/{run['id']}/exceptions/{exception['id']}/resolve"
    # Before it escalates, the people it escalates to are not yet the ones to answer it.
    early = await chief.post(resolve, {})
    assert early.status_code == 403 and early.json()["code"] == "not_notified"

    escalation_key = f"escalate:{run['id']}:{exception['id']}"
    assert await run_timers_due(tenant_id, raised_at + timedelta(hours=1)) == []
    await scheduler.fire_due(raised_at + timedelta(hours=1))
    later = raised_at + timedelta(hours=3)
    assert await run_timers_due(tenant_id, later) == [escalation_key]
    await scheduler.fire_due(later)
    await scheduler.fire_due(later + timedelta(hours=1))  # a second pass finds nothing more to do
    assert await run_timers_due(tenant_id, later + timedelta(days=365)) == []
    escalated = await events_of("exception.escalated", run["id"])
    assert len(escalated) == 1
    event = escalated[0]
    assert event["exception_id"] == exception["id"] and event["data"]["kind"] == "stuck"
    assert event["step_id"] == deliver["id"]
    assert sorted(event["data"]["user_ids"]) == sorted([chief_id, manager_id, owner_id])

    detail = (await owner.get(f"/api/v1/runs/{run['id']}")).json()
    stored = detail["exceptions"][0]
    assert datetime.fromisoformat(stored["escalated_at"]) == later and stored["escalate_at"] is None
    async with open_session(tenant_id) as db:
        trail = await audit.list_events(db, subject_type="run", subject_id=run["id"])
    escalations = [e for e in trail if e.action == "run.exception_escalated"]
    assert len(escalations) == 1 and escalations[0].actor_id is None
    assert escalations[0].after["exception"]["escalated_at"] is not None

    # Now whoever it escalated to answers it; a member it neither notifies nor escalates to may not.
    refused = await bystander.post(resolve, {})
    assert refused.status_code == 403 and refused.json()["code"] == "not_notified"
    resolved = await chief.post(resolve, {})
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["exceptions"][0]["status"] == "resolved"

    # Counted in working hours when the duration says so: one working hour on the tenant's calendar.
    raised = await bystander.post(f"/api/v1/runs/{run['id']}/exceptions", {"kind": "lost", "step_id": deliver["id"]})
    lost = raised.json()
    async with open_session(tenant_id) as db:
        working_time = await calendar.get_calendar(db)
    expected = hours.add_duration(datetime.fromisoformat(lost["raised_at"]), Duration(hours=1), working_time)
    assert datetime.fromisoformat(lost["escalate_at"]) == expected
    # Resolved before its time, it never escalates.
    assert (await owner.post(f"/api/v1/runs/{run['id']}/exceptions/{lost['id']}/resolve", {})).status_code == 200
    await scheduler.fire_due(expected + timedelta(days=30))
    assert len(await events_of("exception.escalated", run["id"])) == 1
    await deliver_events()


def _reminding_flow(within: dict[str, Any], remind_before: dict[str, Any]) -> dict[str, Any]:
    return {
        "start": "check",
        "steps": [
            {
                "kind": "task",
                "key": "check",
                "title": "Check",
                "owner": STARTER,
                "due": {"within": within, "remind_before": remind_before},
            }
        ],
    }


async def test_a_step_reminds_before_it_is_due(world: World) -> None:
    owner, body = await world.signup()
    tenant_id = uuid.UUID(body["tenant"]["id"])
    procedure_id, _ = await publish(
        owner, _reminding_flow({"hours": 4, "business": False}, {"hours": 1, "business": False})
    )
    run = await start(owner, procedure_id)
    late = await start(owner, procedure_id)
    step = open_step(run, "check")
    due_at = datetime.fromisoformat(step["due_at"])
    assert datetime.fromisoformat(step["remind_at"]) == due_at - timedelta(hours=1)

    await scheduler.fire_due(due_at - timedelta(hours=2))
    assert await events_of("step.due_soon", run["id"]) == []
    soon = due_at - timedelta(minutes=30)
    await scheduler.fire_due(soon)
    await scheduler.fire_due(soon + timedelta(minutes=10))
    reminders = await events_of("step.due_soon", run["id"])
    assert len(reminders) == 1 and reminders[0]["step_id"] == step["id"]
    assert datetime.fromisoformat(reminders[0]["due_at"]) == due_at
    assert datetime.fromisoformat(reminders[0]["remind_at"]) == due_at - timedelta(hours=1)
    assert len(await events_of("step.due_soon", late["id"])) == 1  # the other run's step too, once
    assert await events_of("step.overdue", run["id"]) == []
    await scheduler.fire_due(due_at + timedelta(hours=1))
    assert len(await events_of("step.overdue", run["id"])) == 1
    assert len(await events_of("step.due_soon", run["id"])) == 1

    # A timer that fires only after the due time sends the overdue notice, not a late reminder.
    missed = await start(owner, procedure_id)
    missed_due = datetime.fromisoformat(open_step(missed, "check")["due_at"])
    await scheduler.fire_due(missed_due + timedelta(minutes=1))
    assert await events_of("step.due_soon", missed["id"]) == []
    assert len(await events_of("step.overdue", missed["id"])) == 1

    # In working hours, the reminder counts back on the tenant's calendar.
    business_id, _ = await publish(owner, _reminding_flow({"hours": 3}, {"hours": 1}))
    business = open_step(await start(owner, business_id), "check")
    async with open_session(tenant_id) as db:
        working_time = await calendar.get_calendar(db)
    remind_at = datetime.fromisoformat(business["remind_at"])
    assert hours.add_duration(remind_at, Duration(hours=1), working_time) == datetime.fromisoformat(business["due_at"])
    assert remind_at > datetime.fromisoformat(business["ready_at"])
    await deliver_events()


TODAY_FLOW: dict[str, Any] = {
    "start": "when",
    "data": [{"key": "ship_date", "type": "date", "label": "Ship on"}],
    "steps": [
        {
            "kind": "decision",
            "key": "when",
            "title": "Ship today?",
            "branches": [{"when": "data.ship_date == today()", "next": "ship_now"}],
            "default": "ship_later",
        },
        {"kind": "task", "key": "ship_now", "title": "Ship now", "owner": STARTER},
        {"kind": "task", "key": "ship_later", "title": "Ship later", "owner": STARTER},
    ],
}


async def test_today_is_the_tenant_s_date_not_utc_s(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    owner, _ = await world.signup(timezone="Asia/Shanghai")
    procedure_id, _ = await publish(owner, TODAY_FLOW)

    async def branch(now: datetime, ship_date: str) -> str:
        monkeypatch.setattr(run_state, "utcnow", lambda: now)
        run = await start(owner, procedure_id, data={"ship_date": ship_date})
        (step,) = [s for s in run["steps"] if s["status"] == "ready"]
        return str(step["key"])

    # 16:30 UTC on 3 March is 00:30 on 4 March in Shanghai.
    after_midnight = datetime(2025, 3, 3, 16, 30, tzinfo=UTC)
    assert await branch(after_midnight, "2025-03-04") == "ship_now"
    assert await branch(after_midnight, "2025-03-03") == "ship_later"  # UTC's date, not the tenant's
    # 15:30 UTC is 23:30 on 3 March in Shanghai: still the 3rd there.
    before_midnight = datetime(2025, 3, 3, 15, 30, tzinfo=UTC)
    assert await branch(before_midnight, "2025-03-03") == "ship_now"
    assert await branch(before_midnight, "2025-03-04") == "ship_later"
