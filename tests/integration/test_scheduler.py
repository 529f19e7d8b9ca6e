"""The timer table: arming and disarming, firing once, recurring, backing off, tenant isolation,
and several schedulers racing over the same timers on Postgres."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.db import dispose_databases, open_session, set_database_url
from services.outbox import service as outbox
from services.outbox.models import OutboxEvent
from services.scheduler import service as scheduler
from services.scheduler.models import Timer
from tenants.base import utcnow
from tenants.context import TenantContextError, current_tenant_id
from tenants.isolation import session_tenant_id
from tests.conftest import World, signup_body

RECURRING = "test.scheduler.recurring"
FAILING = "test.scheduler.failing"
PROBE = "test.scheduler.probe"

recurring_fires: list[tuple[str, datetime]] = []
probe_fires: list[dict[str, Any]] = []


async def _recurring(db: AsyncSession, timer: scheduler.DueTimer) -> datetime | None:
    recurring_fires.append((timer.key, timer.due_at))
    return timer.due_at + timedelta(hours=1)


async def _failing(db: AsyncSession, timer: scheduler.DueTimer) -> datetime | None:
    # A write before the failure: it must be rolled back with the handler.
    await outbox.emit(db, "test.scheduler.half_done", {"key": timer.key})
    raise RuntimeError(f"boom {timer.key}")


async def _probe(db: AsyncSession, timer: scheduler.DueTimer) -> datetime | None:
    visible = set(await db.scalars(select(Timer.tenant_id)))
    raw: set[uuid.UUID] | None = None
    if db.get_bind().dialect.name == "postgresql":  # RLS: even raw SQL sees only this tenant
        raw = {uuid.UUID(str(r)) for r in await db.scalars(text("select tenant_id from timers"))}
    probe_fires.append(
        {
            "timer_tenant": timer.tenant_id,
            "context_tenant": current_tenant_id(),
            "session_tenant": session_tenant_id(db.sync_session),
            "visible": visible,
            "raw": raw,
            "key": timer.key,
        }
    )
    return None


async def _skewed(db: AsyncSession, timer: scheduler.DueTimer) -> datetime | None:
    skewed_fires.append(timer.key)
    return utcnow() - timedelta(minutes=1)  # a clock behind the pass's: "next" is already due


skewed_fires: list[str] = []
SKEWED = "test.scheduler.skewed"
scheduler.register_timer_handler(SKEWED, _skewed)
scheduler.register_timer_handler(RECURRING, _recurring)
scheduler.register_timer_handler(FAILING, _failing)
scheduler.register_timer_handler(PROBE, _probe)


async def _tenant(world: World) -> uuid.UUID:
    _api, body = await world.signup()
    return uuid.UUID(body["tenant"]["id"])


async def _rows(tenant_id: uuid.UUID) -> dict[str, Timer]:
    async with open_session(tenant_id) as db:
        return {t.key: t for t in await db.scalars(select(Timer))}


async def _events(type: str) -> list[dict[str, Any]]:
    async with open_session(system=True) as db:
        return [e.payload for e in await db.scalars(select(OutboxEvent).where(OutboxEvent.type == type))]


async def test_schedule_upserts_by_key_and_cancel_disarms(world: World) -> None:
    tenant_id = await _tenant(world)
    first, second = utcnow() + timedelta(hours=1), utcnow() + timedelta(hours=2)
    async with open_session(tenant_id) as db:
        await scheduler.schedule(db, kind=PROBE, key="reminder", due_at=first, payload={"n": 1})
        await scheduler.schedule(db, kind=RECURRING, key="reminder", due_at=second, payload={"n": 2})
        await scheduler.schedule(db, kind=PROBE, key="other", due_at=first, payload={})
    rows = await _rows(tenant_id)
    assert set(rows) == {"reminder", "other"}
    assert (rows["reminder"].kind, rows["reminder"].due_at, rows["reminder"].payload) == (RECURRING, second, {"n": 2})
    async with open_session(tenant_id) as db:
        timer = await scheduler.get_timer(db, "reminder")
        assert timer is not None and timer.tenant_id == tenant_id and timer.due_at == second
        await scheduler.cancel(db, "reminder")
        await scheduler.cancel(db, "never-armed")  # nothing to do, no error
        assert await scheduler.get_timer(db, "reminder") is None
    assert set(await _rows(tenant_id)) == {"other"}

    # A timer rolled back with its transaction was never armed.
    with pytest.raises(RuntimeError):
        async with open_session(tenant_id) as db:
            await scheduler.schedule(db, kind=PROBE, key="rolled-back", due_at=first, payload={})
            raise RuntimeError("abort")
    assert "rolled-back" not in await _rows(tenant_id)

    async with open_session(tenant_id) as db:
        with pytest.raises(ValueError, match="timezone-aware"):
            await scheduler.schedule(db, kind=PROBE, key="naive", due_at=datetime(2030, 1, 1), payload={})
        with pytest.raises(ValueError, match="key"):
            await scheduler.schedule(db, kind=PROBE, key="", due_at=first, payload={})
    async with open_session(system=True) as db:
        with pytest.raises(TenantContextError):
            await scheduler.schedule(db, kind=PROBE, key="nobody", due_at=first, payload={})
        with pytest.raises(TenantContextError):
            await scheduler.cancel(db, "other")
    async with open_session(tenant_id) as db:
        await scheduler.cancel(db, "other")


async def test_due_timers_fire_once_and_future_ones_wait(world: World) -> None:
    tenant_id = await _tenant(world)
    marker = f"test.scheduler.fired.{uuid.uuid4().hex[:8]}"
    past = utcnow() - timedelta(minutes=5)
    async with open_session(tenant_id) as db:
        for n in range(3):
            await scheduler.emit_later(db, key=f"due-{n}", due_at=past + timedelta(seconds=n), type=marker, payload={})
        await scheduler.emit_later(db, key="later", due_at=utcnow() + timedelta(hours=1), type=marker, payload={})

    assert await scheduler.fire_due() >= 3
    fired = await _events(marker)
    assert sorted(e["timer_key"] for e in fired) == ["due-0", "due-1", "due-2"]
    assert set(await _rows(tenant_id)) == {"later"}

    await scheduler.fire_due()  # nothing new is due
    assert len(await _events(marker)) == 3

    await scheduler.fire_due(utcnow() + timedelta(hours=2))
    assert sorted(e["timer_key"] for e in await _events(marker)) == ["due-0", "due-1", "due-2", "later"]
    assert await _rows(tenant_id) == {}


async def test_a_recurring_handler_reschedules_its_timer(world: World) -> None:
    tenant_id = await _tenant(world)
    due = (utcnow() - timedelta(minutes=1)).replace(microsecond=0)
    key = f"cron-{uuid.uuid4().hex[:8]}"
    async with open_session(tenant_id) as db:
        await scheduler.schedule(db, kind=RECURRING, key=key, due_at=due, payload={"cron": "0 * * * *"})
    before = await _rows(tenant_id)
    await scheduler.fire_due()
    assert [f for f in recurring_fires if f[0] == key] == [(key, due)]
    rows = await _rows(tenant_id)
    assert list(rows) == [key]
    assert rows[key].id == before[key].id  # the same timer, moved on
    assert rows[key].due_at == due + timedelta(hours=1)
    assert rows[key].attempts == 0
    await scheduler.fire_due()
    assert len([f for f in recurring_fires if f[0] == key]) == 1  # the next tick is not due yet
    async with open_session(tenant_id) as db:
        await scheduler.cancel(db, key)


async def test_a_failing_handler_backs_off_without_blocking_the_others(world: World) -> None:
    tenant_id = await _tenant(world)
    marker = f"test.scheduler.ok.{uuid.uuid4().hex[:8]}"
    past = utcnow() - timedelta(minutes=5)
    async with open_session(tenant_id) as db:
        await scheduler.schedule(db, kind=FAILING, key="fails", due_at=past, payload={})
        await scheduler.schedule(db, kind="test.scheduler.nobody_handles", key="orphan", due_at=past, payload={})
        await scheduler.emit_later(db, key="fine", due_at=past + timedelta(seconds=1), type=marker, payload={})

    started = utcnow()
    await scheduler.fire_due()
    assert [e["timer_key"] for e in await _events(marker)] == ["fine"]
    rows = await _rows(tenant_id)
    assert set(rows) == {"fails", "orphan"}
    fails = rows["fails"]
    assert fails.attempts == 1
    assert "RuntimeError: boom fails" in (fails.last_error or "")
    assert fails.due_at >= started + timedelta(seconds=scheduler.BACKOFF_BASE_SECONDS)
    assert rows["orphan"].attempts == 1
    assert "UnknownTimerKind" in (rows["orphan"].last_error or "")
    # The handler's own write was undone with it.
    assert [e for e in await _events("test.scheduler.half_done") if e["key"] == "fails"] == []

    # When due again it fails again: attempts grow, the wait doubles, the timer is never dropped.
    await scheduler.fire_due(fails.due_at + timedelta(seconds=1))
    again = (await _rows(tenant_id))["fails"]
    assert again.attempts == 2
    assert again.due_at - fails.due_at >= timedelta(seconds=2 * scheduler.BACKOFF_BASE_SECONDS)

    # Rescheduling clears the failures.
    async with open_session(tenant_id) as db:
        await scheduler.schedule(db, kind=FAILING, key="fails", due_at=utcnow() + timedelta(days=1), payload={})
    rescheduled = (await _rows(tenant_id))["fails"]
    assert (rescheduled.attempts, rescheduled.last_error) == (0, None)
    async with open_session(tenant_id) as db:
        await scheduler.cancel(db, "fails")
        await scheduler.cancel(db, "orphan")


async def test_timers_are_isolated_by_tenant(world: World) -> None:
    tenant_a, tenant_b = await _tenant(world), await _tenant(world)
    past = utcnow() - timedelta(minutes=1)
    for tenant_id in (tenant_a, tenant_b):
        async with open_session(tenant_id) as db:
            await scheduler.schedule(db, kind=PROBE, key="shared-key", due_at=past, payload={})
    async with open_session(tenant_a) as db:
        await scheduler.schedule(db, kind=PROBE, key="only-a", due_at=utcnow() + timedelta(hours=1), payload={})

    # B can neither see nor cancel A's timer.
    async with open_session(tenant_b) as db:
        assert await scheduler.get_timer(db, "only-a") is None
        await scheduler.cancel(db, "only-a")
    assert set(await _rows(tenant_a)) == {"shared-key", "only-a"}

    await scheduler.fire_due()
    mine = [p for p in probe_fires if p["timer_tenant"] in (tenant_a, tenant_b)]
    assert sorted(str(p["timer_tenant"]) for p in mine) == sorted([str(tenant_a), str(tenant_b)])
    for fire in mine:
        assert fire["context_tenant"] == fire["session_tenant"] == fire["timer_tenant"]
        assert fire["visible"] == {fire["timer_tenant"]}
        assert fire["raw"] in (None, {fire["timer_tenant"]})
    assert set(await _rows(tenant_a)) == {"only-a"}
    assert await _rows(tenant_b) == {}
    async with open_session(tenant_a) as db:
        await scheduler.cancel(db, "only-a")


def _race_in_a_thread(results: list[int], errors: list[BaseException]) -> None:
    async def drain() -> int:
        fired = 0
        try:
            while count := await scheduler.fire_due(batch=7):
                fired += count
        finally:
            await dispose_databases()
        return fired

    try:
        results.append(asyncio.run(drain()))
    except BaseException as exc:  # reported by the test
        errors.append(exc)


async def test_racing_schedulers_fire_each_timer_exactly_once(world: World) -> None:
    if world.backend.name != "postgres":
        pytest.skip("SKIP LOCKED races need Postgres (the embedded SQLite mode runs one scheduler)")
    tenants = [await _tenant(world) for _ in range(4)]
    marker = f"test.scheduler.race.{uuid.uuid4().hex[:8]}"
    past = utcnow() - timedelta(minutes=1)
    for index, tenant_id in enumerate(tenants):
        async with open_session(tenant_id) as db:
            for n in range(50):
                await scheduler.emit_later(
                    db,
                    key=f"t-{n}",
                    due_at=past + timedelta(milliseconds=n),
                    type=marker,
                    payload={"n": index * 50 + n},
                )

    # Four schedulers, each on its own thread, event loop and connection pool, plus this loop.
    results: list[int] = []
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_race_in_a_thread, args=(results, errors)) for _ in range(4)]
    for thread in threads:
        thread.start()
    here = 0
    while count := await scheduler.fire_due(batch=5):
        here += count
    for thread in threads:
        await asyncio.to_thread(thread.join, 60)
    assert errors == []

    fired = Counter(e["n"] for e in await _events(marker))
    assert sorted(fired) == list(range(200))
    assert set(fired.values()) == {1}
    assert sum(results) + here >= 200
    assert sum(1 for r in [*results, here] if r) >= 2, "the schedulers did not actually race"
    for tenant_id in tenants:
        assert await _rows(tenant_id) == {}


@pytest.mark.timeout(120)
async def test_guiju_run_fires_timers_in_process(tmp_path: Path) -> None:
    """The embedded mode runs the one scheduler of its SQLite database inside the API process."""
    from tests.embedded_server import EmbeddedServer

    server = await asyncio.to_thread(EmbeddedServer, tmp_path)
    set_database_url(f"sqlite+aiosqlite:///{tmp_path / 'pages.db'}")
    try:
        async with httpx.AsyncClient(base_url=server.base, timeout=10) as client:
            signup = await client.post("/api/v1/auth/signup", json=signup_body())
            assert signup.status_code == 201, signup.text
        tenant_id = uuid.UUID(signup.json()["tenant"]["id"])
        async with open_session(tenant_id) as db:
            await scheduler.emit_later(
                db, key="embedded", due_at=utcnow() + timedelta(seconds=1), type="test.scheduler.embedded", payload={}
            )
        deadline = asyncio.get_running_loop().time() + 30
        while await _rows(tenant_id):
            assert asyncio.get_running_loop().time() < deadline, server.log_path.read_text()[-3000:]
            await asyncio.sleep(0.2)
        assert [e["timer_key"] for e in await _events("test.scheduler.embedded")] == ["embedded"]
    finally:
        await dispose_databases()
        set_database_url(None)
        await asyncio.to_thread(server.stop)


async def test_a_pass_never_fires_a_timer_twice_when_its_next_time_is_already_due(world: World) -> None:
    tenant_id = await _tenant(world)
    key = f"skewed-{uuid.uuid4().hex[:8]}"
    async with open_session(tenant_id) as db:
        await scheduler.schedule(db, kind=SKEWED, key=key, due_at=utcnow() - timedelta(seconds=1), payload={})
    simulated = utcnow() + timedelta(hours=2)
    await scheduler.fire_due(simulated)
    assert skewed_fires.count(key) == 1
    # Moved past the pass's clock, not into the past: the next pass at that clock finds nothing due.
    assert (await _rows(tenant_id))[key].due_at == simulated + scheduler.MIN_RESCHEDULE_INTERVAL
    await scheduler.fire_due(simulated)
    assert skewed_fires.count(key) == 1
    await scheduler.fire_due(simulated + timedelta(seconds=2))
    assert skewed_fires.count(key) == 2
    async with open_session(tenant_id) as db:
        await scheduler.cancel(db, key)


async def test_a_handler_sees_the_pass_clock(world: World) -> None:
    tenant_id = await _tenant(world)
    key = f"probe-{uuid.uuid4().hex[:8]}"
    async with open_session(tenant_id) as db:
        await scheduler.schedule(db, kind=PROBE, key=key, due_at=utcnow() - timedelta(seconds=1), payload={})
    seen: list[tuple[str, datetime | None]] = []
    original = scheduler._handlers[PROBE]

    async def remember(db: AsyncSession, timer: scheduler.DueTimer) -> datetime | None:
        seen.append((timer.key, timer.now))
        return await original(db, timer)

    simulated = utcnow() + timedelta(minutes=30)
    scheduler._handlers[PROBE] = remember
    try:
        await scheduler.fire_due(simulated)
    finally:
        scheduler._handlers[PROBE] = original
    assert [at for k, at in seen if k == key] == [simulated]
