"""The action kinds of automations: what each one checks at save time and does at run time.

The executor (services.automation.executor) runs one action at a time through ``action_kind(name)``.
Effects in our database happen in the session it passes, in the same transaction that records the
action as done: a worker killed mid-action rolls both back, and a redelivery never repeats the effect.
External effects (webhooks, plugin actions) carry ``ctx.idempotency_key``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import httpx
import msgspec
from jinja2 import StrictUndefined, Template, TemplateError, Undefined
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy.ext.asyncio import AsyncSession

from services import expressions, netguard
from services.accounts import service as accounts
from services.marketplace import host as plugin_host
from services.marketplace import service as marketplace
from services.names import without_hidden_characters
from services.notifications import service as notifications
from services.records import service as records
from services.sops.calendar import hours
from services.sops.calendar import service as calendar
from services.sops.definition import Duration
from services.sops.runs import service as runs
from tenants.base import utcnow
from tenants.errors import FieldProblem, ProblemError
from tenants.models import Role

DEFAULT_QUEUE: Final = "automation.actions"
LANGUAGES: Final = ("zh-CN", "en")
WEBHOOK_TIMEOUT_SECONDS: Final = 10.0
SIGNATURE_HEADER: Final = "X-Guiju-Signature"
MAX_RESPONSE_KEPT: Final = 4_000  # characters of a webhook's answer kept in the action's output


class ActionContext(msgspec.Struct, frozen=True, kw_only=True):
    """What an action knows about the execution it belongs to."""

    tenant_id: uuid.UUID
    automation_id: uuid.UUID
    execution_id: uuid.UUID
    action_index: int
    idempotency_key: str  # f"{execution_id}:{action_index}": stable across retries
    event: dict[str, Any]  # the triggering event (type, payload, occurred_at, id)
    outputs: list[dict[str, Any]]  # outputs of the earlier actions of this execution
    attempt: int


#: Work to do in the transaction that records a failed attempt (the action's own was rolled back).
FailureFollowUp = Callable[[AsyncSession], Awaitable[None]]


class RetryableActionError(Exception):
    """A failure that may pass (network, 5xx, 429): the executor retries with backoff."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, follow_up: FailureFollowUp | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.follow_up = follow_up


class PermanentActionError(Exception):
    """A failure that will not pass by retrying (bad config, 4xx, a missing target): fails at once."""

    def __init__(self, message: str, *, follow_up: FailureFollowUp | None = None) -> None:
        super().__init__(message)
        self.follow_up = follow_up


class Wait(msgspec.Struct, frozen=True):
    """Returned by the wait action: resume the execution with the next action at ``until``."""

    until: datetime


@dataclass(frozen=True)
class ValidationEnv:
    """What an automation may refer to, built by the automation service when it is saved."""

    procedure_ids: frozenset[uuid.UUID]
    collection_fields: Mapping[uuid.UUID, frozenset[str]]  # collection id -> field keys
    installed_plugins: frozenset[str]
    plugin_actions: frozenset[str]  # "plugin.action"
    member_ids: frozenset[uuid.UUID]
    event_names: frozenset[str]  # names the trigger's events offer, e.g. "event.record.values.amount"
    plugin_triggers: frozenset[str] | None = None  # "plugin.trigger"; None: not checked


class ActionKind(Protocol):
    """One kind of action."""

    name: str
    time_limit_ms: int
    # True when every effect is a write to our database (no call out): the dispatcher may then run
    # the action in the transaction that creates its execution.
    effects_in_db: bool

    def config_problems(self, config: dict[str, Any], pointer: str, env: ValidationEnv) -> list[FieldProblem]:
        """Every problem of ``config`` (pointer: the JSON pointer of the action's config)."""
        ...

    def queue(self, config: dict[str, Any]) -> str:
        """The Dramatiq queue the action runs on."""
        ...

    async def run(self, db: AsyncSession, ctx: ActionContext, config: dict[str, Any]) -> dict[str, Any] | Wait:
        """Do the action; returns its output, or Wait to resume later."""
        ...


# ---------------------------------------------------------------- expressions and templates in configs


