"""The DB-backed timer table and the scheduler loop that fires it.

A timer is a row ``(tenant_id, key)`` with a ``kind``, a ``due_at`` and a JSON ``payload``. The
owner of a kind registers its handler at import (:func:`register_timer_handler`); any transaction
can :func:`schedule` (upsert by key) or :func:`cancel` a timer of its tenant, so arming a timer
commits or rolls back with the change that wanted it.

Firing, exactly once
--------------------
:func:`fire_due` runs a pass in two steps:

1. A reviewed cross-tenant read (system scope, no locks): which tenants have timers due, oldest
   first. It reads the ``(tenant_id, due_at)`` index, like every other key of a tenant table.
2. For each such tenant, round robin (one timer per tenant per round, so a tenant with ten thousand
   due timers does not hold up the others), one transaction per timer, bound to that tenant (ORM
   criteria, Postgres RLS and the tenant context all set before the first query):

   - claim ``WHERE due_at <= now ORDER BY due_at LIMIT 1 FOR UPDATE SKIP LOCKED``: a row another
     scheduler holds is skipped, not waited for;
   - run the handler in that same transaction, inside a savepoint;
   - delete the row (the handler returned ``None``) or move its ``due_at`` (it returned the next
     time), in that same transaction, then commit.

   The handler's effects and the end of the timer commit together or not at all, and while a
   scheduler holds the row no other one can claim it; once it commits, the row is gone or no
   longer due (Postgres re-checks the ``WHERE`` of a locked row's new version). So with any number
   of schedulers, each fire happens once. Claiming in the tenant-bound transaction (rather than
   claiming across tenants, then switching tenant mid-transaction) keeps the system scope to a
   read-only list of tenant ids and makes the claim a single-shard query under Citus.

A handler that raises: the savepoint rolls back (its effects are undone; the row lock is still
ours), and the same transaction records ``attempts + 1``, ``last_error`` and a ``due_at`` pushed
back exponentially (``BACKOFF_BASE_SECONDS`` doubling up to ``MAX_BACKOFF_SECONDS``). If even that
transaction fails (the connection died, the commit failed), a new short transaction records the
failure, unless another scheduler fired the timer meanwhile. A timer is never dropped: after
``LOUD_AFTER_ATTEMPTS`` failures it keeps retrying at the cap and every failure is logged as an
error. A timer whose kind has no handler in this process fails the same way (and fires once a
process that knows the kind takes it).

SQLite (embedded mode) has no row locks: one scheduler runs there, and each claim transaction
takes SQLite's write lock first, so a request committing meanwhile cannot make it fail halfway.

Missed fires after downtime are the handler's business: it receives the timer with its original
``due_at``; :func:`missed` tells whether the fire comes late. A recurring handler then returns the
next time after *now* (not after ``due_at``), so a long outage gives one fire or none, never a burst
of every missed tick. The handler reads that *now* from ``timer.now`` (the pass's clock, which a
test may set ahead of the real one). A pass fires each timer at most once, and a next time at or
before the pass's now (a handler reading a skewed clock) becomes now + ``MIN_RESCHEDULE_INTERVAL``:
no handler can make a pass, or back-to-back passes, spin on one timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import delete, false, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.broker import tenant_session
from services.db import open_session
from services.logs import actor_var
from services.outbox import service as outbox
from services.scheduler.models import Timer
from tenants.base import new_id, utcnow
from tenants.context import TenantContextError
from tenants.isolation import session_tenant_id

log = logging.getLogger("guiju.scheduler")

BACKOFF_BASE_SECONDS = 5.0
MAX_BACKOFF_SECONDS = 900.0
LOUD_AFTER_ATTEMPTS = 8
MISSED_GRACE = timedelta(minutes=1)
MAX_KIND_LENGTH = 100
MAX_KEY_LENGTH = 200
MAX_ERROR_LENGTH = 2000
# A handler that returns a next time at or before the pass's now (clock skew, a simulated clock)
# has its timer moved to now + this: it fires again in a later pass, never in a tight loop.
MIN_RESCHEDULE_INTERVAL = timedelta(seconds=1)


class DueTimer(msgspec.Struct, frozen=True):
    """A timer as its handler sees it."""

    tenant_id: uuid.UUID | None  # None is reserved for platform timers; the table holds tenant timers
    id: uuid.UUID
    kind: str  # e.g. "automation.cron", "automation.resume", "step.due"
    key: str  # unique per tenant, e.g. f"cron:{automation_id}"
    due_at: datetime  # when it was due (not when it fires: see missed())
    payload: dict[str, Any]
    attempts: int = 0  # failed attempts so far
    # The clock of the pass firing it (fire_due's ``now``, which tests may simulate); None outside a
    # pass. A recurring handler computes its next time from this, not from the real clock.
    now: datetime | None = None


TimerHandler = Callable[[AsyncSession, DueTimer], Awaitable[datetime | None]]
"""Runs in a session bound to the timer's tenant, in the transaction that ends the timer: return
``None`` to delete the timer, or the next ``due_at`` to keep it (recurring). Raise to retry later."""

_handlers: dict[str, TimerHandler] = {}


class UnknownTimerKind(LookupError):
    """No handler is registered for a timer's kind in this process."""


