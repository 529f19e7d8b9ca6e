"""The automation service: automations (trigger, conditions, actions) and their executions.

This module is the service's entry for the rest of the platform (routes, other services, tests):
creating, changing and deleting automations, their history and manual retry, and, re-exported, what
the package's other modules offer. The work is split along its seams, each module importing only
those before it:

- ``config``: the settings (attempts, concurrency, retention, chain length);
- ``definitions``: an automation's stored trigger as a struct, finding one;
- ``validation``: what the trigger's events offer to expressions, and every check made at save time;
- ``lineage``: which executions led to an event, so that automations cannot loop;
- ``slots``: the per-tenant limit on actions running at once (Redis, or this process);
- ``executor``: running an execution's actions, retries, backoff, dead letters, and sending steps;
- ``dispatch``: from events (outbox, webhooks, plugins) to executions;
- ``schedules``: cron and plugin-poll timers, and the tenant's maintenance timer.

How an event becomes effects
----------------------------
1. The outbox relay hands events in batches to the ``dispatch_event`` actor;
   :func:`dispatch_events_to_automations` (subscribed to every trigger event type) opens one
   transaction per tenant in the batch, finds the tenant's enabled record and run automations in
   one indexed query, matches them, evaluates their conditions and inserts one execution per
   automation and event (``ON CONFLICT DO NOTHING`` on ``(tenant_id, automation_id, event_id)``: a
   redelivered event creates nothing). The execution's leading in-database actions run right
   there (``executor.insert_with_inline_actions``). Schedules, inbound webhooks and plugin triggers
   create executions the same way (:func:`fire_cron`, :func:`trigger_webhook`,
   :func:`trigger_plugin_event`).
2. After the transaction that created or advanced an execution commits, its next action is sent
   to the executor actor on the action's queue (``automation.actions``, or ``plugin.<name>``);
   nothing is sent for a rolled-back transaction. A send lost to a crash between commit and send is
   repaired by :func:`recover_stalled`, run by a timer.
3. :func:`run_step` runs one action: the action's effects in our database, its history row and
   the advance of the execution commit together, so a worker killed mid-action leaves nothing and a
   redelivered message finds the action done and does nothing.

The event an automation sees (``event`` in conditions and action expressions)
-----------------------------------------------------------------------------
Always: ``event.id``, ``event.type``, ``event.occurred_at`` (ISO text), ``event.actor``.

- record events (``record.created|updated|deleted``): ``event.record_id``, ``event.collection_id``,
  ``event.collection_key``, ``event.entity_id``, ``event.changed_fields`` (field keys),
  ``event.record.<field key>`` (the values after the change; empty for a deletion) and
  ``event.before.<field key>`` (the values before; empty for a creation).
- run events: ``event.run_id``, ``event.procedure_id``, ``event.version_id``, ``event.run_title``,
  ``event.run_status``, ``event.record_id``, ``event.collection_id``, ``event.step_id``,
  ``event.step_key``, ``event.assignee_id``, ``event.due_at``, ``event.exception_id``,
  ``event.title``, ``event.role``, ``event.remind_at``, ``event.data.<anything>``.
- schedule: ``event.scheduled_at`` (the cron tick), ``event.automation_id``.
- webhook: ``event.payload.<anything>``, ``event.headers.<name>`` and each mapped ``event.<name>``.
- plugin: ``event.plugin``, ``event.trigger``, ``event.payload.<anything>``.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import dramatiq
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services import events
from services.automation import dispatch, executor, schedules
from services.automation.actions import ValidationEnv
from services.automation.definitions import (
    TRIGGER_TYPES,
    description_of,
    find_automation,
    trigger_dict,
    trigger_of,
    trigger_type_of,
)
from services.automation.dispatch import (
    RECORD_EVENTS,
    RUN_EVENTS,
    dispatch_events_to_automations,
    event_from_message,
    trigger_plugin_event,
    trigger_webhook,
)
from services.automation.executor import (
    ACTIONS_QUEUE,
    EXECUTOR_ACTOR,
    MAX_BACKOFF_SECONDS,
    RESUME_TIMER,
    STALLED_AFTER,
    TERMINAL,
    actor_name_for,
    backoff_seconds,
    recover_stalled,
    resume_waiting,
    run_step,
    send_step,
)
from services.automation.lineage import LOOP_CODE, cause_for_actions, loop_refusal
from services.automation.models import Automation, AutomationActionRun, AutomationExecution, DefaultEscalation
from services.automation.schedules import (
    CRON_TIMER,
    MAINTENANCE_INTERVAL,
    MAINTENANCE_KEY,
    MAINTENANCE_TIMER,
    PLUGIN_POLL_TIMER,
    fire_cron,
    fire_plugin_poll,
    latest_fire,
    maintain,
    next_fire,
    purge_executions,
    working_day,
)
from services.automation.schemas import (
    AutomationIn,
    AutomationPatch,
    PluginTrigger,
    RecordEventTrigger,
    RunEventTrigger,
    ScheduleTrigger,
    Trigger,
    WebhookTrigger,
)
from services.automation.slots import running_count, use_slots
from services.automation.validation import (
    MAX_ACTIONS,
    MAX_CONDITIONS,
    MAX_NAME_LENGTH,
    automation_problems,
    build_validation_env,
    event_names,
    name_known,
)
from services.db.statements import one_or_raise
from services.marketplace import service as marketplace
from services.outbox import service as outbox
from services.scheduler import service as scheduler
from tenants.base import new_id, utcnow
from tenants.errors import Conflict, NotFound, ValidationProblem
from tenants.models import Role
from tenants.principal import Principal

__all__ = [
    "ACTIONS_QUEUE",
    "CRON_TIMER",
    "EXECUTOR_ACTOR",
    "LOOP_CODE",
    "MAINTENANCE_INTERVAL",
    "MAINTENANCE_KEY",
    "MAINTENANCE_TIMER",
    "MAX_ACTIONS",
    "MAX_BACKOFF_SECONDS",
    "MAX_CONDITIONS",
    "MAX_NAME_LENGTH",
    "MAX_PAGE",
    "PLUGIN_POLL_TIMER",
    "RECORD_EVENTS",
    "RESUME_TIMER",
    "RUN_EVENTS",
    "STALLED_AFTER",
    "TERMINAL",
    "TRIGGER_TYPES",
    "AutomationIn",
    "AutomationPatch",
    "PluginTrigger",
    "RecordEventTrigger",
    "RunEventTrigger",
    "ScheduleTrigger",
    "Trigger",
    "ValidationEnv",
    "WebhookTrigger",
    "actor_name_for",
    "automation_in_state",
    "automation_problems",
    "automation_state",
    "backoff_seconds",
    "build_validation_env",
    "cause_for_actions",
    "create_automation",
    "delete_automation",
    "delete_default_escalations",
    "description_of",
    "dispatch_events_to_automations",
    "event_from_message",
    "event_names",
    "fire_cron",
    "fire_plugin_poll",
    "get_automation",
    "get_execution",
    "install_automation",
    "is_terminal",
    "latest_fire",
    "list_automations",
    "list_executions",
    "loop_refusal",
    "maintain",
    "name_known",
    "next_fire",
    "purge_executions",
    "queue_names",
    "recover_stalled",
    "resume_waiting",
    "retry_execution",
    "run_step",
    "running_count",
    "send_step",
    "set_enabled",
    "trigger_of",
    "trigger_plugin_event",
    "trigger_type_of",
    "trigger_webhook",
    "update_automation",
    "use_slots",
    "working_day",
]

MAX_PAGE = 200


# ---------------------------------------------------------------- automations: reading and writing


async def list_automations(db: AsyncSession, principal: Principal) -> list[Automation]:
    """The workspace's automations, by name (member)."""
    principal.require_role(Role.MEMBER)
    return list(await db.scalars(select(Automation).order_by(Automation.name, Automation.id)))


