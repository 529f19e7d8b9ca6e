"""The outbox: events leave only after commit, survive a broker outage, and are published once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import insert, select, update

from services.broker import build_broker, use_broker
from services.db import database, open_session
from services.outbox import service as outbox
from services.outbox.actors import publish
from services.outbox.models import OutboxEvent
from tenants.base import new_id, utcnow
from tests.conftest import World, mail_to
from tests.faults.harness import RedisProcess, free_port, require_redis_server


async def _pending() -> list[OutboxEvent]:
    async with open_session(system=True) as db:
        return list(await db.scalars(select(OutboxEvent).where(OutboxEvent.dispatched_at.is_(None))))


async def _drain(publisher: Any) -> None:
    while await outbox.relay_once(publisher):
        pass


async def test_events_of_a_rolled_back_transaction_never_leave(world: World) -> None:
    marker = f"test.rolled_back.{uuid.uuid4().hex}"
    with pytest.raises(RuntimeError):
        async with open_session(system=True) as db:
            await outbox.emit(db, marker, {})
            raise RuntimeError("abort")
    async with open_session(system=True) as db:
        assert (await db.scalar(select(OutboxEvent).where(OutboxEvent.type == marker))) is None


async def test_a_failed_publish_keeps_the_event_and_backs_off(world: World) -> None:
    await _drain(lambda messages: None)
    marker = f"test.backoff.{uuid.uuid4().hex}"
    async with open_session(system=True) as db:
        await outbox.emit(db, marker, {"n": 1})

    def down(messages: list[dict[str, Any]]) -> None:
        raise ConnectionError("broker unreachable")

    assert await outbox.relay_once(down) == 0
    [row] = [r for r in await _pending() if r.type == marker]
    assert row.attempts == 1
    assert row.next_attempt_at > utcnow()
    assert "broker unreachable" in (row.last_error or "")
    assert await outbox.relay_once(lambda m: None) == 0  # not due yet: no hammering a dead broker

    async with open_session(system=True) as db:
        await db.execute(update(OutboxEvent).where(OutboxEvent.id == row.id).values(next_attempt_at=utcnow()))
    seen: list[dict[str, Any]] = []
    assert await outbox.relay_once(seen.extend) == 1
    assert [m["type"] for m in seen] == [marker]
    assert await outbox.relay_once(seen.extend) == 0  # published once


async def test_concurrent_relays_publish_each_event_once(world: World) -> None:
    await _drain(lambda messages: None)
    async with open_session(system=True) as db:
        for i in range(40):
            await outbox.emit(db, "test.concurrent", {"i": i})
    seen: list[int] = []

    def slow_publish(messages: list[dict[str, Any]]) -> None:
        time.sleep(0.002)
        seen.extend(message["payload"]["i"] for message in messages)

    async def relay() -> None:
        await _drain(slow_publish)

    if world.backend.name == "postgres":
        await asyncio.gather(relay(), relay(), relay())
    else:  # SQLite serialises writers; one relay runs in the embedded mode
        await relay()
    assert sorted(seen) == list(range(40))


async def test_a_relay_in_another_process_wakes_on_the_commit_not_its_poll(world: World) -> None:
    if world.backend.name != "postgres":
        pytest.skip("LISTEN/NOTIFY is Postgres's; on SQLite the one relay is woken in process")
    await _drain(lambda messages: None)
    seen: list[str] = []
    stop = asyncio.Event()
    relay = asyncio.create_task(outbox.run_relay(lambda ms: seen.extend(m["type"] for m in ms), stop, interval=60))
    try:
        await asyncio.sleep(0.5)  # listening, idle until the next poll a minute away
        # An emitting commit made on a connection of its own, as another process would: the
        # in-process wake-up never hears of it, so only the NOTIFY sent at commit can wake the relay.
        marker = f"test.notify.{uuid.uuid4().hex}"
        async with database().engine.begin() as conn:
            await conn.execute(
                insert(OutboxEvent.__table__).values(id=new_id(), type=marker, payload={}, next_attempt_at=utcnow())
            )
            await conn.exec_driver_sql(f"NOTIFY {outbox.NOTIFY_CHANNEL}")
        started = time.monotonic()
        while marker not in seen and time.monotonic() - started < 10:
            await asyncio.sleep(0.02)
        assert marker in seen, "the relay slept through the notification"
        assert time.monotonic() - started < 5  # far sooner than its poll
    finally:
        stop.set()
        await relay


async def test_a_commit_that_emitted_events_notifies_and_a_rolled_back_one_does_not(world: World) -> None:
    if world.backend.name != "postgres":
        pytest.skip("LISTEN/NOTIFY is Postgres's")
    heard: list[str] = []
    async with database().engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None

        def listener(*args: Any) -> None:
            heard.append(args[2])  # (connection, pid, channel, payload)

        await raw.add_listener(outbox.NOTIFY_CHANNEL, listener)
        with pytest.raises(RuntimeError):
            async with open_session(system=True) as db:
                await outbox.emit(db, "test.rolled_back_notify", {})
                raise RuntimeError("abort")
        await asyncio.sleep(0.3)
        assert heard == []
        async with open_session(system=True) as db:
            await outbox.emit(db, "test.notify", {})
            await outbox.emit(db, "test.notify", {})
        deadline = time.monotonic() + 5
        while not heard and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert heard == [outbox.NOTIFY_CHANNEL]  # one per transaction, however many events
        await raw.remove_listener(outbox.NOTIFY_CHANNEL, listener)


# ---------------------------------------------------------------- a real Redis, stopped and restarted


@pytest.fixture
def private_redis() -> Iterator[RedisProcess]:
    require_redis_server()
    server = RedisProcess(free_port())
    server.start()
    yield server
    server.stop()


async def test_signup_succeeds_with_redis_down_and_its_event_arrives_when_redis_is_back(
    world: World, private_redis: RedisProcess, stub_worker: dramatiq.Worker
) -> None:
    await _drain(publish)  # leave nothing from earlier tests for the stub broker
    redis_broker = build_broker(f"redis://127.0.0.1:{private_redis.port}/0")
    assert isinstance(redis_broker, RedisBroker)
    previous = use_broker(redis_broker)
    worker = dramatiq.Worker(redis_broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        private_redis.stop()
        api = await world.client()
        from tests.conftest import signup_body

        body = signup_body()
        response = await api.post("/api/v1/auth/signup", body)
        assert response.status_code == 201, response.text  # the broker is not on the request path

        assert await outbox.relay_once(publish) == 0
        waiting = {r.type for r in await _pending()}
        assert {"tenant.created", "mail.requested"} <= waiting

        private_redis.start()
        async with open_session(system=True) as db:
            await db.execute(
                update(OutboxEvent).where(OutboxEvent.dispatched_at.is_(None)).values(next_attempt_at=utcnow())
            )
        deadline = time.monotonic() + 30
        while await _pending() and time.monotonic() < deadline:
            await outbox.relay_once(publish)
            await asyncio.sleep(0.2)
        assert await _pending() == []
        while not mail_to(body["email"], "verify_email") and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert len(mail_to(body["email"], "verify_email")) == 1
    finally:
        worker.stop()
        use_broker(previous)
        redis_broker.close()


def test_the_broker_is_redis_when_configured() -> None:
    broker = build_broker("redis://127.0.0.1:1/0")
    assert isinstance(broker, RedisBroker)
    broker.close()