def register_timer_handler(kind: str, handler: TimerHandler) -> None:
    """Have ``handler`` fire the timers of ``kind`` (call it at import of the module that owns the kind)."""
    if not kind or len(kind) > MAX_KIND_LENGTH:
        raise ValueError(f"a timer kind has 1 to {MAX_KIND_LENGTH} characters: {kind!r}")
    existing = _handlers.get(kind)
    if existing is not None and existing is not handler:
        raise ValueError(f"timer kind {kind!r} already has a handler ({existing.__qualname__})")
    _handlers[kind] = handler


def timer_kinds() -> frozenset[str]:
    """The kinds this process can fire."""
    return frozenset(_handlers)


def missed(timer: DueTimer, now: datetime, *, grace: timedelta = MISSED_GRACE) -> bool:
    """Whether ``timer`` fires late enough that its moment was missed (the scheduler was down, or
    the timer kept failing): a cron handler then fires once or skips, as its policy says."""
    return now - timer.due_at > grace


# ---------------------------------------------------------------- arming and disarming


def _require_tenant(db: AsyncSession) -> uuid.UUID:
    tenant_id = session_tenant_id(db.sync_session)
    if tenant_id is None:
        raise TenantContextError("timers belong to a tenant: schedule or cancel them in a tenant-bound session")
    return tenant_id


async def schedule(db: AsyncSession, *, kind: str, key: str, due_at: datetime, payload: dict[str, Any]) -> None:
    """Arm timer ``key`` of the session's tenant for ``due_at``, in the session's transaction.

    Rescheduling the same key replaces its kind, time and payload and clears its failures. If a
    scheduler is firing that key right now, this waits for it (row lock) and then applies.
    """
    tenant_id = _require_tenant(db)
    if not kind or len(kind) > MAX_KIND_LENGTH:
        raise ValueError(f"a timer kind has 1 to {MAX_KIND_LENGTH} characters: {kind!r}")
    if not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"a timer key has 1 to {MAX_KEY_LENGTH} characters: {key!r}")
    if due_at.tzinfo is None:
        raise ValueError("a timer's due_at must be timezone-aware")
    now = utcnow()
    insert = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(Timer).values(
        tenant_id=tenant_id,
        id=new_id(),
        kind=kind,
        key=key,
        due_at=due_at,
        payload=payload,
        attempts=0,
        last_error=None,
        created_at=now,
        updated_at=now,
    )
    await db.execute(
        statement.on_conflict_do_update(
            index_elements=[Timer.tenant_id, Timer.key],
            set_={
                "kind": statement.excluded.kind,
                "due_at": statement.excluded.due_at,
                "payload": statement.excluded.payload,
                "attempts": 0,
                "last_error": None,
                "updated_at": statement.excluded.updated_at,
            },
        )
    )


async def cancel(db: AsyncSession, key: str) -> None:
    """Disarm timer ``key`` of the session's tenant (nothing happens if there is none)."""
    _require_tenant(db)
    await db.execute(delete(Timer).where(Timer.key == key).execution_options(synchronize_session=False))


def _due_timer(row: Any, now: datetime | None = None) -> DueTimer:
    return DueTimer(
        now=now,
        tenant_id=row.tenant_id,
        id=row.id,
        kind=row.kind,
        key=row.key,
        due_at=row.due_at,
        payload=dict(row.payload),
        attempts=row.attempts,
    )


_COLUMNS = (
    Timer.tenant_id,
    Timer.id,
    Timer.kind,
    Timer.key,
    Timer.due_at,
    Timer.payload,
    Timer.attempts,
    Timer.updated_at,
)


