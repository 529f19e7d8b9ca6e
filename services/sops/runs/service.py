"""The runs service: what people do with procedures.

A run keeps the version it started on. Every change goes through the pure engine
(``services.sops.engine``): load the run (locked), apply one action, then settle its events — owners
resolved and assigned, linked-record updates written, sub-runs started, outbox events emitted — and
store the new state with an optimistic ``lock_version`` check, so that of two concurrent actions on
the same run exactly one wins. ``step_instances`` and ``run_exceptions`` mirror the state for "my
tasks", listings and the SLA timers.

Functions take a session in the caller's transaction and never commit.
"""

from __future__ import annotations

import base64
import logging
import uuid
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

import msgspec
from sqlalchemy import Select, and_, func, or_, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from services import expressions
from services.audit import service as audit
from services.db.statements import one_or_raise
from services.files import service as files
from services.json_body import decode_json_body
from services.names import name_problems
from services.outbox import service as outbox
from services.records import service as records
from services.scheduler import service as scheduler
from services.sops import engine
from services.sops.calendar import service as calendar
from services.sops.definition import (
    HUMAN_STEPS,
    ActionStep,
    DecisionStep,
    Definition,
    Due,
    ExceptionKind,
    FieldOwner,
    FormStep,
    LeastLoadedOwner,
    MemberOwner,
    Owner,
    RoleOwner,
    RoundRobinOwner,
    StarterOwner,
    Step,
    WaitStep,
)
from services.sops.engine import (
    Abort,
    Action,
    Actor,
    Assign,
    Claim,
    Complete,
    EngineError,
    Env,
    Escalate,
    Event,
    EvidenceIn,
    Expire,
    RaiseException,
    ResolveException,
    RunState,
    RunStatus,
    StepState,
    StepStatus,
    SubprocedureFinished,
    Transition,
    WaitElapsed,
)
from services.sops.procedures import service as procedures
from services.sops.procedures.service import PublishedVersion
from services.sops.runs.models import Run, RunComment, RunException, StepInstance
from services.validation import INT32_MAX
from tenants.base import new_id, utcnow
from tenants.errors import Conflict, FieldProblem, Forbidden, NotFound, ProblemError, ValidationProblem
from tenants.isolation import session_tenant_id
from tenants.models import Membership, Role

log = logging.getLogger("guiju.runs")

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
    title = "The input is not valid" if exc.status == 422 else "The run does not allow this"
    return ProblemError(str(exc), code=exc.code, status=exc.status, title=title, errors=errors)


def _apply_engine(definition: Definition, state: RunState, action: Action, env: Env) -> Transition:
    try:
        return engine.apply(definition, state, action, env)
    except EngineError as exc:
        raise _engine_problem(exc) from exc


def _find_step(state: RunState, step_id: int) -> StepState:
    for step in state.steps:
        if step.id == step_id:
            return step
    raise NotFound(f"The run has no step {step_id}.", code="step_not_found")


def _as_uuid(value: Any) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            return None
    return None


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
    if run.collection_id is None or run.record_id is None:
        return None
    return await records.get_record_values(db, run.collection_id, run.record_id)


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
        raise Conflict(f"The run is {run.status}: nothing more can be done on it.", code="run_finished")


# ---------------------------------------------------------------- owners


async def _members_with_role(db: AsyncSession, role: Role) -> list[uuid.UUID]:
    """Members holding exactly ``role``; those holding it or higher when nobody holds it exactly."""
    rows = (await db.execute(select(Membership.user_id, Membership.role))).all()
    exact = sorted((r.user_id for r in rows if r.role == role.value), key=str)
    if exact:
        return exact
    return sorted((r.user_id for r in rows if Role(r.role).at_least(role)), key=str)


async def _is_member(db: AsyncSession, user_id: uuid.UUID) -> bool:
    return await db.scalar(select(Membership.user_id).where(Membership.user_id == user_id)) is not None


def _field_value(path: str, state: RunState, record: Mapping[str, Any] | None) -> Any:
    source, _, name = path.partition(".")
    values: Mapping[str, Any] = state.data if source == "data" else (record or {})
    return values.get(name)


async def _resolve_owner(
    db: AsyncSession, run: Run, owner: Owner, step_key: str, state: RunState, record: Mapping[str, Any] | None
) -> uuid.UUID | None:
    """The member a step goes to by its owner rule; None leaves it to be claimed (role-owned)."""
    if isinstance(owner, MemberOwner):
        return owner.user_id
    if isinstance(owner, StarterOwner):
        return state.started_by or run.started_by
    if isinstance(owner, FieldOwner):
        user_id = _as_uuid(_field_value(owner.field, state, record))
        return user_id if user_id is not None and await _is_member(db, user_id) else None
    if isinstance(owner, RoundRobinOwner):
        members = await _members_with_role(db, owner.role)
        if not members:
            return None
        last = await db.scalar(
            select(StepInstance.assignee_id)
            .where(
                StepInstance.procedure_id == run.procedure_id,
                StepInstance.key == step_key,
                StepInstance.assignee_id.is_not(None),
            )
            .order_by(StepInstance.ready_at.desc(), StepInstance.created_at.desc())
            .limit(1)
        )
        if last not in members:
            return members[0]
        return members[(members.index(last) + 1) % len(members)]
    if isinstance(owner, LeastLoadedOwner):
        members = await _members_with_role(db, owner.role)
        if not members:
            return None
        loads = await db.execute(
            select(StepInstance.assignee_id, func.count())
            .where(StepInstance.assignee_id.in_(members), StepInstance.status.in_(OPEN_STATUSES))
            .group_by(StepInstance.assignee_id)
        )
        counts: dict[uuid.UUID | None, int] = {row[0]: int(row[1]) for row in loads}
        return min(members, key=lambda m: (counts.get(m, 0), str(m)))
    return None  # RoleOwner: anyone with the role claims it


async def _owner_user_ids(
    db: AsyncSession, run: Run, owner: Owner, state: RunState, record: Mapping[str, Any] | None
) -> list[uuid.UUID]:
    """Every member an owner rule names: a member, the starter, a user field, or a role's members."""
    if isinstance(owner, RoleOwner | RoundRobinOwner | LeastLoadedOwner):
        return await _members_with_role(db, owner.role)
    user_id: uuid.UUID | None = None
    if isinstance(owner, MemberOwner):
        user_id = owner.user_id
    elif isinstance(owner, StarterOwner):
        user_id = state.started_by or run.started_by
    elif isinstance(owner, FieldOwner):
        user_id = _as_uuid(_field_value(owner.field, state, record))
    return [user_id] if user_id is not None and await _is_member(db, user_id) else []