def is_expression(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("=")


def event_view(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event as expressions see it: its payload's keys at the top (``event.record_id``) and
    the envelope kept too (``event.type``, ``event.payload.record_id``)."""
    payload = event.get("payload")
    view = dict(payload) if isinstance(payload, Mapping) else {}
    view.update(event)
    return view


def evaluation_context(ctx: ActionContext, *, now: datetime | None = None, **extra: Any) -> dict[str, Any]:
    """What config expressions may read: ``event``, ``outputs``, ``now``/``today`` (and ``step``)."""
    now = now or utcnow()
    return {"event": event_view(ctx.event), "outputs": ctx.outputs, "now": now, "today": now.date(), **extra}


def resolve(value: Any, context: Mapping[str, Any]) -> Any:
    """A config value with every ``=expression`` evaluated (inside objects and lists too)."""
    if isinstance(value, str):
        if value.startswith("="):
            try:
                return expressions.evaluate(value[1:], context)
            except expressions.ExpressionError as exc:
                raise PermanentActionError(f"cannot evaluate {value!r}: {exc}") from exc
        return value
    if isinstance(value, Mapping):
        return {k: resolve(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, context) for v in value]
    return value


_ROOTS: Final = frozenset({"event", "outputs", "now", "today", "step"})


def _name_offered(name: str, offered: frozenset[str]) -> bool:
    """Offered as such, under an offered ``prefix.*``, or an object with offered names inside it."""
    if name in offered:
        return True
    parts = name.split(".")
    if any(".".join(parts[:i]) + ".*" in offered for i in range(1, len(parts))):
        return True
    return any(n.startswith(name + ".") for n in offered)


def expression_problems(value: Any, pointer: str, env: ValidationEnv) -> list[FieldProblem]:
    """Problems of every ``=expression`` inside a config value: syntax, unknown names."""
    problems: list[FieldProblem] = []
    if isinstance(value, str) and value.startswith("="):
        try:
            compiled = expressions.compile_expression(value[1:])
        except expressions.ExpressionError as exc:
            return [FieldProblem(pointer=pointer, code="invalid_expression", message=str(exc))]
        for name in sorted(compiled.names):
            root = name.split(".", 1)[0]
            if root not in _ROOTS:
                problems.append(
                    FieldProblem(
                        pointer=pointer,
                        code="unknown_name",
                        message=f"{name!r} is not known here (use event., outputs., step., now or today)",
                    )
                )
            elif root == "event" and env.event_names and name != "event" and not _name_offered(name, env.event_names):
                problems.append(
                    FieldProblem(pointer=pointer, code="unknown_name", message=f"the trigger's events have no {name!r}")
                )
    elif isinstance(value, Mapping):
        for key, item in value.items():
            problems += expression_problems(item, f"{pointer}/{key}", env)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problems += expression_problems(item, f"{pointer}/{index}", env)
    return problems


class _SilentUndefined(Undefined):
    """A missing name renders as nothing (a notification with a gap beats none at all)."""

    def __str__(self) -> str:
        return ""


@functools.cache
def _template_env() -> SandboxedEnvironment:
    # Sandboxed: a tenant's template cannot reach Python attributes; no autoescape: plain text.
    return SandboxedEnvironment(undefined=_SilentUndefined, autoescape=False)


@functools.cache
def _strict_template_env() -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


def template_problem(source: Any, pointer: str) -> FieldProblem | None:
    if not isinstance(source, str):
        return FieldProblem(pointer=pointer, code="invalid_type", message="a template is text")
    if len(source) > notifications.MAX_BODY:
        return FieldProblem(pointer=pointer, code="too_long", message=f"at most {notifications.MAX_BODY} characters")
    try:
        _template_env().parse(source)
    except TemplateError as exc:
        return FieldProblem(pointer=pointer, code="invalid_template", message=str(exc))
    return None


@functools.lru_cache(maxsize=2048)
def _compiled(source: str) -> Template:
    # Compiling is most of a render's cost, and an automation renders the same few texts every time.
    return _template_env().from_string(source)


def render(source: str, context: Mapping[str, Any]) -> str:
    """Render a ``{{ name }}`` template in the sandbox; a broken one fails the action for good."""
    try:
        return _compiled(source).render(context)
    except TemplateError as exc:
        raise PermanentActionError(f"cannot render the template: {exc}") from exc


# ---------------------------------------------------------------- small helpers


def _problem(pointer: str, code: str, message: str) -> FieldProblem:
    return FieldProblem(pointer=pointer, code=code, message=message)


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            return None
    return None


def _require_uuid(value: Any, what: str) -> uuid.UUID:
    found = _uuid_or_none(value)
    if found is None:
        raise PermanentActionError(f"{what} is not an id: {value!r}")
    return found


def _problem_text(exc: ProblemError) -> str:
    details = "; ".join(f"{e.pointer} {e.code}: {e.message}" for e in exc.errors)
    return f"{exc.code}: {exc.detail or exc.title}" + (f" ({details})" if details else "")


def _jsonable(value: Any) -> Any:
    return msgspec.to_builtins(value)


def _id_problems(
    config: Mapping[str, Any],
    key: str,
    pointer: str,
    env: ValidationEnv,
    *,
    required: bool,
    known: frozenset[uuid.UUID] | None,
) -> list[FieldProblem]:
    """A config id: an expression (checked), or a literal id (in ``known`` when given)."""
    value = config.get(key)
    here = f"{pointer}/{key}"
    if value is None:
        return [_problem(here, "required", f"{key} is required")] if required else []
    if is_expression(value):
        return expression_problems(value, here, env)
    found = _uuid_or_none(value)
    if found is None:
        return [_problem(here, "invalid_id", "not an id (write an id, or an expression starting with '=')")]
    if known is not None and found not in known:
        return [
            _problem(here, f"unknown_{key.removesuffix('_id')}", f"no such {key.removesuffix('_id')} in this workspace")
        ]
    return []


class _Kind:
    """Shared behaviour: the config must be an object of known keys; an optional ``when``
    expression is re-checked against fresh state just before the action runs."""

    name: str = ""
    time_limit_ms: int = 30_000
    keys: frozenset[str] = frozenset()
    effects_in_db: bool = True

    def queue(self, config: dict[str, Any]) -> str:
        return DEFAULT_QUEUE

    def config_problems(self, config: dict[str, Any], pointer: str, env: ValidationEnv) -> list[FieldProblem]:
        if not isinstance(config, dict):
            return [_problem(pointer, "invalid_type", "an action's config is an object")]
        problems = [
            _problem(f"{pointer}/{key}", "unknown_key", f"{self.name} has no setting {key!r}")
            for key in config
            if key not in self.keys and key != "when"
        ]
        when = config.get("when")
        if when is not None:
            if not isinstance(when, str) or not when.strip():
                problems.append(_problem(f"{pointer}/when", "invalid_expression", "when is an expression"))
            else:
                problems += expression_problems("=" + when.removeprefix("="), f"{pointer}/when", env)
        return problems + self.problems(config, pointer, env)

    def problems(self, config: dict[str, Any], pointer: str, env: ValidationEnv) -> list[FieldProblem]:
        return []

    async def run(self, db: AsyncSession, ctx: ActionContext, config: dict[str, Any]) -> dict[str, Any] | Wait:
        context = evaluation_context(ctx, step=await _fresh_step(db, ctx))
        when = config.get("when")
        if isinstance(when, str) and when.strip():
            try:
                holds = expressions.evaluate(when.removeprefix("="), context)
            except expressions.ExpressionError as exc:
                raise PermanentActionError(f"cannot evaluate when {when!r}: {exc}") from exc
            if not (holds is True or (holds not in (None, False, 0, "", [], {}))):
                return {"skipped": True, "reason": "when"}
        # No savepoint of its own: whoever runs the action rolls back its whole transaction when it
        # fails (the executor, and the dispatcher, which then leaves the action to the executor).
        try:
            return await self.act(db, ctx, config, context)
        except ProblemError as exc:
            raise PermanentActionError(_problem_text(exc)) from exc

    async def act(
        self, db: AsyncSession, ctx: ActionContext, config: dict[str, Any], context: dict[str, Any]
    ) -> dict[str, Any] | Wait:
        raise NotImplementedError


async def _fresh_step(db: AsyncSession, ctx: ActionContext) -> dict[str, Any] | None:
    """The event's step as it is now (an action may run long after its event), or None."""
    view = event_view(ctx.event)
    run_id = _uuid_or_none(view.get("run_id"))
    step_id = view.get("step_id")
    if run_id is None or not isinstance(step_id, int) or isinstance(step_id, bool):
        return None
    return await runs.step_view(db, run_id, step_id=step_id)


# ---------------------------------------------------------------- start_run


class StartRun(_Kind):
    name = "start_run"
    keys = frozenset({"procedure_id", "record_id", "data", "title"})

    def problems(self, config: dict[str, Any], pointer: str, env: ValidationEnv) -> list[FieldProblem]:
        problems = _id_problems(config, "procedure_id", pointer, env, required=True, known=env.procedure_ids)
        problems += _id_problems(config, "record_id", pointer, env, required=False, known=None)
        data = config.get("data")
        if data is not None and not isinstance(data, dict) and not is_expression(data):
            problems.append(_problem(f"{pointer}/data", "invalid_type", "data is an object of values"))
        problems += expression_problems(data, f"{pointer}/data", env)
        title = config.get("title")
        if title is not None and not isinstance(title, str):
            problems.append(_problem(f"{pointer}/title", "invalid_type", "title is text"))
        return problems + expression_problems(title, f"{pointer}/title", env)

    async def act(
        self, db: AsyncSession, ctx: ActionContext, config: dict[str, Any], context: dict[str, Any]
    ) -> dict[str, Any]:
        procedure_id = _require_uuid(resolve(config.get("procedure_id"), context), "procedure_id")
        raw_record = resolve(config.get("record_id"), context)
        record_id = None if raw_record is None else _require_uuid(raw_record, "record_id")
        data = resolve(config.get("data") or {}, context)
        if not isinstance(data, dict):
            raise PermanentActionError("data is not an object")
        title = resolve(config.get("title"), context)
        run = await runs.start_run(
            db,
            procedure_id,
            None,
            _jsonable(data),
            record_id,
            title=without_hidden_characters(str(title))[:300] or None if title else None,
        )
        return {"run_id": str(run.id)}


# ---------------------------------------------------------------- create_record / update_record


def _values_problems(config: dict[str, Any], pointer: str, env: ValidationEnv) -> list[FieldProblem]:
    values = config.get("values")
    here = f"{pointer}/values"
    if values is None:
        return [_problem(here, "required", "values is required")]
    if not isinstance(values, dict):
        return [_problem(here, "invalid_type", "values is an object: field key -> value or expression")]
    collection_id = _uuid_or_none(config.get("collection_id"))
    fields = env.collection_fields.get(collection_id) if collection_id is not None else None
    problems: list[FieldProblem] = []
    for key, value in values.items():
        if fields is not None and key not in fields:
            problems.append(_problem(f"{here}/{key}", "unknown_field", f"the collection has no field {key!r}"))
        problems += expression_problems(value, f"{here}/{key}", env)
    return problems


def _collection_problems(config: dict[str, Any], pointer: str, env: ValidationEnv) -> list[FieldProblem]:
    value = config.get("collection_id")
    here = f"{pointer}/collection_id"
    if value is None:
        return [_problem(here, "required", "collection_id is required")]
    found = _uuid_or_none(value)
    if found is None:
        return [_problem(here, "invalid_id", "collection_id is a collection's id")]
    if found not in env.collection_fields:
        return [_problem(here, "unknown_collection", "no such collection in this workspace")]
    return []


class CreateRecord(_Kind):
    name = "create_record"
    keys = frozenset({"collection_id", "values", "entity_id"})

    def problems(self, config: dict[str, Any], pointer: str, env: ValidationEnv) -> list[FieldProblem]:
        problems = _collection_problems(config, pointer, env) + _values_problems(config, pointer, env)
        return problems + _id_problems(config, "entity_id", pointer, env, required=False, known=None)

    async def act(
        self, db: AsyncSession, ctx: ActionContext, config: dict[str, Any], context: dict[str, Any]
    ) -> dict[str, Any]:
        collection_id = _require_uuid(config.get("collection_id"), "collection_id")
        values = resolve(config.get("values") or {}, context)
        raw_entity = resolve(config.get("entity_id"), context)
        entity_id = None if raw_entity is None else _require_uuid(raw_entity, "entity_id")
        record = await records.create_record_values(db, collection_id, _jsonable(values), None, entity_id)
        return {"record_id": str(record.id)}


class UpdateRecord(_Kind):
    name = "update_record"
    keys = frozenset({"collection_id", "record_id", "values"})

    def problems(self, config: dict[str, Any], pointer: str, env: ValidationEnv) -> list[FieldProblem]:
        problems = _collection_problems(config, pointer, env)
        problems += _id_problems(config, "record_id", pointer, env, required=True, known=None)
        return problems + _values_problems(config, pointer, env)

    async def act(
        self, db: AsyncSession, ctx: ActionContext, config: dict[str, Any], context: dict[str, Any]
    ) -> dict[str, Any]:
        collection_id = _require_uuid(config.get("collection_id"), "collection_id")
        record_id = _require_uuid(resolve(config.get("record_id"), context), "record_id")
        values = resolve(config.get("values") or {}, context)
        await records.update_record_values(db, collection_id, record_id, _jsonable(values), None)
        return {"record_id": str(record_id)}


# ---------------------------------------------------------------- assign_step


def _role_problem(value: Any, pointer: str) -> FieldProblem | None:
    if value not in {r.value for r in Role}:
        return _problem(pointer, "unknown_role", f"a role is one of {', '.join(r.value for r in Role)}")
    return None


class AssignStep(_Kind):
    name = "assign_step"
    keys = frozenset({"run_id", "step_id", "step_key", "user_id", "owner"})

    def problems(self, config: dict[str, Any], pointer: str, env: ValidationEnv) -> list[FieldProblem]:
        problems = _id_problems(config, "run_id", pointer, env, required=True, known=None)
        step_id, step_key = config.get("step_id"), config.get("step_key")
        if (step_id is None) == (step_key is None):
            problems.append(_problem(f"{pointer}/step_id", "step_required", "give exactly one of step_id, step_key"))
        elif step_id is not None:
            if is_expression(step_id):
                problems += expression_problems(step_id, f"{pointer}/step_id", env)
            elif not isinstance(step_id, int) or isinstance(step_id, bool):
                problems.append(_problem(f"{pointer}/step_id", "invalid_type", "step_id is a step number"))
        elif not isinstance(step_key, str) or not step_key:
            problems.append(_problem(f"{pointer}/step_key", "invalid_type", "step_key is a step's key"))
        user_id, owner = config.get("user_id"), config.get("owner")
        if (user_id is None) == (owner is None):
            problems.append(_problem(f"{pointer}/user_id", "assignee_required", "give exactly one of user_id, owner"))
        elif user_id is not None:
            problems += _id_problems(config, "user_id", pointer, env, required=True, known=env.member_ids or None)
        elif not isinstance(owner, dict) or set(owner) != {"role"}:
            problems.append(
                _problem(f"{pointer}/owner", "invalid_owner", 'owner is {"role": ...}: the least loaded member of it')
            )
        else:
            role_problem = _role_problem(owner["role"], f"{pointer}/owner/role")
            problems += [role_problem] if role_problem else []
        return problems

    async def act(
        self, db: AsyncSession, ctx: ActionContext, config: dict[str, Any], context: dict[str, Any]
    ) -> dict[str, Any]:
        run_id = _require_uuid(resolve(config.get("run_id"), context), "run_id")
        if config.get("step_id") is not None:
            step_id = resolve(config["step_id"], context)
            if not isinstance(step_id, int) or isinstance(step_id, bool):
                raise PermanentActionError(f"step_id is not a step number: {step_id!r}")
            step = await runs.step_view(db, run_id, step_id=step_id)
        else:
            step = await runs.step_view(db, run_id, step_key=str(config.get("step_key")))
        if step is None:
            raise PermanentActionError("the run has no such step")
        if config.get("user_id") is not None:
            user_id = _require_uuid(resolve(config["user_id"], context), "user_id")
        else:
            current = _uuid_or_none(step.get("assignee_id"))
            found = await runs.least_loaded_member(db, Role(config["owner"]["role"]), exclude=current)
            if found is None:
                raise PermanentActionError(f"nobody holds the role {config['owner']['role']!r}")
            user_id = found
        await runs.assign_step_as_platform(db, run_id, int(step["step_id"]), user_id)
        return {"run_id": str(run_id), "step_id": step["step_id"], "user_id": str(user_id)}


# ---------------------------------------------------------------- notify

_NAMED_RECIPIENTS: Final = frozenset({"owner", "run_starter"})


class Notify(_Kind):
    name = "notify"
    keys = frozenset({"to", "title", "body", "link"})

    def problems(self, config: dict[str, Any], pointer: str, env: ValidationEnv) -> list[FieldProblem]:
        problems: list[FieldProblem] = []
        to = config.get("to")
        if not isinstance(to, list) or not to:
            problems.append(_problem(f"{pointer}/to", "required", "to is a non-empty list of recipients"))
        else:
            for index, recipient in enumerate(to):
                problems += self._recipient_problems(recipient, f"{pointer}/to/{index}", env)
        for key in ("title", "body"):
            value = config.get(key)
            here = f"{pointer}/{key}"
            if value is None:
                if key == "title":
                    problems.append(_problem(here, "required", "title is required (zh-CN and/or en)"))
                continue
            if isinstance(value, str):
                value = {"en": value}
            if not isinstance(value, dict) or not value:
                problems.append(_problem(here, "invalid_type", 'a text per language: {"zh-CN": ..., "en": ...}'))
                continue
            for language, source in value.items():
                if language not in LANGUAGES:
                    problems.append(_problem(f"{here}/{language}", "unknown_language", "languages are zh-CN and en"))
                    continue
                found = template_problem(source, f"{here}/{language}")
                problems += [found] if found else []
        link = config.get("link")
        if link is not None:
            found = template_problem(link, f"{pointer}/link")
            problems += [found] if found else []
        return problems

    def _recipient_problems(self, recipient: Any, pointer: str, env: ValidationEnv) -> list[FieldProblem]:
        if isinstance(recipient, dict):
            if set(recipient) != {"role"}:
                return [_problem(pointer, "invalid_recipient", 'a role recipient is {"role": "manager"}')]
            found = _role_problem(recipient["role"], f"{pointer}/role")
            return [found] if found else []
        if not isinstance(recipient, str):
            return [
                _problem(pointer, "invalid_recipient", "a recipient is a member id, an expression, a role or a name")
            ]
        if recipient in _NAMED_RECIPIENTS:
            return []
        if is_expression(recipient):
            return expression_problems(recipient, pointer, env)
        member = _uuid_or_none(recipient)
        if member is None:
            return [_problem(pointer, "invalid_recipient", "owner, run_starter, a member id, a role or an expression")]
        if env.member_ids and member not in env.member_ids:
            return [_problem(pointer, "unknown_member", "not a member of this workspace")]
        return []

    async def _recipients(
        self, db: AsyncSession, ctx: ActionContext, config: dict[str, Any], context: dict[str, Any]
    ) -> list[uuid.UUID]:
        found: list[uuid.UUID] = []
        view = context["event"]
        step = context.get("step")
        for recipient in config.get("to") or []:
            if isinstance(recipient, dict):
                found += await runs.members_with_role(db, Role(recipient["role"]))
            elif recipient == "owner":
                assignee = (step or {}).get("assignee_id") if step else view.get("assignee_id")
                member = _uuid_or_none(assignee)
                found += [member] if member else []
            elif recipient == "run_starter":
                member = _uuid_or_none((step or {}).get("started_by") or view.get("started_by"))
                found += [member] if member else []
            else:
                value = resolve(recipient, context)
                for item in value if isinstance(value, list) else [value]:
                    member = _uuid_or_none(item)
                    found += [member] if member else []
        return list(dict.fromkeys(found))

    async def act(
        self, db: AsyncSession, ctx: ActionContext, config: dict[str, Any], context: dict[str, Any]
    ) -> dict[str, Any]:
        wanted = await self._recipients(db, ctx, config, context)
        # Only members of this workspace are notified, each once, in their own language.
        locales = await accounts.member_locales(db, set(wanted))
        recipients = [m for m in wanted if m in locales]
        # Templates see the event's names at the top ({{ title }}) as well as event/outputs/step.
        template_context = {**context["event"], **context}

        def texts(key: str) -> dict[str, str]:
            value = config.get(key) or {}
            return {"en": value} if isinstance(value, str) else value

        titles, bodies = texts("title"), texts("body")

        def pick(options: dict[str, str], locale: str) -> str:
            source = options.get(locale) or options.get("en") or options.get("zh-CN") or ""
            return render(source, template_context)

        title = {u: pick(titles, locales.get(u, "zh-CN")) for u in recipients}
        body = {u: pick(bodies, locales.get(u, "zh-CN")) for u in recipients}
        link = render(config["link"], template_context) if config.get("link") else None
        notified = await notifications.notify(db, recipients, title, body, link, dedupe_key=ctx.idempotency_key)
        channels = ["in_app"]
        if notified and await marketplace.messaging_installed(db):
            # The workspace's messaging plugin sends it on through its channels, on its own queue;
            # one message per wording (the recipients' languages), each with its own key.
            contacts = await accounts.member_contacts(db, set(notified))
            wordings: dict[tuple[str, str], list[dict[str, str]]] = {}
            for contact in sorted(contacts, key=lambda c: c.email):
                wording = (title[contact.user_id], body[contact.user_id])
                wordings.setdefault(wording, []).append(
                    {"email": contact.email, "name": contact.display_name, "locale": contact.locale}
                )
            for n, ((text, details), people) in enumerate(sorted(wordings.items())):
                await marketplace.forward_notification(
                    db, people, text, details, link, key=f"{ctx.idempotency_key}:{n}"
                )
            channels.append("messaging")
        return {
            "notified": [str(u) for u in notified],
            "recipients": [str(u) for u in recipients],
            "channels": channels,
        }


# ---------------------------------------------------------------- webhook


def http_allowed_hosts() -> frozenset[str]:
    """Hosts an outbound webhook may reach over plain http and at non-public addresses (tests, a
    private network): ``GUIJU_WEBHOOK_ALLOW_HTTP_HOSTS``, comma-separated. Every other URL must be
    https and resolve only to public addresses."""
    raw = os.environ.get("GUIJU_WEBHOOK_ALLOW_HTTP_HOSTS", "")
    return frozenset(h.strip().lower() for h in raw.split(",") if h.strip())


def url_problem(url: Any, pointer: str) -> FieldProblem | None:
    if not isinstance(url, str) or not url:
        return _problem(pointer, "required", "url is required")
    if len(url) > 2000:
        return _problem(pointer, "too_long", "at most 2000 characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        return _problem(pointer, "invalid_url", "not a URL")
    if not parts.hostname:
        return _problem(pointer, "invalid_url", "the URL names no host")
    if parts.username or parts.password:
        return _problem(pointer, "invalid_url", "put credentials in headers, not in the URL")
    if parts.hostname.lower() not in http_allowed_hosts():
        try:
            literal: IPAddress | None = ipaddress.ip_address(parts.hostname)
        except ValueError:
            literal = None  # a name: checked when the webhook is sent, against what it resolves to
        refused = address_refusal(literal) if literal is not None else None
        if refused is not None:
            return _problem(pointer, "forbidden_address", f"webhooks cannot call {refused} addresses")
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and parts.hostname.lower() in http_allowed_hosts():
        return None
    return _problem(pointer, "insecure_url", "webhooks go over https")


async def resolve_public(host: str, port: int) -> netguard.IPAddress:
    """The public address to send a webhook to (see :func:`services.netguard.resolve_public`)."""
    try:
        return await netguard.resolve_public(host, port)
    except netguard.HostRefused as exc:
        raise PermanentActionError(
            f"webhook refused: {exc}; webhooks only call public addresses "
            "(allow a private host with GUIJU_WEBHOOK_ALLOW_HTTP_HOSTS)"
        ) from exc
    except netguard.HostUnresolved as exc:
        raise RetryableActionError(f"webhook {exc}") from exc


address_refusal = netguard.address_refusal
pinned_target = netguard.pinned_target
IPAddress = netguard.IPAddress


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Guiju-Signature`` value: ``t=<ts>,v1=<hex HMAC-SHA256 of "<ts>.<body>">``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds (it is either seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


_HOP_HEADERS: Final = frozenset(
    {"host", "content-length", "content-type", "idempotency-key", SIGNATURE_HEADER.lower(), "transfer-encoding"}
)


class Webhook(_Kind):
    name = "webhook"
    keys = frozenset({"url", "method", "headers", "body", "secret"})
    time_limit_ms = 30_000
    effects_in_db = False

    def problems(self, config: dict[str, Any], pointer: str, env: ValidationEnv) -> list[FieldProblem]:
        problems: list[FieldProblem] = []
        found = url_problem(config.get("url"), f"{pointer}/url")
        problems += [found] if found else []
        if config.get("method", "POST") not in {"POST", "PUT", "PATCH"}:
            problems.append(_problem(f"{pointer}/method", "invalid_method", "method is POST, PUT or PATCH"))
        headers = config.get("headers", {})
        if not isinstance(headers, dict):
            problems.append(_problem(f"{pointer}/headers", "invalid_type", "headers is an object of texts"))
        else:
            for key, value in headers.items():
                if not isinstance(value, str) or key.lower() in _HOP_HEADERS:
                    problems.append(
                        _problem(
                            f"{pointer}/headers/{key}", "invalid_header", "a header is text and not one Guiju sets"
                        )
                    )
                else:
                    problems += expression_problems(value, f"{pointer}/headers/{key}", env)
        problems += expression_problems(config.get("body"), f"{pointer}/body", env)
        secret = config.get("secret")
        if secret is not None and (not isinstance(secret, str) or len(secret) < 16):
            problems.append(_problem(f"{pointer}/secret", "weak_secret", "a signing secret has at least 16 characters"))
        return problems

    async def act(
        self, db: AsyncSession, ctx: ActionContext, config: dict[str, Any], context: dict[str, Any]
    ) -> dict[str, Any]:
        url = config.get("url")
        bad_url = url_problem(url, "/url")
        if bad_url is not None:
            raise PermanentActionError(f"webhook url: {bad_url.message}")
        assert isinstance(url, str)
        body_value = (
            resolve(config["body"], context)
            if "body" in config
            else {
                "event": {k: ctx.event.get(k) for k in ("id", "type", "occurred_at", "payload")},
                "outputs": ctx.outputs,
            }
        )
        body = json.dumps(_jsonable(body_value), ensure_ascii=False, separators=(",", ":")).encode()
        headers = {
            str(k): str(resolve(v, context))
            for k, v in (config.get("headers") or {}).items()
            if str(k).lower() not in _HOP_HEADERS
        }
        headers["Content-Type"] = "application/json"
        headers["Idempotency-Key"] = ctx.idempotency_key
        headers["User-Agent"] = "Guiju-Webhook/1"
        secret = config.get("secret")
        if isinstance(secret, str) and secret:
            headers[SIGNATURE_HEADER] = sign(secret, body, int(time.time()))
        target: str = url
        extensions: dict[str, Any] = {}
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if host not in http_allowed_hosts():
            # Checked right before sending, and the request goes to the checked address itself.
            port = parts.port or (443 if parts.scheme == "https" else 80)
            address = await resolve_public(host, port)
            target, pinned_headers, extensions = pinned_target(url, address)
            headers.update(pinned_headers)
        try:
            # trust_env=False: no proxy from the environment, so the connection goes where we checked.
            async with httpx.AsyncClient(
                timeout=WEBHOOK_TIMEOUT_SECONDS, follow_redirects=False, trust_env=False
            ) as client:
                response = await client.request(
                    str(config.get("method", "POST")), target, content=body, headers=headers, extensions=extensions
                )
        except httpx.HTTPError as exc:  # connect, read, timeout: may pass
            raise RetryableActionError(f"webhook {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status == 429 or status >= 500 or status == 408:
            raise RetryableActionError(
                f"webhook answered {status}", retry_after=retry_after_seconds(response.headers.get("Retry-After"))
            )
        if status >= 300:
            raise PermanentActionError(f"webhook answered {status}: {response.text[:500]}")
        try:
            answer: Any = response.json() if response.content else None
        except ValueError:
            answer = response.text[:MAX_RESPONSE_KEPT]
        if len(response.content) > MAX_RESPONSE_KEPT:
            answer = None
        return {"status": status, "response": answer}


# ---------------------------------------------------------------- wait


def _duration_problems(value: Any, pointer: str) -> tuple[Duration | None, list[FieldProblem]]:
    try:
        duration = msgspec.convert(value, Duration)
    except msgspec.ValidationError as exc:
        return None, [_problem(pointer, "invalid_duration", f"a duration is {{days, hours, minutes, business}}: {exc}")]
    if duration.total_minutes <= 0:
        return None, [_problem(pointer, "invalid_duration", "a duration is longer than zero")]
    return duration, []


class WaitAction(_Kind):
    name = "wait"
    keys = frozenset({"duration", "until", "offset"})
    time_limit_ms = 10_000

    def problems(self, config: dict[str, Any], pointer: str, env: ValidationEnv) -> list[FieldProblem]:
        duration, until = config.get("duration"), config.get("until")
        if (duration is None) == (until is None):
            return [_problem(f"{pointer}/duration", "wait_required", "give exactly one of duration, until")]
        if duration is not None:
            if config.get("offset") is not None:
                return [_problem(f"{pointer}/offset", "unknown_key", "offset goes with until")]
            return _duration_problems(duration, f"{pointer}/duration")[1]
        problems: list[FieldProblem] = []
        if not is_expression(until):
            problems.append(
                _problem(f"{pointer}/until", "invalid_expression", "until is an expression (=...) of a moment")
            )
        else:
            problems += expression_problems(until, f"{pointer}/until", env)
        if config.get("offset") is not None:
            try:
                msgspec.convert(config["offset"], Duration)
            except msgspec.ValidationError as exc:
                problems.append(_problem(f"{pointer}/offset", "invalid_duration", str(exc)))
        return problems

    async def act(
        self, db: AsyncSession, ctx: ActionContext, config: dict[str, Any], context: dict[str, Any]
    ) -> dict[str, Any] | Wait:
        working_time = await calendar.get_calendar(db)
        now: datetime = context["now"]
        if config.get("duration") is not None:
            return Wait(until=hours.add_duration(now, msgspec.convert(config["duration"], Duration), working_time))
        value = resolve(config.get("until"), context)
        moment = hours.as_moment(value, working_time)
        if moment is None:
            raise PermanentActionError(f"until is not a moment: {value!r}")
        if config.get("offset") is not None:
            moment = hours.add_duration(moment, msgspec.convert(config["offset"], Duration), working_time)
        if moment <= now:
            return {"until": moment.isoformat(), "waited": False}
        return Wait(until=moment)


# ---------------------------------------------------------------- plugin


class PluginActionKind(_Kind):
    name = "plugin"
    keys = frozenset({"plugin", "action", "input"})
    time_limit_ms = 60_000
    effects_in_db = False

    def queue(self, config: dict[str, Any]) -> str:
        return f"plugin.{config.get('plugin')}"

    def problems(self, config: dict[str, Any], pointer: str, env: ValidationEnv) -> list[FieldProblem]:
        problems: list[FieldProblem] = []
        plugin, action = config.get("plugin"), config.get("action")
        if not isinstance(plugin, str) or not plugin:
            problems.append(_problem(f"{pointer}/plugin", "required", "plugin is the plugin's name"))
        elif plugin not in env.installed_plugins:
            problems.append(
                _problem(f"{pointer}/plugin", "plugin_not_installed", f"the plugin {plugin!r} is not installed")
            )
        if not isinstance(action, str) or not action:
            problems.append(_problem(f"{pointer}/action", "required", "action is the plugin action's name"))
        elif (
            isinstance(plugin, str)
            and plugin in env.installed_plugins
            and f"{plugin}.{action}" not in env.plugin_actions
        ):
            problems.append(
                _problem(
                    f"{pointer}/action", "unknown_plugin_action", f"the plugin {plugin!r} has no action {action!r}"
                )
            )
        payload = config.get("input", {})
        if not isinstance(payload, dict):
            problems.append(_problem(f"{pointer}/input", "invalid_type", "input is an object"))
        return problems + expression_problems(payload, f"{pointer}/input", env)

    async def act(
        self, db: AsyncSession, ctx: ActionContext, config: dict[str, Any], context: dict[str, Any]
    ) -> dict[str, Any]:
        plugin, action = str(config.get("plugin")), str(config.get("action"))
        try:
            result = await plugin_host.call_action(
                db,
                ctx.tenant_id,
                plugin,
                action,
                _jsonable(resolve(config.get("input") or {}, context)),
                idempotency_key=ctx.idempotency_key,
                execution_id=str(ctx.execution_id),
            )
        except plugin_host.PluginCallFailed as exc:
            follow_up = (
                functools.partial(plugin_host.count_failure, plugin=plugin, error=str(exc)) if exc.unhealthy else None
            )
            if exc.retryable:
                raise RetryableActionError(str(exc), retry_after=exc.retry_after, follow_up=follow_up) from exc
            raise PermanentActionError(str(exc), follow_up=follow_up) from exc
        return _jsonable(result)  # type: ignore[no-any-return]


# ---------------------------------------------------------------- the registry

ACTION_KINDS: dict[str, ActionKind] = {
    kind.name: kind
    for kind in (
        StartRun(),
        CreateRecord(),
        UpdateRecord(),
        AssignStep(),
        Notify(),
        Webhook(),
        WaitAction(),
        PluginActionKind(),
    )
}


def action_kind(name: str) -> ActionKind:
    """The action kind called ``name``; raises KeyError."""
    return ACTION_KINDS[name]