async def get_automation(db: AsyncSession, principal: Principal, automation_id: uuid.UUID) -> Automation:
    """One automation of the workspace (member)."""
    principal.require_role(Role.MEMBER)
    return await find_automation(db, automation_id)


def plugins_used(data: AutomationIn) -> set[str]:
    """The plugins an automation's trigger and actions use."""
    used = {str(a.get("plugin")) for a in data.actions if a.get("kind") == "plugin"}
    if isinstance(data.trigger, PluginTrigger):
        used.add(data.trigger.plugin)
    return used


async def _check(
    db: AsyncSession,
    name: str,
    trigger: Trigger,
    conditions: list[str],
    action_list: list[dict[str, Any]],
    owner_id: uuid.UUID | None,
    awaiting_plugins: frozenset[str] = frozenset(),
) -> None:
    env = await build_validation_env(db, trigger, action_list, owner_id)
    if awaiting_plugins:
        # What the automation names of a plugin not installed yet is trusted (checked when enabled).
        named = [f"{a.get('plugin')}.{a.get('action')}" for a in action_list if a.get("plugin") in awaiting_plugins]
        triggers = set(env.plugin_triggers or ())
        if isinstance(trigger, PluginTrigger) and trigger.plugin in awaiting_plugins:
            triggers.add(f"{trigger.plugin}.{trigger.trigger}")
        env = replace(
            env,
            installed_plugins=env.installed_plugins | awaiting_plugins,
            plugin_actions=env.plugin_actions | frozenset(named),
            plugin_triggers=frozenset(triggers) if env.plugin_triggers is not None else None,
        )
    problems = automation_problems(name, trigger, conditions, action_list, owner_id, env)
    if problems:
        raise ValidationProblem(errors=problems)


