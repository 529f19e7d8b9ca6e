"""Workers in one process share Dramatiq's event-loop thread: the last to stop stops it."""

from __future__ import annotations

import dramatiq
from dramatiq.asyncio import get_event_loop_thread

from services.broker import build_broker

QUEUE = "loop-thread-test"


def _worker(broker: dramatiq.Broker) -> dramatiq.Worker:
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    return worker


def test_a_second_worker_shares_the_loop_and_the_last_one_stops_it() -> None:
    first_broker, second_broker = build_broker(None), build_broker(None)
    ran: list[str] = []

    @dramatiq.actor(broker=first_broker, queue_name=QUEUE)
    async def on_first() -> None:
        ran.append("first")

    already_running = get_event_loop_thread()  # the session's stub worker, when it has started
    first = _worker(first_broker)
    loop_thread = get_event_loop_thread()
    assert loop_thread is not None and loop_thread.is_alive()
    if already_running is not None:
        assert loop_thread is already_running

    second = _worker(second_broker)
    assert get_event_loop_thread() is loop_thread  # not replaced: the first worker's thread would be orphaned
    second.stop()
    try:
        # The first worker's async actors still have their loop after the second worker stopped.
        assert get_event_loop_thread() is loop_thread and loop_thread.is_alive()
        on_first.send()
        first_broker.join(QUEUE, timeout=10_000)  # type: ignore[attr-defined]  # StubBroker
        assert ran == ["first"]
    finally:
        first.stop()
        first_broker.close()
        second_broker.close()

    if already_running is None:
        assert get_event_loop_thread() is None
        loop_thread.join(timeout=5)
        assert not loop_thread.is_alive()  # nothing left to keep the process from exiting
    else:
        assert loop_thread.is_alive()  # still the session worker's
