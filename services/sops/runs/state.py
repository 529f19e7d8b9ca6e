"""A run as stored, and the helpers every part of the runs service shares.

The state is the engine's ``RunState`` kept as JSON on the run row; loading a run reads it (locked
when it is about to change) with the rows that mirror it, and builds the engine's environment: the
clock, the tenant's working calendar and date, the record the run is about. Cursors of the paged
lists are opaque, URL-safe JSON.
"""

from __future__ import annotations

import base64
import uuid
import zoneinfo
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services import expressions
from services.db.statements import one_or_raise
from services.json_body import decode_json_body
from services.records import service as records
from services.sops import engine
from services.sops.calendar import service as calendar
from services.sops.definition import (
    HUMAN_STEPS,
    RECORD_ID_KEY,
    ActionStep,
    DecisionStep,
    Definition,
    Due,
    Step,
    WaitStep,
)
from services.sops.engine import Action, Actor, EngineError, Env, RunState, RunStatus, StepState, StepStatus, Transition
from services.sops.runs.models import Run, RunException, StepInstance
from tenants.base import utcnow
from tenants.errors import Conflict, FieldProblem, Forbidden, NotFound, ProblemError, ValidationProblem
from tenants.models import Role

OPEN_STATUSES = tuple(s.value for s in StepStatus if s.is_open)
TASK_STATUSES = (StepStatus.READY.value, StepStatus.IN_PROGRESS.value)
MAX_PAGE = 200


# ---------------------------------------------------------------- state and small helpers


def encode_state(state: RunState) -> dict[str, Any]:
    built: dict[str, Any] = msgspec.to_builtins(state)
    return built


def decode_state(raw: Any) -> RunState:
    return msgspec.convert(raw, type=RunState)


def _jsonable(value: Any) -> Any:
    return msgspec.to_builtins(value)


def _role(actor: Actor) -> Role:
    return Role(actor.role)


def _require_manager(actor: Actor) -> None:
    if not _role(actor).at_least(Role.MANAGER):
        raise Forbidden("This needs the manager role or higher.", code="role_required")


def _step_kind(step: Step) -> str:
    tag = type(step).__struct_config__.tag
    return str(tag)


def _engine_problem(exc: EngineError) -> ProblemError:
    """An engine refusal as problem+json: same code and status, every problem listed."""
    errors = list(exc.details)
    if exc.status == 422:
        return ValidationProblem(exc.message_id, code=exc.code, errors=errors, **exc.params)
    return ProblemError(
        exc.message_id,
        code=exc.code,
        status=exc.status,
        title="The run does not allow this",
        errors=errors,
        **exc.params,
    )


def _apply_engine(definition: Definition, state: RunState, action: Action, env: Env) -> Transition:
    try:
        return engine.apply(definition, state, action, env)
    except EngineError as exc:
        raise _engine_problem(exc) from exc


def _find_step(state: RunState, step_id: int) -> StepState:
    for step in state.steps:
        if step.id == step_id:
            return step
    raise NotFound("The run has no step {step_id}.", code="step_not_found", step_id=step_id)


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return msgspec.convert(value, type=datetime)
        except msgspec.ValidationError:
            return None
    return None


# ---------------------------------------------------------------- loading


async def _load_run(db: AsyncSession, run_id: uuid.UUID, *, lock: bool = False) -> Run:
    # Locked, on Postgres a second writer waits here and then sees the first one's state.
    query = select(Run).where(Run.id == run_id).execution_options(populate_existing=True)
    return await one_or_raise(db, query, NotFound("No such run.", code="run_not_found"), lock=lock)


async def _record_values(db: AsyncSession, run: Run) -> Mapping[str, Any] | None:
    """What ``record.…`` reads in the run's expressions: the linked record's visible values, and
    its id as ``record.id`` (an action step hands it to a plugin; no field may be called ``id``)."""
    if run.collection_id is None or run.record_id is None:
        return None
    values = await records.get_record_values(db, run.collection_id, run.record_id)
    return {**values, RECORD_ID_KEY: str(run.record_id)}


def _local_date(now: datetime, timezone: str) -> date:
    try:
        zone = zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return now.date()
    return now.astimezone(zone).date()


def _uses_calendar(definition: Definition) -> bool:
    """Whether the engine can ask, on this definition, for a due time or for the tenant's date: it
    does so only for a step's due time or expiry, an exception's escalation, a wait's duration, and
    ``today()`` in a decision's conditions or an action's inputs."""
    for step in definition.steps:
        if isinstance(step, HUMAN_STEPS):
            if step.due is not None or step.expires_after is not None:
                return True
            if any(kind.escalate_after is not None for kind in step.exceptions):
                return True
        elif isinstance(step, DecisionStep | WaitStep | ActionStep):
            return True
    return False


def _no_due_times(due: Due, ready_at: datetime, values: Mapping[str, Any]) -> datetime | None:
    raise RuntimeError("the calendar was not loaded: _uses_calendar() must name every use of it")


async def _env(db: AsyncSession, run: Run, definition: Definition, now: datetime | None = None) -> Env:
    now = now or utcnow()
    record = await _record_values(db, run)
    if not _uses_calendar(definition):
        # Most procedures have no due times, durations or conditions: reading the calendar (two
        # statements) would be wasted on every action of their runs.
        return Env(now=now, due_at=_no_due_times, evaluate=expressions.evaluate, record=record)
    working_time = await calendar.get_calendar(db)
    return Env(
        now=now,
        due_at=calendar.due_function_for(working_time),
        evaluate=expressions.evaluate,
        record=record,
        # "today" in decisions and expressions is the tenant's date, not UTC's.
        today=_local_date(now, working_time.timezone),
    )


def _require_running(run: Run) -> None:
    if run.status != RunStatus.RUNNING:
        raise Conflict("The run is {state}: nothing more can be done on it.", code="run_finished", state=run.status)


async def _step_rows(db: AsyncSession, run_id: uuid.UUID) -> dict[int, StepInstance]:
    rows = await db.scalars(select(StepInstance).where(StepInstance.run_id == run_id))
    return {r.step_id: r for r in rows}


async def _exception_rows(db: AsyncSession, run_id: uuid.UUID) -> dict[int, RunException]:
    rows = await db.scalars(select(RunException).where(RunException.run_id == run_id))
    return {r.exception_id: r for r in rows}


# ---------------------------------------------------------------- cursors of the paged lists


def _encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(values)).decode()


def _decode_cursor(cursor: str) -> list[Any]:
    try:
        values = decode_json_body(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, ProblemError) as exc:
        raise ValidationProblem(
            errors=[FieldProblem(pointer="/query/cursor", code="invalid_cursor", message="not a cursor of this list")]
        ) from exc
    if not isinstance(values, list):
        raise ValidationProblem(
            errors=[FieldProblem(pointer="/query/cursor", code="invalid_cursor", message="not a cursor of this list")]
        )
    return values
