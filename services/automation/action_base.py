"""What every automation action kind shares: the contract the executor calls, and the machinery
of an action's config.

``ActionKind`` is the contract; ``_Kind`` is the shared behaviour of the built-in kinds (a config
of known keys, an optional ``when`` re-checked just before the action runs). Configs hold
``=expressions`` and ``{{ templates }}``: checked at save time (``expression_problems``,
``template_problem``), evaluated at run time (``resolve``, ``render``) in the sandbox.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

import msgspec
from jinja2 import StrictUndefined, Template, TemplateError, Undefined
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy.ext.asyncio import AsyncSession

from services import expressions
from services.notifications import service as notifications
from services.sops.runs import service as runs
from tenants.base import as_uuid, utcnow
from tenants.errors import FieldProblem, ProblemError

DEFAULT_QUEUE: Final = "automation.actions"


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
                    FieldProblem.of(
                        pointer=pointer,
                        code="unknown_name",
                        message="'{name}' is not known here (use event., outputs., step., now or today)",
                        name=name,
                    )
                )
            elif root == "event" and env.event_names and name != "event" and not _name_offered(name, env.event_names):
                problems.append(
                    FieldProblem.of(
                        pointer=pointer, code="unknown_name", message="the trigger's events have no '{name}'", name=name
                    )
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
        return FieldProblem.of(
            pointer=pointer, code="too_long", message="at most {MAX_BODY} characters", MAX_BODY=notifications.MAX_BODY
        )
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


def _require_uuid(value: Any, what: str) -> uuid.UUID:
    found = as_uuid(value)
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
        return [FieldProblem.of(here, "required", "{key} is required", key=key)] if required else []
    if is_expression(value):
        return expression_problems(value, here, env)
    found = as_uuid(value)
    if found is None:
        return [FieldProblem.of(here, "invalid_id", "not an id (write an id, or an expression starting with '=')")]
    if known is not None and found not in known:
        return [
            FieldProblem.of(
                here,
                f"unknown_{key.removesuffix('_id')}",
                "no such {noun} in this workspace",
                noun=key.removesuffix("_id"),
            )
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
            return [FieldProblem.of(pointer, "invalid_type", "an action's config is an object")]
        problems = [
            FieldProblem.of(f"{pointer}/{key}", "unknown_key", "{name} has no setting '{key}'", name=self.name, key=key)
            for key in config
            if key not in self.keys and key != "when"
        ]
        when = config.get("when")
        if when is not None:
            if not isinstance(when, str) or not when.strip():
                problems.append(FieldProblem.of(f"{pointer}/when", "invalid_expression", "when is an expression"))
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
    run_id = as_uuid(view.get("run_id"))
    step_id = view.get("step_id")
    if run_id is None or not isinstance(step_id, int) or isinstance(step_id, bool):
        return None
    return await runs.step_view(db, run_id, step_id=step_id)