async def install_automation(
    db: AsyncSession,
    data: AutomationIn,
    *,
    actor_id: uuid.UUID | None,
    awaiting_plugins: frozenset[str] = frozenset(),
    disabled_reason: str | None = None,
) -> Automation:
    """Create an automation in the session's tenant after validating it (templates and defaults use
    this directly; people go through :func:`create_automation`).

    ``awaiting_plugins``: plugins the workspace has not installed yet; what the automation uses of
    them is taken on trust, and the automation is created disabled with ``disabled_reason`` (as is
    one created with ``enabled`` false).
    """
    owner_id = data.owner_id or actor_id
    await _check(db, data.name, data.trigger, data.conditions, data.actions, owner_id, awaiting_plugins)
    now = utcnow()
    awaiting = bool(awaiting_plugins & plugins_used(data))
    automation = Automation(
        id=new_id(),
        name=data.name.strip(),
        description_zh=data.description.zh_cn,
        description_en=data.description.en,
        owner_id=owner_id,
        enabled=data.enabled and not awaiting,
        disabled_reason=disabled_reason if awaiting or not data.enabled else None,
        trigger_type=trigger_type_of(data.trigger),
        trigger=trigger_dict(data.trigger),
        conditions=list(data.conditions),
        actions=[dict(a) for a in data.actions],
        missed_fire=data.trigger.missed if isinstance(data.trigger, ScheduleTrigger) else "fire_once",
        created_by=actor_id,
        created_at=now,
        updated_at=now,
    )
    db.add(automation)
    await db.flush()
    await schedules.arm_timers(db, automation)
    await outbox.emit(
        db, events.AUTOMATION_CREATED.name, {"automation_id": str(automation.id), "name": automation.name}
    )
    return automation


def automation_state(automation: Automation) -> dict[str, Any]:
    """An automation's definition as one JSON value (what a template upgrade merges)."""
    return {
        "name": automation.name,
        "description": {"zh-CN": automation.description_zh, "en": automation.description_en},
        "trigger": dict(automation.trigger),
        "conditions": list(automation.conditions),
        "actions": [dict(a) for a in automation.actions],
    }


def automation_in_state(data: AutomationIn) -> dict[str, Any]:
    """What :func:`automation_state` gives once ``data`` is saved."""
    return {
        "name": data.name.strip(),
        "description": {"zh-CN": data.description.zh_cn, "en": data.description.en},
        "trigger": trigger_dict(data.trigger),
        "conditions": list(data.conditions),
        "actions": [dict(a) for a in data.actions],
    }


async def create_automation(db: AsyncSession, principal: Principal, data: AutomationIn) -> Automation:
    """Create an automation (manager); see :func:`install_automation`."""
    principal.require_role(Role.MANAGER)
    return await install_automation(db, data, actor_id=principal.user_id)


