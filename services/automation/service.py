"""The automation service: automations (trigger, conditions, actions), their executions, and the
executor that runs actions with retries, backoff, dead letters and a per-tenant concurrency limit.

How an event becomes effects
----------------------------
1. The outbox relay hands events in batches to the ``dispatch_event`` actor;
   :func:`dispatch_events_to_automations` (subscribed to every trigger event type) opens one
   transaction per tenant in the batch, finds the tenant's enabled record and run automations in
   one indexed query, matches them, evaluates their conditions and inserts one execution per
   automation and event (``ON CONFLICT DO NOTHING`` on ``(tenant_id, automation_id, event_id)``: a
   redelivered event creates nothing). The execution's leading in-database actions run right
   there (:func:`_insert_with_inline_actions`). Schedules, inbound webhooks and plugin triggers create executions
   the same way (:func:`fire_cron`, :func:`trigger_webhook`, :func:`trigger_plugin_event`).
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

import asyncio
import contextlib
import functools
import json
import logging
import random
import re
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import dramatiq
import msgspec
from cronsim import CronSim, CronSimError
from sqlalchemy import Table, bindparam, delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services import broker
from services.accounts import service as accounts
from services.accounts.service import Principal
from services.automation import actions, replays
from services.automation.actions import (
    ActionContext,
    PermanentActionError,
    RetryableActionError,
    Wait,
)
from services.automation.actions import (
    ValidationEnv as ValidationEnv,
)
from services.automation.models import Automation, AutomationActionRun, AutomationExecution, DefaultEscalation
from services.automation.schemas import (
    AutomationIn as AutomationIn,
)
from services.automation.schemas import (
    AutomationPatch as AutomationPatch,
)
from services.automation.schemas import (
    Description,
    RunEventTrigger,
    ScheduleTrigger,
    Trigger,
    WebhookTrigger,
)
from services.automation.schemas import (
    PluginTrigger as PluginTrigger,
)
from services.automation.schemas import (
    RecordEventTrigger as RecordEventTrigger,
)
from services.broker import tenant_session
from services.db import database
from services.db.statements import execute_core, insert_ignoring_conflicts, one_or_raise
from services.errors import Conflict, FieldProblem, NotFound, ProblemError, ValidationProblem
from services.expressions import ExpressionError, NotFiniteError, compile_expression
from services.marketplace import service as marketplace
from services.names import name_problems
from services.outbox import service as outbox
from services.records import service as records
from services.scheduler import service as scheduler
from services.settings import Settings, load_settings
from services.sops.calendar import service as calendar
from services.sops.calendar.hours import WorkingTime
from services.sops.procedures import service as procedures
from tenants.base import new_id, utcnow
from tenants.isolation import session_tenant_id
from tenants.models import Role

log = logging.getLogger("guiju.automation")

ACTIONS_QUEUE = actions.DEFAULT_QUEUE
# The executor actor of ACTIONS_QUEUE; each other queue has its own, named after it (actor_name_for).
EXECUTOR_ACTOR = "run_execution_step"
RECORD_EVENTS = ("record.created", "record.updated", "record.deleted")
RUN_EVENTS = (
    "run.started",
    "run.completed",
    "step.ready",
    "step.completed",
    "step.overdue",
    "step.due_soon",
    "exception.raised",
    "exception.escalated",
)
TRIGGER_TYPES = ("record_event", "run_event", "schedule", "webhook", "plugin")
TERMINAL = frozenset({"succeeded", "failed", "dead"})

CRON_TIMER = "automation.cron"
PLUGIN_POLL_TIMER = "automation.plugin_poll"
RESUME_TIMER = "automation.resume"
MAINTENANCE_TIMER = "automation.maintenance"
MAINTENANCE_KEY = "automation:maintenance"
MAINTENANCE_INTERVAL = timedelta(minutes=1)
# A queued execution untouched this long lost its message (a crash between commit and send). Shorter
# would re-send steps still waiting their turn in a busy queue (harmless: the executor skips a step
# already taken, but wasted work).
STALLED_AFTER = timedelta(minutes=2)

BACKOFF_BASE_SECONDS = 2.0
MAX_BACKOFF_SECONDS = 600.0
# A step over its tenant's concurrency limit waits this long (plus jitter) and tries again.
FAIRNESS_DELAY_MS = 250
DISPATCH_CONCURRENCY = 2  # workspaces of one event batch dispatched at once (a connection each)
MAX_NAME_LENGTH = 200
MAX_ACTIONS = 50
MAX_CONDITIONS = 50
MAX_ERROR_LENGTH = 4000
MAX_PAGE = 200
_MAPPING_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_RESERVED_EVENT_KEYS = frozenset({"id", "type", "occurred_at", "actor", "payload", "headers"})


# ---------------------------------------------------------------- settings


@functools.cache
def _settings() -> Settings:
    return load_settings("admin")


def max_attempts() -> int:
    """Attempts of a retryable action before the execution is dead-lettered."""
    return max(1, _settings().automation_max_attempts)


def tenant_concurrency() -> int:
    """Actions one tenant may run at the same time."""
    return max(1, _settings().automation_tenant_concurrency)


def retention_days() -> int:
    return _settings().execution_retention_days


def max_chain() -> int:
    """Executions that may follow one another, each caused by an event the previous one emitted."""
    return max(1, _settings().automation_max_chain)


# An automation may trigger itself again once through its own effects (normalising a value it
# watches, say); a second time is a loop.
MAX_SELF_REPEATS = 1
LOOP_CODE = "automation_loop"


# ---------------------------------------------------------------- event names (what conditions may read)

_COMMON_NAMES = frozenset({"event", "event.id", "event.type", "event.occurred_at", "event.actor"})
_RUN_NAMES = frozenset(
    f"event.{n}"
    for n in (
        "run_id",
        "procedure_id",
        "version_id",
        "run_title",
        "run_status",
        "record_id",
        "collection_id",
        "step_id",
        "step_key",
        "assignee_id",
        "due_at",
        "exception_id",
        "title",
        "role",
        "remind_at",
        "data",
        "data.*",
    )
)


def name_known(name: str, offered: frozenset[str]) -> bool:
    """Whether an expression may read ``name``: it is offered, or lies under an offered ``prefix.*``."""
    if name in offered:
        return True
    parts = name.split(".")
    return any(".".join(parts[:i]) + ".*" in offered for i in range(1, len(parts)))


def event_names(trigger: Trigger, collection_fields: frozenset[str] = frozenset()) -> frozenset[str]:
    """The names the trigger's events offer; ``x.*`` means anything under ``x``."""
    names = set(_COMMON_NAMES)
    if isinstance(trigger, RecordEventTrigger):
        names |= {f"event.{n}" for n in ("record_id", "collection_id", "collection_key", "entity_id")}
        names |= {"event.changed_fields", "event.record", "event.before"}
        for key in collection_fields:
            # A group field's sub-values lie under its key.
            names |= {f"event.record.{key}", f"event.record.{key}.*", f"event.before.{key}", f"event.before.{key}.*"}
    elif isinstance(trigger, RunEventTrigger):
        names |= _RUN_NAMES
    elif isinstance(trigger, ScheduleTrigger):
        names |= {"event.scheduled_at", "event.automation_id"}
    elif isinstance(trigger, WebhookTrigger):
        names |= {"event.payload", "event.payload.*", "event.headers", "event.headers.*"}
        for key in trigger.mapping:
            names |= {f"event.{key}", f"event.{key}.*"}
    elif isinstance(trigger, PluginTrigger):
        names |= {"event.plugin", "event.trigger", "event.payload", "event.payload.*"}
    return frozenset(names)


