"""kill -9 a worker in the middle of actions, 50 times: every execution completes, and no effect in
our database happens twice (webhooks may be delivered again, always with the same Idempotency-Key)."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from services.broker import build_broker
from tests.conftest import Backend
from tests.faults.conftest import Site, WebhookSink, wait_for_all_succeeded
from tests.faults.harness import (
    WORKER_READY,
    GuijuProcess,
    RedisProcess,
    WorkerZygote,
    process_env,
    requeue_dead_workers,
    scheduler_process,
    worker_process,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

KILLS = 50
ORDERS_BEFORE = 60
ORDERS_PER_ROUND = 4


def test_the_heartbeat_timeout_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    broker = build_broker("redis://127.0.0.1:1/0", heartbeat_timeout_ms=1500)
    assert broker.heartbeat_timeout == 1500
    broker.close()
    monkeypatch.setenv("GUIJU_BROKER_HEARTBEAT_TIMEOUT_MS", "2500")
    broker = build_broker("redis://127.0.0.1:1/0")
    assert broker.heartbeat_timeout == 2500
    broker.close()


@pytest.mark.timeout(900)
async def test_killing_workers_mid_action_loses_and_doubles_nothing(
    site: Site, fault_backend: Backend, private_redis: RedisProcess, webhook_sink: WebhookSink, tmp_path: Path
) -> None:
    env = process_env(
        fault_backend,
        private_redis.url,
        tmp_path,
        GUIJU_WEBHOOK_ALLOW_HTTP_HOSTS="127.0.0.1",
        # A killed worker's concurrency slots stay taken until their lease (the action's time limit
        # plus a margin) runs out; with the default limit, each kill would stall this one workspace
        # for a minute. What is tested here is exactly-once effects, so the limit is out of the way.
        GUIJU_AUTOMATION_TENANT_CONCURRENCY="1000",
        # The kills are timed against the engine's own work (no plugin takes part in it); the
        # built-in plugins' queues and start-up shift that timing so most kills land between bursts.
        GUIJU_PLUGINS_DENY="customs,erp,messaging",
    )
    scheduler = scheduler_process(env, tmp_path).start()
    # Two worker slots: one boots while the other works. The first start is `guiju worker` itself;
    # the restarts are `dramatiq services.worker` forked from a process that has imported it: the
    # start-up checks and the imports of 50 cold starts would be most of this test's time.
    zygote = WorkerZygote(env)
    slots: list[GuijuProcess] = [
        worker_process(env, tmp_path, name="worker-0"),
        zygote.worker(tmp_path, name="worker-1"),
    ]
    rng = random.Random(4)
    orders: list[str] = [await site.create_order(n) for n in range(ORDERS_BEFORE)]
    kills_with_work_in_flight = 0
    try:
        slots[0].start()
        for kill in range(KILLS):
            current, spare = slots[kill % 2], slots[(kill + 1) % 2]
            await asyncio.to_thread(current.wait_for_output, WORKER_READY, 90)
            if not spare.alive:
                spare.start()
            for _ in range(ORDERS_PER_ROUND):
                orders.append(await site.create_order(len(orders)))
            before = await site.execution_statuses()
            # Kill at a random moment, but no later than when work is seen moving: a fast machine
            # finishes a burst within a fixed wait, and the kill then hits nothing.
            deadline = time.monotonic() + rng.uniform(0.2, 1.0)
            await asyncio.sleep(rng.uniform(0.0, 0.1))
            while True:
                now = await site.execution_statuses()
                in_flight = bool(sum(n for status, n in now.items() if status != "succeeded")) and now != before
                if in_flight or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.02)
            if in_flight:
                kills_with_work_in_flight += 1
            current.kill()
            if kill == 0:
                slots[0] = zygote.worker(tmp_path, name="worker-0")
            await asyncio.to_thread(requeue_dead_workers, private_redis.url)
        last = slots[KILLS % 2]
        if not last.alive:
            last.start()
        finished = time.monotonic()
        recovered = await wait_for_all_succeeded(site, len(orders), private_redis.url, [*slots, scheduler])
        print(f"all executions done {time.monotonic() - finished:.1f} s after the last kill; {recovered} sent again")
    finally:
        for process in [*slots, scheduler]:
            process.kill()
        zygote.stop()

    # The kills happened while work was moving, not between bursts.
    assert kills_with_work_in_flight >= KILLS // 2, kills_with_work_in_flight
    assert await site.execution_statuses() == {"succeeded": len(orders)}
    assert await site.orders_without_execution() == 0
    effects = await site.effects_per_execution()
    assert len(effects) == len(orders)
    repeated = await site.rows(
        "select execution_id, action_index, count(*) from automation_action_runs "
        "where status = 'succeeded' group by execution_id, action_index having count(*) <> 1"
    )
    assert repeated == [], "an action recorded as done twice"
    doubled = {execution: counts for execution, counts in effects.items() if counts != (1, 1)}
    assert doubled == {}, f"executions whose database effects did not happen exactly once: {doubled}"
    # Every webhook arrived, maybe more than once, but always under its execution's key.
    keys = webhook_sink.keys()
    assert set(keys) == {f"{execution}:2" for execution in effects}
    for key, body in webhook_sink.bodies():
        assert body == {"order": body["order"]} and body["order"] in orders, key
    redelivered = sum(n - 1 for n in keys.values())
    print(f"{KILLS} kills, {len(orders)} executions, {redelivered} webhook redeliveries (same key)")
