"""The delivery actor: one attempt of one webhook delivery (the service schedules the next)."""

from __future__ import annotations

import uuid

import dramatiq

from services import broker  # noqa: F401  (sets the broker before actors are declared)
from services.webhooks import service


# The service records every receiver's failure and schedules its retries itself; a raise here is
# the platform's own trouble (the database down): Dramatiq retries the message.
@dramatiq.actor(
    actor_name=service.DELIVER_ACTOR, queue_name=service.QUEUE, max_retries=10, min_backoff=1000, max_backoff=60_000
)
async def deliver_webhook(tenant_id: str, delivery_id: str, attempt: int | None = None) -> None:
    await service.deliver(uuid.UUID(tenant_id), uuid.UUID(delivery_id), attempt)
