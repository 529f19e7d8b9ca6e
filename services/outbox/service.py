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

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from services.db import database, open_session
from services.db.commit_hooks import AfterCommit, BeforeCommit
from services.logs import actor_var
from services.outbox.models import OutboxEvent
from tenants.base import new_id, utcnow
from tenants.isolation import session_tenant_id

log = logging.getLogger("guiju.outbox")

# A handler receives the messages of the types it subscribed to that arrived together, in order
# (they may belong to several tenants: a handler scopes its work to each message's tenant).
EventHandler = Callable[[list[dict[str, Any]]], Awaitable[None]]
# A publisher hands one batch of messages to the broker.
Publisher = Callable[[list[dict[str, Any]]], None]

# The payload key under which an event carries what caused it (see caused_by()).
CAUSE_KEY = "_cause"

_subscriptions: list[tuple[EventHandler, set[str]]] = []
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
# On Postgres a commit that emitted events notifies this channel, so relays in other processes
# wake at once instead of at their next poll.
NOTIFY_CHANNEL = "guiju_outbox"
RELAY_BATCH = 500  # rows claimed per relay pass
# A relay woken by a commit less than RELAY_BUSY_SECONDS after its last pass began waits
# RELAY_GATHER_SECONDS first, so under load a burst's events leave in a few messages rather than one
# pass and one message each (a pass per commit would cost more CPU than the events' own work); a
# quiet relay relays at once.
RELAY_GATHER_SECONDS = 0.02
RELAY_BUSY_SECONDS = 0.04
MESSAGE_BATCH = 50  # events per broker message


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
    _NOTIFY_RELAYS.add(session, row.id)
    _WAKE_LOCAL_RELAYS.add(session, row.id)
    return row


def _notify_relays(session: Session, emitted: list[uuid.UUID]) -> None:
    # Delivered by Postgres only if the transaction commits; several per transaction fold into one.
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        session.connection().exec_driver_sql(f"NOTIFY {NOTIFY_CHANNEL}")


def _wake_local_relays(emitted: list[uuid.UUID]) -> None:
    # The relays of this process (the only way on SQLite).
    for loop, waker in list(_relay_wakers):
        if not loop.is_closed():
            loop.call_soon_threadsafe(waker.set)


_NOTIFY_RELAYS = BeforeCommit[uuid.UUID]("outbox.notify", _notify_relays)
_WAKE_LOCAL_RELAYS = AfterCommit[uuid.UUID]("outbox.wake", _wake_local_relays)


_MESSAGE_COLUMNS = (
    OutboxEvent.id,
    OutboxEvent.tenant_id,
    OutboxEvent.type,
    OutboxEvent.payload,
    OutboxEvent.actor,
    OutboxEvent.created_at,
    OutboxEvent.attempts,
)


def event_message(row: Any) -> dict[str, Any]:
    """The message a consumer receives for an outbox row (an OutboxEvent, or a row of its columns)."""
    return {
        "id": str(row.id),
        "type": row.type,
        "tenant_id": str(row.tenant_id) if row.tenant_id else None,
        "actor": row.actor,
        "occurred_at": row.created_at.isoformat(),
        "payload": row.payload,
    }


def subscribe(event_type: str, handler: EventHandler) -> None:
    """Have ``handler`` called (in a worker) with the events of ``event_type`` (and of every other
    type it subscribed to) that arrive together: a list of messages, in order, of any tenants.

    A type ending in ``.*`` names every type that starts with what precedes the ``*``
    (``plugin.*``: the events plugins emit, whatever their names)."""
    for subscribed, types in _subscriptions:
        if subscribed is handler:
            types.add(event_type)
            return
    _subscriptions.append((handler, {event_type}))


def _subscribed(event_type: str, types: set[str]) -> bool:
    return event_type in types or any(t.endswith(".*") and event_type.startswith(t[:-1]) for t in types)


async def dispatch(messages: list[dict[str, Any]]) -> int:
    """Hand each handler the messages of its types (in subscription order); returns how many ran."""
    ran = 0
    for handler, types in list(_subscriptions):
        wanted = [m for m in messages if _subscribed(str(m["type"]), types)]
        if wanted:
            await handler(wanted)
            ran += 1
    log.info(
        "events dispatched",
        extra={"event_ids": [m["id"] for m in messages], "event_types": sorted({m["type"] for m in messages})},
    )
    return ran


def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** max(0, attempts - 1)))