def event_from_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """The ``event`` an automation sees for an outbox message (see the module's docstring)."""
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


# ---------------------------------------------------------------- validation at save time


def _uuids_in(value: Any, found: set[uuid.UUID]) -> None:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            found.add(uuid.UUID(value))
    elif isinstance(value, uuid.UUID):
        found.add(value)
    elif isinstance(value, dict):
        for item in value.values():
            _uuids_in(item, found)
    elif isinstance(value, list):
        for item in value:
            _uuids_in(item, found)


async def build_validation_env(
    db: AsyncSession, trigger: Trigger, action_list: list[dict[str, Any]], owner_id: uuid.UUID | None
) -> ValidationEnv:
    """What the automation refers to that exists in the session's tenant.

    Only the ids the automation mentions are looked up (never every collection or procedure), so
    saving costs a few indexed reads however large the tenant.
    """
    mentioned: set[uuid.UUID] = set()
    _uuids_in(action_list, mentioned)
    if isinstance(trigger, RecordEventTrigger):
        mentioned.add(trigger.collection_id)
    if isinstance(trigger, RunEventTrigger) and trigger.procedure_id:
        mentioned.add(trigger.procedure_id)
    if owner_id:
        mentioned.add(owner_id)
    collection_fields: dict[uuid.UUID, frozenset[str]] = {}
    procedure_ids: set[uuid.UUID] = set()
    for candidate in sorted(mentioned):
        try:
            info = await records.get_collection(db, candidate)
        except NotFound:
            pass
        else:
            collection_fields[candidate] = frozenset(f.key for f in info.fields)
            continue
        try:
            await procedures.version_for_run(db, candidate)
        except NotFound:
            continue
        except ProblemError:
            pass  # exists, but archived or unpublished: a trigger may still name it
        procedure_ids.add(candidate)
    member_ids = await accounts.existing_member_ids(db, mentioned)
    installed = await marketplace.tenant_catalog(db)
    trigger_fields = (
        collection_fields.get(trigger.collection_id, frozenset())
        if isinstance(trigger, RecordEventTrigger)
        else frozenset()
    )
    return ValidationEnv(
        procedure_ids=frozenset(procedure_ids),
        collection_fields=collection_fields,
        installed_plugins=installed.plugins,
        plugin_actions=installed.actions,
        plugin_triggers=installed.triggers,
        member_ids=frozenset(member_ids),
        event_names=event_names(trigger, trigger_fields),
    )


