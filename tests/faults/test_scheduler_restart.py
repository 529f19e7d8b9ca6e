"""Two ``guiju scheduler`` processes fire the same timer table; one is killed with SIGKILL midway
and started again: every timer fires exactly once (none lost, none doubled).

The timers are ``event.emit`` timers, whose handler writes an outbox row in the transaction that
deletes the timer: the outbox is the ledger of fires.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.app import create_app
from services.db import open_session, set_database_url
from services.scheduler import service as scheduler
from tenants.base import utcnow
from tests.conftest import Backend, World, make_settings
from tests.faults.harness import RedisProcess, process_env, scheduler_process, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

TENANTS = 3
TIMERS_PER_TENANT = 100
SPREAD_SECONDS = 15.0
READY = "timer scheduler started"


@pytest.fixture
async def tenants(fault_backend: Backend, tmp_path: Path) -> AsyncIterator[list[uuid.UUID]]:
    set_database_url(fault_backend.url)
    world = World(
        fault_backend, create_app(make_settings(fault_backend, tmp_path)), make_settings(fault_backend, tmp_path), []
    )
    try:
        ids = []
        for _ in range(TENANTS):
            _api, body = await world.signup()
            ids.append(uuid.UUID(body["tenant"]["id"]))
        yield ids
    finally:
        for client in world._clients:
            await client.aclose()
        set_database_url(None)


@pytest.fixture
async def admin(fault_backend: Backend) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(fault_backend.admin_url)  # the superuser: counts see every tenant
    yield engine
    await engine.dispose()


async def _fires(admin: AsyncEngine, marker: str) -> dict[str, int]:
    async with admin.connect() as conn:
        rows = await conn.execute(
            text("select payload->>'n', count(*) from outbox_events where type = :t group by 1"), {"t": marker}
        )
        return {n: count for n, count in rows}


async def _pending_timers(admin: AsyncEngine, marker: str) -> int:
    async with admin.connect() as conn:
        count = await conn.scalar(text("select count(*) from timers where payload->>'type' = :t"), {"t": marker})
        return int(count or 0)


@pytest.mark.timeout(240)
async def test_killing_a_scheduler_loses_and_doubles_no_fire(
    fault_backend: Backend,
    private_redis: RedisProcess,
    tenants: list[uuid.UUID],
    admin: AsyncEngine,
    tmp_path: Path,
) -> None:
    env = process_env(fault_backend, private_redis.url, tmp_path)
    first = scheduler_process(env, tmp_path, name="scheduler-1")
    second = scheduler_process(env, tmp_path, name="scheduler-2")
    marker = f"test.scheduler_restart.{uuid.uuid4().hex[:8]}"
    total = TENANTS * TIMERS_PER_TENANT
    set_database_url(fault_backend.url)
    try:
        first.start()
        second.start()
        for process in (first, second):
            await asyncio.to_thread(process.wait_for_output, READY, 60)

        start = utcnow() + timedelta(seconds=1)
        for index, tenant_id in enumerate(tenants):
            async with open_session(tenant_id) as db:
                for i in range(TIMERS_PER_TENANT):
                    n = i * TENANTS + index  # the tenants' timers interleave in time
                    await scheduler.emit_later(
                        db,
                        key=f"restart-{n}",
                        due_at=start + timedelta(seconds=SPREAD_SECONDS * n / total),
                        type=marker,
                        payload={"n": n},
                    )

        # Kill one scheduler while timers are firing, then bring it back.
        await wait_until(
            lambda: _fires(admin, marker), lambda f: len(f) >= total // 3, seconds=60, what="a third fired"
        )
        first.kill()
        fired_at_kill = len(await _fires(admin, marker))
        assert fired_at_kill < total, "the kill came too late to matter"
        await asyncio.sleep(2)  # the survivor carries on alone for a while
        first.start()
        await asyncio.to_thread(first.wait_for_output, READY, 60)

        await wait_until(lambda: _pending_timers(admin, marker), lambda n: n == 0, seconds=90, what="every timer fired")
        assert first.alive and second.alive, first.log_tail() + second.log_tail()
    finally:
        first.kill()
        second.kill()
        set_database_url(None)

    fires = await _fires(admin, marker)
    assert sorted(int(n) for n in fires) == list(range(total)), "a fire was lost"
    doubled = {n: c for n, c in fires.items() if c != 1}
    assert doubled == {}, f"fired more than once: {doubled}"