def _exception_kind(definition: Definition, state: RunState, kind: str, step_id: int | None) -> ExceptionKind | None:
    """The kind of an exception: its step's own kind first, else any step's (as the engine finds it
    for an exception raised on the run, a rejection or a failed action)."""
    steps: list[Step] = list(definition.steps)
    at = next((s for s in state.steps if s.id == step_id), None) if step_id is not None else None
    if at is not None:
        steps.insert(0, definition.step(at.key))
    for step in steps:
        if isinstance(step, HUMAN_STEPS):
            found = next((k for k in step.exceptions if k.key == kind), None)
            if found is not None:
                return found
    return None


def _claim_role(step: Step) -> str | None:
    """The role that may claim an unassigned step, for its "my tasks" listing."""
    if not isinstance(step, HUMAN_STEPS):
        return None
    owner = step.owner
    if isinstance(owner, RoleOwner | RoundRobinOwner | LeastLoadedOwner):
        return owner.role.value
    return None


async def _owner_matches(
    db: AsyncSession, run: Run, owner: Owner, actor: Actor, state: RunState, record: Mapping[str, Any] | None
) -> bool:
    if isinstance(owner, RoleOwner | RoundRobinOwner | LeastLoadedOwner):
        return _role(actor).at_least(owner.role)
    if isinstance(owner, MemberOwner):
        return owner.user_id == actor.user_id
    if isinstance(owner, StarterOwner):
        return (state.started_by or run.started_by) == actor.user_id
    if isinstance(owner, FieldOwner):
        return _as_uuid(_field_value(owner.field, state, record)) == actor.user_id
    return False


# ---------------------------------------------------------------- settling a transition


@dataclass
class _Work:
    """One run's transition in progress: the state before, the state now, what happened."""

    run: Run
    definition: Definition
    before: RunState
    state: RunState
    env: Env
    events: list[Event]
    actions_requested: set[int]
    finished_child: bool = False
    # The run's step and exception rows by id, once storing the state has read them (the answer
    # to the action is built from them instead of reading them again).
    step_rows: dict[int, StepInstance] | None = None
    exception_rows: dict[int, RunException] | None = None


async def _settle(
    db: AsyncSession,
    work: _Work,
    pending: list[Event],
    *,
    actor_id: uuid.UUID | None,
    notify_parent: bool = True,
) -> None:
    """Handle every event (which may apply follow-up actions), then store state, rows and events."""
    definition = work.definition
    run = work.run
    while pending:
        event = pending.pop(0)
        work.events.append(event)
        follow: list[Action] = []
        if event.type == "step.ready" and event.step_id is not None:
            step = _find_step(work.state, event.step_id)
            step_def = definition.step(step.key)
            if step.assignee is None and isinstance(step_def, HUMAN_STEPS):
                user_id = await _resolve_owner(db, run, step_def.owner, step.key, work.state, work.env.record)
                if user_id is not None:
                    follow.append(Assign(step_id=step.id, user_id=user_id, actor=None))
        elif event.type == "record.update_requested":
            values = dict(event.data.get("values", event.data))
            if run.collection_id is not None and run.record_id is not None and values:
                await records.update_record_values(db, run.collection_id, run.record_id, values, actor_id)
        elif event.type == "exception.escalated":
            # Tell the people it escalates to by id; the rules stay in the event for automations.
            user_ids: list[str] = []
            for rule in msgspec.convert(event.data.get("escalate_to", []), type=list[Owner]):
                for user_id in await _owner_user_ids(db, run, rule, work.state, work.env.record):
                    if str(user_id) not in user_ids:
                        user_ids.append(str(user_id))
            event.data = {**event.data, "user_ids": user_ids}
        elif event.type == "action.requested" and event.step_id is not None:
            # Plugin actions run in the automation workers; they answer with ActionSucceeded/Failed.
            work.actions_requested.add(event.step_id)
        elif event.type == "subprocedure.requested" and event.step_id is not None:
            child_procedure = _as_uuid(event.data.get("procedure_id"))
            if child_procedure is None:
                step_def = definition.step(_find_step(work.state, event.step_id).key)
                child_procedure = getattr(step_def, "procedure_id", None)
            assert child_procedure is not None
            child = await start_run(
                db,
                child_procedure,
                None,
                data={},
                record_id=None,
                parent=(run.id, event.step_id),
                started_by=actor_id,
                parent_record=(run.collection_id, run.record_id),
            )
            if child.status != RunStatus.RUNNING:
                follow.append(
                    SubprocedureFinished(step_id=event.step_id, completed=child.status == RunStatus.COMPLETED)
                )
        for action in follow:
            transition = _apply_engine(definition, work.state, action, work.env)
            work.state = transition.state
            pending.extend(transition.events)
    await _store(db, work)
    finished = work.state.status != RunStatus.RUNNING
    if finished and notify_parent and run.parent_run_id is not None and run.parent_step_id is not None:
        parent = await _load_run(db, run.parent_run_id, lock=True)
        if parent.status == RunStatus.RUNNING:
            await _act(
                db,
                parent,
                SubprocedureFinished(step_id=run.parent_step_id, completed=work.state.status == RunStatus.COMPLETED),
                actor_id=actor_id,
                audit_action="run.subprocedure_finished",
            )