def _cron_problem(cron: str) -> str | None:
    if not cron.strip():
        return "the cron expression is empty"
    try:
        CronSim(cron, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        return f"not a valid cron expression: {exc}"
    except Exception as exc:  # cronsim raises plain errors on some malformed input
        return f"not a valid cron expression: {exc}"
    return None


def _expression_problems(
    source: str, pointer: str, offered: frozenset[str], what: str = "the event"
) -> list[FieldProblem]:
    try:
        compiled = compile_expression(source)
    except ExpressionError as exc:
        return [FieldProblem(pointer=pointer, code="invalid_expression", message=str(exc))]
    unknown = sorted(n for n in compiled.names if not name_known(n, offered))
    return [FieldProblem(pointer=pointer, code="unknown_name", message=f"{what} offers no '{n}'") for n in unknown]


def _trigger_problems(trigger: Trigger, env: ValidationEnv) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    if isinstance(trigger, RecordEventTrigger):
        fields = env.collection_fields.get(trigger.collection_id)
        if fields is None:
            problems.append(
                FieldProblem(
                    pointer="/trigger/collection_id", code="collection_not_found", message="there is no such collection"
                )
            )
        if not trigger.events:
            problems.append(FieldProblem(pointer="/trigger/events", code="required", message="name at least one event"))
        for i, key in enumerate(trigger.fields):
            if fields is not None and key not in fields:
                problems.append(
                    FieldProblem(
                        pointer=f"/trigger/fields/{i}",
                        code="unknown_field",
                        message=f"the collection has no field '{key}'",
                    )
                )
    elif isinstance(trigger, RunEventTrigger):
        if not trigger.events:
            problems.append(FieldProblem(pointer="/trigger/events", code="required", message="name at least one event"))
        if trigger.procedure_id is not None and trigger.procedure_id not in env.procedure_ids:
            problems.append(
                FieldProblem(
                    pointer="/trigger/procedure_id", code="procedure_not_found", message="there is no such procedure"
                )
            )
        if trigger.step_key is not None and trigger.procedure_id is None:
            problems.append(
                FieldProblem(
                    pointer="/trigger/step_key", code="procedure_required", message="a step key needs a procedure_id"
                )
            )
    elif isinstance(trigger, ScheduleTrigger):
        problem = _cron_problem(trigger.cron)
        if problem:
            problems.append(FieldProblem(pointer="/trigger/cron", code="invalid_cron", message=problem))
    elif isinstance(trigger, WebhookTrigger):
        offered = frozenset({"payload", "payload.*", "headers", "headers.*"})
        for key, source in trigger.mapping.items():
            at = f"/trigger/mapping/{key}"
            if not _MAPPING_NAME.fullmatch(key) or key in _RESERVED_EVENT_KEYS:
                problems.append(
                    FieldProblem(
                        pointer=at,
                        code="invalid_name",
                        message="lower_snake_case, and not one of " + ", ".join(sorted(_RESERVED_EVENT_KEYS)),
                    )
                )
            problems += _expression_problems(source, at, offered, "a webhook mapping")
    elif isinstance(trigger, PluginTrigger) and trigger.plugin not in env.installed_plugins:
        problems.append(
            FieldProblem(
                pointer="/trigger/plugin",
                code="plugin_not_installed",
                message=f"'{trigger.plugin}' is not installed",
            )
        )
    elif (
        isinstance(trigger, PluginTrigger)
        and env.plugin_triggers is not None
        and f"{trigger.plugin}.{trigger.trigger}" not in env.plugin_triggers
    ):
        problems.append(
            FieldProblem(
                pointer="/trigger/trigger",
                code="unknown_plugin_trigger",
                message=f"'{trigger.plugin}' offers no trigger '{trigger.trigger}'",
            )
        )
    return problems


def automation_problems(
    name: str,
    trigger: Trigger,
    conditions: list[str],
    action_list: list[dict[str, Any]],
    owner_id: uuid.UUID | None,
    env: ValidationEnv,
) -> list[FieldProblem]:
    """Every problem of an automation, listed at once."""
    problems: list[FieldProblem] = []
    if not name.strip():
        problems.append(FieldProblem(pointer="/name", code="required", message="the name cannot be empty"))
    else:
        problems += name_problems(name, "/name", required=False)
    if len(name) > MAX_NAME_LENGTH:
        problems.append(FieldProblem(pointer="/name", code="too_long", message=f"at most {MAX_NAME_LENGTH} characters"))
    if owner_id is not None and owner_id not in env.member_ids:
        problems.append(FieldProblem(pointer="/owner_id", code="not_a_member", message="the owner must be a member"))
    problems += _trigger_problems(trigger, env)
    if len(conditions) > MAX_CONDITIONS:
        problems.append(
            FieldProblem(pointer="/conditions", code="too_many", message=f"at most {MAX_CONDITIONS} conditions")
        )
    for i, source in enumerate(conditions):
        problems += _expression_problems(source, f"/conditions/{i}", env.event_names)
    if not action_list:
        problems.append(FieldProblem(pointer="/actions", code="required", message="add at least one action"))
    elif len(action_list) > MAX_ACTIONS:
        problems.append(FieldProblem(pointer="/actions", code="too_many", message=f"at most {MAX_ACTIONS} actions"))
    for i, action in enumerate(action_list):
        at = f"/actions/{i}"
        kind_name = action.get("kind")
        if not isinstance(kind_name, str):
            problems.append(FieldProblem(pointer=f"{at}/kind", code="required", message="every action names its kind"))
            continue
        try:
            kind = actions.action_kind(kind_name)
        except KeyError:
            known = ", ".join(sorted(actions.ACTION_KINDS)) or "none"
            problems.append(
                FieldProblem(pointer=f"{at}/kind", code="unknown_action", message=f"no action '{kind_name}' ({known})")
            )
            continue
        config = {k: v for k, v in action.items() if k != "kind"}
        try:
            problems += kind.config_problems(config, at, env)
        except Exception as exc:  # a kind's checker must not turn a save into a 500
            log.exception("action config check failed", extra={"kind": kind_name})
            problems.append(FieldProblem(pointer=at, code="invalid", message=f"cannot check this action: {exc}"))
    return problems


# ---------------------------------------------------------------- automations: reading and writing


def _trigger_dict(trigger: Trigger) -> dict[str, Any]:
    raw: dict[str, Any] = msgspec.to_builtins(trigger)
    return raw


def trigger_type_of(trigger: Trigger) -> str:
    """The trigger's ``type`` tag (``record_event``, ``run_event``, ``schedule``, ``webhook``, ``plugin``)."""
    return str(trigger.__struct_config__.tag)


def trigger_of(automation: Automation) -> Trigger:
    result: Trigger = msgspec.convert(automation.trigger, Trigger)
    return result


def description_of(automation: Automation) -> Description:
    return Description(zh_cn=automation.description_zh, en=automation.description_en)


async def _automation(db: AsyncSession, automation_id: uuid.UUID, *, lock: bool = False) -> Automation:
    missing = NotFound("No such automation.", code="automation_not_found")
    return await one_or_raise(db, select(Automation).where(Automation.id == automation_id), missing, lock=lock)


async def list_automations(db: AsyncSession, principal: Principal) -> list[Automation]:
    principal.require_role(Role.MEMBER)
    return list(await db.scalars(select(Automation).order_by(Automation.name, Automation.id)))


async def get_automation(db: AsyncSession, principal: Principal, automation_id: uuid.UUID) -> Automation:
    principal.require_role(Role.MEMBER)
    return await _automation(db, automation_id)


def _plugins_used(data: AutomationIn) -> set[str]:
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
    them is taken on trust, and the automation is created disabled with ``disabled_reason``.
    """
    owner_id = data.owner_id or actor_id
    await _check(db, data.name, data.trigger, data.conditions, data.actions, owner_id, awaiting_plugins)
    now = utcnow()
    awaiting = bool(awaiting_plugins & _plugins_used(data))
    automation = Automation(
        id=new_id(),
        name=data.name.strip(),
        description_zh=data.description.zh_cn,
        description_en=data.description.en,
        owner_id=owner_id,
        enabled=data.enabled and not awaiting,
        disabled_reason=disabled_reason if awaiting else None,
        trigger_type=trigger_type_of(data.trigger),
        trigger=_trigger_dict(data.trigger),
        conditions=list(data.conditions),
        actions=[dict(a) for a in data.actions],
        missed_fire=data.trigger.missed if isinstance(data.trigger, ScheduleTrigger) else "fire_once",
        created_by=actor_id,
        created_at=now,
        updated_at=now,
    )
    db.add(automation)
    await db.flush()
    await _arm_timers(db, automation)
    await outbox.emit(db, "automation.created", {"automation_id": str(automation.id), "name": automation.name})
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
        "trigger": _trigger_dict(data.trigger),
        "conditions": list(data.conditions),
        "actions": [dict(a) for a in data.actions],
    }


async def create_automation(db: AsyncSession, principal: Principal, data: AutomationIn) -> Automation:
    principal.require_role(Role.MANAGER)
    return await install_automation(db, data, actor_id=principal.user_id)


async def update_automation(
    db: AsyncSession, principal: Principal, automation_id: uuid.UUID, patch: AutomationPatch
) -> Automation:
    """Change an automation (manager); the result is validated as a whole."""
    principal.require_role(Role.MANAGER)
    automation = await _automation(db, automation_id, lock=True)
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
    automation.trigger = _trigger_dict(trigger)
    automation.missed_fire = trigger.missed if isinstance(trigger, ScheduleTrigger) else "fire_once"
    automation.conditions = list(conditions)
    automation.actions = [dict(a) for a in action_list]
    if patch.enabled is not None:
        automation.enabled = patch.enabled
        automation.disabled_reason = None if patch.enabled else "disabled by a person"
    automation.updated_at = utcnow()
    await db.flush()
    await _arm_timers(db, automation)
    return automation


async def set_enabled(db: AsyncSession, principal: Principal, automation_id: uuid.UUID, enabled: bool) -> Automation:
    principal.require_role(Role.MANAGER)
    automation = await _automation(db, automation_id, lock=True)
    automation.enabled = enabled
    automation.disabled_reason = None if enabled else "disabled by a person"
    automation.updated_at = utcnow()
    await db.flush()
    await _arm_timers(db, automation)
    return automation


async def delete_automation(db: AsyncSession, principal: Principal, automation_id: uuid.UUID) -> None:
    """Delete an automation and its history (manager)."""
    principal.require_role(Role.MANAGER)
    await _delete(db, await _automation(db, automation_id, lock=True))


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
    await scheduler.cancel(db, _cron_key(automation.id))
    execution_ids = select(AutomationExecution.id).where(AutomationExecution.automation_id == automation.id)
    await db.execute(delete(AutomationActionRun).where(AutomationActionRun.execution_id.in_(execution_ids)))
    await db.execute(delete(AutomationExecution).where(AutomationExecution.automation_id == automation.id))
    await db.delete(automation)
    await db.flush()


# ---------------------------------------------------------------- schedules


def _cron_key(automation_id: uuid.UUID) -> str:
    return f"cron:{automation_id}"


def working_day(day: date, cal: WorkingTime) -> bool:
    if any(h.date == day for h in cal.extra_working_days):
        return True
    if any(h.date == day for h in cal.holidays):
        return False
    return day.isoweekday() in cal.working_days


def _ticks(trigger: ScheduleTrigger, start: datetime, cal: WorkingTime, *, reverse: bool = False) -> Iterable[datetime]:
    """Cron ticks after (or, reversed, at or before) ``start``, in UTC, on working days when asked."""
    zone = ZoneInfo(cal.timezone)
    local = start.astimezone(zone)
    if reverse:
        local = local + timedelta(seconds=1)  # CronSim's reverse is exclusive; a tick at ``start`` counts
    for tick in CronSim(trigger.cron, local.replace(microsecond=0), reverse=reverse):
        if trigger.business_days_only and not working_day(tick.date(), cal):
            continue
        yield tick.astimezone(UTC)


def _first(ticks: Iterable[datetime], limit: int = 5000) -> datetime | None:
    # A cron like "0 0 30 2 *" never fires; on days-only schedules, a year of holidays is the bound.
    for i, tick in enumerate(ticks):
        if i >= limit:
            return None
        return tick
    return None


def next_fire(trigger: ScheduleTrigger, after: datetime, cal: WorkingTime) -> datetime | None:
    return _first(_ticks(trigger, after, cal))


def latest_fire(trigger: ScheduleTrigger, at_or_before: datetime, cal: WorkingTime) -> datetime | None:
    return _first(_ticks(trigger, at_or_before, cal, reverse=True))


async def _arm_timers(db: AsyncSession, automation: Automation) -> None:
    """Keep the automation's cron timer in step with it, and the tenant's maintenance timer armed."""
    key = _cron_key(automation.id)
    trigger = trigger_of(automation)
    if automation.enabled and isinstance(trigger, ScheduleTrigger):
        cal = await calendar.get_calendar(db)
        due = next_fire(trigger, utcnow(), cal)
        if due is not None:
            await scheduler.schedule(
                db, kind=CRON_TIMER, key=key, due_at=due, payload={"automation_id": str(automation.id)}
            )
        else:
            await scheduler.cancel(db, key)
    else:
        await scheduler.cancel(db, key)
    if automation.enabled and isinstance(trigger, PluginTrigger):
        await _arm_plugin_poll(db, trigger.plugin, trigger.trigger)
    await scheduler.schedule(
        db, kind=MAINTENANCE_TIMER, key=MAINTENANCE_KEY, due_at=utcnow() + MAINTENANCE_INTERVAL, payload={}
    )


async def fire_cron(db: AsyncSession, timer: scheduler.DueTimer, now: datetime | None = None) -> datetime | None:
    """The ``automation.cron`` timer handler: one execution for the tick (keyed by the tick, so a
    double fire makes one execution); returns the next tick after now.

    After downtime the timer comes late: ``fire_once`` makes one execution for the latest missed
    tick, ``skip`` makes none; never one per missed tick.
    """
    now = now or timer.now or utcnow()
    automation = await db.scalar(
        select(Automation).where(Automation.id == uuid.UUID(str(timer.payload["automation_id"])))
    )
    if automation is None or not automation.enabled:
        return None
    trigger = trigger_of(automation)
    if not isinstance(trigger, ScheduleTrigger):
        return None
    cal = await calendar.get_calendar(db)
    tick = latest_fire(trigger, now, cal)
    if tick is not None and tick >= timer.due_at - timedelta(seconds=1):
        late = scheduler.missed(timer, now)
        if not late or trigger.missed == "fire_once":
            event_id = f"cron:{tick.isoformat()}"
            event = {
                "id": event_id,
                "type": "schedule",
                "occurred_at": now.isoformat(),
                "actor": None,
                "scheduled_at": tick.isoformat(),
                "automation_id": str(automation.id),
            }
            await _new_execution(db, automation, event_id, event, now)
    return next_fire(trigger, now, cal)


async def _arm_plugin_poll(db: AsyncSession, plugin: str, trigger: str) -> None:
    """A polled plugin trigger gets one timer per workspace (however many automations use it)."""
    seconds = marketplace.poll_seconds(plugin, trigger)
    if seconds is None:
        return  # fired by the plugin's own events, not polled
    key = f"plugin-poll:{plugin}.{trigger}"
    if await scheduler.get_timer(db, key) is None:
        await scheduler.schedule(
            db,
            kind=PLUGIN_POLL_TIMER,
            key=key,
            due_at=utcnow() + timedelta(seconds=seconds),
            payload={"plugin": plugin, "trigger": trigger, "poll_seconds": seconds},
        )


async def fire_plugin_poll(db: AsyncSession, timer: scheduler.DueTimer, now: datetime | None = None) -> datetime | None:
    """The ``automation.plugin_poll`` timer handler: ask a worker to poll the plugin (its code runs
    only there) while an enabled automation of the workspace uses the trigger; returns the next poll."""
    now = now or timer.now or utcnow()
    plugin, trigger = str(timer.payload["plugin"]), str(timer.payload["trigger"])
    used = any(
        a.trigger.get("plugin") == plugin and a.trigger.get("trigger") == trigger
        for a in await db.scalars(
            select(Automation).where(Automation.trigger_type == "plugin", Automation.enabled.is_(True))
        )
    )
    if not used:
        return None
    await outbox.emit(db, marketplace.POLL_DUE, {"plugin": plugin, "trigger": trigger})
    return now + timedelta(seconds=int(timer.payload["poll_seconds"]))


# ---------------------------------------------------------------- matching and creating executions


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


def _truncate(text: str) -> str:
    return text if len(text) <= MAX_ERROR_LENGTH else text[: MAX_ERROR_LENGTH - 3] + "..."


def _conditions_hold(automation: Automation, event: Mapping[str, Any], now: datetime) -> tuple[bool, str | None]:
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
        finished_at=now if status in TERMINAL else None,
    )


async def _insert_failed(
    db: AsyncSession, automation: Automation, event_id: str, event: Mapping[str, Any], now: datetime, error: str
) -> uuid.UUID | None:
    """A failed execution that says why; its id (None: the automation has one for the event already)."""
    execution = _execution_for(automation, event_id, event, now, status="failed", error=error)
    return execution.id if await _insert_row(db, execution) else None


async def _insert_row(db: AsyncSession, execution: AutomationExecution) -> bool:
    """Insert ``execution``'s row as it stands, unless its automation has one for its event already."""
    values = {column.key: getattr(execution, column.key) for column in AutomationExecution.__table__.columns}
    inserted = await insert_ignoring_conflicts(
        db, AutomationExecution, [values], conflict=("tenant_id", "automation_id", "event_id"), returning=("id",)
    )
    return bool(inserted)


async def _new_execution(
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
    (:func:`_insert_with_inline_actions`). Returns the new execution's id (None: conditions false, or a duplicate).
    """
    holds, why = _conditions_hold(automation, event, now)
    if why is not None:
        return await _insert_failed(db, automation, event_id, event, now, why)
    if not holds:
        return None
    loop = loop_refusal(automation.id, cause)
    if loop is not None:
        log.warning(
            "automation loop refused",
            extra={"automation_id": str(automation.id), "event_id": event_id, "error": loop},
        )
        return await _insert_failed(db, automation, event_id, event, now, loop)
    execution = _execution_for(automation, event_id, event, now)
    if inline and automation.actions and _in_database(automation.actions[0]):
        await _insert_with_inline_actions(db, automation, execution)
        return execution.id
    if not await _insert_row(db, execution):
        return None
    if automation.actions:
        _send_after_commit(db, automation.tenant_id, execution.id, 0, _queue_of(automation.actions[0]))
    return execution.id


def _chain(cause: Mapping[str, Any] | None) -> list[str]:
    raw = cause.get("chain") if cause is not None else None
    return [str(a) for a in raw] if isinstance(raw, list) else []


def _depth(cause: Mapping[str, Any] | None) -> int:
    """How many executions led to the event (0: a person, a timer, the outside world)."""
    if cause is None:
        return 0
    try:
        return max(0, int(cause.get("depth", 0)))
    except (TypeError, ValueError):
        return len(_chain(cause))


def loop_refusal(automation_id: uuid.UUID, cause: Mapping[str, Any] | None) -> str | None:
    """Why an execution of ``automation_id`` for an event with ``cause`` must not start (None: it may).

    ``cause`` is what the event carries (:func:`services.outbox.service.cause_of`): the execution
    whose action emitted it, its depth and the chain of automations that led to it.
    """
    if cause is None:
        return None
    depth = _depth(cause) + 1
    if depth > max_chain():
        return (
            f"{LOOP_CODE}: this event was caused by a chain of {depth - 1} automation executions; "
            f"at most {max_chain()} may follow one another (GUIJU_AUTOMATION_MAX_CHAIN)"
        )
    repeats = _chain(cause).count(str(automation_id))
    if repeats > MAX_SELF_REPEATS:
        return (
            f"{LOOP_CODE}: this automation caused the event itself ({repeats} times in the chain of "
            f"executions that led to it, execution {cause.get('execution_id')}); stopped to avoid a loop"
        )
    return None


def cause_for_actions(execution: AutomationExecution) -> dict[str, Any]:
    """The cause the events emitted by ``execution``'s actions carry: the chain that led to it, plus it."""
    parent = execution.event.get("_cause") if isinstance(execution.event, Mapping) else None
    parent = parent if isinstance(parent, Mapping) else None
    return {
        "execution_id": str(execution.id),
        "automation_id": str(execution.automation_id),
        "depth": _depth(parent) + 1,
        "chain": [*_chain(parent), str(execution.automation_id)][-(max_chain() + 2) :],
    }


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
            except _InlineActionFailed as failed:
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
# get no ORM criteria, so it names its tenant itself, bound from the session's own tenant (never from
# a caller's argument); row-level security still applies on PostgreSQL. Kept apart by
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
        bound = {"tenant_id": session_tenant_id(db.sync_session)}
        for row in await execute_core(db, _EVENT_AUTOMATIONS, bound):
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
                execution_id = await _new_execution(
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


async def trigger_webhook(
    db: AsyncSession, automation_id: uuid.UUID, payload: dict[str, Any], headers: Mapping[str, str]
) -> uuid.UUID:
    """An inbound webhook for ``automation_id`` (its signature already checked): the execution's id.

    The payload is mapped into the event; a mapping that fails gives a failed execution that says
    why. The same ``Idempotency-Key`` header (or ``X-Request-Id``) twice gives the same execution.
    """
    automation = await _automation(db, automation_id)
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
            event[key] = _jsonable(compile_expression(source).evaluate({"payload": payload, "headers": lowered}))
        except NotFiniteError as exc:  # the sender's numbers overflow the mapping: nothing could keep it
            raise ValidationProblem(
                f"The mapping of '{key}' gives a number too large to keep.",
                code="not_finite",
                errors=[FieldProblem(pointer="", code="not_finite", message=f"the mapping of '{key}': {exc}")],
            ) from exc
        except ExpressionError as exc:
            error = f"the mapping of '{key}' failed: {exc}"
            break
    if error is not None:
        created = await _insert_failed(db, automation, event_id, event, now, error)
    else:
        created = await _new_execution(db, automation, event_id, event, now)
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
        execution_id = await _new_execution(db, automation, f"plugin:{event_id}", event, now)
        if execution_id is not None:
            created.append(execution_id)
    return created


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _finite(value: Any) -> bool:
    """Whether ``value`` can be stored as JSON: no NaN or infinity anywhere in it."""
    try:
        json.dumps(value, default=str, allow_nan=False)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------- sending steps to the executor


def _queue_of(action: Mapping[str, Any]) -> str:
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


def _send_after_commit(
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


# ---------------------------------------------------------------- fairness: a per-tenant concurrency limit


class _MemorySlots:
    """Per-tenant running counts in this process (embedded mode: one process runs everything)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[uuid.UUID, int] = {}

    async def acquire(self, tenant_id: uuid.UUID, limit: int, ttl_seconds: float) -> str | None:
        with self._lock:
            if self._running.get(tenant_id, 0) >= limit:
                return None
            self._running[tenant_id] = self._running.get(tenant_id, 0) + 1
            return "local"

    async def release(self, tenant_id: uuid.UUID, token: str) -> None:
        with self._lock:
            left = self._running.get(tenant_id, 0) - 1
            if left > 0:
                self._running[tenant_id] = left
            else:
                self._running.pop(tenant_id, None)

    def running(self, tenant_id: uuid.UUID) -> int:
        return self._running.get(tenant_id, 0)


_ACQUIRE_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


class _RedisSlots:
    """Per-tenant running counts shared by every worker: a sorted set of (token, expiry) per tenant.

    An entry expires after the action's time limit plus a margin, so a worker killed mid-action
    frees its slot by itself. Acquiring is one Lua script (drop expired entries, count, add), so
    workers racing for the last slot cannot both get it.
    """

    KEY_PREFIX = "guiju:automation:running:"

    def __init__(self, url: str, *, key_prefix: str = KEY_PREFIX) -> None:
        self.url = url
        self.key_prefix = key_prefix
        # One client per event loop (a client is bound to the loop it connected on); weak keys, so a
        # closed loop's client goes with it, and a new loop never reuses a dead loop's client.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def _client(self) -> Any:
        from redis.asyncio import Redis

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=2)
            self._clients[loop] = client
        return client

    def _key(self, tenant_id: uuid.UUID) -> str:
        return f"{self.key_prefix}{tenant_id}"

    async def live_count(self, tenant_id: uuid.UUID) -> int:
        """Live (unexpired) slots of ``tenant_id``."""
        return int(await self._client().zcount(self._key(tenant_id), int(time.time() * 1000), "+inf"))

    async def aclose(self) -> None:
        """Close this event loop's connection."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    async def acquire(self, tenant_id: uuid.UUID, limit: int, ttl_seconds: float) -> str | None:
        token = uuid.uuid4().hex
        now_ms = int(time.time() * 1000)
        ttl_ms = int(ttl_seconds * 1000)
        got = await self._client().eval(
            _ACQUIRE_LUA, 1, self._key(tenant_id), now_ms, now_ms + ttl_ms, limit, token, ttl_ms * 2
        )
        return token if int(got) == 1 else None

    async def release(self, tenant_id: uuid.UUID, token: str) -> None:
        await self._client().zrem(self._key(tenant_id), token)


_slots: list[_MemorySlots | _RedisSlots] = []


def slots() -> _MemorySlots | _RedisSlots:
    if not _slots:
        url = _settings().redis_url
        _slots.append(_RedisSlots(url) if url else _MemorySlots())
    return _slots[0]


def use_slots(new: _MemorySlots | _RedisSlots | None) -> None:
    """Replace the concurrency counter (tests, or a process switching brokers); None: from settings."""
    _slots.clear()
    if new is not None:
        _slots.append(new)


# ---------------------------------------------------------------- the executor


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
            queue = _queue_of(peek[action_index])
        else:
            queue = ACTIONS_QUEUE
    token = await slots().acquire(tenant_id, tenant_concurrency(), limit_ms / 1000 + 30)
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
        await slots().release(tenant_id, token)


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


def _in_database(action: Mapping[str, Any]) -> bool:
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
        with outbox.caused_by(cause_for_actions(execution)):
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
    return {"until": result.until.isoformat()} if isinstance(result, Wait) else _jsonable(result or {})


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
        "input": _jsonable(attempt.config),
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
        _finish(execution, "succeeded")
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


class _InlineActionFailed(Exception):
    """The dispatcher could not run an execution's actions itself (one failed, or the event was
    already handled): its whole transaction is to be rolled back and done again without them."""

    def __init__(self, execution_id: uuid.UUID, reason: str) -> None:
        super().__init__(reason)
        self.execution_id = execution_id


async def _insert_with_inline_actions(db: AsyncSession, automation: Automation, execution: AutomationExecution) -> None:
    """Run a new execution's leading in-database actions in the caller's transaction, then insert the
    execution as they left it, with their history; the first action that calls out (a webhook, a
    plugin) is sent to its queue after commit.

    The actions run before the execution's row exists, so the row is written once, in its final
    state. Should an action fail, or the row turn out to exist already (the event delivered again),
    :class:`_InlineActionFailed` is raised: the caller rolls the transaction back, effects and all,
    and handles the events again without running actions, so the executor makes (and records) the
    attempt. No savepoint is needed, so success, the common case, costs no extra round trips.
    """
    tenant_id = automation.tenant_id
    history: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    while True:
        index = execution.action_index
        action = automation.actions[index]
        if not _in_database(action):
            _send_after_commit(db, tenant_id, execution.id, index, _queue_of(action))
            break
        attempt = _Attempt(index=index, attempt=1, number=1)  # a new execution: each action's first try
        try:
            result = await _attempt_action(db, tenant_id, execution, automation, attempt, outputs)
        except _Failure as failure:
            raise _InlineActionFailed(execution.id, str(failure)) from failure
        history.append(_history_row(execution, attempt, result))
        outputs.append(_output_of(result))
        if await _advance(db, execution, automation, result) != "advanced":
            break
    if not await _insert_row(db, execution):
        raise _InlineActionFailed(execution.id, "the event was handled already")
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
                _finish(execution, "succeeded")
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
                _send_after_commit(db, tenant_id, execution.id, following, _queue_of(automation.actions[following]))
            return outcome
    except IntegrityError:
        # Another delivery of the same attempt recorded it first; its effects stand, ours rolled back.
        return "skipped"
    except _Failure as failure:
        return await _record_failure(tenant_id, execution_id, attempt, failure)


def _finish(execution: AutomationExecution, status: str) -> None:
    now = utcnow()
    execution.status = status
    execution.finished_at = now
    execution.updated_at = now
    execution.next_attempt_at = None


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
    message = _truncate(str(failure))
    index = attempt.index
    if failure.follow_up is not None:
        await failure.follow_up(db)
    if failure.permanent:
        status = "failed"
    elif attempt.attempt >= max_attempts():
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
            input=_jsonable(attempt.config),
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
        queue = _queue_of(automation.actions[index]) if automation is not None and known else ACTIONS_QUEUE
        _send_after_commit(db, tenant_id, execution.id, index, queue, int(delay * 1000))
    elif status == "dead":
        execution.dead_reason = _truncate(f"gave up after {attempt.attempt} attempts of action {index + 1}: {message}")
        _finish(execution, "dead")
    else:
        _finish(execution, "failed")
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
        _finish(execution, "succeeded")
        return None
    execution.status = "queued"
    execution.next_attempt_at = None
    execution.updated_at = utcnow()
    _send_after_commit(
        db,
        execution.tenant_id,
        execution.id,
        execution.action_index,
        _queue_of(automation.actions[execution.action_index]),
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
        queue = _queue_of(action_list[index]) if index < len(action_list) else ACTIONS_QUEUE
        _send_after_commit(db, tenant_id, execution_id, index, queue)
        sent += 1
    return sent


async def purge_executions(db: AsyncSession, now: datetime | None = None) -> int:
    """Delete the session tenant's finished executions older than the retention (at least 90 days)."""
    cutoff = (now or utcnow()) - timedelta(days=max(retention_days(), 90))
    old = select(AutomationExecution.id).where(
        AutomationExecution.created_at < cutoff, AutomationExecution.status.in_(tuple(TERMINAL))
    )
    ids = list(await db.scalars(old.limit(5000)))
    if not ids:
        return 0
    await db.execute(delete(AutomationActionRun).where(AutomationActionRun.execution_id.in_(ids)))
    await db.execute(delete(AutomationExecution).where(AutomationExecution.id.in_(ids)))
    return len(ids)


_last_purge: dict[uuid.UUID, date] = {}


async def maintain(db: AsyncSession, timer: scheduler.DueTimer) -> datetime | None:
    """The tenant's ``automation.maintenance`` timer: recover stalled executions and forget signed
    webhook deliveries past their signature's tolerance every few minutes, purge old history once a
    day; it stops when the tenant has no automations."""
    now = timer.now or utcnow()  # the scheduler pass's clock (it may be simulated)
    await recover_stalled(db, now)
    tenant_id = session_tenant_id(db.sync_session)
    # History is kept at least the retention: never purge by a clock ahead of the real one.
    purge_now = min(now, utcnow())
    if tenant_id is not None and _last_purge.get(tenant_id) != purge_now.date():
        await purge_executions(db, purge_now)
        _last_purge[tenant_id] = purge_now.date()
    await replays.prune(db, purge_now)
    if await db.scalar(select(func.count()).select_from(Automation)) == 0:
        return None
    return now + MAINTENANCE_INTERVAL


scheduler.register_timer_handler(CRON_TIMER, fire_cron)
scheduler.register_timer_handler(PLUGIN_POLL_TIMER, fire_plugin_poll)
scheduler.register_timer_handler(RESUME_TIMER, resume_waiting)
scheduler.register_timer_handler(MAINTENANCE_TIMER, maintain)


# ---------------------------------------------------------------- history and manual retry


async def list_executions(
    db: AsyncSession, principal: Principal, automation_id: uuid.UUID, *, limit: int = 50, status: str | None = None
) -> list[AutomationExecution]:
    """An automation's executions, newest first."""
    principal.require_role(Role.MEMBER)
    await _automation(db, automation_id)
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
            f"Only failed or dead executions can be retried; this one is {execution.status}.",
            code="execution_not_retryable",
        )
    automation = await _automation(db, execution.automation_id)
    ran = await db.scalar(
        select(func.count()).select_from(AutomationActionRun).where(AutomationActionRun.execution_id == execution.id)
    )
    if not ran:
        holds, why = _conditions_hold(automation, execution.event, utcnow())
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
    _send_after_commit(
        db,
        execution.tenant_id,
        execution.id,
        execution.action_index,
        _queue_of(automation.actions[execution.action_index]),
    )
    return execution


def running_count(tenant_id: uuid.UUID) -> int:
    """Actions of ``tenant_id`` running in this process (in-process counter only; tests and metrics)."""
    current = slots()
    return current.running(tenant_id) if isinstance(current, _MemorySlots) else -1


def is_terminal(status: str) -> bool:
    return status in TERMINAL


def queue_names() -> list[str]:
    """The executor queues declared in this process."""
    return [q for q in dramatiq.get_broker().get_declared_queues() if q == ACTIONS_QUEUE or q.startswith("plugin.")]
