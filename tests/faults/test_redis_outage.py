"""Redis stops for 30 seconds while record changes keep coming, then comes back: every event is
processed, each exactly once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.conftest import Backend
from tests.faults.conftest import Site, WebhookSink, wait_for_all_succeeded
from tests.faults.harness import (
    WORKER_READY,
    RedisProcess,
    process_env,
    scheduler_process,
    worker_process,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

OUTAGE_SECONDS = 30.0
ORDERS_PER_SECOND = 4


@pytest.mark.timeout(300)
async def test_a_redis_outage_delays_events_but_loses_and_doubles_none(
    site: Site, fault_backend: Backend, private_redis: RedisProcess, webhook_sink: WebhookSink, tmp_path: Path
) -> None:
    env = process_env(fault_backend, private_redis.url, tmp_path, GUIJU_WEBHOOK_ALLOW_HTTP_HOSTS="127.0.0.1")
    scheduler = scheduler_process(env, tmp_path).start()
    worker = worker_process(env, tmp_path).start()
    processes = [worker, scheduler]
    orders: list[str] = []

    async def produce(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            orders.append(await site.create_order(len(orders)))
            await asyncio.sleep(1 / ORDERS_PER_SECOND)

    try:
        await asyncio.to_thread(worker.wait_for_output, WORKER_READY, 90)
        await produce(3)  # flowing normally
        private_redis.stop()
        outage_started = time.monotonic()
        during = len(orders)
        await produce(OUTAGE_SECONDS)
        during = len(orders) - during
        assert time.monotonic() - outage_started >= OUTAGE_SECONDS
        # Nothing could move while Redis was away: the events wait in the outbox.
        assert await site.scalar("select count(*) from outbox_events where dispatched_at is null") >= during // 2
        private_redis.start()  # the same port and append-only file: what Redis had acknowledged is back
        await produce(3)
        # A relay backs off (up to a minute) from a broker that refused it; steps whose message
        # was lost with the connection wait for the stalled-step recovery.
        recovered = await wait_for_all_succeeded(site, len(orders), private_redis.url, processes)
        print(f"{len(orders)} executions done; {recovered} stalled steps sent again")
        assert worker.alive and scheduler.alive, "the processes ride out the outage"
    finally:
        for process in processes:
            process.kill()

    assert during >= OUTAGE_SECONDS * ORDERS_PER_SECOND * 0.5
    assert await site.orders_without_execution() == 0
    effects = await site.effects_per_execution()
    assert len(effects) == len(orders)
    assert {execution: counts for execution, counts in effects.items() if counts != (1, 1)} == {}
    # Each action of each execution succeeded once (retries of a failed attempt are separate rows).
    repeated = await site.rows(
        "select execution_id, action_index, count(*) from automation_action_runs "
        "where status = 'succeeded' group by execution_id, action_index having count(*) <> 1"
    )
    assert repeated == []
    assert set(webhook_sink.keys()) == {f"{execution}:2" for execution in effects}
    assert await site.scalar("select count(*) from outbox_events where dispatched_at is null") == 0