async def _store(db: AsyncSession, work: _Work) -> None:
    run, state, now = work.run, work.state, work.env.now
    seen = run.lock_version
    finished_at = now if state.status != RunStatus.RUNNING else None
    values: dict[str, Any] = {
        "state": encode_state(state),
        "status": state.status.value,
        "lock_version": seen + 1,
        "updated_at": now,
        "finished_at": finished_at,
    }
    result = await db.execute(
        update(Run)
        .where(Run.id == run.id, Run.lock_version == seen)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict("Someone else changed this run at the same moment; reload and retry.", code="step_conflict")
    for name, value in values.items():
        set_committed_value(run, name, value)
    await _sync_steps(db, work)
    await _sync_exceptions(db, work)
    await _emit_events(db, work)


def _timer_at(row: StepInstance) -> datetime | None:
    """The step's next SLA moment: its due-soon reminder and overdue notice until sent, its expiry,
    the end of its wait; None when there is nothing left to do (or the step is closed)."""
    if row.status not in OPEN_STATUSES:
        return None
    moments = [row.expires_at, row.wait_until]
    if row.overdue_notified_at is None:
        moments.append(row.due_at)
    if row.reminded_at is None:
        moments.append(row.remind_at)
    present = [m for m in moments if m is not None]
    return min(present) if present else None


async def _sync_steps(db: AsyncSession, work: _Work) -> None:
    before = {s.id: s for s in work.before.steps}
    changed = [s for s in work.state.steps if before.get(s.id) != s]
    touched = work.actions_requested
    if not changed and not touched:
        return
    rows = await _step_rows(db, work.run.id)
    work.step_rows = rows
    definition = work.definition
    now = work.env.now
    for step in work.state.steps:
        if step in changed or step.id in touched or step.id not in rows:
            row = rows.get(step.id)
            moment_before = _timer_at(row) if row is not None else None
            if row is None:
                step_def = definition.step(step.key)
                row = StepInstance(
                    run_id=work.run.id,
                    step_id=step.id,
                    procedure_id=work.run.procedure_id,
                    run_title=work.run.title,
                    key=step.key,
                    title=step_def.title,
                    kind=_step_kind(step_def),
                    optional=bool(getattr(step_def, "optional", False)),
                    role=_claim_role(step_def),
                    created_at=now,
                )
                db.add(row)
                rows[step.id] = row
            row.status = step.status.value
            row.assignee_id = step.assignee
            row.ready_at = step.ready_at
            row.due_at = step.due_at
            row.expires_at = step.expires_at
            row.finished_at = step.finished_at
            row.finished_by = step.finished_by
            row.outcome = step.outcome[:200] if step.outcome else None
            row.wait_until = step.wake_at
            row.remind_at = step.remind_at
            if step.id in work.actions_requested:
                row.action_requested_at = now
            row.updated_at = now
            moment = _timer_at(row)
            if moment != moment_before:  # most changes (a completion without SLA) write no timer row
                await _arm_step_timer(db, row, moment)


async def _sync_exceptions(db: AsyncSession, work: _Work) -> None:
    before = {e.id: e for e in work.before.exceptions}
    changed = [e for e in work.state.exceptions if before.get(e.id) != e]
    if not changed:
        return
    rows = await _exception_rows(db, work.run.id)
    work.exception_rows = rows
    for exc in changed:
        row = rows.get(exc.id)
        if row is None:
            row = RunException(run_id=work.run.id, exception_id=exc.id, file_ids=[], created_at=work.env.now)
            db.add(row)
            rows[exc.id] = row
        row.kind = exc.kind
        row.step_id = exc.step_id
        row.status = exc.status
        row.note = exc.note
        row.raised_by = exc.raised_by
        row.raised_at = exc.raised_at
        row.outcome = exc.outcome
        row.resolved_by = exc.resolved_by
        row.resolved_at = exc.resolved_at
        row.escalated_at = exc.escalated_at
        # The escalation timer is armed only while the exception is open and has not escalated.
        escalate_before = row.escalate_at
        row.escalate_at = exc.escalate_at if exc.status == "open" and exc.escalated_at is None else None
        if row.escalate_at != escalate_before:
            await _arm_escalation_timer(db, row)


def _event_payload(work: _Work, event: Event) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "run_id": str(work.run.id),
        "procedure_id": str(work.run.procedure_id),
        "version_id": str(work.run.version_id),
        "run_title": work.run.title,
        "run_status": work.state.status.value,
        "record_id": str(work.run.record_id) if work.run.record_id else None,
        "collection_id": str(work.run.collection_id) if work.run.collection_id else None,
        "data": _jsonable(event.data),
    }
    if "exception_id" in event.data:
        payload["exception_id"] = event.data["exception_id"]
    if event.step_id is not None:
        step = next((s for s in work.state.steps if s.id == event.step_id), None)
        payload["step_id"] = event.step_id
        payload["step_key"] = event.step_key or (step.key if step else None)
        if step is not None:
            payload["assignee_id"] = str(step.assignee) if step.assignee else None
            payload["due_at"] = step.due_at.isoformat() if step.due_at else None
    return payload


async def _emit_events(db: AsyncSession, work: _Work) -> None:
    for event in work.events:
        await outbox.emit(db, event.type, _event_payload(work, event))
        if event.type == "action.requested":
            await outbox.emit(db, "step.action_requested", _event_payload(work, event))


def _exception_snapshot(state: RunState, exception_id: int) -> Any:
    exc = next((e for e in state.exceptions if e.id == exception_id), None)
    return _jsonable(exc) if exc is not None else None


def _step_snapshot(state: RunState, step_id: int | None) -> Any:
    if step_id is None:
        return None
    step = next((s for s in state.steps if s.id == step_id), None)
    return _jsonable(step) if step is not None else None


async def _act(
    db: AsyncSession,
    run: Run,
    action: Action,
    *,
    actor_id: uuid.UUID | None,
    audit_action: str,
    definition: Definition | None = None,
    now: datetime | None = None,
) -> _Work:
    """Apply one action to a (locked) run and settle it, with its audit event."""
    _require_running(run)
    definition = definition or await procedures.definition_by_version_id(db, run.version_id)
    state = decode_state(run.state)
    env = await _env(db, run, definition, now)
    transition = _apply_engine(definition, state, action, env)
    work = _Work(run, definition, state, transition.state, env, [], set())
    await _settle(db, work, list(transition.events), actor_id=actor_id)
    step_id = getattr(action, "step_id", None)
    before: dict[str, Any] = {"status": state.status.value, "step": _step_snapshot(state, step_id)}
    after: dict[str, Any] = {"status": work.state.status.value, "step": _step_snapshot(work.state, step_id)}
    exception_id = getattr(action, "exception_id", None)
    if exception_id is not None:
        before["exception"] = _exception_snapshot(state, exception_id)
        after["exception"] = _exception_snapshot(work.state, exception_id)
    await audit.record_change(
        db,
        actor_id=actor_id,
        action=audit_action,
        subject_type="run",
        subject_id=run.id,
        before=before,
        after=after,
    )
    return work


# ---------------------------------------------------------------- starting and reading runs


def _repoint(problem: ValidationProblem, pointer: str) -> list[FieldProblem]:
    """A value's problems (pointing at ``/value``) as problems of the input field at ``pointer``."""
    return [FieldProblem(pointer=pointer, code=p.code, message=p.message) for p in problem.errors] or [
        FieldProblem(pointer=pointer, code=problem.code, message=str(problem))
    ]


