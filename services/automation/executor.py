"""The executor: runs an execution's actions one at a time, with retries, backoff, dead letters and
a per-tenant concurrency limit, and sends each step to the executor actor of its queue after commit.

:func:`run_step` runs one action: the action's effects in our database, its history row and the
advance of the execution commit together, so a worker killed mid-action leaves nothing and a
redelivered message finds the action done and does nothing. The dispatcher runs an execution's
leading in-database actions itself (:func:`insert_with_inline_actions`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services import broker
from services.automation import actions, config, lineage, slots
from services.automation.actions import ActionContext, PermanentActionError, RetryableActionError, Wait
from services.automation.models import Automation, AutomationActionRun, AutomationExecution
from services.broker import tenant_session
from services.db.statements import execute_core, insert_ignoring_conflicts
from services.outbox import service as outbox
from services.scheduler import service as scheduler
from tenants.base import new_id, utcnow
from tenants.errors import ProblemError
from tenants.isolation import session_tenant_id

log = logging.getLogger("guiju.automation")

ACTIONS_QUEUE = actions.DEFAULT_QUEUE
# The executor actor of ACTIONS_QUEUE; each other queue has its own, named after it (actor_name_for).
EXECUTOR_ACTOR = "run_execution_step"
TERMINAL = frozenset({"succeeded", "failed", "dead"})
RESUME_TIMER = "automation.resume"
# A queued execution untouched this long lost its message (a crash between commit and send). Shorter
# would re-send steps still waiting their turn in a busy queue (harmless: the executor skips a step
# already taken, but wasted work).
STALLED_AFTER = timedelta(minutes=2)
BACKOFF_BASE_SECONDS = 2.0
MAX_BACKOFF_SECONDS = 600.0
# A step over its tenant's concurrency limit waits this long (plus jitter) and tries again.
FAIRNESS_DELAY_MS = 250
MAX_ERROR_LENGTH = 4000


# ---------------------------------------------------------------- execution rows


def truncate(text: str) -> str:
    """``text`` cut to what an execution's error column keeps."""
    return text if len(text) <= MAX_ERROR_LENGTH else text[: MAX_ERROR_LENGTH - 3] + "..."


def jsonable(value: Any) -> Any:
    """``value`` as the JSON it is stored as (UUIDs, dates and the like become text)."""
    return json.loads(json.dumps(value, default=str))


def _finite(value: Any) -> bool:
    """Whether ``value`` can be stored as JSON: no NaN or infinity anywhere in it."""
    try:
        json.dumps(value, default=str, allow_nan=False)
    except ValueError:
        return False
    return True


def finish(execution: AutomationExecution, status: str) -> None:
    """End ``execution`` with ``status`` (succeeded, failed or dead)."""
    now = utcnow()
    execution.status = status
    execution.finished_at = now
    execution.updated_at = now
    execution.next_attempt_at = None


async def insert_row(db: AsyncSession, execution: AutomationExecution) -> bool:
    """Insert ``execution``'s row as it stands, unless its automation has one for its event already."""
    values = {column.key: getattr(execution, column.key) for column in AutomationExecution.__table__.columns}
    inserted = await insert_ignoring_conflicts(
        db, AutomationExecution, [values], conflict=("tenant_id", "automation_id", "event_id"), returning=("id",)
    )
    return bool(inserted)


# ---------------------------------------------------------------- sending steps to the executor


def queue_of(action: Mapping[str, Any]) -> str:
    """The queue ``action`` runs on (``automation.actions``, or its plugin's)."""
    try:
        kind = actions.action_kind(str(action.get("kind")))
        return kind.queue({k: v for k, v in action.items() if k != "kind"})
    except Exception:
        return ACTIONS_QUEUE  # the executor records the problem


def _time_limit_of(action: Mapping[str, Any]) -> int:
    try:
        return int(actions.action_kind(str(action.get("kind"))).time_limit_ms)
    except Exception:
        return 60_000


def actor_name_for(queue: str) -> str:
    """The executor actor's name on ``queue`` (one actor per queue: Dramatiq binds actors to queues)."""
    if queue == ACTIONS_QUEUE:
        return EXECUTOR_ACTOR
    return f"{EXECUTOR_ACTOR}__" + re.sub(r"[^A-Za-z0-9_]", "_", queue)


def _step_kwargs(tenant_id: uuid.UUID, execution_id: uuid.UUID, action_index: int) -> dict[str, Any]:
    return {"tenant_id": str(tenant_id), "execution_id": str(execution_id), "action_index": action_index}


