"""Signed inbound webhook deliveries, remembered while their signature is accepted.

A validly signed call can be sent again by anyone who saw it (a proxy's log, a retrying sender)
for as long as its timestamp is within the tolerance. Each one is remembered by its signature (an
HMAC over the timestamp and the body) with the answer it got; a copy gets that answer and starts
nothing. The first copy claims the key before it does anything, in its own transaction: a copy
arriving meanwhile waits on the key (a unique index on PostgreSQL, the write lock on SQLite) and
then reads the first one's answer. A first copy that fails rolls its claim back with everything
else, so the next copy is handled afresh.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.automation.models import WebhookReplay
from services.db.statements import insert_ignoring_conflicts
from tenants.base import utcnow
from tenants.isolation import session_tenant_id

# Past the signature's tolerance, a copy is refused as stale anyway; the margin covers clocks
# that differ between the processes answering.
CLOCK_MARGIN = timedelta(minutes=1)
IN_PROGRESS = 0


@dataclass(frozen=True)
class SignedDelivery:
    """A delivery whose signature was verified: the signature (hex) and its timestamp."""

    signature: str
    timestamp: int


@dataclass(frozen=True)
class Answer:
    """What a delivery was answered: the HTTP status and the body's essentials."""

    status: int
    body: dict[str, Any]


def expires_at(delivery: SignedDelivery, tolerance_seconds: int) -> datetime:
    signed = datetime.fromtimestamp(delivery.timestamp, tz=UTC)
    return signed + timedelta(seconds=tolerance_seconds) + CLOCK_MARGIN


def _tenant(db: AsyncSession) -> uuid.UUID:
    tenant_id = session_tenant_id(db.sync_session)
    if tenant_id is None:
        raise RuntimeError("webhook replays are kept per tenant: open a tenant session")
    return tenant_id


async def claim(
    db: AsyncSession, automation_id: uuid.UUID, delivery: SignedDelivery, tolerance_seconds: int
) -> Answer | None:
    """Claim ``delivery`` for this transaction: None when it is new (answer it, then call
    :func:`answer`), else the answer an earlier copy got. Run it first in the transaction."""
    row = {
        "tenant_id": _tenant(db),
        "automation_id": automation_id,
        "signature": delivery.signature,
        "status_code": IN_PROGRESS,
        "answer": {},
        "expires_at": expires_at(delivery, tolerance_seconds),
        "created_at": utcnow(),
    }
    claimed = await insert_ignoring_conflicts(
        db, WebhookReplay, [row], conflict=["tenant_id", "automation_id", "signature"], returning=["signature"]
    )
    if claimed:
        return None
    earlier = (
        await db.execute(
            select(WebhookReplay.status_code, WebhookReplay.answer).where(
                WebhookReplay.automation_id == automation_id, WebhookReplay.signature == delivery.signature
            )
        )
    ).one()
    return Answer(earlier.status_code, dict(earlier.answer))


async def answer(db: AsyncSession, automation_id: uuid.UUID, delivery: SignedDelivery, given: Answer) -> None:
    """Keep the answer of a delivery this transaction claimed."""
    await db.execute(
        update(WebhookReplay)
        .where(WebhookReplay.automation_id == automation_id, WebhookReplay.signature == delivery.signature)
        .values(status_code=given.status, answer=given.body)
    )


async def remember_refusal(
    db: AsyncSession, automation_id: uuid.UUID, delivery: SignedDelivery, tolerance_seconds: int, given: Answer
) -> None:
    """Keep the refusal of a delivery whose transaction rolled back (unless a copy was answered since)."""
    row = {
        "tenant_id": _tenant(db),
        "automation_id": automation_id,
        "signature": delivery.signature,
        "status_code": given.status,
        "answer": given.body,
        "expires_at": expires_at(delivery, tolerance_seconds),
        "created_at": utcnow(),
    }
    await insert_ignoring_conflicts(db, WebhookReplay, [row], conflict=["tenant_id", "automation_id", "signature"])


async def prune(db: AsyncSession, now: datetime | None = None) -> int:
    """Forget the session tenant's deliveries whose signature can no longer be accepted."""
    result = await db.execute(delete(WebhookReplay).where(WebhookReplay.expires_at < (now or utcnow())))
    return int(getattr(result, "rowcount", 0) or 0)
