"""The embedded runtime: the worker, outbox relay and timer table (cron, delays, step SLAs) that
``guiju run`` keeps in the API process (on SQLite, this one scheduler is the only one)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import dramatiq

from services.outbox import service as outbox
from services.outbox.actors import publish
from services.scheduler import service as scheduler
from services.sops.runs import service as _runs  # noqa: F401  (registers the step and escalation timers)

log = logging.getLogger("guiju.runtime")


@dataclass
class EmbeddedRuntime:
    """Starts and stops the in-process worker and relay with the app."""

    worker_threads: int = 2
    relay_interval: float = 1.0
    _worker: dramatiq.Worker | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _relay_task: asyncio.Task[None] | None = None
    _scheduler_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._worker = dramatiq.Worker(dramatiq.get_broker(), worker_threads=self.worker_threads, worker_timeout=100)
        self._worker.start()
        self._relay_task = asyncio.create_task(outbox.run_relay(publish, self._stop, interval=self.relay_interval))
        self._scheduler_task = asyncio.create_task(scheduler.run_scheduler(self._stop))
        log.info("embedded worker and relay started")

    async def stop(self) -> None:
        self._stop.set()
        if self._relay_task is not None:
            await self._relay_task
        if self._scheduler_task is not None:
            await self._scheduler_task
        if self._worker is not None:
            await asyncio.to_thread(self._worker.stop)
        log.info("embedded worker and relay stopped")
