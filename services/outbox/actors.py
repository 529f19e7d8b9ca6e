"""The dispatcher actor: every relayed event arrives here and goes to its subscribers."""

from __future__ import annotations

import logging
from typing import Any

import dramatiq

import services.broker  # noqa: F401  (sets the broker before actors are declared)
from services.outbox import service

EVENTS_QUEUE = "events"

log = logging.getLogger("guiju.outbox")


@dramatiq.actor(queue_name=EVENTS_QUEUE, max_retries=10, min_backoff=500, max_backoff=60_000)
async def dispatch_event(
    messages: list[dict[str, Any]] | None = None, tenant_id: str | None = None, message: dict[str, Any] | None = None
) -> None:
    """Dispatch a batch of events (``message``: one event, as sent by earlier releases)."""
    batch = messages if messages is not None else [message] if message is not None else []
    try:
        await service.dispatch(batch)
    except Exception:
        if len(batch) <= 1:
            raise  # Dramatiq retries it with backoff
        # One event that keeps failing must not hold back the others: each goes on alone. Delivery
        # is at least once anyway, and every handler takes a redelivered event.
        log.warning("event batch failed; its events are retried one by one", exc_info=True)
        for one in batch:
            dispatch_event.send(messages=[one], tenant_id=one.get("tenant_id"))


def publish(messages: list[dict[str, Any]]) -> None:
    """The relay's publisher: hand a batch of outbox events to the dispatcher (``tenant_id`` names
    the tenant for the worker's log context when the batch has only one)."""
    if messages:
        tenants = {m.get("tenant_id") for m in messages}
        dispatch_event.send(messages=messages, tenant_id=tenants.pop() if len(tenants) == 1 else None)