async def update_automation(
    db: AsyncSession, principal: Principal, automation_id: uuid.UUID, patch: AutomationPatch
) -> Automation:
    """Change an automation (manager); the result is validated as a whole."""
    principal.require_role(Role.MANAGER)
    automation = await find_automation(db, automation_id, lock=True)
    name = patch.name if patch.name is not None else automation.name
    trigger = patch.trigger if patch.trigger is not None else trigger_of(automation)
    conditions = patch.conditions if patch.conditions is not None else list(automation.conditions)
    action_list = patch.actions if patch.actions is not None else list(automation.actions)
    owner_id = patch.owner_id if patch.owner_id is not None else automation.owner_id
    await _check(db, name, trigger, conditions, action_list, owner_id)
    automation.name = name.strip()
    if patch.description is not None:
        automation.description_zh = patch.description.zh_cn
        automation.description_en = patch.description.en
    automation.owner_id = owner_id
    automation.trigger_type = trigger_type_of(trigger)
    automation.trigger = trigger_dict(trigger)
    automation.missed_fire = trigger.missed if isinstance(trigger, ScheduleTrigger) else "fire_once"
    automation.conditions = list(conditions)
    automation.actions = [dict(a) for a in action_list]
    if patch.enabled is not None:
        automation.enabled = patch.enabled
        automation.disabled_reason = None if patch.enabled else "disabled by a person"
    automation.updated_at = utcnow()
    await db.flush()
    await schedules.arm_timers(db, automation)
    return automation


async def set_enabled(db: AsyncSession, principal: Principal, automation_id: uuid.UUID, enabled: bool) -> Automation:
    """Enable or disable an automation (manager)."""
    principal.require_role(Role.MANAGER)
    automation = await find_automation(db, automation_id, lock=True)
    automation.enabled = enabled
    automation.disabled_reason = None if enabled else "disabled by a person"
    automation.updated_at = utcnow()
    await db.flush()
    await schedules.arm_timers(db, automation)
    return automation


async def delete_automation(db: AsyncSession, principal: Principal, automation_id: uuid.UUID) -> None:
    """Delete an automation and its history (manager)."""
    principal.require_role(Role.MANAGER)
    await _delete(db, await find_automation(db, automation_id, lock=True))


async def delete_default_escalations(db: AsyncSession, procedure_id: uuid.UUID) -> int:
    """Delete the SLA escalations the platform installed for a procedure that is being deleted
    (automations people made are theirs to keep); how many automations went."""
    deleted = 0
    installed = await db.scalars(
        select(Automation).where(Automation.created_by.is_(None), Automation.trigger_type == "run_event")
    )
    for automation in list(installed):
        if automation.trigger.get("procedure_id") == str(procedure_id):
            await _delete(db, automation)
            deleted += 1
    await db.execute(delete(DefaultEscalation).where(DefaultEscalation.procedure_id == procedure_id))
    return deleted


async def _delete(db: AsyncSession, automation: Automation) -> None:
    await scheduler.cancel(db, schedules.cron_key(automation.id))
    execution_ids = select(AutomationExecution.id).where(AutomationExecution.automation_id == automation.id)
    await db.execute(delete(AutomationActionRun).where(AutomationActionRun.execution_id.in_(execution_ids)))
    await db.execute(delete(AutomationExecution).where(AutomationExecution.automation_id == automation.id))
    await db.delete(automation)
    await db.flush()


# ---------------------------------------------------------------- plugins the automations use


def _uses_plugin(automation: Automation, plugin: str) -> list[str]:
    """The names (actions, and the trigger) of ``plugin`` that ``automation`` uses."""
    names = [
        str(a.get("action")) for a in automation.actions if a.get("kind") == "plugin" and a.get("plugin") == plugin
    ]
    if automation.trigger.get("type") == "plugin" and automation.trigger.get("plugin") == plugin:
        names.append(str(automation.trigger.get("trigger")))
    return names


