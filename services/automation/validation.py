"""What an automation may say, checked when it is saved: the names its expressions may read
(what the trigger's events offer), its trigger, conditions and actions; every problem listed at once."""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from cronsim import CronSim, CronSimError
from sqlalchemy.ext.asyncio import AsyncSession

from services.accounts import service as accounts
from services.automation import actions
from services.automation.actions import ValidationEnv
from services.automation.schemas import (
    PluginTrigger,
    RecordEventTrigger,
    RunEventTrigger,
    ScheduleTrigger,
    Trigger,
    WebhookTrigger,
)
from services.expressions import ExpressionError, compile_expression
from services.marketplace import service as marketplace
from services.names import name_problems
from services.records import service as records
from services.sops.procedures import service as procedures
from tenants.errors import FieldProblem, NotFound, ProblemError

log = logging.getLogger("guiju.automation")

MAX_NAME_LENGTH = 200
MAX_ACTIONS = 50
MAX_CONDITIONS = 50
_MAPPING_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_RESERVED_EVENT_KEYS = frozenset({"id", "type", "occurred_at", "actor", "payload", "headers"})


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


# ---------------------------------------------------------------- checks at save time


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
    return [
        FieldProblem.of(pointer=pointer, code="unknown_name", message="{what} offers no '{n}'", what=what, n=n)
        for n in unknown
    ]


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
                    FieldProblem.of(
                        pointer=f"/trigger/fields/{i}",
                        code="unknown_field",
                        message="the collection has no field '{key}'",
                        key=key,
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
                    FieldProblem.of(
                        at,
                        "invalid_name",
                        "lower_snake_case, and not one of {reserved}",
                        reserved=", ".join(sorted(_RESERVED_EVENT_KEYS)),
                    )
                )
            problems += _expression_problems(source, at, offered, "a webhook mapping")
    elif isinstance(trigger, PluginTrigger) and trigger.plugin not in env.installed_plugins:
        problems.append(
            FieldProblem.of(
                pointer="/trigger/plugin",
                code="plugin_not_installed",
                message="'{plugin}' is not installed",
                plugin=trigger.plugin,
            )
        )
    elif (
        isinstance(trigger, PluginTrigger)
        and env.plugin_triggers is not None
        and f"{trigger.plugin}.{trigger.trigger}" not in env.plugin_triggers
    ):
        problems.append(
            FieldProblem.of(
                pointer="/trigger/trigger",
                code="unknown_plugin_trigger",
                message="'{plugin}' offers no trigger '{trigger}'",
                plugin=trigger.plugin,
                trigger=trigger.trigger,
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
        problems.append(
            FieldProblem.of(
                pointer="/name",
                code="too_long",
                message="at most {MAX_NAME_LENGTH} characters",
                MAX_NAME_LENGTH=MAX_NAME_LENGTH,
            )
        )
    if owner_id is not None and owner_id not in env.member_ids:
        problems.append(FieldProblem(pointer="/owner_id", code="not_a_member", message="the owner must be a member"))
    problems += _trigger_problems(trigger, env)
    if len(conditions) > MAX_CONDITIONS:
        problems.append(
            FieldProblem.of(
                pointer="/conditions",
                code="too_many",
                message="at most {MAX_CONDITIONS} conditions",
                MAX_CONDITIONS=MAX_CONDITIONS,
            )
        )
    for i, source in enumerate(conditions):
        problems += _expression_problems(source, f"/conditions/{i}", env.event_names)
    if not action_list:
        problems.append(FieldProblem(pointer="/actions", code="required", message="add at least one action"))
    elif len(action_list) > MAX_ACTIONS:
        problems.append(
            FieldProblem.of(
                pointer="/actions", code="too_many", message="at most {MAX_ACTIONS} actions", MAX_ACTIONS=MAX_ACTIONS
            )
        )
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
                FieldProblem.of(
                    pointer=f"{at}/kind",
                    code="unknown_action",
                    message="no action '{kind_name}' ({known})",
                    kind_name=kind_name,
                    known=known,
                )
            )
            continue
        config = {k: v for k, v in action.items() if k != "kind"}
        try:
            problems += kind.config_problems(config, at, env)
        except Exception as exc:  # a kind's checker must not turn a save into a 500
            log.exception("action config check failed", extra={"kind": kind_name})
            problems.append(
                FieldProblem.of(pointer=at, code="invalid", message="cannot check this action: {exc}", exc=exc)
            )
    return problems
