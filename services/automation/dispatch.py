"""The dispatcher: from events (of the outbox, schedules, inbound webhooks, plugins) to executions.

:func:`dispatch_events_to_automations` (subscribed to every trigger event type) opens one transaction
per tenant in the batch, finds the tenant's enabled record and run automations in one indexed query,
matches them, evaluates their conditions and inserts one execution per automation and event
(``ON CONFLICT DO NOTHING`` on ``(tenant_id, automation_id, event_id)``: a redelivered event creates
nothing). The execution's leading in-database actions run right there
(:func:`services.automation.executor.insert_with_inline_actions`). Schedules, inbound webhooks and
plugin triggers create executions the same way (:func:`new_execution`, :func:`trigger_webhook`,
:func:`trigger_plugin_event`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from services import events
from services.automation import executor, lineage
from services.automation.definitions import find_automation
from services.automation.models import Automation, AutomationExecution
from services.broker import tenant_session
from services.db import database
from services.db.statements import execute_core
from services.expressions import ExpressionError, NotFiniteError, compile_expression
from services.outbox import service as outbox
from tenants.base import new_id, utcnow
from tenants.errors import Conflict, FieldProblem, ValidationProblem

log = logging.getLogger("guiju.automation")

RECORD_EVENTS = events.trigger_events("record_event")
RUN_EVENTS = events.trigger_events("run_event")
DISPATCH_CONCURRENCY = 2  # workspaces of one event batch dispatched at once (a connection each)


def event_from_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """The ``event`` an automation sees for an outbox message (see :mod:`services.automation.service`)."""
    payload = dict(message.get("payload") or {})
    base = {
        "id": message["id"],
        "type": message["type"],
        "occurred_at": message.get("occurred_at"),
        "actor": message.get("actor"),
    }
    if str(message["type"]).startswith("record."):
        return {
            **base,
            "record_id": payload.get("record_id"),
            "collection_id": payload.get("collection_id"),
            "collection_key": payload.get("collection_key"),
            "entity_id": payload.get("entity_id"),
            "changed_fields": list(payload.get("changed_fields") or []),
            "record": dict(payload.get("values") or {}),
            "before": dict(payload.get("before") or {}),
        }
    return {**payload, **base}


def _context(event: Mapping[str, Any], now: datetime, today: date | None = None) -> dict[str, Any]:
    return {"event": event, "now": now, "today": today or now.date()}


def _matches(automation: Automation, event_type: str, event: Mapping[str, Any]) -> bool:
    trigger = automation.trigger
    kind = trigger.get("type")
    if kind == "record_event":
        if str(trigger.get("collection_id")) != str(event.get("collection_id")):
            return False
        if event_type.removeprefix("record.") not in trigger.get("events", []):
            return False
        wanted = trigger.get("fields") or []
        return not wanted or bool(set(wanted) & set(event.get("changed_fields") or []))
    if kind == "run_event":
        if event_type not in trigger.get("events", []):
            return False
        if trigger.get("procedure_id") and str(trigger["procedure_id"]) != str(event.get("procedure_id")):
            return False
        return not trigger.get("step_key") or trigger["step_key"] == event.get("step_key")
    return False


def conditions_hold(automation: Automation, event: Mapping[str, Any], now: datetime) -> tuple[bool, str | None]:
    """(all hold, None) or (False, why one could not be evaluated)."""
    context = _context(event, now)
    for i, source in enumerate(automation.conditions):
        try:
            value = compile_expression(source).evaluate(context)
        except ExpressionError as exc:
            return False, f"condition {i + 1} ({source!r}) could not be evaluated: {exc}"
        if value is not True:
            return False, None
    return True, None


def _execution_for(
    automation: Automation,
    event_id: str,
    event: Mapping[str, Any],
    now: datetime,
    *,
    status: str = "queued",
    error: str | None = None,
) -> AutomationExecution:
    """A new execution of ``automation`` for an event (not yet in the session)."""
    return AutomationExecution(
        tenant_id=automation.tenant_id,
        id=new_id(),
        automation_id=automation.id,
        event_id=event_id[:200],
        status=status,
        event=dict(event),
        action_index=0,
        attempts=0,
        next_attempt_at=None,
        error=error,
        dead_reason=None,
        created_at=now,
        updated_at=now,
        finished_at=now if status in executor.TERMINAL else None,
    )


async def _insert_failed(
    db: AsyncSession, automation: Automation, event_id: str, event: Mapping[str, Any], now: datetime, error: str
) -> uuid.UUID | None:
    """A failed execution that says why; its id (None: the automation has one for the event already)."""
    execution = _execution_for(automation, event_id, event, now, status="failed", error=error)
    return execution.id if await executor.insert_row(db, execution) else None


async def new_execution(
    db: AsyncSession,
    automation: Automation,
    event_id: str,
    event: Mapping[str, Any],
    now: datetime,
    *,
    cause: Mapping[str, Any] | None = None,
    inline: bool = False,
) -> uuid.UUID | None:
    """Evaluate conditions and create the execution (queued, its first action sent after commit).

    A condition that cannot be evaluated gives a failed execution that says why; false
    conditions give none; an event caused by a chain of executions that is too long, or that
    already ran this automation, gives a failed execution (``automation_loop``). With ``inline``
    the leading actions whose effects are all in our database run here, in this transaction
    (:func:`services.automation.executor.insert_with_inline_actions`). Returns the new execution's id
    (None: conditions false, or a duplicate).
    """
    holds, why = conditions_hold(automation, event, now)
    if why is not None:
        return await _insert_failed(db, automation, event_id, event, now, why)
    if not holds:
        return None
    loop = lineage.loop_refusal(automation.id, cause)
    if loop is not None:
        log.warning(
            "automation loop refused",
            extra={"automation_id": str(automation.id), "event_id": event_id, "error": loop},
        )
        return await _insert_failed(db, automation, event_id, event, now, loop)
    execution = _execution_for(automation, event_id, event, now)
    if inline and automation.actions and executor.in_database(automation.actions[0]):
        await executor.insert_with_inline_actions(db, automation, execution)
        return execution.id
    if not await executor.insert_row(db, execution):
        return None
    if automation.actions:
        executor.send_step_after_commit(
            db, automation.tenant_id, execution.id, 0, executor.queue_of(automation.actions[0])
        )
    return execution.id


async def dispatch_events_to_automations(messages: list[dict[str, Any]]) -> int:
    """The outbox subscriber: create the executions a batch of events causes; returns how many.

    Each tenant's events are handled in one transaction, with one query for its automations. The
    leading in-database actions of each new execution run in that transaction too, so for most
    automations (notify, create or update a record, assign a step, start a run) the event's
    effects commit together with its execution, without a second hop through the broker. Should
    one of those actions fail, the tenant's transaction is rolled back and its events handled again
    with every action left to the executor, which retries and records failures as always. One
    automation's broken condition or failing action never stops the others.
    """
    by_tenant: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for message in messages:
        if message.get("tenant_id"):
            by_tenant.setdefault(uuid.UUID(str(message["tenant_id"])), []).append(message)
    # Workspaces are independent, so their transactions overlap (each on its own connection): one
    # workspace's round trips to the database no longer wait behind the others'. SQLite has one
    # writer at a time, and a second transaction would only wait for it (or fail to upgrade).
    sqlite = database().engine.dialect.name == "sqlite"
    slots = asyncio.Semaphore(1 if sqlite else DISPATCH_CONCURRENCY)

    async def dispatch_tenant(tenant_id: uuid.UUID, batch: list[dict[str, Any]]) -> int:
        async with slots:
            try:
                return await _dispatch_tenant_events(tenant_id, batch, inline=True)
            except executor.InlineActionFailed as failed:
                log.info(
                    "the dispatcher's actions were rolled back; the executor takes them over",
                    extra={"execution_id": str(failed.execution_id), "error": str(failed)},
                )
                return await _dispatch_tenant_events(tenant_id, batch, inline=False)

    outcomes = await asyncio.gather(
        *(dispatch_tenant(tenant_id, batch) for tenant_id, batch in by_tenant.items()), return_exceptions=True
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome  # after every workspace has finished: the batch is redelivered, duplicates ignored
    return sum(cast(int, outcome) for outcome in outcomes)


# The dispatcher's read of a workspace's event automations, in Core: it runs for every event batch,
# and through the ORM (the tenant criteria included) it cost almost twice the CPU. Core statements
# get no ORM criteria, so it names its tenant itself, and execute_core binds it from the session's own
# tenant (never from a caller's argument); row-level security still applies on PostgreSQL. Kept apart by
# tests/integration/test_automations.py::test_the_dispatcher_reads_only_the_events_workspace.
_EVENT_AUTOMATIONS = (
    select(cast(Table, Automation.__table__))
    .where(
        Automation.tenant_id == bindparam("tenant_id"),
        Automation.trigger_type.in_(("record_event", "run_event")),
        Automation.enabled.is_(True),
    )
    .order_by(Automation.id)
)


async def _dispatch_tenant_events(tenant_id: uuid.UUID, batch: list[dict[str, Any]], *, inline: bool) -> int:
    created = 0
    async with tenant_session(tenant_id) as db:
        candidates: dict[str, list[Automation]] = {"record_event": [], "run_event": []}
        # Read with Core into objects never added to the session (the dispatcher only reads
        # them): loading them through the ORM cost more CPU than the rest of a typical dispatch.
        for row in await execute_core(db, _EVENT_AUTOMATIONS):  # tenant_id: the session's
            automation = Automation(**row._mapping)
            candidates[automation.trigger_type].append(automation)
        now = utcnow()
        for message in batch:
            event_type = str(message["type"])
            trigger_type = "record_event" if event_type.startswith("record.") else "run_event"
            payload = message.get("payload") or {}
            matching = [a for a in candidates[trigger_type] if _matches(a, event_type, payload)]
            if not matching:
                continue
            event = event_from_message(message)
            cause = outbox.cause_of(message)
            if cause is not None:
                event["_cause"] = cause  # the executor continues the chain from it
            for automation in matching:
                execution_id = await new_execution(
                    db, automation, str(message["id"]), event, now, cause=cause, inline=inline
                )
                created += execution_id is not None
    return created


async def _on_events(messages: list[dict[str, Any]]) -> None:
    await dispatch_events_to_automations(messages)


for _event_type in (*RECORD_EVENTS, *RUN_EVENTS):
    outbox.subscribe(_event_type, _on_events)


async def _on_plugin_events(messages: list[dict[str, Any]]) -> None:
    """Events plugins emit (``plugin.<plugin>.<trigger>``) fire the automations on that trigger."""
    for message in messages:
        parts = str(message["type"]).split(".", 2)
        if len(parts) != 3 or not message.get("tenant_id"):
            continue
        tenant_id = uuid.UUID(str(message["tenant_id"]))
        async with tenant_session(tenant_id) as db:
            await trigger_plugin_event(db, parts[1], parts[2], dict(message.get("payload") or {}), str(message["id"]))


outbox.subscribe("plugin.*", _on_plugin_events)


async def trigger_webhook(
    db: AsyncSession, automation_id: uuid.UUID, payload: dict[str, Any], headers: Mapping[str, str]
) -> uuid.UUID:
    """An inbound webhook for ``automation_id`` (its signature already checked): the execution's id.

    The payload is mapped into the event; a mapping that fails gives a failed execution that says
    why. The same ``Idempotency-Key`` header (or ``X-Request-Id``) twice gives the same execution.
    """
    automation = await find_automation(db, automation_id)
    if automation.trigger_type != "webhook":
        raise Conflict("This automation is not triggered by a webhook.", code="not_a_webhook_automation")
    if not automation.enabled:
        raise Conflict("This automation is disabled.", code="automation_disabled")
    lowered = {k.lower(): v for k, v in headers.items()}
    delivery = lowered.get("idempotency-key") or lowered.get("x-request-id")
    event_id = f"webhook:{delivery}" if delivery else f"webhook:{new_id()}"
    now = utcnow()
    event: dict[str, Any] = {
        "id": event_id,
        "type": "webhook",
        "occurred_at": now.isoformat(),
        "actor": None,
        "payload": payload,
        "headers": lowered,
    }
    error: str | None = None
    for key, source in (automation.trigger.get("mapping") or {}).items():
        try:
            event[key] = executor.jsonable(
                compile_expression(source).evaluate({"payload": payload, "headers": lowered})
            )
        except NotFiniteError as exc:  # the sender's numbers overflow the mapping: nothing could keep it
            raise ValidationProblem(
                "The mapping of '{key}' gives a number too large to keep.",
                code="not_finite",
                errors=[
                    FieldProblem.of(
                        pointer="", code="not_finite", message="the mapping of '{key}': {exc}", key=key, exc=exc
                    )
                ],
                key=key,
            ) from exc
        except ExpressionError as exc:
            error = f"the mapping of '{key}' failed: {exc}"
            break
    if error is not None:
        created = await _insert_failed(db, automation, event_id, event, now, error)
    else:
        created = await new_execution(db, automation, event_id, event, now)
    if created is not None:
        return created
    existing = await db.scalar(
        select(AutomationExecution.id).where(
            AutomationExecution.automation_id == automation.id, AutomationExecution.event_id == event_id[:200]
        )
    )
    if existing is None:  # conditions did not hold: nothing runs, and the caller is told so
        raise Conflict("The automation's conditions do not hold for this payload.", code="conditions_not_met")
    return existing


async def trigger_plugin_event(
    db: AsyncSession, plugin: str, trigger: str, payload: dict[str, Any], event_id: str
) -> list[uuid.UUID]:
    """A plugin-provided trigger fired in the session's tenant: the executions it created."""
    now = utcnow()
    event = {
        "id": event_id,
        "type": f"plugin.{plugin}.{trigger}",
        "occurred_at": now.isoformat(),
        "actor": f"plugin:{plugin}",
        "plugin": plugin,
        "trigger": trigger,
        "payload": payload,
    }
    created: list[uuid.UUID] = []
    for automation in await db.scalars(
        select(Automation).where(Automation.trigger_type == "plugin", Automation.enabled.is_(True))
    ):
        if automation.trigger.get("plugin") != plugin or automation.trigger.get("trigger") != trigger:
            continue
        execution_id = await new_execution(db, automation, f"plugin:{event_id}", event, now)
        if execution_id is not None:
            created.append(execution_id)
    return created
