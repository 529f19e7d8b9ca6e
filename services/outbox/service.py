"""Emitting events inside a business transaction, and relaying them to the broker after commit.

``emit`` adds a row in the caller's transaction: the event exists if and only if the change it
describes was committed. The relay publishes rows not yet dispatched; a failed publish (broker
down) leaves the row for a later attempt with backoff, so nothing is lost. Delivery is at least
once: consumers are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from services.db import open_session
from services.logs import actor_var
from services.outbox.models import OutboxEvent
from tenants.base import new_id, utcnow
from tenants.isolation import session_tenant_id

log = logging.getLogger("guiju.outbox")

EventHandler = Callable[[dict[str, Any]], Awaitable[None]]
Publisher = Callable[[dict[str, Any]], None]

# The payload key under which an event carries what caused it (see caused_by()).
CAUSE_KEY = "_cause"

_subscribers: dict[str, list[EventHandler]] = {}
_cause_var: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("event_cause", default=None)


@contextlib.contextmanager
def caused_by(cause: Mapping[str, Any]) -> Iterator[None]:
    """Every event emitted inside the block carries ``cause`` in its payload under ``CAUSE_KEY``.

    Whatever runs work on behalf of an event (an automation action, say) sets this, so the
    consumers of the events that work causes can see the lineage and stop a loop. ``cause`` must
    be JSON-serialisable.
    """
    token = _cause_var.set(dict(cause))
    try:
        yield
    finally:
        _cause_var.reset(token)


def current_cause() -> dict[str, Any] | None:
    """The cause set by the innermost :func:`caused_by` block, if any."""
    return _cause_var.get()


def cause_of(message: Mapping[str, Any]) -> dict[str, Any] | None:
    """The cause an event message carries (None: caused by a person, a timer, the outside world)."""
    cause = (message.get("payload") or {}).get(CAUSE_KEY)
    return dict(cause) if isinstance(cause, Mapping) else None


_relay_wakers: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
MAX_BACKOFF_SECONDS = 60.0


async def emit(
    session: AsyncSession, type: str, payload: dict[str, Any], *, tenant_id: uuid.UUID | None = None
) -> OutboxEvent:
    """Record ``type`` with ``payload`` in the session's transaction (the tenant defaults to the session's).

    Inside a :func:`caused_by` block the payload also carries the cause (unless it names one itself).
    """
    cause = _cause_var.get()
    if cause is not None and CAUSE_KEY not in payload:
        payload = {**payload, CAUSE_KEY: cause}
    row = OutboxEvent(
        id=new_id(),
        tenant_id=tenant_id or session_tenant_id(session.sync_session),
        type=type,
        payload=payload,
        actor=actor_var.get(),
    )
    session.add(row)
    session.sync_session.info["outbox_pending"] = True
    return row


@event.listens_for(Session, "after_commit")
def _wake_relay_after_commit(session: Session) -> None:
    if session.info.pop("outbox_pending", False):
        for loop, waker in list(_relay_wakers):
            if not loop.is_closed():
                loop.call_soon_threadsafe(waker.set)


def event_message(row: OutboxEvent) -> dict[str, Any]:
    """The message a consumer receives for an outbox row."""
    return {
        "id": str(row.id),
        "type": row.type,
        "tenant_id": str(row.tenant_id) if row.tenant_id else None,
        "actor": row.actor,
        "occurred_at": row.created_at.isoformat(),
        "payload": row.payload,
    }


def subscribe(event_type: str, handler: EventHandler) -> None:
    """Have ``handler`` called (in a worker) for every event of ``event_type``."""
    handlers = _subscribers.setdefault(event_type, [])
    if handler not in handlers:
        handlers.append(handler)


async def dispatch(message: dict[str, Any]) -> int:
    """Run every handler subscribed to the message's type; returns how many ran."""
    handlers = list(_subscribers.get(message["type"], []))
    for handler in handlers:
        await handler(message)
    log.info("event dispatched", extra={"event_type": message["type"], "event_id": message["id"]})
    return len(handlers)


def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** max(0, attempts - 1)))


async def relay_once(publish: Publisher, *, batch_size: int = 100) -> int:
    """Publish due, undispatched events; returns how many were published.

    Rows are claimed with ``FOR UPDATE SKIP LOCKED`` on Postgres, so several relays can run at once.
    At the first failed publish the batch stops: the broker is probably down, and the rest wait.
    """
    published = 0
    async with open_session(system=True) as session:
        now = utcnow()
        query = (
            select(OutboxEvent)
            .where(OutboxEvent.dispatched_at.is_(None), OutboxEvent.next_attempt_at <= now)
            .order_by(OutboxEvent.id)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        )
        rows = (await session.scalars(query)).all()
        for row in rows:
            try:
                await asyncio.to_thread(publish, event_message(row))
            except Exception as exc:
                row.attempts += 1
                row.next_attempt_at = utcnow() + _backoff(row.attempts)
                row.last_error = f"{type(exc).__name__}: {exc}"[:1000]
                log.warning(
                    "outbox publish failed; will retry", extra={"event_id": str(row.id), "error": row.last_error}
                )
                break
            row.dispatched_at = utcnow()
            row.attempts += 1
            row.last_error = None
            published += 1
    return published


async def run_relay(publish: Publisher, stop: asyncio.Event, *, interval: float = 1.0) -> None:
    """Relay until ``stop`` is set; wakes at once after a commit that emitted events."""
    wake = asyncio.Event()
    registration = (asyncio.get_running_loop(), wake)
    _relay_wakers.append(registration)
    try:
        while not stop.is_set():
            wake.clear()
            try:
                count = await relay_once(publish)
            except Exception:
                log.exception("outbox relay pass failed")
                count = 0
            if count:
                continue
            waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
            await asyncio.wait(waiters, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
    finally:
        _relay_wakers.remove(registration)