async def get_timer(db: AsyncSession, key: str) -> DueTimer | None:
    """Timer ``key`` of the session's tenant, if armed."""
    _require_tenant(db)
    row = (await db.execute(select(*_COLUMNS).where(Timer.key == key))).first()
    return _due_timer(row) if row is not None else None


# ---------------------------------------------------------------- firing


class _Outcome(enum.Enum):
    NOTHING = "nothing"  # no claimable due timer left for the tenant
    FIRED = "fired"
    FAILED = "failed"


@dataclass(frozen=True)
class _Claimed:
    timer: DueTimer
    version: datetime  # updated_at when claimed: the row is ended only if nothing rescheduled it since


def backoff(attempts: int) -> timedelta:
    """How long a timer waits after its ``attempts``-th failure (doubling, capped, a little jitter)."""
    seconds = min(MAX_BACKOFF_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1))
    return timedelta(seconds=seconds * random.uniform(1.0, 1.1))  # noqa: S311  (jitter, not secrecy)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LENGTH]


async def _due_tenants(now: datetime, limit: int) -> list[uuid.UUID]:
    """Tenants with a timer due, the longest-waiting first (a reviewed cross-tenant read)."""
    async with open_session(system=True) as db:
        rows = await db.execute(
            select(Timer.tenant_id)
            .where(Timer.due_at <= now)
            .group_by(Timer.tenant_id)
            .order_by(func.min(Timer.due_at))
            .limit(limit)
        )
        return [row.tenant_id for row in rows]


async def _claim(db: AsyncSession, now: datetime, fired: set[uuid.UUID]) -> _Claimed | None:
    if db.get_bind().dialect.name == "sqlite":
        # Take the database's write lock before reading: the transaction will write, and a read
        # transaction that later needs to write fails if another connection committed meanwhile.
        await db.execute(
            update(Timer).where(false()).values(attempts=Timer.attempts).execution_options(synchronize_session=False)
        )
    query = select(*_COLUMNS).where(Timer.due_at <= now)
    if fired:
        # A pass fires a timer at most once, whatever next time its handler returned.
        query = query.where(Timer.id.not_in(fired))
    row = (await db.execute(query.order_by(Timer.due_at).limit(1).with_for_update(skip_locked=True))).first()
    return _Claimed(_due_timer(row, now), row.updated_at) if row is not None else None


def _this_version(claimed: _Claimed) -> Any:
    return (Timer.id == claimed.timer.id) & (Timer.updated_at == claimed.version)


async def _run_handler(db: AsyncSession, claimed: _Claimed, now: datetime) -> None:
    timer = claimed.timer
    handler = _handlers.get(timer.kind)
    if handler is None:
        raise UnknownTimerKind(f"no handler for timer kind {timer.kind!r} in this process")
    token = actor_var.set(f"timer:{timer.kind}")
    try:
        next_due = await handler(db, timer)
    finally:
        actor_var.reset(token)
    if next_due is None:
        statement: Any = delete(Timer).where(_this_version(claimed))
    else:
        if next_due.tzinfo is None:
            raise ValueError(f"the {timer.kind!r} handler returned a naive datetime")
        if next_due <= now:
            log.warning(
                "timer rescheduled at or before now; moved to a later pass",
                extra={"kind": timer.kind, "key": timer.key, "returned": next_due.isoformat()},
            )
            next_due = now + MIN_RESCHEDULE_INTERVAL
        statement = (
            update(Timer)
            .where(_this_version(claimed))
            .values(due_at=next_due, attempts=0, last_error=None, updated_at=utcnow())
        )
    # A handler that rescheduled its own key (schedule()) changed the row's version: its word stands.
    await db.execute(statement.execution_options(synchronize_session=False))


