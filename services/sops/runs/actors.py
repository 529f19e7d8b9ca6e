"""The SLA timer actor: fires due timers (reminders, overdue notices, expiries, ends of waits,
exception escalations)."""

from __future__ import annotations

import dramatiq

import services.broker  # noqa: F401  (sets the broker before actors are declared)
from services.sops.runs import service

TIMERS_QUEUE = "timers"


@dramatiq.actor(queue_name=TIMERS_QUEUE, max_retries=3, min_backoff=1_000, max_backoff=30_000)
async def scan_overdue_steps() -> None:
    """Sweep every tenant with a due step timer (each in its own tenant-scoped transaction)."""
    await service.sweep_timers()