def _validate_data(definition: Definition, data: Mapping[str, Any]) -> tuple[dict[str, Any], list[FieldProblem]]:
    fields = {f.key: f for f in definition.data}
    values: dict[str, Any] = {}
    problems: list[FieldProblem] = []
    for key, raw in data.items():
        field = fields.get(key)
        if field is None:
            problems.append(
                FieldProblem(pointer=f"/data/{key}", code="unknown_field", message="not a field of the run")
            )
            continue
        try:
            values[key] = records.validate_value(field.type, raw)
        except ValidationProblem as exc:
            problems += _repoint(exc, f"/data/{key}")
    return values, problems


async def start_run(
    db: AsyncSession,
    procedure_id: uuid.UUID,
    actor: Actor | None,
    data: Mapping[str, Any] | None = None,
    record_id: uuid.UUID | None = None,
    *,
    title: str | None = None,
    parent: tuple[uuid.UUID, int] | None = None,
    started_by: uuid.UUID | None = None,
    parent_record: tuple[uuid.UUID | None, uuid.UUID | None] = (None, None),
) -> Run:
    """Start a run of the procedure's latest published version.

    ``actor`` is None when the platform starts it (a trigger, a sub-procedure step); ``record_id``
    is required when the procedure is linked to a collection. Every problem of the input is listed.
    """
    version = await procedures.version_for_run(db, procedure_id)
    definition = version.definition
    values, problems = _validate_data(definition, data or {})
    if title is not None:
        problems += name_problems(title, "/title", required=False)
    if record_id is None and parent is not None and version.collection_id == parent_record[0]:
        record_id = parent_record[1]  # a sub-procedure about the same collection works on the same record
    if version.collection_id is not None and record_id is None and parent is None:
        problems.append(
            FieldProblem(pointer="/record_id", code="required", message="this procedure runs about a record")
        )
    if version.collection_id is None and record_id is not None:
        problems.append(
            FieldProblem(
                pointer="/record_id", code="not_linked", message="this procedure is not linked to a collection"
            )
        )
    if problems:
        raise ValidationProblem(errors=problems)
    starter = actor.user_id if actor is not None else started_by
    run = Run(
        id=new_id(),
        procedure_id=version.procedure_id,
        version_id=version.version_id,
        version_number=version.number,
        status=RunStatus.RUNNING.value,
        title=title or version.title,
        collection_id=version.collection_id if record_id is not None else None,
        record_id=record_id,
        parent_run_id=parent[0] if parent else None,
        parent_step_id=parent[1] if parent else None,
        started_by=starter,
        state={},
        lock_version=0,
    )
    env = await _env(db, run, definition)  # reads the record: a missing one is a 404 before anything is written
    db.add(run)
    await db.flush()
    try:
        transition = engine.start(definition, env, started_by=starter, data=values)
    except EngineError as exc:
        raise _engine_problem(exc) from exc
    work = _Work(run, definition, RunState(), transition.state, env, [], set())
    # A sub-run that finishes at once is reported by the caller, whose own state is not stored yet.
    await _settle(db, work, list(transition.events), actor_id=starter, notify_parent=False)
    await audit.record_change(
        db,
        actor_id=starter,
        action="run.started",
        subject_type="run",
        subject_id=run.id,
        after={"procedure_id": str(run.procedure_id), "version_id": str(run.version_id), "data": _jsonable(values)},
    )
    return run


async def get_run(db: AsyncSession, run_id: uuid.UUID) -> Run:
    return await _load_run(db, run_id)


@dataclass(frozen=True)
class RunDetail:
    run: Run
    state: RunState
    steps: list[StepInstance]
    exceptions: list[RunException]


async def _step_rows(db: AsyncSession, run_id: uuid.UUID) -> dict[int, StepInstance]:
    rows = await db.scalars(select(StepInstance).where(StepInstance.run_id == run_id))
    return {r.step_id: r for r in rows}


async def _exception_rows(db: AsyncSession, run_id: uuid.UUID) -> dict[int, RunException]:
    rows = await db.scalars(select(RunException).where(RunException.run_id == run_id))
    return {r.exception_id: r for r in rows}


def _detail_of(
    run: Run, state: RunState, steps: dict[int, StepInstance], exceptions: dict[int, RunException]
) -> RunDetail:
    return RunDetail(run, state, [steps[i] for i in sorted(steps)], [exceptions[i] for i in sorted(exceptions)])


async def run_detail(db: AsyncSession, run_id: uuid.UUID) -> RunDetail:
    run = await _load_run(db, run_id)
    return _detail_of(run, decode_state(run.state), await _step_rows(db, run_id), await _exception_rows(db, run_id))


async def _detail_after(db: AsyncSession, work: _Work) -> RunDetail:
    """The run as an action left it, from what settling the action already holds: the run row
    and the state are current, and so are the rows it read to store the state (the session's
    identity map would hand back the same objects on a second read)."""
    steps = work.step_rows if work.step_rows is not None else await _step_rows(db, work.run.id)
    exceptions = work.exception_rows
    if exceptions is None:
        # The exception rows mirror the state's exceptions: a run that never had one has no row.
        exceptions = await _exception_rows(db, work.run.id) if work.state.exceptions else {}
    return _detail_of(work.run, work.state, steps, exceptions)


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


async def procedure_has_runs(db: AsyncSession, procedure_id: uuid.UUID) -> bool:
    """Whether any run (finished or not) was ever started of the procedure."""
    return await db.scalar(select(Run.id).where(Run.procedure_id == procedure_id).limit(1)) is not None


async def list_runs(
    db: AsyncSession,
    *,
    status: str | None = None,
    procedure_id: uuid.UUID | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Run], str | None]:
    """Runs, newest first (ids are time-ordered), with keyset pagination."""
    limit = max(1, min(limit, MAX_PAGE))
    query = select(Run).order_by(Run.id.desc()).limit(limit + 1)
    if status is not None:
        query = query.where(Run.status == status)
    if procedure_id is not None:
        query = query.where(Run.procedure_id == procedure_id)
    if cursor:
        after = _as_uuid(_decode_cursor(cursor)[0])
        if after is None:
            raise ValidationProblem(
                errors=[
                    FieldProblem(pointer="/query/cursor", code="invalid_cursor", message="not a cursor of this list")
                ]
            )
        query = query.where(Run.id < after)
    rows = list((await db.scalars(query)).all())
    next_cursor = _encode_cursor([str(rows[limit - 1].id)]) if len(rows) > limit else None
    return rows[:limit], next_cursor


