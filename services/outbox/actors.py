"""The dispatcher actor: every relayed event arrives here and goes to its subscribers."""

from __future__ import annotations

from typing import Any

import dramatiq

import services.broker  # noqa: F401  (sets the broker before actors are declared)
from services.outbox import service

EVENTS_QUEUE = "events"


@dramatiq.actor(queue_name=EVENTS_QUEUE, max_retries=10, min_backoff=500, max_backoff=60_000)
async def dispatch_event(message: dict[str, Any], tenant_id: str | None = None) -> None:
    await service.dispatch(message)


def publish(message: dict[str, Any]) -> None:
    """The relay's publisher: hand one outbox event to the dispatcher through the broker."""
    dispatch_event.send(message=message, tenant_id=message.get("tenant_id"))