async def _record_failure(db: AsyncSession, claimed: _Claimed, exc: BaseException, now: datetime) -> bool:
    """Push the timer back after a failure; False when the row changed meanwhile (nothing to do)."""
    timer = claimed.timer
    attempts = timer.attempts + 1
    due_at = max(now, utcnow()) + backoff(attempts)
    result = await db.execute(
        update(Timer)
        .where(_this_version(claimed))
        .values(attempts=attempts, last_error=_describe(exc), due_at=due_at, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if not getattr(result, "rowcount", 1):
        return False
    extra = {
        "tenant_id": str(timer.tenant_id),
        "kind": timer.kind,
        "key": timer.key,
        "attempts": attempts,
        "retry_at": due_at.isoformat(),
        "error": _describe(exc),
    }
    if attempts >= LOUD_AFTER_ATTEMPTS:
        log.error("timer keeps failing; retrying at the capped backoff", extra=extra)
    else:
        log.warning("timer failed; will retry", extra=extra)
    return True


async def _fire_one(tenant_id: uuid.UUID, now: datetime, fired: set[uuid.UUID]) -> _Outcome:
    """Claim and fire one due timer of ``tenant_id`` in one tenant-bound transaction."""
    claimed: _Claimed | None = None
    try:
        async with tenant_session(tenant_id) as db:
            claimed = await _claim(db, now, fired)
            if claimed is None:
                return _Outcome.NOTHING
            fired.add(claimed.timer.id)
            try:
                async with db.begin_nested():
                    await _run_handler(db, claimed, now)
            except Exception as exc:
                # The savepoint undid the handler's work (and dropped what it would have sent after
                # commit); the row is still locked by us.
                await _record_failure(db, claimed, exc, now)
                return _Outcome.FAILED
        return _Outcome.FIRED
    except Exception as exc:
        if claimed is None:
            raise
        # The transaction itself failed (commit, connection): nothing of it was kept. Record the
        # failure in a new one, unless another scheduler has fired the timer since.
        log.exception(
            "timer transaction failed",
            extra={"tenant_id": str(tenant_id), "kind": claimed.timer.kind, "key": claimed.timer.key},
        )
        async with tenant_session(tenant_id) as db:
            await _record_failure(db, claimed, exc, now)
        return _Outcome.FAILED


async def _fire_pass(now: datetime, batch: int) -> tuple[int, int]:
    """One pass: (fired, claimed) — claimed counts failures too."""
    fired = claimed = 0
    seen: set[uuid.UUID] = set()  # timers this pass has claimed: none is claimed twice
    active = await _due_tenants(now, batch)
    while active and claimed < batch:
        still_due: list[uuid.UUID] = []
        for tenant_id in active:
            if claimed >= batch:
                break
            try:
                outcome = await _fire_one(tenant_id, now, seen)
            except Exception:
                log.exception("claiming a timer failed", extra={"tenant_id": str(tenant_id)})
                continue
            if outcome is _Outcome.NOTHING:
                continue
            claimed += 1
            fired += outcome is _Outcome.FIRED
            still_due.append(tenant_id)
        active = still_due
    return fired, claimed


async def fire_due(now: datetime | None = None, *, batch: int = 100) -> int:
    """Fire up to ``batch`` timers due at ``now`` (default: the current time); returns how many
    fired (handlers that raised are not counted: they were pushed back)."""
    fired, _claimed = await _fire_pass(now or utcnow(), batch)
    return fired


async def run_scheduler(stop: asyncio.Event, *, interval: float = 1.0) -> None:
    """Fire due timers until ``stop`` is set: passes back to back while there is work, a pause of
    ``interval`` seconds when idle. An error is logged and the loop goes on."""
    log.info("timer scheduler started", extra={"kinds": sorted(_handlers)})
    while not stop.is_set():
        claimed = 0
        try:
            _fired, claimed = await _fire_pass(utcnow(), 100)
        except Exception:
            log.exception("scheduler pass failed")
        if claimed:
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


# ---------------------------------------------------------------- built-in kinds

EMIT_EVENT = "event.emit"


async def _emit_event(db: AsyncSession, timer: DueTimer) -> datetime | None:
    """``event.emit``: publish the event ``payload["type"]`` with ``payload["payload"]`` when due
    (delayed events; the outbox row commits with the timer's deletion)."""
    event_type = timer.payload.get("type")
    body = timer.payload.get("payload", {})
    if not isinstance(event_type, str) or not event_type or not isinstance(body, dict):
        raise ValueError("an event.emit timer needs a payload {'type': str, 'payload': dict}")
    await outbox.emit(db, event_type, {**body, "timer_key": timer.key, "due_at": timer.due_at.isoformat()})
    return None


async def emit_later(db: AsyncSession, *, key: str, due_at: datetime, type: str, payload: dict[str, Any]) -> None:
    """Emit event ``type`` at ``due_at`` (once; rescheduling ``key`` moves it)."""
    await schedule(db, kind=EMIT_EVENT, key=key, due_at=due_at, payload={"type": type, "payload": payload})


register_timer_handler(EMIT_EVENT, _emit_event)