# ---------------------------------------------------------------- step actions


async def _files_problems(db: AsyncSession, file_ids: Sequence[uuid.UUID | str], pointer: str) -> list[FieldProblem]:
    if not file_ids:
        return []
    wanted = [i if isinstance(i, uuid.UUID) else uuid.UUID(str(i)) for i in file_ids]
    missing = {str(m) for m in await files.files_exist(db, wanted)}
    return [
        FieldProblem(pointer=f"{pointer}/{i}", code="file_not_found", message="no such uploaded file")
        for i, file_id in enumerate(wanted)
        if str(file_id) in missing
    ]


async def _step_action(
    db: AsyncSession, run_id: uuid.UUID, action: Action, *, actor: Actor, audit_action: str
) -> RunDetail:
    run = await _load_run(db, run_id, lock=True)
    work = await _act(db, run, action, actor_id=actor.user_id, audit_action=audit_action)
    return await _detail_after(db, work)


def _guard_own_step(state: RunState, step_id: int, actor: Actor) -> StepState:
    """A step assigned to someone else is theirs (the engine decides who may claim an open one)."""
    step = _find_step(state, step_id)
    if step.assignee is not None and step.assignee != actor.user_id:
        raise Forbidden("This step is assigned to someone else.", code="not_step_owner")
    return step


async def claim_step(db: AsyncSession, actor: Actor, run_id: uuid.UUID, step_id: int) -> RunDetail:
    return await _step_action(
        db, run_id, Claim(step_id=step_id, actor=actor), actor=actor, audit_action="run.step_claimed"
    )


async def assign_step(db: AsyncSession, actor: Actor, run_id: uuid.UUID, step_id: int, user_id: uuid.UUID) -> RunDetail:
    """Assign or reassign a step (manager or higher) to a member."""
    run = await _load_run(db, run_id, lock=True)
    _require_manager(actor)
    _require_running(run)
    _find_step(decode_state(run.state), step_id)
    if not await _is_member(db, user_id):
        raise ValidationProblem(
            errors=[FieldProblem(pointer="/user_id", code="not_a_member", message="not a member of this workspace")]
        )
    work = await _act(
        db,
        run,
        Assign(step_id=step_id, user_id=user_id, actor=actor),
        actor_id=actor.user_id,
        audit_action="run.step_assigned",
    )
    return await _detail_after(db, work)


async def start_step(db: AsyncSession, actor: Actor, run_id: uuid.UUID, step_id: int) -> RunDetail:
    return await _step_action(
        db, run_id, engine.Start(step_id=step_id, actor=actor), actor=actor, audit_action="run.step_started"
    )


async def complete_step(
    db: AsyncSession,
    actor: Actor,
    run_id: uuid.UUID,
    step_id: int,
    *,
    values: Mapping[str, Any] | None = None,
    checked: Sequence[str] = (),
    note: str = "",
    file_ids: Sequence[uuid.UUID] = (),
    value: float | None = None,
) -> RunDetail:
    """Complete a step with its form values and evidence; every problem of the input is listed.
    Returns the run as the completion left it."""
    run = await _load_run(db, run_id, lock=True)
    _require_running(run)
    state = decode_state(run.state)
    step = _guard_own_step(state, step_id, actor)
    definition = await procedures.definition_by_version_id(db, run.version_id)
    step_def = definition.step(step.key)
    if (
        isinstance(step_def, HUMAN_STEPS)
        and step_def.requires_acknowledgement
        and not await procedures.has_acknowledged(db, actor.user_id, run.version_id)
    ):
        raise Conflict(
            "Acknowledge the current version of this procedure before completing this step.",
            code="acknowledgement_required",
        )
    problems: list[FieldProblem] = []
    clean: dict[str, Any] = {}
    raw_values = dict(values or {})
    if isinstance(step_def, FormStep):
        fields = {f.key: f for f in step_def.fields}
        for key in raw_values:
            if key not in fields:
                problems.append(
                    FieldProblem(pointer=f"/values/{key}", code="unknown_field", message="not a field of this form")
                )
        for key, form_field in fields.items():
            raw = raw_values.get(key)
            try:
                clean[key] = records.validate_value(
                    form_field.type, raw, options=form_field.options or None, required=form_field.required
                )
            except ValidationProblem as exc:
                problems += _repoint(exc, f"/values/{key}")
    elif raw_values:
        problems.append(FieldProblem(pointer="/values", code="not_a_form", message="this step has no form"))
    problems += await _files_problems(db, file_ids, "/evidence/files")
    action = Complete(
        step_id=step_id,
        actor=actor,
        values={k: v for k, v in clean.items() if v is not None},
        checked=list(checked),
        evidence=EvidenceIn(note=note, files=[str(f) for f in file_ids], value=value),
        acknowledged=True,
    )
    if problems:
        # The engine checks the evidence and the checklist: its problems join ours in one answer,
        # unless the step cannot be completed at all (a conflict, not a problem of the input).
        try:
            engine.apply(definition, state, action, await _env(db, run, definition))
        except EngineError as exc:
            refusal = _engine_problem(exc)
            if not refusal.errors:
                raise refusal from exc
            seen = {(p.pointer, p.code) for p in problems}
            problems += [p for p in refusal.errors if (p.pointer, p.code) not in seen]
        raise ValidationProblem(errors=problems)
    work = await _act(db, run, action, actor_id=actor.user_id, audit_action="run.step_completed", definition=definition)
    return await _detail_after(db, work)


async def approve_step(db: AsyncSession, actor: Actor, run_id: uuid.UUID, step_id: int, note: str = "") -> RunDetail:
    return await _step_action(
        db,
        run_id,
        engine.Approve(step_id=step_id, actor=actor, note=note),
        actor=actor,
        audit_action="run.step_approved",
    )


async def reject_step(db: AsyncSession, actor: Actor, run_id: uuid.UUID, step_id: int, note: str = "") -> RunDetail:
    return await _step_action(
        db,
        run_id,
        engine.Reject(step_id=step_id, actor=actor, note=note),
        actor=actor,
        audit_action="run.step_rejected",
    )