def send_step_after_commit(
    db: AsyncSession,
    tenant_id: uuid.UUID,
    execution_id: uuid.UUID,
    action_index: int,
    queue: str,
    delay_ms: int | None = None,
) -> None:
    """Send the step to its executor once the session's transaction commits (never for a rolled-back
    one). A send lost between commit and send is repaired by :func:`recover_stalled`."""
    broker.send_after_commit(
        db,
        actor_name_for(queue),
        queue_name=queue,
        kwargs=_step_kwargs(tenant_id, execution_id, action_index),
        delay_ms=delay_ms,
    )


def send_step(
    tenant_id: uuid.UUID, execution_id: uuid.UUID, action_index: int, queue: str, delay_ms: int | None = None
) -> None:
    """Enqueue one step of an execution on ``queue`` now (its executor is declared on first use)."""
    broker.send(
        actor_name_for(queue),
        queue_name=queue,
        kwargs=_step_kwargs(tenant_id, execution_id, action_index),
        delay_ms=delay_ms,
    )


# ---------------------------------------------------------------- running a step


def backoff_seconds(attempt: int, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter after ``attempt`` failures; at least ``retry_after``."""
    ceiling = min(MAX_BACKOFF_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempt - 1))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311  (jitter, not secrecy)
    if retry_after is not None:
        delay = max(delay, min(float(retry_after), MAX_BACKOFF_SECONDS * 6))
    return float(delay)


async def _outputs(db: AsyncSession, execution_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await db.execute(
        select(AutomationActionRun.action_index, AutomationActionRun.output)
        .where(
            AutomationActionRun.execution_id == execution_id,
            AutomationActionRun.status.in_(("succeeded", "waiting")),
        )
        .order_by(AutomationActionRun.action_index)
    )
    by_index = {index: output or {} for index, output in rows}
    return [by_index.get(i, {}) for i in range(max(by_index, default=-1) + 1)]


class _Failure(Exception):
    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        retry_after: float | None = None,
        follow_up: actions.FailureFollowUp | None = None,
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after
        self.follow_up = follow_up


async def run_step(tenant_id: uuid.UUID, execution_id: uuid.UUID, action_index: int | None = None) -> str:
    """Run the current action of an execution (the executor actor's body); returns what happened.

    Skips (idempotent redelivery) when the execution is finished, waiting, or already past
    ``action_index``. Over the tenant's concurrency limit, the step is sent again shortly.
    """
    limit_ms = 60_000
    async with tenant_session(tenant_id) as db:
        peek = await db.scalar(
            select(Automation.actions)
            .join(AutomationExecution, AutomationExecution.automation_id == Automation.id)
            .where(AutomationExecution.id == execution_id)
        )
        if peek is not None and action_index is not None and 0 <= action_index < len(peek):
            limit_ms = _time_limit_of(peek[action_index])
            queue = queue_of(peek[action_index])
        else:
            queue = ACTIONS_QUEUE
    token = await slots.current_slots().acquire(tenant_id, config.tenant_concurrency(), limit_ms / 1000 + 30)
    if token is None:
        send_step(
            tenant_id,
            execution_id,
            action_index or 0,
            queue,
            FAIRNESS_DELAY_MS + random.randint(0, FAIRNESS_DELAY_MS),  # noqa: S311
        )
        return "deferred"
    try:
        return await _run_step(tenant_id, execution_id, action_index)
    finally:
        await slots.current_slots().release(tenant_id, token)


@dataclass
class _Attempt:
    """One attempt at an execution's current action, as far as it got (what a failure records)."""

    index: int
    attempt: int  # counts toward the retry budget (reset by a manual retry)
    number: int  # the history's attempt number: never repeats, across manual retries too
    kind_name: str = "?"
    config: dict[str, Any] = field(default_factory=dict)
    started: datetime = field(default_factory=utcnow)
    clock: float = field(default_factory=time.perf_counter)


def in_database(action: Mapping[str, Any]) -> bool:
    """Whether every effect of ``action`` is a write to our database (see ActionKind.effects_in_db)."""
    try:
        kind = actions.action_kind(str(action.get("kind")))
    except KeyError:
        return False
    return getattr(kind, "effects_in_db", False) is True  # a kind that does not say may call out


async def _attempt_action(
    db: AsyncSession,
    tenant_id: uuid.UUID,
    execution: AutomationExecution,
    automation: Automation,
    attempt: _Attempt,
    outputs: list[dict[str, Any]],
) -> dict[str, Any] | Wait:
    """Run the execution's current action (its effects, in ``db``'s transaction) and return its
    result; raises :class:`_Failure` when it failed. ``outputs``: the earlier actions' outputs."""
    index = attempt.index
    action = automation.actions[index]
    attempt.kind_name = str(action.get("kind"))
    attempt.config = {k: v for k, v in action.items() if k != "kind"}
    try:
        kind = actions.action_kind(attempt.kind_name)
    except KeyError:
        raise _Failure(f"there is no action '{attempt.kind_name}'", permanent=True) from None
    ctx = ActionContext(
        tenant_id=tenant_id,
        automation_id=automation.id,
        execution_id=execution.id,
        action_index=index,
        idempotency_key=f"{execution.id}:{index}",
        event=execution.event,
        outputs=outputs,
        attempt=attempt.number,
    )
    attempt.started = utcnow()
    attempt.clock = time.perf_counter()
    try:
        # Events the action emits carry the lineage, so the dispatcher can stop a loop.
        with outbox.caused_by(lineage.cause_for_actions(execution)):
            async with asyncio.timeout(kind.time_limit_ms / 1000):
                result = await kind.run(db, ctx, attempt.config)
        if not isinstance(result, Wait) and not _finite(result):
            # Stored as JSON, which has no infinity: refused here rather than failing in the database.
            raise _Failure("the action's output holds a number that is not finite (NaN or infinity)", permanent=True)
        return result
    except PermanentActionError as exc:
        raise _Failure(str(exc) or type(exc).__name__, permanent=True, follow_up=exc.follow_up) from exc
    except RetryableActionError as exc:
        raise _Failure(
            str(exc) or type(exc).__name__, permanent=False, retry_after=exc.retry_after, follow_up=exc.follow_up
        ) from exc
    except TimeoutError as exc:
        raise _Failure(f"the action ran over its time limit ({kind.time_limit_ms} ms)", permanent=False) from exc
    except ProblemError as exc:
        # Our own services refusing the action (a missing record, a validation problem):
        # retrying the same input gives the same answer.
        raise _Failure(f"{exc.code}: {exc.detail or exc.title}", permanent=True) from exc
    except (_Failure, asyncio.CancelledError):
        raise
    except Exception as exc:
        raise _Failure(f"{type(exc).__name__}: {exc}", permanent=False) from exc


def _output_of(result: dict[str, Any] | Wait) -> dict[str, Any]:
    return {"until": result.until.isoformat()} if isinstance(result, Wait) else jsonable(result or {})


_INSERT_HISTORY = insert(cast(Table, AutomationActionRun.__table__))


def _history_row(execution: AutomationExecution, attempt: _Attempt, result: dict[str, Any] | Wait) -> dict[str, Any]:
    """The values of the history row of a successful attempt."""
    return {
        "tenant_id": execution.tenant_id,
        "id": new_id(),
        "execution_id": execution.id,
        "action_index": attempt.index,
        "attempt": attempt.number,
        "kind": attempt.kind_name,
        "status": "waiting" if isinstance(result, Wait) else "succeeded",
        "input": jsonable(attempt.config),
        "output": _output_of(result),
        "error": None,
        "started_at": attempt.started,
        "duration_ms": int((time.perf_counter() - attempt.clock) * 1000),
        "created_at": utcnow(),
    }


async def _advance(
    db: AsyncSession, execution: AutomationExecution, automation: Automation, result: dict[str, Any] | Wait
) -> str:
    """Move the execution past its current action; returns "waiting", "succeeded" or "advanced" (the
    next action is the caller's to send). A wait arms the execution's resume timer."""
    execution.action_index += 1
    execution.attempts = 0
    execution.error = None
    execution.next_attempt_at = None
    execution.updated_at = utcnow()
    if isinstance(result, Wait):
        execution.status = "waiting"
        execution.next_attempt_at = result.until
        await scheduler.schedule(
            db,
            kind=RESUME_TIMER,
            key=f"resume:{execution.id}",
            due_at=result.until,
            payload={"execution_id": str(execution.id)},
        )
        return "waiting"
    if execution.action_index >= len(automation.actions):
        finish(execution, "succeeded")
        return "succeeded"
    execution.status = "queued"
    return "advanced"


async def _perform(
    db: AsyncSession, tenant_id: uuid.UUID, execution: AutomationExecution, automation: Automation, attempt: _Attempt
) -> str:
    """The executor's attempt: the action's effects, its history row and the execution's advance, in
    ``db``'s transaction. Returns what :func:`_advance` returns; raises :class:`_Failure`."""
    outputs = await _outputs(db, execution.id) if attempt.index else []
    result = await _attempt_action(db, tenant_id, execution, automation, attempt, outputs)
    db.add(AutomationActionRun(**_history_row(execution, attempt, result)))
    outcome = await _advance(db, execution, automation, result)
    await db.flush()
    return outcome


class InlineActionFailed(Exception):
    """The dispatcher could not run an execution's actions itself (one failed, or the event was
    already handled): its whole transaction is to be rolled back and done again without them."""

    def __init__(self, execution_id: uuid.UUID, reason: str) -> None:
        super().__init__(reason)
        self.execution_id = execution_id


async def insert_with_inline_actions(db: AsyncSession, automation: Automation, execution: AutomationExecution) -> None:
    """Run a new execution's leading in-database actions in the caller's transaction, then insert the
    execution as they left it, with their history; the first action that calls out (a webhook, a
    plugin) is sent to its queue after commit.

    The actions run before the execution's row exists, so the row is written once, in its final
    state. Should an action fail, or the row turn out to exist already (the event delivered again),
    :class:`InlineActionFailed` is raised: the caller rolls the transaction back, effects and all,
    and handles the events again without running actions, so the executor makes (and records) the
    attempt. No savepoint is needed, so success, the common case, costs no extra round trips.
    """
    tenant_id = automation.tenant_id
    history: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    while True:
        index = execution.action_index
        action = automation.actions[index]
        if not in_database(action):
            send_step_after_commit(db, tenant_id, execution.id, index, queue_of(action))
            break
        attempt = _Attempt(index=index, attempt=1, number=1)  # a new execution: each action's first try
        try:
            result = await _attempt_action(db, tenant_id, execution, automation, attempt, outputs)
        except _Failure as failure:
            raise InlineActionFailed(execution.id, str(failure)) from failure
        history.append(_history_row(execution, attempt, result))
        outputs.append(_output_of(result))
        if await _advance(db, execution, automation, result) != "advanced":
            break
    if not await insert_row(db, execution):
        raise InlineActionFailed(execution.id, "the event was handled already")
    # Core, not the ORM's bulk insert: the rows are plain values (each with its tenant_id), and this
    # runs for every event.
    await execute_core(db, _INSERT_HISTORY, history)


async def _run_step(tenant_id: uuid.UUID, execution_id: uuid.UUID, action_index: int | None) -> str:
    attempt = _Attempt(index=0, attempt=0, number=0)
    try:
        async with tenant_session(tenant_id) as db:
            execution = await db.scalar(
                select(AutomationExecution).where(AutomationExecution.id == execution_id).with_for_update()
            )
            if execution is None or execution.status not in ("queued", "running"):
                return "skipped"
            if action_index is not None and execution.action_index != action_index:
                return "skipped"
            automation = await db.scalar(select(Automation).where(Automation.id == execution.automation_id))
            if automation is None:
                return "skipped"
            index = execution.action_index
            if index >= len(automation.actions):
                finish(execution, "succeeded")
                return "succeeded"
            number = 1 + (
                await db.scalar(
                    select(func.max(AutomationActionRun.attempt)).where(
                        AutomationActionRun.execution_id == execution.id, AutomationActionRun.action_index == index
                    )
                )
                or 0
            )
            attempt = _Attempt(index=index, attempt=execution.attempts + 1, number=number)
            outcome = await _perform(db, tenant_id, execution, automation, attempt)
            if outcome == "advanced":
                following = execution.action_index
                send_step_after_commit(db, tenant_id, execution.id, following, queue_of(automation.actions[following]))
            return outcome
    except IntegrityError:
        # Another delivery of the same attempt recorded it first; its effects stand, ours rolled back.
        return "skipped"
    except _Failure as failure:
        return await _record_failure(tenant_id, execution_id, attempt, failure)


async def _record_failure(tenant_id: uuid.UUID, execution_id: uuid.UUID, attempt: _Attempt, failure: _Failure) -> str:
    """In a new transaction (the action's rolled back): record the failed attempt (:func:`_note_failure`)."""
    async with tenant_session(tenant_id) as db:
        execution = await db.scalar(
            select(AutomationExecution).where(AutomationExecution.id == execution_id).with_for_update()
        )
        if (
            execution is None
            or execution.status not in ("queued", "running")
            or execution.action_index != attempt.index
            or execution.attempts != attempt.attempt - 1
        ):
            return "skipped"  # someone else moved it on meanwhile
        automation = await db.scalar(select(Automation).where(Automation.id == execution.automation_id))
        return await _note_failure(db, tenant_id, execution, automation, attempt, failure)


async def _note_failure(
    db: AsyncSession,
    tenant_id: uuid.UUID,
    execution: AutomationExecution,
    automation: Automation | None,
    attempt: _Attempt,
    failure: _Failure,
) -> str:
    """Record a failed attempt in ``db``'s transaction, then retry later, fail, or dead-letter the execution."""
    message = truncate(str(failure))
    index = attempt.index
    if failure.follow_up is not None:
        await failure.follow_up(db)
    if failure.permanent:
        status = "failed"
    elif attempt.attempt >= config.max_attempts():
        status = "dead"
    else:
        status = "retrying"
    db.add(
        AutomationActionRun(
            execution_id=execution.id,
            action_index=index,
            attempt=attempt.number,
            kind=attempt.kind_name,
            status=status,
            input=jsonable(attempt.config),
            output=None,
            error=message,
            started_at=attempt.started,
            duration_ms=int((time.perf_counter() - attempt.clock) * 1000),
        )
    )
    execution.attempts = attempt.attempt
    execution.error = message
    if status == "retrying":
        delay = backoff_seconds(attempt.attempt, failure.retry_after)
        execution.status = "queued"
        execution.next_attempt_at = utcnow() + timedelta(seconds=delay)
        execution.updated_at = utcnow()
        known = automation is not None and index < len(automation.actions)
        queue = queue_of(automation.actions[index]) if automation is not None and known else ACTIONS_QUEUE
        send_step_after_commit(db, tenant_id, execution.id, index, queue, int(delay * 1000))
    elif status == "dead":
        execution.dead_reason = truncate(f"gave up after {attempt.attempt} attempts of action {index + 1}: {message}")
        finish(execution, "dead")
    else:
        finish(execution, "failed")
    await db.flush()
    log.warning(
        "automation action failed",
        extra={"execution_id": str(execution.id), "action_index": index, "status": status, "error": message},
    )
    return status


async def resume_waiting(db: AsyncSession, timer: scheduler.DueTimer) -> datetime | None:
    """The ``automation.resume`` timer handler: a waiting execution goes on with its next action."""
    execution = await db.scalar(
        select(AutomationExecution)
        .where(AutomationExecution.id == uuid.UUID(str(timer.payload["execution_id"])))
        .with_for_update()
    )
    if execution is None or execution.status != "waiting":
        return None
    automation = await db.scalar(select(Automation).where(Automation.id == execution.automation_id))
    if automation is None or execution.action_index >= len(automation.actions):
        finish(execution, "succeeded")
        return None
    execution.status = "queued"
    execution.next_attempt_at = None
    execution.updated_at = utcnow()
    send_step_after_commit(
        db,
        execution.tenant_id,
        execution.id,
        execution.action_index,
        queue_of(automation.actions[execution.action_index]),
    )
    return None


async def recover_stalled(db: AsyncSession, now: datetime | None = None) -> int:
    """Send again the queued executions of the session's tenant whose message was lost (a crash
    between commit and send, a broker that dropped it); the executor skips any that ran meanwhile."""
    now = now or utcnow()
    stale = now - STALLED_AFTER
    rows = list(
        await db.execute(
            select(
                AutomationExecution.id,
                AutomationExecution.action_index,
                AutomationExecution.next_attempt_at,
                Automation.actions,
            )
            .join(Automation, Automation.id == AutomationExecution.automation_id)
            .where(AutomationExecution.status.in_(("queued", "running")), AutomationExecution.updated_at < stale)
            .limit(500)
        )
    )
    tenant_id = session_tenant_id(db.sync_session)
    assert tenant_id is not None, "recover_stalled runs in a tenant-bound session"
    sent = 0
    for execution_id, index, next_attempt_at, action_list in rows:
        if next_attempt_at is not None and next_attempt_at > stale:
            continue  # a backoff still running
        queue = queue_of(action_list[index]) if index < len(action_list) else ACTIONS_QUEUE
        send_step_after_commit(db, tenant_id, execution_id, index, queue)
        sent += 1
    return sent


scheduler.register_timer_handler(RESUME_TIMER, resume_waiting)