def _batches(rows: list[Any], size: int) -> list[list[Any]]:
    """The rows in order, at most ``size`` per batch (a batch may mix tenants; consumers group them)."""
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def _publish_all(publish: Publisher, batches: list[list[dict[str, Any]]]) -> tuple[int, Exception | None]:
    """Publish batch after batch (in a thread: the broker client blocks); stops at the first failure.

    Returns how many batches were published, and the failure if one stopped the rest.
    """
    for done, batch in enumerate(batches):
        try:
            publish(batch)
        except Exception as exc:
            return done, exc
    return len(batches), None


async def relay_once(publish: Publisher, *, batch_size: int = RELAY_BATCH, message_size: int = MESSAGE_BATCH) -> int:
    """Publish due, undispatched events; returns how many were published.

    Rows are claimed with ``FOR UPDATE SKIP LOCKED`` on Postgres, so several relays can run at once.
    Each broker message carries up to ``message_size`` events, so a burst costs the workers a few
    messages rather than one per event. At the first failed publish the pass stops:
    the broker is probably down; the failed batch backs off and the rest wait.
    """
    async with open_session(system=True) as session:
        # Columns, not entities: the relay runs for every burst of events, and loading ORM objects
        # would cost it more CPU than the claim itself.
        query = (
            select(*_MESSAGE_COLUMNS)
            .where(OutboxEvent.dispatched_at.is_(None), OutboxEvent.next_attempt_at <= utcnow())
            .order_by(OutboxEvent.id)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        )
        batches = _batches(list((await session.execute(query)).all()), message_size)
        if not batches:
            return 0
        done, failure = await asyncio.to_thread(
            _publish_all, publish, [[event_message(row) for row in batch] for batch in batches]
        )
        published = [row.id for batch in batches[:done] for row in batch]
        if published:
            await session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.id.in_(published))
                .values(dispatched_at=utcnow(), attempts=OutboxEvent.attempts + 1, last_error=None)
            )
        if failure is not None:
            error = f"{type(failure).__name__}: {failure}"[:1000]
            for row in batches[done]:
                await session.execute(
                    update(OutboxEvent)
                    .where(OutboxEvent.id == row.id)
                    .values(
                        attempts=row.attempts + 1,
                        next_attempt_at=utcnow() + _backoff(row.attempts + 1),
                        last_error=error,
                    )
                )
            log.warning(
                "outbox publish failed; will retry",
                extra={"event_ids": [str(row.id) for row in batches[done]], "error": error},
            )
    return len(published)


class _Listener:
    """LISTEN on the outbox channel (Postgres): sets ``wake`` whenever a commit emitted events."""

    def __init__(self, wake: asyncio.Event) -> None:
        self.wake = wake
        self._connection: AsyncConnection | None = None
        self._driver: Any = None

    def _notified(self, *_args: Any) -> None:
        self.wake.set()

    @property
    def listening(self) -> bool:
        return self._driver is not None and not self._driver.is_closed()

    async def ensure(self) -> None:
        """Listen if not yet (or no longer) listening; a failure leaves the relay polling."""
        if self.listening:
            return
        await self.close()
        engine = database().engine
        if engine.dialect.name != "postgresql":
            return
        try:
            self._connection = await engine.connect()
            raw = await self._connection.get_raw_connection()
            self._driver = raw.driver_connection
            await self._driver.add_listener(NOTIFY_CHANNEL, self._notified)
        except Exception:
            log.warning("outbox relay cannot LISTEN; polling only", exc_info=True)
            await self.close()

    async def close(self) -> None:
        connection, self._connection, self._driver = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()


async def run_relay(publish: Publisher, stop: asyncio.Event, *, interval: float = 1.0) -> None:
    """Relay until ``stop`` is set.

    Wakes at once after a commit that emitted events: in this process through an in-memory event,
    from other processes through Postgres ``LISTEN``; otherwise it polls every ``interval`` seconds
    (a missed notification, or events backing off after a failed publish). When busy it gathers
    for ``RELAY_GATHER_SECONDS`` before a pass.
    """
    wake = asyncio.Event()
    loop = asyncio.get_running_loop()
    registration = (loop, wake)
    _relay_wakers.append(registration)
    listener = _Listener(wake)
    try:
        while not stop.is_set():
            await listener.ensure()
            wake.clear()
            last_pass = loop.time()
            try:
                count = await relay_once(publish)
            except Exception:
                log.exception("outbox relay pass failed")
                count = 0
            if count >= RELAY_BATCH:
                continue  # a backlog: go on at once (events committed meanwhile have set wake)
            waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
            await asyncio.wait(waiters, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            if wake.is_set() and not stop.is_set() and loop.time() - last_pass < RELAY_BUSY_SECONDS:
                await asyncio.sleep(RELAY_GATHER_SECONDS)
    finally:
        _relay_wakers.remove(registration)
        await listener.close()