async def skip_step(db: AsyncSession, actor: Actor, run_id: uuid.UUID, step_id: int) -> RunDetail:
    return await _step_action(
        db, run_id, engine.Skip(step_id=step_id, actor=actor), actor=actor, audit_action="run.step_skipped"
    )


# ---------------------------------------------------------------- comments, exceptions, abort


async def add_comment(
    db: AsyncSession,
    actor: Actor,
    run_id: uuid.UUID,
    body: str,
    *,
    step_id: int | None = None,
    file_ids: Sequence[uuid.UUID] = (),
) -> RunComment:
    """Comment on a run or one of its steps (any member; finished runs too), with attachments."""
    run = await _load_run(db, run_id)
    problems: list[FieldProblem] = []
    if step_id is not None and all(s.id != step_id for s in decode_state(run.state).steps):
        problems.append(FieldProblem(pointer="/step_id", code="step_not_found", message="the run has no such step"))
    problems += await _files_problems(db, file_ids, "/file_ids")
    if problems:
        raise ValidationProblem(errors=problems)
    comment = RunComment(
        id=new_id(),
        run_id=run.id,
        step_id=step_id,
        author_id=actor.user_id,
        body=body,
        file_ids=[str(f) for f in file_ids],
    )
    db.add(comment)
    await db.flush()
    await audit.record_change(
        db,
        actor_id=actor.user_id,
        action="run.commented",
        subject_type="run",
        subject_id=run.id,
        after={"comment_id": str(comment.id), "step_id": step_id, "body": body, "file_ids": comment.file_ids},
    )
    await outbox.emit(
        db,
        "run.commented",
        {
            "run_id": str(run.id),
            "procedure_id": str(run.procedure_id),
            "comment_id": str(comment.id),
            "step_id": step_id,
            "author_id": str(actor.user_id),
        },
    )
    return comment


async def list_comments(db: AsyncSession, run_id: uuid.UUID) -> list[RunComment]:
    await _load_run(db, run_id)
    return list((await db.scalars(select(RunComment).where(RunComment.run_id == run_id).order_by(RunComment.id))).all())


async def raise_exception(
    db: AsyncSession,
    actor: Actor,
    run_id: uuid.UUID,
    kind: str,
    *,
    step_id: int | None = None,
    note: str = "",
    file_ids: Sequence[uuid.UUID] = (),
) -> tuple[Run, int]:
    """Anyone who can see the run raises an exception in one action; returns the run and its id."""
    run = await _load_run(db, run_id, lock=True)
    _require_running(run)
    problems = await _files_problems(db, file_ids, "/file_ids")
    if problems:
        raise ValidationProblem(errors=problems)
    before_ids = {e.id for e in decode_state(run.state).exceptions}
    work = await _act(
        db,
        run,
        RaiseException(kind=kind, actor=actor, step_id=step_id, note=note),
        actor_id=actor.user_id,
        audit_action="run.exception_raised",
    )
    new_ids = [e.id for e in work.state.exceptions if e.id not in before_ids]
    exception_id = new_ids[0] if new_ids else max(before_ids, default=0)
    if file_ids:
        await db.execute(
            update(RunException)
            .where(RunException.run_id == run.id, RunException.exception_id == exception_id)
            .values(file_ids=[str(f) for f in file_ids])
            .execution_options(synchronize_session=False)
        )
    return run, exception_id


async def resolve_exception(
    db: AsyncSession,
    actor: Actor,
    run_id: uuid.UUID,
    exception_id: int,
    outcome: Literal["resume", "abort"] | None = None,
) -> Run:
    """Resolve an open exception: managers, whoever the exception kind notifies, and, once it
    has escalated, whoever it escalated to."""
    run = await _load_run(db, run_id, lock=True)
    state = decode_state(run.state)
    found = next((e for e in state.exceptions if e.id == exception_id), None)
    if found is None:
        raise NotFound("The run has no such exception.", code="exception_not_found")
    _require_running(run)
    if not _role(actor).at_least(Role.MANAGER):
        definition = await procedures.definition_by_version_id(db, run.version_id)
        kind = _exception_kind(definition, state, found.kind, found.step_id)
        allowed_owners: list[Owner] = list(kind.notify) if kind else []
        if kind is not None and found.escalated_at is not None:
            allowed_owners += kind.escalate_to
        record = await _record_values(db, run)
        allowed = [await _owner_matches(db, run, o, actor, state, record) for o in allowed_owners]
        if not any(allowed):
            raise Forbidden(
                "Only managers, the people this exception notifies, or those it escalated to resolve it.",
                code="not_notified",
            )
    await _act(
        db,
        run,
        ResolveException(exception_id=exception_id, actor=actor, outcome=outcome),
        actor_id=actor.user_id,
        audit_action="run.exception_resolved",
    )
    return run


async def abort_run(db: AsyncSession, actor: Actor, run_id: uuid.UUID, reason: str = "") -> Run:
    run = await _load_run(db, run_id, lock=True)
    _require_manager(actor)
    await _act(db, run, Abort(actor=actor, reason=reason), actor_id=actor.user_id, audit_action="run.aborted")
    return run


# ---------------------------------------------------------------- platform-driven actions


async def apply_system_action(
    db: AsyncSession, run_id: uuid.UUID, action: Action, *, audit_action: str, now: datetime | None = None
) -> Run:
    """Apply an action the platform takes (a timer, a plugin action's result) to a running run;
    ``now`` is the platform's clock (a timer's pass), the current time by default."""
    run = await _load_run(db, run_id, lock=True)
    await _act(db, run, action, actor_id=None, audit_action=audit_action, now=now)
    return run


async def assign_step_as_platform(db: AsyncSession, run_id: uuid.UUID, step_id: int, user_id: uuid.UUID) -> Run:
    """Assign or reassign an open step to a member on the platform's behalf (an automation)."""
    run = await _load_run(db, run_id, lock=True)
    _require_running(run)
    _find_step(decode_state(run.state), step_id)
    if not await _is_member(db, user_id):
        raise ValidationProblem(
            errors=[FieldProblem(pointer="/user_id", code="not_a_member", message="not a member of this workspace")]
        )
    await _act(
        db, run, Assign(step_id=step_id, user_id=user_id, actor=None), actor_id=None, audit_action="run.step_assigned"
    )
    return run


async def members_with_role(db: AsyncSession, role: Role) -> list[uuid.UUID]:
    """Members holding exactly ``role``; those holding it or higher when nobody holds it exactly."""
    return await _members_with_role(db, role)