class _PluginDependents:
    """What the marketplace asks before upgrading or uninstalling a plugin."""

    async def actions_in_use(self, db: AsyncSession, plugin: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for automation in await db.scalars(select(Automation).where(Automation.enabled.is_(True))):
            for name in set(_uses_plugin(automation, plugin)):
                counts[name] = counts.get(name, 0) + 1
        return counts

    async def disable_users(self, db: AsyncSession, plugin: str, reason: str) -> int:
        disabled = 0
        for automation in await db.scalars(select(Automation).where(Automation.enabled.is_(True))):
            if _uses_plugin(automation, plugin):
                automation.enabled = False
                automation.disabled_reason = reason
                automation.updated_at = utcnow()
                disabled += 1
        return disabled


marketplace.register_dependents(_PluginDependents())


# ---------------------------------------------------------------- history and manual retry


async def list_executions(
    db: AsyncSession, principal: Principal, automation_id: uuid.UUID, *, limit: int = 50, status: str | None = None
) -> list[AutomationExecution]:
    """An automation's executions, newest first."""
    principal.require_role(Role.MEMBER)
    await find_automation(db, automation_id)
    query = select(AutomationExecution).where(AutomationExecution.automation_id == automation_id)
    if status:
        query = query.where(AutomationExecution.status == status)
    query = query.order_by(AutomationExecution.id.desc()).limit(max(1, min(limit, MAX_PAGE)))
    return list(await db.scalars(query))


async def _execution(db: AsyncSession, execution_id: uuid.UUID, *, lock: bool = False) -> AutomationExecution:
    query = select(AutomationExecution).where(AutomationExecution.id == execution_id)
    return await one_or_raise(db, query, NotFound("No such execution.", code="execution_not_found"), lock=lock)


async def get_execution(
    db: AsyncSession, principal: Principal, execution_id: uuid.UUID
) -> tuple[AutomationExecution, list[AutomationActionRun]]:
    """An execution with every attempt of every action, in order."""
    principal.require_role(Role.MEMBER)
    execution = await _execution(db, execution_id)
    runs = await db.scalars(
        select(AutomationActionRun)
        .where(AutomationActionRun.execution_id == execution_id)
        .order_by(AutomationActionRun.action_index, AutomationActionRun.attempt)
    )
    return execution, list(runs)


async def retry_execution(db: AsyncSession, principal: Principal, execution_id: uuid.UUID) -> AutomationExecution:
    """Run a failed or dead execution again from the action that failed (manager).

    An execution that failed on its conditions has its (current) conditions evaluated again.
    """
    principal.require_role(Role.MANAGER)
    execution = await _execution(db, execution_id, lock=True)
    if execution.status not in ("failed", "dead"):
        raise Conflict(
            "Only failed or dead executions can be retried; this one is {state}.",
            code="execution_not_retryable",
            state=execution.status,
        )
    automation = await find_automation(db, execution.automation_id)
    ran = await db.scalar(
        select(func.count()).select_from(AutomationActionRun).where(AutomationActionRun.execution_id == execution.id)
    )
    if not ran:
        holds, why = dispatch.conditions_hold(automation, execution.event, utcnow())
        if why is not None:
            raise Conflict(why, code="condition_error")
        if not holds:
            raise Conflict("The automation's conditions do not hold for this event.", code="conditions_not_met")
    if execution.action_index >= len(automation.actions):
        raise Conflict("The automation has no action left to run.", code="execution_not_retryable")
    execution.status = "queued"
    execution.attempts = 0
    execution.error = None
    execution.dead_reason = None
    execution.finished_at = None
    execution.next_attempt_at = None
    execution.updated_at = utcnow()
    await db.flush()
    executor.send_step_after_commit(
        db,
        execution.tenant_id,
        execution.id,
        execution.action_index,
        executor.queue_of(automation.actions[execution.action_index]),
    )
    return execution


def is_terminal(status: str) -> bool:
    """Whether an execution with ``status`` is over."""
    return status in executor.TERMINAL


def queue_names() -> list[str]:
    """The executor queues declared in this process."""
    return [
        q for q in dramatiq.get_broker().get_declared_queues() if q == executor.ACTIONS_QUEUE or q.startswith("plugin.")
    ]
