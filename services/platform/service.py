"""Readiness checks and the embedded runtime (in-process worker and outbox relay)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import text

from services.db import database
from services.outbox import service as outbox
from services.outbox.actors import publish

log = logging.getLogger("guiju.platform")


async def check_database() -> str | None:
    """None when the database answers, else the reason."""
    try:
        async with database().engine.connect() as conn:
            await conn.execute(text("select 1"))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    return None


async def check_broker() -> str | None:
    broker = dramatiq.get_broker()
    if not isinstance(broker, RedisBroker):
        return None  # the in-process broker is always there
    try:
        await asyncio.to_thread(broker.client.ping)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    return None


async def readiness() -> dict[str, str]:
    db_problem, broker_problem = await asyncio.gather(check_database(), check_broker())
    return {"database": db_problem or "ok", "broker": broker_problem or "ok"}


@dataclass
class EmbeddedRuntime:
    """The worker and relay that ``guiju run`` keeps in the API process."""

    worker_threads: int = 2
    relay_interval: float = 1.0
    _worker: dramatiq.Worker | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _relay_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._worker = dramatiq.Worker(dramatiq.get_broker(), worker_threads=self.worker_threads, worker_timeout=100)
        self._worker.start()
        self._relay_task = asyncio.create_task(outbox.run_relay(publish, self._stop, interval=self.relay_interval))
        log.info("embedded worker and relay started")

    async def stop(self) -> None:
        self._stop.set()
        if self._relay_task is not None:
            await self._relay_task
        if self._worker is not None:
            await asyncio.to_thread(self._worker.stop)
        log.info("embedded worker and relay stopped")