async def least_loaded_member(db: AsyncSession, role: Role, *, exclude: uuid.UUID | None = None) -> uuid.UUID | None:
    """The member of ``role`` with the fewest open steps (ties by id); ``exclude`` is passed over
    unless nobody else holds the role."""
    members = await _members_with_role(db, role)
    if exclude is not None and len(members) > 1:
        members = [m for m in members if m != exclude]
    if not members:
        return None
    loads = await db.execute(
        select(StepInstance.assignee_id, func.count())
        .where(StepInstance.assignee_id.in_(members), StepInstance.status.in_(OPEN_STATUSES))
        .group_by(StepInstance.assignee_id)
    )
    counts: dict[uuid.UUID | None, int] = {row[0]: int(row[1]) for row in loads}
    return min(members, key=lambda m: (counts.get(m, 0), str(m)))


async def step_view(
    db: AsyncSession, run_id: uuid.UUID, *, step_id: int | None = None, step_key: str | None = None
) -> dict[str, Any] | None:
    """A fresh, JSON-shaped view of one step instance (by id, or the latest instance of a key) and
    its run, for automations that re-check a step before acting; None when there is no such step."""
    query = select(StepInstance).where(StepInstance.run_id == run_id)
    if step_id is not None:
        query = query.where(StepInstance.step_id == step_id)
    elif step_key is not None:
        query = query.where(StepInstance.key == step_key).order_by(StepInstance.step_id.desc()).limit(1)
    else:
        return None
    row = await db.scalar(query.execution_options(populate_existing=True))
    if row is None:
        return None
    run = await db.scalar(select(Run).where(Run.id == run_id))
    return {
        "run_id": str(row.run_id),
        "procedure_id": str(row.procedure_id),
        "step_id": row.step_id,
        "key": row.key,
        "title": row.title,
        "status": row.status,
        # A step of a finished run is not open, whatever its last status.
        "open": row.status in OPEN_STATUSES and run is not None and run.status == RunStatus.RUNNING,
        "assignee_id": str(row.assignee_id) if row.assignee_id else None,
        "role": row.role,
        "due_at": row.due_at.isoformat() if row.due_at else None,
        "run_status": run.status if run is not None else None,
        "started_by": str(run.started_by) if run is not None and run.started_by else None,
    }


# ---------------------------------------------------------------- my tasks

_steps = StepInstance.__table__
_TASK_COLUMNS = (
    _steps.c.run_id,
    _steps.c.run_title,
    _steps.c.procedure_id,
    _steps.c.step_id,
    _steps.c.key,
    _steps.c.title,
    _steps.c.kind,
    _steps.c.status,
    _steps.c.assignee_id,
    _steps.c.role,
    _steps.c.ready_at,
    _steps.c.due_at,
)


_CUSTOM_PLANS = text("set local plan_cache_mode = force_custom_plan")


@dataclass(frozen=True)
class TaskFilters:
    procedure_id: uuid.UUID | None = None
    status: str | None = None
    overdue: bool = False
    due_before: datetime | None = None
    include_claimable: bool = False


def my_tasks_query(
    tenant_id: uuid.UUID, actor: Actor, filters: TaskFilters, *, cursor: str | None = None, limit: int = 50
) -> Select[Any]:
    """The "my tasks" statement: one indexed query with the tenant named explicitly (it runs as
    Core on the session's connection, which lock 1 does not rewrite; lock 2 still applies)."""
    statuses = (filters.status,) if filters.status else TASK_STATUSES
    mine = _steps.c.assignee_id == actor.user_id
    if filters.include_claimable:
        roles = [r.value for r in Role if _role(actor).at_least(r)]
        mine = or_(mine, and_(_steps.c.assignee_id.is_(None), _steps.c.role.in_(roles)))
    query = (
        select(*_TASK_COLUMNS)
        .where(_steps.c.tenant_id == tenant_id, mine, _steps.c.status.in_(statuses))
        .order_by(_steps.c.due_at.asc().nulls_last(), _steps.c.run_id, _steps.c.step_id)
        .limit(limit + 1)
    )
    if filters.procedure_id is not None:
        query = query.where(_steps.c.procedure_id == filters.procedure_id)
    if filters.overdue:
        query = query.where(_steps.c.due_at < utcnow())
    if filters.due_before is not None:
        query = query.where(_steps.c.due_at < filters.due_before)
    if cursor:
        query = query.where(_after_task(_decode_cursor(cursor)))
    return query


async def my_tasks(
    db: AsyncSession, actor: Actor, filters: TaskFilters, *, cursor: str | None = None, limit: int = 50
) -> tuple[list[Any], str | None]:
    """The caller's open steps across runs, soonest due first (no due time last), then by id."""
    tenant_id = session_tenant_id(db.sync_session)
    if tenant_id is None:
        raise Forbidden("Choose a workspace first.", code="no_tenant_selected")
    limit = max(1, min(limit, MAX_PAGE))
    query = my_tasks_query(tenant_id, actor, filters, cursor=cursor, limit=limit)
    connection = await db.connection()
    if connection.dialect.name == "postgresql":
        # asyncpg prepares every statement, and after five runs Postgres may keep a generic plan,
        # made without the parameters' values: it estimates one row per (tenant, assignee), seeks
        # on those two columns only and filters the statuses, reading the caller's whole finished
        # history (60 times slower with 10,000 done steps). A plan made for the values seeks the
        # open rows only; planning it costs a fraction of a millisecond.
        await connection.execute(_CUSTOM_PLANS)
    rows = list((await connection.execute(query)).all())
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = _encode_cursor([last.due_at.isoformat() if last.due_at else None, str(last.run_id), last.step_id])
    return rows[:limit], next_cursor


def _after_task(values: list[Any]) -> Any:
    # The step number goes into SQL: beyond its integer column it would fail on PostgreSQL alone.
    if (
        len(values) != 3
        or not isinstance(values[2], int)
        or not 1 <= values[2] <= INT32_MAX
        or _as_uuid(values[1]) is None
    ):
        raise ValidationProblem(
            errors=[FieldProblem(pointer="/query/cursor", code="invalid_cursor", message="not a cursor of this list")]
        )
    due, run_id, step_id = _as_datetime(values[0]), _as_uuid(values[1]), values[2]
    same_due_later = or_(_steps.c.run_id > run_id, and_(_steps.c.run_id == run_id, _steps.c.step_id > step_id))
    if due is None:
        return and_(_steps.c.due_at.is_(None), same_due_later)
    return or_(
        _steps.c.due_at > due,
        and_(_steps.c.due_at == due, same_due_later),
        _steps.c.due_at.is_(None),
    )


