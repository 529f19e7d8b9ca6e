"""Automations: saving with every problem listed, matching events, executions exactly once, retries
with backoff, dead letters, manual retry, schedules and their missed fires, history retention."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services import broker
from services.automation import actions, config, executor, slots
from services.automation import service as automations
from services.automation.actions import (
    ActionContext,
    PermanentActionError,
    RetryableActionError,
    ValidationEnv,
)
from services.automation.models import AutomationExecution
from services.db import open_session
from services.scheduler import service as scheduler
from services.settings import Settings, SettingsError
from tenants.errors import FieldProblem
from tests.conftest import World, deliver_events

PROBE = "test_probe"


@dataclass
class Probe:
    """An action kind for tests: fails ``fail_times`` times (retryable or permanent), then succeeds."""

    name: str = PROBE
    time_limit_ms: int = 5_000
    effects_in_db: bool = False  # True: the dispatcher runs it in the event's transaction
    fail_times: int = 0
    permanent: bool = False
    retry_after: float | None = None
    output: dict[str, Any] | None = None  # what it answers, when not its usual echo
    calls: list[ActionContext] = field(default_factory=list)

    def config_problems(self, config: dict[str, Any], pointer: str, env: ValidationEnv) -> list[FieldProblem]:
        if not isinstance(config.get("note", ""), str):
            return [FieldProblem(pointer=f"{pointer}/note", code="invalid_type", message="a note is text")]
        return []

    def queue(self, config: dict[str, Any]) -> str:
        return automations.ACTIONS_QUEUE

    async def run(self, db: AsyncSession, ctx: ActionContext, config: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(ctx)
        if len(self.calls) <= self.fail_times:
            if self.permanent:
                raise PermanentActionError("the partner refused it (400)")
            raise RetryableActionError("the partner is down (503)", retry_after=self.retry_after)
        if self.output is not None:
            return self.output
        return {"note": config.get("note"), "attempt": ctx.attempt, "record_id": ctx.event.get("record_id")}


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> Probe:
    kind = Probe()
    monkeypatch.setitem(actions.ACTION_KINDS, PROBE, kind)
    monkeypatch.setattr(executor, "BACKOFF_BASE_SECONDS", 0.01)
    monkeypatch.setattr(config, "max_attempts", lambda: 3)
    return kind


async def run_automations() -> None:
    """Relay events, let the dispatcher create executions and the executors run them, until quiet."""
    broker = dramatiq.get_broker()
    for _ in range(20):
        published = await deliver_events()
        await asyncio.to_thread(broker.join, automations.ACTIONS_QUEUE, timeout=30_000)
        if not published and not await deliver_events():
            return


async def _collection(api: Any) -> dict[str, Any]:
    response = await api.post(
        "/api/v1/collections",
        {
            "key": f"orders_{uuid.uuid4().hex[:6]}",
            "name": "Orders",
            "fields": [
                {"key": "status", "label": "Status", "type": "text"},
                {"key": "amount", "label": "Amount", "type": "number"},
            ],
        },
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def _record_automation(collection_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Big orders",
        "description": {"zh-CN": "大额订单", "en": "Big orders"},
        "trigger": {"type": "record_event", "collection_id": collection_id, "events": ["updated"]},
        "actions": [{"kind": PROBE, "note": "hello"}],
    }
    body.update(overrides)
    return body


def _record_updated(tenant_id: str, collection_id: str) -> dict[str, Any]:
    """A relayed ``record.updated`` event, as the dispatcher receives it."""
    return {
        "id": str(uuid.uuid4()),
        "type": "record.updated",
        "tenant_id": tenant_id,
        "actor": None,
        "occurred_at": datetime.now(UTC).isoformat(),
        "payload": {"collection_id": collection_id, "record_id": str(uuid.uuid4()), "changed_fields": ["status"]},
    }


async def _executions(api: Any, automation_id: str) -> list[dict[str, Any]]:
    response = await api.get(f"/api/v1/automations/{automation_id}/executions")
    assert response.status_code == 200, response.text
    return list(response.json())


async def test_crud_and_roles(world: World, probe: Probe) -> None:
    owner, body = await world.signup()
    collection = await _collection(owner)
    created = await owner.post("/api/v1/automations", _record_automation(collection["id"]))
    assert created.status_code == 201, created.text
    automation = created.json()
    assert automation["description"] == {"zh-CN": "大额订单", "en": "Big orders"}
    assert automation["owner_id"] == body["user"]["id"]
    assert automation["enabled"] is True

    member, _ = await world.invite_and_join(owner, "member")
    listed = await member.get("/api/v1/automations")
    assert [a["id"] for a in listed.json()] == [automation["id"]]
    refused = await member.post("/api/v1/automations", _record_automation(collection["id"]))
    assert refused.status_code == 403
    assert (await member.post(f"/api/v1/automations/{automation['id']}/disable")).status_code == 403

    patched = await owner.patch(f"/api/v1/automations/{automation['id']}", {"name": "Huge orders"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "Huge orders"
    disabled = await owner.post(f"/api/v1/automations/{automation['id']}/disable")
    assert disabled.json()["enabled"] is False
    enabled = await owner.post(f"/api/v1/automations/{automation['id']}/enable")
    assert enabled.json()["enabled"] is True
    assert (await owner.delete(f"/api/v1/automations/{automation['id']}")).status_code == 204
    assert (await owner.get(f"/api/v1/automations/{automation['id']}")).status_code == 404


async def test_every_problem_is_listed_at_once(world: World, probe: Probe) -> None:
    owner, _ = await world.signup()
    collection = await _collection(owner)
    body = _record_automation(
        collection["id"],
        name=" ",
        owner_id=str(uuid.uuid4()),
        trigger={"type": "record_event", "collection_id": collection["id"], "events": ["updated"], "fields": ["nope"]},
        conditions=["event.record.amount > 100", "event.record.colour == 'red'", "event.record.amount >"],
        actions=[{"kind": "teleport"}, {"note": "no kind"}, {"kind": PROBE, "note": 5}],
    )
    response = await owner.post("/api/v1/automations", body)
    assert response.status_code == 422, response.text
    problems = {(e["pointer"], e["code"]) for e in response.json()["errors"]}
    assert problems == {
        ("/name", "required"),
        ("/owner_id", "not_a_member"),
        ("/trigger/fields/0", "unknown_field"),
        ("/conditions/1", "unknown_name"),
        ("/conditions/2", "invalid_expression"),
        ("/actions/0/kind", "unknown_action"),
        ("/actions/1/kind", "required"),
        ("/actions/2/note", "invalid_type"),
    }

    schedule = await owner.post(
        "/api/v1/automations",
        _record_automation(collection["id"], trigger={"type": "schedule", "cron": "61 * * * *"}, actions=[]),
    )
    assert {(e["pointer"], e["code"]) for e in schedule.json()["errors"]} == {
        ("/trigger/cron", "invalid_cron"),
        ("/actions", "required"),
    }
    unknown = await owner.post(
        "/api/v1/automations",
        _record_automation(
            str(uuid.uuid4()),
            trigger={"type": "run_event", "events": ["step.overdue"], "procedure_id": str(uuid.uuid4())},
            conditions=["event.step_key == 'ship' and event.record.amount > 1"],
        ),
    )
    assert {(e["pointer"], e["code"]) for e in unknown.json()["errors"]} == {
        ("/trigger/procedure_id", "procedure_not_found"),
        ("/conditions/0", "unknown_name"),
    }
    missing_collection = await owner.post("/api/v1/automations", _record_automation(str(uuid.uuid4())))
    assert [e["code"] for e in missing_collection.json()["errors"]] == ["collection_not_found"]
    assert (await owner.get("/api/v1/automations")).json() == []  # nothing half-written


async def test_a_record_update_runs_the_automation_when_its_fields_change_and_conditions_hold(
    world: World, probe: Probe
) -> None:
    owner, _ = await world.signup()
    collection = await _collection(owner)
    created = await owner.post(
        "/api/v1/automations",
        _record_automation(
            collection["id"],
            trigger={
                "type": "record_event",
                "collection_id": collection["id"],
                "events": ["updated"],
                "fields": ["status"],
            },
            conditions=["event.record.amount > 100", "'status' in event.changed_fields"],
        ),
    )
    assert created.status_code == 201, created.text
    automation_id = created.json()["id"]
    records = f"/api/v1/collections/{collection['id']}/records"
    record = (await owner.post(records, {"values": {"status": "new", "amount": 50}})).json()
    await run_automations()
    assert await _executions(owner, automation_id) == []  # a creation is not an update

    await owner.patch(f"{records}/{record['id']}", {"values": {"amount": 500}})
    await run_automations()
    assert await _executions(owner, automation_id) == []  # status did not change

    await owner.patch(f"{records}/{record['id']}", {"values": {"status": "paid", "amount": 50}})
    await run_automations()
    assert await _executions(owner, automation_id) == []  # the amount condition does not hold

    await owner.patch(f"{records}/{record['id']}", {"values": {"status": "shipped", "amount": 200}})
    await run_automations()
    [execution] = await _executions(owner, automation_id)
    assert execution["status"] == "succeeded", execution
    assert len(probe.calls) == 1
    assert probe.calls[0].idempotency_key == f"{execution['id']}:0"
    detail = (await owner.get(f"/api/v1/automations/executions/{execution['id']}")).json()
    assert detail["event"]["type"] == "record.updated"
    assert detail["event"]["record"]["status"] == "shipped"
    assert detail["event"]["changed_fields"] == ["status", "amount"]
    [action] = detail["actions"]
    assert action["status"] == "succeeded"
    assert action["input"] == {"note": "hello"}
    assert action["output"] == {"note": "hello", "attempt": 1, "record_id": record["id"]}
    assert action["duration_ms"] >= 0 and action["attempt"] == 1 and action["error"] is None


async def test_a_redelivered_event_creates_no_second_execution(world: World, probe: Probe) -> None:
    owner, body = await world.signup()
    collection = await _collection(owner)
    automation_id = (await owner.post("/api/v1/automations", _record_automation(collection["id"]))).json()["id"]
    message = _record_updated(body["tenant"]["id"], collection["id"])
    assert await automations.dispatch_events_to_automations([message, message]) == 1  # twice in one batch
    assert await automations.dispatch_events_to_automations([message]) == 0
    await run_automations()
    [execution] = await _executions(owner, automation_id)
    assert execution["status"] == "succeeded"
    assert len(probe.calls) == 1
    # A redelivered step message finds the action done and does nothing.
    tenant_id = uuid.UUID(body["tenant"]["id"])
    assert await automations.run_step(tenant_id, uuid.UUID(execution["id"]), 0) == "skipped"
    assert len(probe.calls) == 1


async def test_the_dispatcher_reads_only_the_events_workspace(world: World, probe: Probe) -> None:
    # The dispatcher reads automations and recipients with Core statements, past the ORM's tenant
    # criteria: their own tenant conditions must keep every workspace apart (on SQLite, with no
    # row-level security behind them, they are all there is).
    _, body_a = await world.signup()
    owner_b, body_b = await world.signup()
    collection_b = await _collection(owner_b)
    automation_b = (await owner_b.post("/api/v1/automations", _record_automation(collection_b["id"]))).json()["id"]
    forged = _record_updated(body_a["tenant"]["id"], collection_b["id"])  # tenant A's event, B's collection
    assert await automations.dispatch_events_to_automations([forged]) == 0
    await run_automations()
    assert await _executions(owner_b, automation_b) == [] and probe.calls == []

    from services.accounts.service import member_locales

    user_a, user_b = uuid.UUID(body_a["user"]["id"]), uuid.UUID(body_b["user"]["id"])
    async with open_session(uuid.UUID(body_a["tenant"]["id"])) as db:
        assert await member_locales(db, {user_a, user_b}) == {user_a: body_a["user"]["locale"]}


@pytest.mark.parametrize("in_db", [False, True], ids=["queued", "inline"])
async def test_retryable_failures_back_off_then_dead_letter_and_a_manager_retries(
    world: World, probe: Probe, in_db: bool
) -> None:
    # In the dispatcher, the first try is rolled back unrecorded; the executor's three are recorded.
    probe.fail_times, probe.effects_in_db = 3 + in_db, in_db
    owner, _ = await world.signup()
    collection = await _collection(owner)
    automation_id = (await owner.post("/api/v1/automations", _record_automation(collection["id"]))).json()["id"]
    records = f"/api/v1/collections/{collection['id']}/records"
    record = (await owner.post(records, {"values": {"status": "new"}})).json()
    await owner.patch(f"{records}/{record['id']}", {"values": {"status": "paid"}})
    await run_automations()
    [execution] = await _executions(owner, automation_id)
    assert execution["status"] == "dead"
    assert "gave up after 3 attempts" in execution["dead_reason"]
    assert "503" in execution["dead_reason"]
    detail = (await owner.get(f"/api/v1/automations/executions/{execution['id']}")).json()
    assert [(a["attempt"], a["status"]) for a in detail["actions"]] == [(1, "retrying"), (2, "retrying"), (3, "dead")]
    assert all("503" in a["error"] for a in detail["actions"])
    assert [c.attempt for c in probe.calls] == [1] * in_db + [1, 2, 3]

    member, _ = await world.invite_and_join(owner, "member")
    assert (await member.post(f"/api/v1/automations/executions/{execution['id']}/retry")).status_code == 403
    retried = await owner.post(f"/api/v1/automations/executions/{execution['id']}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "queued"
    await run_automations()
    done = (await owner.get(f"/api/v1/automations/executions/{execution['id']}")).json()
    assert done["execution"]["status"] == "succeeded"
    assert done["execution"]["dead_reason"] is None
    assert done["actions"][-1]["status"] == "succeeded"
    again = await owner.post(f"/api/v1/automations/executions/{execution['id']}/retry")
    assert again.status_code == 409
    assert again.json()["code"] == "execution_not_retryable"


async def test_in_database_actions_run_with_the_dispatch_and_a_failure_hands_over_to_the_executor(
    world: World, probe: Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, body = await world.signup()
    collection = await _collection(owner)
    me = body["user"]["id"]
    steps = [
        {"kind": "notify", "to": [me], "title": "paid: {{ record_id }}"},
        {"kind": PROBE, "note": "fails twice"},
        {"kind": "notify", "to": [me], "title": "done: {{ record_id }}"},
    ]
    created = await owner.post("/api/v1/automations", _record_automation(collection["id"], actions=steps))
    assert created.status_code == 201, created.text
    automation_id = created.json()["id"]
    records = f"/api/v1/collections/{collection['id']}/records"
    record = (await owner.post(records, {"values": {"status": "new"}})).json()
    await deliver_events()
    # Hold back what the dispatcher sends to the executor, to see what it did on its own.
    held: list[tuple[Any, ...]] = []
    send = broker.send

    def hold(actor_name: str, **message: Any) -> None:
        step = message["kwargs"]
        held.append((step["tenant_id"], uuid.UUID(step["execution_id"]), step["action_index"], actor_name, message))

    monkeypatch.setattr(broker, "send", hold)
    tenant_id = uuid.UUID(body["tenant"]["id"])

    async def titles() -> list[str]:
        return [n["title"] for n in (await owner.get("/api/v1/notifications")).json()["items"]]

    def message() -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "type": "record.updated",
            "tenant_id": str(tenant_id),
            "actor": None,
            "occurred_at": datetime.now(UTC).isoformat(),
            "payload": {"collection_id": collection["id"], "record_id": record["id"], "changed_fields": ["status"]},
        }

    # All in the database: the whole execution commits with the dispatch; nothing is sent.
    probe.effects_in_db = True
    assert await automations.dispatch_events_to_automations([message()]) == 1
    [first] = await _executions(owner, automation_id)
    assert first["status"] == "succeeded" and held == []
    assert (await titles()).count(f"paid: {record['id']}") == 1

    # The probe fails: the dispatcher's transaction, its notification included, is rolled back and
    # the execution left queued at its first action for the executor, which is sent it.
    probe.fail_times, probe.calls = 2, []
    assert await automations.dispatch_events_to_automations([message()]) == 1
    second = next(e for e in await _executions(owner, automation_id) if e["id"] != first["id"])
    detail = (await owner.get(f"/api/v1/automations/executions/{second['id']}")).json()
    assert detail["actions"] == []
    assert detail["execution"]["status"] == "queued" and detail["execution"]["action_index"] == 0
    assert (await titles()).count(f"paid: {record['id']}") == 1
    assert [(args[1], args[2]) for args in held] == [(uuid.UUID(second["id"]), 0)]

    monkeypatch.setattr(broker, "send", send)
    for args in held:
        send(args[3], **args[4])
    await run_automations()
    done = (await owner.get(f"/api/v1/automations/executions/{second['id']}")).json()
    assert done["execution"]["status"] == "succeeded"
    assert [(a["action_index"], a["attempt"], a["status"]) for a in done["actions"]] == [
        (0, 1, "succeeded"),
        (1, 1, "retrying"),
        (1, 2, "succeeded"),
        (2, 1, "succeeded"),
    ]
    assert len(probe.calls) == 3  # the dispatcher's rolled-back try, then the executor's two
    assert (await titles()).count(f"paid: {record['id']}") == 2  # one per execution
    assert (await titles()).count(f"done: {record['id']}") == 2


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    first = [automations.backoff_seconds(1) for _ in range(50)]
    fourth = [automations.backoff_seconds(4) for _ in range(50)]
    assert all(1.0 <= d <= 2.0 for d in first)
    assert all(8.0 <= d <= 16.0 for d in fourth)
    assert len(set(first)) > 1  # jittered
    assert automations.backoff_seconds(1, retry_after=120) >= 120
    assert automations.backoff_seconds(30) <= automations.MAX_BACKOFF_SECONDS


async def test_a_permanent_failure_fails_at_once(world: World, probe: Probe) -> None:
    probe.fail_times, probe.permanent = 1, True
    owner, _ = await world.signup()
    collection = await _collection(owner)
    automation_id = (await owner.post("/api/v1/automations", _record_automation(collection["id"]))).json()["id"]
    records = f"/api/v1/collections/{collection['id']}/records"
    record = (await owner.post(records, {"values": {"status": "new"}})).json()
    await owner.patch(f"{records}/{record['id']}", {"values": {"status": "paid"}})
    await run_automations()
    [execution] = await _executions(owner, automation_id)
    assert execution["status"] == "failed"
    assert "400" in execution["error"]
    assert len(probe.calls) == 1


async def test_a_failing_automation_does_not_stop_another(world: World, probe: Probe) -> None:
    owner, _ = await world.signup()
    collection = await _collection(owner)
    broken = await owner.post(
        "/api/v1/automations",
        _record_automation(collection["id"], name="Broken", conditions=["event.record.status + 1 > 2"]),
    )
    assert broken.status_code == 201, broken.text
    healthy = await owner.post("/api/v1/automations", _record_automation(collection["id"], name="Healthy"))
    records = f"/api/v1/collections/{collection['id']}/records"
    record = (await owner.post(records, {"values": {"status": "new"}})).json()
    await owner.patch(f"{records}/{record['id']}", {"values": {"status": "paid"}})
    await run_automations()
    [failed] = await _executions(owner, broken.json()["id"])
    assert failed["status"] == "failed"
    assert "condition 1" in failed["error"]
    [succeeded] = await _executions(owner, healthy.json()["id"])
    assert succeeded["status"] == "succeeded"
    # Fixing the condition and retrying by hand runs the failed one.
    fixed = await owner.patch(
        f"/api/v1/automations/{broken.json()['id']}", {"conditions": ["event.record.status == 'paid'"]}
    )
    assert fixed.status_code == 200, fixed.text
    assert (await owner.post(f"/api/v1/automations/executions/{failed['id']}/retry")).status_code == 200
    await run_automations()
    [rerun] = await _executions(owner, broken.json()["id"])
    assert rerun["status"] == "succeeded"


async def _timer(tenant_id: uuid.UUID, automation_id: str) -> Any:
    from services.scheduler.models import Timer

    async with open_session(tenant_id) as db:
        return await db.scalar(select(Timer).where(Timer.key == f"cron:{automation_id}"))


async def _fire(tenant_id: uuid.UUID, automation_id: str, due_at: datetime, now: datetime) -> datetime | None:
    timer = scheduler.DueTimer(
        tenant_id=tenant_id,
        id=uuid.uuid4(),
        kind=automations.CRON_TIMER,
        key=f"cron:{automation_id}",
        due_at=due_at,
        payload={"automation_id": automation_id},
    )
    async with open_session(tenant_id) as db:
        return await automations.fire_cron(db, timer, now=now)


async def test_a_schedule_fires_once_per_tick_and_handles_missed_fires_by_policy(world: World, probe: Probe) -> None:
    owner, body = await world.signup()
    tenant_id = uuid.UUID(body["tenant"]["id"])
    every_hour = {"type": "schedule", "cron": "0 * * * *", "missed": "fire_once"}
    created = await owner.post("/api/v1/automations", _record_automation("-", trigger=every_hour))
    assert created.status_code == 201, created.text
    automation_id = created.json()["id"]
    timer = await _timer(tenant_id, automation_id)
    assert timer is not None and timer.kind == automations.CRON_TIMER
    assert timer.due_at > datetime.now(UTC) and timer.due_at.minute == 0

    tick = datetime(2030, 1, 7, 10, 0, tzinfo=UTC)
    nxt = await _fire(tenant_id, automation_id, tick, tick + timedelta(seconds=5))
    assert nxt == tick + timedelta(hours=1)
    await _fire(tenant_id, automation_id, tick, tick + timedelta(seconds=6))  # a double fire
    await run_automations()
    executions = await _executions(owner, automation_id)
    assert [e["event_id"] for e in executions] == [f"cron:{tick.isoformat()}"]
    assert executions[0]["status"] == "succeeded"

    # Down for five hours: fire_once makes one execution, for the latest missed tick.
    now = tick + timedelta(hours=5, minutes=20)
    assert await _fire(tenant_id, automation_id, tick + timedelta(hours=1), now) == tick + timedelta(hours=6)
    executions = await _executions(owner, automation_id)
    assert sorted(e["event_id"] for e in executions) == sorted(
        [f"cron:{tick.isoformat()}", f"cron:{(tick + timedelta(hours=5)).isoformat()}"]
    )

    # skip: a late fire makes none, and the schedule goes on.
    skipping = await owner.patch(f"/api/v1/automations/{automation_id}", {"trigger": {**every_hour, "missed": "skip"}})
    assert skipping.status_code == 200, skipping.text
    later = tick + timedelta(hours=9, minutes=30)
    assert await _fire(tenant_id, automation_id, tick + timedelta(hours=6), later) == tick + timedelta(hours=10)
    assert len(await _executions(owner, automation_id)) == 2

    disabled = await owner.post(f"/api/v1/automations/{automation_id}/disable")
    assert disabled.status_code == 200
    assert await _timer(tenant_id, automation_id) is None
    assert await _fire(tenant_id, automation_id, tick + timedelta(hours=10), later + timedelta(hours=1)) is None


def test_business_days_only_skips_weekends_and_holidays() -> None:
    from services.automation.schemas import ScheduleTrigger
    from services.sops.calendar.hours import Holiday, WorkingTime

    cal = WorkingTime(timezone="Asia/Shanghai", holidays=(Holiday(datetime(2030, 1, 8).date()),))
    trigger = ScheduleTrigger(cron="0 9 * * *", business_days_only=True)
    friday = datetime(2030, 1, 4, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai, after that day's tick
    # Saturday, Sunday skipped; Monday 7th fires at 09:00 Shanghai = 01:00 UTC.
    assert automations.next_fire(trigger, friday, cal) == datetime(2030, 1, 7, 1, 0, tzinfo=UTC)
    monday = datetime(2030, 1, 7, 2, 0, tzinfo=UTC)
    assert automations.next_fire(trigger, monday, cal) == datetime(2030, 1, 9, 1, 0, tzinfo=UTC)  # 8th: holiday


async def test_history_is_kept_for_the_retention_and_then_purged(world: World, probe: Probe) -> None:
    with pytest.raises(SettingsError):
        Settings(execution_retention_days=30)
    owner, body = await world.signup()
    tenant_id = uuid.UUID(body["tenant"]["id"])
    collection = await _collection(owner)
    automation_id = (await owner.post("/api/v1/automations", _record_automation(collection["id"]))).json()["id"]
    records = f"/api/v1/collections/{collection['id']}/records"
    record = (await owner.post(records, {"values": {"status": "new"}})).json()
    for status in ("a", "b"):
        await owner.patch(f"{records}/{record['id']}", {"values": {"status": status}})
    await run_automations()
    old, recent = sorted(await _executions(owner, automation_id), key=lambda e: e["id"])
    async with open_session(tenant_id) as db:
        await db.execute(
            update(AutomationExecution)
            .where(AutomationExecution.id == uuid.UUID(old["id"]))
            .values(created_at=datetime.now(UTC) - timedelta(days=91))
        )
    async with open_session(tenant_id) as db:
        assert await automations.purge_executions(db) == 1
    assert [e["id"] for e in await _executions(owner, automation_id)] == [recent["id"]]
    assert (await owner.get(f"/api/v1/automations/executions/{old['id']}")).status_code == 404


async def test_a_tenant_over_its_concurrency_limit_waits(
    world: World, probe: Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, body = await world.signup()
    tenant_id = uuid.UUID(body["tenant"]["id"])
    collection = await _collection(owner)
    automation_id = (await owner.post("/api/v1/automations", _record_automation(collection["id"]))).json()["id"]
    monkeypatch.setattr(config, "tenant_concurrency", lambda: 1)
    counter = slots.MemorySlots()
    automations.use_slots(counter)
    try:
        held = await counter.acquire(tenant_id, 1, 60)
        assert held is not None
        records = f"/api/v1/collections/{collection['id']}/records"
        record = (await owner.post(records, {"values": {"status": "new"}})).json()
        await owner.patch(f"{records}/{record['id']}", {"values": {"status": "paid"}})
        await deliver_events()
        [execution] = await _executions(owner, automation_id)
        assert await automations.run_step(tenant_id, uuid.UUID(execution["id"]), 0) == "deferred"
        other = uuid.uuid4()
        assert await counter.acquire(other, 1, 60) is not None  # another tenant is not held up
        await counter.release(other, "local")
        await counter.release(tenant_id, held)
        await run_automations()
        [execution] = await _executions(owner, automation_id)
        assert execution["status"] == "succeeded"
        assert len(probe.calls) == 1
    finally:
        automations.use_slots(None)


# ---------------------------------------------------------------- loops: event lineage


async def test_an_automation_that_updates_what_it_watches_stops_with_one_failed_execution(world: World) -> None:
    owner, _ = await world.signup()
    collection = await _collection(owner)
    bump = {
        "kind": "update_record",
        "collection_id": collection["id"],
        "record_id": "=event.record_id",
        "values": {"amount": "=event.record.amount + 1"},
    }
    created = await owner.post("/api/v1/automations", _record_automation(collection["id"], name="Bump", actions=[bump]))
    assert created.status_code == 201, created.text
    automation_id = created.json()["id"]
    records = f"/api/v1/collections/{collection['id']}/records"
    record = (await owner.post(records, {"values": {"status": "new", "amount": 1}})).json()
    await owner.patch(f"{records}/{record['id']}", {"values": {"amount": 10}})
    await run_automations()

    executions = sorted(await _executions(owner, automation_id), key=lambda e: e["id"])
    assert [e["status"] for e in executions] == ["succeeded", "succeeded", "failed"], executions
    stopped = executions[-1]
    assert stopped["error"].startswith(f"{automations.LOOP_CODE}:"), stopped
    assert stopped["action_index"] == 0  # nothing of it ran
    detail = (await owner.get(f"/api/v1/automations/executions/{stopped['id']}")).json()
    assert detail["actions"] == []
    cause = detail["event"]["_cause"]
    assert cause["execution_id"] == executions[1]["id"]
    assert cause["depth"] == 2 and cause["chain"] == [automation_id, automation_id]
    # The person's change and the two allowed runs: 10 + 2.
    assert (await owner.get(f"{records}/{record['id']}")).json()["values"]["amount"] == 12


def test_a_chain_of_automations_is_refused_past_its_length(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert automations.loop_refusal(first, None) is None  # a person's change
    monkeypatch.setattr(config, "max_chain", lambda: 3)
    two = {"execution_id": "x", "automation_id": str(second), "depth": 2, "chain": [str(first), str(second)]}
    assert automations.loop_refusal(third, two) is None  # the third in a row
    three = {**two, "depth": 3, "chain": [str(first), str(second), str(third)]}
    refused = automations.loop_refusal(uuid.uuid4(), three)
    assert refused is not None and refused.startswith("automation_loop:") and "GUIJU_AUTOMATION_MAX_CHAIN" in refused
    # A ping-pong between two automations: each may come back once, not twice.
    monkeypatch.setattr(config, "max_chain", lambda: 10)
    ping_pong = {"depth": 3, "chain": [str(first), str(second), str(first)]}
    assert automations.loop_refusal(second, ping_pong) is None
    refused = automations.loop_refusal(first, ping_pong)
    assert refused is not None and "2 times" in refused
    assert Settings().automation_max_chain == 5


async def test_events_emitted_inside_caused_by_carry_the_cause(world: World) -> None:
    from services.outbox import service as outbox

    _api, body = await world.signup()
    tenant_id = uuid.UUID(body["tenant"]["id"])
    async with open_session(tenant_id) as db:
        plain = await outbox.emit(db, "test.lineage", {"n": 1})
        with outbox.caused_by({"execution_id": "e1", "automation_id": "a1", "depth": 1, "chain": ["a1"]}):
            caused = await outbox.emit(db, "test.lineage", {"n": 2})
        after = await outbox.emit(db, "test.lineage", {"n": 3})
    assert "_cause" not in plain.payload and "_cause" not in after.payload
    assert caused.payload == {
        "n": 2,
        "_cause": {"execution_id": "e1", "automation_id": "a1", "depth": 1, "chain": ["a1"]},
    }
    message = {"payload": caused.payload}
    assert outbox.cause_of(message) == caused.payload["_cause"]
    assert outbox.cause_of({"payload": plain.payload}) is None


async def test_the_maintenance_timer_runs_once_per_pass_on_the_pass_clock(
    world: World, probe: Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.scheduler.models import Timer
    from tenants.isolation import session_tenant_id

    owner, body = await world.signup()
    tenant_id = uuid.UUID(body["tenant"]["id"])
    collection = await _collection(owner)
    assert (await owner.post("/api/v1/automations", _record_automation(collection["id"]))).status_code == 201
    runs: list[datetime | None] = []
    real_recover = automations.recover_stalled

    async def counting_recover(db: AsyncSession, now: datetime | None = None) -> int:
        if session_tenant_id(db.sync_session) == tenant_id:
            runs.append(now)
        return await real_recover(db, now)

    monkeypatch.setattr(executor, "recover_stalled", counting_recover)
    simulated = datetime.now(UTC) + timedelta(hours=2)  # the scheduler's clock, ahead of the real one
    await scheduler.fire_due(simulated)
    assert runs == [simulated]
    async with open_session(tenant_id) as db:
        timer = await db.scalar(select(Timer).where(Timer.key == automations.MAINTENANCE_KEY))
    assert timer is not None and timer.due_at == simulated + automations.MAINTENANCE_INTERVAL


# ---------------------------------------------------------------- the concurrency counter on real Redis


@pytest.fixture
async def redis_slots() -> Any:
    from redis.asyncio import Redis

    from tests.conftest import REDIS_HOST, REDIS_PORT, need_service

    need_service("Redis", REDIS_HOST, REDIS_PORT)
    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
    prefix = f"guiju:test:running:{uuid.uuid4().hex}:"
    counter = slots.RedisSlots(url, key_prefix=prefix)
    try:
        yield counter
    finally:
        await counter.aclose()
        cleaner = Redis.from_url(url)
        try:
            keys = [key async for key in cleaner.scan_iter(match=f"{prefix}*")]
            if keys:
                await cleaner.delete(*keys)
        finally:
            await cleaner.aclose()


async def test_the_redis_counter_honours_the_limit_and_frees_slots(redis_slots: Any) -> None:
    tenant, other = uuid.uuid4(), uuid.uuid4()
    # Racing acquirers: exactly the limit get a slot (the check and the add are one script).
    tokens = await asyncio.gather(*(redis_slots.acquire(tenant, 3, 60) for _ in range(12)))
    held = [t for t in tokens if t is not None]
    assert len(held) == 3 and len(set(held)) == 3
    assert await redis_slots.live_count(tenant) == 3
    assert await redis_slots.acquire(tenant, 3, 60) is None
    assert await redis_slots.acquire(other, 3, 60) is not None  # another tenant has its own slots
    await redis_slots.release(tenant, held[0])
    assert await redis_slots.live_count(tenant) == 2
    again = await redis_slots.acquire(tenant, 3, 60)
    assert again is not None
    assert await redis_slots.acquire(tenant, 3, 60) is None
    for token in [*held[1:], again]:
        await redis_slots.release(tenant, token)
    assert await redis_slots.live_count(tenant) == 0


async def test_an_expired_slot_of_a_crashed_holder_is_freed(redis_slots: Any) -> None:
    tenant = uuid.uuid4()
    crashed = await redis_slots.acquire(tenant, 1, 0.3)  # its worker dies: it never releases
    assert crashed is not None
    assert await redis_slots.acquire(tenant, 1, 60) is None
    await asyncio.sleep(0.5)
    assert await redis_slots.live_count(tenant) == 0
    fresh = await redis_slots.acquire(tenant, 1, 60)
    assert fresh is not None
    await redis_slots.release(tenant, crashed)  # a late release of the expired token frees nothing else
    assert await redis_slots.acquire(tenant, 1, 60) is None
    await redis_slots.release(tenant, fresh)


async def test_the_executor_defers_over_the_limit_with_the_redis_counter(
    world: World, probe: Probe, redis_slots: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, body = await world.signup()
    tenant_id = uuid.UUID(body["tenant"]["id"])
    collection = await _collection(owner)
    automation_id = (await owner.post("/api/v1/automations", _record_automation(collection["id"]))).json()["id"]
    monkeypatch.setattr(config, "tenant_concurrency", lambda: 1)
    automations.use_slots(redis_slots)
    try:
        held = await redis_slots.acquire(tenant_id, 1, 60)  # another worker's running action
        assert held is not None
        records = f"/api/v1/collections/{collection['id']}/records"
        record = (await owner.post(records, {"values": {"status": "new"}})).json()
        await owner.patch(f"{records}/{record['id']}", {"values": {"status": "paid"}})
        await deliver_events()
        [execution] = await _executions(owner, automation_id)
        assert await automations.run_step(tenant_id, uuid.UUID(execution["id"]), 0) == "deferred"
        await redis_slots.release(tenant_id, held)
        await run_automations()  # the deferred step comes back and runs
        [execution] = await _executions(owner, automation_id)
        assert execution["status"] == "succeeded"
        assert await redis_slots.live_count(tenant_id) == 0  # the executor gave its slot back
        assert len(probe.calls) == 1
    finally:
        automations.use_slots(None)
