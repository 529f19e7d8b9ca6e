"""The SLA timers of runs: what the scheduler does when a step's or an exception's moment comes.

A step's timer sends the due-soon reminder and the overdue notice once each, expires an optional
step past its expiry and ends a wait; an exception's timer escalates it. Settling a run arms them
(``services.sops.runs.transitions``); importing this module registers their handlers.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from services import events
from services.outbox import service as outbox
from services.scheduler import service as scheduler
from services.sops.engine import Action, Escalate, Expire, RunStatus, WaitElapsed
from services.sops.runs.models import Run, RunException, StepInstance
from services.sops.runs.state import OPEN_STATUSES
from services.sops.runs.transitions import ESCALATION_TIMER, STEP_TIMER, _act, _timer_at
from tenants.base import utcnow
from tenants.errors import ProblemError

log = logging.getLogger("guiju.runs")


def _timer_payload(run: Run, row: StepInstance) -> dict[str, Any]:
    """The payload of ``step.due_soon`` and ``step.overdue`` (services.events.StepTimerPayload)."""
    return {
        "run_id": str(row.run_id),
        "procedure_id": str(row.procedure_id),
        "run_title": run.title,
        "record_id": str(run.record_id) if run.record_id else None,
        "collection_id": str(run.collection_id) if run.collection_id else None,
        "step_id": row.step_id,
        "step_key": row.key,
        "title": row.title,
        "assignee_id": str(row.assignee_id) if row.assignee_id else None,
        "role": row.role,
        "due_at": row.due_at.isoformat() if row.due_at else None,
    }


_LOCK_NOT_AVAILABLE = "55P03"  # Postgres: FOR UPDATE NOWAIT found the row locked


class RunBusy(Exception):
    """A timer's run is locked by someone else's transaction: the scheduler retries the timer
    shortly (a timer never waits for a run lock while it holds its timer row; see fire_step_timer)."""


async def _lock_run_for_timer(db: AsyncSession, run_id: uuid.UUID) -> Run | None:
    """Lock the run without waiting (None if it is gone). The scheduler already holds the timer row
    while a person's request takes the run first and then arms the timer: waiting here could
    deadlock, so a held run raises :class:`RunBusy` and the timer is retried shortly. (SQLite has
    one writer at a time: nothing to wait for.)"""
    query = select(Run).where(Run.id == run_id).execution_options(populate_existing=True)
    try:
        # The scheduler runs its handler in a savepoint: a failed lock rolls back to it.
        run: Run | None = await db.scalar(query.with_for_update(nowait=True))
    except DBAPIError as exc:
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if code == _LOCK_NOT_AVAILABLE:
            raise RunBusy(f"run {run_id} is locked; the timer will be retried") from exc
        raise
    return run


async def _timer_action(db: AsyncSession, run: Run, action: Action, audit_action: str, now: datetime) -> bool:
    """Apply a timer's action to the locked run; False when the engine refuses it (the step moved
    on, the run finished): logged, and the timer is not retried for it."""
    if run.status != RunStatus.RUNNING:
        return False
    try:
        async with db.begin_nested():
            await _act(db, run, action, actor_id=None, audit_action=audit_action, now=now)
    except ProblemError as exc:
        log.warning(
            "timer action refused", extra={"run_id": str(run.id), "action": type(action).__name__, "code": exc.code}
        )
        return False
    return True


async def fire_step_timer(db: AsyncSession, timer: scheduler.DueTimer) -> datetime | None:
    """The ``run.step`` timer of one step instance: emit ``step.due_soon`` and ``step.overdue``
    once, expire an optional step past its expiry, end a wait whose time came. Returns the step's
    next moment (None when nothing is left)."""
    now = timer.now or utcnow()
    run_id, step_id = uuid.UUID(timer.payload["run_id"]), int(timer.payload["step_id"])
    run = await _lock_run_for_timer(db, run_id)  # first: the lock order of every run change
    if run is None:
        return None
    row = await db.scalar(
        select(StepInstance)
        .where(StepInstance.run_id == run_id, StepInstance.step_id == step_id)
        .execution_options(populate_existing=True)
    )
    if row is None or row.status not in OPEN_STATUSES:
        return None
    if row.remind_at is not None and row.remind_at <= now and row.reminded_at is None:
        row.reminded_at = now
        # A step already overdue gets the overdue notice instead (a timer that fired late).
        if row.due_at is None or now < row.due_at:
            reminder = {**_timer_payload(run, row), "remind_at": row.remind_at.isoformat()}
            await outbox.emit(db, events.STEP_DUE_SOON.name, reminder)
    if row.due_at is not None and row.due_at <= now and row.overdue_notified_at is None:
        row.overdue_notified_at = now
        await outbox.emit(db, events.STEP_OVERDUE.name, _timer_payload(run, row))
    if row.expires_at is not None and row.expires_at <= now:
        await _timer_action(db, run, Expire(step_id=step_id), "run.step_expired", now)
    if row.wait_until is not None and row.wait_until <= now:
        await _timer_action(db, run, WaitElapsed(step_id=step_id), "run.wait_elapsed", now)
    moment = _timer_at(row)
    # A moment still due means the step cannot move on (its action was refused): fired, disarmed.
    return moment if moment is not None and moment > now else None


async def fire_escalation_timer(db: AsyncSession, timer: scheduler.DueTimer) -> datetime | None:
    """The ``run.escalation`` timer of one open exception: escalate it (once: the engine refuses a
    second escalation, and escalating disarms the timer)."""
    now = timer.now or utcnow()
    run_id, exception_id = uuid.UUID(timer.payload["run_id"]), int(timer.payload["exception_id"])
    run = await _lock_run_for_timer(db, run_id)
    if run is None:
        return None
    row = await db.scalar(
        select(RunException)
        .where(RunException.run_id == run_id, RunException.exception_id == exception_id)
        .execution_options(populate_existing=True)
    )
    if row is None or row.status != "open" or row.escalate_at is None:
        return None
    if row.escalate_at > now:  # moved later meanwhile
        return row.escalate_at
    if not await _timer_action(db, run, Escalate(exception_id=exception_id), "run.exception_escalated", now):
        row.escalate_at = None  # refused for good (resolved, escalated, the run finished)
    return None


scheduler.register_timer_handler(STEP_TIMER, fire_step_timer)
scheduler.register_timer_handler(ESCALATION_TIMER, fire_escalation_timer)