# ---------------------------------------------------------------- SLA timers


def _timer_payload(row: StepInstance) -> dict[str, Any]:
    return {
        "run_id": str(row.run_id),
        "procedure_id": str(row.procedure_id),
        "step_id": row.step_id,
        "step_key": row.key,
        "title": row.title,
        "assignee_id": str(row.assignee_id) if row.assignee_id else None,
        "role": row.role,
        "due_at": row.due_at.isoformat() if row.due_at else None,
    }


STEP_TIMER = "run.step"
ESCALATION_TIMER = "run.escalation"
_LOCK_NOT_AVAILABLE = "55P03"  # Postgres: FOR UPDATE NOWAIT found the row locked


class RunBusy(Exception):
    """A timer's run is locked by someone else's transaction: the scheduler retries the timer
    shortly (a timer never waits for a run lock while it holds its timer row; see fire_step_timer)."""


def _step_timer_key(run_id: uuid.UUID, step_id: int) -> str:
    return f"step:{run_id}:{step_id}"


def _escalation_timer_key(run_id: uuid.UUID, exception_id: int) -> str:
    return f"escalate:{run_id}:{exception_id}"


async def _arm_step_timer(db: AsyncSession, row: StepInstance, moment: datetime | None) -> None:
    key = _step_timer_key(row.run_id, row.step_id)
    if moment is None:
        await scheduler.cancel(db, key)
    else:
        payload = {"run_id": str(row.run_id), "step_id": row.step_id}
        await scheduler.schedule(db, kind=STEP_TIMER, key=key, due_at=moment, payload=payload)


async def _arm_escalation_timer(db: AsyncSession, row: RunException) -> None:
    key = _escalation_timer_key(row.run_id, row.exception_id)
    if row.escalate_at is None:
        await scheduler.cancel(db, key)
    else:
        payload = {"run_id": str(row.run_id), "exception_id": row.exception_id}
        await scheduler.schedule(db, kind=ESCALATION_TIMER, key=key, due_at=row.escalate_at, payload=payload)


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
            await outbox.emit(db, "step.due_soon", {**_timer_payload(row), "remind_at": row.remind_at.isoformat()})
    if row.due_at is not None and row.due_at <= now and row.overdue_notified_at is None:
        row.overdue_notified_at = now
        await outbox.emit(db, "step.overdue", _timer_payload(row))
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


# ---------------------------------------------------------------- moving runs to a new version


async def _migration_problems(run: Run, old: PublishedVersion, new: PublishedVersion) -> list[str]:
    if new.procedure_id != run.procedure_id:
        return ["the version belongs to another procedure"]
    if run.status != RunStatus.RUNNING:
        return [f"the run is {run.status}"]
    if new.version_id == run.version_id:
        return ["the run is already on this version"]
    return list(engine.migration_problems(old.definition, new.definition, decode_state(run.state)))


async def _move_run(db: AsyncSession, actor: Actor, run: Run, old: PublishedVersion, new: PublishedVersion) -> None:
    seen = run.lock_version
    result = await db.execute(
        update(Run)
        .where(Run.id == run.id, Run.lock_version == seen)
        .values(version_id=new.version_id, version_number=new.number, lock_version=seen + 1, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict("Someone else changed this run at the same moment; reload and retry.", code="step_conflict")
    set_committed_value(run, "version_id", new.version_id)
    set_committed_value(run, "version_number", new.number)
    set_committed_value(run, "lock_version", seen + 1)
    by_key = new.definition.by_key()
    for row in (await db.scalars(select(StepInstance).where(StepInstance.run_id == run.id))).all():
        step_def = by_key.get(row.key)
        if step_def is not None and row.status in OPEN_STATUSES:
            row.title = step_def.title
            row.role = _claim_role(step_def)
    await audit.record_change(
        db,
        actor_id=actor.user_id,
        action="run.migrated",
        subject_type="run",
        subject_id=run.id,
        before={"version_id": str(old.version_id), "number": old.number},
        after={"version_id": str(new.version_id), "number": new.number},
    )
    await outbox.emit(
        db,
        "run.migrated",
        {
            "run_id": str(run.id),
            "procedure_id": str(run.procedure_id),
            "from_version_id": str(old.version_id),
            "to_version_id": str(new.version_id),
        },
    )


async def migrate_run(db: AsyncSession, actor: Actor, run_id: uuid.UUID, version_id: uuid.UUID) -> Run:
    """Move a running run to another published version of its procedure (manager or higher);
    409 ``migration_refused`` listing every reason when an open step has no counterpart."""
    run = await _load_run(db, run_id, lock=True)
    _require_manager(actor)
    new = await procedures.version_by_id(db, version_id)
    old = await procedures.version_by_id(db, run.version_id)
    problems = await _migration_problems(run, old, new)
    if problems:
        raise Conflict(
            "The run cannot move to that version.",
            code="migration_refused",
            errors=[FieldProblem(pointer="", code="migration_refused", message=p) for p in problems],
        )
    await _move_run(db, actor, run, old, new)
    return run


@dataclass(frozen=True)
class MigrationOutcome:
    run_id: uuid.UUID
    migrated: bool
    problems: list[str]


async def migrate_runs(
    db: AsyncSession, actor: Actor, procedure_id: uuid.UUID, version_id: uuid.UUID
) -> list[MigrationOutcome]:
    """Move every running run of a procedure that can move; report each run's result."""
    _require_manager(actor)
    new = await procedures.version_by_id(db, version_id)
    if new.procedure_id != procedure_id:
        raise NotFound("No such published version of this procedure.", code="version_not_found")
    runs = (
        await db.scalars(
            select(Run)
            .where(Run.procedure_id == procedure_id, Run.status == RunStatus.RUNNING.value)
            .order_by(Run.id)
            .with_for_update()
        )
    ).all()
    outcomes: list[MigrationOutcome] = []
    for run in runs:
        old = await procedures.version_by_id(db, run.version_id)
        problems = await _migration_problems(run, old, new)
        if run.version_id == new.version_id:
            continue
        if not problems:
            await _move_run(db, actor, run, old, new)
        outcomes.append(MigrationOutcome(run.id, not problems, problems))
    return outcomes
